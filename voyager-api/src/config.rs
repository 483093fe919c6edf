//! The service's settings, read from the environment the way an
//! application's are. The names are the ones `voyager-sim env` exports, so
//! `eval "$(voyager-sim env)" && voyager-api` runs it on a laptop against a
//! running stack, and the stack sets the same names (with VPC addresses)
//! for its own replicas.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The issuer (`iss`) tokens must carry, with its trailing slash.
    pub issuer: String,
    pub audience: String,
    pub jwks_uri: String,
    /// Auth0's default clock skew for resource servers.
    pub leeway: Duration,
    pub vault_addr: String,
    pub vault_token: String,
    /// The Vault database role whose credentials the service logs in with.
    pub db_role: String,
    /// The writer endpoint: `host:port`.
    pub pg_host: String,
    pub pg_port: u16,
    pub pg_database: String,
    pub kafka_bootstrap: String,
    /// librdkafka's `debug` contexts (e.g. `eos`), logged with its warnings.
    pub kafka_debug: String,
    pub topic: String,
    pub influx_url: String,
    pub influx_database: String,
    pub influx_user: String,
    pub influx_password: String,
    /// Where telemetry goes: the fixture's short retention policy.
    pub influx_retention_policy: String,
    pub s3_endpoint: String,
    pub s3_region: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
    pub bucket: String,
    /// Which AZ this replica runs in, reported in every answer.
    pub zone: String,
}

impl std::fmt::Debug for Config {
    // Tokens and passwords stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("vault_addr", &self.vault_addr)
            .field("pg", &format_args!("{}:{}/{}", self.pg_host, self.pg_port, self.pg_database))
            .field("kafka_bootstrap", &self.kafka_bootstrap)
            .field("influx_url", &self.influx_url)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("zone", &self.zone)
            .finish_non_exhaustive()
    }
}

/// Every setting: its variable, what it is for, and its default if it has one.
const SETTINGS: &[(&str, &str, Option<&str>)] = &[
    ("VOYAGER_API_LISTEN", "address to listen on", Some("127.0.0.1:8080")),
    ("AUTH0_ISSUER", "the tenant's issuer, as tokens carry it", None),
    ("AUTH0_AUDIENCE", "the API identifier tokens must be issued for", None),
    ("AUTH0_JWKS_URI", "where the tenant's signing keys are published", None),
    ("AUTH0_CLOCK_SKEW", "seconds of leeway on exp and nbf", Some("300")),
    ("VAULT_ADDR", "Vault's address", None),
    ("VAULT_TOKEN", "a Vault token allowed to read database credentials", None),
    ("VOYAGER_API_DB_ROLE", "Vault's database role", Some("voyager-app")),
    ("PGHOST", "the database writer endpoint's host", None),
    ("PGPORT", "the database writer endpoint's port", Some("5432")),
    ("PGDATABASE", "the database", None),
    ("KAFKA_BOOTSTRAP_SERVERS", "Kafka's bootstrap brokers", None),
    ("VOYAGER_API_KAFKA_DEBUG", "librdkafka debug contexts to log, e.g. `eos` or `broker,msg`", Some("")),
    ("VOYAGER_API_TOPIC", "the topic run updates are published to", Some("runs.status.v1")),
    ("INFLUXDB_URL", "InfluxDB's URL", None),
    ("INFLUXDB_DATABASE", "InfluxDB's database", None),
    ("INFLUXDB_USERNAME", "InfluxDB's user", None),
    ("INFLUXDB_PASSWORD", "InfluxDB's password", None),
    ("VOYAGER_API_RETENTION_POLICY", "InfluxDB's retention policy for telemetry", Some("telemetry")),
    ("AWS_ENDPOINT_URL", "S3's endpoint", None),
    ("AWS_REGION", "S3's region", Some("us-east-1")),
    ("AWS_ACCESS_KEY_ID", "S3's access key", None),
    ("AWS_SECRET_ACCESS_KEY", "S3's secret key", None),
    ("VOYAGER_API_BUCKET", "the bucket artifacts are stored in", Some("voyager-jarvis-artifacts")),
    ("VOYAGER_API_ZONE", "the availability zone this replica runs in", Some("local")),
    // A pod of a Deployment cannot be told its zone by its spec (the zone
    // is its node's label), so it is told its node and where every node
    // is, as an EC2 instance would ask its metadata service.
    ("VOYAGER_API_NODE", "the node this replica runs on (a pod's spec.nodeName)", Some("")),
    ("VOYAGER_API_NODE_ZONES", "each node's zone, `node=zone,...`, used when VOYAGER_API_ZONE is unset", Some("")),
];

/// The zone of `node` in a `node=zone,...` list.
fn zone_of(node: &str, zones: &str) -> Option<String> {
    zones
        .split(',')
        .filter_map(|p| p.split_once('='))
        .find(|(n, _)| n.trim() == node)
        .map(|(_, z)| z.trim().to_string())
}

impl Config {
    /// Read every setting through `get`; a missing or malformed one is an
    /// error naming it, what it is for, and how to set it — all of them at
    /// once, so one try shows everything to fix.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let mut problems = vec![];
        let value = |name: &str| -> String {
            let (_, _, default) = SETTINGS.iter().find(|s| s.0 == name).expect("a known setting");
            get(name).filter(|v| !v.is_empty()).or(default.map(str::to_string)).unwrap_or_default()
        };
        for (name, what, default) in SETTINGS {
            if default.is_none() && get(name).filter(|v| !v.is_empty()).is_none() {
                problems.push(format!("{name} is not set ({what})"));
            }
        }
        let listen = value("VOYAGER_API_LISTEN").parse().unwrap_or_else(|_| {
            problems.push(format!(
                "VOYAGER_API_LISTEN={:?} is not an address such as 0.0.0.0:8080",
                value("VOYAGER_API_LISTEN")
            ));
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let pg_port = value("PGPORT").parse().unwrap_or_else(|_| {
            problems.push(format!("PGPORT={:?} is not a port number", value("PGPORT")));
            5432
        });
        let skew: u64 = value("AUTH0_CLOCK_SKEW").parse().unwrap_or_else(|_| {
            problems.push(format!("AUTH0_CLOCK_SKEW={:?} is not a number of seconds", value("AUTH0_CLOCK_SKEW")));
            300
        });
        if !problems.is_empty() {
            return Err(format!(
                "voyager-api cannot start:\n  {}\n(`eval \"$(voyager-sim env)\"` sets all of these for a running stack)",
                problems.join("\n  ")
            ));
        }
        Ok(Config {
            listen,
            issuer: value("AUTH0_ISSUER"),
            audience: value("AUTH0_AUDIENCE"),
            jwks_uri: value("AUTH0_JWKS_URI"),
            leeway: Duration::from_secs(skew),
            vault_addr: value("VAULT_ADDR"),
            vault_token: value("VAULT_TOKEN"),
            db_role: value("VOYAGER_API_DB_ROLE"),
            pg_host: value("PGHOST"),
            pg_port,
            pg_database: value("PGDATABASE"),
            kafka_bootstrap: value("KAFKA_BOOTSTRAP_SERVERS"),
            kafka_debug: value("VOYAGER_API_KAFKA_DEBUG"),
            topic: value("VOYAGER_API_TOPIC"),
            influx_url: value("INFLUXDB_URL").trim_end_matches('/').to_string(),
            influx_database: value("INFLUXDB_DATABASE"),
            influx_user: value("INFLUXDB_USERNAME"),
            influx_password: value("INFLUXDB_PASSWORD"),
            influx_retention_policy: value("VOYAGER_API_RETENTION_POLICY"),
            s3_endpoint: value("AWS_ENDPOINT_URL").trim_end_matches('/').to_string(),
            s3_region: value("AWS_REGION"),
            s3_access_key: value("AWS_ACCESS_KEY_ID"),
            s3_secret_key: value("AWS_SECRET_ACCESS_KEY"),
            bucket: value("VOYAGER_API_BUCKET"),
            zone: get("VOYAGER_API_ZONE")
                .filter(|z| !z.is_empty())
                .or_else(|| zone_of(&value("VOYAGER_API_NODE"), &value("VOYAGER_API_NODE_ZONES")))
                .unwrap_or_else(|| value("VOYAGER_API_ZONE")),
        })
    }

    pub fn from_env() -> Result<Config, String> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn full() -> HashMap<&'static str, &'static str> {
        SETTINGS.iter().map(|(n, _, d)| (*n, d.unwrap_or("sentinel-value"))).collect()
    }

    #[test]
    fn every_missing_setting_is_named_at_once() {
        let mut env = full();
        env.remove("VAULT_TOKEN");
        env.remove("PGHOST");
        env.insert("PGPORT", "fifty");
        let e = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err();
        assert!(e.contains("VAULT_TOKEN is not set") && e.contains("PGHOST is not set"), "{e}");
        assert!(e.contains("PGPORT=\"fifty\""), "{e}");
        assert!(!e.contains("sentinel-value"), "no value is echoed back but the malformed one: {e}");
    }

    #[test]
    fn defaults_fill_what_is_optional_and_secrets_stay_out_of_debug() {
        let mut env: HashMap<&str, &str> = SETTINGS.iter().filter(|s| s.2.is_none()).map(|s| (s.0, "v")).collect();
        env.insert("VAULT_TOKEN", "hvs.secret-token");
        let c = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!((c.pg_port, c.leeway, c.topic.as_str()), (5432, Duration::from_secs(300), "runs.status.v1"));
        assert!(!format!("{c:?}").contains("hvs.secret-token"));
    }

    #[test]
    fn a_pod_finds_its_zone_by_its_node() {
        let mut env: HashMap<&str, &str> = SETTINGS.iter().filter(|s| s.2.is_none()).map(|s| (s.0, "v")).collect();
        env.insert("VOYAGER_API_NODE", "kube-b");
        env.insert("VOYAGER_API_NODE_ZONES", "kube-a=us-east-1a, kube-b=us-east-1b");
        let c = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.zone, "us-east-1b");
        env.insert("VOYAGER_API_ZONE", "us-east-1c");
        assert_eq!(Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap().zone, "us-east-1c");
        env.remove("VOYAGER_API_ZONE");
        env.insert("VOYAGER_API_NODE", "elsewhere");
        assert_eq!(Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap().zone, "local");
    }
}
