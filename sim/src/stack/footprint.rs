//! What a stack costs before it runs: the memory each instance takes idle
//! after ready, as `voyager-bench footprint` measured it on the built-in
//! stack (offline images, an idle minute after ready, the cgroup's figure
//! that `docker stats` reads). An estimate to decide by, not a limit: load
//! grows Kafka's and PostgreSQL's share, and upstream images differ a little.

use super::{ServiceKind, Stack};

/// MiB an instance of `kind` in `role` takes, idle.
pub fn instance_mib(kind: ServiceKind, role: &str) -> u32 {
    match (kind, role) {
        (ServiceKind::Kafka, "controller") => 155,
        // 324-381 MiB with the JMX exporter agent in the JVM.
        (ServiceKind::Kafka, _) => 360,
        // The primary's figure holds its WAL and the first base backup.
        (ServiceKind::Postgres, "primary") => 175,
        (ServiceKind::Postgres, "endpoint") => 10,
        (ServiceKind::Postgres, _) => 30,
        (ServiceKind::Influxdb, _) => 10,
        (ServiceKind::Auth0 | ServiceKind::Vault, _) => 2,
        (ServiceKind::S3, _) => 500,
        // Run as pods in the built-in stack; as a container, about what
        // the other small servers of the workspace take.
        (ServiceKind::Api, _) => 10,
        (ServiceKind::Alb, _) => 13,
        (ServiceKind::Nlb, _) => 8,
        (ServiceKind::Route53, _) => 50,
        // The server, one postgres exporter per database node and
        // kube-state-metrics (206 MiB idle; 221 MiB after five minutes of
        // scenarios: its TSDB head grows with a run).
        (ServiceKind::Prometheus, _) => 205,
        // A node's figure holds its pods (the API's among them).
        (ServiceKind::Kubernetes, "control-plane") => 615,
        (ServiceKind::Kubernetes, "endpoint") => 8,
        (ServiceKind::Kubernetes, _) => 165,
    }
}

/// The simulator's own containers (the control plane, one link agent per
/// AZ for the inter-AZ delay), which no stack file declares.
pub const SIMULATOR_MIB: u32 = 5;

/// A stack's expected memory, per service and in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    /// Service, its containers, their MiB; in the stack's order.
    pub services: Vec<(ServiceKind, usize, u32)>,
    pub total_mib: u32,
}

/// Regional parts a service runs beside its declared instances.
fn regional(stack: &Stack, kind: ServiceKind) -> Vec<&'static str> {
    match kind {
        ServiceKind::Postgres => vec!["endpoint"],
        // Route 53's one server is in no AZ and no stack file declares it.
        ServiceKind::Route53 => vec!["resolver"],
        ServiceKind::Kubernetes if stack.kubernetes.is_some() => vec!["endpoint"],
        _ => vec![],
    }
}

pub fn of(stack: &Stack) -> Footprint {
    let mut services = vec![];
    for svc in &stack.services {
        // With a cluster, the API runs as pods inside the worker nodes,
        // whose figure already holds them.
        if svc.kind == ServiceKind::Api && stack.api_on_kubernetes() {
            continue;
        }
        let roles: Vec<&str> = svc.instances.iter().map(|i| i.role.as_str()).chain(regional(stack, svc.kind)).collect();
        let mib = roles.iter().map(|r| instance_mib(svc.kind, r)).sum();
        services.push((svc.kind, roles.len(), mib));
    }
    let total_mib = services.iter().map(|s| s.2).sum::<u32>() + SIMULATOR_MIB;
    Footprint { services, total_mib }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_stack_costs_the_sum_of_its_parts() {
        let stack = crate::harness::builtin_stack();
        let f = of(&stack);
        let kafka = f.services.iter().find(|s| s.0 == ServiceKind::Kafka).unwrap();
        assert_eq!(
            (kafka.1, kafka.2),
            (6, 3 * instance_mib(ServiceKind::Kafka, "broker") + 3 * instance_mib(ServiceKind::Kafka, "controller"))
        );
        let pg = f.services.iter().find(|s| s.0 == ServiceKind::Postgres).unwrap();
        assert_eq!(pg.1, 4, "three nodes and the regional endpoints");
        assert!(f.services.iter().all(|s| s.0 != ServiceKind::Api), "the API's pods are inside the nodes");
        assert_eq!(f.total_mib, f.services.iter().map(|s| s.2).sum::<u32>() + SIMULATOR_MIB);
    }

    #[test]
    fn without_a_cluster_the_api_is_counted_as_containers() {
        let mut stack = crate::harness::builtin_stack();
        stack.services.retain(|s| s.kind != ServiceKind::Kubernetes);
        stack.kubernetes = None;
        let f = of(&stack);
        let api = f.services.iter().find(|s| s.0 == ServiceKind::Api).unwrap();
        assert_eq!(api.1, 3);
        assert!(f.services.iter().all(|s| s.0 != ServiceKind::Kubernetes));
    }
}
