//! The library API, in the spirit of testcontainers: describe a stack (or part
//! of one), start it, get typed endpoints, and have it removed on drop or on
//! an explicit shutdown. The CLI's `up` is the same call with the stack
//! detached from the process.
//!
//! Layout: `sim` (the builder and bring-up), `running` (the handle to a started stack and its endpoints),
//! `faults` (injecting and healing), `failover` (RDS "reboot with
//! failover"), `backups` (RDS snapshots, backup state, point-in-time
//! restore), `status` (status, env, down), `images` (building or pulling
//! what a stack needs).

mod backups;
mod failover;
mod faults;
mod images;
mod running;
mod sim;
mod status;

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fixtures::{self, parse_influxdb, parse_kafka, Fixtures};
use crate::stack::{parse_stack, ServiceKind, Stack};

pub use backups::{BackupStatus, Restored};
pub use images::build_images;
pub use running::RunningStack;
pub use sim::Sim;
pub use status::{down, down_all, down_interrupted, env_of, status, ControlStatus, InstanceStatus, StackStatus};

/// The production stack that ships with the binary (`fixtures/voyager.toml`).
pub const BUILTIN_STACK: &str = include_str!("../../../fixtures/voyager.toml");

pub fn builtin_stack() -> Stack {
    parse_stack(Path::new("<built-in fixtures/voyager.toml>"), BUILTIN_STACK).expect("the built-in stack file is valid")
}

/// Read and validate a stack file.
pub fn load_stack(path: &Path) -> Result<Stack> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| Error::ReadStack { file: path.display().to_string(), source })?;
    Ok(parse_stack(path, &text)?)
}

/// The fixtures for a stack file: `kafka.toml` and `influxdb.toml` beside it
/// where present, else the built-in production fixtures.
pub fn load_fixtures_near(stack_file: &Path) -> Result<Fixtures> {
    let dir = stack_file.parent().unwrap_or(Path::new("."));
    let read = |name: &str| -> Result<Option<(std::path::PathBuf, String)>> {
        let p = dir.join(name);
        match std::fs::read_to_string(&p) {
            Ok(text) => Ok(Some((p, text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::ReadStack { file: p.display().to_string(), source }),
        }
    };
    let mut f = fixtures::builtin();
    if let Some((p, text)) = read("kafka.toml")? {
        f.kafka = parse_kafka(&p, &text)?;
    }
    if let Some((p, text)) = read("influxdb.toml")? {
        f.influxdb = parse_influxdb(&p, &text)?;
    }
    if let Some((_, text)) = read("auth0.toml")? {
        f.auth0 = text;
    }
    if let Some((p, text)) = read("s3.toml")? {
        f.s3 = fixtures::parse_s3(&p, &text)?;
    }
    if let Some((p, text)) = read("vault.toml")? {
        vault_lite::Fixture::parse(&text, &p.display().to_string()).map_err(|e| {
            Error::usage(e.to_string(), "fix the Vault fixture; fixtures/vault.toml is a complete example")
        })?;
        f.vault = text;
    }
    Ok(f)
}

/// Parse `--only postgres,kafka` against what the stack declares.
pub fn parse_only(stack: &Stack, list: &str) -> Result<Vec<ServiceKind>> {
    let mut kinds = vec![];
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let kind: ServiceKind = word.parse().map_err(|e: String| {
            Error::usage(format!("--only: {e}"), "name services as the stack file does, separated by commas")
        })?;
        if stack.service(kind).is_none() {
            let declared: Vec<String> = stack.services.iter().map(|s| s.kind.to_string()).collect();
            return Err(Error::usage(
                format!("--only: the stack does not declare `{kind}`"),
                format!("declared services: {}", declared.join(", ")),
            ));
        }
        kinds.push(kind);
    }
    if kinds.is_empty() {
        return Err(Error::usage("--only names no service", "give a comma-separated list such as `--only postgres`"));
    }
    Ok(kinds)
}

pub(crate) fn valid_stack_name(s: &str) -> bool {
    let mut c = s.chars();
    s.len() <= 32
        && matches!(c.next(), Some('a'..='z'))
        && c.all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
}

/// How long each phase of `up` took.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub phases: Vec<(String, Duration)>,
    /// Per instance: from container start to first successful probe.
    pub ready: Vec<(String, Duration)>,
    /// Per service: from container start to ready as a whole (every
    /// instance answering, fixtures provisioned).
    pub services: Vec<(String, Duration)>,
    pub total: Duration,
}
