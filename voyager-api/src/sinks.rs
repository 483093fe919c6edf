//! The tiers a run is written to besides PostgreSQL, each answering only
//! once it holds the write: Kafka (acks=all, idempotent), InfluxDB (204
//! after its WAL has the point) and S3 (200 with the object's version).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hyper::body::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientContext;

use crate::config::Config;
use crate::http::Http;
use crate::sigv4;

pub struct Kafka {
    producer: FutureProducer<Logged>,
    topic: String,
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Place {
    pub partition: i32,
    pub offset: i64,
}

impl Kafka {
    /// The producer's settings; the timers' order matters (see the test).
    fn client_config(cfg: &Config) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &cfg.kafka_bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            // One request in flight per broker connection, so at most one
            // per partition. With more, a failed request to a partition
            // makes the ones behind it fail with out-of-order
            // sequence numbers, and librdkafka 2.12 answers those with a new
            // producer epoch; under the new epoch, a record whose earlier
            // send may have been written (a timeout, a dropped connection)
            // on any partition is sent again as a new record: acknowledged
            // once, in the log twice (librdkafka issue 4953). Seen in
            // platform-az-loss. The cost is latency under concurrency:
            // `voyager-bench api --pods` peaks at the same rate (~130/s
            // through the ALB) but needs 32 clients for it rather than 16.
            .set("max.in.flight.requests.per.connection", "1")
            // A request in flight to a broker whose AZ is gone gets no
            // answer and no reset. librdkafka gives up on it after this
            // (default 60 s) and sends the record again, under the same
            // sequence number, to the partition's new leader (elected in
            // 10-13 s). It must come well before the message's own
            // timeout, since a message that times out also starts a new
            // epoch, and after the broker's own wait below, so a live
            // broker answers first.
            .set("socket.timeout.ms", "15000")
            // Room for the retry above plus an election on a loaded
            // machine, and still shorter than the ALB's idle timeout
            // (60 s), so the caller hears a failure rather than a cut
            // connection.
            .set("message.timeout.ms", "45000")
            // The broker's own wait for the ISR's acks, after which it
            // answers and the record is retried under the same sequence.
            .set("request.timeout.ms", "10000")
            .set("linger.ms", "2")
            .set_log_level(if cfg.kafka_debug.is_empty() { RDKafkaLogLevel::Warning } else { RDKafkaLogLevel::Debug });
        if !cfg.kafka_debug.is_empty() {
            config.set("debug", &cfg.kafka_debug);
        }
        config
    }

    pub fn new(cfg: &Config) -> Result<Kafka, String> {
        let config = Kafka::client_config(cfg);
        let producer = config.create_with_context(Logged).map_err(|e| format!("Kafka producer: {e}"))?;
        Ok(Kafka { producer, topic: cfg.topic.clone() })
    }

    pub async fn publish(&self, key: &str, payload: &[u8]) -> Result<Place, String> {
        let record = FutureRecord::to(&self.topic).key(key).payload(payload);
        match self.producer.send(record, Duration::from_secs(0)).await {
            Ok(d) => Ok(Place { partition: d.partition, offset: d.offset }),
            Err((e, _)) => Err(format!("publishing to {}: {e}", self.topic)),
        }
    }

    /// For the deep health check: the cluster's metadata for our topic.
    pub async fn ping(&self) -> Result<(), String> {
        let p = self.producer.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let md = p.client().fetch_metadata(Some(&topic), Duration::from_secs(2)).map_err(|e| e.to_string())?;
            match md.topics().first() {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                _ => Err(format!("topic {topic} has no partitions")),
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// librdkafka's own account of what it did, in the pod's log: without it a
/// producer that gives up on a broker, or starts a new epoch, says nothing.
pub struct Logged;

impl ClientContext for Logged {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        eprintln!("voyager-api: kafka {level:?} {fac}: {msg}");
    }
}

pub struct Influx {
    http: Http,
    write_url: String,
    ping_url: String,
    auth: String,
    /// This process, as a tag: with its own strictly increasing
    /// timestamps, no two of its points share a series and a time, which
    /// InfluxDB would keep as one (the later overwrites the earlier).
    host: String,
    last_ns: std::sync::atomic::AtomicU64,
}

impl Influx {
    pub fn new(cfg: &Config, http: Http) -> Influx {
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", cfg.influx_user, cfg.influx_password));
        Influx {
            http,
            write_url: format!(
                "{}/write?db={}&rp={}&precision=ns",
                cfg.influx_url,
                sigv4::uri_encode(&cfg.influx_database, false),
                sigv4::uri_encode(&cfg.influx_retention_policy, false)
            ),
            ping_url: format!("{}/ping", cfg.influx_url),
            auth: format!("Basic {basic}"),
            host: std::env::var("HOSTNAME").unwrap_or_else(|_| format!("pid-{}", std::process::id())),
            last_ns: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Now in nanoseconds, and always later than the last point's.
    fn stamp(&self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        next_stamp(&self.last_ns, now)
    }

    pub async fn write(&self, id: &str, subject: &str, zone: &str) -> Result<(), String> {
        let line = format!(
            "api_requests,zone={},host={} id=\"{}\",subject=\"{}\" {}",
            tag(zone),
            tag(&self.host),
            field(id),
            field(subject),
            self.stamp()
        );
        let r =
            self.http.request("POST", &self.write_url, &[("authorization", self.auth.clone())], line.into()).await?;
        if r.status != 204 {
            return Err(format!("InfluxDB refused the point: HTTP {} {}", r.status, String::from_utf8_lossy(&r.body)));
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), String> {
        let r = self.http.get(&self.ping_url, &[]).await?;
        if r.status != 204 {
            return Err(format!("InfluxDB /ping answered HTTP {}", r.status));
        }
        Ok(())
    }
}

/// Line protocol escapes: tags escape `,`, `=` and spaces; string fields
/// escape `"` and `\`.
fn tag(s: &str) -> String {
    s.replace('\\', "\\\\").replace(',', "\\,").replace('=', "\\=").replace(' ', "\\ ")
}

fn field(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `now`, or one past the last stamp if the clock has not moved on since.
fn next_stamp(last: &std::sync::atomic::AtomicU64, now: u64) -> u64 {
    use std::sync::atomic::Ordering;
    let prev = last.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| Some(now.max(l + 1)));
    now.max(prev.unwrap_or(0) + 1)
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

pub struct S3 {
    http: Http,
    endpoint: String,
    host: String,
    bucket: String,
    access_key: String,
    secret_key: String,
    region: String,
}

impl S3 {
    pub fn new(cfg: &Config, http: Http) -> Result<S3, String> {
        let host = cfg
            .s3_endpoint
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest).to_string())
            .ok_or_else(|| format!("AWS_ENDPOINT_URL={:?} is not a URL such as http://host:port", cfg.s3_endpoint))?;
        Ok(S3 {
            http,
            endpoint: cfg.s3_endpoint.clone(),
            host,
            bucket: cfg.bucket.clone(),
            access_key: cfg.s3_access_key.clone(),
            secret_key: cfg.s3_secret_key.clone(),
            region: cfg.s3_region.clone(),
        })
    }

    /// A path-style, signed request; the endpoint is an address, which has
    /// no per-bucket host names.
    async fn signed(
        &self,
        method: &str,
        key: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<crate::http::Response, String> {
        let path = format!("/{}/{}", self.bucket, sigv4::uri_encode(key, true));
        let path = path.trim_end_matches('/').to_string();
        let payload = sigv4::sha256_hex(&body);
        let date = sigv4::amz_date(now_ms() as u64 / 1000);
        let c = sigv4::Credentials { access_key: &self.access_key, secret_key: &self.secret_key, region: &self.region };
        let mut signed = vec![("host", self.host.as_str()), ("x-amz-content-sha256", &payload), ("x-amz-date", &date)];
        if !content_type.is_empty() {
            signed.push(("content-type", content_type));
        }
        let auth = sigv4::authorization(method, &path, "", &signed, &payload, &date, &c);
        let mut headers: Vec<(&str, String)> = signed.iter().map(|(k, v)| (*k, v.to_string())).collect();
        headers.push(("authorization", auth));
        self.http.request(method, &format!("{}{path}", self.endpoint), &headers, body).await
    }

    /// Store an object; its version id when the bucket is versioned.
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<Option<String>, String> {
        let r = self.signed("PUT", key, body.into(), "application/json").await?;
        if r.status != 200 {
            return Err(format!(
                "S3 refused {}/{key}: HTTP {} {}",
                self.bucket,
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        Ok(r.headers.get("x-amz-version-id").and_then(|v| v.to_str().ok()).map(str::to_string))
    }

    /// For the deep health check: the bucket exists and answers.
    pub async fn ping(&self) -> Result<(), String> {
        let r = self.signed("HEAD", "", Bytes::new(), "").await?;
        if r.status != 200 {
            return Err(format!("S3 bucket {} answered HTTP {}", self.bucket, r.status));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn points_of_one_process_never_share_a_timestamp() {
        let last = std::sync::atomic::AtomicU64::new(0);
        let stamps: Vec<u64> = [100, 100, 100, 99, 250, 250].iter().map(|n| super::next_stamp(&last, *n)).collect();
        assert_eq!(stamps, [100, 101, 102, 103, 250, 251]);
    }

    use super::*;

    fn ms(c: &ClientConfig, key: &str) -> Duration {
        Duration::from_millis(c.get(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{key} is set")))
    }

    /// A duplicate needs a new producer epoch while a record's first send
    /// may have been written; these relations keep librdkafka from
    /// starting one in a broker's loss.
    #[test]
    fn a_lost_broker_is_retried_under_the_same_epoch_before_anyone_gives_up() {
        let defaulted = ["VOYAGER_API_LISTEN", "PGPORT", "AUTH0_CLOCK_SKEW", "VOYAGER_API_KAFKA_DEBUG"];
        let cfg = Config::from_lookup(|k| (!defaulted.contains(&k)).then(|| "x".to_string())).unwrap();
        let c = Kafka::client_config(&cfg);
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("max.in.flight.requests.per.connection"), Some("1"));
        assert_eq!(c.get("debug"), None, "debug logging only when asked for");
        let (broker_wait, give_up_on_broker, message) =
            (ms(&c, "request.timeout.ms"), ms(&c, "socket.timeout.ms"), ms(&c, "message.timeout.ms"));
        assert!(broker_wait < give_up_on_broker, "a live broker answers before the client gives up on it");
        // KRaft fences a lost broker after its 9 s session timeout; new
        // leaders were serving 10-13 s after an AZ's loss.
        let election = Duration::from_secs(13);
        assert!(give_up_on_broker + election < message, "the retry reaches a new leader before the message times out");
        let alb_idle = voyager_sim::stack::edge::default_alb().idle_timeout;
        assert!(message < alb_idle, "the caller hears the failure before the ALB cuts the connection");
    }

    #[test]
    fn line_protocol_values_are_escaped() {
        assert_eq!(tag("us east,1=a"), "us\\ east\\,1\\=a");
        assert_eq!(field("say \"hi\" \\o/"), "say \\\"hi\\\" \\\\o/");
    }
}
