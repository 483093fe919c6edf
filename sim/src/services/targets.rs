//! The load balancers' target groups when the API runs as pods: what the
//! AWS Load Balancer Controller does for IP targets. It watches the API
//! Service's EndpointSlices and, on every ALB and NLB node, registers each
//! ready pod address through HAProxy's runtime API, and deregisters a pod
//! that is gone or no longer ready the way ELB does: the target drains
//! (no new requests, the ones in flight finish) for the deregistration
//! delay, and only then leaves the group.
//!
//! [`plan`] decides (pure, from what a node has and what the cluster says);
//! [`Controller::reconcile`] observes and acts. Bring-up runs it until the
//! first pods are registered; the stack's control plane runs it every
//! second after that, which also registers everything again on a node
//! that was restarted from its configuration (an AZ's heal).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::alb::{ADMIN_PORT, TARGETS};
use super::haproxy::{admin, server_admin_states, server_stats};
use crate::stack::{HealthCheck, ServiceKind, Stack};
use crate::state::{InstanceState, RunState};

/// The namespace the API's Deployment, Service and Secret live in.
pub const NAMESPACE: &str = "voyager";
/// The API's Deployment and Service.
pub const SERVICE: &str = "voyager-api";
/// The backend of the same targets, unchecked, a node sends to when none
/// is healthy (fail-open).
pub const FAIL_OPEN: &str = "fail_open";

/// The server name of a pod's address in a node's target group. The
/// address is the target, as for ELB's IP targets; the name carries it so
/// that a node's own list says where each target is.
pub fn server_name(address: Ipv4Addr) -> String {
    format!("pod-{}", address.to_string().replace('.', "-"))
}

/// The address a [`server_name`] stands for; `None` for a server that is
/// not a pod (a container's target, which this controller leaves alone).
pub fn address_of(server: &str) -> Option<Ipv4Addr> {
    server.strip_prefix("pod-")?.replace('-', ".").parse().ok()
}

/// The AZ of an address of the stack's VPC.
pub fn az_of(stack: &Stack, address: Ipv4Addr) -> Option<String> {
    stack.subnets().find(|(_, _, net)| net.contains(address)).map(|(az, _, _)| az.name.clone())
}

/// What a node has registered now: a pod server and whether it is draining
/// (drained, or already in maintenance on its way out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub address: Ipv4Addr,
    pub draining: bool,
}

/// One change to one node's target group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Register(Ipv4Addr),
    /// A draining target whose pod is ready again.
    Reactivate(Ipv4Addr),
    Drain(Ipv4Addr),
    /// Drained for the whole deregistration delay.
    Deregister(Ipv4Addr),
}

/// The steps that make a node's group `wanted` (the ready pods it routes
/// to): new ones registered, missing ones drained, and a drained one
/// removed once it has drained for `delay` (`drained_for` says how long
/// each has; one not in it has only begun).
pub fn plan(
    wanted: &BTreeSet<Ipv4Addr>,
    registered: &[Registered],
    drained_for: &BTreeMap<Ipv4Addr, Duration>,
    delay: Duration,
) -> Vec<Step> {
    let mut steps = vec![];
    for a in wanted {
        match registered.iter().find(|r| r.address == *a) {
            None => steps.push(Step::Register(*a)),
            Some(r) if r.draining => steps.push(Step::Reactivate(*a)),
            Some(_) => {}
        }
    }
    for r in registered.iter().filter(|r| !wanted.contains(&r.address)) {
        if !r.draining {
            steps.push(Step::Drain(r.address));
        } else if drained_for.get(&r.address).is_some_and(|d| *d >= delay) {
            steps.push(Step::Deregister(r.address));
        }
    }
    steps
}

/// The runtime API commands of a step, for both of a node's backends. A
/// dynamic server takes none of the backend's `default-server` settings,
/// so the check's timers are given in full; it starts in maintenance, as
/// a target starts in `initial`.
pub fn commands(step: &Step, port: u16, check: &HealthCheck) -> Vec<String> {
    let addr = match step {
        Step::Register(a) | Step::Reactivate(a) | Step::Drain(a) | Step::Deregister(a) => *a,
    };
    let n = server_name(addr);
    let both = |verb: &str| [TARGETS, FAIL_OPEN].map(|b| format!("{verb} {b}/{n}")).to_vec();
    match step {
        Step::Register(_) => vec![
            format!(
                "add server {TARGETS}/{n} {addr}:{port} check inter {} fall {} rise {}",
                check.interval.as_millis(),
                check.unhealthy,
                check.healthy
            ),
            format!("enable health {TARGETS}/{n}"),
            format!("enable server {TARGETS}/{n}"),
            format!("add server {FAIL_OPEN}/{n} {addr}:{port}"),
            format!("enable server {FAIL_OPEN}/{n}"),
        ],
        Step::Reactivate(_) => both("set server").into_iter().map(|c| c + " state ready").collect(),
        Step::Drain(_) => both("set server").into_iter().map(|c| c + " state drain").collect(),
        Step::Deregister(_) => {
            let mut c: Vec<String> = both("set server").into_iter().map(|c| c + " state maint").collect();
            c.extend(both("del server"));
            c
        }
    }
}

/// A ready endpoint of the API's Service, as an EndpointSlice lists it.
pub async fn ready_endpoints(client: &kube::Client) -> Result<BTreeSet<Ipv4Addr>, String> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let slices: kube::Api<EndpointSlice> = kube::Api::namespaced(client.clone(), NAMESPACE);
    let lp = kube::api::ListParams::default().labels(&format!("kubernetes.io/service-name={SERVICE}"));
    let list = slices.list(&lp).await.map_err(|e| format!("listing the API's EndpointSlices: {e}"))?;
    Ok(list
        .items
        .iter()
        .flat_map(|s| &s.endpoints)
        // Absent means ready, as the API says.
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| &e.addresses)
        .filter_map(|a| a.parse().ok())
        .collect())
}

/// A load balancer node this controller keeps: its admin address and what
/// it routes to.
struct Node<'a> {
    inst: &'a InstanceState,
    admin: SocketAddr,
    cross_zone: bool,
    port: u16,
    check: HealthCheck,
    delay: Duration,
}

fn lb_nodes<'a>(state: &'a RunState, stack: &Stack) -> Vec<Node<'a>> {
    state
        .instances
        .iter()
        .filter_map(|inst| {
            let admin = *inst.published.get(&ADMIN_PORT)?;
            let (cross_zone, check, delay) = if inst.service == ServiceKind::Alb.as_str() {
                let a = stack.alb.as_ref()?;
                (a.cross_zone, a.health_check.clone(), a.deregistration_delay)
            } else if inst.service == ServiceKind::Nlb.as_str() {
                let n = stack.nlb.as_ref()?;
                (n.cross_zone, n.health_check.clone(), n.deregistration_delay)
            } else {
                return None;
            };
            Some(Node { inst, admin, cross_zone, port: super::api::PORT, check, delay })
        })
        .collect()
}

/// The controller's memory between reconciliations: since when each
/// target has drained, per node. (A controller started afresh finds a
/// draining target and drains it a whole delay more, erring long.)
#[derive(Default)]
pub struct Controller {
    draining: BTreeMap<(String, Ipv4Addr), Instant>,
}

impl Controller {
    /// One pass over every node; returns a line per change made. A node
    /// that does not answer (its AZ is down) is skipped: it is registered
    /// again when it is back.
    pub async fn reconcile(
        &mut self,
        client: &kube::Client,
        state: &RunState,
        stack: &Stack,
    ) -> Result<Vec<String>, String> {
        let ready = ready_endpoints(client).await?;
        // One line per change, naming every node it was made on.
        let mut done: BTreeMap<(u8, Ipv4Addr, String), Vec<String>> = BTreeMap::new();
        let mut lines = vec![];
        for node in lb_nodes(state, stack) {
            let Ok(states) = server_admin_states(node.admin, TARGETS).await else { continue };
            let registered: Vec<Registered> = states
                .iter()
                .filter_map(|s| Some(Registered { address: address_of(&s.server)?, draining: s.drain || s.maint }))
                .collect();
            let az = &node.inst.az;
            let wanted: BTreeSet<Ipv4Addr> = ready
                .iter()
                .filter(|a| node.cross_zone || az_of(stack, **a).as_deref() == Some(az.as_str()))
                .copied()
                .collect();
            let now = Instant::now();
            let name = node.inst.name.clone();
            for r in registered.iter().filter(|r| r.draining) {
                self.draining.entry((name.clone(), r.address)).or_insert(now);
            }
            let drained_for: BTreeMap<Ipv4Addr, Duration> = registered
                .iter()
                .filter_map(|r| Some((r.address, now - *self.draining.get(&(name.clone(), r.address))?)))
                .collect();
            for step in plan(&wanted, &registered, &drained_for, node.delay) {
                let mut failed = None;
                for c in commands(&step, node.port, &node.check) {
                    if let Err(e) = admin(node.admin, &c).await {
                        failed = Some(e);
                        break;
                    }
                }
                let (order, a, what) = match step {
                    Step::Register(a) => (0, a, "registered".to_string()),
                    Step::Reactivate(a) => (1, a, "ready again".to_string()),
                    Step::Drain(a) => (2, a, format!("draining (deregistration delay {}s)", node.delay.as_secs())),
                    Step::Deregister(a) => (3, a, "deregistered".to_string()),
                };
                if let Some(e) = failed {
                    lines.push(format!("targets: {name}: {what} {a} failed: {e}"));
                    continue;
                }
                match step {
                    Step::Drain(_) => {
                        self.draining.insert((name.clone(), a), now);
                    }
                    Step::Reactivate(_) | Step::Deregister(_) => {
                        self.draining.remove(&(name.clone(), a));
                    }
                    Step::Register(_) => {}
                }
                done.entry((order, a, what)).or_default().push(name.clone());
            }
        }
        for ((_, a, what), nodes) in done {
            let zone = az_of(stack, a).map(|z| format!(" (AZ {z})")).unwrap_or_default();
            lines.insert(0, format!("targets: pod {a}{zone} {what} on {}", nodes.join(", ")));
        }
        Ok(lines)
    }
}

/// Register the ready pods on every node until each node routes to at
/// least one of its own (bring-up: the control plane takes over after).
pub async fn register_until_routed(
    client: &kube::Client,
    state: &RunState,
    stack: &Stack,
    timeout: Duration,
    p: &crate::progress::Progress,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut c = Controller::default();
    loop {
        let lines = c.reconcile(client, state, stack).await?;
        lines.iter().for_each(|l| p.say(l));
        let mut missing = vec![];
        for node in lb_nodes(state, stack) {
            let has = server_stats(node.admin)
                .await
                .map(|s| s.iter().any(|s| s.backend == TARGETS && address_of(&s.server).is_some()))
                .unwrap_or(false);
            if !has {
                missing.push(node.inst.name.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no ready pod of the API was registered on {} within {}s",
                missing.join(", "),
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn a_server_name_carries_its_address_and_its_az() {
        let a = ip("10.0.2.231");
        assert_eq!(server_name(a), "pod-10-0-2-231");
        assert_eq!(address_of(&server_name(a)), Some(a));
        assert_eq!(address_of("api-b"), None, "a container's target is not a pod");
        assert_eq!(az_of(&crate::harness::builtin_stack(), a).as_deref(), Some("b"));
    }

    #[test]
    fn new_pods_register_gone_ones_drain_then_leave_after_the_delay() {
        let (a, b, c) = (ip("10.0.1.230"), ip("10.0.2.230"), ip("10.0.3.230"));
        let delay = Duration::from_secs(300);
        let reg = |address, draining| Registered { address, draining };
        let wanted = BTreeSet::from([a, c]);
        let has = [reg(a, false), reg(b, false)];
        assert_eq!(plan(&wanted, &has, &BTreeMap::new(), delay), [Step::Register(c), Step::Drain(b)]);
        // Draining: nothing until the delay has passed, then it leaves.
        let has = [reg(a, false), reg(b, true), reg(c, false)];
        let early = BTreeMap::from([(b, Duration::from_secs(299))]);
        assert!(plan(&wanted, &has, &early, delay).is_empty());
        let late = BTreeMap::from([(b, delay)]);
        assert_eq!(plan(&wanted, &has, &late, delay), [Step::Deregister(b)]);
        // A draining target whose pod is ready again comes back at once.
        let wanted = BTreeSet::from([a, b, c]);
        assert_eq!(plan(&wanted, &has, &late, delay), [Step::Reactivate(b)]);
        // A draining one nobody timed (a controller started afresh) waits.
        assert!(plan(&BTreeSet::from([a, c]), &has, &BTreeMap::new(), delay).is_empty());
    }

    #[test]
    fn a_registration_gives_the_check_in_full_and_touches_both_backends() {
        let check = crate::harness::builtin_stack().alb.unwrap().health_check;
        let c = commands(&Step::Register(ip("10.0.2.230")), 8080, &check);
        assert_eq!(c[0], "add server targets/pod-10-0-2-230 10.0.2.230:8080 check inter 30000 fall 2 rise 5");
        assert_eq!(c[1..3], ["enable health targets/pod-10-0-2-230", "enable server targets/pod-10-0-2-230"]);
        assert_eq!(c[3], "add server fail_open/pod-10-0-2-230 10.0.2.230:8080", "fail-open is unchecked");
        let d = commands(&Step::Deregister(ip("10.0.2.230")), 8080, &check);
        assert_eq!(
            d,
            [
                "set server targets/pod-10-0-2-230 state maint",
                "set server fail_open/pod-10-0-2-230 state maint",
                "del server targets/pod-10-0-2-230",
                "del server fail_open/pod-10-0-2-230"
            ]
        );
        assert!(commands(&Step::Drain(ip("10.0.2.230")), 8080, &check).iter().all(|c| c.ends_with("state drain")));
    }
}
