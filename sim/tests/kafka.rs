//! Apache Kafka as production has it, against real brokers: every topic takes
//! acks=all writes and gives them back, and the durability settings
//! (RF 3, min.insync.replicas 2, no unclean election) hold when brokers die.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use voyager_sim::fixtures::builtin_kafka;
use voyager_sim::services::kafka::{metadata, under_replicated};
use voyager_sim::ServiceKind;

mod common;

fn producer(bootstrap: &str, retries: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("retries", retries)
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap()
}

async fn send(p: &FutureProducer, topic: &str, partition: i32, payload: &str) -> Result<(), KafkaError> {
    let rec = FutureRecord::<str, str>::to(topic).partition(partition).key(payload).payload(payload);
    p.send(rec, Duration::from_secs(35)).await.map(|_| ()).map_err(|(e, _)| e)
}

/// Read every partition of a topic from the beginning until `want` payloads
/// have been seen (or 30 s pass).
fn read_all(bootstrap: &str, topic: &str, partitions: u32, want: &BTreeSet<String>) -> BTreeSet<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("t-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut got = BTreeSet::new();
    let start = Instant::now();
    while !want.is_subset(&got) && start.elapsed() < Duration::from_secs(30) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(500)) {
            got.insert(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    got
}

/// Wait until the cluster's metadata satisfies `ok`, returning its last
/// complaint on timeout.
async fn wait_for(
    bootstrap: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&rdkafka::metadata::Metadata) -> Option<String>,
) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match metadata(bootstrap.to_string(), Duration::from_secs(5)).await {
            Ok(md) => match ok(&md) {
                None => return,
                Some(why) => last = why,
            },
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what} did not happen within {timeout:?}: {last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_keeps_acknowledged_writes_and_refuses_unsafe_ones() {
    let running = common::start("t-kafka", 211, &[ServiceKind::Kafka]).await;
    let kafka = running.kafka().unwrap();
    assert_eq!(kafka.brokers.len(), 3);
    assert!(kafka.brokers.iter().all(|b| b.host.ip().to_string() == "127.0.0.1"));
    let bootstrap = kafka.bootstrap_servers.clone();
    let fixture = builtin_kafka();

    // Every topic: acks=all writes to every partition come back in full.
    let p = producer(&bootstrap, "5");
    for t in &fixture.topics {
        let mut want = BTreeSet::new();
        for part in 0..t.partitions as i32 {
            let v = format!("{}-{part}", t.name);
            send(&p, &t.name, part, &v).await.unwrap_or_else(|e| panic!("acks=all write to {}[{part}]: {e}", t.name));
            want.insert(v);
        }
        let got = read_all(&bootstrap, &t.name, t.partitions, &want);
        assert!(want.is_subset(&got), "{}: missing {:?}", t.name, want.difference(&got).collect::<Vec<_>>());
    }
    let md = metadata(bootstrap.clone(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(under_replicated(&md, &fixture), None, "every partition starts with three in-sync replicas");

    // One broker down: acks=all still succeeds (two in-sync replicas remain).
    running.kill_instance("kafka-c").await.unwrap();
    for part in 0..6 {
        send(&p, "runs.status.v1", part, &format!("one-down-{part}"))
            .await
            .unwrap_or_else(|e| panic!("with one broker down, partition {part}: {e}"));
    }

    // Two down: once the controllers have moved every leader to broker 1 and
    // shrunk the ISRs, an acks=all write must be refused, not acknowledged.
    running.kill_instance("kafka-b").await.unwrap();
    let topic = "runs.status.v1";
    wait_for(&bootstrap, "ISR shrink to the last broker", Duration::from_secs(90), |md| {
        let t = md.topics().iter().find(|t| t.name() == topic)?;
        t.partitions()
            .iter()
            .find(|p| p.leader() != 1 || p.isr() != [1])
            .map(|p| format!("partition {} leader {} isr {:?}", p.id(), p.leader(), p.isr()))
    })
    .await;
    // retries=0: the broker's answer, not a client-side timeout, is what we
    // check. The metadata's ISR is the controller's; a leader can still hold
    // the wider ISR for a moment, take the write and time it out waiting for
    // the dead followers. That is a refusal too, but not the one under test,
    // so ask again until the broker says NotEnoughReplicas; an acknowledged
    // write fails the test at once.
    let no_retry = producer(&kafka.brokers[0].host.to_string(), "0");
    for part in 0..6 {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match send(&no_retry, topic, part, &format!("two-down-{part}")).await {
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas)) => break,
                Ok(()) => panic!("partition {part}: an acks=all write was acknowledged with one in-sync replica"),
                Err(e) if Instant::now() < deadline => eprintln!("partition {part}: {e}; asking again"),
                Err(e) => panic!("partition {part}: expected NotEnoughReplicas with one in-sync replica, got {e:?}"),
            }
        }
    }

    // Both back: every partition of every topic returns to three in-sync replicas.
    running.start_instance("kafka-b", Duration::from_secs(120)).await.unwrap();
    running.start_instance("kafka-c", Duration::from_secs(120)).await.unwrap();
    wait_for(&bootstrap, "ISR back to 3", Duration::from_secs(120), |md| under_replicated(md, &fixture)).await;
    send(&p, topic, 0, "all-back").await.unwrap();

    running.shutdown().await.unwrap();
}
