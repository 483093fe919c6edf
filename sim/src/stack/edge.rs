//! The edge tier's settings: the Application Load Balancer's listener,
//! target group and WAF rate limit, as `[service.alb]` in a stack file.
//! Every default is AWS's own, so a stack file that says nothing behaves
//! as a freshly created ALB does. **No I/O.**

use std::time::Duration;

use super::parse::Collector;
use toml::Spanned;

/// An ALB and its one target group (the API's pods or replicas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alb {
    /// The public name its HTTPS listener's certificate is issued for.
    pub domain: String,
    pub health_check: HealthCheck,
    /// How long a deregistered target keeps its in-flight requests before
    /// the ALB drops it (`deregistration_delay.timeout_seconds`).
    pub deregistration_delay: Duration,
    /// Whether each node spreads over every AZ's targets or only its own.
    pub cross_zone: bool,
    /// How long a connection may sit idle, client or target side.
    pub idle_timeout: Duration,
    /// The WAF rate-based rule in front of the listener, if any.
    pub rate_limit: Option<RateLimit>,
}

/// A target group's health check, as ELB runs it: every `interval`, a
/// request that must answer 200 within `timeout`; `unhealthy` failures in
/// a row take a target out, `healthy` successes in a row bring it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy: u32,
    pub unhealthy: u32,
}

/// A WAF rate-based rule: more than `requests` from one client address
/// within `window` are answered 429 until its rate falls again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub window: Duration,
}

/// The API's public name when a stack file gives none (`.example` is
/// reserved for exactly this, RFC 2606).
pub const DEFAULT_DOMAIN: &str = "api.voyager.example";

/// ALB target groups' defaults for HTTP targets (interval 30 s, timeout
/// 5 s, healthy 5, unhealthy 2; deregistration delay 300 s; idle timeout
/// 60 s). The path is the service's shallow health endpoint rather than
/// ALB's `/`: a deep check would take every target out at once when one
/// shared dependency is down, which is what fail-open exists to survive.
pub fn default_alb() -> Alb {
    Alb {
        domain: DEFAULT_DOMAIN.into(),
        health_check: HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            healthy: 5,
            unhealthy: 2,
        },
        deregistration_delay: Duration::from_secs(300),
        cross_zone: true,
        idle_timeout: Duration::from_secs(60),
        rate_limit: None,
    }
}

/// `[service.alb]`'s keys as written.
#[derive(Default)]
pub(crate) struct RawAlb<'a> {
    pub domain: Option<&'a Spanned<String>>,
    pub health_check_path: Option<&'a Spanned<String>>,
    pub health_check_interval: Option<&'a Spanned<String>>,
    pub health_check_timeout: Option<&'a Spanned<String>>,
    pub healthy_threshold: Option<&'a Spanned<i64>>,
    pub unhealthy_threshold: Option<&'a Spanned<i64>>,
    pub deregistration_delay: Option<&'a Spanned<String>>,
    pub cross_zone: Option<&'a Spanned<bool>>,
    pub idle_timeout: Option<&'a Spanned<String>>,
    pub rate_limit: Option<&'a Spanned<i64>>,
    pub rate_limit_window: Option<&'a Spanned<String>>,
}

pub(crate) fn seconds(
    c: &mut Collector,
    v: Option<&Spanned<String>>,
    key: &str,
    default: Duration,
    range: (u64, u64),
) -> Duration {
    let Some(v) = v else { return default };
    match crate::fixtures::parse_duration(v.get_ref()) {
        Some(d) if d >= Duration::from_secs(range.0) && d <= Duration::from_secs(range.1) => d,
        _ => {
            c.push(
                v.span(),
                format!("{key}: `{}` is not a duration from {}s to {}s", v.get_ref(), range.0, range.1),
                format!("write it like `{}s` (AWS's default)", default.as_secs()),
            );
            default
        }
    }
}

pub(crate) fn count(c: &mut Collector, v: Option<&Spanned<i64>>, key: &str, default: u32, range: (i64, i64)) -> u32 {
    let Some(v) = v else { return default };
    let n = *v.get_ref();
    if n < range.0 || n > range.1 {
        c.push(
            v.span(),
            format!("{key} must be from {} to {}", range.0, range.1),
            format!("AWS's default is {default}"),
        );
        return default;
    }
    n as u32
}

/// A health check's interval and timeout (ELB's limits: interval up to
/// 300 s, timeout up to 120 s), the timeout shorter than the interval: a
/// longer one is reported, with `why`, and half the interval used.
pub(crate) fn check_timing(
    c: &mut Collector,
    (raw_interval, raw_timeout): (Option<&Spanned<String>>, Option<&Spanned<String>>),
    defaults: &HealthCheck,
    at: std::ops::Range<usize>,
    why: &str,
) -> (Duration, Duration) {
    let interval = seconds(c, raw_interval, "health_check_interval", defaults.interval, (1, 300));
    let mut timeout = seconds(c, raw_timeout, "health_check_timeout", defaults.timeout, (1, 120));
    if timeout >= interval {
        let span = raw_timeout.or(raw_interval).map(|v| v.span()).unwrap_or(at);
        c.push(
            span,
            format!("health_check_timeout ({}s) must be shorter than health_check_interval", timeout.as_secs_f64()),
            why,
        );
        timeout = interval / 2;
    }
    (interval, timeout)
}

/// A setting that is a DNS name (a balancer's domain, a hosted zone),
/// lowercased; one that is not is reported and `default` used.
pub(crate) fn dns_name(c: &mut Collector, raw: Option<&Spanned<String>>, key: &str, default: &str) -> String {
    match raw {
        Some(v) if is_domain(v.get_ref()) => v.get_ref().to_ascii_lowercase(),
        Some(v) => {
            c.push(
                v.span(),
                format!("{key} `{}` is not a DNS name", v.get_ref()),
                format!("write a name of two labels or more, like `{default}`"),
            );
            default.to_string()
        }
        None => default.to_string(),
    }
}

/// `[service.alb]` checked against ELB's own limits (health check interval
/// 5–300 s, timeout 2–120 s and shorter than the interval, thresholds
/// 2–10, deregistration delay 0–3600 s, idle timeout 1–4000 s; a WAF
/// rate-based rule's limit at least 10 per window of 1, 2, 5 or 10
/// minutes). CI's stack files shorten the timers within those limits,
/// except that the interval may go down to 1 s so a test runs in seconds.
pub(crate) fn alb_settings(c: &mut Collector, raw: &RawAlb, at: std::ops::Range<usize>) -> Alb {
    let d = default_alb();
    let dh = &d.health_check;
    let (interval, timeout) = check_timing(
        c,
        (raw.health_check_interval, raw.health_check_timeout),
        dh,
        at,
        "ELB refuses a check that is still waiting when the next one is due; shorten the timeout",
    );
    let path = match raw.health_check_path {
        Some(p) if p.get_ref().starts_with('/') && !p.get_ref().contains(char::is_whitespace) => p.get_ref().clone(),
        Some(p) => {
            c.push(p.span(), format!("health_check_path `{}` is not a path", p.get_ref()), "write it like `/healthz`");
            dh.path.clone()
        }
        None => dh.path.clone(),
    };
    let domain = dns_name(c, raw.domain, "domain", &d.domain);
    let rate_limit = match (raw.rate_limit, raw.rate_limit_window) {
        (None, None) => None,
        (None, Some(w)) => {
            c.push(w.span(), "rate_limit_window without rate_limit", "add `rate_limit = 2000` (requests per client)");
            None
        }
        (Some(n), w) => {
            let window = match w {
                None => Duration::from_secs(300),
                Some(w) => match crate::fixtures::parse_duration(w.get_ref()) {
                    Some(d) if [60, 120, 300, 600].contains(&d.as_secs()) && d.subsec_nanos() == 0 => d,
                    _ => {
                        c.push(
                            w.span(),
                            format!("rate_limit_window `{}` is not one WAF offers", w.get_ref()),
                            "write `1m`, `2m`, `5m` (the default) or `10m`",
                        );
                        Duration::from_secs(300)
                    }
                },
            };
            Some(RateLimit { requests: count(c, Some(n), "rate_limit", 2000, (10, 2_000_000_000)), window })
        }
    };
    Alb {
        domain,
        health_check: HealthCheck {
            path,
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
        idle_timeout: seconds(c, raw.idle_timeout, "idle_timeout", d.idle_timeout, (1, 4000)),
        rate_limit,
    }
}

pub(crate) fn is_domain(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// `[service.alb]` as a stack file writes it; parses back to `a`.
pub fn alb_toml(a: &Alb) -> String {
    let h = &a.health_check;
    let mut out = format!(
        "\n[service.alb]\ndomain = \"{}\"\nhealth_check_path = \"{}\"\nhealth_check_interval = \"{}ms\"\n\
         health_check_timeout = \"{}ms\"\nhealthy_threshold = {}\nunhealthy_threshold = {}\n\
         deregistration_delay = \"{}s\"\ncross_zone = {}\nidle_timeout = \"{}ms\"\n",
        a.domain,
        h.path,
        h.interval.as_millis(),
        h.timeout.as_millis(),
        h.healthy,
        h.unhealthy,
        a.deregistration_delay.as_secs(),
        a.cross_zone,
        a.idle_timeout.as_millis(),
    );
    if let Some(r) = &a.rate_limit {
        out += &format!("rate_limit = {}\nrate_limit_window = \"{}s\"\n", r.requests, r.window.as_secs());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::stack::parse_stack;

    const HEAD: &str = "name = \"e\"\n[vpc]\ncidr = \"10.0.0.0/16\"\n[az.a]\nprivate = \"10.0.1.0/24\"\n\
                        public = \"10.0.101.0/24\"\n";

    fn parse(alb: &str) -> Result<crate::stack::Stack, String> {
        let text = format!("{HEAD}[service.alb]\n{alb}\n[[service.alb.instance]]\naz = \"a\"\n");
        parse_stack(Path::new("e.toml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn nothing_said_is_albs_defaults_and_a_node_goes_to_the_public_subnet() {
        let s = parse("").unwrap();
        assert_eq!(s.alb, Some(super::default_alb()));
        let node = &s.services[0].instances[0];
        assert_eq!((node.tier, node.name.as_str()), (crate::stack::Tier::Public, "alb-a"));
        let back = parse_stack(Path::new("again"), &s.to_toml()).unwrap();
        assert_eq!(back, s, "round trip");
    }

    #[test]
    fn settings_outside_elbs_limits_are_refused_at_their_line() {
        let e = parse("health_check_interval = \"5s\"\nhealth_check_timeout = \"5s\"").unwrap_err();
        assert!(e.contains("e.toml:9:24") && e.contains("shorter than health_check_interval"), "{e}");
        let e = parse("healthy_threshold = 11").unwrap_err();
        assert!(e.contains("healthy_threshold must be from 2 to 10"), "{e}");
        let e = parse("rate_limit = 100\nrate_limit_window = \"3m\"").unwrap_err();
        assert!(e.contains("not one WAF offers"), "{e}");
        let e = parse("domain = \"localhost\"").unwrap_err();
        assert!(e.contains("not a DNS name"), "{e}");
        let s = parse("rate_limit = 100\nrate_limit_window = \"1m\"\ncross_zone = false").unwrap();
        let a = s.alb.as_ref().unwrap();
        assert_eq!(a.rate_limit.as_ref().map(|r| (r.requests, r.window.as_secs())), Some((100, 60)));
        assert!(!a.cross_zone);
        assert_eq!(parse_stack(Path::new("again"), &s.to_toml()).unwrap(), s);
    }

    #[test]
    fn an_alb_setting_elsewhere_or_a_private_node_is_refused() {
        let text = format!("{HEAD}[service.vault]\ncross_zone = true\n[[service.vault.instance]]\naz = \"a\"\n");
        let e = parse_stack(Path::new("e.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("`cross_zone` is an ALB setting"), "{e}");
        let text = format!("{HEAD}[[service.alb.instance]]\naz = \"a\"\nsubnet = \"private\"\n");
        let e = parse_stack(Path::new("e.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("private subnet"), "{e}");
    }
}

/// Route 53 for the stack: a public hosted zone with the API's failover
/// record and a private hosted zone for the VPC, served by one regional
/// DNS server (in no AZ, as Route 53 is) that every subnet reaches at its
/// `.2`, the address AWS reserves for the VPC's resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route53 {
    pub public_zone: String,
    pub private_zone: String,
    /// How often the health checkers ask (Route 53 offers 30 s or 10 s).
    pub health_check_interval: Duration,
    /// Checks in a row that turn an endpoint unhealthy, or healthy again.
    pub failure_threshold: u32,
    /// The TTL of every record the stack writes.
    pub ttl: Duration,
}

pub fn default_route53() -> Route53 {
    Route53 {
        public_zone: "voyager.example".into(),
        private_zone: "voyager.internal".into(),
        health_check_interval: Duration::from_secs(30),
        failure_threshold: 3,
        ttl: Duration::from_secs(60),
    }
}

/// `[service.route53]`'s keys as written.
#[derive(Default)]
pub(crate) struct RawRoute53<'a> {
    pub public_zone: Option<&'a Spanned<String>>,
    pub private_zone: Option<&'a Spanned<String>>,
    pub health_check_interval: Option<&'a Spanned<String>>,
    pub failure_threshold: Option<&'a Spanned<i64>>,
    pub ttl: Option<&'a Spanned<String>>,
}

/// `[service.route53]` checked: zones are DNS names, the interval one of
/// Route 53's two (or, for a short CI run, anything from 1 s to 30 s), the
/// threshold 1–10 as Route 53 allows.
pub(crate) fn route53_settings(c: &mut Collector, raw: &RawRoute53) -> Route53 {
    let d = default_route53();
    let public_zone = dns_name(c, raw.public_zone, "public_zone", &d.public_zone);
    let private_zone = dns_name(c, raw.private_zone, "private_zone", &d.private_zone);
    if public_zone == private_zone {
        if let Some(v) = raw.private_zone {
            c.push(v.span(), "the private zone has the public zone's name", "give the VPC's zone a name of its own");
        }
    }
    Route53 {
        public_zone,
        private_zone,
        health_check_interval: seconds(
            c,
            raw.health_check_interval,
            "health_check_interval",
            d.health_check_interval,
            (1, 30),
        ),
        failure_threshold: count(c, raw.failure_threshold, "failure_threshold", d.failure_threshold, (1, 10)),
        ttl: match raw.ttl {
            Some(v) if v.get_ref() == "0s" => Duration::ZERO,
            v => seconds(c, v, "ttl", d.ttl, (1, 172_800)),
        },
    }
}

/// Whether `name` is `zone` or inside it.
pub fn in_zone(name: &str, zone: &str) -> bool {
    name == zone || name.ends_with(&format!(".{zone}"))
}

/// `[service.route53]` as a stack file writes it; parses back to `r`.
pub fn route53_toml(r: &Route53) -> String {
    format!(
        "\n[service.route53]\npublic_zone = \"{}\"\nprivate_zone = \"{}\"\nhealth_check_interval = \"{}ms\"\n\
         failure_threshold = {}\nttl = \"{}s\"\n",
        r.public_zone,
        r.private_zone,
        r.health_check_interval.as_millis(),
        r.failure_threshold,
        r.ttl.as_secs()
    )
}
