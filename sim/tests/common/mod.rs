//! What the Docker tests share: the production stack moved to a VPC range of
//! the test's own (Docker refuses overlapping subnets, and tests run in
//! parallel) and renamed, started with the offline images.

#![allow(dead_code)]

use voyager_sim::harness::builtin_stack;
use voyager_sim::{ImageSource, Progress, RunningStack, ServiceKind, Sim, Stack};

/// The production stack in 10.OCTET.0.0/16, named `name`.
pub fn stack(name: &str, octet: u8) -> Stack {
    let mut s = builtin_stack().relocated(format!("10.{octet}.0.0/16").parse().unwrap()).unwrap();
    s.name = name.to_string();
    s
}

/// A `Sim` for that stack, limited to `only` (all services when empty).
pub fn sim(name: &str, octet: u8, only: &[ServiceKind]) -> Sim {
    let sim = Sim::new(stack(name, octet)).with_images(ImageSource::Offline).with_progress(Progress::stderr());
    if only.is_empty() {
        sim
    } else {
        sim.with_only(only)
    }
}

pub async fn start(name: &str, octet: u8, only: &[ServiceKind]) -> RunningStack {
    sim(name, octet, only).start().await.unwrap()
}
