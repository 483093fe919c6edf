//! A scenario's accident and its recovery: the destructive statement
//! through the writer, then (after the load) a point-in-time restore to a
//! millisecond before it, judged write by write on the restored instance:
//! every write acknowledged before the target must be there, none sent
//! after it may be. [`judge`] is pure.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::RunningStack;
use crate::ledger::{check, Check, Ledger, Op, Outcome};
use crate::load::{Sample, PG_TABLE};
use crate::progress::Progress;
use crate::report::{RestoreReport, SEED_DB_RPO_S, SEED_DB_RTO_S};

/// When the accident happened, on the run's clock and the wall clock.
#[derive(Debug, Clone, Copy)]
pub(super) struct Accident {
    pub at: Duration,
    pub unix: f64,
    pub deleted: u64,
}

/// A restore starts from a backup taken before its target: when the
/// repository has none (a new database, or S3 came back empty), one is taken
/// before the load, as RDS's daily backup would have been.
pub(super) async fn ensure_backup(stack: &mut RunningStack, p: &Progress) -> Result<(), String> {
    let status = stack.backup_status().await.map_err(|e| e.to_string())?;
    if let Some(why) = status.unavailable {
        return Err(format!("the stack takes no backups: {why}"));
    }
    if status.backups.is_empty() || status.error.is_some() {
        p.say("no backup to restore from yet: taking one before the load");
        stack.backup_postgres(p).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The accident itself: every row the run's load inserted, deleted through
/// the writer endpoint, as a `DELETE` that lost its `WHERE` would.
pub(super) async fn accident(stack: &RunningStack, run: &str, at: Duration) -> Result<Accident, String> {
    let unix = crate::state::now_unix_ms() as f64 / 1000.0;
    let w = stack.postgres().ok_or("no PostgreSQL writer")?;
    let rows = w
        .query_strings(&format!(
            "WITH d AS (DELETE FROM {PG_TABLE} WHERE run = '{run}' RETURNING 1) SELECT count(*) FROM d"
        ))
        .await?;
    let deleted = rows.first().and_then(|r| r[0].as_deref()).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(Accident { at, unix, deleted })
}

/// Restore to just before the accident, read the run's rows there, judge,
/// and remove the restored instance again (the stack is left as it was).
pub(super) async fn restore_and_judge(
    stack: &mut RunningStack,
    acc: &Accident,
    run: &str,
    samples: &[Sample],
    p: &Progress,
) -> Result<(Check, RestoreReport), String> {
    // A millisecond before: the accident's own statement is not restored.
    let target = acc.unix - 0.001;
    let name = format!("restore-{}", crate::runtime::labels::random_suffix());
    p.say(&format!("restoring PostgreSQL to just before the accident, as {name}"));
    let r = stack.restore_postgres(target, Some(&name), p).await.map_err(|e| e.to_string())?;
    let found = super::readback::read_postgres(&r.endpoint, run).await;
    let removed = stack.remove_restored(&name).await;
    let found = found?;
    removed.map_err(|e| e.to_string())?;
    let target_in_run = acc.at.saturating_sub(Duration::from_millis(1));
    let (c, mut report) = judge(samples, &found, target_in_run);
    report.accident_at_s = acc.at.as_secs_f64();
    report.target = r.target;
    report.instance = name;
    report.from_backup = r.from_backup;
    report.rto_s = r.took.as_secs_f64();
    report.deleted_by_accident = acc.deleted;
    Ok((c, report))
}

/// Judge what a restore to `target` (on the run's clock) holds: a write
/// acknowledged before the target must be there; one sent after it must not;
/// one in flight at the target may be either (ambiguous). The returned
/// check is the PostgreSQL check of the run, judged on the restore.
pub(super) fn judge(
    samples: &[Sample],
    found: &BTreeMap<u64, Vec<String>>,
    target: Duration,
) -> (Check, RestoreReport) {
    let mut ledger = Ledger::default();
    let mut sent_after = vec![];
    let mut done_at: BTreeMap<u64, Duration> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.op == Op::PostgresInsert) {
        if s.intended > target {
            sent_after.push(s.id);
            continue;
        }
        let done = s.intended + s.latency;
        let outcome = match s.outcome {
            Outcome::Acked if done < target => Outcome::Acked,
            Outcome::Acked => Outcome::Ambiguous,
            other => other,
        };
        ledger.record(Op::PostgresInsert, s.id, outcome);
        if s.outcome == Outcome::Acked {
            done_at.insert(s.id, done);
        }
    }
    let c = check(Op::PostgresInsert, &ledger, found);
    let present_after: Vec<u64> = sent_after.iter().copied().filter(|id| found.contains_key(id)).collect();
    let newest = found.keys().filter_map(|id| done_at.get(id)).max();
    let report = RestoreReport {
        accident_at_s: 0.0,
        target: String::new(),
        instance: String::new(),
        from_backup: String::new(),
        rto_s: 0.0,
        rpo_s: newest.map(|n| target.saturating_sub(*n).as_secs_f64()),
        acknowledged_before: c.acknowledged,
        missing_before: c.lost.clone(),
        sent_after: sent_after.len(),
        present_after,
        deleted_by_accident: 0,
        seed_rto_s: SEED_DB_RTO_S,
        seed_rpo_s: SEED_DB_RPO_S,
    };
    (c, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: u64, intended_ms: u64, latency_ms: u64, outcome: Outcome) -> Sample {
        Sample {
            op: Op::PostgresInsert,
            id,
            intended: Duration::from_millis(intended_ms),
            latency: Duration::from_millis(latency_ms),
            outcome,
            status: None,
        }
    }

    fn found(ids: &[u64]) -> BTreeMap<u64, Vec<String>> {
        ids.iter().map(|i| (*i, vec!["tx 1 row (0,1)".to_string()])).collect()
    }

    #[test]
    fn a_restore_must_hold_what_was_acknowledged_before_and_nothing_sent_after() {
        let target = Duration::from_millis(10_000);
        let samples = [
            s(1, 9_000, 10, Outcome::Acked),  // done 9.01 s: must be there
            s(2, 9_990, 50, Outcome::Acked),  // done after the target: either
            s(3, 10_500, 10, Outcome::Acked), // sent after: must not be there
            s(4, 9_500, 10, Outcome::Failed), // refused: may not be there
        ];
        let (c, r) = judge(&samples, &found(&[1]), target);
        assert!(c.lost.is_empty() && r.present_after.is_empty());
        assert_eq!((r.acknowledged_before, r.sent_after), (1, 1));
        assert_eq!(r.rpo_s, Some(0.99));
        assert_eq!(c.ambiguous_absent, vec![2]);

        // Missing an acknowledged write, and holding one sent after.
        let (c, r) = judge(&samples, &found(&[2, 3]), target);
        assert_eq!(r.missing_before, vec![1]);
        assert_eq!(c.lost, vec![1]);
        assert_eq!(r.present_after, vec![3]);
        assert_eq!(c.unexpected, vec![3], "a write after the target is a stranger to the restore's ledger");
    }
}
