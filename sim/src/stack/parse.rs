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
use super::model::{Az, Instance, Service, ServiceKind, Stack, Tier};

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
    instance: Vec<Spanned<RawInstance>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    name: Option<Spanned<String>>,
    az: Spanned<String>,
    subnet: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    role: Option<Spanned<String>>,
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
        span: Range<usize>,
    }
    let mut pending: Vec<Pending> = vec![];
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
        if svc.get_ref().instance.is_empty() {
            c.push(
                svc.span(),
                format!("service `{kind}` has no instances"),
                format!("add `[[service.{kind}.instance]]` with an `az`, or remove the service"),
            );
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
                None => Tier::Private,
                Some(s) => match s.get_ref().parse::<Tier>() {
                    Ok(t) => t,
                    Err(e) => {
                        c.push(s.span(), e, "write `subnet = \"private\"` or `subnet = \"public\"`");
                        continue;
                    }
                },
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
                address: address.map(|(ip, _)| ip),
                role,
                span: inst.span(),
            });
        }
        let count = |r: &str| roles_seen.iter().filter(|x| *x == r).count();
        match kind {
            ServiceKind::Kafka if count("broker") == 0 && !roles_seen.is_empty() => {
                c.push(svc.span(), "Kafka has controllers but no broker", "add an instance without `role` (a broker)")
            }
            ServiceKind::Postgres if count("primary") != 1 && !roles_seen.is_empty() => c.push(
                svc.span(),
                format!("PostgreSQL needs exactly one primary, this file has {}", count("primary")),
                "mark one instance `role = \"primary\"` (the default) and the others `standby` or `replica`",
            ),
            _ => {}
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
            let base = p.kind.derived_name(&p.role, &p.az);
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
                let free =
                    (FIRST_DERIVED_HOST..net.size() as u32 - 1).map(|i| net.nth(i)).find(|ip| !taken.contains_key(ip));
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
        by_kind.entry(p.kind).or_default().push(Instance { name, az: p.az, tier: p.tier, address, role: p.role });
    }
    for (kind, instances) in by_kind {
        services.push(Service { kind, instances });
    }

    Some(Stack { name: name?, vpc: vpc?, inter_az_latency: latency?, azs, services })
}
