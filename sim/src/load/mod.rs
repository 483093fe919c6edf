//! The load generator: an open model (arrivals on their own clock, never
//! waiting for earlier requests), so a stalled service shows up as latency
//! and errors rather than as a politely slower client. Latency is measured
//! from each request's *intended* send time (no coordinated omission).
//! Arrivals are a Poisson process per operation, drawn from the scenario's
//! seed, so the same seed replays the same load.
//!
//! Reads top-down like a goose load test: [`generate`] → one schedule per
//! operation → [`Targets::begin`], plain async functions per service;
//! [`api`] is the request through the edge.

pub mod api;
pub mod kafka;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, Mutex};

use crate::ledger::{Op, Outcome};
use crate::scenario::Scenario;
use crate::services::influxdb::InfluxEndpoint;
use crate::services::postgres::PostgresEndpoint;

/// The Kafka topic the load writes to (the platform's run status events).
pub const KAFKA_TOPIC: &str = "runs.status.v1";
pub const PG_TABLE: &str = "voyager_sim_writes";
pub const INFLUX_MEASUREMENT: &str = "voyager_sim_write";

/// One attempted write.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub op: Op,
    pub id: u64,
    /// When it was meant to be sent, from the start of the run.
    pub intended: Duration,
    /// From the intended send time to the answer.
    pub latency: Duration,
    pub outcome: Outcome,
    /// The HTTP status, for operations that get one (the WAF's 429s are
    /// counted from it).
    pub status: Option<u16>,
}

/// At most this many PostgreSQL connections, as an application's pool would
/// have: a stalled database must not exhaust `max_connections`. Waiting for
/// a connection counts as latency (it is measured from the intended time).
pub const PG_POOL: usize = 32;

struct PgPool {
    endpoint: PostgresEndpoint,
    /// Each connection with the insert prepared on it, as an application's
    /// statement cache keeps it: one round trip a write, not a parse first.
    idle: Mutex<Vec<(tokio_postgres::Client, tokio_postgres::Statement)>>,
    slots: tokio::sync::Semaphore,
}

fn insert_sql() -> String {
    format!("INSERT INTO {PG_TABLE} (run, id) VALUES ($1, $2)")
}

/// A new pooled connection with the insert prepared on it.
async fn pg_connect(
    pg: &PostgresEndpoint,
) -> Result<(tokio_postgres::Client, tokio_postgres::Statement), tokio_postgres::Error> {
    let (client, conn) = pg.config().connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let insert = client.prepare(&insert_sql()).await?;
    Ok((client, insert))
}

/// Where the writes go. Each write carries `run` (the run's tag) and a
/// per-operation id, which is what the checker reads back.
pub struct Targets {
    pub run: String,
    /// When the targets were made, in ns since the epoch: InfluxDB points are
    /// stamped from here, one nanosecond per id.
    epoch_ns: u128,
    kafka: Option<kafka::KafkaLoad>,
    postgres: Option<PgPool>,
    influx: Option<InfluxEndpoint>,
    api: Option<api::ApiTarget>,
}

impl Targets {
    pub fn new(
        run: &str,
        kafka_bootstrap: Option<&str>,
        postgres: Option<PostgresEndpoint>,
        influx: Option<InfluxEndpoint>,
    ) -> Result<Targets, String> {
        let kafka = kafka_bootstrap.map(kafka::KafkaLoad::new).transpose()?;
        let postgres = postgres.map(|endpoint| PgPool {
            endpoint,
            idle: Mutex::new(vec![]),
            slots: tokio::sync::Semaphore::new(PG_POOL),
        });
        let epoch_ns =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        Ok(Targets { run: run.to_string(), epoch_ns, kafka, postgres, influx, api: None })
    }

    /// Requests through the edge as well.
    pub fn with_api(mut self, api: Option<api::ApiTarget>) -> Targets {
        self.api = api;
        self
    }

    pub fn supports(&self, op: Op) -> bool {
        match op {
            Op::KafkaProduce => self.kafka.is_some(),
            Op::PostgresInsert => self.postgres.is_some(),
            Op::InfluxWrite => self.influx.is_some(),
            Op::ApiRequest => self.api.is_some(),
        }
    }

    /// Create what the writes need (the PostgreSQL table, the pool's connections).
    pub async fn prepare(&self) -> Result<(), String> {
        if let Some(pool) = &self.postgres {
            let pg = &pool.endpoint;
            pg.query_strings(&format!(
                "CREATE TABLE IF NOT EXISTS {PG_TABLE} (run text NOT NULL, id bigint NOT NULL, at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run, id))"
            ))
            .await?;
            // A warm pool, as an application has: otherwise the first
            // seconds of every run measure 32 authentication handshakes at
            // once, not the database.
            let conns = futures_util::future::join_all((0..PG_POOL).map(|_| pg_connect(pg))).await;
            let mut idle = pool.idle.lock().await;
            for c in conns {
                idle.push(c.map_err(|e| crate::services::postgres::db_error(&e))?);
            }
        }
        Ok(())
    }

    /// Where the writes' samples go, timed from `start`, until `finish`.
    /// Kafka's records are answered on librdkafka's own thread, so its
    /// producer holds a sender of its own.
    pub fn report_to(&self, start: Instant, samples: &mpsc::UnboundedSender<Sample>) {
        if let Some(k) = &self.kafka {
            k.report_to(start, samples.clone());
        }
    }

    /// Until every write begun has its sample, then let the samples' channel
    /// go. Blocks while Kafka's producer flushes.
    pub fn finish(&self) {
        if let Some(k) = &self.kafka {
            k.finish();
        }
    }

    /// Begin write `id` of `op`, meant for `at` after `start`: its sample
    /// reaches `samples` once it is answered. Returns what is left to
    /// drive, if anything: a Kafka record only enqueues (its delivery
    /// report makes the sample), unless librdkafka's queue is full.
    pub fn begin(
        self: &Arc<Self>,
        op: Op,
        id: u64,
        at: Duration,
        start: Instant,
        samples: &mpsc::UnboundedSender<Sample>,
    ) -> Option<BoxFuture<'static, ()>> {
        if let (Op::KafkaProduce, Some(k)) = (op, &self.kafka) {
            if k.send(&self.run, id, at) == kafka::Sent::Done {
                return None;
            }
            // As FutureProducer does: wait for room.
            let t = self.clone();
            return Some(Box::pin(async move {
                let k = t.kafka.as_ref().expect("checked above");
                while k.send(&t.run, id, at) == kafka::Sent::QueueFull {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        let (t, samples) = (self.clone(), samples.clone());
        Some(Box::pin(async move {
            let (outcome, status) = t.execute(op, id).await;
            let latency = start.elapsed().saturating_sub(at);
            let _ = samples.send(Sample { op, id, intended: at, latency, outcome, status });
        }))
    }

    /// One request, classified: acknowledged, failed (it certainly did not
    /// happen), or ambiguous (it may have).
    async fn execute(&self, op: Op, id: u64) -> (Outcome, Option<u16>) {
        match op {
            // `begin` sends Kafka's records; here only without a producer.
            Op::KafkaProduce => (Outcome::Failed, None),
            Op::PostgresInsert => (self.postgres_insert(id).await, None),
            Op::InfluxWrite => (self.influx_write(id).await, None),
            Op::ApiRequest => match &self.api {
                Some(a) => {
                    let r = a.request(id).await;
                    (r.outcome, r.status)
                }
                None => (Outcome::Failed, None),
            },
        }
    }

    async fn postgres_insert(&self, id: u64) -> Outcome {
        let Some(pool) = &self.postgres else { return Outcome::Failed };
        let Ok(_slot) = pool.slots.acquire().await else { return Outcome::Failed };
        let pg = &pool.endpoint;
        let (client, insert) = match pool.idle.lock().await.pop() {
            Some((c, st)) if !c.is_closed() => (c, st),
            // Nothing of the write was sent yet: certainly not written.
            _ => match tokio::time::timeout(Duration::from_secs(3), pg_connect(pg)).await {
                Ok(Ok(c)) => c,
                _ => return Outcome::Failed,
            },
        };
        match tokio::time::timeout(Duration::from_secs(10), client.execute(&insert, &[&self.run, &(id as i64)])).await {
            Ok(Ok(_)) => {
                pool.idle.lock().await.push((client, insert));
                Outcome::Acked
            }
            // The server answered with an error: the statement did not commit.
            Ok(Err(e)) if e.as_db_error().is_some() => Outcome::Failed,
            // The connection broke or we gave up waiting after the statement
            // left: it may have committed.
            _ => Outcome::Ambiguous,
        }
    }

    async fn influx_write(&self, id: u64) -> Outcome {
        let Some(ep) = &self.influx else { return Outcome::Failed };
        // One series per run (the id is a field, not a tag: a series per
        // write would swamp InfluxDB's index), and a timestamp per id, since
        // points of a series with equal timestamps overwrite each other.
        let line = format!("{INFLUX_MEASUREMENT},run={} id={id}i {}", self.run, self.epoch_ns + id as u128);
        match tokio::time::timeout(Duration::from_secs(10), ep.write(&ep.database, None, &line)).await {
            Ok(Ok(())) => Outcome::Acked,
            // Not connected (nothing sent), or refused with a 4xx: not written.
            Ok(Err(e)) if e.contains("(Connect)") || e.contains("failed: 4") => Outcome::Failed,
            _ => Outcome::Ambiguous,
        }
    }
}

/// The intended send times of one operation: a Poisson process at `rate`
/// per second, ramped linearly from zero over `ramp`, until `duration`.
pub fn schedule(seed: u64, op: Op, rate: f64, ramp: Duration, duration: Duration) -> Vec<Duration> {
    if rate <= 0.0 {
        return vec![];
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (op as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut out = vec![];
    let mut t = 0.0;
    let end = duration.as_secs_f64();
    loop {
        // Thinning: draw at the full rate, keep with the ramp's share.
        let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        t += -u.ln() / rate;
        if t >= end {
            return out;
        }
        let share = if ramp.is_zero() { 1.0 } else { (t / ramp.as_secs_f64()).min(1.0) };
        if rng.random::<f64>() < share {
            out.push(Duration::from_secs_f64(t));
        }
    }
}

/// Run the scenario's load from `start` until its end, sending every sample
/// to `samples`. Returns when every request has been answered.
pub async fn generate(
    scenario: &Scenario,
    targets: Arc<Targets>,
    start: Instant,
    samples: mpsc::UnboundedSender<Sample>,
) {
    targets.report_to(start, &samples);
    let mut tasks = vec![];
    for (op, rate) in &scenario.rates {
        let times = schedule(scenario.seed, *op, *rate, scenario.ramp, scenario.duration);
        let (op, targets, samples) = (*op, targets.clone(), samples.clone());
        // One task per operation drives every request of it: a task per
        // request cost more CPU than the requests themselves at tens of
        // thousands a second, CPU the services under test share. Each
        // request starts at its intended time (or as soon as the task is
        // back, everything due at once), and its latency counts from that
        // intended time either way.
        tasks.push(tokio::spawn(async move {
            use futures_util::stream::{FuturesUnordered, StreamExt};
            let mut inflight = FuturesUnordered::new();
            let mut due = times.into_iter().enumerate().peekable();
            loop {
                let now = Instant::now();
                while let Some((i, at)) = due.next_if(|(_, at)| start + *at <= now) {
                    inflight.extend(targets.begin(op, i as u64 + 1, at, start, &samples));
                }
                let Some((_, next)) = due.peek() else { break };
                let wake = tokio::time::sleep_until((start + *next).into());
                tokio::select! {
                    _ = wake => {}
                    Some(()) = inflight.next(), if !inflight.is_empty() => {}
                }
            }
            while inflight.next().await.is_some() {}
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = tokio::task::spawn_blocking(move || targets.finish()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_arrivals_and_another_seed_does_not() {
        let a = schedule(7, Op::KafkaProduce, 50.0, Duration::ZERO, Duration::from_secs(10));
        assert_eq!(a, schedule(7, Op::KafkaProduce, 50.0, Duration::ZERO, Duration::from_secs(10)));
        assert_ne!(a, schedule(8, Op::KafkaProduce, 50.0, Duration::ZERO, Duration::from_secs(10)));
        assert_ne!(a, schedule(7, Op::PostgresInsert, 50.0, Duration::ZERO, Duration::from_secs(10)));
    }

    #[test]
    fn arrivals_average_the_rate_and_ramp_up_from_zero() {
        let a = schedule(1, Op::InfluxWrite, 200.0, Duration::from_secs(10), Duration::from_secs(60));
        let first = a.iter().filter(|t| t.as_secs() < 5).count() as f64;
        let steady = a.iter().filter(|t| t.as_secs() >= 30 && t.as_secs() < 35).count() as f64;
        assert!((900.0..1100.0).contains(&steady), "steady 5 s at 200/s gave {steady}");
        assert!(first < steady * 0.4, "the ramp's first 5 s ({first}) must be well under steady ({steady})");
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
    }
}
