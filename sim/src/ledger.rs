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
    /// A run created through the edge (Route 53, the ALB, voyager-api),
    /// held only when every tier holds it.
    ApiRequest,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::KafkaProduce, Op::PostgresInsert, Op::InfluxWrite, Op::ApiRequest];

    pub fn as_str(&self) -> &'static str {
        match self {
            Op::KafkaProduce => "kafka_produce",
            Op::PostgresInsert => "postgres_insert",
            Op::InfluxWrite => "influx_write",
            Op::ApiRequest => "api_request",
        }
    }

    /// The tier an operation measures, for RTO per tier.
    pub fn tier(&self) -> &'static str {
        match self {
            Op::KafkaProduce => "kafka",
            Op::PostgresInsert => "postgres",
            Op::InfluxWrite => "influxdb",
            Op::ApiRequest => "api",
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
    /// The same ids with where each copy was found and, as far as the
    /// ledger and those places tell, why there is more than one.
    pub duplicates: Vec<Duplicate>,
    pub ambiguous_present: Vec<u64>,
    pub ambiguous_absent: Vec<u64>,
    /// Reported as failed to the client, yet there: not data loss, but an
    /// application would have retried it.
    pub failed_but_present: Vec<u64>,
    /// There, yet never written by this run: should never happen.
    pub unexpected: Vec<u64>,
}

/// One id found more than once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Duplicate {
    pub id: u64,
    /// Where each copy is, as the service names places (a Kafka
    /// `partition@offset`, the PostgreSQL transaction that inserted the row).
    pub copies: Vec<String>,
    pub cause: DuplicateCause,
}

/// Why a write is there more than once, judged from the client's outcome
/// and the copies' places. The load never resends a write itself, so every
/// copy past the first was made below the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateCause {
    /// Two copies at one place: the read-back saw the same record twice. A
    /// bug of the checker, not of the platform.
    ReadTwice,
    /// The client gave up on the write (timed out or failed) while copies
    /// were still in flight, and more than one landed. For Kafka: an
    /// idempotent producer bumps its epoch after a delivery timeout, and the
    /// broker cannot deduplicate a retry across epochs; a delivery timeout
    /// longer than the platform's longest stall avoids it.
    AfterClientGaveUp,
    /// The client heard one success for several copies: a retry below it
    /// (a lost acknowledgement, resent) that the service did not
    /// deduplicate, e.g. a producer without idempotence.
    UnderOneAcknowledgement,
}

impl DuplicateCause {
    pub fn as_str(&self) -> &'static str {
        match self {
            DuplicateCause::ReadTwice => "read twice by the checker",
            DuplicateCause::AfterClientGaveUp => "resent after the client gave up",
            DuplicateCause::UnderOneAcknowledgement => "retried under one acknowledgement",
        }
    }
}

fn duplicate_cause(outcome: Option<Outcome>, copies: &[String]) -> DuplicateCause {
    let places: BTreeSet<&String> = copies.iter().collect();
    if places.len() < copies.len() {
        return DuplicateCause::ReadTwice;
    }
    match outcome {
        Some(Outcome::Acked) => DuplicateCause::UnderOneAcknowledgement,
        _ => DuplicateCause::AfterClientGaveUp,
    }
}

/// Judge one operation: the ledger against where each id was found (one
/// place per copy).
pub fn check(op: Op, ledger: &Ledger, found: &BTreeMap<u64, Vec<String>>) -> Check {
    let empty = BTreeMap::new();
    let writes = ledger.writes.get(&op).unwrap_or(&empty);
    let present = |id: &u64| found.get(id).is_some_and(|c| !c.is_empty());
    let duplicates: Vec<Duplicate> = found
        .iter()
        .filter(|(_, c)| c.len() > 1)
        .map(|(id, c)| Duplicate { id: *id, copies: c.clone(), cause: duplicate_cause(writes.get(id).copied(), c) })
        .collect();
    let of = |o: Outcome| writes.iter().filter(move |(_, w)| **w == o).map(|(id, _)| *id);
    Check {
        op,
        acknowledged: of(Outcome::Acked).count(),
        lost: of(Outcome::Acked).filter(|id| !present(id)).collect(),
        duplicated: duplicates.iter().map(|d| d.id).collect(),
        duplicates,
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

    /// `n` copies of each id, at distinct places.
    fn found(ids: &[(u64, usize)]) -> BTreeMap<u64, Vec<String>> {
        ids.iter().map(|(id, n)| (*id, (0..*n).map(|i| format!("0@{i}")).collect())).collect()
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
    fn a_duplicate_is_named_by_its_cause() {
        let l = history(&[(1, Outcome::Acked), (2, Outcome::Ambiguous), (3, Outcome::Failed), (4, Outcome::Acked)]);
        let mut f = found(&[(1, 2), (2, 2), (3, 3)]);
        f.insert(4, vec!["2@17".into(), "2@17".into()]);
        let c = check(Op::KafkaProduce, &l, &f);
        let causes: Vec<(u64, DuplicateCause)> = c.duplicates.iter().map(|d| (d.id, d.cause)).collect();
        assert_eq!(
            causes,
            [
                (1, DuplicateCause::UnderOneAcknowledgement),
                (2, DuplicateCause::AfterClientGaveUp),
                (3, DuplicateCause::AfterClientGaveUp),
                (4, DuplicateCause::ReadTwice),
            ]
        );
        assert_eq!(c.duplicates[3].copies, ["2@17", "2@17"]);
        assert_eq!(c.duplicated, [1, 2, 3, 4]);
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
