//! The ALB as a client on the internet meets it, with ELB's semantics on
//! shortened timers: a listener whose certificate verifies against the
//! stack's CA (and against nothing else), HTTP redirected to HTTPS, a
//! request through it answered by the API, a target taken out after
//! `unhealthy` failed checks and back after `healthy` good ones, fail-open
//! when every target fails its check, and the WAF's 429 past the limit.
//! And Route 53 on the same stack: both zones answered over UDP, the VPC's
//! containers resolving private names through it, the API's record
//! dropping a dead ALB node and failing over to the maintenance answer
//! when no node has a healthy target, and the database's writer name
//! following a failover. The NLB beside it: TCP through each AZ's node to
//! that AZ's target only (cross-zone off), and its name dropping a node
//! whose AZ has no healthy target. Bad tokens refused through the ALB. The
//! certificate and both zones are also checked with curl and dig, as a user would.

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
async fn watch(admin: std::net::SocketAddr, target: &'static str, until: &'static str, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut seen: Vec<String> = vec![];
    loop {
        let stats = voyager_sim::services::haproxy::server_stats(admin).await.unwrap();
        let s = stats.iter().find(|s| s.backend == alb::TARGETS && s.server == target).expect("registered").clone();
        if seen.last() != Some(&s.status) {
            seen.push(s.status.clone());
        }
        if s.status == until {
            return seen;
        }
        assert!(start.elapsed() < limit, "{target} never got there; states seen: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ask until `done` holds, or fail with the last answer.
async fn wait_for<F, Fut, T>(ask: F, done: impl Fn(&T) -> bool, limit: Duration) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
    T: std::fmt::Debug,
{
    let start = Instant::now();
    loop {
        let v = ask().await;
        if done(&v) {
            return v;
        }
        assert!(start.elapsed() < limit, "still {v:?} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Route 53's answer for `name`, sorted.
async fn ask(dns: std::net::SocketAddr, name: String) -> Vec<std::net::Ipv4Addr> {
    let mut a: Vec<std::net::Ipv4Addr> =
        voyager_sim::dns::query_a(dns, &name, Duration::from_secs(5)).await.unwrap().a.iter().map(|r| r.0).collect();
    a.sort();
    a
}

fn addr_of_vault(running: &RunningStack) -> String {
    running.state().instances.iter().find(|i| i.service == "vault").unwrap().address.to_string()
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
    let n = stack.nlb.as_mut().expect("the built-in stack has an NLB");
    n.health_check.interval = Duration::from_secs(2);
    n.health_check.timeout = Duration::from_secs(1);
    let r = stack.route53.as_mut().expect("the built-in stack has Route 53");
    r.health_check_interval = Duration::from_secs(2);
    let mut only = voyager_sim::services::api::NEEDS.to_vec();
    only.extend([ServiceKind::Api, ServiceKind::Alb, ServiceKind::Nlb, ServiceKind::Route53]);
    let addr_of =
        |name: &str| stack.services.iter().flat_map(|s| &s.instances).find(|i| i.name == name).unwrap().address;
    let (alb_a, alb_b, alb_c) = (addr_of("alb-a"), addr_of("alb-b"), addr_of("alb-c"));
    let (pg_a, pg_b, s3_a) = (addr_of("postgres-a"), addr_of("postgres-b"), addr_of("s3-a"));
    let (nlb_addr_a, nlb_addr_b, nlb_addr_c) = (addr_of("nlb-a"), addr_of("nlb-b"), addr_of("nlb-c"));
    let mut running = Sim::new(stack)
        .with_images(ImageSource::Offline)
        .with_only(&only)
        .with_progress(Progress::stderr())
        .start()
        .await
        .unwrap();
    let env: BTreeMap<String, String> = running.env().into_iter().collect();
    let url = &env["VOYAGER_API_URL"];
    let dns: std::net::SocketAddr = env["ROUTE53_DNS"].parse().unwrap();
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
    // The same with curl, as a user would check it: it verifies against
    // VOYAGER_CA_CERT, and its own trust store does not know the stack's CA.
    let curl = |args: &[&str]| {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(args)
            .output()
            .expect("curl (scripts/setup.sh installs it)")
    };
    let ok = curl(&["--cacert", &env["VOYAGER_CA_CERT"], &format!("{url}/healthz")]);
    let said = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success() && said.contains("\"ok\""), "{said} {}", String::from_utf8_lossy(&ok.stderr));
    let untrusted = curl(&[&format!("{url}/healthz")]);
    assert_eq!(untrusted.status.code(), Some(60), "curl must refuse the certificate without the stack's CA");
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
    let token = common::tenant_token(&env).await;
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

    // Through the ALB (which passes the bearer token on untouched), what a
    // resource server must refuse is refused and writes nothing: tokens
    // the tenant really signed but that are expired past the 300 s skew,
    // for another audience or from another issuer, and a signature over
    // another payload.
    let admin = running.state().credentials.auth0_admin_token.clone();
    let issuer_base = env["AUTH0_ISSUER_BASE_URL"].trim_end_matches('/').to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut refused: Vec<(&str, String)> = vec![];
    for (what, over) in [
        ("expired beyond the skew", json!({"iat": now - 4000, "exp": now - 301})),
        ("wrong audience", json!({"audience": "someone-else"})),
        ("wrong issuer", json!({"claims": {"iss": "https://evil.example/"}})),
    ] {
        let mut body = json!({"client_id": env["AUTH0_CLIENT_ID"], "scope": "write:runs"});
        for (k, v) in over.as_object().unwrap() {
            body[k] = v.clone();
        }
        let auth = format!("Bearer {admin}");
        let h = [("content-type", "application/json"), ("authorization", auth.as_str())];
        let url = format!("{issuer_base}/voyager/tokens");
        let r = request_with(&tls, "POST", &url, &h, &body.to_string(), Duration::from_secs(30)).await.unwrap();
        assert_eq!(r.status, 200, "minting {what}: {}", r.body);
        refused.push((what, serde_json::from_str::<Value>(&r.body).unwrap()["access_token"].as_str().unwrap().into()));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let forged = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"someone","scope":"write:runs"}"#)
    };
    refused.push(("wrongly signed", format!("{}.{forged}.{}", parts[0], parts[2])));
    for (what, t) in &refused {
        let auth = format!("Bearer {t}");
        let h = [("content-type", "application/json"), ("authorization", auth.as_str())];
        let body = json!({"id": format!("{id}-refused")}).to_string();
        let r =
            request_with(&tls, "POST", &format!("{url}/v1/runs"), &h, &body, Duration::from_secs(30)).await.unwrap();
        assert_eq!(r.status, 401, "{what} must be refused through the ALB: {}", r.body);
    }
    let rows = writer.query_strings(&format!("SELECT id FROM voyager_runs WHERE id = '{id}-refused'")).await.unwrap();
    assert!(rows.is_empty(), "a refused request wrote nothing");

    // The NLB: plain TCP to the API through each AZ's node, its name
    // answering every node while each has a healthy target.
    let nlb_url = &env["VOYAGER_NLB_B_URL"];
    let (s, body) = get(&HttpClient::new(), &format!("{nlb_url}/healthz"), None).await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("\"zone\":\"b\""), "cross-zone off: node b forwards to AZ b's target only: {body}");
    let nlb_b = running.state().instances.iter().find(|i| i.name == "nlb-b").unwrap().clone();
    // Its own AZ's target only, and healthy. Healthy may take a while: the
    // balancers start beside the service, and HAProxy marks a target down
    // at its first failed check, so a target that was not yet listening
    // then needs `healthy` checks in a row to come back.
    let settle = Duration::from_secs(2 * (healthy as u64 + 2) + 30);
    wait_for(|| async { alb::target_health(&nlb_b).await.unwrap() }, |t| t == &[("api-b".to_string(), true)], settle)
        .await;
    let alb_node_a = running.state().instances.iter().find(|i| i.name == "alb-a").unwrap().clone();
    wait_for(
        || async { alb::target_health(&alb_node_a).await.unwrap() },
        |t| t.len() == 3 && t.iter().all(|(_, up)| *up),
        settle,
    )
    .await;

    // A target that dies leaves after `unhealthy` failed checks in a row,
    // not at the first, and the ALB then answers from the others.
    let admin = running.state().instances.iter().find(|i| i.name == "alb-a").unwrap().published[&alb::ADMIN_PORT];
    // Watched from before the kill: a check may fail while the kill returns.
    let down = tokio::spawn(watch(admin, "api-b", "DOWN", Duration::from_secs(60)));
    let nlb_admin = nlb_b.published[&alb::ADMIN_PORT];
    let nlb_down = tokio::spawn(watch(nlb_admin, "api-b", "DOWN", Duration::from_secs(60)));
    running.kill_instance("api-b").await.unwrap();
    let seen = down.await.unwrap();
    assert!(seen.iter().any(|s| s == &format!("UP 1/{unhealthy}")), "one failed check keeps it in: {seen:?}");
    // The NLB's TCP check saw it too, and its name dropped node b, whose
    // AZ has no healthy target left (NLB's DNS failover).
    let seen = nlb_down.await.unwrap();
    assert!(seen.iter().any(|s| s.starts_with("UP 1/")), "{seen:?}");
    let nlb_name = env["VOYAGER_NLB_DOMAIN"].clone();
    let ask_nlb = || ask(dns, nlb_name.clone());
    wait_for(ask_nlb, |a| a == &[nlb_addr_a, nlb_addr_c], Duration::from_secs(30)).await;
    for _ in 0..6 {
        let (s, body) = get(&tls, &format!("{url}/healthz"), None).await;
        assert_eq!(s, 200, "the healthy targets answer: {body}");
        assert!(!body.contains("\"zone\":\"b\""), "no request goes to the dead target: {body}");
    }
    // Back after `healthy` good checks, each counted on the way.
    let up = tokio::spawn(watch(admin, "api-b", "UP", Duration::from_secs(180)));
    running.start_instance("api-b", Duration::from_secs(120)).await.unwrap();
    let seen = up.await.unwrap();
    assert!(seen.iter().any(|s| s == &format!("DOWN {}/{healthy}", healthy - 1)), "{seen:?}");
    wait_for(ask_nlb, |a| a == &[nlb_addr_a, nlb_addr_b, nlb_addr_c], Duration::from_secs(60)).await;

    // Fail-open: InfluxDB down fails every target's deep check, and the
    // ALB still sends requests to them all rather than answering 503.
    running.kill_instance("influxdb-a").await.unwrap();
    for t in ["api-a", "api-b", "api-c"] {
        watch(admin, t, "DOWN", Duration::from_secs(60)).await;
    }
    let (s, body) = get(&tls, &format!("{url}/healthz"), None).await;
    assert_eq!(s, 200, "fail-open: every target unhealthy, still routed: {body}");
    running.start_instance("influxdb-a", Duration::from_secs(120)).await.unwrap();
    watch(admin, "api-a", "UP", Duration::from_secs(60)).await;

    // Route 53: the public record answers every ALB node, the private zone
    // names the tiers, and a container of the VPC resolves through it.
    let api_name = env["VOYAGER_API_DOMAIN"].clone();
    let ask = |name: &str| ask(dns, name.to_string());
    // (Every target just failed its deep check: evaluate-target-health
    // took the ALB out of the answer until its checks pass again.)
    wait_for(|| ask(&api_name), |a| a == &[alb_a, alb_b, alb_c], Duration::from_secs(60)).await;
    let ttl = voyager_sim::dns::query_a(dns, &api_name, Duration::from_secs(5)).await.unwrap().a[0].1;
    assert_eq!(ttl, 60, "Route 53's TTL for the record");
    assert_eq!(ask("writer.db.voyager.internal").await, [pg_a]);
    // And with dig from the host, as the README tells a user to ask it:
    // both zones, the answers and Route 53's TTL as the server sent them.
    let dig = |name: &str| -> Vec<(u32, std::net::Ipv4Addr)> {
        let out = std::process::Command::new("dig")
            .args([format!("@{}", dns.ip()), "-p".into(), dns.port().to_string()])
            .args(["+noall", "+answer", "+time=5", "+tries=1", name, "A"])
            .output()
            .expect("dig (scripts/setup.sh installs bind9-dnsutils)");
        assert!(out.status.success(), "dig {name}: {}", String::from_utf8_lossy(&out.stderr));
        let mut a: Vec<(u32, std::net::Ipv4Addr)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(3) == Some(&"A")).then(|| (f[1].parse().unwrap(), f[4].parse().unwrap()))
            })
            .collect();
        a.sort();
        a
    };
    assert_eq!(dig(&api_name), [(60, alb_a), (60, alb_b), (60, alb_c)], "the public zone");
    assert_eq!(dig("writer.db.voyager.internal").iter().map(|r| r.1).collect::<Vec<_>>(), [pg_a], "the private zone");
    let nx = voyager_sim::dns::query_a(dns, "nothere.voyager.internal", Duration::from_secs(5)).await.unwrap();
    assert_eq!((nx.rcode, nx.authoritative), (3, true), "NXDOMAIN, from the zone's own server");
    let docker = voyager_sim::runtime::docker::connect(&Progress::silent()).await.unwrap();
    let api_b = running.state().instances.iter().find(|i| i.name == "api-b").unwrap().container.clone();
    let hosts =
        voyager_sim::runtime::container::exec_ok(&docker, &api_b, &["getent", "hosts", "vault.voyager.internal"])
            .await
            .unwrap();
    assert!(hosts.contains(&addr_of_vault(&running)), "{hosts}");

    // A dead node leaves the answer after `failure_threshold` checks.
    running.kill_instance("alb-b").await.unwrap();
    let gone = wait_for(|| ask(&api_name), |a| !a.contains(&alb_b), Duration::from_secs(60)).await;
    assert_eq!(gone, [alb_a, alb_c]);
    // No node with a healthy target: the maintenance answer.
    for t in ["api-a", "api-b", "api-c"] {
        running.kill_instance(t).await.unwrap();
    }
    let maintenance = wait_for(|| ask(&api_name), |a| a == &[s3_a], Duration::from_secs(90)).await;
    assert_eq!(maintenance, [s3_a]);
    for t in ["api-a", "api-b", "api-c", "alb-b"] {
        running.start_instance(t, Duration::from_secs(120)).await.unwrap();
    }
    wait_for(|| ask(&api_name), |a| a == &[alb_a, alb_b, alb_c], Duration::from_secs(120)).await;
    let events: Vec<String> = voyager_sim::state::events_since("t-edge", 0).into_iter().map(|e| e.what).collect();
    assert!(events.iter().any(|e| e.contains("answers the secondary")), "{events:?}");
    // The writer's name follows a failover, as an RDS endpoint's does.
    running.failover_postgres(&Progress::stderr()).await.unwrap();
    wait_for(|| ask("writer.db.voyager.internal"), |a| a == &[pg_b], Duration::from_secs(30)).await;

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
