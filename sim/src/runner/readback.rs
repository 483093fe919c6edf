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
    notes: &mut Vec<String>,
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
            found = tokio::task::spawn_blocking(move || read_topic(&bootstrap, &prefix, Field::Payload))
                .await
                .map_err(|e| e.to_string())??;
        }
        Op::ApiRequest => found = read_api(stack, run, notes).await?,
    }
    Ok(found)
}

/// The runs created through the edge: one counts as there only when all
/// four tiers hold it (its row, its record, its point, its object), since
/// that is what the service's 201 promised. Its places are its Kafka
/// copies (the one store a resend would duplicate: the row's id is a
/// key, the point and object are overwritten). Runs some tiers hold and
/// others do not are named in `notes`.
async fn read_api(
    stack: &RunningStack,
    run: &str,
    notes: &mut Vec<String>,
) -> std::result::Result<BTreeMap<u64, Vec<String>>, String> {
    use crate::load::api::{run_id, ARTIFACTS_BUCKET};
    let prefix = run_id(run, 0).trim_end_matches('0').to_string();
    let n_of = |id: &str| id.strip_prefix(&prefix).and_then(|n| n.parse::<u64>().ok());
    // PostgreSQL, through the writer.
    let pg = stack.postgres().ok_or("no PostgreSQL")?;
    let rows = pg.query_strings(&format!("SELECT id FROM voyager_runs WHERE id LIKE '{prefix}%'")).await?;
    let in_pg: BTreeSet<u64> = rows.iter().filter_map(|r| r[0].as_deref().and_then(n_of)).collect();
    // Kafka: the record's key is the run's id.
    let bootstrap = stack.kafka().ok_or("no Kafka")?.bootstrap_servers;
    let key = prefix.clone();
    let in_kafka = tokio::task::spawn_blocking(move || read_topic(&bootstrap, &key, Field::Key))
        .await
        .map_err(|e| e.to_string())??;
    // InfluxDB: the telemetry point.
    let ep = stack.influxdb().ok_or("no InfluxDB")?;
    let q =
        format!("SELECT \"id\" FROM \"telemetry\".\"api_requests\" WHERE \"id\" =~ /^{}/", prefix.replace('.', "\\."));
    let mut in_influx: BTreeSet<u64> = BTreeSet::new();
    for doc in ep.query_chunked(&ep.database, &q).await? {
        let v: serde_json::Value = serde_json::from_str(&doc).map_err(|e| e.to_string())?;
        for series in v["results"][0]["series"].as_array().into_iter().flatten() {
            for row in series["values"].as_array().into_iter().flatten() {
                in_influx.extend(row[1].as_str().and_then(n_of));
            }
        }
    }
    // S3: the artifact's key (every version of it).
    let s3 = stack.s3().ok_or("no S3")?;
    let mut in_s3: BTreeSet<u64> = BTreeSet::new();
    let mut marker = String::new();
    loop {
        let url = format!(
            "{}/{ARTIFACTS_BUCKET}?list-type=2&prefix={}{}",
            s3.url(),
            crate::http::encode(&format!("runs/{prefix}")),
            if marker.is_empty() {
                String::new()
            } else {
                format!("&continuation-token={}", crate::http::encode(&marker))
            }
        );
        let r = crate::http::request("GET", &url, &[], "", Duration::from_secs(30)).await?;
        if r.status != 200 {
            return Err(format!("listing {ARTIFACTS_BUCKET}: HTTP {}", r.status));
        }
        for k in xml_values(&r.body, "Key") {
            in_s3.extend(k.strip_prefix("runs/").and_then(|k| k.strip_suffix(".json")).and_then(n_of));
        }
        match xml_values(&r.body, "NextContinuationToken").first() {
            Some(t) => marker = t.clone(),
            None => break,
        }
    }
    let mut found = BTreeMap::new();
    let mut partial: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    let all: BTreeSet<u64> = in_pg.iter().chain(in_kafka.keys()).chain(&in_influx).chain(&in_s3).copied().collect();
    for n in all {
        let held = [
            ("postgres", in_pg.contains(&n)),
            ("kafka", in_kafka.contains_key(&n)),
            ("influxdb", in_influx.contains(&n)),
            ("s3", in_s3.contains(&n)),
        ];
        if held.iter().all(|(_, h)| *h) {
            found.insert(n, in_kafka[&n].clone());
        } else {
            partial.insert(n, held.iter().filter(|(_, h)| !*h).map(|(t, _)| *t).collect());
        }
    }
    if !partial.is_empty() {
        let shown: Vec<String> =
            partial.iter().take(10).map(|(n, missing)| format!("{n} (not in {})", missing.join(", "))).collect();
        notes.push(format!(
            "api_request: {} run(s) held by some tiers only, so not counted as there: {}",
            partial.len(),
            shown.join("; ")
        ));
    }
    Ok(found)
}

/// The text of every `<tag>` element (S3's list answers are this flat).
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open).skip(1).filter_map(|s| s.split(&close).next()).map(str::to_string).collect()
}

/// Where a record names its write: the load's payload, or the API's key.
#[derive(Clone, Copy)]
enum Field {
    Payload,
    Key,
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
fn read_topic(bootstrap: &str, prefix: &str, field: Field) -> std::result::Result<BTreeMap<u64, Vec<String>>, String> {
    let mut last = String::new();
    for attempt in 1..=3 {
        match read_topic_once(bootstrap, prefix, field, attempt) {
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
    field: Field,
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
        let named = match field {
            Field::Payload => m.payload(),
            Field::Key => m.key(),
        };
        if let Some(id) = named
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
