//! The Kafka side of the load: one producer configured as production
//! clients are, whose delivery reports become samples directly.
//!
//! librdkafka already batches, retries and tracks every message; a future
//! per message on top of it (rdkafka's `FutureProducer`) cost a channel, a
//! task wake-up across threads and a poll of the load's task per record,
//! which at tens of thousands of records a second was more CPU than the
//! client's own broker threads, taken from the brokers under test. Here a
//! send only enqueues, and librdkafka's delivery callback (on the
//! producer's polling thread) times the answer and hands the sample on.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::mpsc;

use super::{Sample, KAFKA_TOPIC};
use crate::ledger::{Op, Outcome};

/// librdkafka's `message.timeout.ms`: how long a message may wait for a
/// partition's new leader before it is given up (ambiguous).
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(120);

/// What a message carries to its delivery report.
pub struct Pending {
    id: u64,
    at: Duration,
}

/// Where delivery reports go, once the run has started.
struct Sink {
    start: Instant,
    samples: mpsc::UnboundedSender<Sample>,
}

pub struct Deliveries {
    /// Only the producer's polling thread takes it, but for `finish`.
    sink: Mutex<Option<Sink>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, p: Box<Pending>) {
        let outcome = match result {
            Ok(_) => Outcome::Acked,
            Err((e, _)) => outcome(e),
        };
        self.report(&p, outcome);
    }
}

impl Deliveries {
    fn report(&self, p: &Pending, outcome: Outcome) {
        let sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sink) = sink.as_ref() else { return };
        let latency = sink.start.elapsed().saturating_sub(p.at);
        let _ = sink.samples.send(Sample {
            op: Op::KafkaProduce,
            id: p.id,
            intended: p.at,
            latency,
            outcome,
            status: None,
        });
    }
}

/// The run's producer.
pub struct KafkaLoad {
    producer: ThreadedProducer<Deliveries>,
}

/// What became of a send.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// Enqueued (its delivery report will say the rest), or refused at
    /// once (already reported).
    Done,
    /// librdkafka's queue is full: try again a moment later.
    QueueFull,
}

impl KafkaLoad {
    pub fn new(bootstrap: &str) -> Result<KafkaLoad, String> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            // As production clients run: no duplicates from retries.
            .set("enable.idempotence", "true")
            // Kafka's Java client defaults, which MSK's client best
            // practices say to keep: a message may wait two minutes for its
            // partition's new leader. A shorter timeout expires messages in
            // flight through a leader election; the idempotent producer then
            // starts a new epoch, and the brokers cannot tell its retries
            // from the writes they already had: duplicates.
            .set("message.timeout.ms", MESSAGE_TIMEOUT.as_millis().to_string())
            .set("request.timeout.ms", "30000")
            // librdkafka's default and the Java client's since Kafka 4.0.
            // At 2 ms, batches at tens of thousands a second were small
            // enough that the client's broker threads and the brokers spent
            // two cores on requests: 70k/s saturated at 2 ms and held p90
            // 0.36 s at 5.
            .set("linger.ms", "5")
            // As the Java client: requests leave at once rather than
            // waiting under Nagle for the last one's ACK.
            .set("socket.nagle.disable", "true")
            // Room for a second of the highest rates in flight (the
            // default 100,000 throttled sends above ~80k/s).
            .set("queue.buffering.max.messages", "1000000")
            .set("log_level", "0")
            .create_with_context(Deliveries { sink: Mutex::new(None) })
            .map_err(|e| format!("Kafka producer: {e}"))?;
        Ok(KafkaLoad { producer })
    }

    /// Where this run's delivery reports go, timed from `start`.
    pub fn report_to(&self, start: Instant, samples: mpsc::UnboundedSender<Sample>) {
        *self.producer.context().sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(Sink { start, samples });
    }

    /// Enqueue record `id` of `run`, meant for `at` after the start.
    pub fn send(&self, run: &str, id: u64, at: Duration) -> Sent {
        let payload = format!("{run}:{id}");
        let key = id.to_string();
        let rec = BaseRecord::with_opaque_to(KAFKA_TOPIC, Box::new(Pending { id, at })).key(&key).payload(&payload);
        match self.producer.send(rec) {
            Ok(()) => Sent::Done,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Sent::QueueFull,
            // Refused before it left this process: certainly not written.
            Err((_, rec)) => {
                self.producer.context().report(&rec.delivery_opaque, Outcome::Failed);
                Sent::Done
            }
        }
    }

    /// Until every enqueued record has its delivery report (at most the
    /// message timeout, after which librdkafka reports it timed out); then
    /// the reports' channel is let go, so its reader sees the end.
    pub fn finish(&self) {
        let _ = self.producer.flush(MESSAGE_TIMEOUT + Duration::from_secs(5));
        self.producer.context().sink.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Kafka errors after which the broker may hold the record count as
/// ambiguous; the others mean it was refused.
pub fn outcome(e: &KafkaError) -> Outcome {
    match e {
        KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown,
        ) => Outcome::Ambiguous,
        KafkaError::MessageProduction(_) => Outcome::Failed,
        _ => Outcome::Ambiguous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_out_produce_is_ambiguous_and_a_refused_one_failed() {
        assert_eq!(outcome(&KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)), Outcome::Ambiguous);
        assert_eq!(
            outcome(&KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicasAfterAppend)),
            Outcome::Ambiguous
        );
        assert_eq!(outcome(&KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas)), Outcome::Failed);
    }
}
