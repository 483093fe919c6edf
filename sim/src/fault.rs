//! Faults as values: what to break, each with its inverse. Which firewall
//! drops and which stopped instances a fault means is computed here from the
//! stack; applying and undoing it is [`crate::harness::RunningStack`]'s job.
//! **No I/O.**
//!
//! Link faults (partition, latency, loss, bandwidth) are one-way, from one
//! side to the other, as in madsim's `clog_link`; a two-way fault is two.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::stack::{Cidr, Stack};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// AWS FIS "AZ power interruption": every instance in the AZ stops at
    /// once (killed, or frozen with `pause`) and its subnets are cut off.
    AzOutage { az: String, mode: OutageMode },
    /// SIGKILL one instance, as a crashed host.
    Kill { instance: String },
    /// Freeze one instance: alive, unresponsive.
    Pause { instance: String },
    /// Drop every packet from one side to the other.
    Partition { from: Side, to: Side },
    /// Hold every packet from one side to the other for `delay_us` ±
    /// uniform `jitter_us`, on top of the link's normal latency.
    Latency { from: Side, to: Side, delay_us: u64, jitter_us: u64 },
    /// Drop this share of the packets, at random (parts per million).
    Loss { from: Side, to: Side, ppm: u32 },
    /// Cap the rate from one side to the other.
    Bandwidth { from: Side, to: Side, kbit: u64 },
}

/// What a link fault does to each packet it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEffect {
    Delay {
        delay_us: u64,
        jitter_us: u64,
    },
    /// Random loss, in parts per million.
    Loss {
        ppm: u32,
    },
    Rate {
        kbit: u64,
    },
}

/// Longest delay a latency fault may ask for: longer is an outage, and
/// every held packet is kernel memory.
pub const MAX_DELAY_US: u64 = 10_000_000;
/// Below this a rate cap is no longer a link but a cut (HTB's floor, too).
pub const MIN_KBIT: u64 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutageMode {
    Kill,
    Pause,
}

/// One side of a partition: an AZ (both its subnets) or one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Az(String),
    Instance(String),
}

/// How a fault stops an instance, which says how healing resumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Kill,
    Pause,
}

impl Side {
    /// An AZ name or an instance name, as a user types it.
    pub fn parse(word: &str, stack: &Stack) -> Result<Side, String> {
        if stack.az(word).is_some() {
            return Ok(Side::Az(word.to_string()));
        }
        if stack.containers().any(|i| i.name == word) {
            return Ok(Side::Instance(word.to_string()));
        }
        Err(format!(
            "unknown AZ or instance `{word}`; AZs: {}; instances: {}",
            stack.azs.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", "),
            instance_names(stack).join(", ")
        ))
    }

    /// The AZ this side is in (an AZ is its own).
    fn az<'a>(&'a self, stack: &'a Stack) -> Option<&'a str> {
        match self {
            Side::Az(az) => Some(az),
            Side::Instance(name) => stack.containers().find(|i| &i.name == name).map(|i| i.az.as_str()),
        }
    }

    fn cidrs(&self, stack: &Stack) -> Vec<Cidr> {
        match self {
            Side::Az(az) => stack.az(az).map(|a| vec![a.private, a.public]).unwrap_or_default(),
            Side::Instance(name) => stack
                .containers()
                .filter(|i| &i.name == name)
                .map(|i| Cidr::new(i.address, 32).expect("a /32 of a host is a network"))
                .collect(),
        }
    }
}

fn instance_names(stack: &Stack) -> Vec<&str> {
    stack.containers().map(|i| i.name.as_str()).collect()
}

impl Fault {
    /// Check the fault names things the stack has.
    pub fn validate(&self, stack: &Stack) -> Result<(), String> {
        let has_instance = |n: &str| instance_names(stack).contains(&n);
        match self {
            Fault::AzOutage { az, .. } if stack.az(az).is_none() => Err(format!(
                "unknown AZ `{az}`; the stack's AZs are {}",
                stack.azs.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
            )),
            Fault::Kill { instance } | Fault::Pause { instance } if !has_instance(instance) => {
                Err(format!("unknown instance `{instance}`; instances: {}", instance_names(stack).join(", ")))
            }
            Fault::Partition { from, to }
            | Fault::Latency { from, to, .. }
            | Fault::Loss { from, to, .. }
            | Fault::Bandwidth { from, to, .. } => {
                match self {
                    Fault::Latency { delay_us, jitter_us, .. } if *delay_us + *jitter_us > MAX_DELAY_US => {
                        return Err(format!(
                            "a delay of {} ms is more than a link can hold; use at most {} s (a partition cuts it)",
                            (delay_us + jitter_us) / 1000,
                            MAX_DELAY_US / 1_000_000
                        ))
                    }
                    Fault::Latency { delay_us: 0, jitter_us: 0, .. } => {
                        return Err("a latency fault needs a delay or a jitter above zero".into())
                    }
                    Fault::Loss { ppm, .. } if *ppm == 0 || *ppm > 1_000_000 => {
                        return Err("loss must be above 0 % and at most 100 %".into())
                    }
                    Fault::Bandwidth { kbit, .. } if *kbit < MIN_KBIT => {
                        return Err(format!("a rate below {MIN_KBIT} kbit/s is a cut; use a partition"))
                    }
                    _ => {}
                }
                for side in [from, to] {
                    let word = match side {
                        Side::Az(a) | Side::Instance(a) => a,
                    };
                    Side::parse(word, stack)?;
                }
                if from == to {
                    return Err(format!("a {} needs two different sides", self.kind()));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The instances this fault stops, and how.
    pub fn stops(&self, stack: &Stack) -> Vec<(String, Stop)> {
        match self {
            Fault::AzOutage { az, mode } => stack
                .containers()
                .filter(|i| &i.az == az)
                .map(|i| (i.name.clone(), if *mode == OutageMode::Kill { Stop::Kill } else { Stop::Pause }))
                .collect(),
            Fault::Kill { instance } => vec![(instance.clone(), Stop::Kill)],
            Fault::Pause { instance } => vec![(instance.clone(), Stop::Pause)],
            Fault::Partition { .. } | Fault::Latency { .. } | Fault::Loss { .. } | Fault::Bandwidth { .. } => vec![],
        }
    }

    /// The fault's kind, as scenario files and the CLI name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::AzOutage { .. } => "az-outage",
            Fault::Kill { .. } => "kill",
            Fault::Pause { .. } => "pause",
            Fault::Partition { .. } => "partition",
            Fault::Latency { .. } => "latency",
            Fault::Loss { .. } => "loss",
            Fault::Bandwidth { .. } => "bandwidth",
        }
    }

    /// What a link fault does, and to which (source, destination) networks.
    pub fn shapes(&self, stack: &Stack) -> Option<(LinkEffect, Vec<(Cidr, Cidr)>)> {
        let (effect, from, to) = match self {
            Fault::Latency { from, to, delay_us, jitter_us } => {
                (LinkEffect::Delay { delay_us: *delay_us, jitter_us: *jitter_us }, from, to)
            }
            Fault::Loss { from, to, ppm } => (LinkEffect::Loss { ppm: *ppm }, from, to),
            Fault::Bandwidth { from, to, kbit } => (LinkEffect::Rate { kbit: *kbit }, from, to),
            _ => return None,
        };
        Some((effect, pairs(from, to, stack)))
    }

    /// Whether a link fault's packets go from one AZ to another, and so
    /// also carry the stack's normal inter-AZ latency.
    pub fn crosses_azs(&self, stack: &Stack) -> bool {
        match self {
            Fault::Partition { from, to }
            | Fault::Latency { from, to, .. }
            | Fault::Loss { from, to, .. }
            | Fault::Bandwidth { from, to, .. } => from.az(stack) != to.az(stack),
            _ => false,
        }
    }

    /// The fault with its sides swapped: the other direction of a link.
    pub fn reversed(&self) -> Option<Fault> {
        let mut f = self.clone();
        match &mut f {
            Fault::Partition { from, to }
            | Fault::Latency { from, to, .. }
            | Fault::Loss { from, to, .. }
            | Fault::Bandwidth { from, to, .. } => std::mem::swap(from, to),
            _ => return None,
        }
        Some(f)
    }

    /// Both sides of a link fault, for settling names against a stack.
    pub fn sides_mut(&mut self) -> Option<[&mut Side; 2]> {
        match self {
            Fault::Partition { from, to }
            | Fault::Latency { from, to, .. }
            | Fault::Loss { from, to, .. }
            | Fault::Bandwidth { from, to, .. } => Some([from, to]),
            _ => None,
        }
    }

    /// Packets to drop, as (source, destination) networks.
    pub fn drops(&self, stack: &Stack) -> Vec<(Cidr, Cidr)> {
        match self {
            // Cut off: nothing in or out of the AZ's subnets within the VPC.
            Fault::AzOutage { az, .. } => {
                let side = Side::Az(az.clone()).cidrs(stack);
                side.iter().flat_map(|s| [(*s, stack.vpc), (stack.vpc, *s)]).collect()
            }
            Fault::Partition { from, to } => pairs(from, to, stack),
            _ => vec![],
        }
    }
}

/// Every (source, destination) network pair from one side to the other.
fn pairs(from: &Side, to: &Side, stack: &Stack) -> Vec<(Cidr, Cidr)> {
    let (f, t) = (from.cidrs(stack), to.cidrs(stack));
    f.iter().flat_map(|a| t.iter().map(move |b| (*a, *b))).collect()
}

/// The stack's normal latency: every AZ's networks to every other AZ's.
pub fn inter_az_pairs(stack: &Stack) -> Vec<(Cidr, Cidr)> {
    let mut out = vec![];
    for a in &stack.azs {
        for b in stack.azs.iter().filter(|b| b.name != a.name) {
            out.extend(pairs(&Side::Az(a.name.clone()), &Side::Az(b.name.clone()), stack));
        }
    }
    out
}

/// The parameters of a link fault as a user writes them (`50ms`, `5%`,
/// `1mbit`), for scenario files and the CLI alike.
#[derive(Debug, Clone, Default)]
pub struct LinkArgs {
    pub delay: Option<String>,
    pub jitter: Option<String>,
    pub loss: Option<String>,
    pub rate: Option<String>,
}

/// Link fault kinds, as files and the CLI name them.
pub const LINK_KINDS: &[&str] = &["partition", "latency", "jitter", "loss", "bandwidth"];

/// Build a link fault of `kind` from `from` to `to`. Errors say which
/// parameter is wrong and how to write it.
pub fn link_fault(kind: &str, from: Side, to: Side, args: &LinkArgs) -> Result<Fault, String> {
    let dur = |v: &Option<String>, what: &str| -> Result<Option<u64>, String> {
        match v {
            None => Ok(None),
            Some(t) => crate::fixtures::parse_duration(t)
                .map(|d| Some(d.as_micros() as u64))
                .ok_or_else(|| format!("{what} `{t}` is not a duration; write it like `50ms` or `500us`")),
        }
    };
    let need = |what: &str, example: &str| format!("a {kind} fault needs `{what}` (e.g. `{what} = \"{example}\"`)");
    match kind {
        "partition" => Ok(Fault::Partition { from, to }),
        "latency" | "jitter" => {
            let delay = dur(&args.delay, "delay")?;
            let jitter = dur(&args.jitter, "jitter")?;
            match (kind, delay, jitter) {
                ("latency", None, _) => Err(need("delay", "50ms")),
                ("jitter", _, None) => Err(need("jitter", "10ms")),
                (_, d, j) => Ok(Fault::Latency { from, to, delay_us: d.unwrap_or(0), jitter_us: j.unwrap_or(0) }),
            }
        }
        "loss" => {
            let text = args.loss.as_deref().ok_or_else(|| need("loss", "5%"))?;
            let pct: f64 = text
                .trim_end_matches('%')
                .trim()
                .parse()
                .map_err(|_| format!("loss `{text}` is not a percentage; write it like `5%` or `0.5%`"))?;
            if !(pct > 0.0 && pct <= 100.0) {
                return Err(format!("loss `{text}` is out of range; use more than 0% and at most 100%"));
            }
            Ok(Fault::Loss { from, to, ppm: (pct * 10_000.0).round() as u32 })
        }
        "bandwidth" => {
            let text = args.rate.as_deref().ok_or_else(|| need("rate", "1mbit"))?;
            Ok(Fault::Bandwidth { from, to, kbit: parse_rate(text)? })
        }
        other => Err(format!("`{other}` is not a link fault; use one of {}", LINK_KINDS.join(", "))),
    }
}

/// `512kbit`, `10mbit`, `1gbit` as kbit/s.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 =
        num.parse().map_err(|_| format!("rate `{text}` has no number; write it like `512kbit` or `10mbit`"))?;
    let kbit = match unit.trim() {
        "kbit" => n,
        "mbit" => n * 1000,
        "gbit" => n * 1_000_000,
        _ => return Err(format!("rate `{text}`: the unit must be kbit, mbit or gbit (bits per second)")),
    };
    if kbit < MIN_KBIT {
        return Err(format!("rate `{text}` is below {MIN_KBIT} kbit/s, which is a cut; use a partition"));
    }
    Ok(kbit)
}

/// `1500us` as `1.5ms`, `40000us` as `40ms`.
pub fn micros_text(us: u64) -> String {
    if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{}ms", us as f64 / 1000.0)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |s: &Side| match s {
            Side::Az(a) => format!("az {a}"),
            Side::Instance(i) => i.clone(),
        };
        match self {
            Fault::AzOutage { az, mode: OutageMode::Kill } => write!(f, "az-outage {az}"),
            Fault::AzOutage { az, mode: OutageMode::Pause } => write!(f, "az-outage {az} (pause)"),
            Fault::Kill { instance } => write!(f, "kill {instance}"),
            Fault::Pause { instance } => write!(f, "pause {instance}"),
            Fault::Partition { from, to } => write!(f, "partition {} -> {}", side(from), side(to)),
            Fault::Latency { from, to, delay_us, jitter_us } => {
                write!(f, "latency {} -> {} {}", side(from), side(to), micros_text(*delay_us))?;
                if *jitter_us > 0 {
                    write!(f, " ± {}", micros_text(*jitter_us))?;
                }
                Ok(())
            }
            Fault::Loss { from, to, ppm } => {
                write!(f, "loss {} -> {} {}%", side(from), side(to), *ppm as f64 / 10_000.0)
            }
            Fault::Bandwidth { from, to, kbit } => write!(f, "bandwidth {} -> {} {kbit} kbit/s", side(from), side(to)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::ServiceKind;

    fn stack() -> Stack {
        crate::harness::builtin_stack()
    }

    #[test]
    fn an_az_outage_stops_everything_in_the_az_and_cuts_both_directions() {
        let f = Fault::AzOutage { az: "b".into(), mode: OutageMode::Kill };
        let stopped: Vec<String> = f.stops(&stack()).into_iter().map(|(n, _)| n).collect();
        // The AZ's Kubernetes nodes go with it, and their pods (the API's
        // replica among them) with them.
        assert_eq!(
            stopped,
            ["alb-b", "kafka-b", "kafka-controller-b", "kube-general-purpose-b", "nlb-b", "postgres-b"]
        );
        let without_cluster = stack().only(&[ServiceKind::Api, ServiceKind::Kafka]);
        let stopped: Vec<String> = f.stops(&without_cluster).into_iter().map(|(n, _)| n).collect();
        assert_eq!(stopped, ["api-b", "kafka-b", "kafka-controller-b"], "without a cluster the API is a container");
        let drops: Vec<String> = f.drops(&stack()).iter().map(|(s, d)| format!("{s}>{d}")).collect();
        assert_eq!(
            drops,
            [
                "10.0.2.0/24>10.0.0.0/16",
                "10.0.0.0/16>10.0.2.0/24",
                "10.0.102.0/24>10.0.0.0/16",
                "10.0.0.0/16>10.0.102.0/24"
            ]
        );
    }

    #[test]
    fn a_partition_is_one_way_between_every_network_of_each_side() {
        let s = stack();
        let f = Fault::Partition { from: Side::parse("c", &s).unwrap(), to: Side::parse("postgres-a", &s).unwrap() };
        let drops: Vec<String> = f.drops(&s).iter().map(|(a, b)| format!("{a}>{b}")).collect();
        assert_eq!(drops, ["10.0.3.0/24>10.0.1.10/32", "10.0.103.0/24>10.0.1.10/32"]);
        assert!(f.stops(&s).is_empty());
    }

    #[test]
    fn unknown_names_are_refused_with_what_exists() {
        let s = stack();
        let err = Side::parse("d", &s).unwrap_err();
        assert!(err.starts_with("unknown AZ or instance `d`; AZs: a, b, c; instances: "), "{err}");
        assert!(Fault::AzOutage { az: "z".into(), mode: OutageMode::Kill }
            .validate(&s)
            .unwrap_err()
            .contains("the stack's AZs are a, b, c"));
        assert!(Fault::Kill { instance: "kafka-z".into() }.validate(&s).is_err());
        let same = Fault::Partition { from: Side::Az("a".into()), to: Side::Az("a".into()) };
        assert_eq!(same.validate(&s).unwrap_err(), "a partition needs two different sides");
    }

    #[test]
    fn link_faults_shape_every_network_pair_one_way() {
        let s = stack();
        let f = Fault::Latency { from: Side::Az("a".into()), to: Side::Az("b".into()), delay_us: 50_000, jitter_us: 0 };
        let (effect, pairs) = f.shapes(&s).unwrap();
        assert_eq!(effect, LinkEffect::Delay { delay_us: 50_000, jitter_us: 0 });
        let text: Vec<String> = pairs.iter().map(|(a, b)| format!("{a}>{b}")).collect();
        assert_eq!(
            text,
            [
                "10.0.1.0/24>10.0.2.0/24",
                "10.0.1.0/24>10.0.102.0/24",
                "10.0.101.0/24>10.0.2.0/24",
                "10.0.101.0/24>10.0.102.0/24"
            ]
        );
        assert!(f.crosses_azs(&s));
        let within = Fault::Latency {
            from: Side::Instance("postgres-a".into()),
            to: Side::Instance("kafka-a".into()),
            delay_us: 1,
            jitter_us: 0,
        };
        assert!(!within.crosses_azs(&s), "two instances of AZ a");
        let back = f.reversed().unwrap();
        assert_eq!(back.shapes(&s).unwrap().1[0], (pairs[0].1, pairs[0].0));
        assert!(f.drops(&s).is_empty() && f.stops(&s).is_empty(), "a slow link is neither cut nor stopped");
        assert_eq!(f.to_string(), "latency az a -> az b 50ms");
    }

    #[test]
    fn the_normal_latency_covers_every_ordered_pair_of_azs() {
        let pairs = inter_az_pairs(&stack());
        // 3 AZs × 2 other AZs × (2 subnets × 2 subnets).
        assert_eq!(pairs.len(), 24);
        assert!(pairs.iter().all(|(a, b)| a != b));
        assert!(!pairs.iter().any(|(a, b)| a.to_string() == "10.0.1.0/24" && b.to_string() == "10.0.101.0/24"));
    }

    #[test]
    fn link_faults_out_of_range_are_refused_with_the_limit() {
        let s = stack();
        let (a, b) = (Side::Az("a".into()), Side::Az("b".into()));
        let slow = Fault::Latency { from: a.clone(), to: b.clone(), delay_us: 11_000_000, jitter_us: 0 };
        assert!(slow.validate(&s).unwrap_err().contains("use at most 10 s"));
        assert!(Fault::Loss { from: a.clone(), to: b.clone(), ppm: 0 }.validate(&s).is_err());
        assert!(Fault::Loss { from: a.clone(), to: b.clone(), ppm: 1_000_001 }.validate(&s).is_err());
        assert!(Fault::Loss { from: a.clone(), to: b.clone(), ppm: 1_000_000 }.validate(&s).is_ok());
        assert!(Fault::Bandwidth { from: a.clone(), to: b.clone(), kbit: 4 }
            .validate(&s)
            .unwrap_err()
            .contains("partition"));
        let same = Fault::Loss { from: a.clone(), to: a, ppm: 10 };
        assert_eq!(same.validate(&s).unwrap_err(), "a loss needs two different sides");
    }

    #[test]
    fn link_parameters_are_read_as_users_write_them() {
        let (a, b) = (Side::Az("a".into()), Side::Az("b".into()));
        let args = |d: Option<&str>, j: Option<&str>, l: Option<&str>, r: Option<&str>| LinkArgs {
            delay: d.map(String::from),
            jitter: j.map(String::from),
            loss: l.map(String::from),
            rate: r.map(String::from),
        };
        let lat = link_fault("latency", a.clone(), b.clone(), &args(Some("50ms"), Some("500us"), None, None)).unwrap();
        assert_eq!(lat, Fault::Latency { from: a.clone(), to: b.clone(), delay_us: 50_000, jitter_us: 500 });
        assert_eq!(lat.to_string(), "latency az a -> az b 50ms ± 0.5ms");
        let jit = link_fault("jitter", a.clone(), b.clone(), &args(None, Some("5ms"), None, None)).unwrap();
        assert_eq!(jit, Fault::Latency { from: a.clone(), to: b.clone(), delay_us: 0, jitter_us: 5000 });
        let loss = link_fault("loss", a.clone(), b.clone(), &args(None, None, Some("2.5%"), None)).unwrap();
        assert_eq!(loss, Fault::Loss { from: a.clone(), to: b.clone(), ppm: 25_000 });
        assert_eq!(loss.to_string(), "loss az a -> az b 2.5%");
        let bw = link_fault("bandwidth", a.clone(), b.clone(), &args(None, None, None, Some("10mbit"))).unwrap();
        assert_eq!(bw, Fault::Bandwidth { from: a.clone(), to: b.clone(), kbit: 10_000 });
        let e = link_fault("latency", a.clone(), b.clone(), &args(None, None, None, None)).unwrap_err();
        assert_eq!(e, "a latency fault needs `delay` (e.g. `delay = \"50ms\"`)");
        let e = link_fault("loss", a.clone(), b.clone(), &args(None, None, Some("120%"), None)).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = link_fault("bandwidth", a.clone(), b.clone(), &args(None, None, None, Some("10mb"))).unwrap_err();
        assert!(e.contains("kbit, mbit or gbit"), "{e}");
        let e = link_fault("latency", a, b, &args(Some("fast"), None, None, None)).unwrap_err();
        assert!(e.contains("`fast` is not a duration"), "{e}");
    }

    #[test]
    fn faults_round_trip_through_the_state_file_format() {
        let f = Fault::Partition { from: Side::Az("a".into()), to: Side::Instance("kafka-b".into()) };
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, r#"{"fault":"partition","from":{"az":"a"},"to":{"instance":"kafka-b"}}"#);
        assert_eq!(serde_json::from_str::<Fault>(&json).unwrap(), f);
    }
}
