//! The Kubernetes part of a stack, shaped like EKS: the seed's node groups
//! (labels, taints, instance types), Kubernetes' node-lifecycle timers, and
//! the VPC addresses each node keeps for its pods (as the AWS VPC CNI gives
//! pods addresses of the node's subnet). Plain values; **no I/O**.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::cidr::Cidr;

/// kube-controller-manager's default `--node-monitor-grace-period` since
/// Kubernetes 1.32: how long a node may miss heartbeats before NotReady.
pub const DEFAULT_NODE_MONITOR_GRACE_PERIOD: Duration = Duration::from_secs(50);
/// The API server's DefaultTolerationSeconds for not-ready and
/// unreachable nodes: how long pods stay bound before they are evicted.
pub const DEFAULT_NOT_READY_TOLERATION: Duration = Duration::from_secs(300);
/// VPC addresses a node keeps for its pods (its block in the subnet).
pub const DEFAULT_PODS_PER_NODE: u32 = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubernetes {
    pub node_groups: Vec<NodeGroup>,
    pub node_monitor_grace_period: Duration,
    pub not_ready_toleration: Duration,
    /// A power of two: each node's pod addresses are one aligned block.
    pub pods_per_node: u32,
    /// ClusterIP range, outside the VPC (EKS picks 10.100.0.0/16 or
    /// 172.20.0.0/16 by the same rule, see [`service_cidr_for`]).
    pub service_cidr: Cidr,
    /// The AWS region nodes are labelled with; zones are the region and
    /// the AZ's name (`us-east-1` + `a`).
    pub region: String,
}

/// The region of a stack file that names none (S3's fixture uses it too).
pub const DEFAULT_REGION: &str = "us-east-1";

impl Kubernetes {
    /// `topology.kubernetes.io/zone` of an AZ.
    pub fn zone(&self, az: &str) -> String {
        format!("{}{az}", self.region)
    }
}

/// A managed node group: what its nodes carry. Its nodes are ordinary
/// instances of the stack (role `worker`) that name the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGroup {
    pub name: String,
    /// EC2 instance types, given to the group's nodes in turn as
    /// `node.kubernetes.io/instance-type`.
    pub instance_types: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl fmt::Display for TaintEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        })
    }
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.key, self.effect)
        } else {
            write!(f, "{}={}:{}", self.key, self.value, self.effect)
        }
    }
}

/// `key=value:Effect` or `key:Effect`, as kubectl writes taints.
impl FromStr for Taint {
    type Err = String;
    fn from_str(s: &str) -> Result<Taint, String> {
        let (kv, effect) = s.rsplit_once(':').ok_or_else(|| format!("taint `{s}` has no effect"))?;
        let effect = match effect {
            "NoSchedule" => TaintEffect::NoSchedule,
            "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
            "NoExecute" => TaintEffect::NoExecute,
            other => {
                return Err(format!("`{other}` is not a taint effect; use NoSchedule, PreferNoSchedule or NoExecute"))
            }
        };
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        check_label_key(key).map_err(|e| format!("taint `{s}`: {e}"))?;
        check_label_value(value).map_err(|e| format!("taint `{s}`: {e}"))?;
        Ok(Taint { key: key.to_string(), value: value.to_string(), effect })
    }
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of
/// up to 63 characters (Kubernetes' own rule).
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !ok {
            return Err(format!("`{p}` is not a DNS subdomain prefix"));
        }
    }
    check_name_part(name).map_err(|e| format!("key `{key}`: {e}"))
}

pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name_part(value).map_err(|e| format!("value `{value}`: {e}"))
}

fn check_name_part(s: &str) -> Result<(), String> {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    if !edge_ok(s.chars().next()) || !edge_ok(s.chars().last()) {
        return Err("must start and end with a letter or digit".into());
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err("may hold only letters, digits, `-`, `_` and `.`".into());
    }
    Ok(())
}

/// EKS's rule for the Service range: 10.100.0.0/16, unless the VPC
/// overlaps it, then 172.20.0.0/16.
pub fn service_cidr_for(vpc: Cidr) -> Cidr {
    let first: Cidr = "10.100.0.0/16".parse().expect("constant");
    if first.overlaps(&vpc) {
        "172.20.0.0/16".parse().expect("constant")
    } else {
        first
    }
}

/// The pod address block of the `index`th Kubernetes node of an AZ: blocks
/// are taken from the top of the AZ's private subnet downwards, so the
/// subnet's low addresses stay for instances.
pub fn pod_block(subnet: Cidr, pods_per_node: u32, index: usize) -> Option<Cidr> {
    let size = subnet.size();
    let start = size.checked_sub(pods_per_node as u64 * (index as u64 + 1))?;
    let prefix = 32 - pods_per_node.trailing_zeros() as u8;
    Cidr::new(subnet.nth(start as u32), prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_read_and_write_as_kubectl_does() {
        let t: Taint = "workload-type=general:NoSchedule".parse().unwrap();
        assert_eq!(t, Taint { key: "workload-type".into(), value: "general".into(), effect: TaintEffect::NoSchedule });
        assert_eq!(t.to_string(), "workload-type=general:NoSchedule");
        assert_eq!("dedicated:NoExecute".parse::<Taint>().unwrap().to_string(), "dedicated:NoExecute");
        assert!("x=y:Sometimes".parse::<Taint>().unwrap_err().contains("not a taint effect"));
        assert!("x=y".parse::<Taint>().is_err());
        assert!("-x=y:NoSchedule".parse::<Taint>().is_err());
    }

    #[test]
    fn label_keys_follow_kubernetes_rules() {
        assert!(check_label_key("node-type").is_ok());
        assert!(check_label_key("topology.kubernetes.io/zone").is_ok());
        assert!(check_label_key("Bad Key").is_err());
        assert!(check_label_key(&"x".repeat(64)).is_err());
        assert!(check_label_key("-x.io/y").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("general-purpose").is_ok());
        assert!(check_label_value("a b").is_err());
    }

    #[test]
    fn pod_blocks_come_from_the_top_of_the_subnet() {
        let net: Cidr = "10.0.2.0/24".parse().unwrap();
        assert_eq!(pod_block(net, 32, 0).unwrap().to_string(), "10.0.2.224/27");
        assert_eq!(pod_block(net, 32, 1).unwrap().to_string(), "10.0.2.192/27");
        assert_eq!(pod_block(net, 16, 3).unwrap().to_string(), "10.0.2.192/28");
        assert_eq!(pod_block(net, 128, 2), None);
    }

    #[test]
    fn the_service_range_avoids_the_vpc_as_eks_does() {
        assert_eq!(service_cidr_for("10.0.0.0/16".parse().unwrap()).to_string(), "10.100.0.0/16");
        assert_eq!(service_cidr_for("10.100.0.0/16".parse().unwrap()).to_string(), "172.20.0.0/16");
    }
}
