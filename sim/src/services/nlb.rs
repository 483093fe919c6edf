//! The Network Load Balancer: one HAProxy node per AZ in that AZ's public
//! subnet, forwarding TCP (nothing terminated, nothing read) to the API's
//! targets.
//!
//! HAProxy again, in `mode tcp`: the same program as the ALB's and the
//! database's endpoints, with TCP connect health checks and rise/fall
//! counts built in. What each part means in NLB's terms:
//! - the listener forwards each connection to a target's own port;
//! - health checks are TCP connections, every interval, `unhealthy`
//!   failures in a row take a target out and `healthy` successes bring it
//!   back; the connect timeout is the check's timeout;
//! - cross-zone is off by default: a node forwards only to its own AZ's
//!   targets, so an AZ whose targets all fail leaves its node with nothing
//!   healthy. NLB then takes that node's address out of its DNS name (the
//!   control plane's Route 53 task does here, [`dns_answer`]); a client
//!   that still reaches the node is sent to its AZ's targets anyway, as
//!   NLB fails open within a zone;
//! - when no target in any AZ is healthy, the name answers every node
//!   (NLB fails open).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::alb::{Target, TARGETS};
use super::SpecContext;
use crate::http::{request_with, HttpClient};
use crate::images::haproxy_image;
use crate::runtime::network::network_name;
use crate::spec::{ContainerSpec, Publish};
use crate::stack::{Nlb as Settings, ServiceKind, Tier};
use crate::state::{InstanceState, RunState};

pub use super::alb::{ADMIN_PORT, METRICS_PORT};

const CFG: &str = "/usr/local/etc/haproxy/haproxy.cfg";

const NEEDS: &[ServiceKind] = &[ServiceKind::Api];

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// One node's HAProxy configuration: TCP from `nlb.port` to the targets of
/// its own AZ (every AZ's with cross-zone on).
pub fn haproxy_config(nlb: &Settings, az: &str, targets: &[Target]) -> String {
    let h = &nlb.health_check;
    let mine: Vec<&Target> = targets.iter().filter(|t| nlb.cross_zone || t.az == az).collect();
    let servers = |checked: bool| super::alb::server_lines(&mine, checked);
    format!(
        "global\n    user haproxy\n    group haproxy\n    stats socket ipv4@0.0.0.0:{ADMIN_PORT} level admin\n\n\
         defaults\n    mode tcp\n    timeout connect 10s\n    \
         # NLB keeps an idle TCP flow 350 s.\n    timeout client 350s\n    timeout server 350s\n\n\
         frontend metrics\n    mode http\n    bind :{METRICS_PORT}\n    \
         http-request use-service prometheus-exporter if {{ path /metrics }}\n\n\
         frontend tcp\n    bind :{port}\n    \
         use_backend {TARGETS} if {{ nbsrv({TARGETS}) gt 0 }}\n    \
         # Nothing healthy here: the node still forwards, to all of them.\n    \
         default_backend fail_open\n\n\
         backend {TARGETS}\n    balance roundrobin\n    timeout connect {timeout}\n    \
         default-server inter {interval} fall {fall} rise {rise}\n{checked}\n\
         backend fail_open\n    balance roundrobin\n{unchecked}",
        port = nlb.port,
        timeout = ms(h.timeout),
        interval = ms(h.interval),
        fall = h.unhealthy,
        rise = h.healthy,
        checked = servers(true),
        unchecked = servers(false),
    )
}

pub fn specs(cx: &SpecContext) -> Vec<ContainerSpec> {
    let (Some(svc), Some(nlb)) = (cx.stack.service(ServiceKind::Nlb), cx.stack.nlb.as_ref()) else { return vec![] };
    let targets = super::alb::targets(cx.stack);
    svc.instances
        .iter()
        .map(|inst| ContainerSpec {
            instance: inst.name.clone(),
            image: haproxy_image(cx.images),
            cmd: ["-W", "-db", "-f", CFG].map(String::from).to_vec(),
            network: network_name(cx.stack_name, &inst.az, Tier::Public),
            address: inst.address,
            published: [nlb.port, ADMIN_PORT, METRICS_PORT].map(Publish::any).to_vec(),
            files: vec![(CFG.into(), 0o644, haproxy_config(nlb, &inst.az, &targets))],
            entrypoint: Some(vec!["haproxy".into()]),
            user: Some("root".into()),
            ..Default::default()
        })
        .collect()
}

fn settings(state: &RunState) -> Result<Settings, String> {
    state.parsed_stack()?.nlb.ok_or_else(|| "the stack has no [service.nlb]".to_string())
}

/// The host's address of a node's listener.
pub fn listener(state: &RunState, inst: &InstanceState) -> Option<std::net::SocketAddr> {
    inst.published.get(&settings(state).ok()?.port).copied()
}

/// Ready when a request through the node's listener reaches a target's
/// shallow health check. With the API on the cluster, an NLB node whose
/// AZ has no ready pod (its pods evicted while the AZ was gone) has
/// nothing to reach, which is NLB's business to answer with DNS, not the
/// node's: it is ready once its runtime API answers and its listener
/// takes connections.
pub async fn probe(state: &RunState, inst: &InstanceState) -> Result<(), String> {
    let addr = listener(state, inst).ok_or("no published listener port")?;
    if state.parsed_stack()?.api_on_kubernetes() {
        let admin = *inst.published.get(&ADMIN_PORT).ok_or("no published admin port")?;
        super::haproxy::server_stats(admin).await?;
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| format!("the listener at {addr} took no connection within 5s"))?
            .map_err(|e| format!("the listener at {addr}: {e}"))?;
        return Ok(());
    }
    let r =
        request_with(&HttpClient::new(), "GET", &format!("http://{addr}/healthz"), &[], "", Duration::from_secs(10))
            .await?;
    match r.status {
        200 => Ok(()),
        s => Err(format!("GET /healthz through the listener answered {s}")),
    }
}

pub fn nodes(state: &RunState) -> impl Iterator<Item = &InstanceState> {
    state.instances.iter().filter(|i| i.service == ServiceKind::Nlb.as_str())
}

/// The NLB's DNS name's addresses: each node with a healthy target behind
/// it, or every node when none has one (NLB fails open).
pub fn dns_answer(nodes: &[(Ipv4Addr, bool)]) -> Vec<Ipv4Addr> {
    let up: Vec<Ipv4Addr> = nodes.iter().filter(|(_, h)| *h).map(|(a, _)| *a).collect();
    if up.is_empty() {
        nodes.iter().map(|(a, _)| *a).collect()
    } else {
        up
    }
}

/// `VOYAGER_NLB_URL` (plain HTTP through AZ a's node; every node is also
/// `VOYAGER_NLB_<AZ>_URL`) and `VOYAGER_NLB_DOMAIN`.
pub fn env(state: &RunState) -> Vec<(String, String)> {
    let Ok(nlb) = settings(state) else { return vec![] };
    let urls: Vec<(String, String)> =
        nodes(state).filter_map(|i| Some((i.az.clone(), format!("http://{}", i.published.get(&nlb.port)?)))).collect();
    let Some((_, first)) = urls.first() else { return vec![] };
    let mut out = vec![("VOYAGER_NLB_URL".to_string(), first.clone())];
    out.extend(urls.iter().map(|(az, url)| (format!("VOYAGER_NLB_{}_URL", az.to_ascii_uppercase()), url.clone())));
    out.push(("VOYAGER_NLB_DOMAIN".into(), nlb.domain));
    out
}

/// The service's contract with the harness (see [`super::Service`]).
pub struct Nlb;

#[async_trait::async_trait]
impl super::Service for Nlb {
    fn specs(&self, cx: &SpecContext) -> Vec<ContainerSpec> {
        specs(cx)
    }
    /// Its targets are the API's replicas, which start in the second pass.
    fn after_vault(&self) -> bool {
        true
    }
    fn needs(&self) -> &'static [ServiceKind] {
        NEEDS
    }
    async fn probe(&self, cx: &super::ProbeContext<'_>, inst: &InstanceState) -> Result<(), String> {
        probe(cx.state, inst).await
    }
    async fn roles(&self, state: &RunState) -> BTreeMap<String, String> {
        super::alb::target_roles(nodes(state)).await
    }
    fn env(&self, state: &RunState) -> Vec<(String, String)> {
        env(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::nlb::default_nlb;

    fn t(name: &str, az: &str, last: u8) -> Target {
        Target { name: name.into(), az: az.into(), address: Ipv4Addr::new(10, 0, last, 80), port: 8080 }
    }

    #[test]
    fn a_node_forwards_tcp_to_its_own_azs_targets_with_nlbs_checks() {
        let targets = [t("api-a", "a", 1), t("api-b", "b", 2)];
        let cfg = haproxy_config(&default_nlb(), "b", &targets);
        assert!(cfg.contains("mode tcp") && cfg.contains("bind :80\n"), "{cfg}");
        assert!(cfg.contains("default-server inter 30000ms fall 2 rise 5"), "{cfg}");
        assert!(cfg.contains("timeout connect 10000ms"), "NLB's 10 s TCP check timeout\n{cfg}");
        assert!(cfg.contains("server api-b 10.0.2.80:8080 check"), "{cfg}");
        assert!(!cfg.contains("api-a"), "cross-zone is off by default\n{cfg}");
        assert!(!cfg.contains("httpchk"), "a TCP check asks nothing\n{cfg}");
        let mut on = default_nlb();
        on.cross_zone = true;
        assert!(haproxy_config(&on, "b", &targets).contains("server api-a 10.0.1.80:8080 check"));
    }

    #[test]
    fn the_name_answers_nodes_with_a_healthy_target_else_all_of_them() {
        let (a, b) = (Ipv4Addr::new(10, 0, 101, 20), Ipv4Addr::new(10, 0, 102, 20));
        assert_eq!(dns_answer(&[(a, true), (b, false)]), vec![a]);
        assert_eq!(dns_answer(&[(a, false), (b, false)]), vec![a, b], "fail open");
    }

    #[test]
    fn each_node_sits_in_its_public_subnet() {
        let v = crate::services::test_specs_without_cluster(ServiceKind::Nlb, crate::images::ImageSet::Offline);
        assert_eq!(v.len(), 3, "a node per AZ");
        assert_eq!(v[2].network, "vs-voyager-c-public");
        assert_eq!(v[2].address, Ipv4Addr::new(10, 0, 103, 20));
        assert!(v[2].files[0].2.contains("server api-c 10.0.3.80:8080 check"));
        assert!(!v[2].files[0].2.contains("api-a"));
    }
}
