//! Reading a stack file: TOML with spans in, a validated [`Stack`] or a list of
//! problems with file, line and column out. Pure: the caller reads the file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::cidr::Cidr;
use super::kubernetes::{self as k8s, Kubernetes, NodeGroup, Taint};
use super::model::{
    Az, Instance, Rds, Service, ServiceKind, Stack, Tier, DEFAULT_ARCHIVE_TIMEOUT, DEFAULT_FAILOVER_DETECTION,
};

/// Addresses below this offset in a subnet are left for the gateway and for
/// infrastructure the harness may add (AWS reserves the first four too).
pub const FIRST_DERIVED_HOST: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub help: String,
}

/// Everything wrong with one stack file. Shown all at once, so a user fixes a
/// file in one pass rather than one error per run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct StackError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}\n  help: {}", self.file.display(), p.line, p.col, p.message, p.help)?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStack {
    name: Option<Spanned<String>>,
    vpc: Spanned<RawVpc>,
    az: Spanned<BTreeMap<Spanned<String>, Spanned<RawAz>>>,
    #[serde(default)]
    service: BTreeMap<Spanned<String>, Spanned<RawService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVpc {
    cidr: Spanned<String>,
    inter_az_latency: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAz {
    private: Spanned<String>,
    public: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    instance: Vec<Spanned<RawInstance>>,
    // Kubernetes only: node groups and the cluster's settings.
    #[serde(default)]
    node_group: Vec<Spanned<RawNodeGroup>>,
    node_monitor_grace_period: Option<Spanned<String>>,
    not_ready_toleration: Option<Spanned<String>>,
    pods_per_node: Option<Spanned<i64>>,
    service_cidr: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    // PostgreSQL only: RDS's control plane.
    failover_detection: Option<Spanned<String>>,
    archive_timeout: Option<Spanned<String>>,
    // The ALB only: its listener, target group and WAF rule.
    domain: Option<Spanned<String>>,
    health_check_path: Option<Spanned<String>>,
    health_check_interval: Option<Spanned<String>>,
    health_check_timeout: Option<Spanned<String>>,
    healthy_threshold: Option<Spanned<i64>>,
    unhealthy_threshold: Option<Spanned<i64>>,
    deregistration_delay: Option<Spanned<String>>,
    cross_zone: Option<Spanned<bool>>,
    idle_timeout: Option<Spanned<String>>,
    rate_limit: Option<Spanned<i64>>,
    rate_limit_window: Option<Spanned<String>>,
    // The NLB only: its TCP listener's port (the rest it shares with the ALB).
    port: Option<Spanned<i64>>,
    // Route 53 only (and `health_check_interval`, which the ALB shares).
    public_zone: Option<Spanned<String>>,
    private_zone: Option<Spanned<String>>,
    failure_threshold: Option<Spanned<i64>>,
    ttl: Option<Spanned<String>>,
}

impl RawService {
    fn route53(&self) -> super::edge::RawRoute53<'_> {
        super::edge::RawRoute53 {
            public_zone: self.public_zone.as_ref(),
            private_zone: self.private_zone.as_ref(),
            health_check_interval: self.health_check_interval.as_ref(),
            failure_threshold: self.failure_threshold.as_ref(),
            ttl: self.ttl.as_ref(),
        }
    }

    fn route53_spans(&self) -> Vec<(&'static str, Range<usize>)> {
        let mut out: Vec<(&'static str, Range<usize>)> =
            [("public_zone", &self.public_zone), ("private_zone", &self.private_zone), ("ttl", &self.ttl)]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v.span())))
                .collect();
        out.extend(self.failure_threshold.as_ref().map(|v| ("failure_threshold", v.span())));
        out
    }

    fn alb(&self) -> super::edge::RawAlb<'_> {
        super::edge::RawAlb {
            domain: self.domain.as_ref(),
            health_check_path: self.health_check_path.as_ref(),
            health_check_interval: self.health_check_interval.as_ref(),
            health_check_timeout: self.health_check_timeout.as_ref(),
            healthy_threshold: self.healthy_threshold.as_ref(),
            unhealthy_threshold: self.unhealthy_threshold.as_ref(),
            deregistration_delay: self.deregistration_delay.as_ref(),
            cross_zone: self.cross_zone.as_ref(),
            idle_timeout: self.idle_timeout.as_ref(),
            rate_limit: self.rate_limit.as_ref(),
            rate_limit_window: self.rate_limit_window.as_ref(),
        }
    }

    fn nlb(&self) -> super::nlb::RawNlb<'_> {
        super::nlb::RawNlb {
            domain: self.domain.as_ref(),
            port: self.port.as_ref(),
            health_check_interval: self.health_check_interval.as_ref(),
            health_check_timeout: self.health_check_timeout.as_ref(),
            healthy_threshold: self.healthy_threshold.as_ref(),
            unhealthy_threshold: self.unhealthy_threshold.as_ref(),
            deregistration_delay: self.deregistration_delay.as_ref(),
            cross_zone: self.cross_zone.as_ref(),
        }
    }

    /// The span of every ALB key given, for refusing them elsewhere.
    fn alb_spans(&self) -> Vec<(&'static str, Range<usize>)> {
        let strings = [
            ("domain", &self.domain),
            ("health_check_path", &self.health_check_path),
            ("health_check_interval", &self.health_check_interval),
            ("health_check_timeout", &self.health_check_timeout),
            ("deregistration_delay", &self.deregistration_delay),
            ("idle_timeout", &self.idle_timeout),
            ("rate_limit_window", &self.rate_limit_window),
        ];
        let mut out: Vec<(&'static str, Range<usize>)> =
            strings.into_iter().filter_map(|(k, v)| v.as_ref().map(|v| (k, v.span()))).collect();
        for (k, v) in [
            ("healthy_threshold", &self.healthy_threshold),
            ("unhealthy_threshold", &self.unhealthy_threshold),
            ("rate_limit", &self.rate_limit),
        ] {
            out.extend(v.as_ref().map(|v| (k, v.span())));
        }
        out.extend(self.cross_zone.as_ref().map(|v| ("cross_zone", v.span())));
        out
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNodeGroup {
    name: Spanned<String>,
    #[serde(default)]
    instance_types: Vec<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    taints: Vec<Spanned<String>>,
    /// Nodes per AZ, e.g. `{ a = 1, b = 1, c = 1 }`.
    #[serde(default)]
    size: BTreeMap<Spanned<String>, Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    name: Option<Spanned<String>>,
    az: Spanned<String>,
    subnet: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    role: Option<Spanned<String>>,
    /// A Kubernetes worker's node group.
    group: Option<Spanned<String>>,
}

/// Turns byte offsets into 1-based line and column (in characters).
pub(crate) struct Lines<'a> {
    pub(crate) text: &'a str,
}

impl Lines<'_> {
    pub(crate) fn at(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

pub(crate) struct Collector<'a> {
    pub(crate) lines: Lines<'a>,
    pub(crate) problems: Vec<Problem>,
}

impl Collector<'_> {
    pub(crate) fn push(&mut self, span: Range<usize>, message: impl Into<String>, help: impl Into<String>) {
        let (line, col) = self.lines.at(span.start);
        self.problems.push(Problem { line, col, message: message.into(), help: help.into() });
    }

    fn cidr(&mut self, s: &Spanned<String>, what: &str) -> Option<Cidr> {
        match s.get_ref().parse::<Cidr>() {
            Ok(c) => Some(c),
            Err(e) => {
                self.push(s.span(), format!("{what}: {e}"), "write a network address and prefix, like `10.0.1.0/24`");
                None
            }
        }
    }
}

/// Deserialize a TOML file, turning a syntax or shape error into a
/// [`StackError`] with its position and a hint. Shared by every file format
/// the simulator reads (stack files, fixtures).
pub fn from_toml<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> Result<T, StackError> {
    toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        let help = if message.contains("unknown field") {
            match unknown_field_suggestion(&message) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "remove the key or fix its spelling; the keys allowed here are listed above".to_string(),
            }
        } else if message.contains("missing field") {
            "add the missing key; the files in fixtures/ show complete examples".to_string()
        } else if message.contains("duplicate key") {
            "each key may appear once; rename or remove the second one".to_string()
        } else {
            "fix the TOML syntax at this point".to_string()
        };
        let mut c = Collector { lines: Lines { text }, problems: vec![] };
        c.push(span, message, help);
        StackError { file: file.to_path_buf(), problems: c.problems }
    })
}

/// Parse and validate a stack file's text. `file` is only used in messages.
pub fn parse_stack(file: &Path, text: &str) -> Result<Stack, StackError> {
    let mut c = Collector { lines: Lines { text }, problems: vec![] };
    let raw: RawStack = from_toml(file, text)?;
    let stack = validate(&mut c, raw);
    match stack {
        Some(s) if c.problems.is_empty() => Ok(s),
        _ => Err(StackError { file: file.to_path_buf(), problems: c.problems }),
    }
}

/// The closest word within two edits, for "did you mean" hints.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// serde says "unknown field `adress`, expected one of `name`, `az`, ...".
fn unknown_field_suggestion(message: &str) -> Option<String> {
    let mut quoted = message.split('`').skip(1).step_by(2);
    let field = quoted.next()?;
    let expected: Vec<&str> = quoted.collect();
    did_you_mean(field, expected).map(str::to_string)
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
}

fn is_private_range(c: &Cidr) -> bool {
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        .iter()
        .any(|r| r.parse::<Cidr>().expect("constant").contains_net(c))
}

fn validate(c: &mut Collector, raw: RawStack) -> Option<Stack> {
    let name = match &raw.name {
        Some(n) if !valid_name(n.get_ref()) || n.get_ref().len() > 32 => {
            c.push(
                n.span(),
                format!("stack name `{}` is not usable in container names", n.get_ref()),
                "use up to 32 lowercase letters, digits and `-`, starting with a letter",
            );
            None
        }
        Some(n) => Some(n.get_ref().clone()),
        None => Some("voyager".to_string()),
    };

    let vpc = c.cidr(&raw.vpc.get_ref().cidr, "vpc.cidr");
    if let Some(v) = vpc {
        if !is_private_range(&v) {
            c.push(
                raw.vpc.get_ref().cidr.span(),
                format!("VPC {v} is not private address space"),
                "use a range inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16, as AWS VPCs do",
            );
        }
    }

    let latency = match &raw.vpc.get_ref().inter_az_latency {
        None => Some(super::model::DEFAULT_INTER_AZ_LATENCY),
        Some(l) => match crate::fixtures::parse_duration(l.get_ref()) {
            Some(d) if d <= Duration::from_secs(1) => Some(d),
            Some(_) => {
                c.push(
                    l.span(),
                    "vpc.inter_az_latency over 1s is not a region",
                    "AZs of a region are milliseconds apart; use e.g. `1ms`, or `0ms` for none",
                );
                None
            }
            None => {
                c.push(
                    l.span(),
                    format!("vpc.inter_az_latency: `{}` is not a duration", l.get_ref()),
                    "write it like `1ms`, `500us`, or `0ms` for none",
                );
                None
            }
        },
    };

    // AZs and their subnets.
    let mut azs = vec![];
    let mut subnets: Vec<(Cidr, String, Range<usize>)> = vec![];
    if raw.az.get_ref().is_empty() {
        c.push(
            raw.az.span(),
            "no availability zones declared",
            "declare at least one, e.g. `[az.a]` with `private` and `public` subnets",
        );
    }
    for (az_name, az) in raw.az.get_ref() {
        if !valid_name(az_name.get_ref()) || az_name.get_ref().len() > 8 {
            c.push(
                az_name.span(),
                format!("AZ name `{}` is not usable", az_name.get_ref()),
                "use a short lowercase name such as `a`, `b` or `c`",
            );
        }
        let mut nets = [None, None];
        for (i, (tier, s)) in
            [(Tier::Private, &az.get_ref().private), (Tier::Public, &az.get_ref().public)].into_iter().enumerate()
        {
            let label = format!("az.{}.{}", az_name.get_ref(), tier);
            let Some(net) = c.cidr(s, &label) else {
                continue;
            };
            if let Some(v) = vpc {
                if !v.contains_net(&net) {
                    c.push(
                        s.span(),
                        format!("{label} {net} is outside the VPC {v}"),
                        format!("pick a subnet inside {v}"),
                    );
                    continue;
                }
            }
            if net.prefix() > 28 {
                c.push(
                    s.span(),
                    format!("{label} {net} is too small"),
                    "use a /28 or larger subnet (Docker needs room for its gateway)",
                );
                continue;
            }
            if let Some((other_net, other, _)) = subnets.iter().find(|(o, _, _)| o.overlaps(&net)) {
                c.push(
                    s.span(),
                    format!("{label} {net} overlaps {other} {other_net}"),
                    "give every subnet its own range inside the VPC",
                );
                continue;
            }
            subnets.push((net, label, s.span()));
            nets[i] = Some(net);
        }
        if let [Some(private), Some(public)] = nets {
            azs.push(Az { name: az_name.get_ref().clone(), private, public });
        }
    }
    let az_names: Vec<String> = raw.az.get_ref().keys().map(|k| k.get_ref().clone()).collect();

    // Services and instances: explicit addresses first, so derived ones avoid them.
    let mut taken: HashMap<Ipv4Addr, String> = HashMap::new();
    let mut names: HashSet<String> = HashSet::new();
    let mut services = vec![];
    struct Pending {
        kind: ServiceKind,
        name: Option<String>,
        az: String,
        tier: Tier,
        address: Option<Ipv4Addr>,
        role: String,
        group: Option<String>,
        span: Range<usize>,
        address_span: Option<Range<usize>>,
    }
    let mut pending: Vec<Pending> = vec![];
    let mut kubernetes: Option<Kubernetes> = None;
    let mut rds: Option<Rds> = None;
    let mut alb: Option<super::edge::Alb> = None;
    let mut nlb: Option<super::nlb::Nlb> = None;
    let mut route53: Option<super::edge::Route53> = None;
    for (svc_name, svc) in &raw.service {
        let kind = match svc_name.get_ref().parse::<ServiceKind>() {
            Ok(k) => k,
            Err(e) => {
                let help = match did_you_mean(svc_name.get_ref(), ServiceKind::ALL.iter().map(|k| k.as_str())) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "remove the service or fix its name".to_string(),
                };
                c.push(svc_name.span(), e, help);
                continue;
            }
        };
        if svc.get_ref().instance.is_empty() && !matches!(kind, ServiceKind::Kubernetes | ServiceKind::Route53) {
            c.push(
                svc.span(),
                format!("service `{kind}` has no instances"),
                format!("add `[[service.{kind}.instance]]` with an `az`, or remove the service"),
            );
        }
        let kube = if kind == ServiceKind::Kubernetes {
            Some(kubernetes_settings(c, svc.get_ref(), vpc, &az_names))
        } else {
            reject_kubernetes_keys(c, kind, svc.get_ref());
            None
        };
        if kind == ServiceKind::Alb {
            alb = Some(super::edge::alb_settings(c, &svc.get_ref().alb(), svc.span()));
        } else if kind == ServiceKind::Nlb {
            nlb = Some(super::nlb::nlb_settings(c, &svc.get_ref().nlb(), svc.span()));
            for (key, span) in svc.get_ref().alb_spans() {
                if let Some((_, why)) = super::nlb::NOT_NLB.iter().find(|(k, _)| *k == key) {
                    c.push(span, format!("`{key}` is not one of nlb's settings"), *why);
                }
            }
        } else {
            for (key, span) in svc.get_ref().alb_spans() {
                if kind == ServiceKind::Route53 && key == "health_check_interval" {
                    continue;
                }
                c.push(span, format!("`{key}` is an ALB setting, not one of {kind}"), "move it under `[service.alb]`");
            }
        }
        if let (Some(p), false) = (&svc.get_ref().port, kind == ServiceKind::Nlb) {
            c.push(p.span(), format!("`port` is an NLB setting, not one of {kind}"), "move it under `[service.nlb]`");
        }
        if kind == ServiceKind::Route53 {
            route53 = Some(super::edge::route53_settings(c, &svc.get_ref().route53()));
            if let Some(inst) = svc.get_ref().instance.first() {
                c.push(
                    inst.span(),
                    "Route 53 has no instances: it is regional, in no AZ",
                    "remove `[[service.route53.instance]]`; its server answers at every subnet's .2",
                );
            }
        } else {
            for (key, span) in svc.get_ref().route53_spans() {
                c.push(
                    span,
                    format!("`{key}` is a Route 53 setting, not one of {kind}"),
                    "move it under `[service.route53]`",
                );
            }
        }
        if kind == ServiceKind::Postgres {
            let r = svc.get_ref();
            rds = Some(Rds {
                failover_detection: duration_key(
                    c,
                    &r.failover_detection,
                    "failover_detection",
                    DEFAULT_FAILOVER_DETECTION,
                    Duration::from_secs(600),
                ),
                // PostgreSQL's own ceiling for archive_timeout is 2^30 s;
                // a day is already far past any RPO anyone wants.
                archive_timeout: duration_key(
                    c,
                    &r.archive_timeout,
                    "archive_timeout",
                    DEFAULT_ARCHIVE_TIMEOUT,
                    Duration::from_secs(86_400),
                ),
            });
        } else {
            let raw = svc.get_ref();
            for (key, v) in [("failover_detection", &raw.failover_detection), ("archive_timeout", &raw.archive_timeout)]
            {
                if let Some(v) = v {
                    c.push(
                        v.span(),
                        format!("`{key}` is a PostgreSQL setting, not one of {kind}"),
                        "move it under `[service.postgres]`",
                    );
                }
            }
        }
        let mut roles_seen: Vec<String> = vec![];
        for inst in &svc.get_ref().instance {
            let inst_ref = inst.get_ref();
            let role = match &inst_ref.role {
                None => kind.roles()[0].to_string(),
                Some(r) if kind.roles().contains(&r.get_ref().as_str()) => r.get_ref().clone(),
                Some(r) => {
                    let help = match did_you_mean(r.get_ref(), kind.roles().iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("leave `role` out for a {}", kind.roles()[0]),
                    };
                    c.push(
                        r.span(),
                        format!("`{}` is not a role of {kind}; its roles are {}", r.get_ref(), kind.roles().join(", ")),
                        help,
                    );
                    continue;
                }
            };
            roles_seen.push(role.clone());
            let az = inst_ref.az.get_ref();
            if !az_names.contains(az) {
                c.push(
                    inst_ref.az.span(),
                    format!("unknown AZ `{az}`"),
                    format!("use one of the declared AZs: {}", az_names.join(", ")),
                );
                continue;
            }
            let tier = match &inst_ref.subnet {
                // Load balancers face the internet; everything else is private.
                None if kind.faces_the_internet() => Tier::Public,
                None => Tier::Private,
                Some(s) => match s.get_ref().parse::<Tier>() {
                    Ok(t) => t,
                    Err(e) => {
                        c.push(s.span(), e, "write `subnet = \"private\"` or `subnet = \"public\"`");
                        continue;
                    }
                },
            };
            if kind.faces_the_internet() && tier == Tier::Private {
                let span = inst_ref.subnet.as_ref().map(|s| s.span()).unwrap_or(inst.span());
                let lb = kind.as_str().to_ascii_uppercase();
                c.push(
                    span,
                    format!("an internet-facing {lb} node in a private subnet"),
                    format!("an {lb}'s nodes sit in its AZs' public subnets; leave `subnet` out"),
                );
                continue;
            }
            if kind == ServiceKind::Kubernetes && tier == Tier::Public {
                let span = inst_ref.subnet.as_ref().map(|s| s.span()).unwrap_or(inst.span());
                c.push(
                    span,
                    "a Kubernetes node in a public subnet",
                    "EKS nodes sit in private subnets (the load balancers are public); leave `subnet` out",
                );
                continue;
            }
            let group = match (&inst_ref.group, &kube) {
                (Some(g), None) => {
                    c.push(g.span(), format!("`group` is only for Kubernetes workers, not {kind}"), "remove `group`");
                    continue;
                }
                (Some(g), Some(k)) if role != "worker" => {
                    let _ = k;
                    c.push(
                        g.span(),
                        format!("a {role} node belongs to no node group"),
                        "remove `group`, or make the node `role = \"worker\"`",
                    );
                    continue;
                }
                (Some(g), Some(k)) => {
                    if !k.node_groups.iter().any(|n| &n.name == g.get_ref()) {
                        let declared: Vec<&str> = k.node_groups.iter().map(|n| n.name.as_str()).collect();
                        c.push(
                            g.span(),
                            format!("unknown node group `{}`", g.get_ref()),
                            if declared.is_empty() {
                                "declare it with `[[service.kubernetes.node_group]]`".to_string()
                            } else {
                                format!("declared node groups: {}", declared.join(", "))
                            },
                        );
                        continue;
                    }
                    Some(g.get_ref().clone())
                }
                (None, Some(_)) if role == "worker" => {
                    c.push(
                        inst.span(),
                        "a Kubernetes worker without a node group",
                        "add `group = \"...\"` naming a `[[service.kubernetes.node_group]]`",
                    );
                    continue;
                }
                (None, _) => None,
            };
            let address = match &inst_ref.address {
                None => None,
                Some(a) => match a.get_ref().parse::<Ipv4Addr>() {
                    Ok(ip) => Some((ip, a.span())),
                    Err(_) => {
                        c.push(
                            a.span(),
                            format!("`{}` is not an IPv4 address", a.get_ref()),
                            "write an address such as `10.0.1.10`, or leave `address` out to have one derived",
                        );
                        continue;
                    }
                },
            };
            if let (Some((ip, span)), Some(az)) = (&address, azs.iter().find(|z| &z.name == az)) {
                let net = az.subnet(tier);
                let off = net.offset_of(*ip);
                if off.is_none() {
                    c.push(
                        span.clone(),
                        format!("address {ip} is outside its subnet {net} (az {}, {tier})", az.name),
                        format!("pick an address inside {net}, or leave `address` out"),
                    );
                    continue;
                }
                if off.is_some_and(|o| o < FIRST_DERIVED_HOST) || *ip == net.broadcast() {
                    c.push(
                        span.clone(),
                        format!("address {ip} is reserved in {net} (its first {FIRST_DERIVED_HOST} addresses hold the gateway and the simulator's own parts, the last is broadcast)"),
                        format!("pick an address from {} to {}", net.nth(FIRST_DERIVED_HOST), net.nth(net.size() as u32 - 2)),
                    );
                    continue;
                }
                let owner = match &inst_ref.name {
                    Some(n) => format!("`{}`", n.get_ref()),
                    None => format!("the {kind} instance at line {}", c.lines.at(inst.span().start).0),
                };
                if let Some(prev) = taken.insert(*ip, owner) {
                    c.push(
                        span.clone(),
                        format!("address {ip} is already used by {prev}"),
                        "give each instance its own address",
                    );
                    continue;
                }
            }
            let name = match &inst_ref.name {
                Some(n) if !valid_name(n.get_ref()) || n.get_ref().len() > 40 => {
                    c.push(
                        n.span(),
                        format!("instance name `{}` is not usable", n.get_ref()),
                        "use lowercase letters, digits and `-`, starting with a letter",
                    );
                    continue;
                }
                Some(n) => {
                    if !names.insert(n.get_ref().clone()) {
                        c.push(
                            n.span(),
                            format!("duplicate instance name `{}`", n.get_ref()),
                            "give each instance a unique `name`",
                        );
                        continue;
                    }
                    Some(n.get_ref().clone())
                }
                None => None,
            };
            pending.push(Pending {
                kind,
                name,
                az: az.clone(),
                tier,
                address: address.as_ref().map(|(ip, _)| *ip),
                role,
                group,
                span: inst.span(),
                address_span: address.map(|(_, s)| s),
            });
        }
        // Node groups' nodes after the explicit ones, group by group, AZ by AZ.
        if let Some(k) = &kube {
            for (group, raw_group) in k.node_groups.iter().zip(&svc.get_ref().node_group) {
                for (az, count) in &raw_group.get_ref().size {
                    for _ in 0..count.get_ref().clamp(&0, &MAX_NODES_PER_GROUP_AZ).to_owned() {
                        roles_seen.push("worker".into());
                        pending.push(Pending {
                            kind,
                            name: None,
                            az: az.get_ref().clone(),
                            tier: Tier::Private,
                            address: None,
                            role: "worker".into(),
                            group: Some(group.name.clone()),
                            span: raw_group.span(),
                            address_span: None,
                        });
                    }
                }
            }
        }
        if kube.is_some() {
            kubernetes = kube;
        }
        let count = |r: &str| roles_seen.iter().filter(|x| *x == r).count();
        match kind {
            ServiceKind::Kafka if count("broker") == 0 && !roles_seen.is_empty() => {
                c.push(svc.span(), "Kafka has controllers but no broker", "add an instance without `role` (a broker)")
            }
            ServiceKind::Kubernetes if count("control-plane") % 2 == 0 => c.push(
                svc.span(),
                format!("Kubernetes needs an odd number of control-plane nodes, this file has {}", count("control-plane")),
                "declare one `role = \"control-plane\"` instance per AZ (three, as EKS runs), or one for a small stack: etcd needs a majority",
            ),
            ServiceKind::Postgres if count("primary") != 1 && !roles_seen.is_empty() => c.push(
                svc.span(),
                format!("PostgreSQL needs exactly one primary, this file has {}", count("primary")),
                "mark one instance `role = \"primary\"` (the default) and the others `standby` or `replica`",
            ),
            _ => {}
        }
    }

    // Kubernetes nodes keep blocks of their private subnet for their pods,
    // taken from its top: no instance may sit in one.
    let mut pod_blocks: Vec<(Cidr, String)> = vec![];
    if let Some(k) = &kubernetes {
        for az in &azs {
            let nodes = pending.iter().filter(|p| p.kind == ServiceKind::Kubernetes && p.az == az.name).count();
            for i in 0..nodes {
                match k8s::pod_block(az.private, k.pods_per_node, i) {
                    Some(b) if b.network() > az.private.nth(FIRST_DERIVED_HOST) => {
                        pod_blocks.push((b, format!("the pods of Kubernetes node {} in az {}", i + 1, az.name)))
                    }
                    _ => {
                        c.push(
                            raw.service.iter().find(|(n, _)| n.get_ref() == "kubernetes").map(|(_, s)| s.span()).unwrap_or(0..0),
                            format!(
                                "{nodes} Kubernetes nodes in az {} need {} pod addresses; its private subnet {} has no room for them",
                                az.name,
                                nodes as u64 * k.pods_per_node as u64,
                                az.private
                            ),
                            "use a smaller `pods_per_node`, fewer nodes in that AZ, or a larger subnet",
                        );
                        break;
                    }
                }
            }
        }
        for (ip, owner) in &taken {
            if let Some((b, whose)) = pod_blocks.iter().find(|(b, _)| b.contains(*ip)) {
                let span = pending
                    .iter()
                    .find(|p| p.address == Some(*ip))
                    .map(|p| p.address_span.clone().unwrap_or(p.span.clone()))
                    .unwrap_or(0..0);
                c.push(
                    span,
                    format!("address {ip} of {owner} is in {b}, kept for {whose}"),
                    format!(
                        "pick an address below {}",
                        pod_blocks.iter().map(|(b, _)| b.network()).min().unwrap_or(b.network())
                    ),
                );
            }
        }
    }

    // Derived names and addresses in a fixed order (services by name, then
    // instances as written), so the same file always gives the same stack.
    let mut by_kind: BTreeMap<ServiceKind, Vec<Instance>> = BTreeMap::new();
    for p in pending {
        let Some(az) = azs.iter().find(|z| z.name == p.az) else {
            continue;
        };
        let net = az.subnet(p.tier);
        let name = p.name.unwrap_or_else(|| {
            let base = p.kind.derived_name(&p.role, p.group.as_deref(), &p.az);
            let mut n = 1;
            let mut candidate = base.clone();
            while names.contains(&candidate) {
                n += 1;
                candidate = format!("{base}-{n}");
            }
            names.insert(candidate.clone());
            candidate
        });
        let address = match p.address {
            Some(a) => a,
            None => {
                let free = (FIRST_DERIVED_HOST..net.size() as u32 - 1)
                    .map(|i| net.nth(i))
                    .find(|ip| !taken.contains_key(ip) && !pod_blocks.iter().any(|(b, _)| b.contains(*ip)));
                match free {
                    Some(ip) => {
                        taken.insert(ip, name.clone());
                        ip
                    }
                    None => {
                        c.push(
                            p.span,
                            format!("no free address left in {net} for {name}"),
                            "use a larger subnet or fewer instances",
                        );
                        continue;
                    }
                }
            }
        };
        by_kind.entry(p.kind).or_default().push(Instance {
            name,
            az: p.az,
            tier: p.tier,
            address,
            role: p.role,
            group: p.group,
        });
    }
    if route53.is_some() {
        // Route 53 is a service of the stack with no instance of its own.
        by_kind.entry(ServiceKind::Route53).or_default();
    }
    for (kind, instances) in by_kind {
        services.push(Service { kind, instances });
    }

    if let Some(r) = &route53 {
        let domains = [("alb", alb.as_ref().map(|a| &a.domain)), ("nlb", nlb.as_ref().map(|n| &n.domain))];
        for (svc, domain) in domains {
            let Some(domain) = domain.filter(|d| !super::edge::in_zone(d, &r.public_zone)) else { continue };
            let at = raw.service.iter().find(|(k, _)| k.get_ref() == svc).map(|(_, v)| v.span()).unwrap_or(0..0);
            c.push(
                at,
                format!(
                    "the {}'s domain {domain} is not in Route 53's public zone {}",
                    svc.to_uppercase(),
                    r.public_zone
                ),
                "make `domain` a name under `public_zone`",
            );
        }
        if let (Some(a), Some(n)) = (&alb, &nlb) {
            if a.domain == n.domain {
                let at = raw.service.iter().find(|(k, _)| k.get_ref() == "nlb").map(|(_, v)| v.span()).unwrap_or(0..0);
                c.push(at, format!("the NLB's domain {} is the ALB's", n.domain), "give the NLB a name of its own");
            }
        }
    }
    Some(Stack {
        name: name?,
        vpc: vpc?,
        inter_az_latency: latency?,
        azs,
        services,
        kubernetes,
        rds,
        alb,
        nlb,
        route53,
    })
}

/// Most nodes one node group may have in one AZ (each is a container).
const MAX_NODES_PER_GROUP_AZ: i64 = 8;

fn duration_key(
    c: &mut Collector,
    v: &Option<Spanned<String>>,
    key: &str,
    default: Duration,
    max: Duration,
) -> Duration {
    let Some(v) = v else { return default };
    match crate::fixtures::parse_duration(v.get_ref()) {
        Some(d) if !d.is_zero() && d <= max => d,
        Some(_) => {
            c.push(
                v.span(),
                format!("{key} must be above 0s and at most {}s", max.as_secs()),
                format!("write it like `{}s`", default.as_secs()),
            );
            default
        }
        None => {
            c.push(
                v.span(),
                format!("{key}: `{}` is not a duration", v.get_ref()),
                format!("write it like `{}s` (the production default) or `10s` for a short CI run", default.as_secs()),
            );
            default
        }
    }
}

/// `[service.kubernetes]`: its settings and node groups, checked.
fn kubernetes_settings(c: &mut Collector, raw: &RawService, vpc: Option<Cidr>, az_names: &[String]) -> Kubernetes {
    let node_monitor_grace_period = duration_key(
        c,
        &raw.node_monitor_grace_period,
        "node_monitor_grace_period",
        k8s::DEFAULT_NODE_MONITOR_GRACE_PERIOD,
        Duration::from_secs(600),
    );
    let not_ready_toleration = duration_key(
        c,
        &raw.not_ready_toleration,
        "not_ready_toleration",
        k8s::DEFAULT_NOT_READY_TOLERATION,
        Duration::from_secs(3600),
    );
    let pods_per_node = match &raw.pods_per_node {
        None => k8s::DEFAULT_PODS_PER_NODE,
        Some(n) if [8, 16, 32, 64].contains(n.get_ref()) => *n.get_ref() as u32,
        Some(n) => {
            c.push(
                n.span(),
                format!("pods_per_node = {} is not a block of the subnet", n.get_ref()),
                "use 8, 16, 32 or 64: each node's pod addresses are one aligned block of its subnet",
            );
            k8s::DEFAULT_PODS_PER_NODE
        }
    };
    let default_cidr = vpc.map(k8s::service_cidr_for).unwrap_or_else(|| "10.100.0.0/16".parse().expect("constant"));
    let service_cidr = match &raw.service_cidr {
        None => default_cidr,
        Some(s) => match c.cidr(s, "service_cidr") {
            Some(n) if vpc.is_some_and(|v| v.overlaps(&n)) => {
                c.push(
                    s.span(),
                    format!("service_cidr {n} overlaps the VPC"),
                    format!("ClusterIPs are not VPC addresses; leave it out for {default_cidr}"),
                );
                default_cidr
            }
            Some(n) if n.prefix() > 24 || n.prefix() < 12 => {
                c.push(s.span(), format!("service_cidr {n} is not /12 to /24"), "use a /16, as EKS does");
                default_cidr
            }
            Some(n) => n,
            None => default_cidr,
        },
    };
    let region = match &raw.region {
        None => k8s::DEFAULT_REGION.to_string(),
        Some(r) if valid_name(r.get_ref()) && r.get_ref().len() <= 24 => r.get_ref().clone(),
        Some(r) => {
            c.push(
                r.span(),
                format!("`{}` is not a region name", r.get_ref()),
                "write it as AWS does, like `us-east-1`",
            );
            k8s::DEFAULT_REGION.to_string()
        }
    };
    let mut node_groups: Vec<NodeGroup> = vec![];
    for g in &raw.node_group {
        let g = g.get_ref();
        let name = g.name.get_ref();
        if !valid_name(name) || name.len() > 24 {
            c.push(
                g.name.span(),
                format!("node group name `{name}` is not usable"),
                "use up to 24 lowercase letters, digits and `-`, starting with a letter (it is part of node names)",
            );
        } else if node_groups.iter().any(|n| &n.name == name) {
            c.push(g.name.span(), format!("duplicate node group `{name}`"), "give each node group its own name");
        }
        let mut instance_types = vec![];
        for t in &g.instance_types {
            if t.get_ref().is_empty()
                || !t.get_ref().chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '.' || ch == '-')
            {
                c.push(
                    t.span(),
                    format!("`{}` is not an instance type", t.get_ref()),
                    "write EC2 types like `m5.large`",
                );
            } else {
                instance_types.push(t.get_ref().clone());
            }
        }
        let mut labels = BTreeMap::new();
        for (k, v) in &g.labels {
            if let Err(e) = k8s::check_label_key(k.get_ref()) {
                c.push(k.span(), format!("label {e}"), "label keys are like `node-type` or `example.com/tier`");
            } else if let Err(e) = k8s::check_label_value(v.get_ref()) {
                c.push(v.span(), format!("label {e}"), "label values are up to 63 letters, digits, `-`, `_` and `.`");
            } else {
                labels.insert(k.get_ref().clone(), v.get_ref().clone());
            }
        }
        let mut taints = vec![];
        for t in &g.taints {
            match t.get_ref().parse::<Taint>() {
                Ok(taint) => taints.push(taint),
                Err(e) => c.push(t.span(), e, "write taints as kubectl does: `key=value:NoSchedule`"),
            }
        }
        for (az, count) in &g.size {
            if !az_names.contains(az.get_ref()) {
                c.push(
                    az.span(),
                    format!("unknown AZ `{}` in node group `{name}`", az.get_ref()),
                    format!("use one of the declared AZs: {}", az_names.join(", ")),
                );
            }
            if !(0..=MAX_NODES_PER_GROUP_AZ).contains(count.get_ref()) {
                c.push(
                    count.span(),
                    format!("{} nodes of `{name}` in az {}", count.get_ref(), az.get_ref()),
                    format!(
                        "use 0 to {MAX_NODES_PER_GROUP_AZ} nodes per AZ (each node is a container on this machine)"
                    ),
                );
            }
        }
        node_groups.push(NodeGroup { name: name.clone(), instance_types, labels, taints });
    }
    Kubernetes { node_groups, node_monitor_grace_period, not_ready_toleration, pods_per_node, service_cidr, region }
}

/// Kubernetes' keys under another service are a mistake worth naming.
fn reject_kubernetes_keys(c: &mut Collector, kind: ServiceKind, raw: &RawService) {
    let spans = [
        raw.node_group.first().map(|g| ("node_group", g.span())),
        raw.node_monitor_grace_period.as_ref().map(|v| ("node_monitor_grace_period", v.span())),
        raw.not_ready_toleration.as_ref().map(|v| ("not_ready_toleration", v.span())),
        raw.pods_per_node.as_ref().map(|v| ("pods_per_node", v.span())),
        raw.service_cidr.as_ref().map(|v| ("service_cidr", v.span())),
        raw.region.as_ref().map(|v| ("region", v.span())),
    ];
    for (key, span) in spans.into_iter().flatten() {
        c.push(
            span,
            format!("`{key}` is a Kubernetes setting, not one of {kind}"),
            "move it under `[service.kubernetes]`",
        );
    }
}
