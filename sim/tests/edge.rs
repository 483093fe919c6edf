//! The ALB as a client on the internet meets it, with ELB's semantics on
//! shortened timers: a listener whose certificate verifies against the
//! stack's CA (and against nothing else), HTTP redirected to HTTPS, a
//! request through it answered by the API, a target taken out after
//! `unhealthy` failed checks and back after `healthy` good ones, fail-open
//! when every target fails its check, and the WAF's 429 past the limit.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use voyager_sim::http::{request_with, HttpClient};
use voyager_sim::services::alb;
use voyager_sim::stack::RateLimit;
use voyager_sim::{ImageSource, Progress, RunningStack, ServiceKind, Sim};

mod common;

const LIMIT: u32 = 150;

async fn get(c: &HttpClient, url: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let r = request_with(c, "GET", url, &headers, "", Duration::from_secs(30)).await.unwrap();
    (r.status, r.body)
}

/// alb-a's view of one target, and the sequence of states it went through
/// (as `show stat` words them: `UP 1/2` is one failed check of two).
async fn watch(running: &RunningStack, target: &str, until: impl Fn(&str) -> bool, limit: Duration) -> Vec<String> {
    let node = running.state().instances.iter().find(|i| i.name == "alb-a").unwrap().clone();
    let admin = node.published[&alb::ADMIN_PORT];
    let start = Instant::now();
    let mut seen: Vec<String> = vec![];
    loop {
        let stats = voyager_sim::services::haproxy::server_stats(admin).await.unwrap();
        let s = stats.iter().find(|s| s.backend == alb::TARGETS && s.server == target).expect("registered").clone();
        if seen.last() != Some(&s.status) {
            seen.push(s.status.clone());
        }
        if until(&s.status) {
            return seen;
        }
        assert!(start.elapsed() < limit, "{target} never got there; states seen: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_alb_terminates_tls_checks_targets_fails_open_and_rate_limits() {
    let mut stack = common::stack("t-edge", 235);
    let a = stack.alb.as_mut().expect("the built-in stack has an ALB");
    // ELB's thresholds as they are, on a 2 s interval. The deep check, so
    // that one dependency down fails every target at once (fail-open).
    a.health_check.interval = Duration::from_secs(2);
    a.health_check.timeout = Duration::from_secs(1);
    a.health_check.path = "/readyz".into();
    a.rate_limit = Some(RateLimit { requests: LIMIT, window: Duration::from_secs(60) });
    let (healthy, unhealthy) = (a.health_check.healthy, a.health_check.unhealthy);
    let mut only = voyager_sim::services::api::NEEDS.to_vec();
    only.extend([ServiceKind::Api, ServiceKind::Alb]);
    let running = Sim::new(stack)
        .with_images(ImageSource::Offline)
        .with_only(&only)
        .with_progress(Progress::stderr())
        .start()
        .await
        .unwrap();
    let env: BTreeMap<String, String> = running.env().into_iter().collect();
    let url = &env["VOYAGER_API_URL"];
    let ca = std::fs::read_to_string(&env["VOYAGER_CA_CERT"]).unwrap();
    let tls = HttpClient::trusting(&ca).unwrap();

    // The certificate verifies against the stack's CA and is refused by a
    // client that trusts anything else.
    let (s, body) = get(&tls, &format!("{url}/healthz"), None).await;
    assert_eq!(s, 200, "{body}");
    let other = request_with(&HttpClient::new(), "GET", &format!("{url}/healthz"), &[], "", Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(other.contains("certificate"), "{other}");
    assert!(ca.contains("BEGIN CERTIFICATE") && !ca.contains("PRIVATE KEY"), "only the CA");
    assert_eq!(env["VOYAGER_API_DOMAIN"], "api.voyager.example");
    // Plain HTTP is redirected, as an ALB's HTTP listener is set to.
    let node = running.state().instances.iter().find(|i| i.name == "alb-b").unwrap().clone();
    let plain = format!("http://{}/healthz", node.published[&alb::HTTP_PORT]);
    let r = request_with(&HttpClient::new(), "GET", &plain, &[], "", Duration::from_secs(10)).await.unwrap();
    assert_eq!(r.status, 301);

    // A request through the ALB: the service answers only with a token,
    // and with one, once every tier holds the run.
    let r = request_with(&tls, "POST", &format!("{url}/v1/runs"), &[], "{}", Duration::from_secs(30)).await.unwrap();
    assert_eq!(r.status, 401, "no token, no run: {}", r.body);
    let grant = json!({"grant_type": "client_credentials", "client_id": env["AUTH0_CLIENT_ID"],
        "client_secret": env["AUTH0_CLIENT_SECRET"], "audience": env["AUTH0_AUDIENCE"]});
    let token_url = format!("{}/oauth/token", env["AUTH0_ISSUER_BASE_URL"].trim_end_matches('/'));
    let t = request_with(
        &tls,
        "POST",
        &token_url,
        &[("content-type", "application/json")],
        &grant.to_string(),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let token = serde_json::from_str::<Value>(&t.body).unwrap()["access_token"].as_str().unwrap().to_string();
    let id = format!("t-edge-{}", std::process::id());
    let headers = [("content-type", "application/json"), ("authorization", &format!("Bearer {token}"))];
    let r = request_with(
        &tls,
        "POST",
        &format!("{url}/v1/runs"),
        &headers,
        &json!({"id": id}).to_string(),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let writer = running.postgres().unwrap();
    let rows = writer.query_strings(&format!("SELECT id FROM voyager_runs WHERE id = '{id}'")).await.unwrap();
    assert_eq!(rows.len(), 1, "the run is in PostgreSQL");

    // A target that dies leaves after `unhealthy` failed checks in a row,
    // not at the first, and the ALB then answers from the others.
    running.kill_instance("api-b").await.unwrap();
    let seen = watch(&running, "api-b", |s| s == "DOWN", Duration::from_secs(60)).await;
    assert!(seen.iter().any(|s| s == &format!("UP 1/{unhealthy}")), "one failed check keeps it in: {seen:?}");
    for _ in 0..6 {
        let (s, body) = get(&tls, &format!("{url}/healthz"), None).await;
        assert_eq!(s, 200, "the healthy targets answer: {body}");
        assert!(!body.contains("\"zone\":\"b\""), "no request goes to the dead target: {body}");
    }
    // Back after `healthy` good checks, each counted on the way.
    running.start_instance("api-b", Duration::from_secs(120)).await.unwrap();
    let seen = watch(&running, "api-b", |s| s == "UP", Duration::from_secs(60)).await;
    assert!(seen.iter().any(|s| s == &format!("DOWN {}/{healthy}", healthy - 1)), "{seen:?}");

    // Fail-open: InfluxDB down fails every target's deep check, and the
    // ALB still sends requests to them all rather than answering 503.
    running.kill_instance("influxdb-a").await.unwrap();
    for t in ["api-a", "api-b", "api-c"] {
        watch(&running, t, |s| s == "DOWN", Duration::from_secs(60)).await;
    }
    let (s, body) = get(&tls, &format!("{url}/healthz"), None).await;
    assert_eq!(s, 200, "fail-open: every target unhealthy, still routed: {body}");
    running.start_instance("influxdb-a", Duration::from_secs(120)).await.unwrap();
    watch(&running, "api-a", |s| s == "UP", Duration::from_secs(60)).await;

    // The WAF rule: past LIMIT requests a minute from one address, 429.
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..LIMIT + 30 {
        match get(&tls, &format!("{url}/healthz"), None).await.0 {
            200 => ok += 1,
            429 => limited += 1,
            s => panic!("neither served nor limited: {s}"),
        }
    }
    assert!(limited > 0 && ok <= LIMIT, "{ok} served, {limited} limited");
    let status = voyager_sim::services::service(ServiceKind::Alb).roles(running.state()).await;
    assert!(status["alb-c"].ends_with("targets healthy"), "{status:?}");
    running.shutdown().await.unwrap();
}
