//! RDS's automated backups: the control plane makes the repository when the
//! database is new, takes the first full backup at once (RDS backs up a new
//! instance as soon as it is available) and one a day after that, from
//! whichever node is primary. WAL goes to the repository continuously by
//! the primary's own `archive_command` (see `services::postgres::backup`);
//! this part only decides when a base backup is due.
//!
//! A backup takes seconds to minutes, so it runs as a task of its own: the
//! control loop keeps watching for failovers meanwhile.

use std::time::Duration;

use bollard::Docker;
use tokio::task::JoinHandle;

use crate::services::postgres::backup::{self, BackupRecord, Repository, BACKUP_INTERVAL};
use crate::services::postgres::{self as pg};
use crate::state;

/// What is due, given what the repository holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// No stanza: make one, then back up.
    Stanza,
    /// A full backup, and why.
    Backup(&'static str),
    /// Nothing until this unix time.
    Nothing { until: i64 },
}

/// Pure: what the repository `repo` needs at unix time `now`.
pub fn due(repo: &Repository, now: i64, interval: Duration) -> Due {
    match repo {
        Repository::NoStanza => Due::Stanza,
        Repository::Ready(b) => match b.last() {
            None => Due::Backup("the first backup of a new database"),
            Some(last) if now - last.stop >= interval.as_secs() as i64 => Due::Backup("the daily automated backup"),
            Some(last) => Due::Nothing { until: last.stop + interval.as_secs() as i64 },
        },
    }
}

/// How long to wait before looking again after a look or backup failed:
/// S3 may still be starting, or out with its AZ.
const RETRY: Duration = Duration::from_secs(15);
/// How long to wait between looks when nothing is due: the repository can
/// change under us (a manual backup, S3 coming back empty), and a look is
/// one `docker exec`.
const LOOK_EVERY: Duration = Duration::from_secs(60);
/// A backup that has not ended in this long is given up on.
const BACKUP_LIMIT: Duration = Duration::from_secs(3600);

/// The always-on part: at most one look-and-backup task at a time.
pub struct Backups {
    task: Option<JoinHandle<Result<Option<String>, String>>>,
    next_look: i64,
    last_error: String,
    unavailable: Option<String>,
    /// A backup was taken or seen: a missing stanza later means the
    /// repository was lost, not that the database is new.
    had_backups: bool,
}

impl Backups {
    pub fn new(stack: &crate::stack::Stack, images: crate::images::ImageSet) -> Backups {
        let fx = crate::fixtures::builtin();
        Backups {
            task: None,
            next_look: 0,
            last_error: String::new(),
            unavailable: backup::unavailable(stack, images, fx.s3.backups_bucket()),
            had_backups: false,
        }
    }

    /// One tick of the control loop; returns lines to say (also recorded
    /// as the control plane's events when they are backups taken).
    pub async fn tick(&mut self, docker: &Docker, stack_name: &str) -> Vec<String> {
        let now = unix_now();
        if let Some(t) = &self.task {
            if !t.is_finished() {
                return vec![];
            }
            let result = self.task.take().expect("checked above").await.unwrap_or_else(|e| Err(e.to_string()));
            return match result {
                Ok(Some(line)) => {
                    self.last_error.clear();
                    self.had_backups = true;
                    let _ = state::record_event(stack_name, &format!("backup: {line}"));
                    vec![format!("backup: {line}")]
                }
                Ok(None) => {
                    self.had_backups = true;
                    vec![]
                }
                Err(e) => {
                    self.next_look = now + RETRY.as_secs() as i64;
                    if e == self.last_error {
                        return vec![];
                    }
                    self.last_error = e.clone();
                    vec![format!("backup: {e} (trying again in {}s)", RETRY.as_secs())]
                }
            };
        }
        if now < self.next_look {
            return vec![];
        }
        let Ok(Some(st)) = state::load(stack_name) else { return vec![] };
        let Some(primary) = pg::nodes(&st).find(|i| i.role == "primary").map(|i| i.container.clone()) else {
            return vec![];
        };
        if let Some(why) = self.unavailable.take() {
            // Nothing will change that while the stack runs: said once.
            self.next_look = i64::MAX;
            return vec![format!("backup: no automated backups: {why}")];
        }
        self.next_look = now + LOOK_EVERY.as_secs() as i64;
        let docker = docker.clone();
        let lost = self.had_backups;
        self.task = Some(tokio::spawn(async move { look_and_back_up(&docker, &primary, lost).await }));
        vec![]
    }
}

async fn look_and_back_up(docker: &Docker, primary: &str, had_backups: bool) -> Result<Option<String>, String> {
    let repo = backup::info(docker, primary).await?;
    let made = repo == Repository::NoStanza;
    if made {
        backup::create_stanza(docker, primary).await?;
    }
    let repo = if made { backup::info(docker, primary).await? } else { repo };
    match due(&repo, unix_now(), BACKUP_INTERVAL) {
        Due::Nothing { .. } => Ok(None),
        Due::Stanza => Err("the repository has no stanza after stanza-create".into()),
        Due::Backup(why) => {
            // LocalStack's community S3 keeps objects in memory: an S3
            // killed with its AZ comes back with empty buckets.
            let why = if made && had_backups { "the repository was lost with S3's objects; made again" } else { why };
            let t = std::time::Instant::now();
            let b = backup::take(docker, primary, BACKUP_LIMIT).await?;
            Ok(Some(describe(&b, why, t.elapsed())))
        }
    }
}

/// One line for the event log and `status`.
pub fn describe(b: &BackupRecord, why: &str, took: Duration) -> String {
    format!(
        "{} backup {} taken in {:.1}s ({why}): {:.1} MB of database, {:.1} MB in the bucket",
        b.kind,
        b.label,
        took.as_secs_f64(),
        b.size as f64 / 1e6,
        b.repo_size as f64 / 1e6
    )
}

fn unix_now() -> i64 {
    (state::now_unix_ms() / 1000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup_at(stop: i64) -> BackupRecord {
        BackupRecord { label: format!("L{stop}"), kind: "full".into(), start: stop - 5, stop, size: 1, repo_size: 1 }
    }

    #[test]
    fn a_new_database_gets_a_stanza_then_its_first_backup() {
        let day = Duration::from_secs(86_400);
        assert_eq!(due(&Repository::NoStanza, 1000, day), Due::Stanza);
        assert!(matches!(due(&Repository::Ready(vec![]), 1000, day), Due::Backup(w) if w.contains("first")));
    }

    #[test]
    fn a_backup_is_due_a_day_after_the_last_one_ended() {
        let day = Duration::from_secs(86_400);
        let repo = Repository::Ready(vec![backup_at(100), backup_at(1_000)]);
        assert_eq!(due(&repo, 1_000 + 86_399, day), Due::Nothing { until: 87_400 });
        assert!(matches!(due(&repo, 87_400, day), Due::Backup(w) if w.contains("daily")));
    }
}
