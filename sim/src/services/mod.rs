//! The services a stack can run. Each lives in its own module with its
//! container spec, readiness probe, provisioning, endpoint type and `env`
//! lines; this module only dispatches on [`ServiceKind`].

pub mod auth0;
pub mod influxdb;
pub mod kafka;
pub mod postgres;
pub mod s3;
pub mod vault;

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
    /// Companion binaries on this host, by binary name (located by the
    /// harness before anything starts).
    pub companions: &'a BTreeMap<String, std::path::PathBuf>,
}

/// The workspace binary a service runs, if it is one of ours.
pub fn companion(kind: ServiceKind, images: crate::images::ImageSet) -> Option<crate::companion::Companion> {
    match kind {
        ServiceKind::Auth0 => Some(crate::companion::AUTH0),
        ServiceKind::Vault if images == crate::images::ImageSet::Offline => Some(crate::companion::VAULT),
        _ => None,
    }
}

pub fn specs(kind: ServiceKind, cx: &SpecContext) -> Vec<ContainerSpec> {
    match kind {
        ServiceKind::Auth0 => auth0::specs(cx),
        ServiceKind::Influxdb => influxdb::specs(cx),
        ServiceKind::Kafka => kafka::specs(cx),
        ServiceKind::Postgres => postgres::specs(cx),
        ServiceKind::Vault => vault::specs(cx),
        ServiceKind::S3 => s3::specs(cx),
    }
}

/// Whether each instance needs a host port chosen before it starts.
pub fn needs_host_port(kind: ServiceKind) -> bool {
    // Kafka advertises its host port; the Auth0 mock's issuer URL holds it.
    matches!(kind, ServiceKind::Kafka | ServiceKind::Auth0)
}

/// One readiness attempt: a real request to the instance (never a sleep).
pub async fn probe(kind: ServiceKind, state: &RunState, inst: &InstanceState) -> Result<(), String> {
    match kind {
        ServiceKind::Auth0 => auth0::probe(state, inst).await,
        ServiceKind::Influxdb => influxdb::probe(state, inst).await,
        ServiceKind::Kafka => kafka::probe(state, inst).await,
        ServiceKind::Postgres => postgres::probe(state, inst).await,
        ServiceKind::Vault => vault::probe(state, inst).await,
        ServiceKind::S3 => s3::probe(state, inst).await,
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
        // Vault is initialised after every other service is ready (see
        // `vault::bootstrap`): its database engine checks PostgreSQL.
        ServiceKind::Auth0 | ServiceKind::Vault => Ok(()),
        ServiceKind::S3 => s3::provision(state, &fixtures.s3).await,
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
        ServiceKind::Influxdb | ServiceKind::Auth0 | ServiceKind::Vault | ServiceKind::S3 => BTreeMap::new(),
    }
}

/// dotenv lines for an application, with the ecosystem's usual names.
pub fn env(kind: ServiceKind, state: &RunState) -> Vec<(String, String)> {
    match kind {
        ServiceKind::Auth0 => auth0::env(state),
        ServiceKind::Influxdb => influxdb::env(state),
        ServiceKind::Kafka => kafka::env(state),
        ServiceKind::Postgres => postgres::env(state),
        ServiceKind::Vault => vault::env(state),
        ServiceKind::S3 => s3::env(state),
    }
}

/// The built-in stack's specs of one service in one image set, with a
/// companion binary at a fixed path: for the services' unit tests.
#[cfg(test)]
pub(crate) fn test_specs(kind: ServiceKind, images: ImageSet) -> Vec<ContainerSpec> {
    let stack = crate::harness::builtin_stack();
    let credentials = Credentials::generate();
    let fixtures = crate::fixtures::builtin();
    let companions: BTreeMap<String, std::path::PathBuf> =
        [("voyager-vault", "/opt/bin/voyager-vault"), ("voyager-auth0", "/opt/bin/voyager-auth0")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
    let cx = SpecContext {
        stack: &stack,
        stack_name: "voyager",
        images,
        credentials: &credentials,
        host_ports: &BTreeMap::from([("auth0-a".to_string(), 41234)]),
        fixtures: &fixtures,
        companions: &companions,
    };
    specs(kind, &cx)
}
