//! The ledger of every write the load generator made and how each ended, and
//! the checker that compares it with what the services hold afterwards.
//! **No I/O**: reading the services back is the runner's job; this module
//! only judges.
//!
//! An *acknowledged* write is one the service confirmed (Kafka acks=all,
//! PostgreSQL commit, InfluxDB 204). An *ambiguous* one ended without a
//! clear answer (a timeout, a dropped connection after the request left):
//! it may or may not have happened, so it is never counted as acknowledged,
//! and its presence or absence afterwards is reported, not judged.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// The write operations of the load generator, one per data service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    KafkaProduce,
    PostgresInsert,
    InfluxWrite,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::KafkaProduce, Op::PostgresInsert, Op::InfluxWrite];

    pub fn as_str(&self) -> &'static str {
        match self {
            Op::KafkaProduce => "kafka_produce",
            Op::PostgresInsert => "postgres_insert",
            Op::InfluxWrite => "influx_write",
        }
    }

    /// The tier an operation measures, for RTO per tier.
    pub fn tier(&self) -> &'static str {
        match self {
            Op::KafkaProduce => "kafka",
            Op::PostgresInsert => "postgres",
            Op::InfluxWrite => "influxdb",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Acked,
    Failed,
    Ambiguous,
}

/// Every write of one operation, by id.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub writes: BTreeMap<Op, BTreeMap<u64, Outcome>>,
}

impl Ledger {
    pub fn record(&mut self, op: Op, id: u64, outcome: Outcome) {
        self.writes.entry(op).or_default().insert(id, outcome);
    }

    pub fn ids(&self, op: Op, outcome: Outcome) -> BTreeSet<u64> {
        self.writes
            .get(&op)
            .map(|w| w.iter().filter(|(_, o)| **o == outcome).map(|(id, _)| *id).collect())
            .unwrap_or_default()
    }
}

/// What the checker found for one operation. Id lists are complete; the
/// report shows counts and the first few.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub op: Op,
    pub acknowledged: usize,
    /// Acknowledged, but not there afterwards: the number that must be zero.
    pub lost: Vec<u64>,
    /// There more than once (Kafka producer retries can do this).
    pub duplicated: Vec<u64>,
    pub ambiguous_present: Vec<u64>,
    pub ambiguous_absent: Vec<u64>,
    /// Reported as failed to the client, yet there: not data loss, but an
    /// application would have retried it.
    pub failed_but_present: Vec<u64>,
    /// There, yet never written by this run: should never happen.
    pub unexpected: Vec<u64>,
}

/// Judge one operation: the ledger against how many times each id was found.
pub fn check(op: Op, ledger: &Ledger, found: &BTreeMap<u64, usize>) -> Check {
    let empty = BTreeMap::new();
    let writes = ledger.writes.get(&op).unwrap_or(&empty);
    let present = |id: &u64| found.get(id).copied().unwrap_or(0) > 0;
    let of = |o: Outcome| writes.iter().filter(move |(_, w)| **w == o).map(|(id, _)| *id);
    Check {
        op,
        acknowledged: of(Outcome::Acked).count(),
        lost: of(Outcome::Acked).filter(|id| !present(id)).collect(),
        duplicated: found.iter().filter(|(_, n)| **n > 1).map(|(id, _)| *id).collect(),
        ambiguous_present: of(Outcome::Ambiguous).filter(present).collect(),
        ambiguous_absent: of(Outcome::Ambiguous).filter(|id| !present(id)).collect(),
        failed_but_present: of(Outcome::Failed).filter(present).collect(),
        unexpected: found.keys().filter(|id| !writes.contains_key(id)).copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(entries: &[(u64, Outcome)]) -> Ledger {
        let mut l = Ledger::default();
        for (id, o) in entries {
            l.record(Op::KafkaProduce, *id, *o);
        }
        l
    }

    fn found(ids: &[(u64, usize)]) -> BTreeMap<u64, usize> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_clean_history_has_nothing_to_report() {
        let l = history(&[(1, Outcome::Acked), (2, Outcome::Acked), (3, Outcome::Failed)]);
        let c = check(Op::KafkaProduce, &l, &found(&[(1, 1), (2, 1)]));
        assert_eq!(c.acknowledged, 2);
        assert!(
            c.lost.is_empty() && c.duplicated.is_empty() && c.failed_but_present.is_empty() && c.unexpected.is_empty()
        );
    }

    #[test]
    fn an_acknowledged_write_that_is_gone_is_lost_by_id() {
        let l = history(&[(1, Outcome::Acked), (2, Outcome::Acked), (3, Outcome::Acked)]);
        let c = check(Op::KafkaProduce, &l, &found(&[(1, 1), (3, 1)]));
        assert_eq!(c.lost, [2]);
    }

    #[test]
    fn ambiguous_writes_are_never_lost_only_reported() {
        let l = history(&[(1, Outcome::Ambiguous), (2, Outcome::Ambiguous)]);
        let c = check(Op::KafkaProduce, &l, &found(&[(2, 1)]));
        assert!(c.lost.is_empty());
        assert_eq!((c.ambiguous_present.as_slice(), c.ambiguous_absent.as_slice()), (&[2][..], &[1][..]));
        assert_eq!(c.acknowledged, 0);
    }

    #[test]
    fn duplicates_failed_but_present_and_strangers_are_each_named() {
        let l = history(&[(1, Outcome::Acked), (2, Outcome::Failed)]);
        let c = check(Op::KafkaProduce, &l, &found(&[(1, 2), (2, 1), (9, 1)]));
        assert_eq!(c.duplicated, [1]);
        assert_eq!(c.failed_but_present, [2]);
        assert_eq!(c.unexpected, [9]);
        assert!(c.lost.is_empty());
    }

    #[test]
    fn operations_are_judged_apart() {
        let mut l = history(&[(1, Outcome::Acked)]);
        l.record(Op::PostgresInsert, 1, Outcome::Acked);
        let c = check(Op::PostgresInsert, &l, &found(&[]));
        assert_eq!(c.lost, [1]);
        assert_eq!(check(Op::KafkaProduce, &l, &found(&[(1, 1)])).lost, Vec::<u64>::new());
    }
}
