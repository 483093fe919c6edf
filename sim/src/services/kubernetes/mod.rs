//! Kubernetes shaped like EKS: a control-plane node per AZ (stacked etcd)
//! behind a regional API endpoint in no AZ, worker nodes from the seed's
//! node groups on their AZs' private subnets, pods with VPC addresses, and
//! Kubernetes' own node-lifecycle timers from the stack file.
//!
//! Layout: `config` derives the cluster from the stack and renders the
//! files it is configured by (pure); `node` makes the containers; `actions`
//! bootstraps them as kind does (images, init, certificates, joins,
//! add-ons, wait), one step at a time with a status line; `api` is what the
//! harness asks of a running cluster (readiness, status, loading images).
//!
//! Nodes are containers that run systemd, containerd and kubelet without
//! `--privileged` (see `crate::spec::Sandbox::Node`); they are bootstrapped
//! with kubeadm through `docker exec`, the same way for our node image and
//! for kind's.

pub mod actions;
pub mod api;
pub mod config;
pub mod node;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::services::{ProbeContext, ProvisionContext, SpecContext};
use crate::spec::ContainerSpec;
use crate::state::{self, InstanceState, RunState};

pub use api::KubernetesEndpoint;
pub use config::ClusterPlan;

pub const API_PORT: u16 = 6443;
/// The regional API endpoint (HAProxy): in no AZ, like EKS's.
pub const ENDPOINT: &str = "kube-api";
/// The endpoint's host number in every AZ's private subnet (below what
/// stack files may use; `postgres-endpoints` is .5).
pub const ENDPOINT_HOST: u32 = 6;
/// The name nodes reach the API by; each node resolves it to the
/// endpoint's address in its own AZ.
pub const API_NAME: &str = "kube-api.voyager.internal";
/// Where each node finds its kubeadm configuration.
pub const KUBEADM_CONFIG: &str = "/kind/voyager-kubeadm.yaml";

/// The service's contract with the harness (see [`super::Service`]).
pub struct Kubernetes;

#[async_trait::async_trait]
impl super::Service for Kubernetes {
    fn specs(&self, cx: &SpecContext) -> Vec<ContainerSpec> {
        match ClusterPlan::of(cx.stack) {
            Some(plan) => node::specs(cx, &plan),
            None => vec![],
        }
    }

    /// Nodes need a rootful engine that grants a private cgroup namespace
    /// and every capability but CAP_SYS_RESOURCE, and a kernel log device.
    async fn preflight(&self, docker: &bollard::Docker) -> Result<(), (String, String)> {
        let info = docker.info().await.map_err(|e| {
            (format!("cannot ask the Docker engine about itself: {e}"), "check `docker info`".to_string())
        })?;
        let opts = info.security_options.unwrap_or_default();
        if opts.iter().any(|o| o.contains("rootless")) {
            return Err((
                "Kubernetes nodes cannot run on a rootless Docker engine: kubelet and containerd need root's capabilities and their own cgroups".into(),
                "use a rootful engine, or start the stack without Kubernetes (`--only` naming the other services)".into(),
            ));
        }
        if opts.iter().any(|o| o.contains("userns")) {
            return Err((
                "Kubernetes nodes cannot run with user-namespace remapping on (dockerd --userns-remap): containerd inside a node needs real root".into(),
                "turn off userns-remap for this engine, or start the stack without Kubernetes".into(),
            ));
        }
        if cfg!(target_os = "linux")
            && info.os_type.as_deref() == Some("linux")
            && !std::path::Path::new("/dev/kmsg").exists()
        {
            return Err((
                "this host has no /dev/kmsg, which kubelet reads for out-of-memory events".into(),
                "run on a host (or VM) with a kernel log device, or start the stack without Kubernetes".into(),
            ));
        }
        inotify_room()
    }

    /// Before the cluster exists a node is ready when its systemd runs and
    /// containerd answers; after, when the API says it is Ready.
    async fn probe(&self, cx: &ProbeContext<'_>, inst: &InstanceState) -> Result<(), String> {
        let bootstrapped = kubeconfig(cx.state).is_file();
        match (inst.name == ENDPOINT, bootstrapped) {
            (true, false) => api::tcp_open(endpoint_address(cx.state).ok_or("the endpoint publishes no port")?).await,
            (true, true) => api::endpoint_ready(&endpoint(cx.state).ok_or("no endpoint")?).await,
            (false, false) => actions::booted(cx.docker, &inst.container).await,
            (false, true) => api::node_ready(&endpoint(cx.state).ok_or("no endpoint")?, &inst.name).await,
        }
    }

    async fn provision(&self, cx: &ProvisionContext<'_>) -> Result<(), String> {
        actions::create(cx).await
    }

    async fn roles(&self, state: &RunState) -> BTreeMap<String, String> {
        match endpoint(state) {
            Some(ep) => api::node_roles(&ep).await,
            None => BTreeMap::new(),
        }
    }

    fn env(&self, state: &RunState) -> Vec<(String, String)> {
        match endpoint(state) {
            Some(ep) => vec![("KUBECONFIG".into(), ep.kubeconfig.display().to_string())],
            None => vec![],
        }
    }
}

/// Tolerations of every node group's taints but not of the node-lifecycle
/// ones, for a workload that may run on any worker: eviction after the
/// stack's toleration is what runs measure.
pub fn group_tolerations(stack: &crate::stack::Stack) -> Vec<serde_json::Value> {
    let mut tolerations = vec![];
    let mut seen = std::collections::BTreeSet::new();
    for t in stack.kubernetes.iter().flat_map(|k| &k.node_groups).flat_map(|g| &g.taints) {
        if seen.insert((t.key.clone(), t.effect)) {
            tolerations.push(serde_json::json!({ "key": t.key, "operator": "Exists", "effect": t.effect.to_string() }));
        }
    }
    tolerations
}

/// A node selector of workers only: EKS runs no pods on its control plane.
pub fn workers_only() -> serde_json::Value {
    serde_json::json!({ "nodeSelectorTerms": [
        { "matchExpressions": [{ "key": "eks.amazonaws.com/nodegroup", "operator": "Exists" }] }
    ] })
}

/// Where a run's kubeconfig is (it exists once the cluster is up).
pub fn kubeconfig(state: &RunState) -> PathBuf {
    state::kubeconfig_path(&state.stack)
}

fn endpoint_address(state: &RunState) -> Option<SocketAddr> {
    let inst = state.instances.iter().find(|i| i.name == ENDPOINT && i.service == "kubernetes")?;
    inst.published.get(&API_PORT).copied()
}

/// The cluster of a run, once it is bootstrapped.
pub fn endpoint(state: &RunState) -> Option<KubernetesEndpoint> {
    let server = endpoint_address(state)?;
    let kubeconfig = kubeconfig(state);
    kubeconfig.is_file().then_some(KubernetesEndpoint { kubeconfig, server })
}

/// What kind recommends for several clusters on one host: every node's
/// systemd, containerd and kubelet hold inotify instances of the host's
/// root, and at Linux's default of 128 a node restarted beside a second
/// cluster finds none and exits 255 without a word (an AZ healed while a
/// test suite ran its own cluster did exactly that).
const INOTIFY: [(&str, u64); 2] =
    [("/proc/sys/fs/inotify/max_user_instances", 8192), ("/proc/sys/fs/inotify/max_user_watches", 524_288)];

/// Raise the host's inotify limits when they are below what nodes need and
/// this process may (root on the Docker host); otherwise refuse with the fix.
fn inotify_room() -> Result<(), (String, String)> {
    for (path, want) in INOTIFY {
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        let have: u64 = text.trim().parse().unwrap_or(0);
        if have >= want {
            continue;
        }
        if std::fs::write(path, want.to_string()).is_err() {
            let key = path.trim_start_matches("/proc/sys/").replace('/', ".");
            return Err((
                format!("{key} is {have}: Kubernetes nodes run out of inotify instances and exit (they need {want})"),
                format!("as root: sysctl -w {key}={want}"),
            ));
        }
    }
    Ok(())
}
