//! The cluster as a plan, and the files it is configured by: kubeadm's
//! configuration per node, each node's CNI configuration, and the regional
//! API endpoint's HAProxy configuration. **Pure**: everything is derived
//! from the stack, so it is unit-tested as text.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::images::kubernetes::{KUBE_VERSION, PAUSE_VERSION, REGISTRY};
use crate::stack::{Cidr, Kubernetes, ServiceKind, Stack, Taint, TaintEffect};

use super::{API_NAME, API_PORT, ENDPOINT_HOST};

/// The cluster a stack declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPlan {
    /// kubeadm's `clusterName`: the stack's name.
    pub name: String,
    pub vpc: Cidr,
    pub settings: Kubernetes,
    /// The regional API endpoint's address in each AZ's private subnet: a
    /// node reaches the API at its own AZ's address, as at an NLB's.
    pub endpoint_addresses: Vec<(String, Ipv4Addr)>,
    /// Control-plane nodes first (the first one runs `kubeadm init`).
    pub nodes: Vec<NodePlan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub name: String,
    pub az: String,
    pub address: Ipv4Addr,
    pub control_plane: bool,
    pub group: Option<String>,
    /// Labels kubelet registers the node with.
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// The VPC addresses its pods get.
    pub pod_block: Cidr,
}

impl ClusterPlan {
    pub fn of(stack: &Stack) -> Option<ClusterPlan> {
        let settings = stack.kubernetes.clone()?;
        let svc = stack.service(ServiceKind::Kubernetes)?;
        let mut per_group: BTreeMap<&str, usize> = BTreeMap::new();
        let mut nodes: Vec<NodePlan> = svc
            .instances
            .iter()
            .map(|i| {
                let control_plane = i.role == "control-plane";
                let mut labels = BTreeMap::from([
                    ("topology.kubernetes.io/region".to_string(), settings.region.clone()),
                    ("topology.kubernetes.io/zone".to_string(), settings.zone(&i.az)),
                ]);
                let mut taints = vec![];
                match i.group.as_deref().and_then(|g| settings.node_groups.iter().find(|n| n.name == g)) {
                    Some(g) => {
                        let n = per_group.entry(&g.name).or_default();
                        if let Some(t) = g.instance_types.get(*n % g.instance_types.len().max(1)) {
                            labels.insert("node.kubernetes.io/instance-type".into(), t.clone());
                        }
                        *n += 1;
                        // As EKS labels a managed node group's nodes.
                        labels.insert("eks.amazonaws.com/nodegroup".into(), g.name.clone());
                        labels.extend(g.labels.clone());
                        taints.extend(g.taints.clone());
                    }
                    None if control_plane => taints.push(Taint {
                        key: "node-role.kubernetes.io/control-plane".into(),
                        value: String::new(),
                        effect: TaintEffect::NoSchedule,
                    }),
                    None => {}
                }
                NodePlan {
                    name: i.name.clone(),
                    az: i.az.clone(),
                    address: i.address,
                    control_plane,
                    group: i.group.clone(),
                    labels,
                    taints,
                    pod_block: stack.pod_block(i).expect("validated: every node has a pod block"),
                }
            })
            .collect();
        nodes.sort_by_key(|n| !n.control_plane);
        let endpoint_addresses = stack.azs.iter().map(|a| (a.name.clone(), a.private.nth(ENDPOINT_HOST))).collect();
        Some(ClusterPlan { name: stack.name.clone(), vpc: stack.vpc, settings, endpoint_addresses, nodes })
    }

    pub fn first_control_plane(&self) -> &NodePlan {
        self.nodes.iter().find(|n| n.control_plane).expect("validated: a control plane")
    }

    /// The endpoint's address in an AZ.
    pub fn endpoint_in(&self, az: &str) -> Ipv4Addr {
        self.endpoint_addresses.iter().find(|(a, _)| a == az).map(|(_, ip)| *ip).unwrap_or(self.endpoint_addresses[0].1)
    }

    /// Pods a node may hold: one per address of its block but the two the
    /// CNI keeps (the gateway and the block's last), plus room for the
    /// host-network pods every node runs (kube-proxy; static pods on the
    /// control plane), which take no address.
    pub fn max_pods(&self, node: &NodePlan) -> u32 {
        self.settings.pods_per_node - 2 + if node.control_plane { 6 } else { 2 }
    }
}

fn yaml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn secs_ceil(d: std::time::Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

/// `node-labels` as kubelet takes them.
fn label_flag(node: &NodePlan) -> String {
    node.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn node_registration(node: &NodePlan) -> String {
    let taints: String = node
        .taints
        .iter()
        .map(|t| {
            let value = if t.value.is_empty() { String::new() } else { format!("\n    value: {}", yaml_str(&t.value)) };
            format!("  - key: {}{value}\n    effect: {}\n", yaml_str(&t.key), t.effect)
        })
        .collect();
    let taints = if taints.is_empty() { "  taints: []\n".to_string() } else { format!("  taints:\n{taints}") };
    format!(
        "nodeRegistration:\n  name: {name}\n  criSocket: unix:///run/containerd/containerd.sock\n  \
         # The node is a container: kubeadm's checks of swap, kernel modules and\n  \
         # system files are about a machine it does not have.\n  \
         ignorePreflightErrors: [all]\n  imagePullPolicy: Never\n{taints}  kubeletExtraArgs:\n  \
         - name: node-ip\n    value: {ip}\n  - name: node-labels\n    value: {labels}\n  \
         - name: provider-id\n    value: {provider}\n",
        name = yaml_str(&node.name),
        ip = yaml_str(&node.address.to_string()),
        labels = yaml_str(&label_flag(node)),
        provider = yaml_str(&format!("voyager-sim://{}/{}", node.az, node.name)),
    )
}

/// kubelet's own configuration, the same on every node but for its pod
/// capacity.
/// How often nodes report, and the controller looks, for a grace period:
/// Kubernetes' defaults (a 40 s lease renewed every 10 s, status every
/// 10 s, a look every 5 s) fit its 50 s grace; a shorter grace (CI) needs
/// them shorter too, or healthy nodes flap NotReady between renewals.
pub struct Heartbeats {
    pub lease_s: u64,
    pub status_every_ms: u128,
    pub monitor_every_ms: u128,
}

pub fn heartbeats(grace: std::time::Duration) -> Heartbeats {
    let g = grace.as_millis();
    Heartbeats {
        lease_s: ((g * 4 / 5) / 1000).clamp(4, 40) as u64,
        status_every_ms: (g / 4).clamp(1000, 10_000),
        monitor_every_ms: (g / 8).clamp(1000, 5000),
    }
}

fn kubelet_configuration(plan: &ClusterPlan, node: &NodePlan) -> String {
    let hb = heartbeats(plan.settings.node_monitor_grace_period);
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         nodeLeaseDurationSeconds: {lease}\nnodeStatusUpdateFrequency: {status}ms\n\
         # cgroupfs, as containerd is configured: the node's own cgroup tree is\n\
         # mounted writable, systemd's is not delegated.\n\
         cgroupDriver: cgroupfs\nfailSwapOn: false\nmaxPods: {max_pods}\n\
         # The node's disk is the host's; kubelet must not evict pods or\n\
         # collect images because the host's disk fills.\n\
         imageGCHighThresholdPercent: 100\nevictionHard:\n  nodefs.available: \"0%\"\n  nodefs.inodesFree: \"0%\"\n  imagefs.available: \"0%\"\n\
         # Pods with dnsPolicy Default (CoreDNS itself) get the VPC's resolver\n\
         # (its base address + 2, as AmazonProvidedDNS), not Docker's loopback one.\n\
         resolvConf: /etc/kubernetes/vpc-resolv.conf\n",
        max_pods = plan.max_pods(node),
        lease = hb.lease_s,
        status = hb.status_every_ms,
    )
}

/// `kubeadm init`'s configuration, for the first control-plane node.
pub fn kubeadm_init(plan: &ClusterPlan, node: &NodePlan, token: &str) -> String {
    let k = &plan.settings;
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".into(), API_NAME.into()];
    sans.extend(plan.endpoint_addresses.iter().map(|(_, ip)| ip.to_string()));
    sans.extend(plan.nodes.iter().filter(|n| n.control_plane).map(|n| n.address.to_string()));
    let sans: Vec<String> = sans.iter().map(|s| yaml_str(s)).collect();
    let toleration = secs_ceil(k.not_ready_toleration);
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n\
         kubernetesVersion: {KUBE_VERSION}\nclusterName: {name}\nimageRepository: {REGISTRY}\n\
         controlPlaneEndpoint: \"{API_NAME}:{API_PORT}\"\n\
         networking:\n  serviceSubnet: {svc}\n  dnsDomain: cluster.local\n\
         apiServer:\n  certSANs: [{sans}]\n  extraArgs:\n\
         # DefaultTolerationSeconds: how long pods stay on a not-ready or\n\
         # unreachable node before they are evicted.\n\
         \x20 - name: default-not-ready-toleration-seconds\n    value: \"{toleration}\"\n\
         \x20 - name: default-unreachable-toleration-seconds\n    value: \"{toleration}\"\n\
         controllerManager:\n  extraArgs:\n\
         \x20 - name: node-monitor-grace-period\n    value: \"{grace}s\"\n\
         \x20 - name: node-monitor-period\n    value: \"{monitor}ms\"\n\
         # Pod addresses come from each node's block of its subnet, not from a\n\
         # cluster-wide range (as with the AWS VPC CNI).\n\
         \x20 - name: allocate-node-cidrs\n    value: \"false\"\n\
         # The active controller manager and scheduler renew their leases\n\
         # every 5 s instead of 2 s, the idle ones ask as often: on 2 cores\n\
         # each etcd write counts, and takeover stays within the 15 s lease.\n\
         \x20 - name: leader-elect-retry-period\n    value: \"5s\"\n\
         scheduler:\n  extraArgs:\n\
         \x20 - name: leader-elect-retry-period\n    value: \"5s\"\n\
         ---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n\
         bootstrapTokens:\n- token: {token}\n  ttl: 24h0m0s\n\
         localAPIEndpoint:\n  advertiseAddress: {ip}\n  bindPort: {API_PORT}\n{reg}\
         ---\n{kubelet}---\napiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
         mode: iptables\nclusterCIDR: {vpc}\n\
         iptables:\n  minSyncPeriod: 1s\n\
         # conntrack's table size is the machine's, not the node's to set.\n\
         conntrack:\n  maxPerCore: 0\n",
        name = yaml_str(&plan.name),
        svc = k.service_cidr,
        sans = sans.join(", "),
        grace = secs_ceil(k.node_monitor_grace_period),
        monitor = heartbeats(k.node_monitor_grace_period).monitor_every_ms,
        token = yaml_str(token),
        ip = node.address,
        reg = node_registration(node),
        kubelet = kubelet_configuration(plan, node),
        // Pod addresses are VPC addresses: kube-proxy masquerades only
        // what comes from outside the VPC.
        vpc = plan.vpc,
    )
}

/// `kubeadm join`'s configuration, for every other node.
pub fn kubeadm_join(plan: &ClusterPlan, node: &NodePlan, token: &str) -> String {
    let control = if node.control_plane {
        format!(
            "controlPlane:\n  localAPIEndpoint:\n    advertiseAddress: {}\n    bindPort: {API_PORT}\n",
            node.address
        )
    } else {
        String::new()
    };
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n{control}\
         discovery:\n  bootstrapToken:\n    apiServerEndpoint: \"{API_NAME}:{API_PORT}\"\n    token: {token}\n    \
         # The token is this run's secret, on a network of this run's own.\n    \
         unsafeSkipCAVerification: true\n{reg}\
         # A joining etcd member is a learner until it has caught up; on a\n\
         # loaded 2-core machine that takes longer than kubeadm's 2 minutes.\n\
         timeouts:\n  etcdAPICall: 6m0s\n---\n{kubelet}",
        token = yaml_str(token),
        reg = node_registration(node),
        kubelet = kubelet_configuration(plan, node),
    )
}

/// The node's CNI configuration: point-to-point links to its pods, whose
/// addresses come from the node's block of its VPC subnet. Nothing is
/// masqueraded: a pod's packets leave with its VPC address, cross the AZs
/// as the node's do, and the node answers ARP for its pods (proxy ARP) so
/// the subnet reaches them directly.
pub fn cni_conflist(node: &NodePlan) -> String {
    let block = node.pod_block;
    serde_json::to_string_pretty(&serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "vpc",
        "plugins": [
            {
                "type": "ptp",
                "ipMasq": false,
                "mtu": 1500,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": block.to_string(), "gateway": block.network().to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    }))
    .expect("a JSON value serializes")
}

/// What pods with dnsPolicy Default resolve with: the VPC's resolver address.
pub fn vpc_resolv_conf(plan: &ClusterPlan) -> String {
    format!("# The VPC's resolver (base address + 2, as AmazonProvidedDNS)\nnameserver {}\n", plan.vpc.nth(2))
}

/// The regional API endpoint: TCP to every control-plane node's API server,
/// each checked by the API's own readiness endpoint.
pub fn endpoint_haproxy(plan: &ClusterPlan) -> String {
    let servers: String = plan
        .nodes
        .iter()
        .filter(|n| n.control_plane)
        .map(|n| format!("    server {} {}:{API_PORT} check check-ssl verify none\n", n.name, n.address))
        .collect();
    format!(
        "global\n    log stdout format raw local0 notice\n\n\
         defaults\n    mode tcp\n    timeout connect 3s\n    timeout client 1h\n    timeout server 1h\n    \
         default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions\n\n\
         frontend api\n    bind :{API_PORT}\n    default_backend control-plane\n\n\
         backend control-plane\n    option httpchk GET /readyz\n    http-check expect status 200\n{servers}"
    )
}

/// The pause image kubelet and containerd agree on.
pub fn sandbox_image() -> String {
    format!("{REGISTRY}/pause:{PAUSE_VERSION}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> ClusterPlan {
        ClusterPlan::of(&crate::harness::builtin_stack()).expect("the built-in stack runs Kubernetes")
    }

    #[test]
    fn every_node_carries_its_zone_region_and_group_labels() {
        let p = plan();
        assert_eq!(p.nodes.iter().filter(|n| n.control_plane).count(), 1, "one, to fit two cores");
        assert!(p.nodes[0].control_plane, "control-plane nodes come first");
        for n in &p.nodes {
            assert_eq!(n.labels["topology.kubernetes.io/zone"], format!("us-east-1{}", n.az));
            assert_eq!(n.labels["topology.kubernetes.io/region"], "us-east-1");
            assert!(n.pod_block.contains(n.pod_block.nth(1)));
        }
        let gp: Vec<&NodePlan> = p.nodes.iter().filter(|n| n.group.as_deref() == Some("general-purpose")).collect();
        assert_eq!(gp.len(), 3);
        for n in gp {
            assert_eq!(n.labels["node-type"], "general-purpose");
            assert_eq!(n.labels["environment"], "production");
            assert_eq!(n.taints, vec!["workload-type=general:NoSchedule".parse::<Taint>().unwrap()]);
            assert!(
                ["m5.large", "m5.xlarge", "c5.large"].contains(&n.labels["node.kubernetes.io/instance-type"].as_str())
            );
        }
    }

    #[test]
    fn kubeadm_gets_the_timers_the_endpoint_and_the_sans() {
        let p = plan();
        let init = kubeadm_init(&p, p.first_control_plane(), "abcdef.0123456789abcdef");
        assert!(init.contains("controlPlaneEndpoint: \"kube-api.voyager.internal:6443\""), "{init}");
        assert!(init.contains("name: node-monitor-grace-period\n    value: \"50s\""), "{init}");
        assert!(init.contains("name: default-unreachable-toleration-seconds\n    value: \"300\""), "{init}");
        assert!(init.contains("\"127.0.0.1\""), "{init}");
        assert!(init.contains("serviceSubnet: 10.100.0.0/16"), "{init}");
        assert!(init.contains("key: \"node-role.kubernetes.io/control-plane\""), "{init}");
        let worker = p.nodes.iter().find(|n| !n.control_plane).unwrap();
        let join = kubeadm_join(&p, worker, "abcdef.0123456789abcdef");
        assert!(!join.contains("controlPlane:"), "{join}");
        assert!(join.contains("key: \"workload-type\"\n    value: \"general\"\n    effect: NoSchedule"), "{join}");
        assert!(join.contains("node.kubernetes.io/instance-type="), "{join}");
    }

    #[test]
    fn heartbeats_are_kubernetes_defaults_at_its_grace_and_shorter_below() {
        let prod = heartbeats(std::time::Duration::from_secs(50));
        assert_eq!((prod.lease_s, prod.status_every_ms, prod.monitor_every_ms), (40, 10_000, 5000));
        let ci = heartbeats(std::time::Duration::from_secs(8));
        assert!(ci.lease_s * 1000 / 4 < 8000 / 2, "renewals well inside the grace period");
        assert!(ci.status_every_ms <= 2000 && ci.monitor_every_ms <= 1000);
    }

    #[test]
    fn pods_get_addresses_of_their_nodes_subnet_without_masquerade() {
        let p = plan();
        let n = &p.nodes[0];
        let conf: serde_json::Value = serde_json::from_str(&cni_conflist(n)).unwrap();
        let ptp = &conf["plugins"][0];
        assert_eq!(ptp["ipMasq"], false);
        assert_eq!(ptp["ipam"]["ranges"][0][0]["subnet"], n.pod_block.to_string());
        assert!(n.pod_block.to_string().starts_with("10.0.3."), "{}", n.pod_block);
    }

    #[test]
    fn the_endpoint_checks_every_api_server() {
        let p = plan();
        let cfg = endpoint_haproxy(&p);
        let servers = p.nodes.iter().filter(|n| n.control_plane).count();
        assert_eq!(cfg.matches(" check check-ssl").count(), servers, "{cfg}");
        assert!(cfg.contains("option httpchk GET /readyz"), "{cfg}");
    }
}
