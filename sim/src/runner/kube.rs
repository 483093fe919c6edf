//! A scenario's workloads on the stack's cluster, and what Kubernetes does
//! with them while faults are in force: a Deployment spread over the zones
//! (topology spread that honours taints, so replacements avoid a lost
//! zone's tainted nodes) and a StatefulSet whose pods hold `gp3` volumes
//! bound to their zone. An observer records nodes and pods every second;
//! `analyse` (pure) turns that into per-zone lanes and the times to
//! NotReady, to eviction and to every replica Ready again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use crate::fault::Fault;
use crate::harness::RunningStack;
use crate::progress::Progress;
use crate::report::{FaultMark, KubeOutage, KubeReport, ZoneLane};
use crate::scenario::{Action, KubeWorkloads, Scenario};
use crate::services::kubernetes::api::node_readiness;
use crate::stack::Stack;

const DEPLOYMENT: &str = "web";
const STATEFULSET: &str = "db";

/// Workloads deployed for a run.
pub(super) struct Deployed {
    client: kube::Client,
    namespace: String,
    workloads: KubeWorkloads,
}

/// One look at the cluster.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub t: f64,
    /// Node name → (zone, Ready).
    pub nodes: BTreeMap<String, (String, bool)>,
    pub pods: Vec<PodView>,
}

#[derive(Debug, Clone)]
pub(super) struct PodView {
    pub name: String,
    pub app: String,
    pub node: Option<String>,
    pub ready: bool,
    pub terminating: bool,
    pub phase: String,
}

/// The namespace of a run's workloads: a DNS label from the run's tag.
fn namespace_for(run_tag: &str) -> String {
    let mut ns: String = format!("vs-{run_tag}")
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    ns.truncate(63);
    ns.trim_end_matches('-').to_string()
}

/// The zone of the first AZ a scenario loses: the StatefulSet prefers it,
/// so the run shows what a zone-bound volume does when its zone goes.
fn first_lost_zone(sc: &Scenario, stack: &Stack) -> Option<String> {
    let k = stack.kubernetes.as_ref()?;
    sc.faults.iter().find_map(|f| match &f.action {
        Action::Inject(fs) => fs.iter().find_map(|x| match x {
            Fault::AzOutage { az, .. } => Some(k.zone(az)),
            _ => None,
        }),
        _ => None,
    })
}

fn manifests(
    stack: &Stack,
    w: &KubeWorkloads,
    image: &str,
    prefer_zone: Option<&str>,
) -> (serde_json::Value, serde_json::Value) {
    let tolerations = crate::services::kubernetes::group_tolerations(stack);
    let workers = crate::services::kubernetes::workers_only();
    let container = |name: &str, extra: serde_json::Value| {
        let mut c = serde_json::json!({
            "name": name,
            "image": image,
            "imagePullPolicy": "Never",
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
        });
        if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        c
    };
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": DEPLOYMENT },
        "spec": {
            "replicas": w.deployment_replicas,
            "selector": { "matchLabels": { "app": DEPLOYMENT } },
            "template": {
                "metadata": { "labels": { "app": DEPLOYMENT } },
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "tolerations": tolerations,
                    "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": workers } },
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "topology.kubernetes.io/zone",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "nodeTaintsPolicy": "Honor",
                        "labelSelector": { "matchLabels": { "app": DEPLOYMENT } }
                    }],
                    "containers": [container(DEPLOYMENT, serde_json::json!({}))]
                }
            }
        }
    });
    let mut affinity =
        serde_json::json!({ "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": workers } });
    if let Some(z) = prefer_zone {
        affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] = serde_json::json!([{
            "weight": 100,
            "preference": { "matchExpressions": [{ "key": "topology.kubernetes.io/zone", "operator": "In", "values": [z] }] }
        }]);
    }
    let statefulset = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": { "name": STATEFULSET },
        "spec": {
            "serviceName": STATEFULSET,
            "replicas": w.statefulset_replicas,
            "selector": { "matchLabels": { "app": STATEFULSET } },
            "template": {
                "metadata": { "labels": { "app": STATEFULSET } },
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "tolerations": tolerations,
                    "affinity": affinity,
                    "containers": [container(STATEFULSET, serde_json::json!({
                        "volumeMounts": [{ "name": "data", "mountPath": "/data" }]
                    }))]
                }
            },
            "volumeClaimTemplates": [{
                "metadata": { "name": "data" },
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": crate::services::kubernetes::actions::STORAGE_CLASS,
                    "resources": { "requests": { "storage": "1Gi" } }
                }
            }]
        }
    });
    (deployment, statefulset)
}

/// Deploy the workloads and wait until every replica is Ready.
pub(super) async fn deploy(
    stack: &RunningStack,
    w: &KubeWorkloads,
    sc: &Scenario,
    run_tag: &str,
    p: &Progress,
) -> Result<Deployed, String> {
    let ep = stack.kubernetes().ok_or("the stack's cluster is not up")?;
    let client = ep.probe_client(Duration::from_secs(10)).await?;
    let image = crate::images::companion_base(stack.state().images);
    stack.kube_load(std::slice::from_ref(&image), &Progress::silent()).await.map_err(|e| e.to_string())?;
    let namespace = namespace_for(run_tag);
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": namespace } })).map_err(|e| e.to_string())?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .map_err(|e| format!("creating namespace {namespace}: {e}"))?;
    let st = stack.stack().map_err(|e| e.to_string())?;
    let (d, s) = manifests(&st, w, &image, first_lost_zone(sc, &st).as_deref());
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let stss: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    deps.create(&PostParams::default(), &serde_json::from_value(d).map_err(|e| e.to_string())?)
        .await
        .map_err(|e| format!("creating the Deployment: {e}"))?;
    stss.create(&PostParams::default(), &serde_json::from_value(s).map_err(|e| e.to_string())?)
        .await
        .map_err(|e| format!("creating the StatefulSet: {e}"))?;
    p.say(&format!(
        "kubernetes: {} deployment and {} statefulset replicas in namespace {namespace}",
        w.deployment_replicas, w.statefulset_replicas
    ));
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let ready = |r: Option<i32>| r.unwrap_or(0).max(0) as u32;
        let dr = deps.get(DEPLOYMENT).await.ok().and_then(|d| d.status).map(|s| ready(s.ready_replicas)).unwrap_or(0);
        let sr = stss.get(STATEFULSET).await.ok().and_then(|d| d.status).map(|s| ready(s.ready_replicas)).unwrap_or(0);
        if dr >= w.deployment_replicas && sr >= w.statefulset_replicas {
            return Ok(Deployed { client, namespace, workloads: w.clone() });
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the workloads were not Ready within 300s ({dr}/{} deployment, {sr}/{} statefulset replicas)",
                w.deployment_replicas, w.statefulset_replicas
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn look(d: &Deployed, t: f64) -> Option<Snapshot> {
    let nodes: Api<Node> = Api::all(d.client.clone());
    let pods: Api<Pod> = Api::namespaced(d.client.clone(), &d.namespace);
    let lp = ListParams::default();
    let (nodes, pods) = tokio::join!(nodes.list(&lp), pods.list(&lp));
    let (nodes, pods) = (nodes.ok()?, pods.ok()?);
    Some(Snapshot {
        t,
        nodes: nodes
            .items
            .iter()
            .filter_map(|n| {
                let zone = n.metadata.labels.as_ref()?.get("topology.kubernetes.io/zone")?.clone();
                Some((n.metadata.name.clone()?, (zone, node_readiness(n).is_ok())))
            })
            .collect(),
        pods: pods
            .items
            .iter()
            .map(|p| {
                let status = p.status.as_ref();
                PodView {
                    name: p.metadata.name.clone().unwrap_or_default(),
                    app: p.metadata.labels.as_ref().and_then(|l| l.get("app").cloned()).unwrap_or_default(),
                    node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                    ready: status
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
                    terminating: p.metadata.deletion_timestamp.is_some(),
                    phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
                }
            })
            .collect(),
    })
}

/// Look at the cluster every second until `until`.
pub(super) fn spawn_observer(d: &Deployed, start: Instant, until: Instant) -> tokio::task::JoinHandle<Vec<Snapshot>> {
    let d = Deployed { client: d.client.clone(), namespace: d.namespace.clone(), workloads: d.workloads.clone() };
    tokio::spawn(async move {
        let mut out = vec![];
        let mut next = start;
        while Instant::now() < until {
            if let Some(s) = look(&d, start.elapsed().as_secs_f64()).await {
                out.push(s);
            }
            next += Duration::from_secs(1);
            tokio::time::sleep_until(next.max(Instant::now()).into()).await;
        }
        out
    })
}

/// Remove the run's namespace (its volumes go with their claims).
pub(super) async fn remove(d: &Deployed) {
    let _ = Api::<Namespace>::all(d.client.clone()).delete(&d.namespace, &DeleteParams::background()).await;
}

/// The nodes a fault takes out (AZ outages, and kills or pauses of a node).
fn lost_nodes(fault: &Fault, stack: &Stack) -> BTreeSet<String> {
    let nodes = stack.service(crate::stack::ServiceKind::Kubernetes).map(|s| s.instances.clone()).unwrap_or_default();
    match fault {
        Fault::AzOutage { az, .. } => nodes.iter().filter(|i| &i.az == az).map(|i| i.name.clone()).collect(),
        Fault::Kill { instance } | Fault::Pause { instance } => {
            nodes.iter().filter(|i| &i.name == instance).map(|i| i.name.clone()).collect()
        }
        _ => BTreeSet::new(),
    }
}

/// Per-zone lanes and per-outage times from the observer's snapshots.
pub(super) fn analyse(
    snaps: &[Snapshot],
    marks: &[FaultMark],
    sc: &Scenario,
    stack: &Stack,
    w: &KubeWorkloads,
) -> KubeReport {
    let k = stack.kubernetes.as_ref();
    let zones: Vec<String> =
        stack.azs.iter().map(|a| k.map(|k| k.zone(&a.name)).unwrap_or_else(|| a.name.clone())).collect();
    let secs = sc.duration.as_secs_f64().ceil().max(1.0) as usize;
    // The last look within each second, carried forward over gaps.
    let mut per_sec: Vec<Option<&Snapshot>> = vec![None; secs];
    for s in snaps {
        let i = (s.t as usize).min(secs - 1);
        per_sec[i] = Some(s);
    }
    let mut last = None;
    for slot in per_sec.iter_mut() {
        if slot.is_none() {
            *slot = last;
        }
        last = *slot;
    }
    let zone_of =
        |s: &Snapshot, node: &Option<String>| node.as_ref().and_then(|n| s.nodes.get(n)).map(|(z, _)| z.clone());
    let lanes = zones
        .iter()
        .map(|z| {
            let count =
                |f: &dyn Fn(&Snapshot) -> u32| per_sec.iter().map(|s| s.map(f).unwrap_or(0)).collect::<Vec<u32>>();
            let ready_of = |app: &'static str| {
                move |s: &Snapshot| {
                    s.pods
                        .iter()
                        .filter(|p| {
                            p.app == app && p.ready && !p.terminating && zone_of(s, &p.node).as_ref() == Some(z)
                        })
                        .count() as u32
                }
            };
            ZoneLane {
                zone: z.clone(),
                nodes: snaps.first().map(|s| s.nodes.values().filter(|(nz, _)| nz == z).count() as u32).unwrap_or(0),
                ready_nodes: count(&|s: &Snapshot| s.nodes.values().filter(|(nz, r)| nz == z && *r).count() as u32),
                deployment_ready: count(&ready_of(DEPLOYMENT)),
                statefulset_ready: count(&ready_of(STATEFULSET)),
            }
        })
        .collect();

    let mut outages = vec![];
    let faults: Vec<(&FaultMark, &Fault)> = marks
        .iter()
        .zip(sc.faults.iter())
        .filter_map(|(m, tf)| match &tf.action {
            Action::Inject(fs) => fs.iter().find(|f| !lost_nodes(f, stack).is_empty()).map(|f| (m, f)),
            _ => None,
        })
        .collect();
    for (mark, fault) in faults {
        let lost = lost_nodes(fault, stack);
        let at = mark.at_s;
        let healed = mark.heal_at_s.unwrap_or(f64::MAX);
        let after: Vec<&Snapshot> = snaps.iter().filter(|s| s.t >= at && s.t <= healed).collect();
        let first = |pred: &dyn Fn(&Snapshot) -> bool| after.iter().find(|s| pred(s)).map(|s| s.t - at);
        let not_ready_s = first(&|s| lost.iter().any(|n| s.nodes.get(n).is_some_and(|(_, r)| !r)));
        let evicted_s = first(&|s| {
            s.pods
                .iter()
                .any(|p| p.app == DEPLOYMENT && p.terminating && p.node.as_ref().is_some_and(|n| lost.contains(n)))
        });
        let ready_again_s = evicted_s.and_then(|e| {
            first(&|s| {
                s.t - at >= e
                    && s.pods
                        .iter()
                        .filter(|p| {
                            p.app == DEPLOYMENT
                                && p.ready
                                && !p.terminating
                                && p.node.as_ref().is_some_and(|n| !lost.contains(n))
                        })
                        .count() as u32
                        >= w.deployment_replicas
            })
        });
        let before = snaps.iter().rev().find(|s| s.t < at);
        let sts_in_zone: Vec<String> = before
            .map(|s| {
                s.pods
                    .iter()
                    .filter(|p| p.app == STATEFULSET && p.node.as_ref().is_some_and(|n| lost.contains(n)))
                    .map(|p| p.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        let statefulset = if sts_in_zone.is_empty() {
            "no StatefulSet pod was in the lost nodes".to_string()
        } else {
            let end = after.last().copied();
            sts_in_zone
                .iter()
                .map(|name| match end.and_then(|s| s.pods.iter().find(|p| &p.name == name)) {
                    Some(p) if p.terminating => format!(
                        "{name} stayed Terminating on {} (its volume is bound to the lost zone; nothing may run it elsewhere)",
                        p.node.clone().unwrap_or_default()
                    ),
                    Some(p) if p.phase == "Pending" => format!("{name} Pending (its volume is bound to the lost zone)"),
                    Some(p) => format!("{name} {} on {}", p.phase, p.node.clone().unwrap_or_else(|| "no node".into())),
                    None => format!("{name} gone"),
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let zone = fault_zone(fault, stack);
        outages.push(KubeOutage {
            fault: mark.label.clone(),
            zone,
            at_s: at,
            not_ready_s,
            evicted_s,
            ready_again_s,
            statefulset,
        });
    }
    KubeReport {
        node_monitor_grace_period_s: k.map(|k| k.node_monitor_grace_period.as_secs_f64()).unwrap_or(0.0),
        not_ready_toleration_s: k.map(|k| k.not_ready_toleration.as_secs_f64()).unwrap_or(0.0),
        deployment_replicas: w.deployment_replicas,
        statefulset_replicas: w.statefulset_replicas,
        zones: lanes,
        outages,
    }
}

fn fault_zone(fault: &Fault, stack: &Stack) -> String {
    let az = match fault {
        Fault::AzOutage { az, .. } => Some(az.clone()),
        Fault::Kill { instance } | Fault::Pause { instance } => {
            stack.services.iter().flat_map(|s| &s.instances).find(|i| &i.name == instance).map(|i| i.az.clone())
        }
        _ => None,
    };
    match (az, stack.kubernetes.as_ref()) {
        (Some(a), Some(k)) => k.zone(&a),
        (Some(a), None) => a,
        (None, _) => String::new(),
    }
}

/// A warning when an outage ends before Kubernetes would evict anything:
/// the run would then only show NotReady.
pub(super) fn timer_notes(sc: &Scenario, stack: &Stack) -> Vec<String> {
    let Some(k) = &stack.kubernetes else { return vec![] };
    let evict = k.node_monitor_grace_period + k.not_ready_toleration;
    sc.faults
        .iter()
        .filter(|f| matches!(&f.action, Action::Inject(fs) if fs.iter().any(|x| !lost_nodes(x, stack).is_empty())))
        .filter_map(|f| {
            let lasts = f.heal_at.unwrap_or(sc.duration).saturating_sub(f.at);
            (lasts < evict).then(|| {
                format!(
                    "the outage at {:.0}s lasts {:.0}s, but Kubernetes evicts pods only after node-monitor-grace-period {:.0}s + toleration {:.0}s = {:.0}s: expect NotReady, no eviction",
                    f.at.as_secs_f64(),
                    lasts.as_secs_f64(),
                    k.node_monitor_grace_period.as_secs_f64(),
                    k.not_ready_toleration.as_secs_f64(),
                    evict.as_secs_f64()
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(t: f64, b_ready: bool, pods: &[(&str, &str, &str, bool, bool)]) -> Snapshot {
        Snapshot {
            t,
            nodes: [("na", "us-east-1a", true), ("nb", "us-east-1b", b_ready), ("nc", "us-east-1c", true)]
                .iter()
                .map(|(n, z, r)| (n.to_string(), (z.to_string(), *r)))
                .collect(),
            pods: pods
                .iter()
                .map(|(name, app, node, ready, terminating)| PodView {
                    name: name.to_string(),
                    app: app.to_string(),
                    node: Some(node.to_string()),
                    ready: *ready,
                    terminating: *terminating,
                    phase: "Running".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn an_outage_is_timed_from_notready_to_eviction_to_every_replica_ready() {
        let stack = crate::harness::builtin_stack();
        let text = "name = \"x\"\nseed = 1\nduration = \"20s\"\n[load]\nrate = {}\n[kubernetes]\n[[fault]]\nat = \"2s\"\nheal_at = \"18s\"\nkind = \"az-outage\"\ntarget = \"b\"\n";
        let sc = crate::scenario::parse_scenario(std::path::Path::new("x.toml"), text).unwrap();
        // A fake stack's nodes: map the built-in b node to "nb".
        let b = stack.kube_nodes_in("b").iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        let nb = b.iter().find(|n| n.contains("general")).unwrap().clone();
        fn web(n: &str, ready: bool, term: bool) -> (&'static str, &'static str, &str, bool, bool) {
            ("web-x", "web", n, ready, term)
        }
        let mut snaps = vec![
            snap(1.0, true, &[web("na", true, false), web(&nb, true, false), web("nc", true, false)]),
            snap(3.0, true, &[web("na", true, false), web(&nb, true, false), web("nc", true, false)]),
        ];
        for s in &mut snaps {
            s.nodes.insert(nb.clone(), ("us-east-1b".into(), true));
        }
        let mut later = vec![
            snap(7.0, true, &[web("na", true, false), web(&nb, true, false), web("nc", true, false)]),
            snap(
                12.0,
                true,
                &[web("na", true, false), web(&nb, false, true), web("nc", true, false), web("na", false, false)],
            ),
            snap(
                15.0,
                true,
                &[web("na", true, false), web(&nb, false, true), web("nc", true, false), web("na", true, false)],
            ),
        ];
        later[0].nodes.insert(nb.clone(), ("us-east-1b".into(), false));
        later[1].nodes.insert(nb.clone(), ("us-east-1b".into(), false));
        later[2].nodes.insert(nb.clone(), ("us-east-1b".into(), false));
        snaps.extend(later);
        let marks = vec![FaultMark { label: "az-outage b".into(), at_s: 2.0, heal_at_s: Some(18.0) }];
        let w = KubeWorkloads { deployment_replicas: 3, statefulset_replicas: 0 };
        let r = analyse(&snaps, &marks, &sc, &stack, &w);
        let o = &r.outages[0];
        assert_eq!(o.zone, "us-east-1b");
        assert_eq!((o.not_ready_s, o.evicted_s, o.ready_again_s), (Some(5.0), Some(10.0), Some(13.0)));
        assert_eq!(r.zones.len(), 3);
        assert_eq!(r.zones[1].deployment_ready[3], 1, "one pod ready in b before the outage showed");
        assert_eq!(r.zones[0].deployment_ready[15], 2, "a holds the replacement at the end");
    }

    #[test]
    fn namespaces_are_dns_labels() {
        assert_eq!(namespace_for("eks_az_loss-Ab12"), "vs-eks-az-loss-ab12");
        assert!(namespace_for(&"x".repeat(80)).len() <= 63);
    }
}
