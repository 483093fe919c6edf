//! Route 53's part of the control plane: its health checkers and the
//! records they change.
//!
//! - The API's failover record. Its primary is the ALB as an alias with
//!   evaluate-target-health: each node counts as healthy while Route 53's
//!   health check of it passes (HTTPS `GET /healthz` every interval, an
//!   answer within 4 s, `failure_threshold` results in a row to change its
//!   state either way) and the ALB reports a healthy target behind it. The
//!   record answers the healthy nodes; with none, the secondary (a static
//!   maintenance answer).
//! - The private zone follows the run state every second: the database's
//!   writer and reader names move with a failover, as RDS's endpoints do.
//!
//! Route 53 asks from many checkers and calls an endpoint healthy when
//! more than 18% of them agree; here one checker asks, from the host (the
//! internet's side of the ALB), so the fraction is that one answer.
//! [`observe`] and [`answer`] decide; [`run`] observes and applies.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::progress::Progress;
use crate::services::{alb, route53 as r53};
use crate::state::{self, RunState};

/// What the checkers remember of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub healthy: bool,
    /// Results in a row that disagree with `healthy`.
    pub against: u32,
}

impl Default for Health {
    /// An endpoint starts healthy: the stack came up with it answering.
    fn default() -> Health {
        Health { healthy: true, against: 0 }
    }
}

/// One check's result; true when the endpoint's state changed.
pub fn observe(h: &mut Health, passed: bool, threshold: u32) -> bool {
    if passed == h.healthy {
        h.against = 0;
        return false;
    }
    h.against += 1;
    if h.against >= threshold {
        h.healthy = passed;
        h.against = 0;
        return true;
    }
    false
}

/// The failover record's answer: the healthy primaries, else the
/// secondary; and whether it is the primary answering.
pub fn answer(primaries: &[(Ipv4Addr, bool)], secondary: &[Ipv4Addr]) -> (Vec<Ipv4Addr>, bool) {
    let up: Vec<Ipv4Addr> = primaries.iter().filter(|(_, h)| *h).map(|(a, _)| *a).collect();
    if up.is_empty() {
        (secondary.to_vec(), false)
    } else {
        (up, true)
    }
}

/// Route 53's health check of one ALB node, with evaluate-target-health.
async fn check(state: &RunState, node: &crate::state::InstanceState) -> bool {
    let Some(addr) = node.published.get(&alb::HTTPS_PORT) else { return false };
    let Ok(client) = alb::client(state) else { return false };
    let url = format!("https://{addr}/healthz");
    let answered = crate::http::request_with(&client, "GET", &url, &[], "", Duration::from_secs(4))
        .await
        .is_ok_and(|r| (200..400).contains(&r.status));
    answered && alb::target_health(node).await.is_ok_and(|t| t.iter().any(|(_, h)| *h))
}

/// The public zone as the record writer changes it.
struct Public<'a> {
    api: &'a r53::Api,
    zone: &'a str,
    ttl: Duration,
    stack: &'a str,
    p: &'a Progress,
}

impl Public<'_> {
    /// Write `name`'s answer if it is not what was last written; a change
    /// after the first write is an event, `said`.
    async fn write_if_changed(
        &self,
        name: &str,
        addrs: Vec<Ipv4Addr>,
        written: &mut Option<Vec<Ipv4Addr>>,
        said: String,
    ) -> Result<(), String> {
        if written.as_ref() == Some(&addrs) {
            return Ok(());
        }
        let sets = BTreeMap::from([(name.to_string(), addrs.clone())]);
        self.api.replace(self.zone, &sets, self.ttl).await?;
        if written.is_some() {
            let _ = state::record_event(self.stack, &said);
            self.p.say(&said);
        }
        *written = Some(addrs);
        Ok(())
    }
}

/// The checkers and the record writer, until the stack is gone.
pub async fn run(stack: String, p: Progress) {
    let mut health: BTreeMap<String, Health> = BTreeMap::new();
    let mut written_api: Option<Vec<Ipv4Addr>> = None;
    let mut written_nlb: Option<Vec<Ipv4Addr>> = None;
    let mut written_private: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    let mut next_check = Instant::now();
    let mut last_error = String::new();
    // Route 53's and the ALB's settings are the stack file's: read once.
    let Ok(Some(st)) = state::load(&stack) else { return };
    let Ok(parsed) = st.parsed_stack() else { return };
    let (Some(settings), alb, nlb) = (parsed.route53, parsed.alb, parsed.nlb) else { return };
    loop {
        let st = match state::load(&stack) {
            Ok(Some(s)) => s,
            _ => return,
        };
        let Some(api) = r53::Api::of(&st) else { return };
        let mut result: Result<(), String> = Ok(());
        // The private zone, as the run state has it now.
        let want = r53::private_records(&st, &settings.private_zone);
        let mut diff: BTreeMap<String, Vec<Ipv4Addr>> = want
            .iter()
            .filter(|(k, v)| written_private.get(*k) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        diff.extend(written_private.keys().filter(|k| !want.contains_key(*k)).map(|k| (k.clone(), vec![])));
        if !diff.is_empty() {
            match api.replace(&settings.private_zone, &diff, settings.ttl).await {
                Ok(()) => {
                    for (name, addrs) in diff.iter().filter(|(n, _)| n.contains(".db.")) {
                        let text = format!("route53: {name} -> {addrs:?}");
                        if !written_private.is_empty() {
                            let _ = state::record_event(&stack, &text);
                            p.say(&text);
                        }
                    }
                    written_private = want;
                }
                Err(e) => result = Err(e),
            }
        }
        // The NLB's own name, every second: NLB's DNS failover follows its
        // targets' health, not Route 53's checkers.
        if let Some(nlb) = &nlb {
            let nodes: Vec<&crate::state::InstanceState> = crate::services::nlb::nodes(&st).collect();
            let health = futures_util::future::join_all(nodes.iter().map(|n| alb::target_health(n))).await;
            let marked: Vec<(Ipv4Addr, bool)> = nodes
                .iter()
                .zip(health)
                .map(|(n, h)| (n.address, h.is_ok_and(|t| t.iter().any(|(_, ok)| *ok))))
                .collect();
            let addrs = crate::services::nlb::dns_answer(&marked);
            if !addrs.is_empty() {
                let public = Public { api: &api, zone: &settings.public_zone, ttl: settings.ttl, stack: &stack, p: &p };
                let said = format!("route53: {} (the NLB) answers {addrs:?}", nlb.domain);
                if let Err(e) = public.write_if_changed(&nlb.domain, addrs, &mut written_nlb, said).await {
                    result = Err(e);
                }
            }
        }
        // The API's failover record, at the health checkers' interval.
        if let (Some(alb), true) = (alb.as_ref(), Instant::now() >= next_check) {
            next_check = Instant::now() + settings.health_check_interval;
            let nodes: Vec<&crate::state::InstanceState> =
                st.instances.iter().filter(|i| i.service == crate::stack::ServiceKind::Alb.as_str()).collect();
            let results = futures_util::future::join_all(nodes.iter().map(|n| check(&st, n))).await;
            let mut primaries = vec![];
            for (n, passed) in nodes.iter().zip(results) {
                let h = health.entry(n.name.clone()).or_default();
                if observe(h, passed, settings.failure_threshold) {
                    let text = format!(
                        "route53: health check of {} {}",
                        n.name,
                        if h.healthy { "healthy again" } else { "unhealthy" }
                    );
                    let _ = state::record_event(&stack, &text);
                    p.say(&text);
                }
                primaries.push((n.address, h.healthy));
            }
            let (_, secondary) = r53::failover_answers(&st);
            let (addrs, primary) = answer(&primaries, &secondary);
            let which = if primary { "primary" } else { "secondary (maintenance)" };
            let said = format!("route53: {} answers the {which}: {addrs:?}", alb.domain);
            let public = Public { api: &api, zone: &settings.public_zone, ttl: settings.ttl, stack: &stack, p: &p };
            if let Err(e) = public.write_if_changed(&alb.domain, addrs, &mut written_api, said).await {
                result = Err(e);
            }
        }
        if let Err(e) = result {
            if e != last_error {
                p.say(&format!("route53: {e}"));
                last_error = e;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_changes_state_only_after_threshold_results_in_a_row() {
        let mut h = Health::default();
        assert!(!observe(&mut h, false, 3));
        assert!(!observe(&mut h, false, 3));
        assert!(!observe(&mut h, true, 3), "a pass resets the count");
        assert!(!observe(&mut h, false, 3) && !observe(&mut h, false, 3));
        assert!(observe(&mut h, false, 3), "the third failure in a row");
        assert!(!h.healthy);
        assert!(!observe(&mut h, true, 3) && !observe(&mut h, true, 3));
        assert!(observe(&mut h, true, 3) && h.healthy, "and three passes bring it back");
    }

    #[test]
    fn the_record_answers_healthy_primaries_else_the_secondary() {
        let (a, b, m) = (Ipv4Addr::new(10, 0, 101, 10), Ipv4Addr::new(10, 0, 102, 10), Ipv4Addr::new(10, 0, 101, 60));
        assert_eq!(answer(&[(a, true), (b, false)], &[m]), (vec![a], true));
        assert_eq!(answer(&[(a, false), (b, false)], &[m]), (vec![m], false));
        assert_eq!(answer(&[], &[m]), (vec![m], false));
    }
}
