//! The report of a scenario run: a JSON document with a stable schema
//! (`schema = 1`, documented in docs/report-schema.md) and a self-contained
//! HTML page (inline SVG, no scripts, no network). These are the report's own
//! types, not the runner's: the JSON is a contract. **No I/O.**

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::ledger::{Check, Duplicate};

mod edge;
mod junit;
pub mod platform;

pub use edge::{EdgeOutage, EdgeReport, EdgeZone};
pub use platform::{Panel, PanelSeries, PlatformReport};

pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    pub scenario: String,
    pub description: String,
    /// Seeds the arrival times; the same seed replays the same load.
    pub seed: u64,
    pub stack: String,
    pub run_id: String,
    pub started_unix: u64,
    /// Scenario times were multiplied by this (1 = as written).
    pub time_scale: f64,
    pub duration_s: f64,
    pub faults: Vec<FaultMark>,
    pub timeline: Vec<Second>,
    pub phases: Vec<PhaseStats>,
    pub recovery: Vec<Recovery>,
    pub checks: Vec<Check>,
    pub assertions: Vec<Assertion>,
    /// What the cluster did with the scenario's workloads, when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubeReport>,
    /// The ALB's targets and Route 53's answers, when the stack has an ALB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge: Option<EdgeReport>,
    /// What the platform did, from the stack's Prometheus, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformReport>,
    /// What the stack's control plane did during the run (detach, attach,
    /// failover, rebuild), on the timeline.
    #[serde(default)]
    pub control: Vec<ControlMark>,
    /// The point-in-time restore after an accident, when the scenario has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreReport>,
    pub notes: Vec<String>,
    pub passed: bool,
}

/// The seed's disaster-recovery targets for the database.
pub const SEED_DB_RTO_S: f64 = 3600.0;
pub const SEED_DB_RPO_S: f64 = 900.0;

/// A point-in-time restore to just before an accident, judged write by
/// write on the restored instance.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The accident, seconds into the run, and the restore target (a
    /// millisecond before it) as pgBackRest was given it.
    pub accident_at_s: f64,
    pub target: String,
    pub instance: String,
    pub from_backup: String,
    /// From asking for the restore to the instance taking writes.
    pub rto_s: f64,
    /// From the newest acknowledged write found in the restore to the target:
    /// what the restore did not bring back of the time before the accident.
    pub rpo_s: Option<f64>,
    /// Writes acknowledged before the target (each must be in the restore),
    /// and those sent after it (none may be).
    pub acknowledged_before: usize,
    pub missing_before: Vec<u64>,
    pub sent_after: usize,
    pub present_after: Vec<u64>,
    /// Rows the accident deleted on the source.
    pub deleted_by_accident: u64,
    pub seed_rto_s: f64,
    pub seed_rpo_s: f64,
}

/// The Kubernetes tier during a run: the timers in force, per zone the
/// workloads' ready pods and the Ready nodes second by second, and for each
/// lost AZ how long Kubernetes took to notice, evict and reschedule.
#[derive(Debug, Clone, Serialize)]
pub struct KubeReport {
    pub node_monitor_grace_period_s: f64,
    pub not_ready_toleration_s: f64,
    pub deployment_replicas: u32,
    pub statefulset_replicas: u32,
    pub zones: Vec<ZoneLane>,
    pub outages: Vec<KubeOutage>,
}

/// One zone, one value per second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct ZoneLane {
    pub zone: String,
    pub nodes: u32,
    pub ready_nodes: Vec<u32>,
    /// The Deployment's pods Ready in the zone (not terminating).
    pub deployment_ready: Vec<u32>,
    pub statefulset_ready: Vec<u32>,
}

/// Kubernetes after an AZ went: times from the fault.
#[derive(Debug, Clone, Serialize)]
pub struct KubeOutage {
    pub fault: String,
    pub zone: String,
    pub at_s: f64,
    /// The first of the zone's nodes NotReady.
    pub not_ready_s: Option<f64>,
    /// The first of the Deployment's pods there marked for deletion.
    pub evicted_s: Option<f64>,
    /// Every replica of the Deployment Ready again, none in the lost zone.
    pub ready_again_s: Option<f64>,
    /// What became of the StatefulSet's pods that were in the zone.
    pub statefulset: String,
}

/// A fault on the timeline: when it started and (if it did) ended.
#[derive(Debug, Clone, Serialize)]
pub struct FaultMark {
    pub label: String,
    pub at_s: f64,
    pub heal_at_s: Option<f64>,
}

/// An action of the stack's control plane, seconds from the run's start.
#[derive(Debug, Clone, Serialize)]
pub struct ControlMark {
    pub at_s: f64,
    pub what: String,
}

/// One second of the run, per operation, by intended send time.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub t: u32,
    pub ops: BTreeMap<String, SecondOp>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SecondOp {
    pub ok: u32,
    pub failed: u32,
    pub ambiguous: u32,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseStats {
    pub phase: String,
    pub op: String,
    pub attempts: u64,
    pub ok: u64,
    pub failed: u64,
    pub ambiguous: u64,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// How a tier came back after a fault: the first acknowledged write sent
/// after it, and the start of the first window (`window_s`) after it in which
/// every write succeeded (the RTO). `None`: it did not within the run.
#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    pub tier: String,
    pub fault: String,
    pub fault_at_s: f64,
    pub first_success_s: Option<f64>,
    pub sustained_s: Option<f64>,
    pub window_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Assertion {
    pub name: String,
    pub expected: String,
    pub actual: String,
    pub passed: bool,
}

/// One zone's lane of a report: a step line per series of per-second
/// values (colour and dash each), the faults shaded, from 0 to `max`, and
/// `caption` beside the run's length.
pub(crate) fn zone_lane(
    zone: &str,
    hgt: f64,
    series: &[(Vec<f64>, &str, &str)],
    max: f64,
    faults: &[FaultMark],
    duration_s: f64,
    caption: &str,
) -> String {
    let (w, left, top) = (1000.0_f64, 50.0_f64, 8.0_f64);
    let n = series.first().map_or(1, |s| s.0.len()).max(1) as f64;
    let x = |t: f64| left + t / n * (w - left - 10.0);
    let y = |v: f64| top + hgt - v / max * hgt;
    let mut s = format!(
        "<h3>zone {}</h3><svg width=\"{w}\" height=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" style=\"background:#fff;border:1px solid #d0d7de\">",
        esc(zone),
        hgt + 30.0
    );
    for f in faults {
        let end = f.heal_at_s.unwrap_or(duration_s);
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{hgt}\" fill=\"#8250df\" fill-opacity=\"0.12\"/>",
            x(f.at_s),
            (x(end) - x(f.at_s)).max(1.0)
        );
    }
    for (values, color, dash) in series {
        let mut pts = String::new();
        for (t, v) in values.iter().enumerate() {
            let _ = write!(pts, "{:.1},{:.1} {:.1},{:.1} ", x(t as f64), y(*v), x(t as f64 + 1.0), y(*v));
        }
        let _ = write!(s, "<polyline points=\"{pts}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>");
    }
    let _ = write!(
        s,
        "<text x=\"4\" y=\"{}\" font-size=\"11\">{max:.0}</text><text x=\"4\" y=\"{}\" font-size=\"11\">0</text><text x=\"{left}\" y=\"{}\" font-size=\"11\">0 s</text><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{duration_s:.0} s · {caption}</text></svg>",
        top + 10.0,
        top + hgt,
        top + hgt + 16.0,
        w - 10.0,
        top + hgt + 16.0,
    );
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Report {
    /// A short text summary for the terminal.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "scenario {} (seed {}, {:.0}s, time scale {}): {}\n",
            self.scenario,
            self.seed,
            self.duration_s,
            self.time_scale,
            if self.passed { "PASSED" } else { "FAILED" }
        );
        for r in &self.recovery {
            let f = |v: Option<f64>| v.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "not within the run".into());
            let _ = writeln!(
                out,
                "  RTO {:<9} after {}: first success {}, sustained {}",
                r.tier,
                r.fault,
                f(r.first_success_s),
                f(r.sustained_s)
            );
        }
        for c in &self.checks {
            let _ = writeln!(
                out,
                "  {:<16} acknowledged {:>6}, lost {}, duplicated {}, ambiguous {} ({} present), failed-but-present {}",
                c.op_name(),
                c.acknowledged,
                c.lost.len(),
                c.duplicated.len(),
                c.ambiguous_present.len() + c.ambiguous_absent.len(),
                c.ambiguous_present.len(),
                c.failed_but_present.len()
            );
            if !c.lost.is_empty() {
                let ids: Vec<String> = c.lost.iter().take(20).map(|i| i.to_string()).collect();
                let _ =
                    writeln!(out, "    lost ids: {}{}", ids.join(", "), if c.lost.len() > 20 { ", ..." } else { "" });
            }
            for line in c.duplicate_lines() {
                let _ = writeln!(out, "    duplicated, {line}");
            }
        }
        for a in &self.assertions {
            let _ = writeln!(
                out,
                "  [{}] {}: expected {}, got {}",
                if a.passed { "ok" } else { "FAIL" },
                a.name,
                a.expected,
                a.actual
            );
        }
        if let Some(r) = &self.restore {
            let _ = writeln!(
                out,
                "  restore to {} from {}: RTO {:.1}s (seed: {:.0} min), RPO {} (seed: {:.0} min); {} acknowledged before, {} missing; {} sent after, {} present",
                r.target,
                r.from_backup,
                r.rto_s,
                r.seed_rto_s / 60.0,
                r.rpo_s.map(|v| format!("{:.3}s", v)).unwrap_or_else(|| "unknown".into()),
                r.seed_rpo_s / 60.0,
                r.acknowledged_before,
                r.missing_before.len(),
                r.sent_after,
                r.present_after.len()
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        out
    }

    /// The report as one HTML page: a summary, then per operation a timeline
    /// of throughput, errors and p99 with the faults marked.
    pub fn html(&self) -> String {
        let mut h = String::new();
        let status = if self.passed { ("PASSED", "#1a7f37") } else { ("FAILED", "#cf222e") };
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name} — voyager-sim</title><style>\
             body{{font:14px system-ui,sans-serif;margin:24px;color:#1f2328;max-width:1100px}}\
             table{{border-collapse:collapse;margin:8px 0 20px}}td,th{{border:1px solid #d0d7de;padding:4px 8px;text-align:left}}\
             th{{background:#f6f8fa}}.ok{{color:#1a7f37}}.fail{{color:#cf222e;font-weight:bold}}h2{{margin-top:28px}}\
             .legend span{{display:inline-block;margin-right:14px}}</style></head><body>\
             <h1>{name} <span style=\"color:{color}\">{st}</span></h1><p>{desc}</p>\
             <p>stack <b>{stack}</b>, run {run}, seed <b>{seed}</b>, {dur:.0} s, time scale {scale}</p>",
            name = esc(&self.scenario),
            color = status.1,
            st = status.0,
            desc = esc(&self.description),
            stack = esc(&self.stack),
            run = esc(&self.run_id),
            seed = self.seed,
            dur = self.duration_s,
            scale = self.time_scale
        );
        h += "<h2>Assertions</h2><table><tr><th>assertion</th><th>expected</th><th>actual</th><th></th></tr>";
        for a in &self.assertions {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                esc(&a.name),
                esc(&a.expected),
                esc(&a.actual),
                if a.passed { "ok" } else { "fail" },
                if a.passed { "pass" } else { "FAIL" }
            );
        }
        h += "</table><h2>Recovery</h2><table><tr><th>tier</th><th>fault</th><th>at</th><th>first success</th><th>sustained (RTO)</th></tr>";
        for r in &self.recovery {
            let f = |v: Option<f64>| v.map(|s| format!("{s:.1} s")).unwrap_or_else(|| "—".into());
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:.1} s</td><td>{}</td><td>{}</td></tr>",
                esc(&r.tier),
                esc(&r.fault),
                r.fault_at_s,
                f(r.first_success_s),
                f(r.sustained_s)
            );
        }
        h += "</table><h2>Acknowledged writes</h2><table><tr><th>operation</th><th>acknowledged</th><th>lost</th><th>duplicated</th><th>ambiguous (present / absent)</th><th>failed but present</th></tr>";
        for c in &self.checks {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{} / {}</td><td>{}</td></tr>",
                c.op_name(),
                c.acknowledged,
                if c.lost.is_empty() { "ok" } else { "fail" },
                c.lost.len(),
                c.duplicated.len(),
                c.ambiguous_present.len(),
                c.ambiguous_absent.len(),
                c.failed_but_present.len()
            );
        }
        h += "</table>";
        for c in &self.checks {
            for line in c.duplicate_lines() {
                let _ = write!(h, "<p class=\"fail\">{}: duplicated, {}</p>", c.op_name(), esc(&line));
            }
        }
        if let Some(r) = &self.restore {
            let _ = write!(
                h,
                "<h2>Point-in-time restore</h2><table>\
                 <tr><th>accident at</th><td>{:.1} s</td></tr><tr><th>restored to</th><td>{}</td></tr>\
                 <tr><th>instance</th><td>{} (from backup {})</td></tr>\
                 <tr><th>RTO (restore to taking writes)</th><td>{:.1} s (seed target {:.0} min)</td></tr>\
                 <tr><th>RPO (target − newest write restored)</th><td>{} (seed target {:.0} min)</td></tr>\
                 <tr><th>acknowledged before the target</th><td>{}, <span class=\"{}\">{} missing</span></td></tr>\
                 <tr><th>sent after the target</th><td>{}, <span class=\"{}\">{} present</span></td></tr>\
                 <tr><th>rows the accident deleted</th><td>{}</td></tr></table>",
                r.accident_at_s,
                esc(&r.target),
                esc(&r.instance),
                esc(&r.from_backup),
                r.rto_s,
                r.seed_rto_s / 60.0,
                r.rpo_s.map(|v| format!("{:.3} s", v)).unwrap_or_else(|| "—".into()),
                r.seed_rpo_s / 60.0,
                r.acknowledged_before,
                if r.missing_before.is_empty() { "ok" } else { "fail" },
                r.missing_before.len(),
                r.sent_after,
                if r.present_after.is_empty() { "ok" } else { "fail" },
                r.present_after.len(),
                r.deleted_by_accident
            );
        }
        h += "<h2>Per phase</h2><table><tr><th>phase</th><th>operation</th><th>attempts</th><th>error rate</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>";
        for p in &self.phases {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}%</td><td>{:.1} ms</td><td>{:.1} ms</td><td>{:.1} ms</td><td>{:.1} ms</td></tr>",
                p.phase,
                p.op,
                p.attempts,
                p.error_rate * 100.0,
                p.p50_ms,
                p.p90_ms,
                p.p99_ms,
                p.max_ms
            );
        }
        h += "</table><h2>Timeline</h2><p class=\"legend\"><span style=\"color:#2da44e\">■ acknowledged/s</span><span style=\"color:#cf222e\">■ failed/s</span><span style=\"color:#bf8700\">■ ambiguous/s</span><span style=\"color:#0969da\">— p99 latency</span><span style=\"color:#8250df\">░ fault in force</span><span style=\"color:#bc4c00\">| control plane action</span></p>";
        let ops: Vec<String> = self
            .timeline
            .iter()
            .flat_map(|s| s.ops.keys().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for op in ops {
            h += &self.chart(&op);
        }
        if let Some(k) = &self.kubernetes {
            h += &self.kube_html(k);
        }
        if let Some(e) = &self.edge {
            h += &edge::html(e, &self.faults, self.duration_s);
        }
        if let Some(p) = &self.platform {
            h += &platform::html(p, &self.faults, &self.control, self.duration_s);
        }
        if !self.notes.is_empty() {
            h += "<h2>Notes</h2><ul>";
            for n in &self.notes {
                let _ = write!(h, "<li>{}</li>", esc(n));
            }
            h += "</ul>";
        }
        h += "</body></html>\n";
        h
    }

    /// The cluster's section: the timers, each outage's times, and a lane
    /// per zone of ready pods and nodes with the faults marked.
    fn kube_html(&self, k: &KubeReport) -> String {
        let mut h = format!(
            "<h2>Kubernetes</h2><p>timers: node-monitor-grace-period <b>{:.0} s</b>, not-ready/unreachable toleration <b>{:.0} s</b>;              a Deployment of {} spread over the zones, a StatefulSet of {} with zonal volumes</p>",
            k.node_monitor_grace_period_s, k.not_ready_toleration_s, k.deployment_replicas, k.statefulset_replicas
        );
        if !k.outages.is_empty() {
            h += "<table><tr><th>fault</th><th>zone</th><th>NotReady after</th><th>evicted after</th><th>all replicas Ready after</th><th>StatefulSet</th></tr>";
            let f = |v: Option<f64>| v.map(|s| format!("{s:.1} s")).unwrap_or_else(|| "—".into());
            for o in &k.outages {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&o.fault),
                    esc(&o.zone),
                    f(o.not_ready_s),
                    f(o.evicted_s),
                    f(o.ready_again_s),
                    esc(&o.statefulset)
                );
            }
            h += "</table>";
        }
        h += "<p class=\"legend\"><span style=\"color:#2da44e\">— Deployment pods ready</span><span style=\"color:#0969da\">— StatefulSet pods ready</span><span style=\"color:#6e7781\">- - Ready nodes</span><span style=\"color:#8250df\">░ fault in force</span></p>";
        let max = k
            .zones
            .iter()
            .flat_map(|z| z.deployment_ready.iter().chain(&z.statefulset_ready).chain(&z.ready_nodes))
            .copied()
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        for z in &k.zones {
            h += &self.lane(z, max);
        }
        h
    }

    fn lane(&self, z: &ZoneLane, max: f64) -> String {
        let f = |v: &[u32]| v.iter().map(|x| *x as f64).collect::<Vec<f64>>();
        let series = [
            (f(&z.ready_nodes), "#6e7781", " stroke-dasharray=\"4 3\""),
            (f(&z.statefulset_ready), "#0969da", ""),
            (f(&z.deployment_ready), "#2da44e", ""),
        ];
        zone_lane(&z.zone, 70.0, &series, max, &self.faults, self.duration_s, &format!("{} nodes", z.nodes))
    }

    fn chart(&self, op: &str) -> String {
        // Writes per second against the left axis, p99 latency against the
        // right one, each with its unit; seconds along the bottom.
        let (w, hgt, left, right, top) = (1000.0_f64, 180.0_f64, 50.0_f64, 62.0_f64, 10.0_f64);
        let n = self.timeline.len().max(1) as f64;
        let max_count = platform::axis_max(
            self.timeline
                .iter()
                .filter_map(|s| s.ops.get(op))
                .map(|o| (o.ok + o.failed + o.ambiguous) as f64)
                .fold(1.0, f64::max),
        );
        let max_p99 =
            platform::axis_max(self.timeline.iter().filter_map(|s| s.ops.get(op)?.p99_ms).fold(1.0, f64::max));
        let x = |t: f64| left + t / n * (w - left - right);
        let y = |v: f64, max: f64| top + hgt - v / max * hgt;
        let bw = ((w - left - right) / n).max(1.0) - 0.5;
        let mut s = format!("<h3>{}</h3><svg width=\"{w}\" height=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" style=\"background:#fff;border:1px solid #d0d7de\">", esc(op), hgt + 40.0);
        for f in &self.faults {
            let end = f.heal_at_s.unwrap_or(self.duration_s);
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{hgt}\" fill=\"#8250df\" fill-opacity=\"0.12\"/><line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{top}\" y2=\"{2}\" stroke=\"#8250df\" stroke-dasharray=\"4 3\"/><text x=\"{3:.1}\" y=\"{4}\" font-size=\"11\" fill=\"#8250df\">{5}</text>",
                x(f.at_s),
                (x(end) - x(f.at_s)).max(1.0),
                top + hgt,
                x(f.at_s) + 3.0,
                top + 12.0,
                esc(&f.label)
            );
        }
        // The control plane's actions: a short orange tick at the bottom,
        // its words on hover.
        for c in &self.control {
            let _ = write!(
                s,
                "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"#bc4c00\" stroke-width=\"2\"><title>{3}</title></line>",
                x(c.at_s),
                top + hgt - 18.0,
                top + hgt,
                esc(&format!("t={:.1}s {}", c.at_s, c.what))
            );
        }
        let mut line = String::new();
        for sec in &self.timeline {
            let Some(o) = sec.ops.get(op) else { continue };
            let t = sec.t as f64;
            let mut base = 0.0;
            for (v, color) in [(o.ok, "#2da44e"), (o.failed, "#cf222e"), (o.ambiguous, "#bf8700")] {
                if v > 0 {
                    let v = v as f64;
                    let _ = write!(
                        s,
                        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{color}\"/>",
                        x(t),
                        y(base + v, max_count),
                        v / max_count * hgt
                    );
                    base += v;
                }
            }
            if let Some(p) = o.p99_ms {
                let _ = write!(line, "{:.1},{:.1} ", x(t) + bw / 2.0, y(p, max_p99));
            }
        }
        if !line.is_empty() {
            let _ = write!(s, "<polyline points=\"{line}\" fill=\"none\" stroke=\"#0969da\" stroke-width=\"1.5\"/>");
        }
        for frac in [0.0, 0.5, 1.0] {
            let at = y(frac * max_count, max_count);
            let _ = write!(
                s,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{at:.1}\" y2=\"{at:.1}\" stroke=\"#d0d7de\" stroke-dasharray=\"2 3\"/>\
                 <text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{:.0}/s</text>\
                 <text x=\"{}\" y=\"{:.1}\" font-size=\"11\" fill=\"#0969da\">{}</text>",
                w - right,
                left - 4.0,
                at + 4.0,
                frac * max_count,
                w - right + 4.0,
                at + 4.0,
                esc(&platform::with_unit(frac * max_p99, "ms"))
            );
        }
        s += &platform::time_axis(x, n, top + hgt);
        s + "</svg>"
    }
}

impl Check {
    pub fn op_name(&self) -> &'static str {
        self.op.as_str()
    }

    /// One line per cause: how many, and the first ids with their copies'
    /// places (enough to find them in the service).
    pub fn duplicate_lines(&self) -> Vec<String> {
        let mut by_cause: BTreeMap<&'static str, Vec<&Duplicate>> = BTreeMap::new();
        for d in &self.duplicates {
            by_cause.entry(d.cause.as_str()).or_default().push(d);
        }
        by_cause
            .into_iter()
            .map(|(cause, ds)| {
                let shown: Vec<String> =
                    ds.iter().take(5).map(|d| format!("{} at {}", d.id, d.copies.join(" and "))).collect();
                let more = if ds.len() > 5 { format!(", and {} more", ds.len() - 5) } else { String::new() };
                format!("{cause}: {} ({}{more})", ds.len(), shown.join("; "))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{check, Ledger, Op, Outcome};

    pub(super) fn report(lost: bool) -> Report {
        let mut l = Ledger::default();
        l.record(Op::KafkaProduce, 1, Outcome::Acked);
        l.record(Op::KafkaProduce, 2, Outcome::Acked);
        let at = |p: &str| vec![p.to_string()];
        let found: BTreeMap<u64, Vec<String>> =
            if lost { [(1, at("0@1"))].into() } else { [(1, at("0@1")), (2, at("0@2"))].into() };
        let c = check(Op::KafkaProduce, &l, &found);
        let mut ops = BTreeMap::new();
        ops.insert("kafka_produce".to_string(), SecondOp { ok: 5, failed: 1, ambiguous: 0, p99_ms: Some(12.0) });
        Report {
            schema: SCHEMA,
            scenario: "az-loss".into(),
            description: "lose <b>".into(),
            seed: 7,
            stack: "s".into(),
            run_id: "r".into(),
            started_unix: 0,
            time_scale: 1.0,
            duration_s: 2.0,
            faults: vec![FaultMark { label: "az-outage b".into(), at_s: 1.0, heal_at_s: None }],
            timeline: vec![Second { t: 0, ops: ops.clone() }, Second { t: 1, ops }],
            phases: vec![],
            recovery: vec![],
            assertions: vec![Assertion {
                name: "lost acknowledged writes".into(),
                expected: "0".into(),
                actual: c.lost.len().to_string(),
                passed: c.lost.is_empty(),
            }],
            checks: vec![c],
            kubernetes: None,
            edge: None,
            platform: None,
            restore: None,
            control: vec![],
            notes: vec![],
            passed: !lost,
        }
    }

    #[test]
    fn the_html_is_self_contained_escaped_and_marks_faults() {
        let h = report(false).html();
        assert!(h.contains("<svg") && h.contains("az-outage b") && h.contains("PASSED"));
        assert!(h.contains("lose &lt;b&gt;") && !h.contains("lose <b>"));
        assert!(!h.contains("<script") && !h.contains("src=\"http") && !h.contains("href=\"http"));
    }

    #[test]
    fn lost_writes_show_in_json_text_and_html() {
        let r = report(true);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["schema"], 1);
        assert_eq!(json["checks"][0]["lost"], serde_json::json!([2]));
        assert_eq!(json["passed"], false);
        assert!(r.summary().contains("lost ids: 2"), "{}", r.summary());
        assert!(r.html().contains("FAILED"));
    }

    #[test]
    fn duplicates_are_named_by_id_place_and_cause() {
        let mut r = report(false);
        let mut l = Ledger::default();
        l.record(Op::KafkaProduce, 1, Outcome::Ambiguous);
        l.record(Op::KafkaProduce, 2, Outcome::Acked);
        let found: BTreeMap<u64, Vec<String>> =
            [(1, vec!["3@10".into(), "3@14".into()]), (2, vec!["0@2".into()])].into();
        r.checks = vec![check(Op::KafkaProduce, &l, &found)];
        let text = r.summary();
        assert!(text.contains("duplicated, resent after the client gave up: 1 (1 at 3@10 and 3@14)"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["checks"][0]["duplicates"][0]["cause"], "after_client_gave_up");
        assert!(r.html().contains("resent after the client gave up"));
    }
}
