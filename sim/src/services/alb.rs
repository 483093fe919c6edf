//! The Application Load Balancer: one HAProxy node per AZ in that AZ's
//! public subnet, as an internet-facing ALB has, in front of the API's
//! targets in the private subnets.
//!
//! HAProxy (Debian's 2.6, the same program as the database's endpoints)
//! because it is an L7 proxy with what an ALB is made of built in: TLS
//! termination, HTTP health checks with rise and fall counts, a runtime API
//! to register and drain targets, stick tables for a WAF's rate-based rule,
//! and its own Prometheus endpoint. Envoy would do as well but is not in
//! Debian; nginx's open edition has no active health checks.
//!
//! What each part means in ELB's terms:
//! - the HTTPS listener terminates TLS with a certificate the stack's Vault
//!   PKI issued for the API's public name ([`Service::prepare`]), TLS 1.2
//!   and up as ALB's default security policy; port 80 redirects to it;
//! - the target group is the backend `targets`: checked every interval, a
//!   target leaves after `unhealthy` failed checks and returns after
//!   `healthy` good ones. HAProxy bounds a check's connect by the
//!   backend's connect timeout, so that is the check's timeout there (ELB
//!   bounds the whole check by it); the unchecked `fail_open` backend keeps
//!   ALB's 10 s;
//! - fail-open: when no target is healthy, ALB sends to all of them
//!   anyway, here the backend `fail_open` (the same targets, unchecked);
//! - cross-zone on: each node spreads over every AZ's targets; off, over
//!   its own AZ's only;
//! - the WAF's rate-based rule: a stick table per client address over the
//!   rule's window; past the limit the answer is 429.
//!
//! [`Service::prepare`]: super::Service::prepare

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::SpecContext;
use crate::http::{request_with, HttpClient};
use crate::images::haproxy_image;
use crate::runtime::network::network_name;
use crate::spec::{ContainerSpec, Publish};
use crate::stack::{Alb as Settings, ServiceKind, Stack, Tier};
use crate::state::{EdgeTls, InstanceState, RunState};

pub const HTTPS_PORT: u16 = 443;
pub const HTTP_PORT: u16 = 80;
/// HAProxy's runtime API (target states, registration).
pub const ADMIN_PORT: u16 = 9999;
/// HAProxy's own Prometheus endpoint, `/metrics`.
pub const METRICS_PORT: u16 = 8404;

const CFG: &str = "/usr/local/etc/haproxy/haproxy.cfg";
/// How long ALB tries to connect to a target before it answers an error
/// (fixed by AWS; not a target group setting).
const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CERT: &str = "/usr/local/etc/haproxy/listener.pem";

/// The Vault PKI role that issues the listener's certificate (ACM's part
/// in AWS): `fixtures/vault.toml` allows it the public domain.
pub const PKI_ROLE: &str = "voyager-edge";

/// The backend every node routes to while any target is healthy.
pub const TARGETS: &str = "targets";

/// What the service cannot run without: the targets, and the PKI that
/// issues its certificate.
const NEEDS: &[ServiceKind] = &[ServiceKind::Api, ServiceKind::Vault];

/// A registered target: its name (the instance or pod) and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub az: String,
    pub address: Ipv4Addr,
    pub port: u16,
}

/// The targets a node's configuration starts with: the API's replicas
/// when they are containers. Pods come and go, so when the API runs on
/// the cluster a node starts with none and the target groups' controller
/// registers them ([`super::targets`]).
pub fn targets(stack: &Stack) -> Vec<Target> {
    if stack.api_on_kubernetes() {
        return vec![];
    }
    stack
        .service(ServiceKind::Api)
        .map(|s| {
            s.instances
                .iter()
                .map(|i| Target { name: i.name.clone(), az: i.az.clone(), address: i.address, port: super::api::PORT })
                .collect()
        })
        .unwrap_or_default()
}

/// A backend's `server` lines for `targets`, health-checked or not (the
/// fail-open backend's are not).
pub fn server_lines(targets: &[&Target], checked: bool) -> String {
    targets
        .iter()
        .map(|t| format!("    server {} {}:{}{}\n", t.name, t.address, t.port, if checked { " check" } else { "" }))
        .collect()
}

fn secs(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// One node's HAProxy configuration: the node in `az` routes to `targets`
/// (only its own AZ's when cross-zone is off).
pub fn haproxy_config(alb: &Settings, az: &str, targets: &[Target]) -> String {
    let h = &alb.health_check;
    let mine: Vec<&Target> = targets.iter().filter(|t| alb.cross_zone || t.az == az).collect();
    let servers = |checked: bool| server_lines(&mine, checked);
    let waf = match &alb.rate_limit {
        None => String::new(),
        Some(r) => format!(
            "    # WAF rate-based rule: {limit} requests per client address per {w}.\n    \
             stick-table type ip size 1m expire {w} store http_req_rate({w})\n    \
             http-request track-sc0 src\n    \
             http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt {limit} }}\n",
            limit = r.requests,
            w = secs(r.window),
        ),
    };
    let idle = secs(alb.idle_timeout);
    // HAProxy has one connect timeout per backend, for its checks and its
    // traffic alike; the checks need the health check's timeout (5 s). ALB
    // gives up connecting to a target after a fixed 10 s (and answers an
    // error); HAProxy's default 3 retries made that 20 s. So a request gets
    // as many attempts of the check's timeout as fill ALB's 10 s.
    let attempts = TARGET_CONNECT_TIMEOUT.as_millis().div_ceil(h.timeout.as_millis().max(1)).max(1);
    let retries = attempts - 1;
    format!(
        "global\n    user haproxy\n    group haproxy\n    stats socket ipv4@0.0.0.0:{ADMIN_PORT} level admin\n\n\
         defaults\n    mode http\n    option forwardfor\n    timeout connect {connect}\n    retries 0\n    \
         timeout client {idle}\n    timeout server {idle}\n    timeout http-keep-alive {idle}\n    \
         timeout http-request 60s\n\n\
         frontend metrics\n    bind :{METRICS_PORT}\n    \
         http-request use-service prometheus-exporter if {{ path /metrics }}\n\n\
         frontend http\n    bind :{HTTP_PORT}\n    http-request redirect scheme https code 301\n\n\
         frontend https\n    bind :{HTTPS_PORT} ssl crt {CERT} ssl-min-ver TLSv1.2\n    \
         http-request set-header X-Forwarded-Proto https\n{waf}    \
         use_backend {TARGETS} if {{ nbsrv({TARGETS}) gt 0 }}\n    \
         # No healthy target: ALB fails open to all of them.\n    \
         default_backend fail_open\n\n\
         backend {TARGETS}\n    balance roundrobin\n    option httpchk GET {path}\n    \
         http-check expect status 200\n    timeout connect {timeout}\n    timeout check {timeout}\n    \
         retries {retries}\n    \
         default-server inter {interval} fall {fall} rise {rise}\n{checked}\n\
         backend fail_open\n    balance roundrobin\n{unchecked}",
        connect = secs(TARGET_CONNECT_TIMEOUT),
        path = h.path,
        timeout = secs(h.timeout),
        interval = secs(h.interval),
        fall = h.unhealthy,
        rise = h.healthy,
        checked = servers(true),
        unchecked = servers(false),
    )
}

pub fn specs(cx: &SpecContext) -> Vec<ContainerSpec> {
    let (Some(svc), Some(alb)) = (cx.stack.service(ServiceKind::Alb), cx.stack.alb.as_ref()) else { return vec![] };
    // Without a certificate there is nothing to listen with; `prepare`
    // issues it before specs are asked for.
    let pem = cx
        .credentials
        .edge_tls
        .as_ref()
        .map(|t| format!("{}\n{}\n", t.certificate.trim_end(), t.private_key.trim_end()))
        .unwrap_or_default();
    let targets = targets(cx.stack);
    svc.instances
        .iter()
        .map(|inst| ContainerSpec {
            instance: inst.name.clone(),
            image: haproxy_image(cx.images),
            cmd: ["-W", "-db", "-f", CFG].map(String::from).to_vec(),
            network: network_name(cx.stack_name, &inst.az, Tier::Public),
            address: inst.address,
            published: [HTTPS_PORT, HTTP_PORT, ADMIN_PORT, METRICS_PORT].map(Publish::any).to_vec(),
            files: vec![
                (CFG.into(), 0o644, haproxy_config(alb, &inst.az, &targets)),
                // Read by HAProxy as root before it drops to its own user.
                (CERT.into(), 0o600, pem.clone()),
            ],
            entrypoint: Some(vec!["haproxy".into()]),
            user: Some("root".into()),
            ..Default::default()
        })
        .collect()
}

/// Issue the listener's certificate from the stack's Vault PKI, for the
/// API's public name and for 127.0.0.1 (where the host reaches the nodes),
/// and write the CA where `VOYAGER_CA_CERT` points.
async fn issue_certificate(state: &mut RunState) -> Result<(), String> {
    let alb = state.parsed_stack()?.alb.ok_or("the stack has no [service.alb]")?;
    if state.credentials.edge_tls.is_none() {
        let ep = super::vault::endpoint(state).ok_or("no Vault instance issues the certificate")?;
        let c = vault_lite::client::VaultClient::new(&ep.addr()).with_token(ep.app_token());
        let body = serde_json::json!({ "common_name": alb.domain, "ip_sans": "127.0.0.1", "ttl": "720h" });
        let r = c.write(&format!("pki/issue/{PKI_ROLE}"), &body).await.map_err(|e| {
            format!(
                "Vault refused the listener's certificate for {}: {e} (fixtures/vault.toml's PKI role \
                 {PKI_ROLE} must allow the ALB's domain)",
                alb.domain
            )
        })?;
        let field = |k: &str| r["data"][k].as_str().map(str::to_string).ok_or(format!("pki/issue returned no {k}"));
        let issuing = field("issuing_ca")?;
        state.credentials.edge_tls = Some(EdgeTls {
            certificate: format!("{}\n{}", field("certificate")?.trim_end(), issuing.trim_end()),
            private_key: field("private_key")?,
            ca: issuing,
        });
    }
    let ca = &state.credentials.edge_tls.as_ref().expect("issued above").ca;
    let path = crate::state::ca_cert_path(&state.stack);
    std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(|e| e.to_string())?;
    std::fs::write(&path, format!("{}\n", ca.trim_end())).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// A client that trusts the stack's CA and no other.
pub fn client(state: &RunState) -> Result<HttpClient, String> {
    let tls = state.credentials.edge_tls.as_ref().ok_or("the ALB has no certificate yet")?;
    HttpClient::trusting(&tls.ca)
}

/// Ready when the node's HTTPS listener answers with a certificate that
/// verifies against the stack's CA, and routes to a target. With the API
/// on the cluster the node's targets are the controller's to register,
/// and a node back from its AZ's heal may have none yet (or, its AZ's
/// pods evicted, none for a while): the node is ready once its listener
/// answers, whatever the answer.
pub async fn probe(state: &RunState, inst: &InstanceState) -> Result<(), String> {
    let addr = inst.published.get(&HTTPS_PORT).ok_or("no published HTTPS port")?;
    let r = request_with(&client(state)?, "GET", &format!("https://{addr}/healthz"), &[], "", Duration::from_secs(10))
        .await?;
    match r.status {
        200 => Ok(()),
        _ if state.parsed_stack()?.api_on_kubernetes() => Ok(()),
        s => Err(format!("GET /healthz through the listener answered {s}")),
    }
}

fn nodes(state: &RunState) -> impl Iterator<Item = &InstanceState> {
    state.instances.iter().filter(|i| i.service == ServiceKind::Alb.as_str())
}

/// Each node's view of the target group: (target, healthy).
pub async fn target_health(inst: &InstanceState) -> Result<Vec<(String, bool)>, String> {
    let admin = *inst.published.get(&ADMIN_PORT).ok_or("no admin port")?;
    Ok(super::haproxy::server_stats(admin)
        .await?
        .into_iter()
        .filter(|s| s.backend == TARGETS)
        .map(|s| {
            let healthy = s.healthy();
            (s.server, healthy)
        })
        .collect())
}

/// Each balancer node's role for `status`: how many of its targets it
/// counts healthy.
pub async fn target_roles<'a>(nodes: impl Iterator<Item = &'a InstanceState>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for n in nodes {
        let line = match target_health(n).await {
            Ok(t) => format!("{}/{} targets healthy", t.iter().filter(|(_, h)| *h).count(), t.len()),
            Err(e) => format!("targets unknown: {e}"),
        };
        out.insert(n.name.clone(), line);
    }
    out
}

/// `VOYAGER_API_URL` (through AZ a's node; every node is also
/// `VOYAGER_ALB_<AZ>_URL`), `VOYAGER_CA_CERT` and `VOYAGER_API_DOMAIN`.
pub fn env(state: &RunState) -> Vec<(String, String)> {
    let urls: Vec<(String, String)> = nodes(state)
        .filter_map(|i| Some((i.az.clone(), format!("https://{}", i.published.get(&HTTPS_PORT)?))))
        .collect();
    let Some((_, first)) = urls.first() else { return vec![] };
    let mut out = vec![("VOYAGER_API_URL".to_string(), first.clone())];
    out.extend(urls.iter().map(|(az, url)| (format!("VOYAGER_ALB_{}_URL", az.to_ascii_uppercase()), url.clone())));
    out.push(("VOYAGER_CA_CERT".into(), crate::state::ca_cert_path(&state.stack).display().to_string()));
    if let Ok(stack) = state.parsed_stack() {
        if let Some(alb) = stack.alb {
            out.push(("VOYAGER_API_DOMAIN".into(), alb.domain));
        }
    }
    out
}

/// The service's contract with the harness (see [`super::Service`]).
pub struct Alb;

#[async_trait::async_trait]
impl super::Service for Alb {
    fn specs(&self, cx: &SpecContext) -> Vec<ContainerSpec> {
        specs(cx)
    }
    fn after_vault(&self) -> bool {
        true
    }
    async fn prepare(&self, state: &mut RunState) -> Result<(), String> {
        issue_certificate(state).await
    }
    fn needs(&self) -> &'static [ServiceKind] {
        NEEDS
    }
    async fn probe(&self, cx: &super::ProbeContext<'_>, inst: &InstanceState) -> Result<(), String> {
        probe(cx.state, inst).await
    }
    async fn roles(&self, state: &RunState) -> BTreeMap<String, String> {
        target_roles(nodes(state)).await
    }
    fn env(&self, state: &RunState) -> Vec<(String, String)> {
        env(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::edge::{default_alb, RateLimit};

    fn t(name: &str, az: &str, last: u8) -> Target {
        Target { name: name.into(), az: az.into(), address: Ipv4Addr::new(10, 0, last, 80), port: 8080 }
    }

    #[test]
    fn the_config_carries_albs_timers_fail_open_and_the_waf_rule() {
        let mut alb = default_alb();
        alb.rate_limit = Some(RateLimit { requests: 100, window: Duration::from_secs(60) });
        let targets = [t("api-a", "a", 1), t("api-b", "b", 2)];
        let cfg = haproxy_config(&alb, "a", &targets);
        assert!(cfg.contains("option httpchk GET /healthz"), "{cfg}");
        assert!(cfg.contains("default-server inter 30000ms fall 2 rise 5"), "{cfg}");
        assert!(cfg.contains("timeout check 5000ms"), "{cfg}");
        // Two 5 s attempts: ALB's 10 s to connect to a target.
        assert!(cfg.contains("timeout connect 5000ms\n    timeout check 5000ms\n    retries 1\n"), "{cfg}");
        assert!(cfg.contains("timeout client 60000ms"), "ALB's idle timeout\n{cfg}");
        assert!(cfg.contains("use_backend targets if { nbsrv(targets) gt 0 }"), "{cfg}");
        assert!(cfg.contains("backend fail_open\n    balance roundrobin\n    server api-a 10.0.1.80:8080\n"), "{cfg}");
        assert!(cfg.contains("store http_req_rate(60000ms)"), "{cfg}");
        assert!(cfg.contains("deny_status 429 if { sc_http_req_rate(0) gt 100 }"), "{cfg}");
        assert!(cfg.contains("server api-b 10.0.2.80:8080 check"), "cross-zone on by default\n{cfg}");
        assert!(cfg.contains("ssl-min-ver TLSv1.2"), "{cfg}");
    }

    #[test]
    fn without_cross_zone_a_node_routes_to_its_own_az_only() {
        let mut alb = default_alb();
        alb.cross_zone = false;
        let cfg = haproxy_config(&alb, "b", &[t("api-a", "a", 1), t("api-b", "b", 2)]);
        assert!(cfg.contains("server api-b 10.0.2.80:8080 check"), "{cfg}");
        assert!(!cfg.contains("api-a"), "{cfg}");
        assert!(!haproxy_config(&default_alb(), "b", &[]).contains("stick-table"), "no WAF rule unless asked");
    }

    #[test]
    fn each_node_sits_in_its_public_subnet_with_the_certificate_and_key() {
        let v = crate::services::test_specs_without_cluster(ServiceKind::Alb, crate::images::ImageSet::Offline);
        assert_eq!(v.len(), 3, "a node per AZ");
        assert_eq!(v[1].network, "vs-voyager-b-public");
        assert_eq!(v[1].address, Ipv4Addr::new(10, 0, 102, 10));
        let cert = v[1].files.iter().find(|f| f.0 == CERT).expect("the listener's PEM");
        assert_eq!(cert.1, 0o600, "the key is the root user's only");
        assert!(v[1].files[0].2.contains("server api-c 10.0.3.80:8080 check"));
    }
}
