//! PostgreSQL as RDS Multi-AZ, against real servers: the writer endpoint
//! reaches the primary and the reader the replica; commits wait for the
//! synchronous standby until the control plane detaches a lost one; after
//! `failover` the same writer endpoint takes writes on the new primary and
//! every row committed before is there.

use std::time::Duration;

use voyager_sim::{Progress, ServiceKind};

mod common;

async fn one(ep: &voyager_sim::PostgresEndpoint, sql: &str) -> String {
    let rows = ep.query_strings(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows[0][0].clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_multi_az_commits_synchronously_and_fails_over_without_losing_rows() {
    let mut running = common::start("t-pg", 213, &[ServiceKind::Postgres]).await;
    let writer = running.postgres().unwrap();
    let reader = running.postgres_reader().unwrap();
    let env = running.env();
    let url = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(url("DATABASE_URL"), writer.url());
    assert_eq!(url("DATABASE_READER_URL"), reader.url());

    // The writer reaches the primary in AZ a, the reader the replica in AZ c.
    assert_eq!(
        one(&writer, "SELECT host(inet_server_addr()) || ' ' || pg_is_in_recovery()").await,
        "10.213.1.10 false"
    );
    assert_eq!(one(&reader, "SELECT host(inet_server_addr()) || ' ' || pg_is_in_recovery()").await, "10.213.3.10 true");

    // A row committed on the primary is on the synchronous standby.
    let standby = running.postgres_instance("postgres-b").unwrap();
    writer.query_strings("CREATE TABLE runs (id int PRIMARY KEY, status text)").await.unwrap();
    writer.query_strings("SET synchronous_commit = remote_apply; INSERT INTO runs VALUES (1, 'queued')").await.unwrap();
    assert_eq!(one(&standby, "SELECT status FROM runs WHERE id = 1").await, "queued");

    // Without the standby, a commit waits (it is not acknowledged) until
    // the control plane sees the standby lost and detaches it, as RDS keeps
    // the primary writable while it replaces a standby; once the standby
    // streams again, commits wait for it again.
    let since = voyager_sim::state::now_unix_ms();
    running.kill_instance("postgres-b").await.unwrap();
    let pending = {
        let w = writer.clone();
        tokio::spawn(async move { w.query_strings("INSERT INTO runs VALUES (2, 'waits for the standby')").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pending.is_finished(), "a commit was acknowledged with the synchronous standby just lost");
    tokio::time::timeout(Duration::from_secs(60), pending)
        .await
        .expect("the commit completes once the control plane detaches the lost standby")
        .unwrap()
        .unwrap();
    let said =
        |what: &'static str| voyager_sim::state::events_since("t-pg", since).iter().any(|e| e.what.contains(what));
    // The control plane records what it did once the effect succeeded,
    // which is after the commit it released went through.
    for _ in 0..40 {
        if said("the primary stops waiting for it") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(said("the primary stops waiting for it"), "{:?}", voyager_sim::state::events_since("t-pg", since));
    running.start_instance("postgres-b", Duration::from_secs(60)).await.unwrap();
    for _ in 0..120 {
        if said("commits wait for it again") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(said("commits wait for it again"), "the standby is attached again once it streams");
    assert_eq!(one(&standby, "SELECT status FROM runs WHERE id = 2").await, "waits for the standby");

    // Rows committed before the failover are all there after it, through the
    // same writer endpoint, now on the promoted standby in AZ b.
    writer.query_strings("INSERT INTO runs SELECT g, 'batch' FROM generate_series(3, 500) g").await.unwrap();
    let f = running.failover_postgres(&Progress::stderr()).await.unwrap();
    assert_eq!((f.old_primary.as_str(), f.new_primary.as_str()), ("postgres-a", "postgres-b"));
    assert!(f.writer_unavailable > Duration::ZERO && f.writer_unavailable < Duration::from_secs(60), "{f:?}");
    assert_eq!(running.postgres().unwrap().host, writer.host, "the writer endpoint's address does not change");
    assert_eq!(
        one(&writer, "SELECT host(inet_server_addr()) || ' ' || pg_is_in_recovery()").await,
        "10.213.2.10 false"
    );
    assert_eq!(one(&writer, "SELECT count(*) FROM runs").await, "500");
    writer.query_strings("INSERT INTO runs VALUES (501, 'after failover')").await.unwrap();

    // The old primary is the new synchronous standby; the replica follows.
    let old = running.postgres_instance("postgres-a").unwrap();
    assert_eq!(one(&old, "SELECT pg_is_in_recovery()").await, "t");
    writer
        .query_strings("SET synchronous_commit = remote_apply; INSERT INTO runs VALUES (502, 'sync again')")
        .await
        .unwrap();
    assert_eq!(one(&old, "SELECT status FROM runs WHERE id = 502").await, "sync again");
    let mut seen = String::new();
    for _ in 0..100 {
        seen = one(&reader, "SELECT count(*) FROM runs").await;
        if seen == "502" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, "502", "the replica follows the new primary");

    running.shutdown().await.unwrap();
}
