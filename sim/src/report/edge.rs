//! The edge's section of a report: per AZ, the targets the ALB counts
//! healthy and whether Route 53's answer holds the AZ's node, second by
//! second, with the faults marked; and for each lost AZ how long the ALB
//! and DNS took to act, and to take it back. **No I/O.**

use std::fmt::Write;

use serde::Serialize;

use super::{esc, FaultMark};

/// The edge during a run.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeReport {
    pub zones: Vec<EdgeZone>,
    /// Each second: Route 53 answered the maintenance record.
    pub maintenance: Vec<bool>,
    pub outages: Vec<EdgeOutage>,
}

/// One AZ, one value per second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeZone {
    pub zone: String,
    pub targets: u32,
    pub healthy_targets: Vec<u32>,
    /// 1 while the API's DNS answer holds the AZ's ALB node.
    pub in_dns: Vec<u32>,
}

/// The edge after an AZ went: seconds from the fault (and from its heal).
#[derive(Debug, Clone, Serialize)]
pub struct EdgeOutage {
    pub fault: String,
    pub zone: String,
    pub at_s: f64,
    /// The ALB counted none of the AZ's targets healthy.
    pub alb_out_s: Option<f64>,
    /// Route 53's answer no longer held the AZ's node.
    pub dns_out_s: Option<f64>,
    pub alb_back_s: Option<f64>,
    pub dns_back_s: Option<f64>,
}

pub(super) fn html(e: &EdgeReport, faults: &[FaultMark], duration_s: f64) -> String {
    let mut h = String::from("<h2>Edge: ALB targets and Route 53</h2>");
    if !e.outages.is_empty() {
        h += "<table><tr><th>fault</th><th>zone</th><th>ALB took its targets out after</th><th>DNS dropped its node after</th><th>ALB back after heal</th><th>DNS back after heal</th></tr>";
        let f = |v: Option<f64>| v.map(|s| format!("{s:.0} s")).unwrap_or_else(|| "—".into());
        for o in &e.outages {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&o.fault),
                esc(&o.zone),
                f(o.alb_out_s),
                f(o.dns_out_s),
                f(o.alb_back_s),
                f(o.dns_back_s)
            );
        }
        h += "</table>";
    }
    let down = e.maintenance.iter().filter(|m| **m).count();
    if down > 0 {
        let _ = write!(h, "<p>Route 53 answered the maintenance record for <b>{down} s</b>.</p>");
    }
    h += "<p class=\"legend\"><span style=\"color:#2da44e\">— healthy targets (count)</span><span style=\"color:#0969da\">- - its ALB node in the DNS answer</span><span style=\"color:#8250df\">░ fault in force</span></p>";
    let max = e.zones.iter().map(|z| z.targets).max().unwrap_or(1).max(1) as f64;
    for z in &e.zones {
        h += &lane(z, max, faults, duration_s);
    }
    h
}

fn lane(z: &EdgeZone, max: f64, faults: &[FaultMark], duration_s: f64) -> String {
    let (w, hgt, left, top) = (1000.0_f64, 60.0_f64, 50.0_f64, 8.0_f64);
    let n = z.healthy_targets.len().max(1) as f64;
    let x = |t: f64| left + t / n * (w - left - 10.0);
    let y = |v: f64| top + hgt - v / max * hgt;
    let mut s = format!(
        "<h3>zone {}</h3><svg width=\"{w}\" height=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" style=\"background:#fff;border:1px solid #d0d7de\">",
        esc(&z.zone),
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
    let step = |values: &[u32], scale: f64| -> String {
        let mut pts = String::new();
        for (t, v) in values.iter().enumerate() {
            let v = *v as f64 * scale;
            let _ = write!(pts, "{:.1},{:.1} {:.1},{:.1} ", x(t as f64), y(v), x(t as f64 + 1.0), y(v));
        }
        pts
    };
    let _ = write!(
        s,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#0969da\" stroke-width=\"2\" stroke-dasharray=\"4 3\"/>\
         <polyline points=\"{}\" fill=\"none\" stroke=\"#2da44e\" stroke-width=\"2\"/>",
        step(&z.in_dns, max * 0.9),
        step(&z.healthy_targets, 1.0)
    );
    let _ = write!(
        s,
        "<text x=\"4\" y=\"{}\" font-size=\"11\">{max:.0}</text><text x=\"4\" y=\"{}\" font-size=\"11\">0</text><text x=\"{left}\" y=\"{}\" font-size=\"11\">0 s</text><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{duration_s:.0} s · {} targets</text></svg>",
        top + 10.0,
        top + hgt,
        top + hgt + 16.0,
        w - 10.0,
        top + hgt + 16.0,
        z.targets
    );
    s
}
