//! The edge during a run, seen each second from outside: how many of each
//! AZ's targets the ALB counts healthy, and what Route 53 answers for the
//! API's name. [`analyse`] (pure) turns the snapshots into the report's
//! lanes and, for each AZ a fault takes out, the time from the fault to
//! the ALB taking that AZ's targets out and to DNS dropping its node.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::fault::Fault;
use crate::report::{EdgeOutage, EdgeReport, EdgeZone, FaultMark};
use crate::scenario::{Action, Scenario};
use crate::services::alb;
use crate::stack::ServiceKind;
use crate::state::{InstanceState, RunState};

/// One second's look.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub at_s: f64,
    /// Healthy targets by their AZ, from the first ALB node that answers.
    pub healthy: BTreeMap<String, u32>,
    /// Registered targets by their AZ (pods come and go), from that node.
    pub registered: BTreeMap<String, u32>,
    /// Route 53's answer for the API's name, if it answered.
    pub dns: Option<Vec<Ipv4Addr>>,
    /// Its answer for the NLB's name, when the stack has one.
    pub nlb_dns: Option<Vec<Ipv4Addr>>,
}

/// What the observer needs of the stack, copied out of the run state.
pub struct Edge {
    nodes: Vec<InstanceState>,
    /// The targets a node starts with (the API's containers), by AZ.
    target_az: BTreeMap<String, String>,
    /// Every AZ with an ALB node or a target: the report's zones.
    zones: Vec<String>,
    /// The VPC's subnets by AZ, where a pod target's address says its AZ.
    subnets: Vec<(String, crate::stack::Cidr)>,
    dns: Option<std::net::SocketAddr>,
    domain: String,
    /// The NLB's name and its nodes' addresses by AZ.
    nlb: Option<(String, Vec<(String, Ipv4Addr)>)>,
}

impl Edge {
    pub fn of(state: &RunState) -> Option<Edge> {
        let nodes: Vec<InstanceState> =
            state.instances.iter().filter(|i| i.service == ServiceKind::Alb.as_str()).cloned().collect();
        if nodes.is_empty() {
            return None;
        }
        let stack = state.parsed_stack().ok()?;
        let target_az: BTreeMap<String, String> = alb::targets(&stack).into_iter().map(|t| (t.name, t.az)).collect();
        let mut zones: Vec<String> = nodes.iter().map(|n| n.az.clone()).chain(target_az.values().cloned()).collect();
        zones.sort();
        zones.dedup();
        let subnets = stack.subnets().map(|(az, _, net)| (az.name.clone(), net)).collect();
        let nlb = stack.nlb.as_ref().map(|n| {
            let nodes = crate::services::nlb::nodes(state).map(|i| (i.az.clone(), i.address)).collect();
            (n.domain.clone(), nodes)
        });
        Some(Edge {
            nodes,
            target_az,
            zones,
            subnets,
            dns: crate::services::route53::dns_addr(state),
            domain: stack.alb?.domain,
            nlb,
        })
    }

    /// A target's AZ: a container's by the stack, a pod's by its address.
    fn az_of(&self, target: &str) -> Option<String> {
        self.target_az.get(target).cloned().or_else(|| {
            let a = crate::services::targets::address_of(target)?;
            self.subnets.iter().find(|(_, net)| net.contains(a)).map(|(az, _)| az.clone())
        })
    }
}

async fn look(e: &Edge, at_s: f64) -> Snapshot {
    let mut s = Snapshot { at_s, ..Default::default() };
    for n in &e.nodes {
        if let Ok(Ok(t)) = tokio::time::timeout(Duration::from_millis(800), alb::target_health(n)).await {
            for az in &e.zones {
                s.healthy.entry(az.clone()).or_insert(0);
            }
            for (name, healthy) in t {
                if let Some(az) = e.az_of(&name) {
                    *s.registered.entry(az.clone()).or_insert(0) += 1;
                    if healthy {
                        *s.healthy.entry(az).or_insert(0) += 1;
                    }
                }
            }
            break;
        }
    }
    if let Some(dns) = e.dns {
        let ask = |name: String| async move {
            let a = crate::dns::query_a(dns, &name, Duration::from_millis(800)).await.ok()?;
            let mut addrs: Vec<Ipv4Addr> = a.a.into_iter().map(|(ip, _)| ip).collect();
            addrs.sort();
            Some(addrs)
        };
        s.dns = ask(e.domain.clone()).await;
        if let Some((name, _)) = &e.nlb {
            s.nlb_dns = ask(name.clone()).await;
        }
    }
    s
}

pub fn spawn_observer(e: Edge, start: Instant, until: Instant) -> tokio::task::JoinHandle<(Edge, Vec<Snapshot>)> {
    tokio::spawn(async move {
        let mut out = vec![];
        let mut next = start;
        while Instant::now() < until {
            out.push(look(&e, start.elapsed().as_secs_f64()).await);
            next += Duration::from_secs(1);
            tokio::time::sleep_until(next.max(Instant::now()).into()).await;
        }
        (e, out)
    })
}

/// The AZs a fault takes the edge out of: an AZ outage, or a kill or
/// pause of an ALB node or an API replica.
fn lost_azs(fault: &Fault, e: &Edge) -> Vec<String> {
    match fault {
        Fault::AzOutage { az, .. } => vec![az.clone()],
        Fault::Kill { instance } | Fault::Pause { instance } => e
            .nodes
            .iter()
            .filter(|n| &n.name == instance)
            .map(|n| n.az.clone())
            .chain(e.target_az.get(instance).cloned())
            .collect(),
        _ => vec![],
    }
}

fn nlb_nodes_in(e: &Edge, az: &str) -> Vec<Ipv4Addr> {
    e.nlb.as_ref().map(|(_, n)| n.iter().filter(|(z, _)| z == az).map(|(_, a)| *a).collect()).unwrap_or_default()
}

/// Lanes per AZ and, per lost AZ, when the ALB and DNS acted.
pub fn analyse(e: &Edge, snaps: &[Snapshot], marks: &[FaultMark], sc: &Scenario, duration_s: f64) -> EdgeReport {
    let seconds = duration_s.ceil().max(1.0) as usize;
    let slot = |t: f64| (t.max(0.0) as usize).min(seconds - 1);
    let mut zones: Vec<EdgeZone> = vec![];
    for az in &e.zones {
        let mut healthy = vec![0u32; seconds];
        let mut in_dns = vec![0u32; seconds];
        let mut in_nlb_dns = if e.nlb.is_some() { vec![0u32; seconds] } else { vec![] };
        let node: Vec<Ipv4Addr> = e.nodes.iter().filter(|n| &n.az == az).map(|n| n.address).collect();
        let nlb_node = nlb_nodes_in(e, az);
        let count = |d: &Option<Vec<Ipv4Addr>>, of: &[Ipv4Addr]| {
            d.as_ref().map_or(0, |d| d.iter().filter(|a| of.contains(a)).count() as u32)
        };
        for s in snaps {
            healthy[slot(s.at_s)] = s.healthy.get(az).copied().unwrap_or(0);
            in_dns[slot(s.at_s)] = count(&s.dns, &node);
            if let Some(v) = in_nlb_dns.get_mut(slot(s.at_s)) {
                *v = count(&s.nlb_dns, &nlb_node);
            }
        }
        let declared = e.target_az.values().filter(|z| *z == az).count() as u32;
        let seen = snaps.iter().filter_map(|s| s.registered.get(az)).max().copied().unwrap_or(0);
        let targets = declared.max(seen);
        zones.push(EdgeZone { zone: az.clone(), targets, healthy_targets: healthy, in_dns, in_nlb_dns });
    }
    let all_nodes: Vec<Ipv4Addr> = e.nodes.iter().map(|n| n.address).collect();
    let mut maintenance = vec![false; seconds];
    for s in snaps {
        maintenance[slot(s.at_s)] =
            s.dns.as_ref().is_some_and(|d| !d.is_empty() && d.iter().all(|a| !all_nodes.contains(a)));
    }
    let mut outages = vec![];
    let acts = sc.faults.iter().zip(marks);
    for (f, m) in acts {
        let Action::Inject(fs) = &f.action else { continue };
        for az in fs.iter().flat_map(|x| lost_azs(x, e)) {
            let node: Vec<Ipv4Addr> = e.nodes.iter().filter(|n| n.az == az).map(|n| n.address).collect();
            let after = |t: f64| t >= m.at_s;
            let alb_out = snaps.iter().find(|s| after(s.at_s) && s.healthy.get(&az).copied().unwrap_or(0) == 0);
            let dns_out = snaps
                .iter()
                .find(|s| after(s.at_s) && s.dns.as_ref().is_some_and(|d| !d.iter().any(|a| node.contains(a))));
            let healed = m.heal_at_s.unwrap_or(duration_s);
            let back = |pred: &dyn Fn(&Snapshot) -> bool| snaps.iter().find(|s| s.at_s >= healed && pred(s));
            // Back only from what was out: a node DNS never dropped did not return.
            let alb_back = alb_out.and(back(&|s| s.healthy.get(&az).copied().unwrap_or(0) > 0));
            let dns_back = dns_out.and(back(&|s| s.dns.as_ref().is_some_and(|d| d.iter().any(|a| node.contains(a)))));
            let nlb_node = nlb_nodes_in(e, &az);
            let holds = |s: &Snapshot| s.nlb_dns.as_ref().map(|d| d.iter().any(|a| nlb_node.contains(a)));
            let nlb_out = snaps.iter().find(|s| after(s.at_s) && holds(s) == Some(false));
            let nlb_back = nlb_out.and(back(&|s| holds(s) == Some(true)));
            outages.push(EdgeOutage {
                fault: m.label.clone(),
                zone: az.clone(),
                at_s: m.at_s,
                alb_out_s: alb_out.map(|s| s.at_s - m.at_s),
                dns_out_s: dns_out.map(|s| s.at_s - m.at_s),
                alb_back_s: alb_back.map(|s| s.at_s - healed),
                dns_back_s: dns_back.map(|s| s.at_s - healed),
                nlb_dns_out_s: nlb_out.map(|s| s.at_s - m.at_s),
                nlb_dns_back_s: nlb_back.map(|s| s.at_s - healed),
            });
        }
    }
    EdgeReport { zones, maintenance, outages }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, az: &str, last: u8) -> InstanceState {
        InstanceState {
            name: name.into(),
            service: "alb".into(),
            az: az.into(),
            subnet: "public".into(),
            address: Ipv4Addr::new(10, 0, 100 + last, 10),
            container: String::new(),
            role: "node".into(),
            published: Default::default(),
        }
    }

    #[test]
    fn the_alb_and_dns_times_count_from_the_fault_and_back_from_the_heal() {
        let (n_a, n_b) = (Ipv4Addr::new(10, 0, 101, 20), Ipv4Addr::new(10, 0, 102, 20));
        let e = Edge {
            nodes: vec![node("alb-a", "a", 1), node("alb-b", "b", 2)],
            target_az: [("api-a", "a"), ("api-b", "b")].map(|(t, z)| (t.to_string(), z.to_string())).into(),
            zones: vec!["a".into(), "b".into()],
            subnets: vec![],
            dns: None,
            domain: "api.voyager.example".into(),
            nlb: Some(("nlb.voyager.example".into(), vec![("a".into(), n_a), ("b".into(), n_b)])),
        };
        let (a, b) = (e.nodes[0].address, e.nodes[1].address);
        // b's target is out from t=14, its node from DNS from t=20; both
        // return after the heal at 30: the target at 36, the node at 40.
        let snaps: Vec<Snapshot> = (0..50)
            .map(|t| {
                let target_b = u32::from(!(14..36).contains(&t));
                let dns = if (20..40).contains(&t) { vec![a] } else { vec![a, b] };
                Snapshot {
                    at_s: t as f64,
                    healthy: [("a".to_string(), 1), ("b".to_string(), target_b)].into(),
                    registered: [("a".to_string(), 1), ("b".to_string(), 1)].into(),
                    dns: Some(dns),
                    // The NLB's name drops b's node from t=16 to 33.
                    nlb_dns: Some(if (16..33).contains(&t) { vec![n_a] } else { vec![n_a, n_b] }),
                }
            })
            .collect();
        let text = "name = \"x\"\nseed = 1\nduration = \"50s\"\n[load]\nrate = { api_request = 1 }\n\
                    [[fault]]\nat = \"10s\"\nheal_at = \"30s\"\nkind = \"az-outage\"\ntarget = \"b\"\nmode = \"kill\"\n";
        let sc = crate::scenario::parse_scenario(std::path::Path::new("x.toml"), text).unwrap();
        let marks = [FaultMark { label: "az-outage b".into(), at_s: 10.0, heal_at_s: Some(30.0) }];
        let r = analyse(&e, &snaps, &marks, &sc, 50.0);
        let o = &r.outages[0];
        assert_eq!((o.zone.as_str(), o.alb_out_s, o.dns_out_s), ("b", Some(4.0), Some(10.0)));
        assert_eq!((o.alb_back_s, o.dns_back_s), (Some(6.0), Some(10.0)));
        assert_eq!((o.nlb_dns_out_s, o.nlb_dns_back_s), (Some(6.0), Some(3.0)));
        let zb = r.zones.iter().find(|z| z.zone == "b").unwrap();
        assert_eq!((zb.healthy_targets[13], zb.healthy_targets[14], zb.in_dns[19], zb.in_dns[20]), (1, 0, 1, 0));
        assert_eq!((zb.in_nlb_dns[15], zb.in_nlb_dns[16]), (1, 0));
        assert!(r.maintenance.iter().all(|m| !m), "the primary answered throughout");
        // A node DNS never dropped (Route 53 slower than the outage) is not
        // said to come back.
        let steady: Vec<Snapshot> = snaps.iter().map(|s| Snapshot { dns: Some(vec![a, b]), ..s.clone() }).collect();
        let o = &analyse(&e, &steady, &marks, &sc, 50.0).outages[0];
        assert_eq!((o.dns_out_s, o.dns_back_s, o.alb_back_s), (None, None, Some(6.0)));
    }
}
