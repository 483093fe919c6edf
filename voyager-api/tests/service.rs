//! voyager-api as a developer runs it: the binary on the host, configured
//! by nothing but what `voyager-sim env` exports for a running stack (every
//! tier but Kubernetes), and as the stack runs it, a replica per AZ. A request with a real tenant token is answered 201
//! and then found in all four stores, at the places the answer named; every
//! token a resource server must refuse is refused; the deep health check
//! names a dependency that stops answering.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use voyager_sim::harness::builtin_stack;
use voyager_sim::http::request;
use voyager_sim::{ImageSource, Progress, ServiceKind, Sim};

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the binary with the stack's environment; its address from the
/// line it prints.
fn start(env: &BTreeMap<String, String>) -> (Service, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_voyager-api"))
        .env_clear()
        .envs(env)
        .env("VOYAGER_API_LISTEN", "127.0.0.1:0")
        .env("VOYAGER_API_ZONE", "us-east-1-test")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split_whitespace().nth(3).unwrap_or_else(|| panic!("no address in {line:?}")).to_string();
    (Service(child), format!("http://{addr}"))
}

async fn call(method: &str, url: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(auth.iter().map(|a| ("authorization", a.as_str())));
    let r = request(method, url, &headers, body, Duration::from_secs(60)).await.unwrap();
    (r.status, serde_json::from_str(&r.body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_is_answered_once_every_tier_holds_it_and_bad_tokens_are_refused() {
    let mut stack = builtin_stack().relocated("10.234.0.0/16".parse().unwrap()).unwrap();
    stack.name = "t-api".into();
    // Every tier the service needs, and the stack's own replicas.
    let mut only = voyager_sim::services::api::NEEDS.to_vec();
    only.push(ServiceKind::Api);
    let running = Sim::new(stack)
        .with_images(ImageSource::Offline)
        .with_only(&only)
        .with_progress(Progress::stderr())
        .start()
        .await
        .unwrap();
    let env: BTreeMap<String, String> = running.env().into_iter().collect();

    // Bad settings are named, all at once, and nothing starts.
    let out = Command::new(env!("CARGO_BIN_EXE_voyager-api")).env_clear().env("PGPORT", "x").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("VAULT_TOKEN is not set") && err.contains("PGPORT=\"x\""), "{err}");

    let (service, base) = start(&env);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (s, doc) = call("GET", &format!("{base}/readyz"), None, "").await;
        if s == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {doc}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (s, doc) = call("GET", &format!("{base}/healthz"), None, "").await;
    assert_eq!((s, doc["zone"].as_str()), (200, Some("us-east-1-test")));

    // A machine-to-machine token from the tenant, as the platform gets one.
    let token_url = format!("{}oauth/token", env["AUTH0_ISSUER_BASE_URL"].trim_end_matches('/').to_string() + "/");
    let grant = json!({"grant_type": "client_credentials", "client_id": env["AUTH0_CLIENT_ID"],
        "client_secret": env["AUTH0_CLIENT_SECRET"], "audience": env["AUTH0_AUDIENCE"]});
    let (s, t) = call("POST", &token_url, None, &grant.to_string()).await;
    assert_eq!(s, 200, "{t}");
    let token = t["access_token"].as_str().unwrap().to_string();

    let runs = format!("{base}/v1/runs");
    let id = format!("t-api-{}", std::process::id());
    let (s, answer) = call("POST", &runs, Some(&token), &json!({"id": id}).to_string()).await;
    assert_eq!(s, 201, "{answer}");
    assert_eq!(answer["postgres"], "inserted");

    // PostgreSQL: the row, through the writer endpoint.
    let writer = running.postgres().unwrap();
    let rows =
        writer.query_strings(&format!("SELECT subject, zone FROM voyager_runs WHERE id = '{id}'")).await.unwrap();
    assert_eq!(rows.len(), 1, "the run's row");
    assert_eq!(rows[0][1].as_deref(), Some("us-east-1-test"));
    assert!(rows[0][0].as_deref().is_some_and(|s| !s.is_empty()), "the caller's subject");

    // Kafka: the record at the partition and offset the answer named.
    let (partition, offset) =
        (answer["kafka"]["partition"].as_i64().unwrap(), answer["kafka"]["offset"].as_i64().unwrap());
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &env["KAFKA_BOOTSTRAP_SERVERS"])
        .set("group.id", "t-api-check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("runs.status.v1", partition as i32, Offset::Offset(offset)).unwrap();
    consumer.assign(&tpl).unwrap();
    let record = (0..30)
        .find_map(|_| consumer.poll(Duration::from_secs(1)).map(|m| m.unwrap().detach()))
        .expect("the record is there");
    assert_eq!(record.key(), Some(id.as_bytes()));
    let v: Value = serde_json::from_slice(record.payload().unwrap()).unwrap();
    assert_eq!(v["id"], id.as_str());

    // InfluxDB: the telemetry point.
    let influx = running.influxdb().unwrap();
    let q = influx
        .query(
            Some("journal"),
            &format!("SELECT count(\"subject\") FROM \"telemetry\".\"api_requests\" WHERE \"id\" = '{id}'"),
        )
        .await
        .unwrap();
    assert!(q.contains("\"count\"") && q.contains(",1]"), "one point for the run: {q}");

    // S3: the artifact, at the version the answer named.
    let version = answer["s3"]["version_id"].as_str().expect("the bucket is versioned").to_string();
    let obj = request(
        "GET",
        &format!("{}/voyager-jarvis-artifacts/runs/{id}.json?versionId={version}", env["AWS_ENDPOINT_URL"]),
        &[],
        "",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(obj.status, 200, "{}", obj.body);
    assert_eq!(serde_json::from_str::<Value>(&obj.body).unwrap()["id"], id.as_str());

    // The stack's own replicas (one per AZ, in the VPC, started after Vault
    // and ready by their deep check) do the same from inside the VPC.
    let in_b = format!("{id}-in-b");
    let (s, answer) =
        call("POST", &format!("{}/v1/runs", env["VOYAGER_API_B_URL"]), Some(&token), &json!({"id": in_b}).to_string())
            .await;
    assert_eq!(s, 201, "{answer}");
    assert!(answer["zone"].as_str().is_some_and(|z| z.ends_with('b')), "{answer}");
    let rows = writer.query_strings(&format!("SELECT zone FROM voyager_runs WHERE id = '{in_b}'")).await.unwrap();
    assert_eq!(rows.len(), 1, "the replica in b wrote through the writer endpoint");

    // The same id again (a client's retry): answered, not inserted twice.
    let (s, again) = call("POST", &runs, Some(&token), &json!({"id": id}).to_string()).await;
    assert_eq!((s, again["postgres"].as_str()), (201, Some("already there")), "{again}");
    let (s, bad) = call("POST", &runs, Some(&token), &json!({"id": "../etc"}).to_string()).await;
    assert_eq!(s, 400, "{bad}");

    // What a resource server must refuse: minted by the tenant's admin API
    // (signed with its real key), or forged.
    let admin = running.state().credentials.auth0_admin_token.clone();
    let issuer_base = env["AUTH0_ISSUER_BASE_URL"].trim_end_matches('/').to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mint = |over: Value| {
        let mut b = json!({"client_id": env["AUTH0_CLIENT_ID"], "scope": "write:runs"});
        for (k, v) in over.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let mut refused = vec![];
    for (what, over, status) in [
        ("expired beyond the skew", json!({"iat": now - 4000, "exp": now - 301}), 401),
        ("wrong audience", json!({"audience": "someone-else"}), 401),
        ("wrong issuer", json!({"claims": {"iss": "https://evil.example/"}}), 401),
        ("without write:runs", json!({"scope": "read:runs"}), 403),
    ] {
        let (s, t) =
            call("POST", &format!("{issuer_base}/voyager/tokens"), Some(&admin), &mint(over).to_string()).await;
        assert_eq!(s, 200, "minting {what}: {t}");
        refused.push((what, t["access_token"].as_str().unwrap().to_string(), status));
    }
    let (s, t) = call(
        "POST",
        &format!("{issuer_base}/voyager/tokens"),
        Some(&admin),
        &mint(json!({"iat": now - 4000, "exp": now - 200})).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let within_skew = t["access_token"].as_str().unwrap().to_string();
    // HS256 keyed with the tenant's public modulus: the classic confusion.
    let (_, jwks) = call("GET", &env["AUTH0_JWKS_URI"], None, "").await;
    let parts: Vec<&str> = token.split('.').collect();
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: jwks["keys"][0]["kid"].as_str().map(str::to_string),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &serde_json::from_slice::<Value>(&base64_url(parts[1])).unwrap(),
        &jsonwebtoken::EncodingKey::from_secret(jwks["keys"][0]["n"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    refused.push(("HS256 keyed with the public key", hs, 401));
    refused.push((
        "a tampered payload",
        format!("{}.{}.{}", parts[0], b64_url(br#"{"sub":"someone","scope":"write:runs"}"#), parts[2]),
        401,
    ));
    for (what, t, status) in &refused {
        let (s, e) = call("POST", &runs, Some(t), &json!({"id": format!("{id}-refused")}).to_string()).await;
        assert_eq!(s, *status, "{what} must be refused: {e}");
    }
    let (s, e) = call("POST", &runs, None, &json!({"id": "x"}).to_string()).await;
    assert_eq!(s, 401, "no token: {e}");
    let (s, e) = call("POST", &runs, Some(&within_skew), &json!({"id": format!("{id}-skew")}).to_string()).await;
    assert_eq!(s, 201, "expired within the 300 s skew is still accepted: {e}");
    assert!(writer
        .query_strings(&format!("SELECT 1 FROM voyager_runs WHERE id = '{id}-refused'"))
        .await
        .unwrap()
        .is_empty());

    // A dependency that stops answering is named by the deep check, and
    // work is refused as not durable rather than answered.
    let influx_name = running.state().instances.iter().find(|i| i.name.starts_with("influxdb")).unwrap().name.clone();
    running.kill_instance(&influx_name).await.unwrap();
    let (s, doc) = call("GET", &format!("{base}/readyz"), None, "").await;
    assert_eq!(s, 503, "{doc}");
    assert!(doc["checks"]["influxdb"] != "ok" && doc["checks"]["postgres"] == "ok", "{doc}");
    let (s, e) = call("POST", &runs, Some(&token), &json!({"id": format!("{id}-down")}).to_string()).await;
    assert_eq!(s, 503, "{e}");
    assert!(e["failed"]["influxdb"].is_string() && e["failed"].get("postgres").is_none(), "{e}");

    drop(service);
    running.shutdown().await.unwrap();
}

fn b64_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn base64_url(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap()
}
