//! Reading every write of a run back from the services, to judge what was
//! acknowledged against what is there. **The Kafka read-back must see every
//! record**: it starts at each partition's log start, never resets to the
//! end, and rejects (then retries) a read that returns fewer records than
//! the offsets say.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::harness::RunningStack;
use crate::ledger::Op;
use crate::load::{INFLUX_MEASUREMENT, KAFKA_TOPIC, PG_TABLE};

/// Everything of this run that the service holds: by id, the place of each
/// copy (what tells a resend from a record read twice).
pub(super) async fn read_back(
    stack: &RunningStack,
    op: Op,
    run: &str,
) -> std::result::Result<BTreeMap<u64, Vec<String>>, String> {
    let mut found: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    match op {
        Op::PostgresInsert => found = read_postgres(&stack.postgres().ok_or("no PostgreSQL")?, run).await?,
        Op::InfluxWrite => {
            let ep = stack.influxdb().ok_or("no InfluxDB")?;
            let q = format!("SELECT \"id\" FROM \"{INFLUX_MEASUREMENT}\" WHERE \"run\" = '{run}'");
            // Chunked: one JSON document per line, whatever the row limit.
            for doc in ep.query_chunked(&ep.database, &q).await? {
                let v: serde_json::Value = serde_json::from_str(&doc).map_err(|e| e.to_string())?;
                for series in v["results"][0]["series"].as_array().into_iter().flatten() {
                    for row in series["values"].as_array().into_iter().flatten() {
                        if let Some(id) = row[1].as_u64() {
                            // A point is its series and timestamp.
                            let place = format!("t={}", row[0]);
                            found.entry(id).or_default().push(place);
                        }
                    }
                }
            }
        }
        Op::KafkaProduce => {
            let bootstrap = stack.kafka().ok_or("no Kafka")?.bootstrap_servers;
            let prefix = format!("{run}:");
            found = tokio::task::spawn_blocking(move || read_topic(&bootstrap, &prefix))
                .await
                .map_err(|e| e.to_string())??;
        }
    }
    Ok(found)
}

/// The run's rows in one PostgreSQL database (the writer, or a restore).
pub(super) async fn read_postgres(
    ep: &crate::services::postgres::PostgresEndpoint,
    run: &str,
) -> std::result::Result<BTreeMap<u64, Vec<String>>, String> {
    let mut found: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    // xmin: the transaction that inserted the row, so two copies say
    // whether one insert or two made them.
    let q = format!("SELECT id, xmin::text, ctid::text FROM {PG_TABLE} WHERE run = '{run}'");
    for row in ep.query_strings(&q).await? {
        if let Some(id) = row[0].as_deref().and_then(|s| s.parse().ok()) {
            let place = format!("tx {} row {}", row[1].as_deref().unwrap_or("?"), row[2].as_deref().unwrap_or("?"));
            found.entry(id).or_default().push(place);
        }
    }
    Ok(found)
}

/// Every partition of the load's topic from the beginning to its high
/// watermark as of now.
fn read_topic(bootstrap: &str, prefix: &str) -> std::result::Result<BTreeMap<u64, Vec<String>>, String> {
    let mut last = String::new();
    for attempt in 1..=3 {
        match read_topic_once(bootstrap, prefix, attempt) {
            Ok(found) => return Ok(found),
            Err(e) => last = e,
        }
    }
    Err(format!("reading {KAFKA_TOPIC} back failed three times: {last}"))
}

/// One complete read, or an error if any partition gave fewer records than
/// its offsets say it holds: a reader that skips (a consumer reset past
/// records it could not fetch for a moment) would otherwise report writes
/// as lost that are not.
fn read_topic_once(
    bootstrap: &str,
    prefix: &str,
    attempt: u32,
) -> std::result::Result<BTreeMap<u64, Vec<String>>, String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("voyager-sim-check-{prefix}{attempt}"))
        .set("enable.auto.commit", "false")
        // Never jump to the end: a checker must see every record.
        .set("auto.offset.reset", "earliest")
        .set("log_level", "0")
        .create()
        .map_err(|e| e.to_string())?;
    let md = c.fetch_metadata(Some(KAFKA_TOPIC), Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let parts = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0) as i32;
    let mut tpl = TopicPartitionList::new();
    // Per partition: (log start, high watermark) as of now.
    let mut bounds: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for p in 0..parts {
        let (low, high) = c.fetch_watermarks(KAFKA_TOPIC, p, Duration::from_secs(10)).map_err(|e| e.to_string())?;
        if high > low {
            bounds.insert(p, (low, high));
            tpl.add_partition_offset(KAFKA_TOPIC, p, Offset::Offset(low)).map_err(|e| e.to_string())?;
        }
    }
    c.assign(&tpl).map_err(|e| e.to_string())?;
    let mut read: BTreeMap<i32, i64> = BTreeMap::new();
    let mut remaining: BTreeSet<i32> = bounds.keys().copied().collect();
    let mut found: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            return Err(format!("did not reach the end of partitions {remaining:?}"));
        }
        let Some(msg) = c.poll(Duration::from_millis(500)) else { continue };
        let m = msg.map_err(|e| e.to_string())?;
        let Some((low, high)) = bounds.get(&m.partition()).copied() else { continue };
        if m.offset() < low || m.offset() >= high {
            continue;
        }
        *read.entry(m.partition()).or_default() += 1;
        if let Some(id) = m
            .payload()
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|s| s.strip_prefix(prefix))
            .and_then(|s| s.parse().ok())
        {
            found.entry(id).or_default().push(format!("{}@{}", m.partition(), m.offset()));
        }
        if m.offset() + 1 >= high {
            remaining.remove(&m.partition());
        }
    }
    for (p, (low, high)) in &bounds {
        let got = read.get(p).copied().unwrap_or(0);
        if got != high - low {
            return Err(format!("partition {p} holds offsets {low}..{high} but {got} records were read"));
        }
    }
    Ok(found)
}
