//! RDS's numbers, measured on real PostgreSQL with the stack's control plane:
//! how long the writer endpoint refuses writes when the primary is killed
//! from outside (automatic failover), and what a point-in-time restore of a
//! database of a stated size costs (backup, restore, RPO).

use std::time::{Duration, Instant};

use voyager_sim::harness::{build_images, builtin_stack};
use voyager_sim::images::ImageSet;
use voyager_sim::{PostgresEndpoint, Progress, RunningStack, ServiceKind, Sim};

use super::summary;

const KINDS: [ServiceKind; 2] = [ServiceKind::Postgres, ServiceKind::S3];

async fn start(name: &str, cidr: &str, detection: Option<Duration>) -> RunningStack {
    build_images(ImageSet::Offline, &KINDS, &Progress::stderr()).await.expect("offline images");
    let mut stack = builtin_stack().relocated(cidr.parse().unwrap()).unwrap();
    if let (Some(d), Some(r)) = (detection, stack.rds.as_mut()) {
        r.failover_detection = d;
    }
    Sim::new(stack)
        .with_name(name)
        .with_only(&KINDS)
        .with_images(voyager_sim::ImageSource::Offline)
        .start()
        .await
        .expect("up")
}

async fn first_row(ep: &PostgresEndpoint, sql: &str) -> String {
    let rows = ep.query_strings(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.first().and_then(|r| r[0].clone()).unwrap_or_default()
}

/// `voyager-bench auto-failover [--runs N] [--detection S]`: kill the
/// primary's container from outside N times; each time, from the kill to
/// the first write through the writer endpoint that succeeds, and how long
/// until the old primary streams again as the synchronous standby.
pub async fn auto_failover(runs: usize, detection: Option<Duration>) {
    let mut r = start("bench-rds", "10.249.0.0/16", detection).await;
    let used = r.stack().unwrap().rds.map(|x| x.failover_detection).unwrap_or_default();
    println!("failover_detection {:.0}s (the stack's setting; production default 30s)", used.as_secs_f64());
    let writer = r.postgres().unwrap();
    writer.query_strings("CREATE TABLE IF NOT EXISTS bench (id bigserial PRIMARY KEY, at timestamptz)").await.unwrap();
    let (mut down, mut rejoin) = (vec![], vec![]);
    for i in 0..runs {
        r.refresh().unwrap();
        let primary = r.state().instances.iter().find(|x| x.role == "primary" && x.service == "postgres").unwrap();
        let name = primary.name.clone();
        let since_ms = voyager_sim::state::now_unix_ms();
        let t = Instant::now();
        r.kill_instance(&name).await.unwrap();
        loop {
            let w = tokio::time::timeout(
                Duration::from_secs(2),
                writer.query_strings("INSERT INTO bench (at) VALUES (now())"),
            );
            if let Ok(Ok(_)) = w.await {
                break;
            }
            if t.elapsed() > Duration::from_secs(300) {
                for e in voyager_sim::state::events_since(r.name(), 0) {
                    eprintln!("  control plane: {}", e.what);
                }
                panic!("no write within 300s of killing {name}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        down.push(t.elapsed());
        // Settled as the control plane sees it: it said the rebuild is done
        // (its own wait ends after ours could), and replication is whole.
        loop {
            r.refresh().unwrap();
            let rebuilt = voyager_sim::state::events_since(r.name(), since_ms)
                .iter()
                .any(|e| e.what.contains(&format!("{name} rebuilt as the synchronous standby")));
            if rebuilt && voyager_sim::services::postgres::replication_complete(r.state()).await.is_ok() {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(600), "{name} did not rejoin within 600s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        rejoin.push(t.elapsed());
        eprintln!(
            "run {}/{runs}: killed {name}; writer back after {:.2}s, standby in sync after {:.1}s",
            i + 1,
            down[i].as_secs_f64(),
            rejoin[i].as_secs_f64()
        );
    }
    summary("writer unavailable", down);
    summary("old primary in sync again", rejoin);
    r.shutdown().await.unwrap();
}

/// `voyager-bench restore [--rows N]`: fill a table with N rows of about
/// 200 bytes, back up, keep writing, restore to a time between two writes
/// and check the restore holds exactly the rows up to it.
pub async fn restore(rows: u64) {
    let p = Progress::stderr();
    let mut r = start("bench-pitr", "10.248.0.0/16", None).await;
    let writer = r.postgres().unwrap();
    writer.query_strings("CREATE TABLE bulk (id bigint PRIMARY KEY, body text)").await.unwrap();
    let t = Instant::now();
    // In batches: one huge statement would hold the synchronous standby's
    // WAL for minutes on two cores.
    let batch = 100_000;
    for start in (0..rows).step_by(batch as usize) {
        let end = (start + batch).min(rows);
        writer
            .query_strings(&format!(
                "INSERT INTO bulk SELECT g, repeat(md5(g::text), 6) FROM generate_series({}, {end}) g",
                start + 1
            ))
            .await
            .unwrap();
    }
    let size = first_row(&writer, "SELECT pg_database_size(current_database())").await.parse::<f64>().unwrap();
    println!("database: {rows} rows, {:.1} MB (filled in {:.1}s)", size / 1e6, t.elapsed().as_secs_f64());
    let (b, took) = r.backup_postgres(&p).await.unwrap();
    println!("backup {}: {:.1}s, {:.1} MB in the bucket", b.label, took.as_secs_f64(), b.repo_size as f64 / 1e6);
    writer
        .query_strings("CREATE TABLE ticks (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
        .await
        .unwrap();
    let mut target = 0.0;
    for id in 1..=40 {
        writer.query_strings(&format!("INSERT INTO ticks (id) VALUES ({id})")).await.unwrap();
        if id == 20 {
            target = first_row(&writer, "SELECT extract(epoch FROM clock_timestamp())").await.parse::<f64>().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let restored = r.restore_postgres(target, Some("bench-restore"), &p).await.unwrap();
    let ticks = first_row(&restored.endpoint, "SELECT count(*) FROM ticks").await;
    let bulk = first_row(&restored.endpoint, "SELECT count(*) FROM bulk").await;
    let last =
        first_row(&restored.endpoint, "SELECT extract(epoch FROM max(at)) FROM ticks").await.parse::<f64>().unwrap();
    println!(
        "restore to {}: {:.1}s to taking writes; {ticks} of the 20 ticks before the target, {bulk} of {rows} rows; RPO {:.3}s (target - last restored commit)",
        restored.target,
        restored.took.as_secs_f64(),
        target - last
    );
    assert_eq!(
        (ticks.as_str(), bulk),
        ("20", rows.to_string()),
        "the restore holds exactly what was committed up to the target"
    );
    r.shutdown().await.unwrap();
}
