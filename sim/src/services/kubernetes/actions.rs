//! Bringing a cluster up, as kind's create flow does it: a list of small
//! actions, each with a status line, run against node containers that are
//! already booted. A failed action says which step, on which node, and
//! what kubeadm printed last.
//!
//! 1. preload images on every node (from the node image into containerd;
//!    kind's image has them already)
//! 2. `kubeadm init` on the first control-plane node, as soon as its own
//!    images are in
//! 3. share the cluster's certificate authorities with the other
//!    control-plane nodes
//! 4. join the other control-plane nodes one by one (etcd adds members one
//!    at a time) while the workers join all at once, each once its images
//!    are in and the cluster exists
//! 5. write the host's kubeconfig (server: the endpoint on 127.0.0.1)
//! 6. storage: the default StorageClass
//! 7. wait until every node is Ready, CoreDNS answers and storage exists

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use futures_util::future::join_all;

use super::config::{ClusterPlan, NodePlan};
use super::{api, API_NAME, API_PORT, ENDPOINT, KUBEADM_CONFIG};
use crate::images::kubernetes::{worker_needs, NODE_IMAGES};
use crate::runtime::container;
use crate::services::ProvisionContext;
use crate::state::{self, RunState};

/// The default StorageClass: EBS-like volumes bound to their node's zone.
pub const STORAGE_CLASS: &str = "gp3";
/// Its provisioner (the stack's control plane runs it).
pub const PROVISIONER: &str = "ebs.voyager-sim.io";

/// A node is booted when systemd runs and containerd answers.
pub async fn booted(docker: &Docker, container: &str) -> Result<(), String> {
    let out =
        container::exec(docker, container, &["sh", "-c", "systemctl is-active containerd && ctr version >/dev/null"])
            .await
            .map_err(|e| e.to_string())?;
    if out.code == 0 {
        Ok(())
    } else {
        Err(format!(
            "containerd is not answering yet ({}); if this lasts, the engine may refuse what a node needs (a private cgroup namespace, every capability but SYS_RESOURCE): see `docker logs {container}`",
            out.output.trim()
        ))
    }
}

struct Run<'a> {
    cx: &'a ProvisionContext<'a>,
    plan: ClusterPlan,
    /// Node name → container name.
    containers: BTreeMap<String, String>,
    started: Instant,
}

impl Run<'_> {
    fn say(&self, msg: &str) {
        self.cx.progress.say(&format!("kubernetes: {msg} ({:.0}s)", self.started.elapsed().as_secs_f64()));
    }

    fn container<'n>(&'n self, node: &'n str) -> &'n str {
        self.containers.get(node).map(String::as_str).unwrap_or(node)
    }

    fn remaining(&self) -> Duration {
        self.cx.timeout.saturating_sub(self.started.elapsed())
    }

    async fn exec(&self, node: &str, argv: &[&str]) -> Result<String, String> {
        container::exec_ok(self.cx.docker, self.container(node), argv).await.map_err(|e| e.to_string())
    }
}

/// Bootstrap the cluster of a run whose node containers are booted.
pub async fn create(cx: &ProvisionContext<'_>) -> Result<(), String> {
    let stack = cx.state.parsed_stack()?;
    let plan = ClusterPlan::of(&stack).ok_or("the stack declares no Kubernetes")?;
    let containers = cx
        .state
        .instances
        .iter()
        .filter(|i| i.service == "kubernetes")
        .map(|i| (i.name.clone(), i.container.clone()))
        .collect();
    let run = Run { cx, plan, containers, started: Instant::now() };
    let steps = async {
        run.say(&format!("loading images into {} nodes", run.plan.nodes.len()));
        // Nodes load their images side by side; the first control-plane
        // node starts the cluster as soon as its own are in, and every
        // other node joins once its images are in and the cluster exists.
        let (created, cluster) = tokio::sync::watch::channel(false);
        let first = async {
            load_images(&run, run.plan.first_control_plane()).await?;
            init(&run).await?;
            share_certificates(&run).await?;
            let _ = created.send(true);
            Ok::<_, String>(())
        };
        // (Letting the first node load alone, then init while the others
        // load, measured slower: 155 s against 126 s to a ready cluster.)
        let (a, b) = tokio::join!(first, join_all_nodes(&run, cluster));
        a?;
        b?;
        write_kubeconfig(&run).await?;
        let ep = super::endpoint(cx.state).ok_or("the kubeconfig was not written")?;
        let client = ep.client().await?;
        storage(&run, &client).await?;
        wait_ready(&run, &client).await
    };
    match tokio::time::timeout(cx.timeout, steps).await {
        Ok(r) => r,
        Err(_) => Err(format!("the cluster was not ready within {:.0}s", cx.timeout.as_secs_f64())),
    }
}

/// The images a node needs, imported into containerd unless present.
fn image_script(node: &NodePlan) -> String {
    let mut s = String::from(
        "set -eu\nhave=$(ctr -n k8s.io images ls -q)\n\
         load() { printf '%s\\n' \"$have\" | grep -qxF \"$2\" && return 0\n\
         [ -f \"/kind/images/$1\" ] || { echo \"the node image has neither $2 nor /kind/images/$1\" >&2; exit 3; }\n\
         ctr -n k8s.io images import \"/kind/images/$1\" >/dev/null; }\n",
    );
    for e in NODE_IMAGES.iter().filter(|e| node.control_plane || worker_needs(e)) {
        s += &format!("load {} {}\n", e.file, e.reference);
    }
    s
}

async fn load_images(run: &Run<'_>, n: &NodePlan) -> Result<(), String> {
    run.exec(&n.name, &["sh", "-c", &image_script(n)])
        .await
        .map_err(|e| format!("loading images on {}: {e}", n.name))?;
    run.say(&format!("{}: images loaded", n.name));
    Ok(())
}

/// Until the first control-plane node has made the cluster (or failed to).
async fn cluster_created(mut cluster: tokio::sync::watch::Receiver<bool>) -> Result<(), String> {
    cluster.wait_for(|made| *made).await.map(|_| ()).map_err(|_| "the cluster was not created".to_string())
}

async fn init(run: &Run<'_>) -> Result<(), String> {
    let first = run.plan.first_control_plane();
    run.say(&format!("kubeadm init on {}", first.name));
    run.exec(&first.name, &["kubeadm", "init", "--config", KUBEADM_CONFIG, "--skip-token-print"])
        .await
        .map(|_| ())
        .map_err(|e| format!("kubeadm init on {} failed: {e}", first.name))
}

/// What a control-plane node needs to join as one: the cluster's CAs and
/// the service-account key pair (what kind copies, rather than kubeadm's
/// encrypted upload through the API).
const SHARED_PKI: &[&str] = &[
    "/etc/kubernetes/pki/ca.crt",
    "/etc/kubernetes/pki/ca.key",
    "/etc/kubernetes/pki/front-proxy-ca.crt",
    "/etc/kubernetes/pki/front-proxy-ca.key",
    "/etc/kubernetes/pki/sa.pub",
    "/etc/kubernetes/pki/sa.key",
    "/etc/kubernetes/pki/etcd/ca.crt",
    "/etc/kubernetes/pki/etcd/ca.key",
];

async fn share_certificates(run: &Run<'_>) -> Result<(), String> {
    let first = run.plan.first_control_plane().name.clone();
    let others: Vec<&NodePlan> = run.plan.nodes.iter().filter(|n| n.control_plane && n.name != first).collect();
    if others.is_empty() {
        return Ok(());
    }
    run.say("sharing the certificate authorities with the other control-plane nodes");
    let mut files = vec![];
    for path in SHARED_PKI {
        let body = run.exec(&first, &["cat", path]).await.map_err(|e| format!("reading {path} on {first}: {e}"))?;
        let mode = if path.ends_with(".key") { 0o600 } else { 0o644 };
        files.push((path.to_string(), mode, body.into_bytes()));
    }
    for n in others {
        container::upload(run.cx.docker, run.container(&n.name), &files).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `kubeadm join`, tried again after a reset when it fails: on a loaded
/// machine a join can time out waiting for etcd or the API.
async fn join(run: &Run<'_>, node: &NodePlan) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 1..=3 {
        match run.exec(&node.name, &["kubeadm", "join", "--config", KUBEADM_CONFIG]).await {
            Ok(_) => {
                run.say(&format!("{} joined", node.name));
                return Ok(());
            }
            Err(e) => {
                last = e;
                if run.remaining() < Duration::from_secs(60) {
                    break;
                }
                run.say(&format!("{} did not join (attempt {attempt}); resetting it and trying again", node.name));
                let _ = run.exec(&node.name, &["kubeadm", "reset", "--force", "--config", KUBEADM_CONFIG]).await;
            }
        }
    }
    Err(format!("kubeadm join on {} failed: {last}", node.name))
}

async fn join_all_nodes(run: &Run<'_>, cluster: tokio::sync::watch::Receiver<bool>) -> Result<(), String> {
    let first = run.plan.first_control_plane().name.clone();
    let cps: Vec<&NodePlan> = run.plan.nodes.iter().filter(|n| n.control_plane && n.name != first).collect();
    let workers: Vec<&NodePlan> = run.plan.nodes.iter().filter(|n| !n.control_plane).collect();
    let control_plane = async {
        let loads = join_all(cps.iter().map(|n| load_images(run, n))).await;
        loads.into_iter().collect::<Result<Vec<_>, _>>()?;
        cluster_created(cluster.clone()).await?;
        if !cps.is_empty() {
            run.say(&format!("joining {} control-plane nodes one by one", cps.len()));
        }
        for n in &cps {
            join(run, n).await?;
        }
        Ok::<_, String>(())
    };
    let workers = async {
        let r = join_all(workers.iter().map(|n| {
            let cluster = cluster.clone();
            async move {
                load_images(run, n).await?;
                cluster_created(cluster).await?;
                join(run, n).await
            }
        }))
        .await;
        r.into_iter().collect::<Result<Vec<_>, _>>().map(|_| ())
    };
    let (a, b) = tokio::join!(control_plane, workers);
    a.and(b)
}

/// The admin kubeconfig with the endpoint's host address as its server.
pub fn host_kubeconfig(admin_conf: &str, server: std::net::SocketAddr) -> Result<String, String> {
    let from = format!("server: https://{API_NAME}:{API_PORT}");
    if !admin_conf.contains(&from) {
        return Err(format!("admin.conf does not name the endpoint (`{from}`)"));
    }
    Ok(admin_conf.replace(&from, &format!("server: https://{server}")))
}

async fn write_kubeconfig(run: &Run<'_>) -> Result<(), String> {
    let first = run.plan.first_control_plane().name.clone();
    let admin = run.exec(&first, &["cat", "/etc/kubernetes/admin.conf"]).await?;
    let server = endpoint_host(run.cx.state).ok_or("the API endpoint publishes no port")?;
    let path = state::kubeconfig_path(&run.cx.state.stack);
    state::write_private(&path, host_kubeconfig(&admin, server)?.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    run.say(&format!("kubeconfig written to {}", path.display()));
    Ok(())
}

fn endpoint_host(state: &RunState) -> Option<std::net::SocketAddr> {
    state.instances.iter().find(|i| i.name == ENDPOINT)?.published.get(&API_PORT).copied()
}

async fn storage(run: &Run<'_>, client: &kube::Client) -> Result<(), String> {
    use k8s_openapi::api::storage::v1::StorageClass;
    run.say(&format!("storage class {STORAGE_CLASS} (zonal volumes, bound when a pod is scheduled)"));
    let body = serde_json::json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": { "storageclass.kubernetes.io/is-default-class": "true" }
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        // As with EBS: a volume is made in the zone its first pod lands in.
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": false
    });
    let api: kube::api::Api<StorageClass> = kube::api::Api::all(client.clone());
    api::create_or_keep(&api, &format!("StorageClass {STORAGE_CLASS}"), body).await.map(|_| ())
}

async fn wait_ready(run: &Run<'_>, client: &kube::Client) -> Result<(), String> {
    run.say("waiting for every node to be Ready and CoreDNS to answer");
    let want: Vec<String> = run.plan.nodes.iter().map(|n| n.name.clone()).collect();
    let mut last;
    loop {
        let check = async {
            api::all_nodes_ready(client, &want).await?;
            api::coredns_answers(client).await?;
            api::storage_class_present(client, STORAGE_CLASS).await
        };
        match check.await {
            Ok(()) => {
                run.say("cluster ready");
                return Ok(());
            }
            Err(e) => last = e,
        }
        if run.remaining().is_zero() {
            return Err(format!("the cluster was not ready: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Put a Docker image of this host into every running node's containerd,
/// as `kind load docker-image` does: no registry involved. Returns the
/// nodes it was loaded into.
pub async fn load_image(
    docker: &Docker,
    state: &RunState,
    image: &str,
    progress: &crate::progress::Progress,
) -> Result<Vec<String>, String> {
    use futures_util::StreamExt;
    if docker.inspect_image(image).await.is_err() {
        return Err(format!("no image `{image}` on this host's Docker engine (build or pull it first; `docker images` lists what is here)"));
    }
    let mut bytes = vec![];
    let mut stream = docker.export_image(image);
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.map_err(|e| format!("saving {image}: {e}"))?);
    }
    progress.say(&format!("kube load: {image} ({:.0} MB)", bytes.len() as f64 / 1e6));
    let file = format!("/kind/load/{}.tar", crate::runtime::labels::random_suffix());
    let nodes: Vec<&crate::state::InstanceState> =
        state.instances.iter().filter(|i| i.service == "kubernetes" && i.name != ENDPOINT).collect();
    let mut loaded = vec![];
    let files = vec![(file.clone(), 0o600, bytes)];
    let results = join_all(nodes.iter().map(|n| {
        let files = &files;
        let file = &file;
        async move {
            match container::state(docker, &n.container).await {
                Some(s) if s.running && !s.paused => {}
                _ => return Ok(None),
            }
            container::upload(docker, &n.container, files).await.map_err(|e| e.to_string())?;
            let r = container::exec_ok(
                docker,
                &n.container,
                &["sh", "-c", &format!("ctr -n k8s.io images import {file} >/dev/null; s=$?; rm -f {file}; exit $s")],
            )
            .await;
            r.map(|_| Some(n.name.clone())).map_err(|e| format!("importing {image} on {}: {e}", n.name))
        }
    }))
    .await;
    for r in results {
        if let Some(n) = r? {
            loaded.push(n);
        }
    }
    if loaded.is_empty() {
        return Err("no node is running to load into".into());
    }
    Ok(loaded)
}

/// Run a command in a pod's first container through its node's containerd,
/// not through the API server and kubelet: it works while a partition cuts
/// the API server off from that node, which is when tests need it.
pub async fn exec_in_pod(
    docker: &Docker,
    state: &RunState,
    namespace: &str,
    pod: &str,
    argv: &[&str],
) -> Result<container::ExecOutput, String> {
    use k8s_openapi::api::core::v1::Pod;
    let ep = super::endpoint(state).ok_or("the cluster is not up")?;
    let pods: kube::Api<Pod> = kube::Api::namespaced(ep.probe_client(Duration::from_secs(10)).await?, namespace);
    let p = pods.get(pod).await.map_err(|e| format!("reading pod {namespace}/{pod}: {e}"))?;
    let node =
        p.spec.as_ref().and_then(|s| s.node_name.clone()).ok_or_else(|| format!("pod {pod} is not scheduled"))?;
    let id = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.container_id.clone())
        .and_then(|id| id.strip_prefix("containerd://").map(str::to_string))
        .ok_or_else(|| format!("pod {pod} has no running container"))?;
    let inst =
        state.instances.iter().find(|i| i.name == node).ok_or_else(|| format!("node {node} is not in the run"))?;
    let exec_id = format!("vs-{}", crate::runtime::labels::random_suffix());
    let mut cmd = vec!["ctr", "-n", "k8s.io", "task", "exec", "--exec-id", &exec_id, &id];
    cmd.extend_from_slice(argv);
    container::exec(docker, &inst.container, &cmd).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_kubeconfig_points_at_the_endpoint_on_localhost() {
        let admin = "clusters:\n- cluster:\n    server: https://kube-api.voyager.internal:6443\n  name: voyager\n";
        let out = host_kubeconfig(admin, "127.0.0.1:40123".parse().unwrap()).unwrap();
        assert!(out.contains("server: https://127.0.0.1:40123\n"), "{out}");
        assert!(host_kubeconfig("server: https://elsewhere:6443", "127.0.0.1:1".parse().unwrap()).is_err());
    }

    #[test]
    fn workers_load_only_what_they_run() {
        let plan = ClusterPlan::of(&crate::harness::builtin_stack()).unwrap();
        let cp = image_script(plan.first_control_plane());
        let worker = image_script(plan.nodes.iter().find(|n| !n.control_plane).unwrap());
        assert!(cp.contains("kube-apiserver.tar") && cp.contains("etcd.tar"), "{cp}");
        assert!(!worker.contains("kube-apiserver.tar") && worker.contains("kube-proxy.tar"), "{worker}");
    }
}
