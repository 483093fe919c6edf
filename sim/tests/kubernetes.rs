//! The Kubernetes tier with real nodes (systemd, containerd, kubelet in
//! containers) through kube-rs and kubectl against the run's KUBECONFIG.
//! One cluster serves the whole story, step by step, because each cluster
//! is minutes of a 2-core machine; every step names what it checks, and
//! faults are healed before the next step starts.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use voyager_sim::fault::{Fault, OutageMode, Side};
use voyager_sim::services::kubernetes::KubernetesEndpoint;
use voyager_sim::{ImageSource, Progress, RunningStack, ServiceKind, Sim};

const NS: &str = "t-eks";

fn zone_of(n: &Node) -> String {
    n.metadata.labels.as_ref().and_then(|l| l.get("topology.kubernetes.io/zone").cloned()).unwrap_or_default()
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if start.elapsed() > timeout => panic!("{what}: not within {timeout:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn pod_json(name: &str, image: &str, node_selector: serde_json::Value, extra: serde_json::Value) -> Pod {
    let mut spec = serde_json::json!({
        "terminationGracePeriodSeconds": 1,
        "tolerations": [{ "key": "workload-type", "operator": "Exists", "effect": "NoSchedule" }],
        "nodeSelector": node_selector,
        "containers": [{
            "name": "c", "image": image, "imagePullPolicy": "Never",
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
        }]
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(serde_json::json!({ "metadata": { "name": name, "labels": { "app": name } }, "spec": spec }))
        .unwrap()
}

async fn running_pod_ip(pods: &Api<Pod>, name: &str) -> String {
    wait_for(&format!("pod {name} running"), Duration::from_secs(120), || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        let st = p.status.clone().unwrap_or_default();
        match (st.phase.as_deref(), st.pod_ip) {
            (Some("Running"), Some(i)) => Ok(i),
            (phase, _) => Err(format!("{phase:?}")),
        }
    })
    .await
}

/// `bash -c 'exec 3<>/dev/tcp/HOST/PORT'` inside a pod, through its node's
/// containerd: 0 connected, 1 refused (reached, nothing listening), 124 no
/// answer within 3 s (cut).
async fn tcp_from_pod(r: &RunningStack, pod: &str, host: &str, port: u16) -> i64 {
    let script = format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{host}/{port}' 2>/dev/null; echo $?");
    let out = r.exec_in_pod(NS, pod, &["bash", "-c", &script]).await.unwrap();
    out.output.trim().lines().last().unwrap_or("").parse().unwrap_or_else(|_| panic!("odd output: {}", out.output))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_eks_shaped_cluster_across_three_azs() {
    let mut stack = common::stack_with_ha_control_plane("t-eks", 226);
    {
        let k = stack.kubernetes.as_mut().expect("the built-in stack runs Kubernetes");
        k.node_monitor_grace_period = Duration::from_secs(8);
        k.not_ready_toleration = Duration::from_secs(12);
    }
    let mut r = Sim::new(stack.clone())
        .with_only(&[ServiceKind::Kubernetes, ServiceKind::Postgres, ServiceKind::Kafka])
        .with_images(ImageSource::Offline)
        .with_progress(Progress::stderr())
        .start()
        .await
        .unwrap();
    let ep = r.kubernetes().expect("the cluster is up");
    let client = ep.client().await.unwrap();
    let image = voyager_sim::images::companion_base(r.state().images);

    // KUBECONFIG: a file of the run's state, server on 127.0.0.1, owner-only.
    let env: BTreeMap<String, String> = r.env().into_iter().collect();
    assert_eq!(env["KUBECONFIG"], ep.kubeconfig.display().to_string());
    let kc = std::fs::read_to_string(&ep.kubeconfig).unwrap();
    assert!(kc.contains(&format!("server: https://{}", ep.server)), "{kc}");
    assert!(ep.server.ip().is_loopback());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&ep.kubeconfig).unwrap().permissions().mode() & 0o777, 0o600);

    nodes_sit_in_their_azs_with_their_groups_labels_and_taints(&client, &stack).await;
    kubectl_reads_the_cluster_through_kubeconfig(&env["KUBECONFIG"]);

    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({ "metadata": { "name": NS } })).unwrap(),
    )
    .await
    .unwrap();
    // An image from this host, into every node, with no registry.
    let loaded = r.kube_load(std::slice::from_ref(&image), &Progress::silent()).await.unwrap();
    assert_eq!(loaded[0].1.len(), 6, "every node got the image: {loaded:?}");

    a_spread_deployment_gets_one_pod_per_zone(&client, &image).await;
    pods_talk_across_azs_until_a_partition_cuts_them(&mut r, &client, &image).await;
    pods_reach_postgres_and_kafka_by_their_vpc_addresses(&r, &stack).await;
    a_statefulset_volume_is_made_in_and_bound_to_its_zone(&r, &client, &image).await;
    losing_a_control_plane_az_leaves_the_api_answering(&mut r, &ep, &client).await;
    losing_az_b_makes_its_nodes_not_ready_and_the_deployment_ready_on_a_and_c(&mut r, &client).await;

    let name = r.name().to_string();
    r.shutdown().await.unwrap();
    let docker = bollard::Docker::connect_with_local_defaults().unwrap();
    let (cs, ns, vs) = voyager_sim::runtime::sweep::leftovers(&docker, &name).await.unwrap();
    assert!(cs.is_empty() && ns.is_empty() && vs.is_empty(), "left behind: {cs:?} {ns:?} {vs:?}");
    assert!(!ep.kubeconfig.exists(), "the kubeconfig goes with the stack");
}

async fn nodes_sit_in_their_azs_with_their_groups_labels_and_taints(client: &kube::Client, stack: &voyager_sim::Stack) {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await.unwrap().items;
    let declared = &stack.service(ServiceKind::Kubernetes).unwrap().instances;
    assert_eq!(list.len(), declared.len());
    for inst in declared {
        let n = list
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(&inst.name))
            .unwrap_or_else(|| panic!("{} missing", inst.name));
        let labels = n.metadata.labels.clone().unwrap();
        assert_eq!(labels["topology.kubernetes.io/zone"], format!("us-east-1{}", inst.az), "{}", inst.name);
        assert_eq!(labels["topology.kubernetes.io/region"], "us-east-1");
        let addr =
            n.status.as_ref().unwrap().addresses.as_ref().unwrap().iter().find(|a| a.type_ == "InternalIP").unwrap();
        assert_eq!(addr.address, inst.address.to_string(), "{} has its fixed address", inst.name);
        let taints: Vec<String> = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .iter()
            .map(|t| format!("{}={}:{}", t.key, t.value.clone().unwrap_or_default(), t.effect))
            .collect();
        match inst.group.as_deref() {
            Some("general-purpose") => {
                assert_eq!(labels["node-type"], "general-purpose");
                assert_eq!(labels["environment"], "production");
                assert!(["m5.large", "m5.xlarge", "c5.large"]
                    .contains(&labels["node.kubernetes.io/instance-type"].as_str()));
                assert_eq!(taints, ["workload-type=general:NoSchedule"]);
            }
            Some(g) => panic!("unexpected group {g}"),
            None => assert_eq!(taints, ["node-role.kubernetes.io/control-plane=:NoSchedule"]),
        }
    }
    let zones: BTreeSet<String> = list.iter().map(zone_of).collect();
    assert_eq!(zones.len(), 3, "{zones:?}");
}

fn kubectl_reads_the_cluster_through_kubeconfig(kubeconfig: &str) {
    let kubectl =
        voyager_sim::images::kubernetes::host_kubectl().expect("the offline build leaves kubectl on the host");
    let out = Command::new(kubectl)
        .env("KUBECONFIG", kubeconfig)
        .args(["get", "nodes", "-l", "node-type=general-purpose", "-o", "name"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3, "{}", String::from_utf8_lossy(&out.stdout));
}

async fn a_spread_deployment_gets_one_pod_per_zone(client: &kube::Client, image: &str) {
    let deps: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "tolerations": [{ "key": "workload-type", "operator": "Equal", "value": "general", "effect": "NoSchedule" }],
                    "nodeSelector": { "node-type": "general-purpose" },
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                        "nodeTaintsPolicy": "Honor", "labelSelector": { "matchLabels": { "app": "web" } }
                    }],
                    "containers": [{ "name": "web", "image": image, "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"] }]
                }
            }
        }
    }))
    .unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    let zones = ready_web_zones(client).await;
    assert_eq!(zones.values().copied().collect::<Vec<_>>(), [1, 1, 1], "one pod per zone: {zones:?}");
}

/// Zone → ready, not terminating `web` pods, once three are ready.
async fn ready_web_zones(client: &kube::Client) -> BTreeMap<String, usize> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    wait_for("three ready web pods", Duration::from_secs(180), || async {
        let zone: BTreeMap<String, String> = nodes
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .iter()
            .map(|n| (n.metadata.name.clone().unwrap(), zone_of(n)))
            .collect();
        let mut z: BTreeMap<String, usize> = BTreeMap::new();
        for p in pods.list(&ListParams::default().labels("app=web")).await.map_err(|e| e.to_string())?.items {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if ready && p.metadata.deletion_timestamp.is_none() {
                let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
                *z.entry(zone.get(&node).cloned().unwrap_or_default()).or_default() += 1;
            }
        }
        if z.values().sum::<usize>() == 3 {
            Ok(z)
        } else {
            Err(format!("{z:?}"))
        }
    })
    .await
}

async fn pods_talk_across_azs_until_a_partition_cuts_them(r: &mut RunningStack, client: &kube::Client, image: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for (name, az) in [("probe-a", "a"), ("probe-b", "b")] {
        let sel = serde_json::json!({ "topology.kubernetes.io/zone": format!("us-east-1{az}"), "node-type": "general-purpose" });
        pods.create(&PostParams::default(), &pod_json(name, image, sel, serde_json::json!({}))).await.unwrap();
    }
    let ip_a = running_pod_ip(&pods, "probe-a").await;
    let ip_b = running_pod_ip(&pods, "probe-b").await;
    // Pods have addresses of their node's private subnet.
    let subnet_b = r.stack().unwrap().az("b").unwrap().private;
    assert!(subnet_b.contains(ip_b.parse().unwrap()), "{ip_b} is in AZ b's subnet {subnet_b}");
    assert_eq!(tcp_from_pod(r, "probe-a", &ip_b, 9).await, 1, "a reaches b's pod (nothing listens: refused)");
    r.inject(Fault::Partition { from: Side::Az("a".into()), to: Side::Az("b".into()) }).await.unwrap();
    r.inject(Fault::Partition { from: Side::Az("b".into()), to: Side::Az("a".into()) }).await.unwrap();
    assert_eq!(tcp_from_pod(r, "probe-a", &ip_b, 9).await, 124, "the partition between AZs cuts pods too");
    assert_eq!(tcp_from_pod(r, "probe-b", &ip_a, 9).await, 124, "both ways");
    r.heal(Duration::from_secs(180)).await.unwrap();
    assert_eq!(tcp_from_pod(r, "probe-a", &ip_b, 9).await, 1, "healed");
}

async fn pods_reach_postgres_and_kafka_by_their_vpc_addresses(r: &RunningStack, stack: &voyager_sim::Stack) {
    let pg = &stack.service(ServiceKind::Postgres).unwrap().instances[0];
    let broker = &stack.with_role(ServiceKind::Kafka, "broker")[0];
    assert_eq!(
        tcp_from_pod(r, "probe-b", &pg.address.to_string(), 5432).await,
        0,
        "a pod in b reaches {} by its VPC address",
        pg.name
    );
    assert_eq!(tcp_from_pod(r, "probe-b", &broker.address.to_string(), 9092).await, 0, "and broker {}", broker.name);
}

async fn a_statefulset_volume_is_made_in_and_bound_to_its_zone(r: &RunningStack, client: &kube::Client, image: &str) {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "data" },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } }
    }))
    .unwrap();
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let with_volume = |name: &str| {
        pod_json(
            name,
            image,
            serde_json::json!({ "node-type": "general-purpose", "topology.kubernetes.io/zone": "us-east-1c" }),
            serde_json::json!({ "volumes": [{ "name": "d", "persistentVolumeClaim": { "claimName": "data" } }] }),
        )
    };
    let mut p = with_volume("writer");
    p.spec.as_mut().unwrap().containers[0].volume_mounts =
        Some(vec![serde_json::from_value(serde_json::json!({ "name": "d", "mountPath": "/data" })).unwrap()]);
    pods.create(&PostParams::default(), &p).await.unwrap();
    running_pod_ip(&pods, "writer").await;
    // The default class made the volume in the pod's zone, bound to it.
    let bound = pvcs.get("data").await.unwrap().spec.unwrap().volume_name.unwrap();
    let pv = Api::<PersistentVolume>::all(client.clone()).get(&bound).await.unwrap();
    let term =
        &pv.spec.as_ref().unwrap().node_affinity.as_ref().unwrap().required.as_ref().unwrap().node_selector_terms[0];
    let expr = &term.match_expressions.as_ref().unwrap()[0];
    assert_eq!(
        (expr.key.as_str(), expr.values.clone().unwrap()),
        ("topology.kubernetes.io/zone", vec!["us-east-1c".to_string()])
    );
    assert_eq!(pvcs.get("data").await.unwrap().spec.unwrap().storage_class_name.as_deref(), Some("gp3"));
    let w = r.exec_in_pod(NS, "writer", &["sh", "-c", "echo kept > /data/f && cat /data/f"]).await.unwrap();
    assert_eq!(w.output.trim(), "kept");
    // Its data outlives the pod: a new pod in the zone reads it.
    pods.delete("writer", &DeleteParams::default()).await.unwrap();
    wait_for("writer gone", Duration::from_secs(60), || async {
        match pods.get_opt("writer").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    })
    .await;
    let mut p = with_volume("reader");
    p.spec.as_mut().unwrap().containers[0].volume_mounts =
        Some(vec![serde_json::from_value(serde_json::json!({ "name": "d", "mountPath": "/data" })).unwrap()]);
    pods.create(&PostParams::default(), &p).await.unwrap();
    running_pod_ip(&pods, "reader").await;
    let rd = r.exec_in_pod(NS, "reader", &["cat", "/data/f"]).await.unwrap();
    assert_eq!(rd.output.trim(), "kept");
}

async fn losing_a_control_plane_az_leaves_the_api_answering(
    r: &mut RunningStack,
    ep: &KubernetesEndpoint,
    client: &kube::Client,
) {
    r.inject(Fault::AzOutage { az: "a".into(), mode: OutageMode::Kill }).await.unwrap();
    // A request already in flight to AZ a's API server is cut when the
    // endpoint takes that server out (as an NLB resets flows to a target
    // that died), so one answered request proves nothing: a pooled
    // connection to b or c answers while the endpoint still picks a for new
    // ones. What must hold is that it stops picking a within seconds. Every
    // probe opens its own connection, which the endpoint balances afresh
    // round the servers; while a were still chosen, every third would fail.
    let fresh_lists = |n: usize| async move {
        for i in 0..n {
            let c = ep.probe_client(Duration::from_secs(5)).await?;
            Api::<Node>::all(c).list(&ListParams::default()).await.map_err(|e| format!("connection {i}: {e}"))?;
        }
        Ok::<(), String>(())
    };
    wait_for("the endpoint routing round AZ a's API server", Duration::from_secs(30), || fresh_lists(6)).await;
    fresh_lists(10).await.expect("every new connection answers with AZ a gone");
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({ "metadata": { "name": "t-write-without-a" } })).unwrap(),
    )
    .await
    .expect("writes commit on the remaining etcd majority");
    r.heal(Duration::from_secs(240)).await.unwrap();
}

async fn losing_az_b_makes_its_nodes_not_ready_and_the_deployment_ready_on_a_and_c(
    r: &mut RunningStack,
    client: &kube::Client,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    r.inject(Fault::AzOutage { az: "b".into(), mode: OutageMode::Kill }).await.unwrap();
    wait_for("AZ b's nodes NotReady", Duration::from_secs(60), || async {
        let list = nodes.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        let b: Vec<&Node> = list.items.iter().filter(|n| zone_of(n) == "us-east-1b").collect();
        let not_ready = b.iter().filter(|n| voyager_sim::services::kubernetes::api::node_readiness(n).is_err()).count();
        if !b.is_empty() && not_ready == b.len() {
            Ok(())
        } else {
            Err(format!("{not_ready} of {} NotReady", b.len()))
        }
    })
    .await;
    let zones = ready_web_zones(client).await;
    assert!(!zones.contains_key("us-east-1b"), "no replica counts in the lost zone: {zones:?}");
    assert_eq!(zones.values().sum::<usize>(), 3, "every replica Ready on a and c: {zones:?}");
    r.heal(Duration::from_secs(240)).await.unwrap();
}

/// SIGKILL while the cluster comes up, then `down`: nothing of it remains,
/// node volumes and the zones' block storage included.
#[test]
fn down_after_sigkill_mid_up_of_a_cluster_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.toml");
    let stack = common::stack("t-eks-kill", 227);
    let nodes = stack.service(ServiceKind::Kubernetes).unwrap().instances.len();
    std::fs::write(&file, stack.to_toml()).unwrap();
    let bin = env!("CARGO_BIN_EXE_voyager-sim");
    let up = Command::new(bin)
        .env("VOYAGER_SIM_HOME", dir.path())
        .args(["up", "--stack", file.to_str().unwrap(), "--only", "kubernetes", "--images", "offline"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Whatever fails below, this cluster must not outlive the test: a
    // second cluster left running starves every test after it.
    struct Guard(std::process::Child, std::path::PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = Command::new(env!("CARGO_BIN_EXE_voyager-sim"))
                .env("VOYAGER_SIM_HOME", &self.1)
                .args(["down", "--name", "t-eks-kill"])
                .output();
        }
    }
    let mut guard = Guard(up, dir.path().to_path_buf());
    // Kill it once its nodes run and kubeadm is at work.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let docker = bollard::Docker::connect_with_local_defaults().unwrap();
    let start = Instant::now();
    loop {
        let (cs, _, vs) = rt.block_on(voyager_sim::runtime::sweep::leftovers(&docker, "t-eks-kill")).unwrap();
        // Every node and the API endpoint.
        if cs.iter().filter(|c| c.contains("kube-")).count() > nodes && vs.iter().any(|v| v.contains("ebs-")) {
            std::thread::sleep(Duration::from_secs(5));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "the nodes never started");
        std::thread::sleep(Duration::from_millis(500));
    }
    guard.0.kill().unwrap();
    let _ = guard.0.wait();
    let out =
        Command::new(bin).env("VOYAGER_SIM_HOME", dir.path()).args(["down", "--name", "t-eks-kill"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (cs, ns, vs) = rt.block_on(voyager_sim::runtime::sweep::leftovers(&docker, "t-eks-kill")).unwrap();
    assert!(cs.is_empty() && ns.is_empty() && vs.is_empty(), "left behind: {cs:?} {ns:?} {vs:?}");
    let rules = Command::new("iptables-save")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(!rules.contains("voyager-sim:t-eks-kill"), "firewall rules left behind");
}
