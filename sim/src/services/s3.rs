//! S3 through LocalStack: `localstack/localstack` upstream, offline its
//! Python runtime (`python -m localstack.runtime.main`) in an image built
//! from wheels resolved on the host. S3 only. Provisioning creates the
//! fixture's buckets with versioning and lifecycle rules over S3's REST API,
//! the calls an application's SDK makes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::SpecContext;
use crate::fixtures::{LifecycleRule, S3Fixture};
use crate::http::request;
use crate::images::image_for;
use crate::runtime::network::network_name;
use crate::spec::{ContainerSpec, Publish};
use crate::stack::ServiceKind;
use crate::state::{InstanceState, RunState};

pub const PORT: u16 = 4566;
/// LocalStack's well-known test credentials: it accepts any, and these are
/// what AWS tooling for LocalStack expects. Not secrets.
pub const ACCESS_KEY_ID: &str = "test";
pub const SECRET_ACCESS_KEY: &str = "test";
const NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

pub fn specs(cx: &SpecContext) -> Vec<ContainerSpec> {
    let Some(svc) = cx.stack.service(ServiceKind::S3) else { return vec![] };
    svc.instances
        .iter()
        .map(|inst| {
            let az = cx.stack.az(&inst.az).expect("validated");
            let env: BTreeMap<String, String> = [
                ("SERVICES", "s3".to_string()),
                ("GATEWAY_LISTEN", format!("0.0.0.0:{PORT}")),
                ("AWS_DEFAULT_REGION", cx.fixtures.s3.region.clone()),
                // Offline: no certificate download, no usage events.
                ("SKIP_SSL_CERT_DOWNLOAD", "1".to_string()),
                ("DISABLE_EVENTS", "1".to_string()),
                ("PERSISTENCE", "0".to_string()),
                // S3's provider loads at start rather than on the first
                // request: the bucket creation that follows is quick, and
                // the load overlaps the other services' starts.
                ("EAGER_SERVICE_LOADING", "1".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            ContainerSpec {
                instance: inst.name.clone(),
                image: image_for(ServiceKind::S3, cx.images),
                env,
                cmd: vec![],
                network: network_name(cx.stack_name, &az.name, inst.tier),
                address: inst.address,
                published: vec![Publish::any(PORT)],
                volumes: vec![],
                extra_networks: vec![],
                files: vec![],
                entrypoint: None,
                user: None,
                mounts: vec![],
                ..Default::default()
            }
        })
        .collect()
}

/// Where S3 is reached from the host.
#[derive(Debug, Clone)]
pub struct S3Endpoint {
    pub host: SocketAddr,
    pub region: String,
}

impl S3Endpoint {
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }
}

pub fn endpoint(state: &RunState) -> Option<S3Endpoint> {
    let inst = state.instances.iter().find(|i| i.service == ServiceKind::S3.as_str())?;
    Some(S3Endpoint { host: *inst.published.get(&PORT)?, region: state.credentials.s3_region.clone() })
}

/// LocalStack's health document lists S3 as running: loaded (eagerly, at
/// start), so the first request does not wait for it.
pub async fn probe(_state: &RunState, inst: &InstanceState) -> Result<(), String> {
    let addr = inst.published.get(&PORT).ok_or("no published port")?;
    let r = request("GET", &format!("http://{addr}/_localstack/health"), &[], "", Duration::from_secs(3)).await?;
    let v: serde_json::Value = serde_json::from_str(&r.body).map_err(|_| format!("health answered {}", r.status))?;
    match v["services"]["s3"].as_str() {
        Some("running") => Ok(()),
        other => Err(format!("s3 is {}", other.unwrap_or("not listed"))),
    }
}

/// One PUT, tried again until `deadline` when it times out or the server
/// is not answering yet: LocalStack loads its S3 provider on the first
/// request, which on a loaded machine takes longer than any one timeout.
/// Every PUT here is idempotent (a bucket we own already is fine).
async fn put(base: &str, path: &str, body: &str, deadline: std::time::Instant) -> Result<(), String> {
    let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &[("content-type", "application/xml")] };
    loop {
        let last = match request("PUT", &format!("{base}/{path}"), headers, body, Duration::from_secs(60)).await {
            Ok(r) if (200..=299).contains(&r.status) => return Ok(()),
            Ok(r) if r.status < 500 => return Err(format!("PUT /{path} answered {}: {}", r.status, r.body.trim())),
            Ok(r) => format!("PUT /{path} answered {}: {}", r.status, r.body.trim()),
            Err(e) => e,
        };
        if std::time::Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Create the buckets, then set versioning and lifecycle as declared.
/// Again on a running stack, it leaves the buckets as the fixture says.
pub async fn provision(state: &RunState, fixture: &S3Fixture, timeout: Duration) -> Result<(), String> {
    let ep = endpoint(state).ok_or("no S3 instance")?;
    let base = ep.url();
    let deadline = std::time::Instant::now() + timeout;
    for b in &fixture.buckets {
        let create = if fixture.region == "us-east-1" {
            String::new()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"{NS}\"><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                fixture.region
            )
        };
        if let Err(e) = put(&base, &b.name, &create, deadline).await {
            // Already ours (a second provisioning) is fine.
            if !e.contains("BucketAlreadyOwnedByYou") {
                return Err(format!("creating bucket {}: {e}", b.name));
            }
        }
        if b.versioning {
            let body =
                format!("<VersioningConfiguration xmlns=\"{NS}\"><Status>Enabled</Status></VersioningConfiguration>");
            put(&base, &format!("{}?versioning", b.name), &body, deadline).await?;
        }
        if !b.lifecycle.is_empty() {
            put(&base, &format!("{}?lifecycle", b.name), &lifecycle_xml(&b.lifecycle), deadline).await?;
        }
    }
    Ok(())
}

/// A `PutBucketLifecycleConfiguration` body.
pub fn lifecycle_xml(rules: &[LifecycleRule]) -> String {
    let mut out = format!("<LifecycleConfiguration xmlns=\"{NS}\">");
    for r in rules {
        out +=
            &format!("<Rule><ID>{}</ID><Filter><Prefix>{}</Prefix></Filter><Status>Enabled</Status>", r.id, r.prefix);
        if let (Some(days), Some(class)) = (r.transition_days, &r.storage_class) {
            out += &format!("<Transition><Days>{days}</Days><StorageClass>{class}</StorageClass></Transition>");
        }
        if let Some(d) = r.expire_days {
            out += &format!("<Expiration><Days>{d}</Days></Expiration>");
        }
        if let Some(d) = r.noncurrent_expire_days {
            out += &format!(
                "<NoncurrentVersionExpiration><NoncurrentDays>{d}</NoncurrentDays></NoncurrentVersionExpiration>"
            );
        }
        if let Some(d) = r.abort_multipart_days {
            out += &format!(
                "<AbortIncompleteMultipartUpload><DaysAfterInitiation>{d}</DaysAfterInitiation></AbortIncompleteMultipartUpload>"
            );
        }
        out += "</Rule>";
    }
    out + "</LifecycleConfiguration>"
}

/// The variables AWS SDKs and CLIs read, pointed at LocalStack.
pub fn env(state: &RunState) -> Vec<(String, String)> {
    let Some(ep) = endpoint(state) else { return vec![] };
    vec![
        ("AWS_ENDPOINT_URL".into(), ep.url()),
        ("AWS_REGION".into(), ep.region.clone()),
        ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY_ID.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), SECRET_ACCESS_KEY.into()),
    ]
}

/// The service's contract with the harness (see [`super::Service`]).
pub struct S3;

#[async_trait::async_trait]
impl super::Service for S3 {
    fn specs(&self, cx: &SpecContext) -> Vec<ContainerSpec> {
        specs(cx)
    }
    async fn probe(&self, cx: &super::ProbeContext<'_>, inst: &InstanceState) -> Result<(), String> {
        probe(cx.state, inst).await
    }
    async fn provision(&self, cx: &super::ProvisionContext<'_>) -> Result<(), String> {
        provision(cx.state, &cx.fixtures.s3, cx.timeout).await
    }
    /// LocalStack's community edition keeps buckets and objects in memory
    /// (persistence is its paid edition's): a killed S3 comes back empty.
    /// The buckets are made again so applications and the database's WAL
    /// archive can write; what was in them is gone.
    async fn restarted(&self, state: &RunState, timeout: Duration) -> Result<(), String> {
        provision(state, &crate::fixtures::builtin().s3, timeout).await
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
    fn lifecycle_rules_become_s3s_xml() {
        let f = crate::fixtures::builtin_s3();
        let xml = lifecycle_xml(&f.buckets[1].lifecycle);
        assert!(xml.contains("<ID>backups-to-glacier</ID>"), "{xml}");
        assert!(xml.contains("<Transition><Days>7</Days><StorageClass>GLACIER</StorageClass></Transition>"));
        assert!(xml.contains("<Expiration><Days>365</Days></Expiration>"));
        assert!(xml.contains("<NoncurrentDays>90</NoncurrentDays>"));
    }

    #[test]
    fn both_image_sets_run_s3_only_with_the_same_container_but_the_image() {
        let off = &super::super::test_specs(ServiceKind::S3, ImageSet::Offline)[0];
        let up = &super::super::test_specs(ServiceKind::S3, ImageSet::Upstream)[0];
        assert_eq!(up.image, crate::images::UPSTREAM_LOCALSTACK);
        assert!(off.image.starts_with("voyager-sim/localstack:"), "{}", off.image);
        assert_eq!(off.env["SERVICES"], "s3");
        assert_eq!(
            ContainerSpec { image: String::new(), ..off.clone() },
            ContainerSpec { image: String::new(), ..up.clone() }
        );
    }
}
