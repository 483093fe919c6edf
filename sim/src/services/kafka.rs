//! Apache Kafka in KRaft mode: one broker per placement (production: one per
//! AZ), each also a voter of the controller quorum. Two listeners: INTERNAL on
//! the broker's VPC address for containers, EXTERNAL published on 127.0.0.1
//! for host clients. Ready when the cluster answers metadata with every
//! broker, then provisioned with the fixture's topics and ready for good only
//! when every partition has its full in-sync replica set.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use super::SpecContext;
use crate::fixtures::KafkaFixture;
use crate::images::image_for;
use crate::runtime::network::network_name;
use crate::spec::{ContainerSpec, Publish};
use crate::stack::ServiceKind;
use crate::state::{InstanceState, RunState};

pub const INTERNAL_PORT: u16 = 9092;
pub const CONTROLLER_PORT: u16 = 9093;
/// Inside the container; published on 127.0.0.1 at a reserved host port,
/// which the broker must advertise, so it is chosen before the start.
pub const EXTERNAL_PORT: u16 = 19092;
/// The JMX exporter agent's port in the offline image (Prometheus scrapes it).
pub const METRICS_PORT: u16 = 9404;

/// Where a Kafka cluster is reached from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaEndpoint {
    /// `127.0.0.1:p1,127.0.0.1:p2,...`: what `bootstrap.servers` takes.
    pub bootstrap_servers: String,
    pub brokers: Vec<Broker>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub node_id: i32,
    pub instance: String,
    pub az: String,
    pub host: SocketAddr,
    pub vpc: SocketAddr,
}

/// Node ids: brokers count from 1, dedicated controllers from 101, so an id
/// in a log line says which kind of node wrote it.
pub const FIRST_CONTROLLER_ID: i32 = 101;

pub fn specs(cx: &SpecContext) -> Vec<ContainerSpec> {
    let brokers = cx.stack.with_role(ServiceKind::Kafka, "broker");
    let controllers = cx.stack.with_role(ServiceKind::Kafka, "controller");
    let combined = controllers.is_empty();
    let voters: Vec<String> = if combined {
        brokers.iter().enumerate().map(|(i, b)| format!("{}@{}:{CONTROLLER_PORT}", i + 1, b.address)).collect()
    } else {
        controllers
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}@{}:{CONTROLLER_PORT}", FIRST_CONTROLLER_ID + i as i32, c.address))
            .collect()
    };
    let k = &cx.fixtures.kafka;
    let common = |node_id: i32, roles: &str| -> BTreeMap<String, String> {
        [
            ("CLUSTER_ID", cx.credentials.kafka_cluster_id.clone()),
            ("KAFKA_NODE_ID", node_id.to_string()),
            ("KAFKA_PROCESS_ROLES", roles.to_string()),
            ("KAFKA_CONTROLLER_QUORUM_VOTERS", voters.join(",")),
            ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER".into()),
            ("KAFKA_LOG_DIRS", "/var/lib/kafka/data".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    };
    let mut out = vec![];
    for (i, inst) in brokers.iter().enumerate() {
        let host_port = *cx.host_ports.get(&inst.name).expect("harness reserves a port per Kafka broker");
        let mut env = common(i as i32 + 1, if combined { "broker,controller" } else { "broker" });
        let mut listeners = format!("INTERNAL://0.0.0.0:{INTERNAL_PORT},EXTERNAL://0.0.0.0:{EXTERNAL_PORT}");
        if combined {
            listeners += &format!(",CONTROLLER://0.0.0.0:{CONTROLLER_PORT}");
        }
        env.extend(
            [
                ("KAFKA_INTER_BROKER_LISTENER_NAME", "INTERNAL".to_string()),
                ("KAFKA_LISTENERS", listeners),
                (
                    "KAFKA_ADVERTISED_LISTENERS",
                    format!("INTERNAL://{}:{INTERNAL_PORT},EXTERNAL://127.0.0.1:{host_port}", inst.address),
                ),
                (
                    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                    "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
                ),
                ("KAFKA_DEFAULT_REPLICATION_FACTOR", k.default_replication_factor.to_string()),
                ("KAFKA_MIN_INSYNC_REPLICAS", k.min_insync_replicas.to_string()),
                ("KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE", k.unclean_leader_election.to_string()),
                ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", k.default_replication_factor.to_string()),
                ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", k.default_replication_factor.to_string()),
                ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", k.min_insync_replicas.to_string()),
                ("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false".into()),
                ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0".into()),
                // Six JVMs share two cores and the other services' memory.
                ("KAFKA_HEAP_OPTS", "-Xmx512m -Xms256m".into()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        out.push(node(cx, inst, env, Publish { container: EXTERNAL_PORT, host: Some(host_port) }));
    }
    for (i, inst) in controllers.iter().enumerate() {
        let mut env = common(FIRST_CONTROLLER_ID + i as i32, "controller");
        env.extend(
            [
                ("KAFKA_LISTENERS", format!("CONTROLLER://0.0.0.0:{CONTROLLER_PORT}")),
                ("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT".to_string()),
                ("KAFKA_HEAP_OPTS", "-Xmx256m -Xms128m".into()),
                // A controller's work is small and steady: C1 alone compiles
                // it well enough, and the serial collector fits its heap.
                // Both leave the brokers more of two cores while six JVMs
                // start at once.
                (
                    "KAFKA_JVM_PERFORMANCE_OPTS",
                    "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true".into(),
                ),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        // Published only so the host can probe it; clients never use it.
        out.push(node(cx, inst, env, Publish::any(CONTROLLER_PORT)));
    }
    out
}

/// Brokers of a run with their node ids.
fn brokers(state: &RunState) -> impl Iterator<Item = (i32, &InstanceState)> {
    kafka_with_role(state, "broker").enumerate().map(|(n, i)| (n as i32 + 1, i))
}

fn controllers(state: &RunState) -> impl Iterator<Item = (i32, &InstanceState)> {
    kafka_with_role(state, "controller").enumerate().map(|(n, i)| (FIRST_CONTROLLER_ID + n as i32, i))
}

/// A Kafka node's container. The log lives in the container's own layer: it
/// survives a kill and restart (what faults do) and goes with the container.
fn node(
    cx: &SpecContext,
    inst: &crate::stack::Instance,
    env: BTreeMap<String, String>,
    published: Publish,
) -> ContainerSpec {
    let az = cx.stack.az(&inst.az).expect("validated");
    ContainerSpec {
        instance: inst.name.clone(),
        image: image_for(ServiceKind::Kafka, cx.images),
        env,
        cmd: vec![],
        network: network_name(cx.stack_name, &az.name, inst.tier),
        address: inst.address,
        published: vec![published],
        volumes: vec![],
        extra_networks: vec![],
        files: vec![],
        entrypoint: None,
        user: None,
        mounts: vec![],
        ..Default::default()
    }
}

fn kafka_with_role<'a>(state: &'a RunState, role: &'a str) -> impl Iterator<Item = &'a InstanceState> {
    state.instances.iter().filter(move |i| i.service == ServiceKind::Kafka.as_str() && i.role == role)
}

pub fn endpoint(state: &RunState) -> Option<KafkaEndpoint> {
    let brokers: Vec<Broker> = brokers(state)
        .filter_map(|(node_id, i)| {
            Some(Broker {
                node_id,
                instance: i.name.clone(),
                az: i.az.clone(),
                host: *i.published.get(&EXTERNAL_PORT)?,
                vpc: SocketAddr::new(i.address.into(), INTERNAL_PORT),
            })
        })
        .collect();
    if brokers.is_empty() {
        return None;
    }
    let bootstrap_servers = brokers.iter().map(|b| b.host.to_string()).collect::<Vec<_>>().join(",");
    Some(KafkaEndpoint { bootstrap_servers, brokers })
}

/// Metadata of the whole cluster as one broker (or the bootstrap list) sees it.
/// rdkafka's calls block, so they run off the async threads.
pub async fn metadata(bootstrap: String, timeout: Duration) -> Result<Metadata, String> {
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("socket.connection.setup.timeout.ms", "2000")
            .set("log_level", "0")
            .create()
            .map_err(|e| e.to_string())?;
        consumer.fetch_metadata(None, timeout).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A broker is ready when it answers metadata and counts itself among the
/// cluster's registered brokers (which needs a controller quorum); a
/// controller when it answers a Kafka ApiVersions request.
pub async fn probe(state: &RunState, inst: &InstanceState) -> Result<(), String> {
    if inst.role == "controller" {
        let addr = inst.published.get(&CONTROLLER_PORT).ok_or("no published port")?;
        return api_versions(*addr).await;
    }
    let (node_id, _) = brokers(state).find(|(_, i)| i.name == inst.name).ok_or("not a Kafka broker")?;
    let addr = inst.published.get(&EXTERNAL_PORT).ok_or("no published port")?;
    let md = metadata(addr.to_string(), Duration::from_secs(3)).await?;
    let ids: BTreeSet<i32> = md.brokers().iter().map(|b| b.id()).collect();
    if ids.contains(&node_id) {
        Ok(())
    } else {
        Err(format!("broker {node_id} not registered yet (cluster has {ids:?})"))
    }
}

/// One ApiVersions (key 18, v0) round trip: the smallest request every Kafka
/// listener, controller listeners included, must answer.
pub async fn api_versions(addr: SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let client = b"voyager-sim";
        let mut req = vec![];
        req.extend_from_slice(&18i16.to_be_bytes());
        req.extend_from_slice(&0i16.to_be_bytes());
        req.extend_from_slice(&7i32.to_be_bytes());
        req.extend_from_slice(&(client.len() as i16).to_be_bytes());
        req.extend_from_slice(client);
        s.write_all(&(req.len() as i32).to_be_bytes()).await?;
        s.write_all(&req).await?;
        let len = s.read_i32().await?;
        let correlation = s.read_i32().await?;
        let error = s.read_i16().await?;
        Ok::<_, std::io::Error>((len, correlation, error))
    };
    match tokio::time::timeout(Duration::from_secs(3), io).await {
        Err(_) => Err("ApiVersions timed out".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok((_, 7, 0))) => Ok(()),
        Ok(Ok((_, c, e))) => Err(format!("ApiVersions answered correlation {c} error {e}")),
    }
}

/// Create the fixture's topics (an existing topic is fine) and wait until
/// every partition has a leader and its full in-sync replica set.
pub async fn provision(state: &RunState, fixture: &KafkaFixture, timeout: Duration) -> Result<(), String> {
    let ep = endpoint(state).ok_or("no Kafka brokers")?;
    let bootstrap = ep.bootstrap_servers.clone();
    let topics = fixture.topics.clone();
    let isr = fixture.min_insync_replicas;
    let unclean = fixture.unclean_leader_election;
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("log_level", "0")
            .create()
            .map_err(|e| e.to_string())?;
        let retention: Vec<String> = topics.iter().map(|t| t.retention.as_millis().to_string()).collect();
        let isr = isr.to_string();
        let new: Vec<NewTopic> = topics
            .iter()
            .zip(&retention)
            .map(|(t, ms)| {
                NewTopic::new(&t.name, t.partitions as i32, TopicReplication::Fixed(t.replication_factor as i32))
                    .set("retention.ms", ms)
                    .set("min.insync.replicas", &isr)
                    .set("unclean.leader.election.enable", if unclean { "true" } else { "false" })
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let results = rt.block_on(admin.create_topics(&new, &opts)).map_err(|e| e.to_string())?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(format!("creating topic {name}: {code}")),
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())??;

    let start = Instant::now();
    loop {
        let problem = match metadata(ep.bootstrap_servers.clone(), Duration::from_secs(5)).await {
            Ok(md) => under_replicated(&md, fixture),
            Err(e) => Some(e),
        };
        match problem {
            None => return Ok(()),
            Some(p) if start.elapsed() > timeout => {
                return Err(format!("topics not fully replicated after {timeout:?}: {p}"))
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The first partition short of its leader or replicas, if any.
pub fn under_replicated(md: &Metadata, fixture: &KafkaFixture) -> Option<String> {
    for t in &fixture.topics {
        let Some(mt) = md.topics().iter().find(|m| m.name() == t.name) else {
            return Some(format!("topic {} missing", t.name));
        };
        if mt.partitions().len() != t.partitions as usize {
            return Some(format!("topic {} has {} of {} partitions", t.name, mt.partitions().len(), t.partitions));
        }
        for p in mt.partitions() {
            if p.leader() < 0 || p.isr().len() < t.replication_factor as usize {
                return Some(format!("{}[{}] leader {} isr {:?}", t.name, p.id(), p.leader(), p.isr()));
            }
        }
    }
    None
}

/// The first partition of any topic (internal ones too) without a leader or
/// short of its full ISR: a cluster that has caught up after a fault has
/// none, whatever topics its fixture declares.
pub fn short_of_isr(md: &Metadata) -> Option<String> {
    md.topics().iter().flat_map(|t| t.partitions().iter().map(move |p| (t.name(), p))).find_map(|(t, p)| {
        (p.leader() < 0 || p.isr().len() < p.replicas().len())
            .then(|| format!("{t}[{}] leader {} isr {:?} of replicas {:?}", p.id(), p.leader(), p.isr(), p.replicas()))
    })
}

/// `leader of N partitions` per broker, for `status`.
pub async fn roles(state: &RunState) -> BTreeMap<String, String> {
    let Some(ep) = endpoint(state) else { return BTreeMap::new() };
    let Ok(md) = metadata(ep.bootstrap_servers.clone(), Duration::from_secs(3)).await else { return BTreeMap::new() };
    let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
    for t in md.topics().iter().filter(|t| !t.name().starts_with("__")) {
        for p in t.partitions() {
            *leaders.entry(p.leader()).or_default() += 1;
        }
    }
    let mut out: BTreeMap<String, String> = ep
        .brokers
        .iter()
        .map(|b| {
            (
                b.instance.clone(),
                format!("broker {}, leads {}", b.node_id, leaders.get(&b.node_id).copied().unwrap_or(0)),
            )
        })
        .collect();
    out.extend(controllers(state).map(|(id, c)| (c.name.clone(), format!("controller {id}"))));
    out
}

pub fn env(state: &RunState) -> Vec<(String, String)> {
    endpoint(state).map(|ep| vec![("KAFKA_BOOTSTRAP_SERVERS".into(), ep.bootstrap_servers)]).unwrap_or_default()
}

/// The service's contract with the harness (see [`super::Service`]).
pub struct Kafka;

#[async_trait::async_trait]
impl super::Service for Kafka {
    fn specs(&self, cx: &SpecContext) -> Vec<ContainerSpec> {
        specs(cx)
    }
    fn needs_host_port(&self) -> bool {
        // Each broker advertises its host port.
        true
    }
    async fn probe(&self, cx: &super::ProbeContext<'_>, inst: &InstanceState) -> Result<(), String> {
        probe(cx.state, inst).await
    }
    async fn provision(&self, cx: &super::ProvisionContext<'_>) -> Result<(), String> {
        provision(cx.state, &cx.fixtures.kafka, cx.timeout).await
    }
    async fn roles(&self, state: &RunState) -> BTreeMap<String, String> {
        roles(state).await
    }
    fn env(&self, state: &RunState) -> Vec<(String, String)> {
        env(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::images::ImageSet;
    use crate::state::Credentials;

    fn specs_for(set: ImageSet) -> Vec<ContainerSpec> {
        let stack = crate::harness::builtin_stack();
        let creds = Credentials::generate();
        let ports: BTreeMap<String, u16> =
            [("kafka-a", 40001), ("kafka-b", 40002), ("kafka-c", 40003)].map(|(n, p)| (n.to_string(), p)).into();
        let fx = fixtures::builtin();
        let cx = SpecContext {
            stack: &stack,
            stack_name: "voyager",
            images: set,
            credentials: &creds,
            host_ports: &ports,
            fixtures: &fx,
            companions: &BTreeMap::new(),
        };
        let mut v = specs(&cx);
        for s in &mut v {
            s.env.remove("CLUSTER_ID");
        }
        v
    }

    #[test]
    fn three_brokers_and_three_controllers_one_of_each_per_az() {
        let v = specs_for(ImageSet::Offline);
        let got: Vec<_> = v
            .iter()
            .map(|s| {
                let e = |k: &str| s.env[k].clone();
                (
                    s.instance.clone(),
                    s.network.clone(),
                    s.address.to_string(),
                    e("KAFKA_NODE_ID"),
                    e("KAFKA_PROCESS_ROLES"),
                )
            })
            .collect();
        let want = [
            ("kafka-a", "vs-voyager-a-private", "10.0.1.20", "1", "broker"),
            ("kafka-b", "vs-voyager-b-private", "10.0.2.20", "2", "broker"),
            ("kafka-c", "vs-voyager-c-private", "10.0.3.20", "3", "broker"),
            ("kafka-controller-a", "vs-voyager-a-private", "10.0.1.21", "101", "controller"),
            ("kafka-controller-b", "vs-voyager-b-private", "10.0.2.21", "102", "controller"),
            ("kafka-controller-c", "vs-voyager-c-private", "10.0.3.21", "103", "controller"),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(a, b, c, d, e)| (a.to_string(), b.to_string(), c.to_string(), d.to_string(), e.to_string()))
            .collect();
        assert_eq!(got, want);
        for s in &v {
            assert_eq!(
                s.env["KAFKA_CONTROLLER_QUORUM_VOTERS"],
                "101@10.0.1.21:9093,102@10.0.2.21:9093,103@10.0.3.21:9093"
            );
        }
    }

    #[test]
    fn without_controllers_every_broker_is_a_voter() {
        let mut stack = crate::harness::builtin_stack();
        stack.services.iter_mut().for_each(|s| s.instances.retain(|i| i.role != "controller"));
        let creds = Credentials::generate();
        let ports: BTreeMap<String, u16> =
            [("kafka-a", 1), ("kafka-b", 2), ("kafka-c", 3)].map(|(n, p)| (n.to_string(), p)).into();
        let fx = fixtures::builtin();
        let cx = SpecContext {
            stack: &stack,
            stack_name: "v",
            images: ImageSet::Offline,
            credentials: &creds,
            host_ports: &ports,
            fixtures: &fx,
            companions: &BTreeMap::new(),
        };
        let v = specs(&cx);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].env["KAFKA_PROCESS_ROLES"], "broker,controller");
        assert_eq!(v[0].env["KAFKA_CONTROLLER_QUORUM_VOTERS"], "1@10.0.1.20:9093,2@10.0.2.20:9093,3@10.0.3.20:9093");
        assert!(v[0].env["KAFKA_LISTENERS"].ends_with(",CONTROLLER://0.0.0.0:9093"));
    }

    #[test]
    fn durability_settings_are_the_seeds() {
        let s = &specs_for(ImageSet::Offline)[1];
        assert_eq!(s.env["KAFKA_DEFAULT_REPLICATION_FACTOR"], "3");
        assert_eq!(s.env["KAFKA_MIN_INSYNC_REPLICAS"], "2");
        assert_eq!(s.env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"], "false");
        assert_eq!(s.env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"], "false");
    }

    #[test]
    fn the_external_listener_advertises_the_reserved_loopback_port() {
        let s = &specs_for(ImageSet::Offline)[2];
        assert_eq!(s.env["KAFKA_ADVERTISED_LISTENERS"], "INTERNAL://10.0.3.20:9092,EXTERNAL://127.0.0.1:40003");
        assert_eq!(s.published, vec![Publish { container: EXTERNAL_PORT, host: Some(40003) }]);
    }

    #[test]
    fn both_image_sets_give_the_same_brokers_but_the_image() {
        let (off, up) = (specs_for(ImageSet::Offline), specs_for(ImageSet::Upstream));
        assert_eq!(up[0].image, crate::images::UPSTREAM_KAFKA);
        assert!(off[0].image.starts_with("voyager-sim/kafka:"));
        let strip = |v: Vec<ContainerSpec>| {
            v.into_iter().map(|s| ContainerSpec { image: String::new(), ..s }).collect::<Vec<_>>()
        };
        assert_eq!(strip(off), strip(up));
    }
}
