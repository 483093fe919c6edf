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
    /// 1 while the NLB's name holds the AZ's NLB node (empty without an NLB).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub in_nlb_dns: Vec<u32>,
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
    /// The NLB's name no longer held the AZ's NLB node (its DNS failover).
    pub nlb_dns_out_s: Option<f64>,
    pub nlb_dns_back_s: Option<f64>,
}

pub(super) fn html(e: &EdgeReport, faults: &[FaultMark], duration_s: f64) -> String {
    let mut h = String::from("<h2>Edge: ALB targets and Route 53</h2>");
    let nlb = e.zones.iter().any(|z| !z.in_nlb_dns.is_empty());
    if !e.outages.is_empty() {
        h += "<table><tr><th>fault</th><th>zone</th><th>ALB took its targets out after</th><th>DNS dropped its node after</th><th>ALB back after heal</th><th>DNS back after heal</th>";
        if nlb {
            h += "<th>NLB's name dropped its node after</th><th>NLB's name back after heal</th>";
        }
        h += "</tr>";
        let f = |v: Option<f64>| v.map(|s| format!("{s:.0} s")).unwrap_or_else(|| "—".into());
        for o in &e.outages {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                esc(&o.fault),
                esc(&o.zone),
                f(o.alb_out_s),
                f(o.dns_out_s),
                f(o.alb_back_s),
                f(o.dns_back_s)
            );
            if nlb {
                let _ = write!(h, "<td>{}</td><td>{}</td>", f(o.nlb_dns_out_s), f(o.nlb_dns_back_s));
            }
            h += "</tr>";
        }
        h += "</table>";
        if e.outages.iter().any(|o| o.alb_back_s.is_none() || o.nlb_dns_back_s.is_none() && nlb) {
            h += "<p class=\"legend\">— not during the run. After a heal a zone is back at the balancers only \
                  with a target in it: pods evicted from a lost zone run on in the others, as on EKS, \
                  until a descheduler spreads them again (here the soak does, between cycles).</p>";
        }
    }
    let down = e.maintenance.iter().filter(|m| **m).count();
    if down > 0 {
        let _ = write!(h, "<p>Route 53 answered the maintenance record for <b>{down} s</b>.</p>");
    }
    h += "<p class=\"legend\"><span style=\"color:#2da44e\">— healthy targets (count)</span><span style=\"color:#0969da\">- - its ALB node in the DNS answer</span><span style=\"color:#bc4c00\">· · its NLB node in the NLB's name</span><span style=\"color:#8250df\">░ fault in force</span></p>";
    let max = e.zones.iter().map(|z| z.targets).max().unwrap_or(1).max(1) as f64;
    for z in &e.zones {
        h += &lane(z, max, faults, duration_s);
    }
    h
}

fn lane(z: &EdgeZone, max: f64, faults: &[FaultMark], duration_s: f64) -> String {
    // DNS membership is 0 or 1, drawn just under the top.
    let mut series: Vec<(Vec<f64>, &str, &str)> = vec![
        (z.in_dns.iter().map(|v| *v as f64 * max * 0.9).collect(), "#0969da", " stroke-dasharray=\"4 3\""),
        (z.healthy_targets.iter().map(|v| *v as f64).collect(), "#2da44e", ""),
    ];
    if !z.in_nlb_dns.is_empty() {
        series.push((
            z.in_nlb_dns.iter().map(|v| *v as f64 * max * 0.8).collect(),
            "#bc4c00",
            " stroke-dasharray=\"1 3\"",
        ));
    }
    super::zone_lane(&z.zone, 60.0, &series, max, faults, duration_s, &format!("{} targets", z.targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_zone_gets_a_lane_with_both_lines_and_the_outage_row() {
        let z = |zone: &str| EdgeZone {
            zone: zone.into(),
            targets: 1,
            healthy_targets: vec![1, 0, 1],
            in_dns: vec![1, 1, 0],
            in_nlb_dns: vec![],
        };
        let e = EdgeReport {
            zones: vec![z("a"), z("b")],
            maintenance: vec![false, true, false],
            outages: vec![EdgeOutage {
                fault: "az-outage b".into(),
                zone: "b".into(),
                at_s: 1.0,
                alb_out_s: Some(1.0),
                dns_out_s: None,
                alb_back_s: None,
                dns_back_s: None,
                nlb_dns_out_s: None,
                nlb_dns_back_s: None,
            }],
        };
        let marks = [FaultMark { label: "az-outage b".into(), at_s: 1.0, heal_at_s: Some(2.0) }];
        let h = html(&e, &marks, 3.0);
        assert_eq!(h.matches("<polyline").count(), 4, "healthy targets and DNS, per zone");
        assert!(h.contains("<h3>zone b</h3>") && h.contains("3 s · 1 targets"), "{h}");
        assert!(h.contains("<td>1 s</td><td>—</td>") && h.contains("maintenance record for <b>1 s</b>"), "{h}");
    }
}
