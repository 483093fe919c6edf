//! InfluxDB on its 1.x HTTP API (Debian's 1.6 offline, `influxdb:1.8`
//! upstream) for the Journal service's execution logs and telemetry.
//! Authentication is on; provisioning creates the admin user, the fixture's
//! databases and their retention policies over the same API a client uses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::SpecContext;
use crate::fixtures::InfluxFixture;
use crate::http::{encode, request, request_with, HttpClient};
use crate::images::image_for;
use crate::runtime::network::network_name;
use crate::spec::{ContainerSpec, Publish};
use crate::stack::ServiceKind;
use crate::state::{InstanceState, RunState};

pub const PORT: u16 = 8086;
pub const DATA_DIR: &str = "/var/lib/influxdb";

/// Where InfluxDB is reached from the host. `Debug` hides the password.
#[derive(Clone)]
pub struct InfluxEndpoint {
    pub instance: String,
    pub host: SocketAddr,
    pub vpc: SocketAddr,
    pub user: String,
    pub password: String,
    /// A JWT bearer token for `user`, signed with the server's shared
    /// secret, that writes carry instead of the password (see `write`).
    pub token: Option<String>,
    /// The first database of the fixture: what `env` exports.
    pub database: String,
    /// Keeps connections alive across this endpoint's requests.
    pub client: HttpClient,
}

impl std::fmt::Debug for InfluxEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxEndpoint")
            .field("host", &self.host)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("database", &self.database)
            .finish()
    }
}

impl InfluxEndpoint {
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// The user and password as InfluxDB 1.x takes them in a query string.
    fn password_params(&self) -> String {
        format!("u={}&p={}", encode(&self.user), encode(&self.password))
    }

    /// Run an InfluxQL statement; returns the JSON answer.
    pub async fn query(&self, db: Option<&str>, q: &str) -> Result<String, String> {
        let db = db.map(|d| format!("&db={}", encode(d))).unwrap_or_default();
        let url = format!("{}/query?{}{db}&q={}", self.url(), self.password_params(), encode(q));
        let r = request_with(&self.client, "POST", &url, &[], "", Duration::from_secs(10)).await?;
        // InfluxDB answers 200 with an "error" member for a bad statement.
        if r.status != 200 || r.body.contains("\"error\"") {
            return Err(format!("InfluxDB refused `{q}`: {} {}", r.status, r.body.trim()));
        }
        Ok(r.body)
    }

    /// Run a query whose answer may be large: InfluxDB streams it in chunks,
    /// one JSON document per line.
    pub async fn query_chunked(&self, db: &str, q: &str) -> Result<Vec<String>, String> {
        let url = format!(
            "{}/query?{}&db={}&chunked=true&chunk_size=10000&q={}",
            self.url(),
            self.password_params(),
            encode(db),
            encode(q)
        );
        let r = request_with(&self.client, "POST", &url, &[], "", Duration::from_secs(60)).await?;
        if r.status != 200 || r.body.contains("\"error\"") {
            return Err(format!("InfluxDB refused `{q}`: {} {}", r.status, r.body.trim()));
        }
        Ok(r.body.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect())
    }

    /// Write points in line protocol to `db` (and `rp`, or the default).
    ///
    /// With a token, as a service holding a secret would: InfluxDB 1.x
    /// checks a password against its bcrypt hash on every request until its
    /// cache of checked passwords is warm, and a restart empties that
    /// cache. Writes arriving at 20/s after a restart then each start a
    /// bcrypt (about 40 ms of CPU) before the first one finishes, and on
    /// two contended cores that storm held every write for seconds
    /// (measured: p99 9.7 s 1 s after the restart, still 1.5 s 8 s on),
    /// which is the auth cache's recovery, not the database's. A token is
    /// an HMAC check.
    pub async fn write(&self, db: &str, rp: Option<&str>, lines: &str) -> Result<(), String> {
        let rp = rp.map(|r| format!("&rp={}", encode(r))).unwrap_or_default();
        let (auth, bearer) = match &self.token {
            Some(t) => (String::new(), Some(format!("Bearer {t}"))),
            None => (format!("{}&", self.password_params()), None),
        };
        let url = format!("{}/write?{auth}db={}{rp}", self.url(), encode(db));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
        let r = request_with(&self.client, "POST", &url, &headers, lines, Duration::from_secs(10)).await?;
        if r.status != 204 {
            return Err(format!("write to {db} failed: {} {}", r.status, r.body.trim()));
        }
        Ok(())
    }
}

pub fn specs(cx: &SpecContext) -> Vec<ContainerSpec> {
    let Some(svc) = cx.stack.service(ServiceKind::Influxdb) else { return vec![] };
    svc.instances
        .iter()
        .map(|inst| {
            let az = cx.stack.az(&inst.az).expect("validated");
            let env: BTreeMap<String, String> = [
                ("INFLUXDB_HTTP_AUTH_ENABLED", "true"),
                ("INFLUXDB_HTTP_BIND_ADDRESS", ":8086"),
                ("INFLUXDB_REPORTING_DISABLED", "true"),
                ("INFLUXDB_META_DIR", "/var/lib/influxdb/meta"),
                ("INFLUXDB_DATA_DIR", "/var/lib/influxdb/data"),
                ("INFLUXDB_DATA_WAL_DIR", "/var/lib/influxdb/wal"),
                // Query text can carry credentials; keep it out of the logs.
                ("INFLUXDB_DATA_QUERY_LOG_ENABLED", "false"),
                ("INFLUXDB_HTTP_LOG_ENABLED", "false"),
                ("INFLUXDB_HTTP_SHARED_SECRET", cx.credentials.influxdb_shared_secret.as_str()),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            ContainerSpec {
                instance: inst.name.clone(),
                image: image_for(ServiceKind::Influxdb, cx.images),
                env,
                cmd: vec![],
                network: network_name(cx.stack_name, &az.name, inst.tier),
                address: inst.address,
                published: vec![Publish::any(PORT)],
                volumes: vec![("data".into(), DATA_DIR.into())],
                extra_networks: vec![],
                files: vec![],
                entrypoint: None,
                user: None,
                mounts: vec![],
                ..Default::default()
            }
        })
        .collect()
}

pub fn endpoint(state: &RunState) -> Option<InfluxEndpoint> {
    let inst = state.instances.iter().find(|i| i.service == ServiceKind::Influxdb.as_str())?;
    Some(InfluxEndpoint {
        instance: inst.name.clone(),
        host: *inst.published.get(&PORT)?,
        vpc: SocketAddr::new(inst.address.into(), PORT),
        user: "admin".into(),
        password: state.credentials.influxdb_password.clone(),
        token: Some(&state.credentials.influxdb_shared_secret).filter(|s| !s.is_empty()).map(|secret| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            jwt("admin", secret, now.as_secs() + TOKEN_LIFETIME.as_secs())
        }),
        database: state.credentials.influxdb_database.clone(),
        client: HttpClient::new(),
    })
}

/// How long an endpoint's token is good for: longer than any run.
const TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// An HS256 JWT as InfluxDB 1.x takes it: the `username` it acts as and
/// an `exp` (required) in unix seconds.
pub fn jwt(username: &str, secret: &str, exp: u64) -> String {
    let b64 = crate::state::base64url;
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = b64(serde_json::json!({ "username": username, "exp": exp }).to_string().as_bytes());
    let signed = format!("{header}.{claims}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, signed.as_bytes());
    format!("{signed}.{}", b64(tag.as_ref()))
}

/// `/ping` answers 204 once the HTTP service is up.
pub async fn probe(_state: &RunState, inst: &InstanceState) -> Result<(), String> {
    let addr = inst.published.get(&PORT).ok_or("no published port")?;
    let r = request("GET", &format!("http://{addr}/ping"), &[], "", Duration::from_secs(3)).await?;
    if r.status == 204 {
        Ok(())
    } else {
        Err(format!("/ping answered {}", r.status))
    }
}

/// Create the admin user (allowed without credentials only while there is no
/// user), then the databases and retention policies.
pub async fn provision(state: &RunState, fixture: &InfluxFixture) -> Result<(), String> {
    let ep = endpoint(state).ok_or("no InfluxDB instance")?;
    let anon = InfluxEndpoint { user: String::new(), password: String::new(), token: None, ..ep.clone() };
    let create_admin =
        format!("CREATE USER admin WITH PASSWORD '{}' WITH ALL PRIVILEGES", ep.password.replace('\'', "\\'"));
    if let Err(e) = anon.query(None, &create_admin).await {
        // Provisioning again (a restarted instance keeps its users): the
        // admin must then work with our password.
        ep.query(None, "SHOW USERS").await.map_err(|_| e)?;
    }
    for db in &fixture.databases {
        ep.query(None, &format!("CREATE DATABASE \"{}\"", db.name)).await?;
        for rp in &db.retention_policies {
            let secs = rp.duration.as_secs();
            let default = if rp.default { " DEFAULT" } else { "" };
            let q = format!(
                "CREATE RETENTION POLICY \"{}\" ON \"{}\" DURATION {secs}s REPLICATION 1{default}",
                rp.name, db.name
            );
            if ep.query(None, &q).await.is_err() {
                // Already there (a re-provisioned instance): make it match.
                ep.query(None, &q.replacen("CREATE", "ALTER", 1)).await?;
            }
        }
    }
    Ok(())
}

pub fn env(state: &RunState) -> Vec<(String, String)> {
    let Some(ep) = endpoint(state) else { return vec![] };
    vec![
        ("INFLUXDB_URL".into(), ep.url()),
        ("INFLUXDB_DATABASE".into(), ep.database.clone()),
        ("INFLUXDB_USERNAME".into(), ep.user.clone()),
        ("INFLUXDB_PASSWORD".into(), ep.password.clone()),
    ]
}

/// The service's contract with the harness (see [`super::Service`]).
pub struct Influxdb;

#[async_trait::async_trait]
impl super::Service for Influxdb {
    fn specs(&self, cx: &SpecContext) -> Vec<ContainerSpec> {
        specs(cx)
    }
    async fn probe(&self, cx: &super::ProbeContext<'_>, inst: &InstanceState) -> Result<(), String> {
        probe(cx.state, inst).await
    }
    async fn provision(&self, cx: &super::ProvisionContext<'_>) -> Result<(), String> {
        provision(cx.state, &cx.fixtures.influxdb).await
    }
    fn env(&self, state: &RunState) -> Vec<(String, String)> {
        env(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::images::ImageSet;
    use crate::state::Credentials;

    #[test]
    fn tokens_are_hs256_jwts_with_influxdbs_claims() {
        // The expected token was made by Python's hmac and base64 modules.
        assert_eq!(
            jwt("admin", "not-a-secret", 2_000_000_000),
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjIwMDAwMDAwMDAsInVzZXJuYW1lIjoiYWRtaW4ifQ.\
             7nyAg2c4N56OmMKbnhFJ9ONmUTZEI_ZVmfkR9AZtHTI"
        );
    }

    fn spec_for(set: ImageSet) -> ContainerSpec {
        let stack = crate::harness::builtin_stack();
        let creds = Credentials::generate();
        let (ports, fx) = (Default::default(), fixtures::builtin());
        let cx = SpecContext {
            stack: &stack,
            stack_name: "voyager",
            images: set,
            credentials: &creds,
            host_ports: &ports,
            fixtures: &fx,
            companions: &BTreeMap::new(),
        };
        let mut v = specs(&cx);
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    #[test]
    fn influxdb_sits_in_az_a_with_auth_on_and_query_logs_off() {
        let s = spec_for(ImageSet::Offline);
        assert_eq!(
            (s.instance.as_str(), s.network.as_str(), s.address.to_string()),
            ("influxdb-a", "vs-voyager-a-private", "10.0.1.30".to_string())
        );
        assert_eq!(s.env["INFLUXDB_HTTP_AUTH_ENABLED"], "true");
        assert_eq!(s.env["INFLUXDB_DATA_QUERY_LOG_ENABLED"], "false");
        assert_eq!(s.published, vec![Publish::any(8086)]);
    }

    #[test]
    fn both_image_sets_give_the_same_container_but_the_image() {
        let (off, up) = (spec_for(ImageSet::Offline), spec_for(ImageSet::Upstream));
        assert_eq!(up.image, crate::images::UPSTREAM_INFLUXDB);
        assert!(off.image.starts_with("voyager-sim/influxdb:"));
        // Each spec was made with its own generated secret.
        let same = |mut s: ContainerSpec| {
            assert_eq!(s.env.remove("INFLUXDB_HTTP_SHARED_SECRET").map(|v| v.len()), Some(24));
            ContainerSpec { image: String::new(), ..s }
        };
        assert_eq!(same(off), same(up));
    }
}
