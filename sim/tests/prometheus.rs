//! The stack's Prometheus against real exporters: every target scraped,
//! the numbers a report's panels read match the cluster as it is, and a
//! node that dies shows in them within seconds.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use voyager_sim::services::prometheus::{self, PrometheusEndpoint};
use voyager_sim::ServiceKind;

/// The query's single value, once `done` holds for it; fails with the last
/// answer after `limit`.
async fn until(ep: &PrometheusEndpoint, q: &str, done: impl Fn(f64) -> bool, limit: Duration) -> f64 {
    let start = Instant::now();
    loop {
        let last = ep.query(q).await;
        if let Ok(v) = &last {
            if let [(_, x)] = v.as_slice() {
                if done(*x) {
                    return *x;
                }
            }
        }
        assert!(start.elapsed() < limit, "{q}: still {last:?} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn health(ep: &PrometheusEndpoint) -> BTreeMap<String, String> {
    ep.targets().await.unwrap().into_iter().map(|t| (t.instance, t.health)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_every_exporter_and_sees_a_broker_and_a_replica_die() {
    let running = common::start(
        "t-prom",
        229,
        &[ServiceKind::Kafka, ServiceKind::Postgres, ServiceKind::Influxdb, ServiceKind::Prometheus],
    )
    .await;
    let env: BTreeMap<String, String> = running.env().into_iter().collect();
    let ep = prometheus::endpoint(running.state()).unwrap();
    assert_eq!(env["PROMETHEUS_URL"], ep.url());
    assert!(ep.url().starts_with("http://127.0.0.1:"), "published on loopback only");

    // Every node's exporter answers: six Kafka JVMs' agents, three
    // database nodes' exporters, InfluxDB's endpoint (no credentials:
    // it is outside InfluxDB's authentication), Prometheus itself.
    let start = Instant::now();
    loop {
        let h = health(&ep).await;
        if h.len() == 11 && h.values().all(|s| s == "up") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "targets not all up: {h:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // What the panels read, as the cluster is: every partition fully in
    // sync, one synchronous standby, three nodes, one primary.
    let minute = Duration::from_secs(60);
    until(&ep, "sum(kafka_server_replicamanager_underreplicatedpartitions)", |v| v == 0.0, minute).await;
    let isr = "min(max by (topic, partition) (kafka_cluster_partition_insyncreplicascount))";
    until(&ep, isr, |v| v == 3.0, minute).await;
    let sync = "count(voyager_pg_replication_replay_lag_bytes{sync_state=\"sync\"})";
    until(&ep, sync, |v| v == 1.0, minute).await;
    until(&ep, "count(pg_up == 1)", |v| v == 3.0, minute).await;
    until(&ep, "count(voyager_pg_in_recovery == 0)", |v| v == 1.0, minute).await;
    // The load balancers' queries run on a stack without them: nothing,
    // not an error.
    assert!(ep.query("haproxy_backend_active_servers").await.unwrap().is_empty());

    // A broker dies: its agent goes silent, and the brokers left report
    // the partitions it held as under-replicated once the controller
    // fences it (broker session timeout, 9 s).
    running.kill_instance("kafka-c").await.unwrap();
    let urp =
        until(&ep, "sum(kafka_server_replicamanager_underreplicatedpartitions)", |v| v > 0.0, Duration::from_secs(90))
            .await;
    until(&ep, isr, |v| v == 2.0, minute).await;
    let h = health(&ep).await;
    assert_eq!(h["kafka-c"], "down", "{h:?}");
    eprintln!("after kafka-c died: {urp} partitions under-replicated");

    // The read replica dies: its exporter, which lives beside Prometheus,
    // goes on answering, and then fails its scrape (exporter 0.11 fails
    // the whole scrape when its database is gone): the node reads as a
    // down target, `up 0`, rather than vanishing from Prometheus's view.
    running.kill_instance("postgres-c").await.unwrap();
    // The first scrape after the kill may still answer, with pg_up 0;
    // the report's "nodes answering" counts pg_up 1, so either reads down.
    until(&ep, "count(pg_up == 1)", |v| v == 2.0, minute).await;
    let down = "count(up{job=\"postgres\", instance=\"postgres-c\"} == 0 or pg_up{instance=\"postgres-c\"} == 0)";
    until(&ep, down, |v| v >= 1.0, minute).await;
    until(&ep, sync, |v| v == 1.0, minute).await;

    running.shutdown().await.unwrap();
}
