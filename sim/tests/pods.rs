//! The API on Kubernetes behind the edge, as the platform runs on EKS: a
//! Deployment spread over the zones, its secrets in a Secret, and the
//! load balancers' target groups following the Service's EndpointSlices
//! (what the AWS Load Balancer Controller does for IP targets). Checked:
//! one pod per zone, each ALB node routing to every pod and each NLB node
//! to its zone's only, requests from outside answered by pods in every
//! zone, and a pod replaced: its address drained on every node, gone
//! after the deregistration delay, its successor registered.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use voyager_sim::http::{request_with, HttpClient};
use voyager_sim::services::haproxy::{server_admin_states, server_stats};
use voyager_sim::services::{alb, targets};
use voyager_sim::{ImageSource, Progress, Sim};

mod common;

const DEREGISTRATION: Duration = Duration::from_secs(8);

/// The pods of the API: (name, address, node), Ready ones only.
async fn ready_pods(pods: &Api<Pod>) -> Vec<(String, Ipv4Addr, String)> {
    let list = pods.list(&ListParams::default().labels("app=voyager-api")).await.unwrap();
    list.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
            Some((p.metadata.name.clone()?, ip, p.spec.as_ref()?.node_name.clone()?))
        })
        .collect()
}

/// A node's pod targets: address → drained.
async fn registered(admin: std::net::SocketAddr) -> BTreeMap<Ipv4Addr, bool> {
    server_admin_states(admin, alb::TARGETS)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| Some((targets::address_of(&s.server)?, s.drain || s.maint)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_runs_as_pods_and_the_load_balancers_follow_its_endpoints() {
    let mut stack = common::stack("t-pods", 236);
    let a = stack.alb.as_mut().expect("the built-in stack has an ALB");
    a.health_check.interval = Duration::from_secs(2);
    a.health_check.timeout = Duration::from_secs(1);
    a.deregistration_delay = DEREGISTRATION;
    a.rate_limit = None;
    let n = stack.nlb.as_mut().expect("the built-in stack has an NLB");
    n.health_check.interval = Duration::from_secs(2);
    n.health_check.timeout = Duration::from_secs(1);
    n.deregistration_delay = DEREGISTRATION;
    // Route 53 and its records are the edge test's; here, the targets.
    let kinds: Vec<_> =
        stack.services.iter().map(|s| s.kind).filter(|k| *k != voyager_sim::ServiceKind::Route53).collect();
    assert!(stack.api_on_kubernetes());
    let running = Sim::new(stack)
        .with_images(ImageSource::Offline)
        .with_only(&kinds)
        .with_progress(Progress::stderr())
        .start()
        .await
        .unwrap();
    assert!(
        !running.state().instances.iter().any(|i| i.service == "api"),
        "on a cluster the API has no containers of its own"
    );
    let env: BTreeMap<String, String> = running.env().into_iter().collect();
    assert!(!env.contains_key("VOYAGER_API_A_URL"), "pods publish nothing on the host");
    let client = running.kubernetes().unwrap().client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), targets::NAMESPACE);

    // One pod per zone, its secrets from the Secret, none in its spec.
    let ready = ready_pods(&pods).await;
    assert_eq!(ready.len(), 3, "{ready:?}");
    let nodes: BTreeSet<&str> = ready.iter().map(|(_, _, n)| n.as_str()).collect();
    assert_eq!(nodes.len(), 3, "spread over the zones' nodes: {ready:?}");
    let zone_of = |ip: Ipv4Addr| targets::az_of(&running.stack().unwrap(), ip).unwrap();
    let zones: BTreeSet<String> = ready.iter().map(|(_, ip, _)| zone_of(*ip)).collect();
    assert_eq!(zones, ["a", "b", "c"].map(String::from).into());
    let spec = pods.get(&ready[0].0).await.unwrap().spec.unwrap();
    let text = serde_json::to_string(&spec).unwrap();
    let token = running.state().credentials.vault.as_ref().unwrap().app_token.clone();
    assert!(!text.contains(&token), "the Vault token is in the Secret, not the pod's spec");
    assert!(text.contains("secretKeyRef"), "{text}");

    // Every ALB node routes to every pod (cross-zone on); every NLB node to
    // its own zone's pod only (cross-zone off).
    let pod_ips: BTreeSet<Ipv4Addr> = ready.iter().map(|(_, ip, _)| *ip).collect();
    let lb = |service: &str| -> Vec<(String, String, std::net::SocketAddr)> {
        running
            .state()
            .instances
            .iter()
            .filter(|i| i.service == service)
            .map(|i| (i.name.clone(), i.az.clone(), i.published[&alb::ADMIN_PORT]))
            .collect()
    };
    let (albs, nlbs) = (lb("alb"), lb("nlb"));
    for (name, _, admin) in &albs {
        let r = registered(*admin).await;
        assert_eq!(r.keys().copied().collect::<BTreeSet<_>>(), pod_ips, "{name}");
        let up = server_stats(*admin).await.unwrap();
        assert!(
            up.iter().filter(|s| s.backend == alb::TARGETS).all(|s| s.healthy()),
            "{name}: every pod passes the ALB's check: {up:?}"
        );
    }
    for (name, az, admin) in &nlbs {
        let r = registered(*admin).await;
        let own: BTreeSet<Ipv4Addr> = pod_ips.iter().filter(|ip| &zone_of(**ip) == az).copied().collect();
        assert_eq!(r.keys().copied().collect::<BTreeSet<_>>(), own, "{name}: its zone's pod only");
    }

    // Requests from outside, through the ALB, are answered by pods in
    // every zone, each with everything durable.
    let ca = std::fs::read_to_string(&env["VOYAGER_CA_CERT"]).unwrap();
    let tls = HttpClient::trusting(&ca).unwrap();
    let jwt = common::tenant_token(&env).await;
    let auth = format!("Bearer {jwt}");
    let mut answered_from = BTreeSet::new();
    for i in 0..12 {
        let r = request_with(
            &tls,
            "POST",
            &format!("{}/v1/runs", env["VOYAGER_API_URL"]),
            &[("content-type", "application/json"), ("authorization", &auth)],
            &format!(r#"{{"id":"t-pods-{i}"}}"#),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        answered_from.insert(v["zone"].as_str().unwrap().to_string());
    }
    assert_eq!(answered_from.len(), 3, "the ALB spreads over the zones' pods: {answered_from:?}");
    let r = request_with(
        &HttpClient::new(),
        "GET",
        &format!("{}/healthz", env["VOYAGER_NLB_B_URL"]),
        &[],
        "",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(r.body.contains("us-east-1b"), "NLB node b forwards to zone b's pod: {}", r.body);

    // Replace zone b's pod: its address drains on every node that routed
    // to it, leaves after the deregistration delay, and the new pod's is
    // registered.
    let (old_name, old_ip, _) = ready.iter().find(|(_, ip, _)| zone_of(*ip) == "b").unwrap().clone();
    let deleted = Instant::now();
    pods.delete(&old_name, &DeleteParams::default()).await.unwrap();
    let routed_b: Vec<&(String, String, std::net::SocketAddr)> =
        albs.iter().chain(nlbs.iter().filter(|(_, az, _)| az == "b")).collect();
    let mut drained_at = None;
    let mut gone_at = None;
    let mut new_ip = None;
    while gone_at.is_none() || new_ip.is_none() {
        assert!(
            deleted.elapsed() < Duration::from_secs(120),
            "drained {drained_at:?}, gone {gone_at:?}, new {new_ip:?}"
        );
        let mut views = vec![];
        for (_, _, admin) in &routed_b {
            views.push(registered(*admin).await);
        }
        if drained_at.is_none() && views.iter().all(|v| v.get(&old_ip) == Some(&true)) {
            drained_at = Some(deleted.elapsed());
        }
        if drained_at.is_some() && gone_at.is_none() && views.iter().all(|v| !v.contains_key(&old_ip)) {
            gone_at = Some(deleted.elapsed());
        }
        let now: BTreeSet<Ipv4Addr> = ready_pods(&pods).await.into_iter().map(|(_, ip, _)| ip).collect();
        if let Some(ip) = now.iter().find(|ip| !pod_ips.contains(ip)) {
            if views.iter().all(|v| v.get(ip) == Some(&false)) {
                new_ip = Some(*ip);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (drained, gone) = (drained_at.unwrap(), gone_at.unwrap());
    eprintln!("pod {old_ip} deleted: drained on every node after {drained:?}, deregistered after {gone:?}");
    assert!(
        gone - drained >= DEREGISTRATION - Duration::from_secs(1),
        "it stays drained for the deregistration delay: drained {drained:?}, gone {gone:?}"
    );
    // The control plane said what it did, for the report's timeline.
    let events = voyager_sim::state::events_since(&running.state().stack, 0);
    let said = |what: &str| events.iter().any(|e| e.what.contains(&old_ip.to_string()) && e.what.contains(what));
    assert!(said("draining") && said("deregistered"), "{events:?}");
    running.shutdown().await.unwrap();
}
