//! InfluxDB on its 1.x HTTP API, against a real server: points written in
//! line protocol come back, the fixture's retention policies exist, and
//! requests without the right credentials are refused.

use std::time::Duration;

use voyager_sim::http::request;
use voyager_sim::ServiceKind;

mod common;

#[tokio::test(flavor = "multi_thread")]
async fn influxdb_stores_points_under_the_fixtures_retention_policies() {
    let running = common::start("t-influx", 212, &[ServiceKind::Influxdb]).await;
    let db = running.influxdb().unwrap();
    assert_eq!(db.database, "journal");
    let env = running.env();
    for key in ["INFLUXDB_URL", "INFLUXDB_DATABASE", "INFLUXDB_USERNAME", "INFLUXDB_PASSWORD"] {
        assert!(env.iter().any(|(k, _)| k == key), "env lacks {key}");
    }

    let rps = db.query(Some("journal"), "SHOW RETENTION POLICIES ON journal").await.unwrap();
    for (name, duration, default) in [
        ("execution_logs", "720h0m0s", true),
        ("telemetry", "168h0m0s", false),
        ("telemetry_archive", "2160h0m0s", false),
    ] {
        let row = format!("[\"{name}\",\"{duration}\",\"24h0m0s\",1,{default}]");
        assert!(rps.contains(&row), "missing {row} in {rps}");
    }

    // Execution logs go to the default policy, telemetry to its own.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let lines = format!(
        "execution_log,run=r1,level=info msg=\"started\" {}\nexecution_log,run=r1,level=info msg=\"done\" {now}",
        now - 1_000_000_000
    );
    db.write("journal", None, &lines).await.unwrap();
    db.write("journal", Some("telemetry"), &format!("cpu,host=runner-a value=0.5 {now}")).await.unwrap();
    let logs = db.query(Some("journal"), "SELECT count(msg) FROM execution_log WHERE run = 'r1'").await.unwrap();
    assert!(logs.contains(",2]"), "{logs}");
    let tel = db.query(Some("journal"), "SELECT value FROM telemetry.cpu").await.unwrap();
    assert!(tel.contains("0.5"), "{tel}");
    let not_default = db.query(Some("journal"), "SELECT value FROM cpu").await.unwrap();
    assert!(!not_default.contains("0.5"), "telemetry leaked into the default policy: {not_default}");

    // Retention is enforced: a point 40 days old is beyond execution_logs' 30 d.
    let old = now - 40 * 86_400 * 1_000_000_000;
    let err = db.write("journal", None, &format!("execution_log,run=r0 msg=\"ancient\" {old}")).await.unwrap_err();
    assert!(err.contains("points beyond retention policy dropped=1"), "{err}");

    // No credentials, or wrong ones: refused, as the server is configured.
    let anon = request("GET", &format!("{}/query?q=SHOW%20DATABASES", db.url()), &[], "", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(anon.status, 401, "{}", anon.body);
    let wrong = request(
        "GET",
        &format!("{}/query?u=admin&p=nope&q=SHOW%20DATABASES", db.url()),
        &[],
        "",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(wrong.status, 401, "{}", wrong.body);

    // Writes carry a JWT (the write above went with one); a token signed
    // with another secret, or expired, is refused.
    assert!(db.token.is_some(), "the endpoint writes with a token");
    let write = |token: String| {
        let url = format!("{}/write?db=journal", db.url());
        async move {
            let auth = format!("Bearer {token}");
            request("POST", &url, &[("Authorization", auth.as_str())], "cpu value=1", Duration::from_secs(5))
                .await
                .unwrap()
                .status
        }
    };
    let far = 4_000_000_000;
    assert_eq!(write(voyager_sim::services::influxdb::jwt("admin", "another-secret", far)).await, 401);
    let secret = &running.state().credentials.influxdb_shared_secret;
    assert_eq!(write(voyager_sim::services::influxdb::jwt("admin", secret, 1_000_000_000)).await, 401, "expired");
    assert_eq!(write(voyager_sim::services::influxdb::jwt("admin", secret, far)).await, 204);

    running.shutdown().await.unwrap();
}
