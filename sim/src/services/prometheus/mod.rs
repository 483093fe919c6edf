//! Prometheus: what the platform did, in numbers over time, for reports and
//! for a user's own queries (`PROMETHEUS_URL`).
//!
//! One server (Debian's 2.42 offline, `prom/prometheus:v2.42.0` upstream)
//! scraping every few seconds, short retention: a stack is an experiment,
//! not a fleet. What it scrapes, each by its own exporter:
//! - Kafka brokers and controllers: the JMX exporter agent inside each JVM
//!   (offline image only; the upstream Kafka image has no agent), keeping
//!   only the replica manager's, the partitions' and the controller's
//!   gauges.
//! - PostgreSQL: Debian's postgres exporter, one process per database node,
//!   run inside this container and connecting over the VPC (offline image
//!   only). From outside the node, as CloudWatch sees RDS: a node that dies
//!   reads as a down target (`up 0`: the exporter fails its scrape), not
//!   as silence. Its queries are ours
//!   (`PG_QUERIES`): recovery state, and per standby the primary's view of
//!   its sync state and replay lag.
//! - InfluxDB's own `/metrics`.
//! - The ALB's and NLB's nodes: HAProxy's own Prometheus endpoint.
//! - Kubernetes: kube-state-metrics (offline image only), the API servers
//!   and the kubelets, as a read-only service account ([`kube`]).
//!
//! It sits where the stack file puts it (the built-in stack: AZ c, so the
//! shipped AZ-loss scenarios, which lose a or b, keep their metrics), and
//! starts in the second pass: it names every other instance, and it adds
//! nothing to the data tier's time to ready.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use super::SpecContext;
use crate::http::{encode, request_with, HttpClient};
use crate::images::{image_for, ImageSet};
use crate::runtime::network::network_name;
use crate::spec::{ContainerSpec, Publish};
use crate::stack::{ServiceKind, Stack};
use crate::state::{InstanceState, RunState};

pub mod kube;

pub const PORT: u16 = 9090;
/// How often every target is scraped: the reports' resolution.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(2);
/// Kept this long: a few scenario runs' worth.
pub const RETENTION: &str = "2h";
/// The n-th database node's exporter listens on this port + n, inside the
/// Prometheus container only.
pub const PG_EXPORTER_PORT: u16 = 9187;

const CONFIG: &str = "/etc/voyager/prometheus.yml";
const PG_QUERIES: &str = "/etc/voyager/pg-queries.yaml";
const PG_PASSWORD: &str = "/etc/voyager/pg-password";

/// The postgres exporter's queries (its `--extend.query-path` format). The
/// replication view is the primary's: a standby's own lag reads zero when
/// nothing is written, the primary's is what has not reached it.
pub const PG_QUERIES_YAML: &str = r#"voyager_pg:
  query: "SELECT CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END AS in_recovery"
  metrics:
    - in_recovery:
        usage: "GAUGE"
        description: "1 on a standby or replica, 0 on the primary"
voyager_pg_replication:
  query: "SELECT application_name, sync_state, COALESCE(EXTRACT(EPOCH FROM replay_lag), 0) AS replay_lag_seconds, COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0) AS replay_lag_bytes FROM pg_stat_replication"
  metrics:
    - application_name:
        usage: "LABEL"
        description: "the standby's name"
    - sync_state:
        usage: "LABEL"
        description: "sync, potential, quorum or async"
    - replay_lag_seconds:
        usage: "GAUGE"
        description: "replay_lag as the primary measures it"
    - replay_lag_bytes:
        usage: "GAUGE"
        description: "WAL the primary has written that the standby has not replayed"
"#;

/// One scrape target: where, and the labels it is known by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub job: &'static str,
    pub address: String,
    pub instance: String,
    pub az: String,
    pub role: String,
}

/// Every target Prometheus scrapes in this stack with this image set;
/// the cluster's only with the reader identity to scrape them as (`kube`).
pub fn targets(stack: &Stack, images: ImageSet, kube: bool) -> Vec<Target> {
    let mut out = vec![];
    let offline = images == ImageSet::Offline;
    let mut pg = 0u16;
    for svc in &stack.services {
        for inst in &svc.instances {
            let (job, address) = match svc.kind {
                ServiceKind::Kafka if offline => ("kafka", format!("{}:{}", inst.address, super::kafka::METRICS_PORT)),
                ServiceKind::Postgres if offline => {
                    pg += 1;
                    ("postgres", format!("127.0.0.1:{}", PG_EXPORTER_PORT + pg - 1))
                }
                // Its own `/metrics` (the Go runtime's and the HTTP
                // service's), outside the authentication its API needs.
                ServiceKind::Influxdb => ("influxdb", format!("{}:{}", inst.address, super::influxdb::PORT)),
                ServiceKind::Alb => ("alb", format!("{}:{}", inst.address, super::alb::METRICS_PORT)),
                ServiceKind::Nlb => ("nlb", format!("{}:{}", inst.address, super::alb::METRICS_PORT)),
                ServiceKind::Prometheus => ("prometheus", format!("127.0.0.1:{PORT}")),
                _ => continue,
            };
            out.push(Target {
                job,
                address,
                instance: inst.name.clone(),
                az: inst.az.clone(),
                role: inst.role.clone(),
            });
        }
    }
    if let Some(plan) = crate::services::kubernetes::ClusterPlan::of(stack).filter(|_| kube) {
        for n in &plan.nodes {
            let t = |job, port| Target {
                job,
                address: format!("{}:{port}", n.address),
                instance: n.name.clone(),
                az: n.az.clone(),
                role: if n.control_plane { "control-plane" } else { "worker" }.into(),
            };
            if n.control_plane {
                out.push(t("kubernetes-apiservers", crate::services::kubernetes::API_PORT));
            }
            out.push(t("kubelet", kube::KUBELET_PORT));
        }
        if let Some(p) = stack.service(ServiceKind::Prometheus).and_then(|s| s.instances.first()).filter(|_| offline) {
            out.push(Target {
                job: "kube-state-metrics",
                address: format!("127.0.0.1:{}", kube::KSM_PORT),
                instance: "kube-state-metrics".into(),
                az: p.az.clone(),
                role: "exporter".into(),
            });
        }
    }
    out
}

/// The server's configuration: one static target per instance, labelled
/// with the instance's name, AZ and role, so queries read like the stack.
pub fn config(stack: &Stack, images: ImageSet, kube: bool) -> String {
    let every = SCRAPE_INTERVAL.as_secs();
    let mut y = format!(
        "# Written by voyager-sim from the stack file.\nglobal:\n  scrape_interval: {every}s\n  \
         scrape_timeout: {every}s\n  evaluation_interval: {every}s\nscrape_configs:\n"
    );
    let all = targets(stack, images, kube);
    let mut jobs: Vec<&str> = all.iter().map(|t| t.job).collect();
    jobs.dedup();
    for job in jobs {
        let _ = write!(y, "  - job_name: {job}\n{}    static_configs:\n", kube::job_settings(job));
        for t in all.iter().filter(|t| t.job == job) {
            let _ = write!(
                y,
                "      - targets: ['{}']\n        labels: {{instance: '{}', az: '{}', role: '{}'}}\n",
                t.address, t.instance, t.az, t.role
            );
        }
    }
    y
}

pub fn specs(cx: &SpecContext) -> Vec<ContainerSpec> {
    let Some(svc) = cx.stack.service(ServiceKind::Prometheus) else { return vec![] };
    let offline = cx.images == ImageSet::Offline;
    let pg_nodes: Vec<String> = cx
        .stack
        .service(ServiceKind::Postgres)
        .map(|s| s.instances.iter().map(|i| format!("{}={}", i.name, i.address)).collect())
        .unwrap_or_default();
    let plan = crate::services::kubernetes::ClusterPlan::of(cx.stack);
    svc.instances
        .iter()
        .map(|inst| {
            let mut env = BTreeMap::new();
            let reader = cx.credentials.kube_reader.as_ref();
            let mut files = vec![(CONFIG.to_string(), 0o644, config(cx.stack, cx.images, reader.is_some()))];
            if let (Some(r), Some(plan)) = (reader, &plan) {
                files.extend(kube::files(r, plan, &inst.az, offline));
                if offline {
                    env.insert("VOYAGER_KSM_ARGS".to_string(), kube::ksm_args());
                }
            }
            if offline && !pg_nodes.is_empty() {
                env.insert("VOYAGER_PG_NODES".to_string(), pg_nodes.join(" "));
                env.insert("VOYAGER_PG_USER".to_string(), cx.credentials.postgres_user.clone());
                env.insert("VOYAGER_PG_PASSWORD_FILE".to_string(), PG_PASSWORD.to_string());
                files.push((PG_QUERIES.to_string(), 0o644, PG_QUERIES_YAML.to_string()));
                // Readable by the server's own user, in a container that
                // runs nothing else.
                files.push((PG_PASSWORD.to_string(), 0o644, cx.credentials.postgres_password.clone()));
            }
            ContainerSpec {
                instance: inst.name.clone(),
                image: image_for(ServiceKind::Prometheus, cx.images),
                env,
                cmd: vec![
                    format!("--config.file={CONFIG}"),
                    "--storage.tsdb.path=/prometheus".into(),
                    format!("--storage.tsdb.retention.time={RETENTION}"),
                    format!("--web.listen-address=:{PORT}"),
                    "--log.level=warn".into(),
                ],
                network: network_name(cx.stack_name, &inst.az, inst.tier),
                address: inst.address,
                published: vec![Publish::any(PORT)],
                files,
                ..Default::default()
            }
        })
        .collect()
}

/// Where Prometheus is reached from the host.
#[derive(Debug, Clone)]
pub struct PrometheusEndpoint {
    pub host: SocketAddr,
    client: HttpClient,
}

/// One series of a range query: its labels and (unix seconds, value) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

/// One target as Prometheus last scraped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeState {
    pub job: String,
    pub instance: String,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: String,
    pub last_error: String,
}

pub fn endpoint(state: &RunState) -> Option<PrometheusEndpoint> {
    let inst = state.instances.iter().find(|i| i.service == ServiceKind::Prometheus.as_str())?;
    Some(PrometheusEndpoint { host: *inst.published.get(&PORT)?, client: HttpClient::new() })
}

impl PrometheusEndpoint {
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        let r = request_with(&self.client, "GET", &format!("{}{path}", self.url()), &[], "", Duration::from_secs(10))
            .await?;
        let v: Value = serde_json::from_str(&r.body)
            .map_err(|_| format!("Prometheus answered {} to {path}: {}", r.status, r.body.trim()))?;
        if v["status"] != "success" {
            return Err(format!("Prometheus refused {path}: {}", v["error"].as_str().unwrap_or(r.body.trim())));
        }
        Ok(v["data"].clone())
    }

    /// An instant query: each series' labels and value.
    pub async fn query(&self, q: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>, String> {
        let data = self.get(&format!("/api/v1/query?query={}", encode(q))).await?;
        Ok(parse_vector(&data))
    }

    /// A range query from `start` to `end` (unix seconds), a point per `step`.
    pub async fn query_range(&self, q: &str, start: f64, end: f64, step: Duration) -> Result<Vec<Series>, String> {
        let path = format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={}s",
            encode(q),
            step.as_secs_f64()
        );
        Ok(parse_matrix(&self.get(&path).await?))
    }

    pub async fn targets(&self) -> Result<Vec<ScrapeState>, String> {
        let data = self.get("/api/v1/targets?state=active").await?;
        Ok(parse_targets(&data))
    }
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// Prometheus writes sample values as strings ("NaN" and "+Inf" among them).
fn sample(v: &Value) -> Option<(f64, f64)> {
    Some((v.get(0)?.as_f64()?, v.get(1)?.as_str()?.parse().ok()?))
}

pub fn parse_vector(data: &Value) -> Vec<(BTreeMap<String, String>, f64)> {
    data["result"]
        .as_array()
        .map(|r| r.iter().filter_map(|s| Some((labels(&s["metric"]), sample(&s["value"])?.1))).collect())
        .unwrap_or_default()
}

pub fn parse_matrix(data: &Value) -> Vec<Series> {
    data["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|s| Series {
                    labels: labels(&s["metric"]),
                    points: s["values"].as_array().map(|p| p.iter().filter_map(sample).collect()).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn parse_targets(data: &Value) -> Vec<ScrapeState> {
    data["activeTargets"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| ScrapeState {
                    job: t["labels"]["job"].as_str().unwrap_or_default().to_string(),
                    instance: t["labels"]["instance"].as_str().unwrap_or_default().to_string(),
                    health: t["health"].as_str().unwrap_or("unknown").to_string(),
                    last_error: t["lastError"].as_str().unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub async fn probe(inst: &InstanceState) -> Result<(), String> {
    let addr = inst.published.get(&PORT).ok_or("no published port")?;
    let r = request_with(&HttpClient::new(), "GET", &format!("http://{addr}/-/ready"), &[], "", Duration::from_secs(3))
        .await?;
    if r.status == 200 {
        Ok(())
    } else {
        Err(format!("/-/ready answered {}", r.status))
    }
}

/// Ready as a whole once every target has been scraped at least once
/// (up or not): from then on a report's first seconds have numbers.
async fn provision(state: &RunState, timeout: Duration) -> Result<(), String> {
    let ep = endpoint(state).ok_or("no Prometheus instance")?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let t = ep.targets().await?;
        let waiting: Vec<String> =
            t.iter().filter(|s| s.health == "unknown").map(|s| format!("{}/{}", s.job, s.instance)).collect();
        if !t.is_empty() && waiting.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("not scraped yet: {}", waiting.join(", ")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn env(state: &RunState) -> Vec<(String, String)> {
    endpoint(state).map(|e| vec![("PROMETHEUS_URL".into(), e.url())]).unwrap_or_default()
}

/// The service's contract with the harness (see [`super::Service`]).
pub struct Prometheus;

#[async_trait::async_trait]
impl super::Service for Prometheus {
    fn specs(&self, cx: &SpecContext) -> Vec<ContainerSpec> {
        specs(cx)
    }
    fn after_vault(&self) -> bool {
        true
    }
    /// The cluster's read-only identity, made once the cluster is ready
    /// (the first pass) and before the config that names it is written.
    async fn prepare(&self, state: &mut RunState) -> Result<(), String> {
        let has_kube = state.instances.iter().any(|i| i.service == ServiceKind::Kubernetes.as_str());
        if has_kube && state.credentials.kube_reader.is_none() {
            state.credentials.kube_reader =
                Some(kube::make_reader(state).await.map_err(|e| format!("the cluster's reader for Prometheus: {e}"))?);
        }
        Ok(())
    }
    async fn probe(&self, _cx: &super::ProbeContext<'_>, inst: &InstanceState) -> Result<(), String> {
        probe(inst).await
    }
    async fn provision(&self, cx: &super::ProvisionContext<'_>) -> Result<(), String> {
        provision(cx.state, cx.timeout).await
    }
    async fn roles(&self, state: &RunState) -> BTreeMap<String, String> {
        let Some(ep) = endpoint(state) else { return BTreeMap::new() };
        let line = match ep.targets().await {
            Ok(t) => format!("{}/{} targets up", t.iter().filter(|s| s.health == "up").count(), t.len()),
            Err(e) => format!("targets unknown: {e}"),
        };
        state
            .instances
            .iter()
            .filter(|i| i.service == ServiceKind::Prometheus.as_str())
            .map(|i| (i.name.clone(), line.clone()))
            .collect()
    }
    fn env(&self, state: &RunState) -> Vec<(String, String)> {
        env(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_exporter_of_the_builtin_stack_is_a_target_with_its_instances_labels() {
        let stack = crate::harness::builtin_stack();
        let t = targets(&stack, ImageSet::Offline, true);
        let of = |job: &str| t.iter().filter(|x| x.job == job).count();
        assert_eq!(
            (of("kafka"), of("postgres"), of("influxdb"), of("alb"), of("nlb"), of("prometheus")),
            (6, 3, 1, 3, 3, 1)
        );
        // The cluster: each API server, each kubelet, kube-state-metrics.
        assert_eq!((of("kubernetes-apiservers"), of("kubelet"), of("kube-state-metrics")), (1, 4, 1));
        assert!(targets(&stack, ImageSet::Offline, false).iter().all(|x| !x.job.starts_with("kube")));
        let c = t.iter().find(|x| x.instance == "kafka-controller-b").unwrap();
        assert_eq!((c.address.as_str(), c.az.as_str(), c.role.as_str()), ("10.0.2.21:9404", "b", "controller"));
        let pg: Vec<&str> = t.iter().filter(|x| x.job == "postgres").map(|x| x.address.as_str()).collect();
        assert_eq!(pg, ["127.0.0.1:9187", "127.0.0.1:9188", "127.0.0.1:9189"], "one exporter each, beside Prometheus");
        // The upstream images carry no exporter for Kafka or PostgreSQL.
        let up = targets(&stack, ImageSet::Upstream, true);
        assert!(up.iter().all(|x| !["kafka", "postgres", "kube-state-metrics"].contains(&x.job)), "{up:?}");
        let cfg = config(&stack, ImageSet::Offline, true);
        assert!(
            cfg.contains("- job_name: kubelet\n    scheme: https\n    authorization: {credentials_file: /etc/voyager/kube-token}"),
            "{cfg}"
        );
        assert!(cfg.contains("scrape_interval: 2s"), "{cfg}");
        assert!(
            cfg.contains(
                "- targets: ['10.0.1.20:9404']\n        labels: {instance: 'kafka-a', az: 'a', role: 'broker'}"
            ),
            "{cfg}"
        );
        assert_eq!(cfg.matches("job_name: kafka").count(), 1, "one job per exporter kind");
    }

    #[test]
    fn the_spec_gives_the_exporters_the_password_in_a_file_not_the_environment() {
        let s = crate::services::test_specs(ServiceKind::Prometheus, ImageSet::Offline);
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!(s.env["VOYAGER_PG_NODES"], "postgres-a=10.0.1.10 postgres-b=10.0.2.10 postgres-c=10.0.3.10");
        assert!(s.env.values().all(|v| !v.contains(&s.files[2].2)), "the password is only in its file");
        assert!(s.cmd.contains(&"--storage.tsdb.retention.time=2h".to_string()));
        let up = &crate::services::test_specs(ServiceKind::Prometheus, ImageSet::Upstream)[0];
        assert!(up.env.is_empty() && up.files.len() == 1, "upstream: Prometheus alone");
    }

    #[test]
    fn answers_are_read_with_their_labels_and_string_values() {
        let m = json!({"resultType": "matrix", "result": [
            {"metric": {"instance": "kafka-a"}, "values": [[1700000000.5, "0"], [1700000002.5, "3"], [1700000004.5, "NaN"]]}
        ]});
        let s = parse_matrix(&m);
        assert_eq!(s[0].labels["instance"], "kafka-a");
        assert_eq!(s[0].points[..2], [(1700000000.5, 0.0), (1700000002.5, 3.0)]);
        assert!(s[0].points[2].1.is_nan());
        let v = json!({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "2"]}]});
        assert_eq!(parse_vector(&v), [(BTreeMap::new(), 2.0)]);
        let t = json!({"activeTargets": [
            {"labels": {"job": "kafka", "instance": "kafka-b"}, "health": "down", "lastError": "connection refused"}
        ]});
        assert_eq!(parse_targets(&t)[0].health, "down");
        assert_eq!(parse_targets(&t)[0].last_error, "connection refused");
    }
}
