//! voyager-api: the reference Voyager service. One `POST /v1/runs` does what
//! the platform's services do per request — check the caller's Auth0 token,
//! write the run to PostgreSQL with credentials leased from Vault, publish
//! it to Kafka, record telemetry in InfluxDB and store an artifact in S3 —
//! and answers 201 only once every one of them holds it, so a client that
//! got a 201 may demand to find its write in all four afterwards.
//!
//! `GET /healthz` is shallow (the process serves); `GET /readyz` is deep
//! (every dependency answers now, with this replica's credentials).

pub mod auth;
pub mod config;
pub mod db;
pub mod http;
pub mod sigv4;
pub mod sinks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{watch, OnceCell};

use auth::{Refusal, Verifier};
use config::Config;
use db::{Database, Inserted};

/// The scope a caller needs to create runs (the API's `write:runs`).
pub const WRITE_SCOPE: &str = "write:runs";
const MAX_BODY: usize = 64 * 1024;
/// Outgoing HTTP deadline (JWKS, InfluxDB, S3).
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may finish after SIGTERM: inside
/// Kubernetes' default 30 s grace period.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

pub struct App {
    cfg: Config,
    verifier: Verifier,
    db: OnceCell<Arc<Database>>,
    kafka: sinks::Kafka,
    influx: sinks::Influx,
    s3: sinks::S3,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: &Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A run's id: the client's idempotency key, also the S3 key and the Kafka
/// record key, so it must be safe in all three.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl App {
    pub fn new(cfg: Config) -> Result<Arc<App>, String> {
        let http = Http::new(HTTP_TIMEOUT);
        Ok(Arc::new(App {
            verifier: Verifier::new(&cfg.issuer, &cfg.audience, cfg.leeway, &cfg.jwks_uri, http.clone()),
            db: OnceCell::new(),
            kafka: sinks::Kafka::new(&cfg)?,
            influx: sinks::Influx::new(&cfg, http.clone()),
            s3: sinks::S3::new(&cfg, http)?,
            cfg,
        }))
    }

    /// Lease database credentials and load the signing keys, retrying while
    /// Vault or Auth0 are not up yet: the service starts serving (shallow
    /// health, 503 for work) before its dependencies are all there.
    fn spawn_startup(self: &Arc<App>) {
        let app = self.clone();
        tokio::spawn(async move {
            let mut said = false;
            loop {
                match Database::open(&app.cfg).await {
                    Ok(db) => {
                        db.spawn_renewal();
                        let _ = app.db.set(db);
                        break;
                    }
                    Err(e) if !said => {
                        eprintln!("voyager-api: waiting for database credentials: {e}");
                        said = true;
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let app = self.clone();
        tokio::spawn(async move {
            while let Err(e) = app.verifier.refresh().await {
                eprintln!("voyager-api: waiting for the tenant's signing keys: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }

    async fn handle(self: Arc<App>, req: Request<Incoming>) -> Result<Reply, std::convert::Infallible> {
        let r = match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => reply(StatusCode::OK, &json!({ "status": "ok", "zone": self.cfg.zone })),
            (&Method::GET, "/readyz") => self.deep_health().await,
            (&Method::POST, "/v1/runs") => self.create_run(req).await,
            (_, "/healthz" | "/readyz" | "/v1/runs") => {
                reply(StatusCode::METHOD_NOT_ALLOWED, &json!({ "error": "method not allowed" }))
            }
            _ => reply(StatusCode::NOT_FOUND, &json!({ "error": "not found" })),
        };
        Ok(r)
    }

    async fn deep_health(&self) -> Reply {
        let db = async {
            match self.db.get() {
                Some(db) => db.ping().await,
                None => Err("no database credentials yet".to_string()),
            }
        };
        let keys = async { self.verifier.refresh().await.map(|_| ()) };
        let (db, kafka, influx, s3, keys) =
            tokio::join!(db, self.kafka.ping(), self.influx.ping(), self.s3.ping(), keys);
        let checks = [("postgres", db), ("kafka", kafka), ("influxdb", influx), ("s3", s3), ("auth0_jwks", keys)];
        let healthy = checks.iter().all(|(_, r)| r.is_ok());
        let doc: serde_json::Map<String, Value> = checks
            .into_iter()
            .map(|(k, r)| (k.to_string(), r.map(|_| json!("ok")).unwrap_or_else(|e| json!(e))))
            .collect();
        let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        reply(status, &json!({ "zone": self.cfg.zone, "checks": doc }))
    }

    async fn create_run(&self, req: Request<Incoming>) -> Reply {
        let authorization = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
        let caller = match self.verifier.check(authorization.as_deref(), WRITE_SCOPE).await {
            Ok(c) => c,
            Err(r) => return refused(r),
        };
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, &json!({ "error": "body over 64 KiB" })),
        };
        let id = match serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["id"].as_str().map(str::to_string)) {
            Some(id) if valid_id(&id) => id,
            _ => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    &json!({ "error": "the body must be JSON with \"id\": 1-128 characters of A-Z a-z 0-9 - _ . :" }),
                )
            }
        };
        let Some(db) = self.db.get() else {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "error": "starting: no database credentials yet" }),
            );
        };
        let zone = &self.cfg.zone;
        let record = json!({ "id": id, "status": "created", "subject": caller.subject, "zone": zone });
        let artifact = serde_json::to_vec(&record).unwrap_or_default();
        let key = format!("runs/{id}.json");
        let (pg, kafka, influx, s3) = tokio::join!(
            db.insert(&id, &caller.subject, zone),
            self.kafka.publish(&id, &artifact),
            self.influx.write(&id, &caller.subject, zone),
            self.s3.put(&key, artifact.clone()),
        );
        match (pg, kafka, influx, s3) {
            (Ok(inserted), Ok(place), Ok(()), Ok(version)) => reply(
                StatusCode::CREATED,
                &json!({
                    "id": id,
                    "zone": zone,
                    "postgres": if inserted == Inserted::New { "inserted" } else { "already there" },
                    "kafka": { "topic": self.cfg.topic, "partition": place.partition, "offset": place.offset },
                    "influxdb": "written",
                    "s3": { "bucket": self.cfg.bucket, "key": key, "version_id": version },
                }),
            ),
            (pg, kafka, influx, s3) => {
                // Some tiers may hold the run: the answer is "not durable",
                // and the client may retry with the same id.
                let failed: serde_json::Map<String, Value> =
                    [("postgres", pg.err()), ("kafka", kafka.err()), ("influxdb", influx.err()), ("s3", s3.err())]
                        .into_iter()
                        .filter_map(|(k, e)| e.map(|e| (k.to_string(), json!(e))))
                        .collect();
                reply(StatusCode::SERVICE_UNAVAILABLE, &json!({ "error": "not durable", "id": id, "failed": failed }))
            }
        }
    }
}

use http::Http;

/// RFC 6750's answers: 401 with a challenge, 403 for a missing scope.
fn refused(r: Refusal) -> Reply {
    let (status, challenge, body) = match r {
        Refusal::Missing => (StatusCode::UNAUTHORIZED, "Bearer".to_string(), json!({ "error": "missing token" })),
        Refusal::Invalid(why) => (
            StatusCode::UNAUTHORIZED,
            "Bearer error=\"invalid_token\"".to_string(),
            json!({ "error": "invalid_token", "error_description": why }),
        ),
        Refusal::Scope(s) => (
            StatusCode::FORBIDDEN,
            format!("Bearer error=\"insufficient_scope\", scope=\"{s}\""),
            json!({ "error": "insufficient_scope", "scope": s }),
        ),
    };
    let mut r = reply(status, &body);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    r
}

/// A running service: its address and a way to stop it.
pub struct Running {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stop accepting, let requests in flight finish, then return.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Bind, start the dependencies' set-up in the background, and serve.
pub async fn serve(cfg: Config) -> Result<Running, String> {
    let listener = TcpListener::bind(cfg.listen).await.map_err(|e| format!("listening on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = App::new(cfg)?;
    app.spawn_startup();
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let app = app.clone();
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(30))
                        .serve_connection(TokioIo::new(stream), service_fn(move |req| app.clone().handle(req)));
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                _ = stopped.changed() => break,
            }
        }
        drop(listener);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    });
    Ok(Running { addr, stop, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_safe_as_keys_everywhere() {
        assert!(valid_id("run-1:a_b.c"));
        assert!(!valid_id(""));
        assert!(!valid_id("a/b"));
        assert!(!valid_id("a b"));
        assert!(!valid_id(&"x".repeat(129)));
    }
}
