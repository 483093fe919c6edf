//! The services a stack can run. Each lives in its own module with its
//! container spec, readiness probe, provisioning, endpoint type and `env`
//! lines, and implements [`Service`]; this module only maps a
//! [`ServiceKind`] to its implementation ([`service`]), so adding a service
//! is one module and one arm here.

pub mod alb;
pub mod api;
pub mod auth0;
pub mod haproxy;
pub mod influxdb;
pub mod kafka;
pub mod kubernetes;
pub mod lifecycle;
pub mod nlb;
pub mod postgres;
pub mod prometheus;
pub mod route53;
pub mod s3;
pub mod targets;
pub mod vault;

use std::collections::BTreeMap;
use std::time::Duration;

use bollard::Docker;

use crate::companion::Companion;
use crate::fixtures::Fixtures;
use crate::images::ImageSet;
use crate::progress::Progress;
use crate::runtime::labels::Labels;
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
    /// advertise their host port (see [`Service::needs_host_port`]).
    pub host_ports: &'a BTreeMap<String, u16>,
    pub fixtures: &'a Fixtures,
    /// Companion binaries on this host, by binary name (located by the
    /// harness before anything starts).
    pub companions: &'a BTreeMap<String, std::path::PathBuf>,
}

/// What a readiness probe may use: the run and the Docker engine (a
/// Kubernetes node is asked through `docker exec` before it has an API).
pub struct ProbeContext<'a> {
    pub state: &'a RunState,
    pub docker: &'a Docker,
}

/// What provisioning may use, after every instance of the service answers.
pub struct ProvisionContext<'a> {
    pub state: &'a RunState,
    pub docker: &'a Docker,
    pub fixtures: &'a Fixtures,
    pub labels: &'a Labels,
    pub progress: &'a Progress,
    /// The deadline a service may take to be ready as a whole.
    pub timeout: Duration,
}

/// One kind of service. Implementations are unit structs in the service's
/// own module; their methods are the service's whole contract with the
/// harness.
#[async_trait::async_trait]
pub trait Service: Sync {
    /// The containers of the service in this stack (none if it declares none).
    fn specs(&self, cx: &SpecContext) -> Vec<ContainerSpec>;

    /// The workspace binary the service runs, if it is one of ours.
    fn companion(&self, _images: ImageSet) -> Option<Companion> {
        None
    }

    /// Whether the service starts in the second pass, after Vault is
    /// bootstrapped and every other service is ready (it is configured
    /// with Vault's scoped token, which exists only then, or names every
    /// other instance).
    fn after_vault(&self) -> bool {
        false
    }

    /// Just before its containers are made, once Vault is bootstrapped
    /// (only for [`Service::after_vault`] services): obtain what its specs
    /// are made from and keep it in the run state, which specs then read.
    async fn prepare(&self, _state: &mut RunState) -> Result<(), String> {
        Ok(())
    }

    /// The services it cannot run without: a stack (or `--only`) that has
    /// it without them is refused before anything starts.
    fn needs(&self) -> &'static [ServiceKind] {
        &[]
    }

    /// Whether each instance needs a host port chosen before it starts
    /// (a broker advertises it; an issuer URL holds it).
    fn needs_host_port(&self) -> bool {
        false
    }

    /// Whether this machine can run the service at all, checked before
    /// anything is created: `Err((reason, fix))` refuses the start.
    async fn preflight(&self, _docker: &Docker) -> Result<(), (String, String)> {
        Ok(())
    }

    /// One readiness attempt: a real request to the instance (never a sleep).
    async fn probe(&self, cx: &ProbeContext<'_>, inst: &InstanceState) -> Result<(), String>;

    /// After every instance answers: create what the fixtures declare and
    /// wait until the service is ready as a whole.
    async fn provision(&self, _cx: &ProvisionContext<'_>) -> Result<(), String> {
        Ok(())
    }

    /// After an instance was started again from nothing (killed, not
    /// paused): make again what provisioning made that the service does not
    /// keep itself.
    async fn restarted(&self, _state: &RunState, _timeout: Duration) -> Result<(), String> {
        Ok(())
    }

    /// A short description of each instance's role, for `status`.
    async fn roles(&self, _state: &RunState) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// dotenv lines for an application, with the ecosystem's usual names.
    fn env(&self, state: &RunState) -> Vec<(String, String)>;
}

/// A service's container specs as every caller starts them (bring-up, the
/// control plane's rebuilds, restores): with Route 53 in the stack, each
/// container's resolver forwards what Docker's own does not know to the
/// VPC's resolver in its subnet.
pub fn specs_of(kind: ServiceKind, cx: &SpecContext) -> Vec<ContainerSpec> {
    let mut specs = service(kind).specs(cx);
    if cx.stack.route53.is_some() && kind != ServiceKind::Route53 {
        for spec in &mut specs {
            if let Some((_, _, net)) = cx.stack.subnets().find(|(_, _, net)| net.contains(spec.address)) {
                spec.dns = vec![route53::resolver_in(net)];
            }
        }
    }
    specs
}

/// The implementation of a kind of service.
pub fn service(kind: ServiceKind) -> &'static dyn Service {
    match kind {
        ServiceKind::Alb => &alb::Alb,
        ServiceKind::Api => &api::Api,
        ServiceKind::Auth0 => &auth0::Auth0,
        ServiceKind::Influxdb => &influxdb::Influxdb,
        ServiceKind::Kafka => &kafka::Kafka,
        ServiceKind::Kubernetes => &kubernetes::Kubernetes,
        ServiceKind::Nlb => &nlb::Nlb,
        ServiceKind::Postgres => &postgres::Postgres,
        ServiceKind::Prometheus => &prometheus::Prometheus,
        ServiceKind::Route53 => &route53::Route53,
        ServiceKind::S3 => &s3::S3,
        ServiceKind::Vault => &vault::Vault,
    }
}

/// The built-in stack's specs of one service in one image set, with a
/// companion binary at a fixed path: for the services' unit tests.
#[cfg(test)]
pub(crate) fn test_specs(kind: ServiceKind, images: ImageSet) -> Vec<ContainerSpec> {
    test_specs_in(&crate::harness::builtin_stack(), kind, images)
}

/// The same, for a stack without its cluster: the API runs as containers.
#[cfg(test)]
pub(crate) fn test_specs_without_cluster(kind: ServiceKind, images: ImageSet) -> Vec<ContainerSpec> {
    let stack = crate::harness::builtin_stack();
    let kinds: Vec<ServiceKind> =
        stack.services.iter().map(|s| s.kind).filter(|k| *k != ServiceKind::Kubernetes).collect();
    test_specs_in(&stack.only(&kinds), kind, images)
}

#[cfg(test)]
fn test_specs_in(stack: &Stack, kind: ServiceKind, images: ImageSet) -> Vec<ContainerSpec> {
    let credentials = Credentials::generate();
    let fixtures = crate::fixtures::builtin();
    let companions: BTreeMap<String, std::path::PathBuf> = [
        ("voyager-vault", "/opt/bin/voyager-vault"),
        ("voyager-auth0", "/opt/bin/voyager-auth0"),
        ("voyager-api", "/opt/bin/voyager-api"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into()))
    .collect();
    let cx = SpecContext {
        stack,
        stack_name: "voyager",
        images,
        credentials: &credentials,
        host_ports: &BTreeMap::from([("auth0-a".to_string(), 41234)]),
        fixtures: &fixtures,
        companions: &companions,
    };
    specs_of(kind, &cx)
}
