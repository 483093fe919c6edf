//! `voyager-bench api [--seconds S] [--pods]`: what voyager-api
//! sustains on this machine, straight to its replicas, through the ALB
//! (TLS terminated, L7) and through the NLB (TCP passed through). The
//! stack's tiers, its three replicas and both balancers come up (the
//! replicas as containers, or with `--pods` as the cluster's Deployment,
//! which only the balancers reach; the WAF rule off, since this measures
//! the balancer, not the limit); a tenant token is fetched once; then, per concurrency level and
//! path, C clients each send `POST /v1/runs` back to back for S seconds,
//! spread over the replicas or the ALB's nodes (each client keeps its
//! connection, as an application's pool does). Printed: answers per second, the share
//! that were 201, p50/p99/max latency. Closed-loop on purpose: it finds the
//! ceiling; the scenarios' open-model load measures latency under a rate.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use voyager_sim::http::{request_with, HttpClient};
use voyager_sim::{Progress, ServiceKind};

/// The service and the tiers it needs (and the cluster it runs on, as pods).
fn kinds(pods: bool) -> Vec<ServiceKind> {
    let mut k = voyager_sim::services::api::NEEDS.to_vec();
    k.extend([ServiceKind::Api, ServiceKind::Alb, ServiceKind::Nlb]);
    if pods {
        k.push(ServiceKind::Kubernetes);
    }
    k
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub async fn api(seconds: u64, levels: &[usize], pods: bool) {
    let kinds = kinds(pods);
    let mut stack = crate::builtin_in("10.248.0.0/16");
    stack.alb.as_mut().expect("the built-in stack has an ALB").rate_limit = None;
    let running = crate::start_offline(stack, "bench-api", &kinds, Progress::stderr()).await;
    let env: BTreeMap<String, String> = running.env().into_iter().collect();
    let urls = |prefix: &str| -> Vec<String> {
        env.iter()
            .filter(|(k, _)| k.starts_with(prefix) && k.ends_with("_URL") && k.len() == prefix.len() + 5)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let (replicas, nodes, nlb) = (urls("VOYAGER_API_"), urls("VOYAGER_ALB_"), urls("VOYAGER_NLB_"));
    let ca = std::fs::read_to_string(&env["VOYAGER_CA_CERT"]).expect("the stack's CA");
    let token = voyager_sim::services::auth0::client_token(&env).await.expect("a token");
    let auth = format!("Bearer {token}");
    println!(
        "voyager-api: {} replicas ({}), {} ALB nodes (HTTPS), {} NLB nodes (TCP, cross-zone off), {seconds}s per \
         level, closed loop",
        voyager_sim::services::api::pods::replicas(&running.stack().expect("the stack")),
        if pods { "pods, reached only through the balancers" } else { "containers" },
        nodes.len(),
        nlb.len()
    );
    let paths = [("replicas", replicas), ("alb", nodes), ("nlb", nlb)];
    let paths: Vec<(&'static str, Vec<String>)> = paths.into_iter().filter(|(_, t)| !t.is_empty()).collect();
    let runs: Vec<(usize, &'static str, &Vec<String>)> =
        levels.iter().flat_map(|c| paths.iter().map(move |(p, t)| (*c, *p, t))).collect();
    for (c, path, targets) in runs {
        let ca = ca.clone();
        let start = Instant::now();
        let until = start + Duration::from_secs(seconds);
        let clients = (0..c).map(|i| {
            let url = format!("{}/v1/runs", targets[i % targets.len()]);
            let (auth, ca) = (auth.clone(), ca.clone());
            tokio::spawn(async move {
                let http = HttpClient::trusting(&ca).expect("the CA parses");
                let (mut lat, mut ok, mut n) = (vec![], 0u64, 0u64);
                while Instant::now() < until {
                    let body = format!(r#"{{"id":"bench-{path}-{c}-{i}-{n}"}}"#);
                    let t = Instant::now();
                    let r = request_with(
                        &http,
                        "POST",
                        &url,
                        &[("content-type", "application/json"), ("authorization", &auth)],
                        &body,
                        Duration::from_secs(60),
                    )
                    .await;
                    lat.push(t.elapsed());
                    ok += u64::from(r.is_ok_and(|r| r.status == 201));
                    n += 1;
                }
                (lat, ok)
            })
        });
        let mut lat = vec![];
        let mut ok = 0;
        for h in futures_collect(clients.collect()).await {
            lat.extend(h.0);
            ok += h.1;
        }
        let took = start.elapsed().as_secs_f64();
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        println!(
            "{path:<8} concurrency {c:<3} {:>7.1} answers/s  {:>5.1}% 201  p50 {}  p99 {}  max {}",
            lat.len() as f64 / took,
            100.0 * ok as f64 / lat.len().max(1) as f64,
            ms(pct(0.5)),
            ms(pct(0.99)),
            ms(lat[lat.len() - 1])
        );
    }
    running.shutdown().await.expect("down");
}

async fn futures_collect<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = vec![];
    for h in handles {
        out.push(h.await.expect("a client task"));
    }
    out
}
