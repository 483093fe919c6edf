//! Which image each service runs, from one of two sets behind one switch:
//! **upstream** (pinned official images, for machines that can pull) and
//! **offline** (built here from a debootstrapped Debian base, tagged by a hash
//! of their recipe). Choosing is pure; building lives in [`build`].

pub mod build;
pub mod gobuild;
pub mod kubernetes;
pub mod recipe;

use std::fmt;
use std::str::FromStr;

use crate::stack::ServiceKind;
pub use recipe::Recipe;

/// The `--images` switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageSource {
    /// Upstream when a registry answers, offline otherwise.
    #[default]
    Auto,
    Offline,
    Upstream,
}

/// An [`ImageSource`] after `Auto` has been decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageSet {
    Offline,
    Upstream,
}

/// Upstream images, pinned. Never `latest`: a moving tag makes a failing run
/// impossible to replay.
pub const UPSTREAM_POSTGRES: &str = "postgres:15.13-bookworm";
/// The same Kafka version as the offline image's jars (recipes/kafka/pom.xml).
pub const UPSTREAM_KAFKA: &str = "apache/kafka:4.1.1";
/// The 1.x line (Debian's offline image is 1.6; the API is the same).
pub const UPSTREAM_INFLUXDB: &str = "influxdb:1.8.10";
pub const UPSTREAM_HAPROXY: &str = "haproxy:2.8.14";
/// PowerDNS Authoritative, the release Debian 12 ships.
pub const UPSTREAM_PDNS: &str = "powerdns/pdns-auth-47:4.7.4";
/// Real Vault, in server mode with file storage (offline: `vault-lite`).
pub const UPSTREAM_VAULT: &str = "hashicorp/vault:1.17.6";
/// The release Debian 12 ships, which the offline image runs.
pub const UPSTREAM_PROMETHEUS: &str = "prom/prometheus:v2.42.0";
/// The same LocalStack as the offline image's runtime (recipes/localstack).
pub const UPSTREAM_LOCALSTACK: &str = "localstack/localstack:4.13.1";

/// The plain Debian the workspace's companion binaries run in (mounted
/// from the host: see [`crate::companion`]). Same release as the offline
/// base, so a binary built on the host's Debian 12 runs in either.
pub const UPSTREAM_DEBIAN: &str = "debian:12.12-slim";

pub fn companion_base(set: ImageSet) -> String {
    match set {
        ImageSet::Upstream => UPSTREAM_DEBIAN.to_string(),
        ImageSet::Offline => recipe::base().tag(),
    }
}

/// The HAProxy image of a set (the database endpoints and the ALB run it).
pub fn haproxy_image(set: ImageSet) -> String {
    match set {
        ImageSet::Upstream => UPSTREAM_HAPROXY.to_string(),
        ImageSet::Offline => recipe::haproxy().tag(),
    }
}

/// Every image a service needs in a set: its own and its helpers'.
pub fn images_for(kind: ServiceKind, set: ImageSet) -> Vec<String> {
    match (kind, set) {
        // The database's endpoints and the cluster's API endpoint are HAProxy.
        (ServiceKind::Postgres | ServiceKind::Kubernetes, _) => vec![image_for(kind, set), haproxy_image(set)],
        _ => vec![image_for(kind, set)],
    }
}

/// The image a service runs in the given set.
pub fn image_for(kind: ServiceKind, set: ImageSet) -> String {
    match set {
        ImageSet::Upstream => match kind {
            // Our own server: a plain Debian with the binary mounted.
            ServiceKind::Auth0 | ServiceKind::Api => UPSTREAM_DEBIAN.to_string(),
            ServiceKind::Postgres => UPSTREAM_POSTGRES.to_string(),
            ServiceKind::Kafka => UPSTREAM_KAFKA.to_string(),
            ServiceKind::Influxdb => UPSTREAM_INFLUXDB.to_string(),
            ServiceKind::Vault => UPSTREAM_VAULT.to_string(),
            ServiceKind::S3 => UPSTREAM_LOCALSTACK.to_string(),
            ServiceKind::Kubernetes => kubernetes::UPSTREAM_NODE.to_string(),
            ServiceKind::Alb | ServiceKind::Nlb => UPSTREAM_HAPROXY.to_string(),
            ServiceKind::Route53 => UPSTREAM_PDNS.to_string(),
            ServiceKind::Prometheus => UPSTREAM_PROMETHEUS.to_string(),
        },
        ImageSet::Offline => recipe::for_service(kind).tag(),
    }
}

impl FromStr for ImageSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(ImageSource::Auto),
            "offline" => Ok(ImageSource::Offline),
            "upstream" => Ok(ImageSource::Upstream),
            _ => Err(format!("unknown image set `{s}`; use auto, offline or upstream")),
        }
    }
}

impl fmt::Display for ImageSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageSet::Offline => "offline",
            ImageSet::Upstream => "upstream",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_images_are_pinned_never_latest() {
        for kind in ServiceKind::ALL {
            let img = image_for(*kind, ImageSet::Upstream);
            let (_, tag) = img.rsplit_once(':').expect("upstream image has a tag");
            assert_ne!(tag, "latest", "{img}");
            // Prometheus's tags carry a `v`.
            let version = tag.strip_prefix('v').unwrap_or(tag);
            assert!(version.chars().next().unwrap().is_ascii_digit(), "{img} should pin a version");
        }
    }

    #[test]
    fn offline_images_are_tagged_by_recipe_hash() {
        let img = image_for(ServiceKind::Postgres, ImageSet::Offline);
        assert!(img.starts_with("voyager-sim/postgres:"), "{img}");
        assert_eq!(img, recipe::for_service(ServiceKind::Postgres).tag());
    }
}
