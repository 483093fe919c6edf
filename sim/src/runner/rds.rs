//! The run's stand-in for RDS's control plane: when the synchronous
//! standby is lost, the primary stops waiting for it (RDS keeps the primary
//! writable while it replaces a standby), and waits again once it is back.

use std::time::{Duration, Instant};

use crate::harness::RunningStack;
use crate::progress::Progress;
use crate::scenario::{Action, Scenario};
use crate::services::postgres as pg;

/// RDS's part during a run: if the synchronous standby stops answering, the
/// primary is told to stop waiting for it; when it streams again, to wait
/// again. Returns what it did, for the report's notes.
pub(super) fn spawn_control_plane(
    state: crate::state::RunState,
    until: Instant,
    p: Progress,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut notes = vec![];
        let primary = pg::nodes(&state).find(|i| i.role == "primary").and_then(|i| pg::instance(&state, &i.name));
        let standbys: Vec<String> = pg::nodes(&state).filter(|i| i.role == "standby").map(|i| i.name.clone()).collect();
        let (Some(primary), false) = (primary, standbys.is_empty()) else { return notes };
        let start = Instant::now();
        let mut misses = 0;
        let mut detached = false;
        while Instant::now() < until + Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut up = true;
            for s in &standbys {
                let ep = pg::instance(&state, s).expect("standby endpoint");
                up &= matches!(
                    tokio::time::timeout(Duration::from_secs(1), ep.query_strings("SELECT 1")).await,
                    Ok(Ok(_))
                );
            }
            misses = if up { 0 } else { misses + 1 };
            if !detached && misses >= 2 {
                match set_sync_names(&primary, "").await {
                    Ok(()) => {
                        detached = true;
                        let n = format!(
                            "t={:.1}s control plane: standby lost; the primary stops waiting for it",
                            start.elapsed().as_secs_f64()
                        );
                        p.say(&n);
                        notes.push(n);
                    }
                    Err(e) => notes.push(format!("control plane: could not detach the lost standby: {e}")),
                }
            } else if detached && up && standbys_streaming(&primary, &standbys).await {
                let names: Vec<&str> = standbys.iter().map(String::as_str).collect();
                match set_sync_names(&primary, &pg::sync_names(&names)).await {
                    Ok(()) => {
                        detached = false;
                        let n = format!(
                            "t={:.1}s control plane: standby streaming again; commits wait for it again",
                            start.elapsed().as_secs_f64()
                        );
                        p.say(&n);
                        notes.push(n);
                    }
                    Err(e) => notes.push(format!("control plane: could not re-attach the standby: {e}")),
                }
            }
            if Instant::now() > until && !detached {
                break;
            }
        }
        notes
    })
}

/// After a latency fault between two AZs: what the link really does now,
/// measured by the link agent's pinger, beside what was asked (the normal
/// latency both ways plus every delay in force on either direction). The
/// report carries it, so a run shows how exact its injected delay was.
/// RDS fails a lost primary over by itself; this control plane does not yet
/// (only `failover` faults do), so a run that takes out the primary's AZ says
/// so up front instead of leaving the reader to guess.
pub(super) fn primary_outage_warnings(stack: &RunningStack, sc: &Scenario) -> Vec<String> {
    let Some(primary) = pg::nodes(stack.state()).find(|i| i.role == "primary") else { return vec![] };
    sc.faults
        .iter()
        .filter_map(|f| match &f.action {
            Action::Inject(fs) => fs.iter().find_map(|fault| match fault {
                crate::fault::Fault::AzOutage { az, .. } if *az == primary.az => Some(az.clone()),
                crate::fault::Fault::Kill { instance } if *instance == primary.name => Some(primary.az.clone()),
                _ => None,
            }),
            _ => None,
        })
        .map(|az| {
            format!(
                "the PostgreSQL primary ({}) is in AZ {az}, which this run takes out; automatic failover of a lost primary is not simulated, so writes wait until it is back",
                primary.name
            )
        })
        .collect()
}

/// `ALTER SYSTEM` refuses to run inside a transaction, which a
/// multi-statement query is: two round trips.
async fn set_sync_names(primary: &pg::PostgresEndpoint, names: &str) -> std::result::Result<(), String> {
    primary.query_strings(&format!("ALTER SYSTEM SET synchronous_standby_names = '{names}'")).await?;
    primary.query_strings("SELECT pg_reload_conf()").await.map(|_| ())
}

/// Whether every standby streams from the primary (in whatever sync state:
/// a detached standby reports `async`).
async fn standbys_streaming(primary: &pg::PostgresEndpoint, standbys: &[String]) -> bool {
    let Ok(repl) = pg::replication(primary).await else { return false };
    standbys.iter().all(|s| repl.iter().any(|(n, st, _)| *n == pg::replication_name(s) && st == "streaming"))
}
