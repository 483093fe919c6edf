//! Running a scenario against a running stack: the load, the faults on their
//! timeline, healing, reading every write back, and the report. Also the
//! stack's stand-in for RDS's control plane during a run: when the
//! synchronous standby is lost, the primary stops waiting for it (RDS keeps
//! the primary writable while it replaces a standby), and waits again once
//! it is back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::harness::RunningStack;
use crate::ledger::{check, Ledger, Op, Outcome};
use crate::load::{self, Sample, Targets, INFLUX_MEASUREMENT, KAFKA_TOPIC, PG_TABLE};
use crate::progress::Progress;
use crate::report::{Assertion, FaultMark, PhaseStats, Recovery, Report, Second, SecondOp, SCHEMA};
use crate::scenario::{Action, Phase, Scenario};
use crate::services::postgres as pg;

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
    let targets = Arc::new(
        Targets::new(&run_tag, kafka.as_deref(), stack.postgres(), stack.influxdb())
            .map_err(|e| Error::usage(e, "check `voyager-sim status`"))?,
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
    let has_failover = sc.faults.iter().any(|f| matches!(f.action, Action::Failover));
    let control = (!has_failover).then(|| spawn_control_plane(stack.state().clone(), start + sc.duration, p.clone()));
    let progress = spawn_progress(start, sc.duration, p.clone());

    let mut marks: Vec<FaultMark> = vec![];
    let mut notes: Vec<String> = primary_outage_warnings(stack, &sc);
    for (t, ev) in events {
        tokio::time::sleep_until((start + t).into()).await;
        match ev {
            Event::Act(i) => {
                let f = &sc.faults[i];
                let label = match &f.action {
                    Action::Inject(fs) => fs.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(" + "),
                    Action::Restart(n) => format!("restart {n}"),
                    Action::Failover => "failover postgres".into(),
                };
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
    if let Some(c) = control {
        notes.extend(c.await.unwrap_or_default());
    }

    let mut ledger = Ledger::default();
    for s in &samples {
        ledger.record(s.op, s.id, s.outcome);
    }
    p.say("reading every write back");
    let mut checks = vec![];
    for op in sc.rates.iter().filter(|(_, r)| **r > 0.0).map(|(o, _)| *o) {
        let found = read_back(stack, op, &run_tag)
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
        notes,
        passed: false,
    };
    report.assertions = assertions(&report, &sc);
    report.passed = report.assertions.iter().all(|a| a.passed);
    Ok(report)
}

/// Everything of this run that the service holds, by id and count.
async fn read_back(stack: &RunningStack, op: Op, run: &str) -> std::result::Result<BTreeMap<u64, usize>, String> {
    let mut found: BTreeMap<u64, usize> = BTreeMap::new();
    match op {
        Op::PostgresInsert => {
            let w = stack.postgres().ok_or("no PostgreSQL")?;
            for row in w.query_strings(&format!("SELECT id FROM {PG_TABLE} WHERE run = '{run}'")).await? {
                if let Some(id) = row[0].as_deref().and_then(|s| s.parse().ok()) {
                    *found.entry(id).or_default() += 1;
                }
            }
        }
        Op::InfluxWrite => {
            let ep = stack.influxdb().ok_or("no InfluxDB")?;
            let q = format!("SELECT \"id\" FROM \"{INFLUX_MEASUREMENT}\" WHERE \"run\" = '{run}'");
            // Chunked: one JSON document per line, whatever the row limit.
            for doc in ep.query_chunked(&ep.database, &q).await? {
                let v: serde_json::Value = serde_json::from_str(&doc).map_err(|e| e.to_string())?;
                for series in v["results"][0]["series"].as_array().into_iter().flatten() {
                    for row in series["values"].as_array().into_iter().flatten() {
                        if let Some(id) = row[1].as_u64() {
                            *found.entry(id).or_default() += 1;
                        }
                    }
                }
            }
        }
        Op::KafkaProduce => {
            let bootstrap = stack.kafka().ok_or("no Kafka")?.bootstrap_servers;
            let prefix = format!("{run}:");
            found = tokio::task::spawn_blocking(move || read_topic(&bootstrap, &prefix))
                .await
                .map_err(|e| e.to_string())??;
        }
    }
    Ok(found)
}

/// Every partition of the load's topic from the beginning to its high
/// watermark as of now.
fn read_topic(bootstrap: &str, prefix: &str) -> std::result::Result<BTreeMap<u64, usize>, String> {
    let mut last = String::new();
    for attempt in 1..=3 {
        match read_topic_once(bootstrap, prefix, attempt) {
            Ok(found) => return Ok(found),
            Err(e) => last = e,
        }
    }
    Err(format!("reading {KAFKA_TOPIC} back failed three times: {last}"))
}

/// One complete read, or an error if any partition gave fewer records than
/// its offsets say it holds: a reader that skips (a consumer reset past
/// records it could not fetch for a moment) would otherwise report writes
/// as lost that are not.
fn read_topic_once(bootstrap: &str, prefix: &str, attempt: u32) -> std::result::Result<BTreeMap<u64, usize>, String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("voyager-sim-check-{prefix}{attempt}"))
        .set("enable.auto.commit", "false")
        // Never jump to the end: a checker must see every record.
        .set("auto.offset.reset", "earliest")
        .set("log_level", "0")
        .create()
        .map_err(|e| e.to_string())?;
    let md = c.fetch_metadata(Some(KAFKA_TOPIC), Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let parts = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0) as i32;
    let mut tpl = TopicPartitionList::new();
    // Per partition: (log start, high watermark) as of now.
    let mut bounds: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for p in 0..parts {
        let (low, high) = c.fetch_watermarks(KAFKA_TOPIC, p, Duration::from_secs(10)).map_err(|e| e.to_string())?;
        if high > low {
            bounds.insert(p, (low, high));
            tpl.add_partition_offset(KAFKA_TOPIC, p, Offset::Offset(low)).map_err(|e| e.to_string())?;
        }
    }
    c.assign(&tpl).map_err(|e| e.to_string())?;
    let mut read: BTreeMap<i32, i64> = BTreeMap::new();
    let mut remaining: BTreeSet<i32> = bounds.keys().copied().collect();
    let mut found: BTreeMap<u64, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            return Err(format!("did not reach the end of partitions {remaining:?}"));
        }
        let Some(msg) = c.poll(Duration::from_millis(500)) else { continue };
        let m = msg.map_err(|e| e.to_string())?;
        let Some((low, high)) = bounds.get(&m.partition()).copied() else { continue };
        if m.offset() < low || m.offset() >= high {
            continue;
        }
        *read.entry(m.partition()).or_default() += 1;
        if let Some(id) = m
            .payload()
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|s| s.strip_prefix(prefix))
            .and_then(|s| s.parse().ok())
        {
            *found.entry(id).or_default() += 1;
        }
        if m.offset() + 1 >= high {
            remaining.remove(&m.partition());
        }
    }
    for (p, (low, high)) in &bounds {
        let got = read.get(p).copied().unwrap_or(0);
        if got != high - low {
            return Err(format!("partition {p} holds offsets {low}..{high} but {got} records were read"));
        }
    }
    Ok(found)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

fn timeline(samples: &[Sample], duration: Duration) -> Vec<Second> {
    let secs = duration.as_secs_f64().ceil().max(1.0) as usize;
    let mut hists: Vec<BTreeMap<Op, Histogram<u64>>> = (0..secs).map(|_| BTreeMap::new()).collect();
    let mut out: Vec<Second> = (0..secs).map(|t| Second { t: t as u32, ops: BTreeMap::new() }).collect();
    for s in samples {
        let i = (s.intended.as_secs() as usize).min(secs - 1);
        let e = out[i].ops.entry(s.op.as_str().to_string()).or_default();
        match s.outcome {
            Outcome::Acked => e.ok += 1,
            Outcome::Failed => e.failed += 1,
            Outcome::Ambiguous => e.ambiguous += 1,
        }
        let _ = hists[i].entry(s.op).or_insert_with(histogram).record((s.latency.as_micros() as u64).max(1));
    }
    for (sec, hs) in out.iter_mut().zip(hists) {
        for (op, h) in hs {
            if let Some(e) = sec.ops.get_mut(op.as_str()) {
                e.p99_ms = Some(ms(&h, 0.99));
            }
        }
    }
    // Seconds with no attempt still show as zeros, so gaps are visible.
    for sec in &mut out {
        for op in samples.iter().map(|s| s.op).collect::<BTreeSet<_>>() {
            sec.ops.entry(op.as_str().to_string()).or_insert_with(SecondOp::default);
        }
    }
    out
}

/// Per phase and operation: latencies, then acknowledged, failed and
/// ambiguous counts.
type Tally = (Histogram<u64>, u64, u64, u64);

fn phase_stats(samples: &[Sample], sc: &Scenario) -> Vec<PhaseStats> {
    let mut groups: BTreeMap<(Phase, Op), Tally> = BTreeMap::new();
    for s in samples {
        let g = groups.entry((sc.phase_at(s.intended), s.op)).or_insert_with(|| (histogram(), 0, 0, 0));
        let _ = g.0.record((s.latency.as_micros() as u64).max(1));
        match s.outcome {
            Outcome::Acked => g.1 += 1,
            Outcome::Failed => g.2 += 1,
            Outcome::Ambiguous => g.3 += 1,
        }
    }
    groups
        .into_iter()
        .map(|((phase, op), (h, ok, failed, ambiguous))| {
            let attempts = ok + failed + ambiguous;
            PhaseStats {
                phase: phase.to_string(),
                op: op.as_str().into(),
                attempts,
                ok,
                failed,
                ambiguous,
                error_rate: if attempts == 0 { 0.0 } else { (failed + ambiguous) as f64 / attempts as f64 },
                p50_ms: ms(&h, 0.5),
                p90_ms: ms(&h, 0.9),
                p99_ms: ms(&h, 0.99),
                max_ms: h.max() as f64 / 1000.0,
            }
        })
        .collect()
}

/// Per tier and fault: the first acknowledged write sent after the fault, and
/// the start of the first window after it in which every write succeeded.
fn recovery(samples: &[Sample], marks: &[FaultMark], opts: &RunOptions) -> Vec<Recovery> {
    // Shortened runs shorten the window too, but not below a second.
    let window = Duration::from_secs_f64((opts.sustain_window.as_secs_f64() * opts.time_scale).max(1.0));
    let ops: BTreeSet<Op> = samples.iter().map(|s| s.op).collect();
    let mut out = vec![];
    for m in marks {
        let at = Duration::from_secs_f64(m.at_s);
        for op in &ops {
            let (first, sustained) = recovery_of(samples.iter().filter(|s| s.op == *op), at, window, opts.timely);
            out.push(Recovery {
                tier: op.tier().into(),
                fault: m.label.clone(),
                fault_at_s: m.at_s,
                first_success_s: first.map(|d| d.as_secs_f64()),
                sustained_s: sustained.map(|d| d.as_secs_f64()),
                window_s: window.as_secs_f64(),
            });
        }
    }
    out
}

/// Recovery of one operation after a fault at `at`, judged by when writes
/// sent after the fault *completed*: a write held in a queue until the
/// service is back is not a success at its send time, and one answered later
/// than `timely` has not recovered yet. Returns (first acknowledged
/// completion, start of the first run of timely acknowledged completions
/// lasting `window` with nothing else in it, or clean to the end), both
/// measured from the fault.
pub fn recovery_of<'a>(
    samples: impl Iterator<Item = &'a Sample>,
    at: Duration,
    window: Duration,
    timely: Duration,
) -> (Option<Duration>, Option<Duration>) {
    let mut done: Vec<(Duration, bool, bool)> = samples
        .filter(|s| s.intended >= at)
        .map(|s| {
            (s.intended + s.latency, s.outcome == Outcome::Acked && s.latency <= timely, s.outcome == Outcome::Acked)
        })
        .collect();
    done.sort();
    let first = done.iter().find(|(_, _, acked)| *acked).map(|(t, _, _)| *t - at);
    let mut streak: Option<Duration> = None;
    for (t, ok, _) in &done {
        match (ok, streak) {
            (false, _) => streak = None,
            (true, None) => streak = Some(*t),
            (true, Some(s)) if *t - s >= window => return (first, Some(s - at)),
            _ => {}
        }
    }
    (first, streak.map(|s| s - at))
}

fn assertions(r: &Report, sc: &Scenario) -> Vec<Assertion> {
    let mut out = vec![];
    if let Some(max) = sc.expect.lost_acknowledged {
        let lost: usize = r.checks.iter().map(|c| c.lost.len()).sum();
        out.push(Assertion {
            name: "acknowledged writes lost".into(),
            expected: format!("<= {max}"),
            actual: lost.to_string(),
            passed: lost <= max,
        });
    }
    for (tier, limit) in &sc.expect.recovery {
        for rec in r.recovery.iter().filter(|x| &x.tier == tier) {
            let ok = rec.sustained_s.is_some_and(|s| s <= limit.as_secs_f64());
            out.push(Assertion {
                name: format!("{tier} recovery (RTO) after {}", rec.fault),
                expected: format!("<= {:.1}s", limit.as_secs_f64()),
                actual: rec.sustained_s.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "not within the run".into()),
                passed: ok,
            });
        }
    }
    for (phase, max) in &sc.expect.error_rate {
        for ps in r.phases.iter().filter(|p| p.phase == phase.to_string()) {
            out.push(Assertion {
                name: format!("{} error rate {phase}", ps.op),
                expected: format!("<= {:.2}%", max * 100.0),
                actual: format!("{:.2}% of {}", ps.error_rate * 100.0, ps.attempts),
                passed: ps.error_rate <= *max,
            });
        }
    }
    for ((phase, op), limit) in &sc.expect.p99 {
        if let Some(ps) = r.phases.iter().find(|p| p.phase == phase.to_string() && p.op == op.as_str()) {
            out.push(Assertion {
                name: format!("{} p99 {phase}", op.as_str()),
                expected: format!("<= {:.0} ms", limit.as_secs_f64() * 1000.0),
                actual: format!("{:.1} ms", ps.p99_ms),
                passed: ps.p99_ms <= limit.as_secs_f64() * 1000.0,
            });
        }
    }
    out
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

/// RDS's part during a run: if the synchronous standby stops answering, the
/// primary is told to stop waiting for it; when it streams again, to wait
/// again. Returns what it did, for the report's notes.
fn spawn_control_plane(
    state: crate::state::RunState,
    until: Instant,
    p: Progress,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut notes = vec![];
        let primary = pg::nodes(&state).find(|i| i.role == "primary").and_then(|i| pg::instance(&state, &i.name));
        let standbys: Vec<String> = pg::nodes(&state).filter(|i| i.role == "standby").map(|i| i.name.clone()).collect();
        let (Some(primary), false) = (primary, standbys.is_empty()) else { return notes };
        let start = Instant::now();
        let mut misses = 0;
        let mut detached = false;
        while Instant::now() < until + Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut up = true;
            for s in &standbys {
                let ep = pg::instance(&state, s).expect("standby endpoint");
                up &= matches!(
                    tokio::time::timeout(Duration::from_secs(1), ep.query_strings("SELECT 1")).await,
                    Ok(Ok(_))
                );
            }
            misses = if up { 0 } else { misses + 1 };
            if !detached && misses >= 2 {
                match set_sync_names(&primary, "").await {
                    Ok(()) => {
                        detached = true;
                        let n = format!(
                            "t={:.1}s control plane: standby lost; the primary stops waiting for it",
                            start.elapsed().as_secs_f64()
                        );
                        p.say(&n);
                        notes.push(n);
                    }
                    Err(e) => notes.push(format!("control plane: could not detach the lost standby: {e}")),
                }
            } else if detached && up && standbys_streaming(&primary, &standbys).await {
                let names: Vec<&str> = standbys.iter().map(String::as_str).collect();
                match set_sync_names(&primary, &pg::sync_names(&names)).await {
                    Ok(()) => {
                        detached = false;
                        let n = format!(
                            "t={:.1}s control plane: standby streaming again; commits wait for it again",
                            start.elapsed().as_secs_f64()
                        );
                        p.say(&n);
                        notes.push(n);
                    }
                    Err(e) => notes.push(format!("control plane: could not re-attach the standby: {e}")),
                }
            }
            if Instant::now() > until && !detached {
                break;
            }
        }
        notes
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

/// RDS fails a lost primary over by itself; this control plane does not yet
/// (only `failover` faults do), so a run that takes out the primary's AZ says
/// so up front instead of leaving the reader to guess.
fn primary_outage_warnings(stack: &RunningStack, sc: &Scenario) -> Vec<String> {
    let Some(primary) = pg::nodes(stack.state()).find(|i| i.role == "primary") else { return vec![] };
    sc.faults
        .iter()
        .filter_map(|f| match &f.action {
            Action::Inject(fs) => fs.iter().find_map(|fault| match fault {
                crate::fault::Fault::AzOutage { az, .. } if *az == primary.az => Some(az.clone()),
                crate::fault::Fault::Kill { instance } if *instance == primary.name => Some(primary.az.clone()),
                _ => None,
            }),
            _ => None,
        })
        .map(|az| {
            format!(
                "the PostgreSQL primary ({}) is in AZ {az}, which this run takes out; automatic failover of a lost primary is not simulated, so writes wait until it is back",
                primary.name
            )
        })
        .collect()
}

/// `ALTER SYSTEM` refuses to run inside a transaction, which a
/// multi-statement query is: two round trips.
async fn set_sync_names(primary: &pg::PostgresEndpoint, names: &str) -> std::result::Result<(), String> {
    primary.query_strings(&format!("ALTER SYSTEM SET synchronous_standby_names = '{names}'")).await?;
    primary.query_strings("SELECT pg_reload_conf()").await.map(|_| ())
}

/// Whether every standby streams from the primary (in whatever sync state:
/// a detached standby reports `async`).
async fn standbys_streaming(primary: &pg::PostgresEndpoint, standbys: &[String]) -> bool {
    let Ok(repl) = pg::replication(primary).await else { return false };
    standbys.iter().all(|s| repl.iter().any(|(n, st, _)| *n == pg::replication_name(s) && st == "streaming"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(intended_ms: u64, latency_ms: u64, outcome: Outcome) -> Sample {
        Sample {
            op: Op::PostgresInsert,
            id: intended_ms,
            intended: Duration::from_millis(intended_ms),
            latency: Duration::from_millis(latency_ms),
            outcome,
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
