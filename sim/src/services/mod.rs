//! The services a stack can run. Each lives in its own module with its
//! container spec, readiness probe, provisioning, endpoint type and `env`
//! lines; this module only dispatches on [`ServiceKind`].

pub mod influxdb;
pub mod kafka;
pub mod postgres;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::fixtures::Fixtures;
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
    /// Host ports reserved before start, by instance, for services that must
    /// advertise their host port (see [`needs_host_port`]).
    pub host_ports: &'a BTreeMap<String, u16>,
    pub fixtures: &'a Fixtures,
}

pub fn specs(kind: ServiceKind, cx: &SpecContext) -> Vec<ContainerSpec> {
    match kind {
        ServiceKind::Influxdb => influxdb::specs(cx),
        ServiceKind::Kafka => kafka::specs(cx),
        ServiceKind::Postgres => postgres::specs(cx),
    }
}

/// Whether each instance needs a host port chosen before it starts.
pub fn needs_host_port(kind: ServiceKind) -> bool {
    matches!(kind, ServiceKind::Kafka)
}

/// One readiness attempt: a real request to the instance (never a sleep).
pub async fn probe(kind: ServiceKind, state: &RunState, inst: &InstanceState) -> Result<(), String> {
    match kind {
        ServiceKind::Influxdb => influxdb::probe(state, inst).await,
        ServiceKind::Kafka => kafka::probe(state, inst).await,
        ServiceKind::Postgres => postgres::probe(state, inst).await,
    }
}

/// After every instance of the service is ready: create what the fixtures
/// declare and wait until the service is ready as a whole.
pub async fn provision(
    kind: ServiceKind,
    state: &RunState,
    fixtures: &Fixtures,
    timeout: Duration,
) -> Result<(), String> {
    match kind {
        ServiceKind::Influxdb => influxdb::provision(state, &fixtures.influxdb).await,
        ServiceKind::Kafka => kafka::provision(state, &fixtures.kafka, timeout).await,
        ServiceKind::Postgres => postgres::provision(state, timeout).await,
    }
}

/// A short description of each instance's role, for `status`.
pub async fn roles(kind: ServiceKind, state: &RunState) -> BTreeMap<String, String> {
    match kind {
        ServiceKind::Kafka => kafka::roles(state).await,
        ServiceKind::Postgres => postgres::roles(state).await,
        ServiceKind::Influxdb => BTreeMap::new(),
    }
}

/// dotenv lines for an application, with the ecosystem's usual names.
pub fn env(kind: ServiceKind, state: &RunState) -> Vec<(String, String)> {
    match kind {
        ServiceKind::Influxdb => influxdb::env(state),
        ServiceKind::Kafka => kafka::env(state),
        ServiceKind::Postgres => postgres::env(state),
    }
}
