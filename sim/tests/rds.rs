//! RDS's always-on control plane against real PostgreSQL, with no scenario
//! running and no command given: a lost primary is failed over by itself,
//! whatever took it out, nothing committed is lost, and the old primary
//! never takes a write again.

mod common;

use std::time::{Duration, Instant};

use voyager_sim::fault::{Fault, OutageMode, Side};
use voyager_sim::{ImageSource, PostgresEndpoint, Progress, RunningStack, ServiceKind, Sim};

async fn one(ep: &PostgresEndpoint, sql: &str) -> String {
    let rows = ep.query_strings(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows[0][0].clone().unwrap_or_default()
}

/// Insert through the writer endpoint until one succeeds; returns how long.
async fn write_until_it_works(writer: &PostgresEndpoint, id: i32, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let sql = format!("INSERT INTO runs VALUES ({id}, 'after')");
        let attempt = tokio::time::timeout(Duration::from_secs(3), writer.query_strings(&sql));
        if let Ok(Ok(_)) = attempt.await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "no write through the writer endpoint within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn role_of(r: &mut RunningStack, name: &str) -> String {
    r.refresh().unwrap();
    r.state().instances.iter().find(|i| i.name == name).unwrap().role.clone()
}

/// The old primary, once rebuilt, streams as the standby, refuses writes,
/// and is the one the primary's commits wait for again. The control plane
/// names it synchronous only after it streams (the last step of a
/// rebuild), so a commit between the two is not yet held by it.
async fn rejoins_as_a_standby_that_refuses_writes(r: &mut RunningStack, old: &str, within: Duration) {
    let start = Instant::now();
    let sync = (voyager_sim::services::postgres::replication_name(old), "streaming".into(), "sync".into());
    loop {
        if role_of(r, old).await == "standby" {
            if let (Some(ep), Some(writer)) = (r.postgres_instance(old), r.postgres()) {
                if let Ok(rows) = ep.query_strings("SELECT status FROM pg_stat_wal_receiver").await {
                    let synchronous = voyager_sim::services::postgres::replication(&writer)
                        .await
                        .is_ok_and(|standbys| standbys.contains(&sync));
                    if rows.first().and_then(|r| r[0].as_deref()) == Some("streaming") && synchronous {
                        let err = ep.query_strings("INSERT INTO runs VALUES (-1, 'split brain')").await.unwrap_err();
                        assert!(err.contains("read-only"), "the old primary refuses writes: {err}");
                        return;
                    }
                }
            }
        }
        assert!(start.elapsed() < within, "{old} did not rejoin as the synchronous standby within {within:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn start(name: &str, octet: u8) -> RunningStack {
    let mut stack = common::stack(name, octet);
    stack.rds.as_mut().unwrap().failover_detection = Duration::from_secs(5);
    Sim::new(stack)
        .with_only(&[ServiceKind::Postgres])
        .with_images(ImageSource::Offline)
        .with_progress(Progress::stderr())
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_primary_fails_over_by_itself_and_comes_back_as_a_standby() {
    let mut r = start("t-rds-kill", 230).await;
    let writer = r.postgres().unwrap();
    writer.query_strings("CREATE TABLE runs (id int PRIMARY KEY, status text)").await.unwrap();
    writer.query_strings("INSERT INTO runs SELECT g, 'before' FROM generate_series(1, 300) g").await.unwrap();

    // Killed from outside the simulator: no fault recorded, no command.
    let docker = bollard::Docker::connect_with_local_defaults().unwrap();
    let primary = r.state().instances.iter().find(|i| i.name == "postgres-a").unwrap().container.clone();
    docker.kill_container(&primary, None::<bollard::query_parameters::KillContainerOptions>).await.unwrap();
    let took = write_until_it_works(&writer, 301, Duration::from_secs(90)).await;
    assert!(took >= Duration::from_secs(4), "not before the detection time: {took:?}");
    assert_eq!(
        one(&writer, "SELECT host(inet_server_addr())").await,
        "10.230.2.10",
        "the writer now reaches postgres-b"
    );
    assert_eq!(one(&writer, "SELECT count(*) FROM runs").await, "301", "every row committed before is there");
    assert_eq!(role_of(&mut r, "postgres-b").await, "primary");
    // Nobody starts a container killed from outside: RDS replaces it.
    rejoins_as_a_standby_that_refuses_writes(&mut r, "postgres-a", Duration::from_secs(240)).await;
    // Commits wait for it again.
    writer.query_strings("SET synchronous_commit = remote_apply; INSERT INTO runs VALUES (302, 'sync')").await.unwrap();
    assert_eq!(
        one(&r.postgres_instance("postgres-a").unwrap(), "SELECT status FROM runs WHERE id = 302").await,
        "sync"
    );
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_the_primarys_az_fails_over_and_heal_brings_the_old_primary_back_fenced() {
    let mut r = start("t-rds-az", 231).await;
    let writer = r.postgres().unwrap();
    writer.query_strings("CREATE TABLE runs (id int PRIMARY KEY, status text)").await.unwrap();
    writer.query_strings("INSERT INTO runs SELECT g, 'before' FROM generate_series(1, 200) g").await.unwrap();
    r.inject(Fault::AzOutage { az: "a".into(), mode: OutageMode::Kill }).await.unwrap();
    write_until_it_works(&writer, 201, Duration::from_secs(90)).await;
    assert_eq!(one(&writer, "SELECT count(*) FROM runs").await, "201");
    // The AZ comes back: its old primary starts fenced, in recovery, and
    // is rebuilt as the standby.
    r.heal(Duration::from_secs(180)).await.unwrap();
    let old = r.postgres_instance("postgres-a").unwrap();
    // (It may be mid-rebuild already and refuse the connection outright.)
    let attempt = old.query_strings("INSERT INTO runs VALUES (-2, 'split brain')").await;
    assert!(attempt.is_err(), "the returning old primary took a write");
    rejoins_as_a_standby_that_refuses_writes(&mut r, "postgres-a", Duration::from_secs(240)).await;
    assert_eq!(one(&writer, "SELECT count(*) FROM runs WHERE id > 0").await, "201");
    r.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_cut_off_from_the_other_azs_is_replaced_and_takes_no_write() {
    let mut r = start("t-rds-cut", 232).await;
    let writer = r.postgres().unwrap();
    writer.query_strings("CREATE TABLE runs (id int PRIMARY KEY, status text)").await.unwrap();
    writer.query_strings("INSERT INTO runs VALUES (1, 'before')").await.unwrap();
    let old = r.postgres_instance("postgres-a").unwrap();
    for other in ["b", "c"] {
        r.inject(Fault::Partition { from: Side::Az("a".into()), to: Side::Az(other.into()) }).await.unwrap();
        r.inject(Fault::Partition { from: Side::Az(other.into()), to: Side::Az("a".into()) }).await.unwrap();
    }
    write_until_it_works(&writer, 2, Duration::from_secs(90)).await;
    assert_eq!(one(&writer, "SELECT host(inet_server_addr())").await, "10.232.2.10");
    // The old primary, alive behind the partition, must not take a write
    // by any path, its own address included.
    let direct = old.query_strings("INSERT INTO runs VALUES (3, 'split brain')").await;
    assert!(direct.is_err(), "the cut-off old primary accepted a write");
    r.heal(Duration::from_secs(180)).await.unwrap();
    rejoins_as_a_standby_that_refuses_writes(&mut r, "postgres-a", Duration::from_secs(240)).await;
    assert_eq!(one(&writer, "SELECT count(*) FROM runs WHERE id = 3").await, "0");
    r.shutdown().await.unwrap();
}
