//! RDS's automated backups and point-in-time restore against real
//! PostgreSQL, pgBackRest and the stack's S3: the control plane backs a new
//! database up by itself, backups and WAL land in the backups bucket (listed
//! with aws-sdk-s3, as any S3 client would), and a restore to a time holds
//! exactly the rows committed up to it, as a database of its own.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use voyager_sim::runtime::docker;
use voyager_sim::{PostgresEndpoint, Progress, ServiceKind};

async fn one(ep: &PostgresEndpoint, sql: &str) -> String {
    let rows = ep.query_strings(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows[0][0].clone().unwrap_or_default()
}

/// The server's clock, in unix seconds: the restore target is a time on the
/// database's clock, as on RDS.
async fn server_now(ep: &PostgresEndpoint) -> f64 {
    one(ep, "SELECT extract(epoch FROM clock_timestamp())").await.parse().unwrap()
}

async fn keys(s3: &aws_sdk_s3::Client, prefix: &str) -> Vec<String> {
    let out = s3.list_objects_v2().bucket("voyager-db-backups").prefix(prefix).send().await.unwrap();
    out.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_land_in_s3_and_a_restore_to_a_time_holds_exactly_the_rows_up_to_it() {
    let mut running = common::start("t-backup", 233, &[ServiceKind::Postgres, ServiceKind::S3]).await;
    let p = Progress::stderr();

    // The control plane's first backup of the new database, by itself.
    let t = Instant::now();
    let status = loop {
        let s = running.backup_status().await.unwrap();
        assert!(s.unavailable.is_none(), "{s:?}");
        if !s.backups.is_empty() && s.latest_restorable.is_some() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(180), "no automated backup within 180s: {s:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!("first automated backup after {:.1}s: {:?}", t.elapsed().as_secs_f64(), status.backups);

    // pgBackRest counts a backup's stop in whole seconds: a restore can
    // reach from the second after it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let writer = running.postgres().unwrap();
    writer.query_strings("CREATE TABLE runs (id int PRIMARY KEY)").await.unwrap();
    for id in 1..=10 {
        one(&writer, &format!("INSERT INTO runs VALUES ({id}) RETURNING id")).await;
    }
    let target = server_now(&writer).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in 11..=20 {
        one(&writer, &format!("INSERT INTO runs VALUES ({id}) RETURNING id")).await;
    }

    // An on-demand snapshot too, after the rows: a restore to before it
    // must still start from the backup before the target.
    let (manual, _) = running.backup_postgres(&p).await.unwrap();
    assert_eq!(manual.kind, "full");

    let env: BTreeMap<String, String> = running.env().into_iter().collect();
    let s3 = common::s3_client(&env);
    for backup in [&status.backups[0][..status.backups[0].find(' ').unwrap()], manual.label.as_str()] {
        let files = keys(&s3, &format!("postgres/backup/voyager/{backup}/")).await;
        assert!(files.iter().any(|k| k.ends_with("backup.manifest")), "backup {backup} has no manifest in S3");
        assert!(files.iter().any(|k| k.ends_with("PG_VERSION.lz4")), "backup {backup} has no data files in S3");
    }
    assert!(keys(&s3, "postgres/backup/voyager/backup.info").await.iter().any(|k| k.ends_with("/backup.info")));
    let wal = keys(&s3, "postgres/archive/voyager/").await;
    assert!(wal.iter().any(|k| k.ends_with(".lz4")), "no archived WAL in the bucket ({} keys)", wal.len());

    // A target the window does not hold is refused, and leaves nothing.
    let before = running.state().instances.len();
    let err = running.restore_postgres(target + 3600.0, Some("too-late"), &p).await.unwrap_err().to_string();
    assert!(err.contains("outside the restorable window"), "{err}");
    assert_eq!(running.state().instances.len(), before);

    let r = running.restore_postgres(target, Some("pitr"), &p).await.unwrap();
    eprintln!("restored to {} from {} in {:.1}s", r.target, r.from_backup, r.took.as_secs_f64());
    assert_ne!(r.from_backup, manual.label, "the backup after the target cannot be the base");
    let ids = r.endpoint.query_strings("SELECT string_agg(id::text, ',' ORDER BY id) FROM runs").await.unwrap();
    assert_eq!(ids[0][0].as_deref(), Some("1,2,3,4,5,6,7,8,9,10"), "exactly the rows committed up to the target");
    // A database of its own: promoted, taking writes, apart from the source.
    assert_eq!(one(&r.endpoint, "SELECT pg_is_in_recovery()").await, "f");
    one(&r.endpoint, "INSERT INTO runs VALUES (99) RETURNING id").await;
    assert_eq!(one(&writer, "SELECT count(*) FROM runs").await, "20");
    assert_eq!(one(&writer, "SELECT count(*) FROM runs WHERE id = 99").await, "0");
    let env: BTreeMap<String, String> = running.env().into_iter().collect();
    assert_eq!(env["PITR_URL"], r.endpoint.url());
    let err = running.restore_postgres(target, Some("pitr"), &p).await.unwrap_err().to_string();
    assert!(err.contains("already has an instance named `pitr`"), "{err}");

    // `down` removes the restored instance with the stack.
    let docker = docker::connect(&Progress::silent()).await.unwrap();
    let restored = r.endpoint.instance.clone();
    running.shutdown().await.unwrap();
    let left = voyager_sim::runtime::sweep::all_stacks(&docker).await.unwrap();
    assert!(!left.contains(&"t-backup".to_string()), "{restored} or another part of t-backup is left: {left:?}");
}
