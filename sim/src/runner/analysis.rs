//! Turning a run's samples into the report's numbers: the per-second
//! timeline, per-phase percentiles, recovery per tier (judged by
//! completion), and the assertions the scenario expects. **No I/O.**

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::ledger::{Check, Op, Outcome};
use crate::load::Sample;
use crate::report::{Assertion, FaultMark, PhaseStats, Recovery, Report, Second, SecondOp};
use crate::scenario::{Limit, Phase, Scenario};

use super::RunOptions;

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

pub(super) fn timeline(samples: &[Sample], duration: Duration) -> Vec<Second> {
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

/// Kubernetes' reaction to each lost AZ, against the stack's timers plus
/// the scenario's slack.
fn kube_assertions(r: &Report, sc: &Scenario) -> Vec<Assertion> {
    let mut out = vec![];
    let Some(k) = &r.kubernetes else { return out };
    let e = &sc.expect.kubernetes;
    let secs = |v: Option<f64>| v.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "not within the outage".into());
    for o in &k.outages {
        if let Some(slack) = e.not_ready_slack {
            let limit = k.node_monitor_grace_period_s + slack.as_secs_f64();
            out.push(Assertion {
                name: format!("kubernetes: {} nodes NotReady after {}", o.zone, o.fault),
                expected: format!(
                    "<= {limit:.1}s (grace {:.0}s + {:.0}s)",
                    k.node_monitor_grace_period_s,
                    slack.as_secs_f64()
                ),
                actual: secs(o.not_ready_s),
                passed: o.not_ready_s.is_some_and(|s| s <= limit),
            });
        }
        if let Some(slack) = e.eviction_slack {
            let limit = k.node_monitor_grace_period_s + k.not_ready_toleration_s + slack.as_secs_f64();
            out.push(Assertion {
                name: format!("kubernetes: pods evicted from {} after {}", o.zone, o.fault),
                expected: format!(
                    "<= {limit:.1}s (grace {:.0}s + toleration {:.0}s + {:.0}s)",
                    k.node_monitor_grace_period_s,
                    k.not_ready_toleration_s,
                    slack.as_secs_f64()
                ),
                actual: secs(o.evicted_s),
                passed: o.evicted_s.is_some_and(|s| s <= limit),
            });
        }
        if let Some(within) = e.rescheduled_within {
            let took = o.evicted_s.zip(o.ready_again_s).map(|(ev, ready)| ready - ev);
            out.push(Assertion {
                name: format!("kubernetes: every replica Ready outside {} after eviction", o.zone),
                expected: format!("<= {:.1}s", within.as_secs_f64()),
                actual: secs(took),
                passed: took.is_some_and(|t| t <= within.as_secs_f64()),
            });
        }
    }
    out
}

/// Per phase and operation: latencies, then acknowledged, failed and
/// ambiguous counts.
type Tally = (Histogram<u64>, u64, u64, u64);

pub(super) fn phase_stats(samples: &[Sample], sc: &Scenario) -> Vec<PhaseStats> {
    let mut groups: BTreeMap<(Phase, Op), Tally> = BTreeMap::new();
    let first_fault = sc.faults.first().map(|f| f.at);
    for s in samples {
        // A request still in flight when the first fault struck was decided
        // by the fault: it is judged with it, not with the stack before.
        let phase = match (sc.phase_at(s.intended), first_fault) {
            (Phase::Before, Some(at)) if s.intended + s.latency > at => Phase::During,
            (p, _) => p,
        };
        let g = groups.entry((phase, s.op)).or_insert_with(|| (histogram(), 0, 0, 0));
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
pub(super) fn recovery(samples: &[Sample], marks: &[FaultMark], opts: &RunOptions) -> Vec<Recovery> {
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
/// completion, start of the first `window` of timely acknowledged
/// completions that no bad write overlaps, or clean to the end), both
/// measured from the fault.
///
/// A bad write spans the time it shows the service broken: an
/// acknowledgement that came late, from its send to its answer (the
/// service was not answering); a failure or an ambiguous answer, from its
/// send for `timely` (it was doomed when sent; how long the client then
/// waited for its error says nothing of the service). So a window is not
/// clean while requests sent in it are failing, however late their errors
/// arrive.
pub fn recovery_of<'a>(
    samples: impl Iterator<Item = &'a Sample>,
    at: Duration,
    window: Duration,
    timely: Duration,
) -> (Option<Duration>, Option<Duration>) {
    let mut ok: Vec<Duration> = vec![];
    let mut bad: Vec<(Duration, Duration)> = vec![];
    let mut first: Option<Duration> = None;
    for s in samples.filter(|s| s.intended >= at) {
        let done = s.intended + s.latency;
        if s.outcome == Outcome::Acked {
            first = Some(first.map_or(done, |f: Duration| f.min(done)));
        }
        match (s.outcome == Outcome::Acked, s.latency <= timely) {
            (true, true) => ok.push(done),
            (true, false) => bad.push((s.intended, done)),
            (false, _) => bad.push((s.intended, s.intended + timely)),
        }
    }
    ok.sort();
    let last = ok.last().copied();
    let sustained = ok.iter().copied().find(|&start| {
        let end = start + window;
        // Confirmed by a timely acknowledgement at its end, or clean to the
        // end of the run.
        let confirmed = last.is_some_and(|l| l >= end) || !bad.iter().any(|(_, until)| *until > start);
        confirmed && !bad.iter().any(|(from, until)| *from < end && *until > start)
    });
    (first.map(|f| f - at), sustained.map(|s| s - at))
}

pub(super) fn assertions(r: &Report, sc: &Scenario) -> Vec<Assertion> {
    let mut out = kube_assertions(r, sc);
    if let Some(max) = sc.expect.lost_acknowledged {
        let lost: usize = r.checks.iter().map(|c| c.lost.len()).sum();
        out.push(Assertion {
            name: "acknowledged writes lost".into(),
            expected: format!("<= {max}"),
            actual: lost.to_string(),
            passed: lost <= max,
        });
    }
    let counted = [
        ("duplicated", &sc.expect.duplicated, (|c: &Check| c.duplicated.len()) as fn(&Check) -> usize),
        ("ambiguous", &sc.expect.ambiguous, |c: &Check| c.ambiguous_present.len() + c.ambiguous_absent.len()),
    ];
    for (what, limit, count) in counted {
        match limit {
            Some(Limit::Overall(max)) => {
                let n: usize = r.checks.iter().map(count).sum();
                out.push(count_assertion(format!("writes {what}"), *max, n));
            }
            Some(Limit::PerOp(per)) => {
                for (op, max) in per {
                    let n: usize = r.checks.iter().filter(|c| c.op == *op).map(count).sum();
                    out.push(count_assertion(format!("{} writes {what}", op.as_str()), *max, n));
                }
            }
            None => {}
        }
    }
    if let Some(rs) = &r.restore {
        out.push(Assertion {
            name: "writes sent after the restore target present in the restore".into(),
            expected: "0".into(),
            actual: rs.present_after.len().to_string(),
            passed: rs.present_after.is_empty(),
        });
        let secs = |d: Duration| format!("<= {:.0}s", d.as_secs_f64());
        if let Some(max) = sc.expect.restore_rto {
            out.push(Assertion {
                name: "restore RTO (to taking writes)".into(),
                expected: secs(max),
                actual: format!("{:.1}s", rs.rto_s),
                passed: rs.rto_s <= max.as_secs_f64(),
            });
        }
        if let Some(max) = sc.expect.restore_rpo {
            out.push(Assertion {
                name: "restore RPO (target - newest write restored)".into(),
                expected: secs(max),
                actual: rs.rpo_s.map(|v| format!("{v:.3}s")).unwrap_or_else(|| "no write restored".into()),
                passed: rs.rpo_s.is_some_and(|v| v <= max.as_secs_f64()),
            });
        }
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

fn count_assertion(name: String, max: usize, n: usize) -> Assertion {
    Assertion { name, expected: format!("<= {max}"), actual: n.to_string(), passed: n <= max }
}
