//! The containers of the Kubernetes tier: one per node, on its AZ's private
//! subnet at its fixed address, booting systemd with containerd and
//! kubelet; and the regional API endpoint. Every file a node is configured
//! by comes from here, for our node image and kind's alike, which is what
//! makes the two image sets one path.

use std::collections::BTreeMap;

use super::config::{self, ClusterPlan, NodePlan};
use super::{API_NAME, API_PORT, ENDPOINT, KUBEADM_CONFIG};
use crate::images::{haproxy_image, image_for};
use crate::runtime::network::network_name;
use crate::services::SpecContext;
use crate::spec::{ContainerSpec, Publish, Sandbox};
use crate::stack::{ServiceKind, Tier};

const ENTRYPOINT_PATH: &str = "/usr/local/bin/voyager-node-entrypoint";
const ENTRYPOINT: &str = include_str!("files/node-entrypoint.sh");
const CONTAINERD: &str = include_str!("files/containerd.toml");
const KUBELET_UNIT: &str = include_str!("files/kubelet.service");
const KUBEADM_DROPIN: &str = include_str!("files/10-kubeadm.conf");
const HAPROXY_CFG: &str = "/usr/local/etc/haproxy/haproxy.cfg";
/// Where a node sees its AZ's block storage; volumes are directories in it.
pub const EBS_ROOT: &str = "/var/lib/voyager-ebs";

/// The stack volume that is an AZ's block storage.
pub fn zone_volume(az: &str) -> String {
    format!("ebs-{az}")
}

pub fn specs(cx: &SpecContext, plan: &ClusterPlan) -> Vec<ContainerSpec> {
    let token = &cx.credentials.kube_bootstrap_token;
    let first = plan.first_control_plane().name.clone();
    let mut out: Vec<ContainerSpec> = plan
        .nodes
        .iter()
        .map(|n| {
            let kubeadm = if n.name == first {
                config::kubeadm_init(plan, n, token)
            } else {
                config::kubeadm_join(plan, n, token)
            };
            node_spec(cx, plan, n, kubeadm)
        })
        .collect();
    out.push(endpoint_spec(cx, plan));
    out
}

fn node_spec(cx: &SpecContext, plan: &ClusterPlan, n: &NodePlan, kubeadm: String) -> ContainerSpec {
    let mut volumes = vec![
        // containerd's overlay snapshots cannot live on the container's own
        // overlay root; a volume is a plain directory of the host.
        ("containerd".to_string(), "/var/lib/containerd".to_string()),
        ("kubelet".to_string(), "/var/lib/kubelet".to_string()),
    ];
    if n.control_plane {
        volumes.push(("etcd".into(), "/var/lib/etcd".into()));
    }
    // The AZ's block storage, which every node of the AZ reaches, as EBS
    // volumes attach to any instance of their zone.
    let shared_volumes = vec![(zone_volume(&n.az), EBS_ROOT.to_string())];
    ContainerSpec {
        instance: n.name.clone(),
        image: image_for(ServiceKind::Kubernetes, cx.images),
        env: BTreeMap::from([("container".to_string(), "docker".to_string())]),
        network: network_name(cx.stack_name, &n.az, Tier::Private),
        address: n.address,
        volumes,
        shared_volumes,
        extra_hosts: vec![(API_NAME.to_string(), plan.endpoint_in(&n.az))],
        files: vec![
            (ENTRYPOINT_PATH.into(), 0o755, ENTRYPOINT.into()),
            ("/etc/containerd/config.toml".into(), 0o644, CONTAINERD.into()),
            ("/etc/systemd/system/kubelet.service".into(), 0o644, KUBELET_UNIT.into()),
            ("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf".into(), 0o644, KUBEADM_DROPIN.into()),
            ("/etc/cni/net.d/10-vpc.conflist".into(), 0o644, config::cni_conflist(n)),
            ("/etc/kubernetes/vpc-resolv.conf".into(), 0o644, config::vpc_resolv_conf(plan)),
            (KUBEADM_CONFIG.into(), 0o600, kubeadm),
        ],
        entrypoint: Some(vec![ENTRYPOINT_PATH.into()]),
        sandbox: Sandbox::Node,
        ..Default::default()
    }
}

/// The regional API endpoint, like `postgres-endpoints`: on every AZ's
/// private subnet, in none, at the same host number in each.
fn endpoint_spec(cx: &SpecContext, plan: &ClusterPlan) -> ContainerSpec {
    let first = &cx.stack.azs[0];
    let others = &cx.stack.azs[1..];
    ContainerSpec {
        instance: ENDPOINT.into(),
        image: haproxy_image(cx.images),
        cmd: ["-W", "-db", "-f", HAPROXY_CFG].map(String::from).to_vec(),
        network: network_name(cx.stack_name, &first.name, Tier::Private),
        address: plan.endpoint_in(&first.name),
        published: vec![Publish::any(API_PORT)],
        extra_networks: others.iter().map(|az| network_name(cx.stack_name, &az.name, Tier::Private)).collect(),
        extra_addresses: others
            .iter()
            .map(|az| (network_name(cx.stack_name, &az.name, Tier::Private), plan.endpoint_in(&az.name)))
            .collect(),
        files: vec![(HAPROXY_CFG.into(), 0o644, config::endpoint_haproxy(plan))],
        entrypoint: Some(vec!["haproxy".into()]),
        user: Some("haproxy".into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use crate::images::ImageSet;
    use crate::services::test_specs;
    use crate::spec::Sandbox;
    use crate::stack::ServiceKind;

    #[test]
    fn nodes_are_system_containers_on_their_private_subnet_and_both_image_sets_agree() {
        let off = test_specs(ServiceKind::Kubernetes, ImageSet::Offline);
        let up = test_specs(ServiceKind::Kubernetes, ImageSet::Upstream);
        assert_eq!(off.len(), up.len());
        for (o, u) in off.iter().zip(&up) {
            assert_eq!(o.instance, u.instance);
            assert_eq!(o.network, u.network);
            assert_eq!(o.address, u.address);
            assert_eq!(
                o.files.iter().map(|f| &f.0).collect::<Vec<_>>(),
                u.files.iter().map(|f| &f.0).collect::<Vec<_>>()
            );
        }
        let nodes: Vec<_> = off.iter().filter(|s| s.sandbox == Sandbox::Node).collect();
        assert_eq!(nodes.len(), off.len() - 1, "all but the endpoint are nodes");
        for n in &nodes {
            assert!(n.network.ends_with("-private"), "{}", n.network);
            assert!(n.published.is_empty(), "nodes publish nothing; the API is reached through the endpoint");
            assert!(n.volumes.iter().any(|(_, p)| p == "/var/lib/containerd"));
            assert_eq!(n.extra_hosts[0].0, super::API_NAME);
        }
        assert!(up[0].image.starts_with("kindest/node:v1.34.2@sha256:"), "{}", up[0].image);
        assert!(off[0].image.starts_with("voyager-sim/kube-node:"), "{}", off[0].image);
        let ep = off.last().unwrap();
        assert_eq!(ep.instance, super::ENDPOINT);
        assert_eq!(ep.extra_addresses.len(), 2);
    }
}
