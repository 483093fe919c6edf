//! Our load generator beside the field's own tools, on one stack and one
//! path (the published 127.0.0.1 ports every host client uses): pgbench
//! with a custom script doing the load's insert through the writer
//! endpoint, and Kafka's `ProducerPerformance` (what
//! `kafka-producer-perf-test.sh` runs) with acks=all into the topic the
//! load writes. The tools run from the services' own images on the host's
//! network, so no copy of either is needed on the host.
//!
//! The peers are closed-loop and unthrottled: their rate is their ceiling.
//! Ours is the open model's highest sustained rate (latency from each
//! intended send time), found as `load-max` finds it; the ratio says how
//! much of the peer's ceiling the generator reaches while still measuring
//! honestly.

use std::path::{Path, PathBuf};

use voyager_sim::ledger::Op;
use voyager_sim::load::{KAFKA_TOPIC, PG_TABLE};
use voyager_sim::{Progress, RunningStack, ServiceKind};

/// A peer's best run: rate and latency percentiles in ms.
#[derive(Debug, Clone, Copy)]
struct Peak {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `only`: one side (`kafka` or `postgres`) rather than both; `steps`:
/// print each rate ours was offered and what it sustained.
pub async fn peers(seconds: u64, only: Option<ServiceKind>, steps: bool) {
    let kinds: Vec<ServiceKind> = match only {
        Some(k) => vec![k],
        None => vec![ServiceKind::Kafka, ServiceKind::Postgres],
    };
    let mut running =
        crate::start_offline(crate::builtin_in("10.247.0.0/16"), "bench-peers", &kinds, Progress::stderr()).await;
    let out = scratch_dir();

    let mut rows = vec![];
    if kinds.contains(&ServiceKind::Postgres) {
        // Ours first: its warm-up creates the table pgbench's script inserts into.
        eprintln!("==> ours: postgres_insert (open model, doubling then bisecting)");
        let ours = crate::highest_sustained(&mut running, Op::PostgresInsert, steps).await;
        eprintln!("==> pgbench through the writer endpoint");
        rows.push(("postgres insert", "pgbench", pgbench(&running, &out, seconds).await, ours));
    }
    if kinds.contains(&ServiceKind::Kafka) {
        eprintln!("==> ours: kafka_produce");
        let ours = crate::highest_sustained(&mut running, Op::KafkaProduce, steps).await;
        eprintln!("==> Kafka's producer perf tool, acks=all");
        rows.push(("kafka produce", "kafka-producer-perf-test", producer_perf(&running, &out, seconds).await, ours));
    }

    println!();
    println!(
        "{:<16} {:<24} {:>12} {:>9} {:>9}   {:>12} {:>9} {:>9}   {:>6}",
        "operation", "peer", "peer rate", "p50", "p99", "ours", "p50", "p99", "ratio"
    );
    for (op, peer, theirs, ours) in rows {
        let ms = |x: f64| format!("{x:.1}ms");
        let (ours_rate, ours_p50, ours_p99) = match &ours {
            Some((r, ph)) => (format!("{r:.0}/s"), ms(ph.p50_ms), ms(ph.p99_ms)),
            None => ("<100/s".into(), "-".into(), "-".into()),
        };
        let ratio = ours.as_ref().map(|(r, _)| format!("{:.2}", r / theirs.rate)).unwrap_or_else(|| "-".into());
        println!(
            "{op:<16} {peer:<24} {:>12} {:>9} {:>9}   {ours_rate:>12} {ours_p50:>9} {ours_p99:>9}   {ratio:>6}",
            format!("{:.0}/s", theirs.rate),
            ms(theirs.p50_ms),
            ms(theirs.p99_ms),
        );
    }
    println!(
        "\npeers: closed loop, unthrottled, {seconds} s at their best concurrency; ours: the highest open-model \
         rate with 95% acknowledged and p90 <= 1 s over 10 s, latency from the intended send time"
    );
    let _ = std::fs::remove_dir_all(&out);
    running.shutdown().await.expect("down");
}

fn scratch_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("voyager-bench-peers-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch directory");
    d
}

/// pgbench at a few client counts (ours keeps a pool of
/// `voyager_sim::load::PG_POOL`), keeping the best. Each transaction is
/// the load's own statement: one autocommitted insert of a new key, which
/// the synchronous standby must hold before the commit returns.
async fn pgbench(running: &RunningStack, out: &Path, seconds: u64) -> Peak {
    let url = running.postgres().expect("PostgreSQL is up").url();
    // 2^62 keys: a repeat among a few hundred thousand draws is unlikely
    // enough not to cost a failed transaction in practice.
    std::fs::write(
        out.join("insert.sql"),
        format!("\\set id random(1, 4611686018427387904)\nINSERT INTO {PG_TABLE} (run, id) VALUES ('pgbench', :id);\n"),
    )
    .expect("pgbench script");
    let mut best: Option<Peak> = None;
    for clients in [8, voyager_sim::load::PG_POOL] {
        let prefix = format!("pg-c{clients}");
        let script = format!(
            "PATH=/usr/lib/postgresql/15/bin:$PATH exec pgbench -n -f /out/insert.sql -c {clients} -j 2 -T {seconds} \
             --log --log-prefix=/out/{prefix} \"$0\""
        );
        let (code, text) =
            running.run_beside_host(ServiceKind::Postgres, &["sh", "-c", &script, &url], out).await.expect("pgbench");
        assert_eq!(code, 0, "pgbench failed:\n{text}");
        let tps = text
            .lines()
            .find_map(|l| l.strip_prefix("tps = ").and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok()))
            .unwrap_or_else(|| panic!("no tps in pgbench's output:\n{text}"));
        let mut lat = pgbench_latencies(out, &prefix);
        let peak = Peak { rate: tps, p50_ms: percentile(&mut lat, 0.50), p99_ms: percentile(&mut lat, 0.99) };
        println!(
            "pgbench {clients:>2} clients: {:.0} tps, p50 {:.1} ms, p99 {:.1} ms",
            peak.rate, peak.p50_ms, peak.p99_ms
        );
        if best.is_none_or(|b| peak.rate > b.rate) {
            best = Some(peak);
        }
    }
    best.expect("at least one pgbench run")
}

/// Each transaction's latency in ms from pgbench's per-transaction logs
/// (`client transaction latency_us script epoch us`), every thread's file.
fn pgbench_latencies(out: &Path, prefix: &str) -> Vec<f64> {
    let mut lat = vec![];
    for e in std::fs::read_dir(out).expect("scratch directory").flatten() {
        if !e.file_name().to_string_lossy().starts_with(&format!("{prefix}.")) {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).expect("pgbench log");
        lat.extend(text.lines().filter_map(|l| l.split_whitespace().nth(2)?.parse::<f64>().ok()).map(|us| us / 1e3));
    }
    assert!(!lat.is_empty(), "pgbench wrote no transaction log under {}", out.display());
    lat
}

fn percentile(xs: &mut [f64], q: f64) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[((xs.len() as f64 * q) as usize).min(xs.len() - 1)]
}

/// Kafka's producer perf tool with our producer's settings (acks=all,
/// idempotent, linger 5 ms, both clients' default) and records the size of ours (a run tag and an
/// id, about 40 bytes). A short first run sizes the measured one to last
/// about `seconds`. It sends without keys; round-robin partitioning spreads
/// its records over every partition as ours (keyed by id) are, rather than
/// the sticky default's one batch at a time, which no keyed producer gets.
async fn producer_perf(running: &RunningStack, out: &Path, seconds: u64) -> Peak {
    let bootstrap = running.kafka().expect("Kafka is up").bootstrap_servers;
    let perf = async |records: u64| {
        let script = format!(
            "exec java -Xmx512m -cp '/opt/kafka/libs/*' org.apache.kafka.tools.ProducerPerformance \
             --topic {KAFKA_TOPIC} --num-records {records} --record-size 40 --throughput -1 \
             --producer-props bootstrap.servers={bootstrap} acks=all enable.idempotence=true linger.ms=5 \
             partitioner.class=org.apache.kafka.clients.producer.RoundRobinPartitioner"
        );
        let (code, text) =
            running.run_beside_host(ServiceKind::Kafka, &["sh", "-c", &script], out).await.expect("perf");
        assert_eq!(code, 0, "kafka producer perf tool failed:\n{text}");
        parse_producer_perf(&text).unwrap_or_else(|| panic!("no summary in the perf tool's output:\n{text}"))
    };
    let probe = perf(20_000).await;
    let peak = perf(((probe.rate * seconds as f64) as u64).max(20_000)).await;
    println!("producer perf: {:.0} records/s, p50 {:.1} ms, p99 {:.1} ms", peak.rate, peak.p50_ms, peak.p99_ms);
    peak
}

/// The summary line: `N records sent, R records/sec (M MB/sec), A ms avg
/// latency, X ms max latency, P50 ms 50th, P95 ms 95th, P99 ms 99th, ...`.
fn parse_producer_perf(text: &str) -> Option<Peak> {
    let line = text.lines().rev().find(|l| l.contains("records sent") && l.contains("99th"))?;
    let before = |suffix: &str| -> Option<f64> {
        line.split(',')
            .find(|part| part.trim_end_matches('.').trim().ends_with(suffix))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let rate = line.split(',').nth(1)?.split_whitespace().next()?.parse().ok()?;
    Some(Peak { rate, p50_ms: before("50th")?, p99_ms: before("99th")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_perf_tools_summary_line_parses() {
        let text = "log4j noise\n\
            9000 records sent, 1799.6 records/sec (0.07 MB/sec), 55.1 ms avg latency, 301.0 ms max latency.\n\
            20000 records sent, 3921.5 records/sec (0.15 MB/sec), 12.34 ms avg latency, 345.00 ms max latency, \
            10 ms 50th, 40 ms 95th, 80 ms 99th, 200 ms 99.9th.\n";
        let p = parse_producer_perf(text).unwrap();
        assert_eq!((p.rate, p.p50_ms, p.p99_ms), (3921.5, 10.0, 80.0));
    }

    #[test]
    fn pgbench_logs_give_latency_in_ms() {
        let d = std::env::temp_dir().join(format!("peers-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("pg-c8.77"), "0 0 1500 0 1700000000 1\n1 0 2500 0 1700000000 2\n").unwrap();
        std::fs::write(d.join("pg-c8.77.1"), "2 0 500 0 1700000000 3\n").unwrap();
        std::fs::write(d.join("pg-c32.77"), "0 0 999999 0 1700000000 1\n").unwrap();
        let mut lat = pgbench_latencies(&d, "pg-c8");
        lat.sort_by(|a, b| a.total_cmp(b));
        assert_eq!(lat, vec![0.5, 1.5, 2.5]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
