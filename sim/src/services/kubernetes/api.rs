//! What the harness asks of a running cluster, through its API as any
//! client would (kube-rs): whether a node is Ready, whether CoreDNS
//! answers, what each node is doing.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams};

/// Where a cluster is reached from the host: a kubeconfig whose server is
/// the regional endpoint on 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesEndpoint {
    /// A file of the run's state directory, mode 0600 (it holds the
    /// cluster's admin credentials); what `env` exports as `KUBECONFIG`.
    pub kubeconfig: PathBuf,
    /// 127.0.0.1 and the endpoint's published port.
    pub server: SocketAddr,
}

impl KubernetesEndpoint {
    /// A client with kube-rs' usual timeouts (long reads for watches).
    pub async fn client(&self) -> Result<kube::Client, String> {
        self.client_with(None).await
    }

    /// A client whose every request gives up after `read`: for probes.
    pub async fn probe_client(&self, read: Duration) -> Result<kube::Client, String> {
        self.client_with(Some(read)).await
    }

    async fn client_with(&self, read: Option<Duration>) -> Result<kube::Client, String> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| format!("reading {}: {e}", self.kubeconfig.display()))?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| format!("kubeconfig {}: {e}", self.kubeconfig.display()))?;
        config.connect_timeout = Some(Duration::from_secs(3));
        if read.is_some() {
            config.read_timeout = read;
        }
        kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
    }
}

/// Create an object from its JSON unless one of its name exists (made by an
/// earlier start of the stack, an earlier pass of a controller, or an
/// earlier try of this call whose answer was lost): whether this call made
/// it.
pub async fn create_or_keep<K>(api: &Api<K>, what: &str, body: serde_json::Value) -> Result<bool, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(body).map_err(|e| format!("{what}: {e}"))?;
    retrying(&format!("creating {what}"), || async {
        match api.create(&kube::api::PostParams::default(), &obj).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    })
    .await
}

/// How long a write to the API server is tried again while the server is
/// busy or out of reach: a cold, loaded laptop bringing a stack up can
/// keep the regional endpoint from taking a connection for seconds.
const PATIENCE: Duration = Duration::from_secs(60);

/// Whether a request failed without an answer, or with one that says "not
/// now" (429, 5xx): what kubectl and controllers try again, unlike a
/// refusal (4xx), which would only be refused again.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Service(_) | kube::Error::HyperError(_) => true,
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        _ => false,
    }
}

/// `call` once a second until it succeeds, fails for good, or
/// [`PATIENCE`] has passed; the error names `what` was being done.
pub async fn retrying<T, F, Fut>(what: &str, mut call: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(1)).await
            }
            Err(e) if transient(&e) => return Err(format!("{what}: {e} (still, after {}s)", PATIENCE.as_secs())),
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

pub(super) async fn tcp_open(addr: SocketAddr) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("{addr} did not accept a connection within 2s"))?
        .map(|_| ())
        .map_err(|e| format!("{addr}: {e}"))
}

/// The API answers its readiness endpoint through the regional endpoint.
pub(super) async fn endpoint_ready(ep: &KubernetesEndpoint) -> Result<(), String> {
    let client = ep.probe_client(Duration::from_secs(5)).await?;
    let req = http::Request::get("/readyz").body(Vec::new()).map_err(|e| e.to_string())?;
    let text = client.request_text(req).await.map_err(|e| format!("/readyz: {e}"))?;
    if text.trim() == "ok" {
        Ok(())
    } else {
        Err(format!("/readyz said {text}"))
    }
}

/// Taints the node lifecycle controller puts on a node that is (or was a
/// moment ago) not Ready; it lifts them a while after the kubelet reports
/// Ready again, and until then nothing new schedules there.
const LIFECYCLE_TAINTS: [&str; 2] = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"];

/// Whether a node is Ready and usable: its Ready condition True and no
/// lifecycle taint left on it. Why not, if not.
pub fn node_readiness(n: &Node) -> Result<(), String> {
    let conds = n.status.as_ref().and_then(|s| s.conditions.as_ref());
    let taints = n.spec.as_ref().and_then(|s| s.taints.as_ref());
    let lifecycle = taints.and_then(|ts| ts.iter().find(|t| LIFECYCLE_TAINTS.contains(&t.key.as_str())));
    match conds.and_then(|c| c.iter().find(|c| c.type_ == "Ready")) {
        Some(c) if c.status == "True" => match lifecycle {
            None => Ok(()),
            Some(t) => Err(format!("Ready, but still tainted {}:{}", t.key, t.effect)),
        },
        Some(c) => Err(format!("Ready is {} ({})", c.status, c.message.clone().unwrap_or_default())),
        None => Err("no Ready condition yet".into()),
    }
}

pub(super) async fn node_ready(ep: &KubernetesEndpoint, name: &str) -> Result<(), String> {
    let client = ep.probe_client(Duration::from_secs(5)).await?;
    let nodes: Api<Node> = Api::all(client);
    let n = nodes.get_opt(name).await.map_err(|e| format!("reading node {name}: {e}"))?;
    node_readiness(&n.ok_or_else(|| format!("node {name} is not registered"))?)
}

/// Every node the plan declares is registered and Ready.
pub async fn all_nodes_ready(client: &kube::Client, want: &[String]) -> Result<(), String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await.map_err(|e| format!("listing nodes: {e}"))?;
    let mut waiting = vec![];
    for name in want {
        match list.items.iter().find(|n| n.metadata.name.as_deref() == Some(name)) {
            None => waiting.push(format!("{name} not registered")),
            Some(n) => {
                if let Err(e) = node_readiness(n) {
                    waiting.push(format!("{name}: {e}"));
                }
            }
        }
    }
    if waiting.is_empty() {
        Ok(())
    } else {
        Err(waiting.join("; "))
    }
}

/// CoreDNS answers: its Deployment has a ready replica, and asking a
/// CoreDNS pod (at its VPC address) for the API's service name gives the
/// `kubernetes` Service's ClusterIP.
pub async fn coredns_answers(client: &kube::Client) -> Result<(), String> {
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
    let d = deps.get_opt("coredns").await.map_err(|e| format!("reading CoreDNS: {e}"))?.ok_or("no CoreDNS yet")?;
    let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    if ready == 0 {
        return Err("CoreDNS has no ready replica".into());
    }
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let want: Ipv4Addr = svcs
        .get("kubernetes")
        .await
        .map_err(|e| format!("reading the kubernetes Service: {e}"))?
        .spec
        .and_then(|s| s.cluster_ip)
        .and_then(|ip| ip.parse().ok())
        .ok_or("the kubernetes Service has no ClusterIP")?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let list = pods
        .list(&ListParams::default().labels("k8s-app=kube-dns"))
        .await
        .map_err(|e| format!("listing CoreDNS pods: {e}"))?;
    let mut last = "no CoreDNS pod has an address".to_string();
    for ip in list.items.iter().filter_map(|p| p.status.as_ref()?.pod_ip.as_ref()?.parse::<Ipv4Addr>().ok()) {
        match crate::dns::query_a(
            SocketAddr::new(ip.into(), 53),
            "kubernetes.default.svc.cluster.local",
            Duration::from_secs(2),
        )
        .await
        {
            Ok(a) if a.a.iter().any(|(got, _)| *got == want) => return Ok(()),
            Ok(a) => last = format!("CoreDNS at {ip} answered {a:?}, not {want}"),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The default StorageClass exists.
pub async fn storage_class_present(client: &kube::Client, name: &str) -> Result<(), String> {
    let scs: Api<StorageClass> = Api::all(client.clone());
    scs.get_opt(name)
        .await
        .map_err(|e| format!("reading StorageClass {name}: {e}"))?
        .map(|_| ())
        .ok_or_else(|| format!("no StorageClass {name}"))
}

/// For `status`: each node's group (or control plane), instance type,
/// Ready state and how many pods it runs.
pub(super) async fn node_roles(ep: &KubernetesEndpoint) -> BTreeMap<String, String> {
    let Ok(client) = ep.probe_client(Duration::from_secs(5)).await else { return BTreeMap::new() };
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client);
    let (Ok(nodes), Ok(pods)) = (nodes.list(&ListParams::default()).await, pods.list(&ListParams::default()).await)
    else {
        return BTreeMap::new();
    };
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pods.items {
        let running = p.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|ph| ph == "Running");
        if let (true, Some(n)) = (running, p.spec.as_ref().and_then(|s| s.node_name.clone())) {
            *per_node.entry(n).or_default() += 1;
        }
    }
    nodes
        .items
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            let labels = n.metadata.labels.clone().unwrap_or_default();
            let what = match labels.get("eks.amazonaws.com/nodegroup") {
                Some(g) => {
                    format!("{g} {}", labels.get("node.kubernetes.io/instance-type").cloned().unwrap_or_default())
                }
                None => "control plane".to_string(),
            };
            let ready = if node_readiness(n).is_ok() { "Ready" } else { "NotReady" };
            let count = per_node.get(&name).copied().unwrap_or(0);
            Some((name.clone(), format!("{}, {ready}, {count} pods", what.trim())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ready: &str, taints: &[&str]) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "n" },
            "spec": { "taints": taints.iter().map(|k| serde_json::json!({ "key": k, "effect": "NoExecute" })).collect::<Vec<_>>() },
            "status": { "conditions": [{ "type": "Ready", "status": ready }] }
        }))
        .unwrap()
    }

    #[test]
    fn a_node_is_ready_only_once_its_lifecycle_taints_are_lifted() {
        assert!(node_readiness(&node("True", &[])).is_ok());
        assert!(node_readiness(&node("True", &["workload-type"])).is_ok(), "a group's own taint is not a wait");
        let e = node_readiness(&node("True", &["node.kubernetes.io/not-ready"])).unwrap_err();
        assert!(e.contains("still tainted node.kubernetes.io/not-ready"), "{e}");
        assert!(node_readiness(&node("True", &["node.kubernetes.io/unreachable"])).is_err());
        assert!(node_readiness(&node("Unknown", &[])).is_err());
    }

    #[test]
    fn only_a_missing_answer_or_a_busy_server_is_tried_again() {
        let api = |code| kube::Error::Api(Box::new(kube::core::Status::failure("x", "y").with_code(code)));
        let lost: Box<dyn std::error::Error + Send + Sync> = "client error (Connect)".into();
        assert!(transient(&kube::Error::Service(lost)), "a connection not made");
        assert!(transient(&api(503)) && transient(&api(429)) && transient(&api(500)));
        assert!(!transient(&api(409)) && !transient(&api(422)) && !transient(&api(403)), "a refusal stands");
    }
}
