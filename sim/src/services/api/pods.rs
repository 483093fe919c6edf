//! `voyager-api` on the stack's cluster, as the platform runs its services
//! on EKS: an image of the binary (built here, loaded into every node's
//! containerd as `kind load` does, no registry), a Deployment spread over
//! the zones, its secrets in a Secret, and a Service whose EndpointSlices
//! the load balancers' target groups follow ([`crate::services::targets`]).
//!
//! A pod is Ready once its startup probe passed the deep health check
//! (every dependency answered it, with the pod's own leased credentials);
//! after that its readiness is the shallow check, so a dependency's
//! failover does not take every pod out of every target group at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service as KubeService};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{json, Value};

use super::{settings, API, PORT, SECRETS};
use crate::services::kubernetes::{self, config::ClusterPlan};
use crate::services::targets::{self, NAMESPACE, SERVICE};
use crate::services::ProvisionContext;
use crate::stack::{ServiceKind, Stack};
use crate::state::{Credentials, RunState};

/// The Secret the pods read [`SECRETS`] from.
pub const SECRET: &str = "voyager-api";

/// How many replicas: one per instance the stack declares.
pub fn replicas(stack: &Stack) -> usize {
    stack.service(ServiceKind::Api).map(|s| s.instances.len()).unwrap_or(0)
}

/// Each node's zone, `node=zone,...`: how a pod finds its zone.
fn node_zones(stack: &Stack) -> String {
    let (Some(plan), Some(k)) = (ClusterPlan::of(stack), stack.kubernetes.as_ref()) else { return String::new() };
    plan.nodes.iter().map(|n| format!("{}={}", n.name, k.zone(&n.az))).collect::<Vec<_>>().join(",")
}

/// The namespace, Secret, Service and Deployment, in the order they are
/// applied. Pure: what the cluster is asked for, from the stack.
pub fn manifests(stack: &Stack, c: &Credentials, auth0_host_port: u16, image: &str) -> Vec<Value> {
    let all = settings(stack, c, auth0_host_port);
    let (secret, plain): (BTreeMap<_, _>, BTreeMap<_, _>) =
        all.into_iter().partition(|(k, _)| SECRETS.contains(&k.as_str()));
    let mut env: Vec<Value> = plain.iter().map(|(k, v)| json!({ "name": k, "value": v })).collect();
    env.push(json!({ "name": "VOYAGER_API_NODE", "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } }));
    env.push(json!({ "name": "VOYAGER_API_NODE_ZONES", "value": node_zones(stack) }));
    env.extend(
        secret.keys().map(|k| json!({ "name": k, "valueFrom": { "secretKeyRef": { "name": SECRET, "key": k } } })),
    );
    let labels = json!({ "app": SERVICE });
    let http = |path: &str, period: u32, failures: u32| {
        json!({ "httpGet": { "path": path, "port": PORT }, "periodSeconds": period,
                "timeoutSeconds": 10, "failureThreshold": failures })
    };
    vec![
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NAMESPACE } }),
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": SECRET, "namespace": NAMESPACE },
            "type": "Opaque",
            "stringData": secret,
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": SERVICE, "namespace": NAMESPACE },
            "spec": { "selector": labels, "ports": [{ "name": "http", "port": PORT, "targetPort": PORT }] }
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": SERVICE, "namespace": NAMESPACE, "labels": labels },
            "spec": {
                "replicas": replicas(stack),
                "selector": { "matchLabels": labels },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        // The preStop pause lets the load balancers drain
                        // the pod before it stops taking requests, as the
                        // AWS Load Balancer Controller's guidance has it.
                        "terminationGracePeriodSeconds": 15,
                        "tolerations": kubernetes::group_tolerations(stack),
                        "affinity": { "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": kubernetes::workers_only() } },
                        "topologySpreadConstraints": [{
                            "maxSkew": 1,
                            "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "DoNotSchedule",
                            // A lost zone's tainted node does not count, so
                            // its pod is rescheduled into the others.
                            "nodeTaintsPolicy": "Honor",
                            "labelSelector": { "matchLabels": labels }
                        }],
                        "containers": [{
                            "name": "api",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "ports": [{ "name": "http", "containerPort": PORT }],
                            "env": env,
                            "startupProbe": http("/readyz", 2, 150),
                            "readinessProbe": http("/healthz", 5, 2),
                            "livenessProbe": http("/healthz", 10, 3),
                            "lifecycle": { "preStop": { "sleep": { "seconds": 5 } } },
                        }]
                    }
                }
            }
        }),
    ]
}

async fn apply(client: &kube::Client, m: &Value) -> Result<(), String> {
    let name = m["metadata"]["name"].as_str().unwrap_or_default();
    let kind = m["kind"].as_str().unwrap_or_default();
    let pp = PatchParams::apply("voyager-sim").force();
    let patch = Patch::Apply(m);
    if !["Namespace", "Secret", "Service", "Deployment"].contains(&kind) {
        return Err(format!("no way to apply a {kind}"));
    }
    // Server-side apply says the whole object each time, so a try whose
    // answer was lost is simply said again.
    kubernetes::api::retrying(&format!("applying {kind} {NAMESPACE}/{name}"), || async {
        match kind {
            "Namespace" => Api::<Namespace>::all(client.clone()).patch(name, &pp, &patch).await.map(|_| ()),
            "Secret" => Api::<Secret>::namespaced(client.clone(), NAMESPACE).patch(name, &pp, &patch).await.map(|_| ()),
            "Service" => {
                Api::<KubeService>::namespaced(client.clone(), NAMESPACE).patch(name, &pp, &patch).await.map(|_| ())
            }
            "Deployment" => {
                Api::<Deployment>::namespaced(client.clone(), NAMESPACE).patch(name, &pp, &patch).await.map(|_| ())
            }
            other => unreachable!("checked above: {other}"),
        }
    })
    .await
}

/// Why each pod that is not Ready is not, for an error worth reading.
async fn pod_problems(client: &kube::Client) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let Ok(list) = pods.list(&ListParams::default().labels(&format!("app={SERVICE}"))).await else {
        return "the pods could not be listed".into();
    };
    let lines: Vec<String> = list
        .items
        .iter()
        .map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            let status = p.status.as_ref();
            let waiting = status
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .map(|w| {
                    format!("{}: {}", w.reason.clone().unwrap_or_default(), w.message.clone().unwrap_or_default())
                });
            let phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_else(|| "unscheduled".into());
            format!("{name} on {node}: {phase}{}", waiting.map(|w| format!(" ({w})")).unwrap_or_default())
        })
        .collect();
    if lines.is_empty() {
        "no pod was created (`kubectl -n voyager describe deployment voyager-api` says why)".into()
    } else {
        lines.join("; ")
    }
}

/// Build and load the image, apply the manifests, wait until every
/// replica is Ready, then register the pods with the load balancers.
pub async fn deploy(cx: &ProvisionContext<'_>, stack: &Stack) -> Result<(), String> {
    let (state, p) = (cx.state, cx.progress);
    let ep = kubernetes::endpoint(state).ok_or("the API runs on the cluster, which is not up")?;
    let client = ep.probe_client(Duration::from_secs(10)).await?;
    let binary = API.locate()?;
    let base = crate::images::companion_base(state.images);
    let image = crate::images::build::program_image(cx.docker, &base, API.binary, &binary, p)
        .await
        .map_err(|e| e.to_string())?;
    kubernetes::actions::load_image(cx.docker, state, &image, p).await?;
    let auth0_host_port = auth0_host_port(state);
    for m in manifests(stack, &state.credentials, auth0_host_port, &image) {
        apply(&client, &m).await?;
    }
    let want = replicas(stack) as i32;
    p.say(&format!("voyager-api: a Deployment of {want} pods over the zones, namespace {NAMESPACE}"));
    let deps: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + cx.timeout;
    let mut last = -1;
    loop {
        let ready = deps.get(SERVICE).await.ok().and_then(|d| d.status).and_then(|s| s.ready_replicas).unwrap_or(0);
        if ready != last {
            p.say(&format!("voyager-api: {ready}/{want} pods ready"));
            last = ready;
        }
        if ready >= want {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{ready} of {want} pods of voyager-api were ready within {}s: {}",
                cx.timeout.as_secs(),
                pod_problems(&client).await
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if stack.alb.is_some() || stack.nlb.is_some() {
        targets::register_until_routed(&client, state, stack, cx.timeout, p).await?;
    }
    Ok(())
}

/// What is unsettled about the API's pods, after acting on it as a
/// descheduler would: a lost zone's pods were rescheduled into the others
/// and stay there after the zone is back (a Deployment never moves a
/// running pod), so while one zone with a Ready worker has two more than
/// another, one pod of the crowded zone is deleted and its replacement
/// scheduled by the spread constraint. One at a time, only once every
/// replica is Ready. `None` when the API is not on the cluster or is
/// spread as declared.
pub async fn respread(state: &RunState) -> Option<String> {
    use k8s_openapi::api::core::v1::Node;
    let stack = state.parsed_stack().ok()?;
    if !stack.api_on_kubernetes() {
        return None;
    }
    let client = match kubernetes::endpoint(state)?.probe_client(Duration::from_secs(10)).await {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let lp = ListParams::default().labels(&format!("app={SERVICE}"));
    let node_api: Api<Node> = Api::all(client);
    let all = ListParams::default();
    let (list, nodes) = match tokio::join!(pods.list(&lp), node_api.list(&all)) {
        (Ok(p), Ok(n)) => (p.items, n.items),
        (Err(e), _) | (_, Err(e)) => return Some(format!("reading the API's pods: {e}")),
    };
    let want = replicas(&stack);
    let ready: Vec<&Pod> = list
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .collect();
    if ready.len() != want || list.len() != want {
        return Some(format!("voyager-api: {} of {want} pods ready ({} in all)", ready.len(), list.len()));
    }
    let zone_label = "topology.kubernetes.io/zone";
    let node_zone: BTreeMap<String, String> = nodes
        .iter()
        .filter(|n| kubernetes::api::node_readiness(n).is_ok())
        .filter(|n| n.metadata.labels.as_ref().is_some_and(|l| l.contains_key("eks.amazonaws.com/nodegroup")))
        .filter_map(|n| Some((n.metadata.name.clone()?, n.metadata.labels.as_ref()?.get(zone_label)?.clone())))
        .collect();
    let mut per_zone: BTreeMap<&str, Vec<&Pod>> = node_zone.values().map(|z| (z.as_str(), vec![])).collect();
    for p in &ready {
        let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default();
        if let Some(z) = node_zone.get(node) {
            per_zone.entry(z.as_str()).or_default().push(p);
        }
    }
    let (crowded, most) = per_zone.iter().max_by_key(|(_, v)| v.len())?;
    let (empty, least) = per_zone.iter().min_by_key(|(_, v)| v.len())?;
    if most.len() <= least.len() + 1 {
        return None;
    }
    let name = most[0].metadata.name.clone()?;
    if let Err(e) = pods.delete(&name, &Default::default()).await {
        return Some(format!("moving pod {name}: {e}"));
    }
    Some(format!("voyager-api: {} pods in {crowded}, {} in {empty}; moved {name}", most.len(), least.len()))
}

/// A pod of the API as `status` lists it.
#[derive(Debug, Clone)]
pub struct PodView {
    pub name: String,
    pub az: String,
    pub address: String,
    pub node: String,
    pub ready: bool,
    /// Why it is not Ready, when it is not.
    pub detail: Option<String>,
}

/// The API's pods now; empty when it is not on the cluster, an error when
/// the cluster does not answer.
pub async fn pods(state: &RunState) -> Result<Vec<PodView>, String> {
    let Ok(stack) = state.parsed_stack() else { return Ok(vec![]) };
    if !stack.api_on_kubernetes() {
        return Ok(vec![]);
    }
    let ep = kubernetes::endpoint(state).ok_or("the cluster is not up")?;
    let client = ep.probe_client(Duration::from_secs(5)).await?;
    let api: Api<Pod> = Api::namespaced(client, NAMESPACE);
    let list = api
        .list(&ListParams::default().labels(&format!("app={SERVICE}")))
        .await
        .map_err(|e| format!("listing the API's pods: {e}"))?;
    Ok(list
        .items
        .iter()
        .map(|p| {
            let status = p.status.as_ref();
            let address = status.and_then(|s| s.pod_ip.clone()).unwrap_or_default();
            let ready = status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let waiting = status
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.clone());
            let detail = match (ready, p.metadata.deletion_timestamp.is_some()) {
                (_, true) => Some("terminating".to_string()),
                (true, false) => None,
                (false, false) => Some(
                    waiting.unwrap_or_else(|| status.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into())),
                ),
            };
            PodView {
                name: p.metadata.name.clone().unwrap_or_default(),
                az: address.parse().ok().and_then(|a| targets::az_of(&stack, a)).unwrap_or_else(|| "?".into()),
                address,
                node: p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_else(|| "unscheduled".into()),
                ready,
                detail,
            }
        })
        .collect())
}

fn auth0_host_port(state: &RunState) -> u16 {
    state
        .instances
        .iter()
        .find(|i| i.service == ServiceKind::Auth0.as_str())
        .and_then(|i| i.published.get(&crate::services::auth0::PORT))
        .map(|a| a.port())
        .unwrap_or(crate::services::auth0::PORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployment_spreads_over_the_zones_and_keeps_its_secrets_in_a_secret() {
        let stack = crate::harness::builtin_stack();
        assert!(stack.api_on_kubernetes());
        let mut c = Credentials::generate();
        c.vault = Some(crate::services::vault::VaultSecrets {
            root_token: "root".into(),
            unseal_keys: vec![],
            app_token: "hvs.app-token".into(),
        });
        let m = manifests(&stack, &c, 41234, "voyager-sim/voyager-api:abc");
        let kinds: Vec<&str> = m.iter().map(|m| m["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Namespace", "Secret", "Service", "Deployment"]);
        assert_eq!(m[1]["stringData"]["VAULT_TOKEN"], "hvs.app-token");
        let d = &m[3]["spec"];
        assert_eq!(d["replicas"], 3);
        let pod = &d["template"]["spec"];
        assert_eq!(pod["topologySpreadConstraints"][0]["topologyKey"], "topology.kubernetes.io/zone");
        let container = &pod["containers"][0];
        let text = container.to_string();
        assert!(!text.contains("hvs.app-token"), "no secret in the pod's spec: {text}");
        let env = container["env"].as_array().unwrap();
        let var = |n: &str| env.iter().find(|e| e["name"] == n).unwrap_or_else(|| panic!("{n} in {text}"));
        assert_eq!(var("VAULT_TOKEN")["valueFrom"]["secretKeyRef"]["name"], SECRET);
        assert_eq!(var("PGHOST")["value"], "10.0.1.5", "the writer endpoint, as the containers have it");
        assert!(var("VOYAGER_API_NODE_ZONES")["value"].as_str().unwrap().contains("kube-general-purpose-b=us-east-1b"));
        assert_eq!(container["startupProbe"]["httpGet"]["path"], "/readyz", "ready only once every tier answers");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["imagePullPolicy"], "Never", "loaded into the nodes, no registry");
    }
}
