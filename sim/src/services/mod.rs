//! The services a stack can run. Each lives in its own module with its
//! container spec, readiness probe, endpoint type and `env` lines; this
//! module only dispatches on [`ServiceKind`].

pub mod postgres;

use crate::images::ImageSet;
use crate::spec::ContainerSpec;
use crate::stack::{ServiceKind, Stack};
use crate::state::{Credentials, InstanceState, RunState};

/// Everything a service needs to describe its containers.
pub struct SpecContext<'a> {
    pub stack: &'a Stack,
    pub stack_name: &'a str,
    pub images: ImageSet,
    pub credentials: &'a Credentials,
}

pub fn specs(kind: ServiceKind, cx: &SpecContext) -> Vec<ContainerSpec> {
    match kind {
        ServiceKind::Postgres => postgres::specs(cx),
    }
}

/// Wait until the instance answers real requests (never a bare sleep).
pub async fn probe(
    kind: ServiceKind,
    state: &RunState,
    inst: &InstanceState,
) -> Result<(), String> {
    match kind {
        ServiceKind::Postgres => postgres::probe(state, inst).await,
    }
}

/// dotenv lines for an application, with the ecosystem's usual names.
pub fn env(kind: ServiceKind, state: &RunState) -> Vec<(String, String)> {
    match kind {
        ServiceKind::Postgres => postgres::env(state),
    }
}
