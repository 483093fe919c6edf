//! `voyager-api`, the reference Voyager service (the workspace's
//! `voyager-api` crate), as a service of the stack: one replica per AZ in
//! that AZ's private subnet, a plain Debian container with the binary
//! mounted, configured the way an application is — by environment, with
//! every dependency's VPC address (the writer endpoint, the brokers'
//! internal listeners, Vault, InfluxDB, S3, the tenant's JWKS).
//!
//! It needs Vault's scoped token, which exists only once Vault is
//! bootstrapped, so the harness starts it after every other service
//! ([`Service::after_vault`]); ready means its deep health check passes:
//! every dependency answered it, with the replica's own leased credentials.

use std::collections::BTreeMap;
use std::time::Duration;

use super::SpecContext;
use crate::companion::{mount_point, Companion};
use crate::http::request;
use crate::images::image_for;
use crate::runtime::network::network_name;
use crate::spec::{ContainerSpec, Publish};
use crate::stack::{ServiceKind, Stack};
use crate::state::{Credentials, InstanceState, RunState};

pub mod pods;

pub const PORT: u16 = 8080;

pub const API: Companion = Companion { binary: "voyager-api", env: "VOYAGER_API", package: "voyager-api" };

/// What the service cannot run without, checked before anything starts.
pub const NEEDS: &[ServiceKind] = &[
    ServiceKind::Postgres,
    ServiceKind::Kafka,
    ServiceKind::Vault,
    ServiceKind::Auth0,
    ServiceKind::Influxdb,
    ServiceKind::S3,
];

fn addresses(stack: &Stack, kind: ServiceKind) -> Vec<std::net::Ipv4Addr> {
    stack.service(kind).map(|s| s.instances.iter().map(|i| i.address).collect()).unwrap_or_default()
}

/// The availability zone as AWS names it (`us-east-1a`) where the stack
/// says which region it is in, else the AZ's own name.
fn zone(stack: &Stack, az: &str) -> String {
    stack.kubernetes.as_ref().map(|k| k.zone(az)).unwrap_or_else(|| az.to_string())
}

/// The settings that are secrets: a pod reads them from a Secret.
pub const SECRETS: &[&str] = &["VAULT_TOKEN", "INFLUXDB_PASSWORD", "AWS_SECRET_ACCESS_KEY"];

/// The settings every replica shares; where it runs is added per replica.
/// `auth0_host_port` is the tenant's port on the host, which its issuer
/// URL names.
fn settings(stack: &Stack, c: &Credentials, auth0_host_port: u16) -> BTreeMap<String, String> {
    let first = |kind| addresses(stack, kind).first().map(|a| a.to_string()).unwrap_or_default();
    let auth0 = first(ServiceKind::Auth0);
    let brokers: Vec<String> = stack
        .with_role(ServiceKind::Kafka, "broker")
        .into_iter()
        .map(|i| format!("{}:{}", i.address, super::kafka::INTERNAL_PORT))
        .collect();
    let writer = stack.azs[0].private.nth(super::postgres::ENDPOINTS_HOST);
    let mut env = BTreeMap::from(
        [
            ("VOYAGER_API_LISTEN", format!("0.0.0.0:{PORT}")),
            // Tokens carry the issuer applications on the host know the
            // tenant by; the keys are fetched over the VPC.
            ("AUTH0_ISSUER", format!("http://127.0.0.1:{auth0_host_port}/")),
            ("AUTH0_AUDIENCE", c.auth0_audience.clone()),
            ("AUTH0_JWKS_URI", format!("http://{auth0}:{}/.well-known/jwks.json", super::auth0::PORT)),
            ("VAULT_ADDR", format!("http://{}:{}", first(ServiceKind::Vault), super::vault::PORT)),
            ("VAULT_TOKEN", c.vault.as_ref().map(|v| v.app_token.clone()).unwrap_or_default()),
            ("PGHOST", writer.to_string()),
            ("PGPORT", super::postgres::WRITER_PORT.to_string()),
            ("PGDATABASE", c.postgres_db.clone()),
            ("KAFKA_BOOTSTRAP_SERVERS", brokers.join(",")),
            ("INFLUXDB_URL", format!("http://{}:{}", first(ServiceKind::Influxdb), super::influxdb::PORT)),
            ("INFLUXDB_DATABASE", c.influxdb_database.clone()),
            ("INFLUXDB_USERNAME", "admin".into()),
            ("INFLUXDB_PASSWORD", c.influxdb_password.clone()),
            ("AWS_ENDPOINT_URL", format!("http://{}:{}", first(ServiceKind::S3), super::s3::PORT)),
            ("AWS_REGION", c.s3_region.clone()),
            ("AWS_ACCESS_KEY_ID", super::s3::ACCESS_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", super::s3::SECRET_ACCESS_KEY.into()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    // Whoever brings the stack up can ask every replica for librdkafka's
    // debug log (`VOYAGER_API_KAFKA_DEBUG=eos voyager-sim up`): what its
    // producer did in a fault is otherwise not in the pods' logs.
    if let Some(debug) = std::env::var(KAFKA_DEBUG).ok().filter(|d| !d.is_empty()) {
        env.insert(KAFKA_DEBUG.into(), debug);
    }
    env
}

const KAFKA_DEBUG: &str = "VOYAGER_API_KAFKA_DEBUG";

/// The replicas as containers, one per instance; none when the API runs
/// as pods (see [`pods`]).
pub fn specs(cx: &SpecContext) -> Vec<ContainerSpec> {
    let Some(svc) = cx.stack.service(ServiceKind::Api) else { return vec![] };
    if cx.stack.api_on_kubernetes() {
        return vec![];
    }
    let binary = cx.companions.get(API.binary).map(|p| p.display().to_string()).unwrap_or_default();
    let auth0_host_port = cx
        .stack
        .service(ServiceKind::Auth0)
        .and_then(|s| s.instances.first())
        .and_then(|i| cx.host_ports.get(&i.name))
        .copied()
        .unwrap_or(super::auth0::PORT);
    let shared = settings(cx.stack, cx.credentials, auth0_host_port);
    svc.instances
        .iter()
        .map(|inst| {
            let az = cx.stack.az(&inst.az).expect("validated");
            let mut env = shared.clone();
            env.insert("VOYAGER_API_ZONE".into(), zone(cx.stack, &az.name));
            ContainerSpec {
                instance: inst.name.clone(),
                image: image_for(ServiceKind::Api, cx.images),
                env,
                network: network_name(cx.stack_name, &az.name, inst.tier),
                address: inst.address,
                published: vec![Publish::any(PORT)],
                entrypoint: Some(vec![mount_point(API)]),
                user: Some("nobody".into()),
                mounts: vec![(binary.clone(), mount_point(API))],
                ..Default::default()
            }
        })
        .collect()
}

/// The deep health check: every dependency answers this replica.
pub async fn probe(inst: &InstanceState) -> Result<(), String> {
    let addr = inst.published.get(&PORT).ok_or("no published port")?;
    let r = request("GET", &format!("http://{addr}/readyz"), &[], "", Duration::from_secs(10)).await?;
    match r.status {
        200 => Ok(()),
        s => Err(format!("/readyz answered {s}: {}", r.body.trim())),
    }
}

/// Each replica's URL on this host, by AZ: `VOYAGER_API_<AZ>_URL`. (The
/// load balancer in front of them is the edge tier's.)
pub fn env(state: &RunState) -> Vec<(String, String)> {
    state
        .instances
        .iter()
        .filter(|i| i.service == ServiceKind::Api.as_str())
        .filter_map(|i| {
            let addr = i.published.get(&PORT)?;
            Some((format!("VOYAGER_API_{}_URL", i.az.to_ascii_uppercase()), format!("http://{addr}")))
        })
        .collect()
}

/// The service's contract with the harness (see [`super::Service`]).
pub struct Api;

#[async_trait::async_trait]
impl super::Service for Api {
    fn specs(&self, cx: &SpecContext) -> Vec<ContainerSpec> {
        specs(cx)
    }
    fn companion(&self, _images: crate::images::ImageSet) -> Option<Companion> {
        Some(API)
    }
    fn after_vault(&self) -> bool {
        true
    }
    fn needs(&self) -> &'static [ServiceKind] {
        NEEDS
    }
    async fn probe(&self, _cx: &super::ProbeContext<'_>, inst: &InstanceState) -> Result<(), String> {
        probe(inst).await
    }
    /// On a cluster, the Deployment is made here, once the cluster and
    /// every tier it needs are ready.
    async fn provision(&self, cx: &super::ProvisionContext<'_>) -> Result<(), String> {
        let stack = cx.state.parsed_stack()?;
        if stack.api_on_kubernetes() {
            pods::deploy(cx, &stack).await?;
        }
        Ok(())
    }

    fn env(&self, state: &RunState) -> Vec<(String, String)> {
        env(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::ImageSet;

    #[test]
    fn each_replica_reaches_every_tier_by_its_vpc_address_from_its_own_az() {
        let v = super::super::test_specs_without_cluster(ServiceKind::Api, ImageSet::Offline);
        assert_eq!(v.len(), 3, "one replica per AZ");
        let zones: Vec<&str> = v.iter().map(|s| s.env["VOYAGER_API_ZONE"].as_str()).collect();
        assert_eq!(zones, ["a", "b", "c"], "without a cluster the stack names no region");
        assert!(super::super::test_specs(ServiceKind::Api, ImageSet::Offline).is_empty(), "on a cluster: pods");
        let s = &v[1];
        assert_eq!(s.network, "vs-voyager-b-private");
        assert_eq!(s.env["PGHOST"], "10.0.1.5", "the writer endpoint");
        assert_eq!(s.env["KAFKA_BOOTSTRAP_SERVERS"], "10.0.1.20:9092,10.0.2.20:9092,10.0.3.20:9092");
        assert_eq!(s.env["AUTH0_ISSUER"], "http://127.0.0.1:41234/", "the issuer tokens carry");
        assert_eq!(s.env["AUTH0_JWKS_URI"], "http://10.0.101.40:8080/.well-known/jwks.json");
        assert_eq!(s.env["VAULT_ADDR"], "http://10.0.1.50:8200");
        assert_eq!(s.mounts, [("/opt/bin/voyager-api".to_string(), mount_point(API))]);
        assert_eq!(s.user.as_deref(), Some("nobody"));
    }
}
