//! The report's "what the platform did" section: panels drawn from the
//! stack's Prometheus over the run (Kafka's replication, PostgreSQL's,
//! the load balancers' healthy targets), on the same time axis as the
//! client-side timeline, with the faults marked. No I/O: the runner asks
//! Prometheus (`runner::platform`).

use std::fmt::Write as _;

use serde::Serialize;

use super::{esc, ControlMark, FaultMark};

#[derive(Debug, Clone, Serialize)]
pub struct PlatformReport {
    /// Where the numbers came from (Prometheus's address in the stack).
    pub source: String,
    /// Seconds between points: Prometheus's scrape interval.
    pub step_s: f64,
    pub panels: Vec<Panel>,
}

/// One chart: every series in one unit.
#[derive(Debug, Clone, Serialize)]
pub struct Panel {
    pub title: String,
    /// `partitions`, `replicas`, `bytes`, `nodes`, `targets`, …
    pub unit: String,
    /// The PromQL behind each series, for a user to run again.
    pub queries: Vec<String>,
    pub series: Vec<PanelSeries>,
    /// Why the panel is empty, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PanelSeries {
    pub name: String,
    /// (seconds from the run's start, value).
    pub points: Vec<(f64, f64)>,
}

const COLORS: &[&str] = &["#0969da", "#cf222e", "#1a7f37", "#bf8700", "#8250df", "#6e7781"];

/// A value with its unit as a reader wants it: bytes in KiB/MiB, time in
/// ms or s, counts plain.
pub fn with_unit(v: f64, unit: &str) -> String {
    match unit {
        "bytes" if v >= 1048576.0 => format!("{:.1} MiB", v / 1048576.0),
        "bytes" if v >= 1024.0 => format!("{:.0} KiB", v / 1024.0),
        "bytes" => format!("{v:.0} B"),
        "ms" if v >= 1000.0 => format!("{:.1} s", v / 1000.0),
        "ms" => format!("{v:.0} ms"),
        _ if v.fract() == 0.0 => format!("{v:.0} {unit}"),
        _ => format!("{v:.1} {unit}"),
    }
}

/// The axis' top: the largest value, rounded up to a number that divides
/// into even ticks (never 0, so a flat zero line still draws).
/// [`axis_max`], kept from ticks no reader can use: counted things
/// (partitions, nodes, ...) get whole ticks, and bytes at least a KiB, so a
/// flat zero does not read "0 B, 0 B, 1 B".
pub fn axis_for(unit: &str, max: f64) -> f64 {
    match unit {
        "bytes" => axis_max(max).max(1024.0),
        "ms" => axis_max(max),
        _ => axis_max(max).max(2.0),
    }
}

pub fn axis_max(max: f64) -> f64 {
    if max.is_nan() || max <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(max.log10().floor());
    for m in [1.0, 2.0, 4.0, 5.0, 10.0] {
        if m * mag >= max {
            return m * mag;
        }
    }
    10.0 * mag
}

pub fn html(p: &PlatformReport, faults: &[FaultMark], control: &[ControlMark], duration_s: f64) -> String {
    let mut h = format!(
        "<h2>What the platform did</h2><p>from {}, a point every {:.0} s; faults shaded as in the timeline</p>",
        esc(&p.source),
        p.step_s
    );
    for panel in &p.panels {
        h += &chart(panel, p.step_s, faults, control, duration_s);
    }
    h
}

fn chart(p: &Panel, step_s: f64, faults: &[FaultMark], control: &[ControlMark], duration_s: f64) -> String {
    let (w, hgt, left, right, top) = (1000.0_f64, 120.0_f64, 80.0_f64, 10.0_f64, 10.0_f64);
    let span = duration_s.max(1.0);
    let x = |t: f64| left + t.clamp(0.0, span) / span * (w - left - right);
    let max = axis_for(
        &p.unit,
        p.series.iter().flat_map(|s| &s.points).map(|pt| pt.1).filter(|v| v.is_finite()).fold(0.0, f64::max),
    );
    let y = |v: f64| top + hgt - v / max * hgt;
    let mut s = format!("<h3>{}</h3>", esc(&p.title));
    if let Some(why) = &p.missing {
        let _ = write!(s, "<p>no data: {}</p>", esc(why));
        return s;
    }
    s += "<p class=\"legend\">";
    for (i, ser) in p.series.iter().enumerate() {
        let _ = write!(s, "<span style=\"color:{}\">— {}</span>", COLORS[i % COLORS.len()], esc(&ser.name));
    }
    s += "<span style=\"color:#8250df\">░ fault in force</span></p>";
    let _ = write!(
        s,
        "<svg width=\"{w}\" height=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" style=\"background:#fff;border:1px solid #d0d7de\">",
        hgt + 34.0
    );
    for f in faults {
        let end = f.heal_at_s.unwrap_or(duration_s);
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{hgt}\" fill=\"#8250df\" fill-opacity=\"0.12\"/><text x=\"{:.1}\" y=\"{}\" font-size=\"11\" fill=\"#8250df\">{}</text>",
            x(f.at_s),
            (x(end) - x(f.at_s)).max(1.0),
            x(f.at_s) + 3.0,
            top + 11.0,
            esc(&f.label)
        );
    }
    for c in control {
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"#bc4c00\" stroke-width=\"2\"><title>{3}</title></line>",
            x(c.at_s),
            top + hgt - 14.0,
            top + hgt,
            esc(&format!("t={:.1}s {}", c.at_s, c.what))
        );
    }
    // The value axis: three ticks with the unit, and faint grid lines.
    for frac in [0.0, 0.5, 1.0] {
        let v = max * frac;
        let _ = write!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eaeef2\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            w - right,
            left - 6.0,
            y(v) + 4.0,
            esc(&with_unit(v, &p.unit)),
            y = y(v)
        );
    }
    // Steps, not slopes: a value holds until the next scrape says
    // otherwise. A series breaks where scrapes were missing (its target
    // down or gone), rather than drawing a line across the gap.
    for (i, ser) in p.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // Series often agree (two zones with one node each): each after
        // the first is dashed, so the ones it covers still show.
        let dash =
            ["", " stroke-dasharray=\"8 5\"", " stroke-dasharray=\"3 4\"", " stroke-dasharray=\"12 4 3 4\""][i.min(3)];
        let mut run: Vec<(f64, f64)> = vec![];
        let flush = |run: &mut Vec<(f64, f64)>, s: &mut String| {
            if !run.is_empty() {
                let mut pts = String::new();
                for (i, (t, v)) in run.iter().enumerate() {
                    if i > 0 {
                        let _ = write!(pts, "{:.1},{:.1} ", x(*t), y(run[i - 1].1));
                    }
                    let _ = write!(pts, "{:.1},{:.1} ", x(*t), y(*v));
                }
                let _ = write!(
                    s,
                    "<polyline points=\"{pts}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.8\"{dash}/>"
                );
                run.clear();
            }
        };
        let mut last: Option<f64> = None;
        for &(t, v) in ser.points.iter().filter(|p| p.1.is_finite()) {
            if last.is_some_and(|l| t - l > 2.5 * step_s) {
                flush(&mut run, &mut s);
            }
            run.push((t, v));
            last = Some(t);
        }
        flush(&mut run, &mut s);
    }
    s += &time_axis(x, span, top + hgt);
    s + "</svg>"
}

/// Seconds from the run's start along the bottom at `base`, a tick every
/// round number of seconds (about ten over the run).
pub(super) fn time_axis(x: impl Fn(f64) -> f64, span: f64, base: f64) -> String {
    let tick = (axis_max(span / 6.0) / 2.0).max(1.0);
    let mut s = String::new();
    let mut t = 0.0;
    while t <= span + 0.01 {
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#8c959f\"/><text x=\"{0:.1}\" y=\"{3}\" font-size=\"11\" text-anchor=\"middle\">{4:.0} s</text>",
            x(t),
            base,
            base + 4.0,
            base + 17.0,
            t
        );
        t += tick;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_units_and_axes_round_up() {
        assert_eq!(with_unit(3.0, "partitions"), "3 partitions");
        assert_eq!(with_unit(2.0 * 1048576.0, "bytes"), "2.0 MiB");
        assert_eq!(with_unit(1500.0, "ms"), "1.5 s");
        assert_eq!(with_unit(12.0, "ms"), "12 ms");
        assert_eq!(axis_max(0.0), 1.0);
        assert_eq!(axis_max(3.0), 4.0);
        assert_eq!(axis_max(7.0), 10.0);
        assert_eq!(axis_max(120.0), 200.0);
        // The middle tick is whole for counts, and bytes start at a KiB.
        assert_eq!(axis_for("nodes", 1.0), 2.0);
        assert_eq!(axis_for("nodes", 3.0), 4.0);
        assert_eq!(with_unit(axis_for("bytes", 0.0) / 2.0, "bytes"), "512 B");
    }

    #[test]
    fn a_panel_draws_its_series_with_gaps_units_and_the_faults() {
        let p = PlatformReport {
            source: "http://127.0.0.1:1".into(),
            step_s: 2.0,
            panels: vec![
                Panel {
                    title: "Kafka: under-replicated partitions".into(),
                    unit: "partitions".into(),
                    queries: vec!["sum(x)".into()],
                    series: vec![
                        PanelSeries {
                            name: "sum over brokers".into(),
                            // 10 s missing between 4 and 14: two runs.
                            points: vec![(0.0, 0.0), (2.0, 0.0), (4.0, 6.0), (14.0, 6.0), (16.0, 0.0)],
                        },
                        // The same values: drawn dashed over the first.
                        PanelSeries { name: "again".into(), points: vec![(0.0, 0.0), (2.0, 0.0)] },
                    ],
                    missing: None,
                },
                Panel {
                    title: "empty".into(),
                    unit: "nodes".into(),
                    queries: vec![],
                    series: vec![],
                    missing: Some("no postgres exporter <upstream>".into()),
                },
            ],
        };
        let f = [FaultMark { label: "az-outage b".into(), at_s: 3.0, heal_at_s: Some(12.0) }];
        let h = html(&p, &f, &[], 20.0);
        assert_eq!(h.matches("<polyline").count(), 3, "a gap breaks the line: {h}");
        assert_eq!(h.matches("stroke-dasharray").count(), 1, "only the second series is dashed: {h}");
        assert!(h.contains("10 partitions") && h.contains("0 partitions"), "the axis says its unit: {h}");
        assert!(h.contains("az-outage b") && h.contains("fill-opacity=\"0.12\""), "the fault is marked");
        assert!(h.contains("20 s"), "the time axis reaches the run's end: {h}");
        assert!(h.contains("no data: no postgres exporter &lt;upstream&gt;"));
    }
}
