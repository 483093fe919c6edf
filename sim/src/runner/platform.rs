//! After the load: ask the stack's Prometheus what the platform did over
//! the run, for the report's panels. Which panels a stack gets is decided
//! from its services and image set (`specs`, pure); each is a few PromQL
//! range queries, one point per scrape interval, timed from the run's start.

use crate::images::ImageSet;
use crate::report::{Panel, PanelSeries, PlatformReport};
use crate::services::prometheus::{self, PrometheusEndpoint, Series};
use crate::stack::{ServiceKind, Stack};
use crate::state::RunState;

/// One series of a panel: its query and what names it (a label whose value
/// names each series, or one fixed name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub promql: &'static str,
    pub name: Name,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    Fixed(&'static str),
    Label(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub title: &'static str,
    pub unit: &'static str,
    pub queries: Vec<Query>,
    /// Why this stack cannot have the panel's numbers, if it cannot.
    pub missing: Option<&'static str>,
}

const NO_EXPORTER: &str = "the upstream image has no exporter for it (run with --images offline)";

/// The panels for a stack's services.
pub fn specs(stack: &Stack, images: ImageSet) -> Vec<Spec> {
    let has = |k: ServiceKind| stack.service(k).is_some();
    let offline = images == ImageSet::Offline;
    let q = |promql, name| Query { promql, name };
    let mut out = vec![];
    if has(ServiceKind::Kafka) {
        let missing = (!offline).then_some(NO_EXPORTER);
        out.push(Spec {
            title: "Kafka: under-replicated partitions",
            unit: "partitions",
            queries: vec![
                q(
                    "sum(kafka_server_replicamanager_underreplicatedpartitions)",
                    Name::Fixed("under-replicated (all brokers)"),
                ),
                q(
                    "sum(kafka_server_replicamanager_underminisrpartitioncount)",
                    Name::Fixed("under min.insync.replicas (no acks=all write)"),
                ),
                q("max(kafka_controller_kafkacontroller_offlinepartitionscount)", Name::Fixed("offline (no leader)")),
            ],
            missing,
        });
        // A partition's ISR gauge is its leader's (followers report 0), so
        // a partition whose leader is gone reads 0 until another is
        // elected: those are the panel above's offline partitions, and
        // here only partitions with a leader count.
        out.push(Spec {
            title: "Kafka: in-sync replicas per partition",
            unit: "replicas",
            queries: vec![
                q(
                    "min(max by (topic, partition) (kafka_cluster_partition_insyncreplicascount) > 0)",
                    Name::Fixed("smallest ISR"),
                ),
                q("max(max by (topic, partition) (kafka_cluster_partition_replicascount))", Name::Fixed("replicas")),
            ],
            missing,
        });
    }
    if has(ServiceKind::Postgres) {
        let missing = (!offline).then_some(NO_EXPORTER);
        out.push(Spec {
            title: "PostgreSQL: replication lag, as the primary sees each standby",
            unit: "bytes",
            queries: vec![q(
                "max by (application_name) (voyager_pg_replication_replay_lag_bytes)",
                Name::Label("application_name"),
            )],
            missing,
        });
        out.push(Spec {
            title: "PostgreSQL: nodes answering, synchronous standbys, primaries",
            unit: "nodes",
            queries: vec![
                q("count(pg_up == 1) or vector(0)", Name::Fixed("nodes answering")),
                q(
                    "count(voyager_pg_replication_replay_lag_bytes{sync_state=\"sync\"}) or vector(0)",
                    Name::Fixed("synchronous standbys"),
                ),
                q("count(voyager_pg_in_recovery == 0) or vector(0)", Name::Fixed("primaries")),
            ],
            missing,
        });
    }
    if has(ServiceKind::Kubernetes) {
        let missing = (!offline).then_some(NO_EXPORTER);
        // What the API believes, from kube-state-metrics: a pod on a lost
        // node stays Ready until the node lifecycle controller notices, so
        // the gap between the fault and the drop is Kubernetes' detection.
        // Zones with nothing ready read 0 rather than vanishing.
        out.push(Spec {
            title: "Kubernetes: ready pods per zone (workloads, not kube-system)",
            unit: "pods",
            queries: vec![q(
                "sum by (label_topology_kubernetes_io_zone) ((kube_pod_status_ready{condition=\"true\", \
                 namespace!=\"kube-system\"} * on (namespace, pod) group_left (node) kube_pod_info) * on (node) \
                 group_left (label_topology_kubernetes_io_zone) kube_node_labels) or sum by \
                 (label_topology_kubernetes_io_zone) (kube_node_labels) * 0",
                Name::Label("label_topology_kubernetes_io_zone"),
            )],
            missing,
        });
        out.push(Spec {
            title: "Kubernetes: Ready nodes per zone",
            unit: "nodes",
            queries: vec![q(
                "sum by (label_topology_kubernetes_io_zone) (kube_node_status_condition{condition=\"Ready\", \
                 status=\"true\"} * on (node) group_left (label_topology_kubernetes_io_zone) kube_node_labels)",
                Name::Label("label_topology_kubernetes_io_zone"),
            )],
            missing,
        });
    }
    for (kind, title, promql) in [
        (
            ServiceKind::Alb,
            "ALB: healthy targets, as each node sees them",
            "max by (instance) (haproxy_backend_active_servers{job=\"alb\", proxy=\"targets\"})",
        ),
        (
            ServiceKind::Nlb,
            "NLB: healthy targets, as each node sees them",
            "max by (instance) (haproxy_backend_active_servers{job=\"nlb\", proxy=\"targets\"})",
        ),
    ] {
        if has(kind) {
            out.push(Spec { title, unit: "targets", queries: vec![q(promql, Name::Label("instance"))], missing: None });
        }
    }
    out
}

/// Each series named and timed from `start_unix`.
pub fn series_of(found: Vec<Series>, name: &Name, start_unix: f64) -> Vec<PanelSeries> {
    found
        .into_iter()
        .map(|s| PanelSeries {
            name: match name {
                Name::Fixed(n) => n.to_string(),
                Name::Label(l) => s.labels.get(*l).cloned().unwrap_or_else(|| "?".into()),
            },
            points: s.points.iter().map(|(t, v)| (((t - start_unix) * 10.0).round() / 10.0, *v)).collect(),
        })
        .collect()
}

/// The panels over `[start_unix, start_unix + duration_s]`, or `None` when
/// the stack has no Prometheus. A query that fails empties its panel and
/// says why there, rather than failing the run.
pub async fn collect(state: &RunState, stack: &Stack, start_unix: f64, duration_s: f64) -> Option<PlatformReport> {
    let ep: PrometheusEndpoint = prometheus::endpoint(state)?;
    let step = prometheus::SCRAPE_INTERVAL;
    // The run's last seconds are in Prometheus once a scrape newer than
    // its end is (up to an interval later); not longer than three
    // intervals, since a target that stopped answering never gets newer.
    let end = start_unix + duration_s;
    let give_up = std::time::Instant::now() + 3 * step;
    while std::time::Instant::now() < give_up {
        let newest = ep.query("max(timestamp(up))").await.ok().and_then(|v| v.first().map(|(_, t)| *t));
        if newest.is_some_and(|t| t >= end) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let mut panels = vec![];
    for spec in specs(stack, state.images) {
        let mut panel = Panel {
            title: spec.title.into(),
            unit: spec.unit.into(),
            queries: spec.queries.iter().map(|q| q.promql.to_string()).collect(),
            series: vec![],
            missing: spec.missing.map(str::to_string),
        };
        if panel.missing.is_none() {
            for q in &spec.queries {
                match ep.query_range(q.promql, start_unix, start_unix + duration_s, step).await {
                    Ok(found) => panel.series.extend(series_of(found, &q.name, start_unix)),
                    Err(e) => {
                        panel.missing = Some(e);
                        break;
                    }
                }
            }
            if panel.missing.is_none() && panel.series.is_empty() {
                panel.missing = Some("Prometheus has no samples for it in the run's window".into());
            }
        }
        panels.push(panel);
    }
    Some(PlatformReport { source: format!("Prometheus at {}", ep.url()), step_s: step.as_secs_f64(), panels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_stack_gets_a_panel_per_tier_it_runs() {
        let stack = crate::harness::builtin_stack();
        let titles: Vec<&str> = specs(&stack, ImageSet::Offline).iter().map(|s| s.title).collect();
        assert_eq!(titles.len(), 8, "{titles:?}");
        assert!(titles.iter().any(|t| t.starts_with("Kubernetes: ready pods per zone")));
        assert!(titles.iter().any(|t| t.starts_with("Kafka: under-replicated")));
        assert!(titles.iter().any(|t| t.starts_with("ALB")) && titles.iter().any(|t| t.starts_with("NLB")));
        let only_kafka = stack.only(&[ServiceKind::Kafka, ServiceKind::Prometheus]);
        assert_eq!(specs(&only_kafka, ImageSet::Offline).len(), 2);
        let up = specs(&stack, ImageSet::Upstream);
        assert!(up.iter().filter(|s| s.missing.is_some()).all(|s| !s.title.starts_with("ALB")));
        assert_eq!(
            up.iter().filter(|s| s.missing.is_some()).count(),
            6,
            "Kafka's, PostgreSQL's and the cluster's need the exporters"
        );
    }

    #[test]
    fn series_are_named_and_timed_from_the_run_start() {
        let found = vec![Series {
            labels: BTreeMap::from([("application_name".to_string(), "postgres-b".to_string())]),
            points: vec![(1000.04, 0.0), (1002.04, 512.0)],
        }];
        let s = series_of(found.clone(), &Name::Label("application_name"), 1000.0);
        assert_eq!(s[0].name, "postgres-b");
        assert_eq!(s[0].points, [(0.0, 0.0), (2.0, 512.0)]);
        assert_eq!(series_of(found, &Name::Fixed("lag"), 1000.0)[0].name, "lag");
    }
}
