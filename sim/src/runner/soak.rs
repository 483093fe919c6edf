//! The seeded chaos soak (Jepsen's nemesis, with our faults): cycle after
//! cycle, a fault, a target and a duration drawn from the seed, put on the
//! stack under load by [`super::run`], healed, every write read back; then
//! the stack must settle (every instance healthy, PostgreSQL replicating as
//! its roles say, every Kafka partition with its full ISR) before the next
//! cycle starts, so one cycle's damage is never blamed on the next.
//!
//! [`plan`] is pure: a cycle is a function of the stack, the seed and the
//! cycle number, so `--seed N --cycle I` replays one cycle alone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::Result;
use crate::fault::{Fault, OutageMode, Side};
use crate::harness::RunningStack;
use crate::ledger::Op;
use crate::progress::Progress;
use crate::report::Report;
use crate::scenario::{Action, Expect, Limit, Scenario, TimedFault};
use crate::stack::{ServiceKind, Stack};

use super::RunOptions;

pub const SCHEMA: &str = "voyager-sim/soak/1";

/// Time to a healthy stack after a cycle's heal, at most. RDS rebuilds a
/// failed-away primary as the new standby in this time; Kafka's brokers
/// catch up on a minute's log far faster.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(300);

/// What a soak reports: each cycle, and whether all passed.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub schema: &'static str,
    pub seed: u64,
    pub cycles: Vec<CycleReport>,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    pub cycle: u32,
    /// The fault as `voyager-sim fault` would print it, and for how long.
    pub fault: String,
    pub fault_s: f64,
    pub acknowledged: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub ambiguous: usize,
    /// Sustained recovery per tier after the fault, seconds (`None`: not
    /// within the run).
    pub recovery_s: BTreeMap<String, Option<f64>>,
    /// From the end of the run (everything healed) to a settled stack.
    pub settled_s: Option<f64>,
    /// Every failed assertion, and a stack that did not settle.
    pub problems: Vec<String>,
    pub passed: bool,
    /// The command that runs this cycle alone.
    pub replay: String,
}

/// The soak's random source: SplitMix64, written out so a seed picks the
/// same cycles whatever version of a random crate the build resolves (the
/// crash bench draws its kill points from it for the same reason).
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    fn for_cycle(seed: u64, cycle: u32) -> SplitMix64 {
        SplitMix64(seed ^ (u64::from(cycle) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, d)`, to the millisecond.
    pub fn within(&mut self, d: Duration) -> Duration {
        Duration::from_millis(self.next_u64() % (d.as_millis() as u64).max(1))
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    fn secs(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_secs(lo + self.next_u64() % (hi - lo + 1))
    }
}

/// Load before the fault, so the report has a baseline, and after the
/// heal, so recovery is seen sustained.
const BEFORE: Duration = Duration::from_secs(10);
const AFTER: Duration = Duration::from_secs(40);

/// The faults a cycle can draw, as far as the stack has their targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Nemesis {
    AzKill,
    AzPause,
    BrokerKill,
    BrokerPause,
    DatabaseKill,
    Partition,
    Latency,
    Loss,
    Failover,
}

fn menu(stack: &Stack) -> Vec<Nemesis> {
    let kafka = !stack.with_role(ServiceKind::Kafka, "broker").is_empty();
    let postgres = stack.service(ServiceKind::Postgres).is_some();
    let mut m = vec![Nemesis::AzKill, Nemesis::AzPause];
    if kafka {
        m.extend([Nemesis::BrokerKill, Nemesis::BrokerPause]);
    }
    if postgres {
        m.push(Nemesis::DatabaseKill);
    }
    if stack.azs.len() > 1 {
        m.extend([Nemesis::Partition, Nemesis::Latency, Nemesis::Loss]);
    }
    if postgres {
        m.push(Nemesis::Failover);
    }
    m
}

/// The scenario of one cycle: a function of the stack, the seed and the
/// cycle only.
pub fn plan(stack: &Stack, seed: u64, cycle: u32) -> Scenario {
    let mut d = SplitMix64::for_cycle(seed, cycle);
    let azs: Vec<String> = stack.azs.iter().map(|a| a.name.clone()).collect();
    let brokers: Vec<String> = stack.with_role(ServiceKind::Kafka, "broker").iter().map(|i| i.name.clone()).collect();
    let databases: Vec<String> = ["primary", "standby", "replica"]
        .iter()
        .flat_map(|r| stack.with_role(ServiceKind::Postgres, r))
        .map(|i| i.name.clone())
        .collect();
    let nemesis = *d.pick(&menu(stack));
    let held = d.secs(15, 45);
    let two_azs = |d: &mut SplitMix64| {
        let a = d.below(azs.len());
        let b = (a + 1 + d.below(azs.len() - 1)) % azs.len();
        (Side::Az(azs[a].clone()), Side::Az(azs[b].clone()))
    };
    let both_ways = |f: &dyn Fn(Side, Side) -> Fault, (a, b): (Side, Side)| vec![f(a.clone(), b.clone()), f(b, a)];
    let action = match nemesis {
        Nemesis::AzKill => Action::Inject(vec![Fault::AzOutage { az: d.pick(&azs).clone(), mode: OutageMode::Kill }]),
        Nemesis::AzPause => Action::Inject(vec![Fault::AzOutage { az: d.pick(&azs).clone(), mode: OutageMode::Pause }]),
        Nemesis::BrokerKill => Action::Inject(vec![Fault::Kill { instance: d.pick(&brokers).clone() }]),
        Nemesis::BrokerPause => Action::Inject(vec![Fault::Pause { instance: d.pick(&brokers).clone() }]),
        Nemesis::DatabaseKill => Action::Inject(vec![Fault::Kill { instance: d.pick(&databases).clone() }]),
        Nemesis::Partition => Action::Inject(both_ways(&|from, to| Fault::Partition { from, to }, two_azs(&mut d))),
        Nemesis::Latency => {
            let delay_us = 50_000 + 50_000 * d.below(5) as u64;
            Action::Inject(both_ways(&|from, to| Fault::Latency { from, to, delay_us, jitter_us: 0 }, two_azs(&mut d)))
        }
        Nemesis::Loss => {
            let ppm = 50_000 + 50_000 * d.below(4) as u32;
            Action::Inject(both_ways(&|from, to| Fault::Loss { from, to, ppm }, two_azs(&mut d)))
        }
        Nemesis::Failover => Action::Failover,
    };
    let heal_at = match action {
        Action::Inject(_) => Some(BEFORE + held),
        _ => None,
    };
    let mut rates = BTreeMap::new();
    for (op, kind, rate) in [
        (Op::KafkaProduce, ServiceKind::Kafka, 40.0),
        (Op::PostgresInsert, ServiceKind::Postgres, 20.0),
        (Op::InfluxWrite, ServiceKind::Influxdb, 20.0),
    ] {
        if stack.service(kind).is_some() {
            rates.insert(op, rate);
        }
    }
    // Every tier must be writing again within its RTO of the heal: the
    // recovery the run measures counts from the fault, so the time the
    // fault was held is added. PostgreSQL's is RDS Multi-AZ's failover
    // time (60–120 s) or detection plus a minute, whichever is longer.
    let fault_time = heal_at.map(|h| h - BEFORE).unwrap_or_default();
    let detection = stack.rds.as_ref().map(|r| r.failover_detection).unwrap_or_default();
    let mut recovery = BTreeMap::new();
    for op in rates.keys() {
        let rto = match op {
            Op::PostgresInsert => Duration::from_secs(120).max(detection + Duration::from_secs(60)),
            _ => Duration::from_secs(30),
        };
        recovery.insert(op.tier().to_string(), fault_time + rto);
    }
    Scenario {
        name: format!("soak-{seed}-{cycle}"),
        description: format!(
            "Chaos soak, seed {seed}, cycle {cycle}: {nemesis:?} held {}s under load.",
            held.as_secs()
        ),
        seed: seed.wrapping_add(u64::from(cycle)),
        duration: BEFORE + held + AFTER,
        ramp: Duration::from_secs(2),
        rates,
        faults: vec![TimedFault { at: BEFORE, heal_at, action }],
        kubernetes: None,
        expect: Expect {
            lost_acknowledged: Some(0),
            // The load writes each record once, with an idempotent producer.
            duplicated: Some(Limit::Overall(0)),
            recovery,
            ..Default::default()
        },
    }
}

/// Which cycles to run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub seed: u64,
    pub cycles: u32,
    /// Run only this cycle (a replay).
    pub only: Option<u32>,
    pub run: RunOptions,
    pub settle_within: Duration,
}

/// Run the soak's cycles in order, handing each cycle's scenario report to
/// `each` as it finishes (the CLI writes it out), and stop at the first
/// cycle that did not finish or whose stack did not settle: later cycles
/// would measure its wreck.
pub async fn soak(
    stack: &mut RunningStack,
    opts: &SoakOptions,
    p: &Progress,
    mut each: impl FnMut(Option<&Report>, &CycleReport),
) -> Result<SoakReport> {
    let shape = stack.stack()?;
    let cycles: Vec<u32> = match opts.only {
        Some(c) => vec![c],
        None => (0..opts.cycles).collect(),
    };
    let mut out = vec![];
    for c in cycles {
        let sc = plan(&shape, opts.seed, c);
        p.say(&format!("soak cycle {c} of seed {}: {}", opts.seed, sc.description));
        let report = match super::run(stack, &sc, &opts.run, p).await {
            Ok(r) => Some(r),
            Err(e) => {
                // A run that could not finish (a read-back refused, a heal
                // that timed out) is this cycle's finding, not the soak's end
                // without a report; what it left in force is healed first.
                let _ = stack.heal(Duration::from_secs(180)).await;
                let mut cr = cycle_report(c, opts, &sc, None);
                cr.problems.push(format!("the run did not finish: {e}"));
                each(None, &cr);
                out.push(cr);
                break;
            }
        };
        p.say("waiting for the stack to settle");
        let t = Instant::now();
        let settled = settle(stack, opts.settle_within).await;
        let mut cr = cycle_report(c, opts, &sc, report.as_ref());
        match settled {
            Ok(()) => cr.settled_s = Some(t.elapsed().as_secs_f64()),
            Err(e) => {
                cr.problems.push(format!("not settled within {}s: {e}", opts.settle_within.as_secs()));
                cr.passed = false;
            }
        }
        each(report.as_ref(), &cr);
        let stop = cr.settled_s.is_none();
        out.push(cr);
        if stop {
            break;
        }
    }
    let passed = out.iter().all(|c| c.passed) && (opts.only.is_some() || out.len() == opts.cycles as usize);
    Ok(SoakReport { schema: SCHEMA, seed: opts.seed, cycles: out, passed })
}

fn cycle_report(cycle: u32, opts: &SoakOptions, sc: &Scenario, r: Option<&Report>) -> CycleReport {
    let scale = opts.run.time_scale;
    let f = &sc.scaled(scale).faults[0];

    let checks = r.map(|r| r.checks.as_slice()).unwrap_or_default();
    let sum = |g: &dyn Fn(&crate::ledger::Check) -> usize| checks.iter().map(g).sum::<usize>();
    CycleReport {
        cycle,
        fault: f.action.label(),
        fault_s: f.heal_at.map(|h| (h - f.at).as_secs_f64()).unwrap_or(0.0),
        acknowledged: sum(&|c| c.acknowledged),
        lost: sum(&|c| c.lost.len()),
        duplicated: sum(&|c| c.duplicated.len()),
        ambiguous: sum(&|c| c.ambiguous_present.len() + c.ambiguous_absent.len()),
        recovery_s: r.iter().flat_map(|r| &r.recovery).map(|x| (x.tier.clone(), x.sustained_s)).collect(),
        settled_s: None,
        problems: r
            .iter()
            .flat_map(|r| &r.assertions)
            .filter(|a| !a.passed)
            .map(|a| format!("{}: expected {}, got {}", a.name, a.expected, a.actual))
            .collect(),
        passed: r.is_some_and(|r| r.passed),
        replay: format!(
            "voyager-sim soak --seed {} --cycle {cycle}{}",
            opts.seed,
            if scale == 1.0 { String::new() } else { format!(" --time-scale {scale}") }
        ),
    }
}

/// Wait until the stack is whole again: every instance healthy by its
/// probe, the API's pods spread over the zones again, PostgreSQL's standby
/// streaming synchronously and its replica streaming, every Kafka
/// partition led with its full ISR.
pub async fn settle(stack: &mut RunningStack, within: Duration) -> std::result::Result<(), String> {
    let start = Instant::now();
    let quiet = Progress::silent();
    loop {
        // Roles move with failovers; look at the state the control plane wrote.
        let problem = match stack.refresh() {
            Err(e) => Some(e.to_string()),
            Ok(()) => unsettled(stack, &quiet).await,
        };
        match problem {
            None => return Ok(()),
            Some(p) if start.elapsed() > within => return Err(p),
            Some(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

async fn unsettled(stack: &RunningStack, quiet: &Progress) -> Option<String> {
    match crate::harness::status(stack.name(), quiet).await {
        Err(e) => return Some(e.to_string()),
        Ok(None) => return Some("the stack is gone".into()),
        Ok(Some(s)) => {
            if let Some(i) = s.instances.iter().find(|i| i.health != "healthy") {
                return Some(format!("{} is {}", i.instance, i.health));
            }
        }
    }
    let state = stack.state();
    if let Some(p) = crate::services::api::pods::respread(state).await {
        return Some(p);
    }
    if state.instances.iter().any(|i| i.service == "postgres") {
        if let Err(e) = crate::services::postgres::replication_complete(state).await {
            return Some(e);
        }
    }
    if let Some(k) = stack.kafka() {
        match crate::services::kafka::metadata(k.bootstrap_servers, Duration::from_secs(5)).await {
            Err(e) => return Some(e),
            Ok(md) => return crate::services::kafka::short_of_isr(&md),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::builtin_stack;

    #[test]
    fn a_cycle_is_a_function_of_seed_and_cycle() {
        let s = builtin_stack();
        assert_eq!(plan(&s, 7, 3), plan(&s, 7, 3));
        assert_ne!(plan(&s, 7, 3).faults, plan(&s, 8, 3).faults);
    }

    #[test]
    fn every_planned_cycle_is_valid_on_the_stack_and_expects_exactly_once() {
        let s = builtin_stack();
        for c in 0..200 {
            let mut sc = plan(&s, 42, c);
            sc.validate(&s).unwrap_or_else(|e| panic!("cycle {c}: {e}"));
            assert_eq!(sc.expect.lost_acknowledged, Some(0));
            assert_eq!(sc.expect.duplicated, Some(Limit::Overall(0)));
            let f = &sc.faults[0];
            assert!(f.heal_at.is_none_or(|h| h < sc.duration), "cycle {c} heals before the load ends");
            assert_eq!(sc.expect.recovery.len(), sc.rates.len());
        }
    }

    #[test]
    fn a_soak_draws_every_kind_of_fault() {
        let s = builtin_stack();
        let mut seen = std::collections::BTreeSet::new();
        for c in 0..100 {
            let sc = plan(&s, 1, c);
            seen.insert(match &sc.faults[0].action {
                Action::Inject(fs) => match &fs[0] {
                    Fault::AzOutage { mode: OutageMode::Kill, .. } => "az-kill",
                    Fault::AzOutage { mode: OutageMode::Pause, .. } => "az-pause",
                    Fault::Kill { instance } if instance.starts_with("kafka") => "broker-kill",
                    Fault::Kill { .. } => "db-kill",
                    Fault::Pause { .. } => "broker-pause",
                    Fault::Partition { .. } => "partition",
                    Fault::Latency { .. } => "latency",
                    Fault::Loss { .. } => "loss",
                    Fault::Bandwidth { .. } => "bandwidth",
                },
                Action::Failover => "failover",
                Action::Restart(_) => "restart",
                Action::Accident => panic!("the soak never draws an accident: it would destroy what it checks"),
            });
        }
        assert_eq!(seen.len(), menu(&s).len(), "seen {seen:?}");
    }

    #[test]
    fn a_stack_without_postgres_never_draws_a_database_fault() {
        let s = builtin_stack().only(&[ServiceKind::Kafka]);
        for c in 0..100 {
            let sc = plan(&s, 5, c);
            assert!(!sc.rates.contains_key(&Op::PostgresInsert));
            match &sc.faults[0].action {
                Action::Failover => panic!("cycle {c} fails over a database the stack does not run"),
                Action::Inject(fs) => {
                    assert!(!matches!(&fs[0], Fault::Kill { instance } if instance.starts_with("postgres")))
                }
                Action::Restart(_) | Action::Accident => {}
            }
        }
    }
}
