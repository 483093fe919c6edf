//! One Docker bridge network per subnet, with exactly the subnet's CIDR.

use std::collections::HashMap;

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptionsBuilder;
use bollard::Docker;

use super::labels::{self, Labels};
use super::RuntimeError;
use crate::stack::{Cidr, Stack, Tier};

/// The Docker network of one subnet: named from the AZ's name alone, so a
/// running stack's networks are found without its CIDRs.
pub fn network_name(stack: &str, az: &str, tier: Tier) -> String {
    labels::object_name(stack, &format!("{az}-{tier}"))
}

pub async fn create_all(docker: &Docker, stack: &Stack, labels: &Labels) -> Result<Vec<String>, RuntimeError> {
    let mut made = vec![];
    for (az, tier, cidr) in stack.subnets() {
        let name = network_name(&labels.stack, &az.name, tier);
        let bridge = super::link::bridge_name(&labels.stack, &az.name, tier);
        create(docker, &name, &bridge, cidr, labels).await?;
        made.push(name);
    }
    Ok(made)
}

async fn create(docker: &Docker, name: &str, bridge: &str, cidr: Cidr, labels: &Labels) -> Result<(), RuntimeError> {
    let req = NetworkCreateRequest {
        name: name.to_string(),
        driver: Some("bridge".into()),
        ipam: Some(Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(cidr.to_string()),
                gateway: Some(cidr.gateway().to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        // Ports published without an explicit address would otherwise listen
        // on every interface; the simulator's services are for this host only.
        options: Some(HashMap::from([
            ("com.docker.network.bridge.host_binding_ipv4".to_string(), "127.0.0.1".to_string()),
            // Named by us so rate caps find the device from names alone.
            ("com.docker.network.bridge.name".to_string(), bridge.to_string()),
        ])),
        labels: Some(labels.map()),
        ..Default::default()
    };
    match docker.create_network(req).await {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("overlap") => {
            let owner = owner_of_overlap(docker, cidr).await;
            let help = match &owner {
                Some((net, Some(stack))) => format!("network {net} belongs to voyager-sim stack `{stack}`: run `voyager-sim down --name {stack}`, or move this stack to another VPC range"),
                Some((net, None)) => format!("remove network {net} (`docker network rm {net}`) or move this stack to another VPC range"),
                None => "move this stack to another VPC range, or remove the overlapping Docker network".to_string(),
            };
            let owner = owner.map(|(n, _)| format!(" ({n})")).unwrap_or_default();
            Err(RuntimeError::SubnetTaken { network: name.to_string(), subnet: cidr.to_string(), owner, help })
        }
        Err(e) => Err(RuntimeError::docker(format!("create network {name} ({cidr})"))(e)),
    }
}

async fn owner_of_overlap(docker: &Docker, cidr: Cidr) -> Option<(String, Option<String>)> {
    let nets = docker.list_networks(Some(ListNetworksOptionsBuilder::new().build())).await.ok()?;
    nets.into_iter().find_map(|n| {
        let overlaps = n
            .ipam
            .as_ref()?
            .config
            .as_ref()?
            .iter()
            .any(|c| c.subnet.as_deref().and_then(|s| s.parse::<Cidr>().ok()).is_some_and(|s| s.overlaps(&cidr)));
        overlaps.then(|| {
            (n.name.clone().unwrap_or_default(), n.labels.as_ref().and_then(|l| l.get(labels::STACK).cloned()))
        })
    })
}
