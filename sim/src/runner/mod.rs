//! Running a scenario against a running stack: the load, the faults on their
//! timeline, healing, reading every write back, and the report.
//!
//! Layout: this module drives the run; `readback` reads every write back,
//! `analysis` turns samples into the report's numbers, `kube` deploys a
//! scenario's workloads and watches what Kubernetes does with them,
//! `restore` does a scenario's accident and judges the point-in-time
//! restore after it, `soak` is the chaos soak over many runs.

mod analysis;
mod edge;
mod kube;
mod platform;
mod readback;
mod restore;
pub mod soak;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::harness::RunningStack;
use crate::ledger::{check, Ledger, Op};
use crate::load::{self, Sample, Targets};
use crate::progress::Progress;
use crate::report::{ControlMark, FaultMark, Report, SCHEMA};
use crate::scenario::{Action, Scenario};

pub use analysis::recovery_of;
use analysis::{assertions, phase_stats, recovery, timeline};
use readback::read_back;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Multiply every scenario time by this (CI runs shortened scenarios).
    pub time_scale: f64,
    /// Recovery counts as sustained from the start of a window this long in
    /// which every write succeeded.
    pub sustain_window: Duration,
    /// A write answered later than this after its intended send time has
    /// not recovered yet, even if it succeeded (it sat in a queue).
    pub timely: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { time_scale: 1.0, sustain_window: Duration::from_secs(5), timely: Duration::from_secs(1) }
    }
}

enum Event {
    Act(usize),
    Heal,
}

/// Run `scenario` on `stack` and return its report (also when it fails its
/// expectations: `report.passed` says).
pub async fn run(stack: &mut RunningStack, scenario: &Scenario, opts: &RunOptions, p: &Progress) -> Result<Report> {
    let mut sc = scenario.scaled(opts.time_scale);
    sc.validate(&stack.stack()?).map_err(|e| {
        Error::usage(format!("scenario {}: {e}", sc.name), "name AZs and instances as `voyager-sim status` shows them")
    })?;
    let run_tag = format!(
        "{}-{}",
        sc.name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        crate::runtime::labels::random_suffix()
    );
    let kafka = stack.kafka().map(|k| k.bootstrap_servers);
    let api = if sc.rates.get(&Op::ApiRequest).is_some_and(|r| *r > 0.0) {
        crate::load::api::ApiTarget::of(stack.state(), &run_tag)
            .map_err(|e| Error::usage(format!("api_request: {e}"), "check `voyager-sim status`"))?
    } else {
        None
    };
    let targets = Arc::new(
        Targets::new(&run_tag, kafka.as_deref(), stack.postgres(), stack.influxdb())
            .map_err(|e| Error::usage(e, "check `voyager-sim status`"))?
            .with_api(api),
    );
    for op in sc.rates.iter().filter(|(_, r)| **r > 0.0).map(|(o, _)| *o) {
        if !targets.supports(op) {
            return Err(Error::usage(
                format!("scenario {} puts load on {} but the stack does not run {}", sc.name, op.as_str(), op.tier()),
                format!("start the stack with {} (or without --only)", op.tier()),
            ));
        }
    }
    targets
        .prepare()
        .await
        .map_err(|e| Error::usage(format!("preparing the load: {e}"), "check `voyager-sim status`"))?;
    if sc.faults.iter().any(|f| f.action == Action::Accident) {
        restore::ensure_backup(stack, p)
            .await
            .map_err(|e| Error::usage(format!("scenario {}: {e}", sc.name), "check `voyager-sim status`"))?;
    }
    let workloads = match &sc.kubernetes {
        Some(w) => Some(kube::deploy(stack, w, &sc, &run_tag, p).await.map_err(|e| {
            Error::usage(format!("deploying the scenario's workloads: {e}"), "check `voyager-sim status`")
        })?),
        None => None,
    };

    // The timeline: each fault's action at its time, heals at heal times,
    // everything still in force healed at the end.
    let mut events: Vec<(Duration, Event)> = vec![];
    for (i, f) in sc.faults.iter().enumerate() {
        events.push((f.at, Event::Act(i)));
        if let Some(h) = f.heal_at {
            events.push((h, Event::Heal));
        }
    }
    events.sort_by_key(|(t, _)| *t);

    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let start = Instant::now();
    p.say(&format!(
        "scenario {}: {:.0}s of load, {} fault(s), seed {}",
        sc.name,
        sc.duration.as_secs_f64(),
        sc.faults.len(),
        sc.seed
    ));
    let load = {
        let (sc2, targets) = (sc.clone(), targets.clone());
        tokio::spawn(async move { load::generate(&sc2, targets, start, tx).await })
    };
    let collector = tokio::spawn(async move {
        let mut all = vec![];
        while let Some(s) = rx.recv().await {
            all.push(s);
        }
        all
    });
    // What the stack's control plane does meanwhile is in its event log.
    let since_ms = crate::state::now_unix_ms();
    let progress = spawn_progress(start, sc.duration, p.clone());
    let observer = workloads.as_ref().map(|d| kube::spawn_observer(d, start, start + sc.duration));
    let edge_observer = edge::Edge::of(stack.state()).map(|e| edge::spawn_observer(e, start, start + sc.duration));

    let mut marks: Vec<FaultMark> = vec![];
    let mut accident: Option<restore::Accident> = None;
    let mut notes: Vec<String> = kube::timer_notes(&sc, &stack.stack()?);
    for (t, ev) in events {
        tokio::time::sleep_until((start + t).into()).await;
        match ev {
            Event::Act(i) => {
                let f = &sc.faults[i];
                let label = f.action.label();
                p.say(&format!("t={:.1}s: {label}", start.elapsed().as_secs_f64()));
                marks.push(FaultMark { label: label.clone(), at_s: start.elapsed().as_secs_f64(), heal_at_s: None });
                match &f.action {
                    Action::Inject(fs) => {
                        for fault in fs {
                            stack.inject(fault.clone()).await?;
                        }
                        if let Some(note) = link_check(stack, fs, start).await {
                            p.say(&note);
                            notes.push(note);
                        }
                    }
                    Action::Restart(n) => {
                        stack.restart_instance(n, Duration::from_secs(120)).await?;
                        marks.last_mut().expect("pushed").heal_at_s = Some(start.elapsed().as_secs_f64());
                    }
                    Action::Accident => {
                        let a = restore::accident(stack, &run_tag, start.elapsed()).await.map_err(|e| {
                            Error::usage(format!("the accident's DELETE failed: {e}"), "check `voyager-sim status`")
                        })?;
                        marks.last_mut().expect("pushed").heal_at_s = Some(start.elapsed().as_secs_f64());
                        p.say(&format!("accident: {} rows deleted", a.deleted));
                        accident = Some(a);
                    }
                    Action::Failover => {
                        let fo = stack.failover_postgres(p).await?;
                        marks.last_mut().expect("pushed").heal_at_s = Some(start.elapsed().as_secs_f64());
                        notes.push(format!(
                            "failover {} -> {}: writer endpoint unavailable {:.2}s, old primary back as standby after {:.2}s",
                            fo.old_primary,
                            fo.new_primary,
                            fo.writer_unavailable.as_secs_f64(),
                            fo.old_primary_rejoined_after.as_secs_f64()
                        ));
                    }
                }
            }
            Event::Heal => {
                p.say(&format!("t={:.1}s: heal", start.elapsed().as_secs_f64()));
                let now = start.elapsed().as_secs_f64();
                stack.heal(Duration::from_secs(180)).await?;
                for m in marks.iter_mut().filter(|m| m.heal_at_s.is_none()) {
                    m.heal_at_s = Some(now);
                }
            }
        }
    }
    tokio::time::sleep_until((start + sc.duration).into()).await;
    if !stack.state().faults.is_empty() {
        p.say("end of load: healing what is still broken");
        let now = start.elapsed().as_secs_f64();
        stack.heal(Duration::from_secs(180)).await?;
        for m in marks.iter_mut().filter(|m| m.heal_at_s.is_none()) {
            m.heal_at_s = Some(now);
        }
    }
    p.say("waiting for the last answers");
    let _ = load.await;
    let samples = collector.await.unwrap_or_default();
    progress.abort();
    let control: Vec<ControlMark> = crate::state::events_since(stack.name(), since_ms)
        .into_iter()
        .map(|e| ControlMark { at_s: (e.at_unix_ms.saturating_sub(since_ms)) as f64 / 1000.0, what: e.what })
        .collect();
    notes.extend(control.iter().map(|c| format!("t={:.1}s control plane: {}", c.at_s, c.what)));
    stack.refresh()?;
    let snapshots = match observer {
        Some(o) => o.await.unwrap_or_default(),
        None => vec![],
    };
    let edge_seen = match edge_observer {
        Some(o) => o.await.ok(),
        None => None,
    };
    // The WAF's refusals, counted apart: they are the rule working.
    let limited = samples.iter().filter(|s| s.status == Some(429)).count();
    if limited > 0 {
        notes.push(format!("api_request: {limited} request(s) answered 429 by the WAF's rate-based rule"));
    }

    let mut ledger = Ledger::default();
    for s in &samples {
        ledger.record(s.op, s.id, s.outcome);
    }
    p.say("reading every write back");
    let mut checks = vec![];
    let mut restored = None;
    for op in sc.rates.iter().filter(|(_, r)| **r > 0.0).map(|(o, _)| *o) {
        if let (crate::ledger::Op::PostgresInsert, Some(a)) = (op, &accident) {
            // The accident emptied the source: the database is judged on
            // its restore, to just before the accident.
            let (c, r) = restore::restore_and_judge(stack, a, &run_tag, &samples, p).await.map_err(|e| {
                Error::usage(format!("restoring PostgreSQL after the accident: {e}"), "check `voyager-sim status`")
            })?;
            notes.push(format!(
                "postgres_insert is judged on the restore to {} (writes acknowledged before it must be there, none sent after)",
                r.target
            ));
            checks.push(c);
            restored = Some(r);
            continue;
        }
        let found = read_back(stack, op, &run_tag, &mut notes)
            .await
            .map_err(|e| Error::usage(format!("reading back {}: {e}", op.as_str()), "check `voyager-sim status`"))?;
        checks.push(check(op, &ledger, &found));
    }

    let st = stack.state();
    let mut report = Report {
        schema: SCHEMA,
        scenario: sc.name.clone(),
        description: sc.description.clone(),
        seed: sc.seed,
        stack: st.stack.clone(),
        run_id: run_tag,
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        time_scale: opts.time_scale,
        duration_s: sc.duration.as_secs_f64(),
        timeline: timeline(&samples, sc.duration),
        phases: phase_stats(&samples, &sc),
        recovery: recovery(&samples, &marks, opts),
        faults: marks,
        checks,
        assertions: vec![],
        kubernetes: None,
        edge: None,
        platform: None,
        control,
        restore: restored,
        notes,
        passed: false,
    };
    if let (Some(d), Some(w)) = (&workloads, &sc.kubernetes) {
        report.kubernetes = Some(kube::analyse(&snapshots, &report.faults, &sc, &stack.stack()?, w));
        kube::remove(d).await;
    }
    if let Some((e, snaps)) = &edge_seen {
        report.edge = Some(edge::analyse(e, snaps, &report.faults, &sc, report.duration_s));
    }
    report.platform = platform::collect(st, &stack.stack()?, since_ms as f64 / 1000.0, report.duration_s).await;
    report.assertions = assertions(&report, &sc);
    report.passed = report.assertions.iter().all(|a| a.passed);
    Ok(report)
}

fn spawn_progress(start: Instant, duration: Duration, p: Progress) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let step = Duration::from_secs(10).min(duration / 4).max(Duration::from_secs(1));
        loop {
            tokio::time::sleep(step).await;
            let t = start.elapsed();
            if t >= duration {
                return;
            }
            let done = (t.as_secs_f64() / duration.as_secs_f64() * 30.0) as usize;
            p.say(&format!(
                "[{}{}] {:.0}/{:.0}s",
                "#".repeat(done),
                ".".repeat(30 - done.min(30)),
                t.as_secs_f64(),
                duration.as_secs_f64()
            ));
        }
    })
}

/// After a latency fault between two AZs: what the link really does now,
/// measured by the link agent's pinger, beside what was asked (the normal
/// latency both ways plus every delay in force on either direction). The
/// report carries it, so a run shows how exact its injected delay was.
async fn link_check(stack: &RunningStack, injected: &[crate::fault::Fault], start: Instant) -> Option<String> {
    use crate::fault::{micros_text, Fault, Side};
    let (a, b) = injected.iter().find_map(|f| match f {
        Fault::Latency { from: Side::Az(a), to: Side::Az(b), .. } => Some((a.clone(), b.clone())),
        _ => None,
    })?;
    let base = stack.stack().ok()?.inter_az_latency.as_micros() as u64;
    let mut asked = 2 * base;
    let mut parts = vec![format!("{} each way", micros_text(base))];
    for f in &stack.state().faults {
        if let Fault::Latency { from: Side::Az(x), to: Side::Az(y), delay_us, jitter_us } = f {
            if (x == &a && y == &b) || (x == &b && y == &a) {
                asked += delay_us;
                let jitter = if *jitter_us > 0 { format!(" ± {}", micros_text(*jitter_us)) } else { String::new() };
                parts.push(format!("{}{jitter} {x}->{y}", micros_text(*delay_us)));
            }
        }
    }
    let at = start.elapsed().as_secs_f64();
    match stack.round_trips(&a, &b, 50, Duration::from_millis(5)).await {
        Ok((mut rtts, lost)) if !rtts.is_empty() => {
            rtts.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let (median, p99) = (rtts[rtts.len() / 2], rtts[(rtts.len() * 99 / 100).min(rtts.len() - 1)]);
            Some(format!(
                "t={at:.1}s link {a}->{b}->{a}: round trip median {:.2} ms, p99 {:.2} ms, {lost} of 50 lost; asked {:.2} ms ({}), median error {:+.2} ms",
                ms(median),
                ms(p99),
                asked as f64 / 1e3,
                parts.join(" + "),
                ms(median) - asked as f64 / 1e3
            ))
        }
        Ok(_) => Some(format!("t={at:.1}s link {a}->{b}->{a}: every probe was lost")),
        Err(e) => Some(format!("t={at:.1}s link {a}->{b}: could not measure the round trip: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Op, Outcome};

    fn sample(intended_ms: u64, latency_ms: u64, outcome: Outcome) -> Sample {
        Sample {
            op: Op::PostgresInsert,
            id: intended_ms,
            intended: Duration::from_millis(intended_ms),
            latency: Duration::from_millis(latency_ms),
            outcome,
            status: None,
        }
    }

    #[test]
    fn writes_held_in_a_queue_recover_when_they_complete_not_when_sent() {
        // Fault at 10 s; everything sent in the next 2 s waits until 12.2 s.
        let mut s: Vec<Sample> =
            (0..20).map(|i| sample(10_000 + i * 100, 12_200 - (10_000 + i * 100), Outcome::Acked)).collect();
        s.extend((0..100).map(|i| sample(12_000 + i * 100, 5, Outcome::Acked)));
        let (first, sustained) =
            recovery_of(s.iter(), Duration::from_secs(10), Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(first, Some(Duration::from_millis(2_005)));
        // The queued writes answer at 12.2 s, the oldest of them more than 1 s
        // late: recovery is sustained only from then.
        assert_eq!(sustained, Some(Duration::from_millis(2_200)));
    }

    #[test]
    fn a_failure_restarts_the_clean_window() {
        let mut s = vec![sample(10_000, 10, Outcome::Acked), sample(11_000, 10, Outcome::Failed)];
        s.extend((0..100).map(|i| sample(12_000 + i * 100, 10, Outcome::Acked)));
        let (first, sustained) =
            recovery_of(s.iter(), Duration::from_secs(10), Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(first, Some(Duration::from_millis(10)));
        assert_eq!(sustained, Some(Duration::from_millis(2_010)));
    }

    #[test]
    fn a_request_failing_late_counts_at_its_send_not_its_error() {
        // Fault at 10 s; a request sent at 10.5 s waits 30 s for its error
        // while everything else answers at once: recovered once it was
        // sent and its `timely` second passed, not when its error came.
        let mut s: Vec<Sample> = (0..200).map(|i| sample(10_000 + i * 100, 5, Outcome::Acked)).collect();
        s.push(sample(10_550, 30_000, Outcome::Ambiguous));
        let (_, sustained) =
            recovery_of(s.iter(), Duration::from_secs(10), Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(sustained, Some(Duration::from_millis(1_605)));
    }

    #[test]
    fn a_request_in_flight_when_the_fault_struck_is_judged_with_the_fault() {
        let text = "name = \"x\"\nseed = 1\nduration = \"30s\"\n[load]\nrate = { postgres_insert = 1 }\n\
                    [[fault]]\nat = \"10s\"\nheal_at = \"20s\"\nkind = \"kill\"\ntarget = \"postgres-b\"\n";
        let sc = crate::scenario::parse_scenario(std::path::Path::new("x.toml"), text).unwrap();
        let s = [sample(9_000, 10, Outcome::Acked), sample(9_900, 30_000, Outcome::Ambiguous)];
        let phases = analysis::phase_stats(&s, &sc);
        let of = |p: crate::scenario::Phase| phases.iter().find(|x| x.phase == p.to_string()).unwrap();
        assert_eq!((of(crate::scenario::Phase::Before).attempts, of(crate::scenario::Phase::Before).ambiguous), (1, 0));
        assert_eq!(of(crate::scenario::Phase::During).ambiguous, 1);
    }

    #[test]
    fn never_succeeding_again_is_no_recovery() {
        let s = [
            sample(9_000, 10, Outcome::Acked),
            sample(10_500, 10, Outcome::Failed),
            sample(11_000, 10, Outcome::Ambiguous),
        ];
        assert_eq!(
            recovery_of(s.iter(), Duration::from_secs(10), Duration::from_secs(5), Duration::from_secs(1)),
            (None, None)
        );
    }
}
