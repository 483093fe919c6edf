//! Faults as values: what to break, each with its inverse. Which firewall
//! drops and which stopped instances a fault means is computed here from the
//! stack; applying and undoing it is [`crate::harness::RunningStack`]'s job.
//! **No I/O.**
//!
//! Partitions are one-way (packets from one side to the other are dropped),
//! as in madsim's `clog_link`; a two-way cut is two faults.

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
}

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
        if stack.services.iter().flat_map(|s| &s.instances).any(|i| i.name == word) {
            return Ok(Side::Instance(word.to_string()));
        }
        Err(format!(
            "unknown AZ or instance `{word}`; AZs: {}; instances: {}",
            stack.azs.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", "),
            instance_names(stack).join(", ")
        ))
    }

    fn cidrs(&self, stack: &Stack) -> Vec<Cidr> {
        match self {
            Side::Az(az) => stack.az(az).map(|a| vec![a.private, a.public]).unwrap_or_default(),
            Side::Instance(name) => stack
                .services
                .iter()
                .flat_map(|s| &s.instances)
                .filter(|i| &i.name == name)
                .map(|i| Cidr::new(i.address, 32).expect("a /32 of a host is a network"))
                .collect(),
        }
    }
}

fn instance_names(stack: &Stack) -> Vec<&str> {
    stack.services.iter().flat_map(|s| &s.instances).map(|i| i.name.as_str()).collect()
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
            Fault::Partition { from, to } => {
                for side in [from, to] {
                    let word = match side {
                        Side::Az(a) | Side::Instance(a) => a,
                    };
                    Side::parse(word, stack)?;
                }
                if from == to {
                    return Err("a partition needs two different sides".into());
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
                .services
                .iter()
                .flat_map(|s| &s.instances)
                .filter(|i| &i.az == az)
                .map(|i| (i.name.clone(), if *mode == OutageMode::Kill { Stop::Kill } else { Stop::Pause }))
                .collect(),
            Fault::Kill { instance } => vec![(instance.clone(), Stop::Kill)],
            Fault::Pause { instance } => vec![(instance.clone(), Stop::Pause)],
            Fault::Partition { .. } => vec![],
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
            Fault::Partition { from, to } => {
                let (f, t) = (from.cidrs(stack), to.cidrs(stack));
                f.iter().flat_map(|a| t.iter().map(move |b| (*a, *b))).collect()
            }
            Fault::Kill { .. } | Fault::Pause { .. } => vec![],
        }
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack() -> Stack {
        crate::harness::builtin_stack()
    }

    #[test]
    fn an_az_outage_stops_everything_in_the_az_and_cuts_both_directions() {
        let f = Fault::AzOutage { az: "b".into(), mode: OutageMode::Kill };
        let stopped: Vec<String> = f.stops(&stack()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(stopped, ["kafka-b", "kafka-controller-b", "postgres-b"]);
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
    fn faults_round_trip_through_the_state_file_format() {
        let f = Fault::Partition { from: Side::Az("a".into()), to: Side::Instance("kafka-b".into()) };
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, r#"{"fault":"partition","from":{"az":"a"},"to":{"instance":"kafka-b"}}"#);
        assert_eq!(serde_json::from_str::<Fault>(&json).unwrap(), f);
    }
}
