//! RDS's automated backups and point-in-time restore, with pgBackRest
//! (Debian's 2.45, in the offline PostgreSQL image). Chosen over a
//! hand-rolled `pg_basebackup` + `archive_command` because it is what
//! PostgreSQL shops run for exactly this: it writes to S3 natively, keeps
//! base backups and WAL as one repository with retention, checks every WAL
//! segment it archives, and restores to a time with one command that also
//! sets the `restore_command` recovery needs. Its repository is the stack's
//! S3 bucket marked `database_backups`, under `/postgres`.
//!
//! Every node carries the same settings as `PGBACKREST_*` environment
//! variables, so whichever node is primary archives its WAL (standbys with
//! `archive_mode=on` do not; a promoted one starts to), and a `docker exec`
//! of `pgbackrest` on any node needs no configuration file.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::images::ImageSet;
use crate::services::s3;
use crate::stack::{ServiceKind, Stack};

/// pgBackRest's name for the database cluster in the repository.
pub const STANZA: &str = "voyager";
/// Where in the bucket the repository lives.
pub const REPO_PATH: &str = "/postgres";
/// Full backups kept: one a day for RDS's default retention of 7 days.
pub const RETENTION_FULL: u32 = 7;
/// How often the control plane takes an automated full backup (RDS takes
/// one a day, in the backup window).
pub const BACKUP_INTERVAL: Duration = Duration::from_secs(86_400);
/// The role a restored instance has in the run state: a database of its
/// own, outside replication and the control plane's care.
pub const RESTORED_ROLE: &str = "restored";

/// What a command refused by pgBackRest's backup lock says.
pub const ANOTHER_BACKUP: &str = "another backup is running";

/// Why a stack takes no backups, when it takes none.
pub fn unavailable(stack: &Stack, images: ImageSet, bucket: Option<&str>) -> Option<String> {
    if stack.service(ServiceKind::Postgres).is_none() {
        return Some("the stack runs no PostgreSQL".into());
    }
    if stack.service(ServiceKind::S3).is_none() {
        return Some("the stack runs no S3, where backups are kept: add S3 to the stack (or drop `--only`)".into());
    }
    if bucket.is_none() {
        return Some("no S3 bucket in the fixtures says `database_backups = true`".into());
    }
    if images == ImageSet::Upstream {
        return Some(
            "the official postgres image has no pgBackRest: backups need the offline image set (`--images offline`)"
                .into(),
        );
    }
    None
}

/// The `PGBACKREST_*` settings of every node, or `None` when the stack
/// takes no backups (see [`unavailable`]).
pub fn env(
    stack: &Stack,
    images: ImageSet,
    bucket: Option<&str>,
    region: &str,
    db_user: &str,
) -> Option<BTreeMap<String, String>> {
    if unavailable(stack, images, bucket).is_some() {
        return None;
    }
    let s3 = stack.service(ServiceKind::S3)?.instances.first()?;
    let vars = [
        ("STANZA", STANZA.to_string()),
        ("PG1_PATH", super::DATA_DIR.to_string()),
        // initdb made the stack's user the superuser; there is no `postgres` role.
        ("PG1_USER", db_user.to_string()),
        ("REPO1_TYPE", "s3".into()),
        ("REPO1_PATH", REPO_PATH.into()),
        ("REPO1_S3_BUCKET", bucket?.to_string()),
        ("REPO1_S3_ENDPOINT", s3.address.to_string()),
        ("REPO1_STORAGE_PORT", s3::PORT.to_string()),
        ("REPO1_S3_REGION", region.to_string()),
        ("REPO1_S3_KEY", s3::ACCESS_KEY_ID.into()),
        ("REPO1_S3_KEY_SECRET", s3::SECRET_ACCESS_KEY.into()),
        ("REPO1_S3_URI_STYLE", "path".into()),
        // pgBackRest speaks S3 over TLS only; LocalStack's certificate is
        // its own self-signed one.
        ("REPO1_STORAGE_VERIFY_TLS", "n".into()),
        ("REPO1_RETENTION_FULL", RETENTION_FULL.to_string()),
        // A backup starts at once rather than at the next checkpoint.
        ("START_FAST", "y".into()),
        // lz4: a fraction of gzip's CPU, which two cores shared with the
        // whole stack notice; one process for the same reason.
        ("COMPRESS_TYPE", "lz4".into()),
        ("PROCESS_MAX", "1".into()),
        ("LOG_LEVEL_FILE", "off".into()),
        ("LOG_LEVEL_CONSOLE", "warn".into()),
        // A node cut off from S3 (its AZ's link down, S3's AZ out) gives up
        // on a segment in 20 s and PostgreSQL tries it again, rather than
        // one archive-push holding the archiver for pgBackRest's minute.
        ("IO_TIMEOUT", "20".into()),
    ];
    Some(vars.into_iter().map(|(k, v)| (format!("PGBACKREST_{k}"), v)).collect())
}

/// The server settings that archive WAL into the repository.
pub fn archive_args(archive_timeout: Duration) -> Vec<String> {
    // PostgreSQL counts archive_timeout in whole seconds and reads 0 as off.
    let secs = archive_timeout.as_secs_f64().ceil().max(1.0) as u64;
    [
        "archive_mode=on".to_string(),
        "archive_command=pgbackrest archive-push %p".to_string(),
        format!("archive_timeout={secs}s"),
    ]
    .into_iter()
    .flat_map(|a| ["-c".to_string(), a])
    .collect()
}

/// One backup in the repository, as `pgbackrest info` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRecord {
    pub label: String,
    pub kind: String,
    /// Unix seconds.
    pub start: i64,
    pub stop: i64,
    /// Bytes of the database it copied, and what they take in the bucket.
    pub size: u64,
    pub repo_size: u64,
}

/// The repository as `pgbackrest info --output=json` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repository {
    /// No stanza yet: nothing can be archived or backed up until one is made.
    NoStanza,
    /// The stanza, with its backups oldest first (possibly none).
    Ready(Vec<BackupRecord>),
}

/// Read `pgbackrest info --output=json`.
pub fn parse_info(json: &str) -> Result<Repository, String> {
    let v: serde_json::Value =
        serde_json::from_str(json.trim()).map_err(|e| format!("pgbackrest info is not JSON ({e}): {}", json.trim()))?;
    let stanza = v
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == STANZA))
        .ok_or_else(|| format!("pgbackrest info lists no stanza `{STANZA}`"))?;
    // 1: missing stanza path; 3: missing stanza data. 2 (no valid backups)
    // and 0 (ok) have a stanza.
    match stanza["status"]["code"].as_i64() {
        Some(1 | 3) => return Ok(Repository::NoStanza),
        Some(0 | 2) => {}
        other => {
            let msg = stanza["status"]["message"].as_str().unwrap_or("");
            return Err(format!("the backup repository is unusable (status {other:?}: {msg})"));
        }
    }
    let backups = stanza["backup"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut out: Vec<BackupRecord> = backups
        .iter()
        .filter(|b| b["error"].as_bool() != Some(true))
        .map(|b| BackupRecord {
            label: b["label"].as_str().unwrap_or_default().to_string(),
            kind: b["type"].as_str().unwrap_or_default().to_string(),
            start: b["timestamp"]["start"].as_i64().unwrap_or_default(),
            stop: b["timestamp"]["stop"].as_i64().unwrap_or_default(),
            size: b["info"]["size"].as_u64().unwrap_or_default(),
            repo_size: b["info"]["repository"]["delta"].as_u64().unwrap_or_default(),
        })
        .collect();
    out.sort_by_key(|b| b.stop);
    Ok(Repository::Ready(out))
}

/// Whether a backup that stopped at `stop` can be the base of a restore to
/// `target`. pgBackRest records stop times in whole seconds, truncated, and
/// takes only a backup that stopped before the target's whole second, so a
/// backup that ended within the target's own second is no base for it.
pub fn base_for(stop: i64, target: f64) -> bool {
    stop < target.floor() as i64
}

/// The latest time a restore can reach, as RDS's `LatestRestorableTime`:
/// everything up to the last archived WAL segment, and at least the end of
/// the newest backup (unix seconds, fractions kept).
pub fn latest_restorable(last_archived: Option<f64>, backups: &[BackupRecord]) -> Option<f64> {
    let backup = backups.iter().map(|b| b.stop as f64).reduce(f64::max);
    match (last_archived, backup) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A restore target as a user writes it: RFC 3339 (`2026-12-02T17:05:00Z`,
/// any offset) or `-5m`, that long before `now`. Returns unix seconds.
pub fn parse_target(text: &str, now: f64) -> Result<f64, String> {
    let t = text.trim();
    if let Some(ago) = t.strip_prefix('-') {
        let d = crate::fixtures::parse_duration(ago).ok_or_else(|| target_help(t))?;
        return Ok(now - d.as_secs_f64());
    }
    let ts: jiff::Timestamp = t.parse().map_err(|_| target_help(t))?;
    Ok(ts.as_millisecond() as f64 / 1000.0)
}

fn target_help(t: &str) -> String {
    format!("`{t}` is not a time: write it as RFC 3339 (`2026-12-02T17:05:00Z`) or as a time ago (`-5m`)")
}

/// Unix seconds as pgBackRest's `--target` takes them, and as `status`
/// prints them: UTC to the millisecond.
pub fn format_time(unix: f64) -> String {
    match jiff::Timestamp::from_millisecond((unix * 1000.0).round() as i64) {
        Ok(ts) => ts.strftime("%Y-%m-%d %H:%M:%S%.3f+00").to_string(),
        Err(_) => format!("@{unix}"),
    }
}

/// `pgbackrest info` on a node.
pub async fn info(docker: &bollard::Docker, container: &str) -> Result<Repository, String> {
    let out = pgbackrest(docker, container, &["info", "--output=json"], Duration::from_secs(60)).await?;
    parse_info(&out)
}

/// Make the stanza (idempotent: an existing one is checked and kept).
pub async fn create_stanza(docker: &bollard::Docker, container: &str) -> Result<(), String> {
    pgbackrest(docker, container, &["stanza-create"], Duration::from_secs(120)).await.map(|_| ())
}

/// A full backup from `container` (the primary); returns it as the
/// repository lists it.
pub async fn take(docker: &bollard::Docker, container: &str, within: Duration) -> Result<BackupRecord, String> {
    pgbackrest(docker, container, &["backup", "--type=full"], within).await?;
    match info(docker, container).await? {
        Repository::Ready(b) if !b.is_empty() => Ok(b.last().cloned().expect("not empty")),
        _ => Err("pgbackrest reported a backup the repository does not list".into()),
    }
}

async fn pgbackrest(
    docker: &bollard::Docker,
    container: &str,
    args: &[&str],
    within: Duration,
) -> Result<String, String> {
    // At the lowest CPU priority (the image has no ionice): a backup shares
    // two cores with the database it copies and the load on it (RDS backs
    // up from the standby for the same reason); the first one runs while a
    // freshly started stack takes its first writes.
    let mut argv = vec!["nice", "-n", "19", "pgbackrest"];
    argv.extend_from_slice(args);
    let what = format!("`pgbackrest {}`", args.join(" "));
    let out = tokio::time::timeout(within, crate::runtime::container::exec(docker, container, &argv))
        .await
        .map_err(|_| format!("{what} gave no answer within {}s", within.as_secs()))?
        .map_err(|e| e.to_string())?;
    if out.code != 0 {
        let text = out.output.trim();
        // pgBackRest's own lock: another backup is running.
        if text.contains("[050]") {
            return Err(format!(
                "{what}: another backup is running (the control plane's automated one?); try again when it ends"
            ));
        }
        return Err(format!("{what} failed (exit {}): {text}", out.code));
    }
    Ok(out.output)
}

/// Make the archive hold everything committed until now: a commit record
/// (an xid is assigned and committed, which writes nothing to any table),
/// then a segment switch, then wait until that segment is archived.
/// Recovery to a time stops at the first commit after it, so without a
/// commit after the target in the archive PostgreSQL refuses to promote
/// ("recovery ended before configured recovery target was reached").
/// Returns when the segment was archived (unix seconds).
pub async fn archive_now(ep: &super::PostgresEndpoint, within: Duration) -> Result<f64, String> {
    ep.query_strings("SELECT txid_current()").await?;
    let rows = ep.query_strings("SELECT pg_walfile_name(pg_switch_wal())").await?;
    let segment = rows.first().and_then(|r| r[0].clone()).ok_or("pg_switch_wal returned nothing")?;
    let start = std::time::Instant::now();
    loop {
        let rows = ep
            .query_strings("SELECT last_archived_wal, extract(epoch FROM last_archived_time) FROM pg_stat_archiver")
            .await?;
        if let Some([Some(wal), Some(at)]) = rows.first().map(|r| [r[0].clone(), r[1].clone()]) {
            // Segment names sort by timeline, then position.
            if wal >= segment {
                return at.parse().map_err(|_| format!("pg_stat_archiver's time `{at}` is not a number"));
            }
        }
        if start.elapsed() > within {
            return Err(format!(
                "WAL segment {segment} was not archived within {}s: is S3 reachable?",
                within.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// When the node last archived a WAL segment to the repository (unix
/// seconds), as PostgreSQL's archiver reports it.
pub async fn last_archived(ep: &super::PostgresEndpoint) -> Result<Option<f64>, String> {
    let rows = ep.query_strings("SELECT extract(epoch FROM last_archived_time) FROM pg_stat_archiver").await?;
    Ok(rows.first().and_then(|r| r[0].as_deref()).and_then(|v| v.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn builtin() -> Stack {
        crate::harness::builtin_stack()
    }

    #[test]
    fn every_node_gets_one_repository_in_the_backups_bucket() {
        let fx = fixtures::builtin();
        let e = env(&builtin(), ImageSet::Offline, fx.s3.backups_bucket(), "us-east-1", "voyager").unwrap();
        assert_eq!(e["PGBACKREST_REPO1_S3_BUCKET"], "voyager-db-backups");
        assert_eq!(e["PGBACKREST_REPO1_TYPE"], "s3");
        assert_eq!(e["PGBACKREST_PG1_USER"], "voyager");
        let s3_addr = builtin().service(ServiceKind::S3).unwrap().instances[0].address.to_string();
        assert_eq!(e["PGBACKREST_REPO1_S3_ENDPOINT"], s3_addr);
    }

    #[test]
    fn no_backups_without_s3_a_bucket_or_pgbackrest() {
        let fx = fixtures::builtin();
        let only_pg = builtin().only(&[ServiceKind::Postgres]);
        let why = unavailable(&only_pg, ImageSet::Offline, fx.s3.backups_bucket()).unwrap();
        assert!(why.contains("no S3"), "{why}");
        assert!(unavailable(&builtin(), ImageSet::Offline, None).unwrap().contains("database_backups"));
        assert!(unavailable(&builtin(), ImageSet::Upstream, Some("b")).unwrap().contains("--images offline"));
        assert!(env(&builtin(), ImageSet::Upstream, Some("b"), "r", "u").is_none());
    }

    #[test]
    fn archive_timeout_is_whole_seconds_and_never_off() {
        let a = archive_args(Duration::from_secs(300));
        assert_eq!(a[5], "archive_timeout=300s");
        assert_eq!(archive_args(Duration::from_millis(200))[5], "archive_timeout=1s");
        assert_eq!(archive_args(Duration::from_millis(1500))[5], "archive_timeout=2s");
        assert_eq!(a[3], "archive_command=pgbackrest archive-push %p");
    }

    #[test]
    fn info_tells_a_missing_stanza_from_an_empty_one() {
        let missing = r#"[{"name":"voyager","status":{"code":1,"message":"missing stanza path"},"backup":[]}]"#;
        assert_eq!(parse_info(missing).unwrap(), Repository::NoStanza);
        let empty = r#"[{"name":"voyager","status":{"code":2,"message":"no valid backups"},"backup":[]}]"#;
        assert_eq!(parse_info(empty).unwrap(), Repository::Ready(vec![]));
        let two = r#"[{"name":"voyager","status":{"code":0,"message":"ok"},"backup":[
            {"label":"B","type":"full","timestamp":{"start":200,"stop":210},"info":{"size":5,"repository":{"delta":2}}},
            {"label":"A","type":"full","timestamp":{"start":100,"stop":110},"info":{"size":4,"repository":{"delta":1}}}]}]"#;
        let Repository::Ready(b) = parse_info(two).unwrap() else { panic!() };
        assert_eq!(b.iter().map(|b| b.label.as_str()).collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!((b[1].start, b[1].stop, b[1].size, b[1].repo_size), (200, 210, 5, 2));
        assert!(parse_info("ERROR: [039]: no S3").unwrap_err().contains("not JSON"));
        let broken = r#"[{"name":"voyager","status":{"code":99,"message":"other"}}]"#;
        assert!(parse_info(broken).unwrap_err().contains("unusable"));
    }

    #[test]
    fn the_latest_restorable_time_is_the_later_of_archive_and_backup() {
        let b = |stop| BackupRecord { label: "x".into(), kind: "full".into(), start: 0, stop, size: 0, repo_size: 0 };
        assert_eq!(latest_restorable(None, &[]), None);
        assert_eq!(latest_restorable(Some(50.5), &[]), Some(50.5));
        assert_eq!(latest_restorable(None, &[b(40), b(60)]), Some(60.0));
        assert_eq!(latest_restorable(Some(70.0), &[b(60)]), Some(70.0));
    }

    #[test]
    fn a_backup_is_a_base_only_for_targets_after_the_second_it_stopped_in() {
        // pgBackRest refused a restore to 06.802 from a backup recorded as
        // stopping at 06 ("unable to find backup set with stop time less
        // than ..."), which a fractional comparison had chosen.
        assert!(!base_for(1_000, 1_000.802));
        assert!(!base_for(1_000, 1_000.0));
        assert!(base_for(1_000, 1_001.0));
    }

    #[test]
    fn targets_are_rfc3339_or_a_time_ago() {
        assert_eq!(parse_target("2026-12-02T17:05:00Z", 0.0).unwrap(), 1_796_231_100.0);
        assert_eq!(parse_target("2026-12-02T18:05:00.250+01:00", 0.0).unwrap(), 1_796_231_100.25);
        assert_eq!(parse_target("-5m", 1000.0).unwrap(), 700.0);
        let e = parse_target("yesterday", 0.0).unwrap_err();
        assert!(e.contains("RFC 3339") && e.contains("-5m"), "{e}");
        assert_eq!(format_time(1_796_231_100.25), "2026-12-02 17:05:00.250+00");
    }
}
