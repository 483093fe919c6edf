//! The Network Load Balancer's settings, `[service.nlb]`: an L4 TCP
//! listener over the AZs' public subnets in front of the API's targets.
//! Every default is a freshly created NLB's, which differ from an ALB's:
//! cross-zone is off, and the health check is a TCP connection (interval
//! 30 s, timeout 10 s, healthy 5, unhealthy 2). **No I/O.**

use std::time::Duration;

use super::edge::{check_timing, count, dns_name, seconds, HealthCheck};
use super::parse::Collector;
use toml::Spanned;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nlb {
    /// The NLB's own DNS name, in Route 53's public zone: one address per
    /// node whose AZ has a healthy target (NLB's DNS failover).
    pub domain: String,
    /// The TCP listener's port; it forwards to the targets' own port.
    pub port: u16,
    /// A TCP health check: `path` is empty (nothing is asked, a connection
    /// is made).
    pub health_check: HealthCheck,
    pub deregistration_delay: Duration,
    /// Off by default on an NLB: each node forwards only to its own AZ.
    pub cross_zone: bool,
}

pub const DEFAULT_DOMAIN: &str = "nlb.voyager.example";

pub fn default_nlb() -> Nlb {
    Nlb {
        domain: DEFAULT_DOMAIN.into(),
        port: 80,
        health_check: HealthCheck {
            path: String::new(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            healthy: 5,
            unhealthy: 2,
        },
        deregistration_delay: Duration::from_secs(300),
        cross_zone: false,
    }
}

/// `[service.nlb]`'s keys as written.
#[derive(Default)]
pub(crate) struct RawNlb<'a> {
    pub domain: Option<&'a Spanned<String>>,
    pub port: Option<&'a Spanned<i64>>,
    pub health_check_interval: Option<&'a Spanned<String>>,
    pub health_check_timeout: Option<&'a Spanned<String>>,
    pub healthy_threshold: Option<&'a Spanned<i64>>,
    pub unhealthy_threshold: Option<&'a Spanned<i64>>,
    pub deregistration_delay: Option<&'a Spanned<String>>,
    pub cross_zone: Option<&'a Spanned<bool>>,
}

/// The keys of `[service.alb]` an NLB has no use for, and why.
pub(crate) const NOT_NLB: &[(&str, &str)] = &[
    ("health_check_path", "an NLB's TCP health check makes a connection and asks no path; remove it"),
    ("idle_timeout", "an NLB keeps idle TCP flows 350 s; remove it"),
    ("rate_limit", "WAF attaches to an ALB, not an NLB; move it under `[service.alb]`"),
    ("rate_limit_window", "WAF attaches to an ALB, not an NLB; move it under `[service.alb]`"),
];

/// `[service.nlb]` checked against ELB's limits for NLB target groups
/// (interval 5–300 s, timeout 2–120 s and shorter than the interval,
/// thresholds 2–10, deregistration delay 0–3600 s, a listener port from 1
/// to 65535); as for the ALB, CI may take the interval down to 1 s.
pub(crate) fn nlb_settings(c: &mut Collector, raw: &RawNlb, at: std::ops::Range<usize>) -> Nlb {
    let d = default_nlb();
    let dh = &d.health_check;
    let (interval, timeout) = check_timing(
        c,
        (raw.health_check_interval, raw.health_check_timeout),
        dh,
        at,
        "an NLB's default TCP check waits 10 s of its 30 s interval; shorten the timeout",
    );
    let domain = dns_name(c, raw.domain, "domain", &d.domain);
    let port = match raw.port {
        None => d.port,
        Some(p) if (1..=65535).contains(p.get_ref()) => *p.get_ref() as u16,
        Some(p) => {
            c.push(p.span(), format!("port {} is not a TCP port", p.get_ref()), "write a port from 1 to 65535");
            d.port
        }
    };
    Nlb {
        domain,
        port,
        health_check: HealthCheck {
            path: String::new(),
            interval,
            timeout,
            healthy: count(c, raw.healthy_threshold, "healthy_threshold", dh.healthy, (2, 10)),
            unhealthy: count(c, raw.unhealthy_threshold, "unhealthy_threshold", dh.unhealthy, (2, 10)),
        },
        deregistration_delay: match raw.deregistration_delay {
            Some(v) if v.get_ref() == "0s" => Duration::ZERO,
            v => seconds(c, v, "deregistration_delay", d.deregistration_delay, (1, 3600)),
        },
        cross_zone: raw.cross_zone.map(|v| *v.get_ref()).unwrap_or(d.cross_zone),
    }
}

/// `[service.nlb]` as a stack file writes it; parses back to `n`.
pub fn nlb_toml(n: &Nlb) -> String {
    let h = &n.health_check;
    format!(
        "\n[service.nlb]\ndomain = \"{}\"\nport = {}\nhealth_check_interval = \"{}ms\"\n\
         health_check_timeout = \"{}ms\"\nhealthy_threshold = {}\nunhealthy_threshold = {}\n\
         deregistration_delay = \"{}s\"\ncross_zone = {}\n",
        n.domain,
        n.port,
        h.interval.as_millis(),
        h.timeout.as_millis(),
        h.healthy,
        h.unhealthy,
        n.deregistration_delay.as_secs(),
        n.cross_zone,
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::stack::parse_stack;

    const HEAD: &str = "name = \"e\"\n[vpc]\ncidr = \"10.0.0.0/16\"\n[az.a]\nprivate = \"10.0.1.0/24\"\n\
                        public = \"10.0.101.0/24\"\n";

    fn parse(nlb: &str) -> Result<crate::stack::Stack, String> {
        let text = format!("{HEAD}[service.nlb]\n{nlb}\n[[service.nlb.instance]]\naz = \"a\"\n");
        parse_stack(Path::new("e.toml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn nothing_said_is_an_nlbs_defaults_cross_zone_off_and_a_public_node() {
        let s = parse("").unwrap();
        let n = s.nlb.as_ref().unwrap();
        assert_eq!(n, &super::default_nlb());
        assert!(!n.cross_zone);
        assert_eq!((n.health_check.interval.as_secs(), n.health_check.healthy, n.health_check.unhealthy), (30, 5, 2));
        let node = &s.services[0].instances[0];
        assert_eq!((node.tier, node.name.as_str()), (crate::stack::Tier::Public, "nlb-a"));
        assert_eq!(parse_stack(Path::new("again"), &s.to_toml()).unwrap(), s, "round trip");
        let s = parse("port = 8443\ncross_zone = true\nhealth_check_interval = \"2s\"\nhealth_check_timeout = \"1s\"")
            .unwrap();
        assert_eq!(parse_stack(Path::new("again"), &s.to_toml()).unwrap(), s, "round trip");
    }

    #[test]
    fn alb_only_keys_and_bad_values_are_refused_at_their_line() {
        let e = parse("rate_limit = 100").unwrap_err();
        assert!(e.contains("e.toml:8:14") && e.contains("not one of nlb") && e.contains("WAF attaches"), "{e}");
        let e = parse("health_check_path = \"/\"").unwrap_err();
        assert!(e.contains("asks no path"), "{e}");
        let e = parse("port = 70000").unwrap_err();
        assert!(e.contains("port 70000 is not a TCP port"), "{e}");
        let e = parse("health_check_interval = \"10s\"").unwrap_err();
        assert!(e.contains("shorter than health_check_interval"), "the default 10 s timeout\n{e}");
        let text = format!("{HEAD}[service.vault]\nport = 1\n[[service.vault.instance]]\naz = \"a\"\n");
        let e = parse_stack(Path::new("e.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("`port` is an NLB setting"), "{e}");
        let text = format!("{HEAD}[[service.nlb.instance]]\naz = \"a\"\nsubnet = \"private\"\n");
        let e = parse_stack(Path::new("e.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("private subnet"), "{e}");
    }
}
