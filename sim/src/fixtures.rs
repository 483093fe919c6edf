//! Data the services are provisioned with (Kafka topics and cluster
//! settings, ...), parsed from `fixtures/*.toml` with the same positioned
//! errors as stack files. **No I/O**: callers hand in the text.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::stack::parse::{from_toml, Collector, Lines};
use crate::stack::StackError;

pub const BUILTIN_KAFKA: &str = include_str!("../../fixtures/kafka.toml");
pub const BUILTIN_INFLUXDB: &str = include_str!("../../fixtures/influxdb.toml");

/// Everything services are provisioned with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixtures {
    pub kafka: KafkaFixture,
    pub influxdb: InfluxFixture,
    /// The Auth0 tenant, as text: the mock parses (and checks) it itself.
    pub auth0: String,
    /// Vault's provisioning, as text: `vault_lite::Fixture` parses it.
    pub vault: String,
    pub s3: S3Fixture,
}

pub const BUILTIN_AUTH0: &str = include_str!("../../fixtures/auth0.toml");
pub const BUILTIN_VAULT: &str = include_str!("../../fixtures/vault.toml");

pub fn builtin() -> Fixtures {
    Fixtures {
        kafka: builtin_kafka(),
        influxdb: builtin_influxdb(),
        auth0: BUILTIN_AUTH0.to_string(),
        vault: BUILTIN_VAULT.to_string(),
        s3: builtin_s3(),
    }
}

/// InfluxDB databases and their retention policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfluxFixture {
    pub databases: Vec<InfluxDatabase>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfluxDatabase {
    pub name: String,
    pub retention_policies: Vec<RetentionPolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub name: String,
    pub duration: Duration,
    pub default: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInflux {
    database: Vec<RawDatabase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    name: Spanned<String>,
    #[serde(default)]
    retention_policy: Vec<RawPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: Spanned<String>,
    duration: Spanned<String>,
    #[serde(default)]
    default: bool,
}

fn valid_influx_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some('a'..='z' | 'A'..='Z' | '_')) && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

pub fn parse_influxdb(file: &Path, text: &str) -> Result<InfluxFixture, StackError> {
    let raw: RawInflux = from_toml(file, text)?;
    let mut c = Collector { lines: Lines { text }, problems: vec![] };
    let mut databases: Vec<InfluxDatabase> = vec![];
    for db in raw.database {
        let name = db.name.get_ref().clone();
        if !valid_influx_name(&name) {
            c.push(
                db.name.span(),
                format!("`{name}` is not a usable database name"),
                "use letters, digits and `_`, starting with a letter",
            );
            continue;
        }
        if databases.iter().any(|d| d.name == name) {
            c.push(db.name.span(), format!("database `{name}` is declared twice"), "remove one of them");
            continue;
        }
        let mut rps: Vec<RetentionPolicy> = vec![];
        for rp in db.retention_policy {
            let rp_name = rp.name.get_ref().clone();
            if !valid_influx_name(&rp_name) || rps.iter().any(|r| r.name == rp_name) {
                c.push(
                    rp.name.span(),
                    format!("retention policy `{rp_name}` is invalid or declared twice"),
                    "use a unique name of letters, digits and `_`",
                );
                continue;
            }
            let Some(duration) = parse_duration(rp.duration.get_ref()) else {
                c.push(
                    rp.duration.span(),
                    format!("`{}` is not a duration", rp.duration.get_ref()),
                    "write it like `30d`, `12h` or `90m`",
                );
                continue;
            };
            if duration < Duration::from_secs(3600) {
                c.push(rp.duration.span(), "InfluxDB refuses retention shorter than one hour", "use `1h` or more");
                continue;
            }
            rps.push(RetentionPolicy { name: rp_name, duration, default: rp.default });
        }
        if rps.iter().filter(|r| r.default).count() > 1 {
            c.push(
                db.name.span(),
                format!("database `{name}` has more than one default retention policy"),
                "mark exactly one `default = true`",
            );
        }
        databases.push(InfluxDatabase { name, retention_policies: rps });
    }
    if !c.problems.is_empty() {
        return Err(StackError { file: file.to_path_buf(), problems: c.problems });
    }
    Ok(InfluxFixture { databases })
}

pub fn builtin_influxdb() -> InfluxFixture {
    parse_influxdb(Path::new("<built-in fixtures/influxdb.toml>"), BUILTIN_INFLUXDB)
        .expect("the built-in InfluxDB fixture is valid")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaFixture {
    pub default_replication_factor: u16,
    pub min_insync_replicas: u16,
    pub unclean_leader_election: bool,
    pub topics: Vec<Topic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    pub retention: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    cluster: RawCluster,
    #[serde(default)]
    topic: Vec<RawTopic>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    default_replication_factor: Spanned<u16>,
    min_insync_replicas: Spanned<u16>,
    unclean_leader_election: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopic {
    name: Spanned<String>,
    partitions: Spanned<u32>,
    replication_factor: Spanned<u16>,
    retention: Spanned<String>,
}

/// `7d`, `12h`, `30m`, `45s`, `500ms`: the units durations are written in.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86_400),
        _ => return None,
    })
}

fn valid_topic_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 249
        && s != "."
        && s != ".."
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

pub fn parse_kafka(file: &Path, text: &str) -> Result<KafkaFixture, StackError> {
    let raw: RawKafka = from_toml(file, text)?;
    let mut c = Collector { lines: Lines { text }, problems: vec![] };
    let rf = *raw.cluster.default_replication_factor.get_ref();
    let isr = *raw.cluster.min_insync_replicas.get_ref();
    if rf == 0 {
        c.push(
            raw.cluster.default_replication_factor.span(),
            "replication factor 0",
            "use 1 or more (production uses 3)",
        );
    }
    if isr == 0 || isr > rf {
        c.push(
            raw.cluster.min_insync_replicas.span(),
            format!("min_insync_replicas {isr} is impossible with replication factor {rf}"),
            "use a value from 1 to the replication factor (production: 2 of 3)",
        );
    }
    let mut topics: Vec<Topic> = vec![];
    for t in raw.topic {
        let name = t.name.get_ref().clone();
        if !valid_topic_name(&name) {
            c.push(
                t.name.span(),
                format!("`{name}` is not a legal Kafka topic name"),
                "use letters, digits, `.`, `_` and `-`",
            );
            continue;
        }
        if topics.iter().any(|o| o.name == name) {
            c.push(t.name.span(), format!("topic `{name}` is declared twice"), "remove one of them");
            continue;
        }
        if *t.partitions.get_ref() == 0 {
            c.push(t.partitions.span(), "a topic needs at least one partition", "use 1 or more");
            continue;
        }
        let topic_rf = *t.replication_factor.get_ref();
        if topic_rf == 0 || topic_rf < isr {
            c.push(
                t.replication_factor.span(),
                format!("replication factor {topic_rf} is below min_insync_replicas {isr}: no acks=all write could ever succeed"),
                format!("use at least {isr}"),
            );
            continue;
        }
        let Some(retention) = parse_duration(t.retention.get_ref()) else {
            c.push(
                t.retention.span(),
                format!("`{}` is not a duration", t.retention.get_ref()),
                "write it like `7d`, `12h`, `30m`, `45s` or `500ms`",
            );
            continue;
        };
        topics.push(Topic { name, partitions: *t.partitions.get_ref(), replication_factor: topic_rf, retention });
    }
    if !c.problems.is_empty() {
        return Err(StackError { file: file.to_path_buf(), problems: c.problems });
    }
    Ok(KafkaFixture {
        default_replication_factor: rf,
        min_insync_replicas: isr,
        unclean_leader_election: raw.cluster.unclean_leader_election,
        topics,
    })
}

pub fn builtin_kafka() -> KafkaFixture {
    parse_kafka(Path::new("<built-in fixtures/kafka.toml>"), BUILTIN_KAFKA)
        .expect("the built-in Kafka fixture is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_fixture_is_the_seeds_cluster() {
        let k = builtin_kafka();
        assert_eq!((k.default_replication_factor, k.min_insync_replicas, k.unclean_leader_election), (3, 2, false));
        let t: Vec<(&str, u32, u16, u64)> = k
            .topics
            .iter()
            .map(|t| (t.name.as_str(), t.partitions, t.replication_factor, t.retention.as_secs() / 86_400))
            .collect();
        assert_eq!(t, [("spy_control", 12, 3, 7), ("runs.status.v1", 6, 3, 30), ("journal.events", 24, 3, 90)]);
    }

    #[test]
    fn the_builtin_influxdb_fixture_has_the_journal_database() {
        let f = builtin_influxdb();
        assert_eq!(f.databases.len(), 1);
        let db = &f.databases[0];
        assert_eq!(db.name, "journal");
        let rps: Vec<(&str, u64, bool)> =
            db.retention_policies.iter().map(|r| (r.name.as_str(), r.duration.as_secs() / 86_400, r.default)).collect();
        assert_eq!(rps, [("execution_logs", 30, true), ("telemetry", 7, false), ("telemetry_archive", 90, false)]);
    }

    #[test]
    fn two_default_retention_policies_are_refused() {
        let text = "[[database]]\nname = \"j\"\n[[database.retention_policy]]\nname = \"a\"\nduration = \"1d\"\ndefault = true\n[[database.retention_policy]]\nname = \"b\"\nduration = \"2d\"\ndefault = true\n";
        let err = parse_influxdb(Path::new("i.toml"), text).unwrap_err();
        assert!(err.to_string().contains("more than one default retention policy"), "{err}");
    }

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("45s"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("7 days"), None);
        assert_eq!(parse_duration("d"), None);
    }

    #[test]
    fn impossible_settings_are_reported_where_they_are_written() {
        let text = "[cluster]\ndefault_replication_factor = 3\nmin_insync_replicas = 2\nunclean_leader_election = false\n\n[[topic]]\nname = \"t\"\npartitions = 3\nreplication_factor = 1\nretention = \"1w\"\n";
        let err = parse_kafka(Path::new("k.toml"), text).unwrap_err();
        let p = &err.problems[0];
        assert_eq!((p.line, p.col), (9, 22));
        assert!(p.message.contains("below min_insync_replicas 2"), "{}", p.message);
    }
}

/// S3 buckets with their versioning and lifecycle rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Fixture {
    pub region: String,
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub name: String,
    pub versioning: bool,
    pub lifecycle: Vec<LifecycleRule>,
    /// The bucket RDS's automated backups and archived WAL go to.
    pub database_backups: bool,
}

/// One S3 lifecycle rule; every action is optional, at least one is set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleRule {
    pub id: String,
    #[serde(default)]
    pub prefix: String,
    pub transition_days: Option<u32>,
    pub storage_class: Option<String>,
    pub expire_days: Option<u32>,
    pub noncurrent_expire_days: Option<u32>,
    pub abort_multipart_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    region: String,
    #[serde(default)]
    bucket: Vec<Spanned<RawBucket>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBucket {
    name: Spanned<String>,
    #[serde(default)]
    versioning: bool,
    #[serde(default)]
    lifecycle: Vec<Spanned<LifecycleRule>>,
    #[serde(default)]
    database_backups: Option<Spanned<bool>>,
}

const STORAGE_CLASSES: &[&str] =
    &["STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER", "GLACIER_IR", "DEEP_ARCHIVE"];

/// S3's bucket naming rules (the common subset: 3–63 characters of
/// lowercase letters, digits, `-` and `.`, starting and ending alphanumeric).
fn valid_bucket_name(s: &str) -> bool {
    (3..=63).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

pub fn parse_s3(file: &Path, text: &str) -> Result<S3Fixture, StackError> {
    let raw: RawS3 = from_toml(file, text)?;
    let mut c = Collector { lines: Lines { text }, problems: vec![] };
    let mut buckets = vec![];
    let mut backups_bucket: Option<String> = None;
    for b in &raw.bucket {
        let b = b.get_ref();
        if let Some(flag) = b.database_backups.as_ref().filter(|f| *f.get_ref()) {
            if let Some(first) = &backups_bucket {
                c.push(
                    flag.span(),
                    format!("`{}` and `{first}` both say database_backups", b.name.get_ref()),
                    "one bucket holds the database backups: keep database_backups = true on one of them",
                );
            }
            backups_bucket.get_or_insert_with(|| b.name.get_ref().clone());
        }
        if !valid_bucket_name(b.name.get_ref()) {
            c.push(
                b.name.span(),
                format!("`{}` is not a valid S3 bucket name", b.name.get_ref()),
                "use 3 to 63 lowercase letters, digits, `-` or `.`, starting and ending with a letter or digit",
            );
        }
        for r in &b.lifecycle {
            let rule = r.get_ref();
            let acts = [rule.transition_days, rule.expire_days, rule.noncurrent_expire_days, rule.abort_multipart_days];
            if acts.iter().all(Option::is_none) {
                c.push(
                    r.span(),
                    format!("lifecycle rule `{}` does nothing", rule.id),
                    "set transition_days, expire_days, noncurrent_expire_days or abort_multipart_days",
                );
            }
            if rule.transition_days.is_some() != rule.storage_class.is_some() {
                c.push(
                    r.span(),
                    format!("lifecycle rule `{}`: a transition needs both transition_days and storage_class", rule.id),
                    "set both, or neither",
                );
            }
            if let Some(sc) = &rule.storage_class {
                if !STORAGE_CLASSES.contains(&sc.as_str()) {
                    c.push(
                        r.span(),
                        format!("unknown storage class `{sc}`"),
                        format!("use one of {}", STORAGE_CLASSES.join(", ")),
                    );
                }
            }
            if rule.noncurrent_expire_days.is_some() && !b.versioning {
                c.push(
                    r.span(),
                    format!("lifecycle rule `{}` expires noncurrent versions of an unversioned bucket", rule.id),
                    "turn on `versioning`, or drop noncurrent_expire_days",
                );
            }
        }
        buckets.push(Bucket {
            name: b.name.get_ref().clone(),
            versioning: b.versioning,
            lifecycle: b.lifecycle.iter().map(|r| r.get_ref().clone()).collect(),
            database_backups: b.database_backups.as_ref().is_some_and(|f| *f.get_ref()),
        });
    }
    if !c.problems.is_empty() {
        return Err(StackError { file: file.to_path_buf(), problems: c.problems });
    }
    Ok(S3Fixture { region: raw.region, buckets })
}

pub const BUILTIN_S3: &str = include_str!("../../fixtures/s3.toml");

impl S3Fixture {
    /// The bucket marked `database_backups`, if one is.
    pub fn backups_bucket(&self) -> Option<&str> {
        self.buckets.iter().find(|b| b.database_backups).map(|b| b.name.as_str())
    }
}

pub fn builtin_s3() -> S3Fixture {
    parse_s3(Path::new("<built-in fixtures/s3.toml>"), BUILTIN_S3).expect("the built-in S3 fixture is valid")
}

#[cfg(test)]
mod s3_tests {
    use super::*;

    #[test]
    fn the_builtin_buckets_are_the_seeds_three() {
        let f = builtin_s3();
        let names: Vec<&str> = f.buckets.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["voyager-jarvis-artifacts", "voyager-db-backups", "voyager-static-assets"]);
        assert!(f.buckets[0].versioning && !f.buckets[2].versioning);
        assert_eq!(f.backups_bucket(), Some("voyager-db-backups"));
    }

    #[test]
    fn only_one_bucket_holds_the_database_backups() {
        let b = |n: &str| format!("[[bucket]]\nname = \"{n}\"\ndatabase_backups = true\n");
        let text = format!("region = \"us-east-1\"\n{}{}", b("one-b"), b("two-b"));
        let err = parse_s3(Path::new("s3.toml"), &text).unwrap_err().to_string();
        assert!(err.contains("s3.toml:7:20: `two-b` and `one-b` both say database_backups"), "{err}");
    }

    #[test]
    fn bucket_mistakes_are_reported_with_their_line() {
        let text = "region = \"us-east-1\"\n[[bucket]]\nname = \"Bad_Name\"\n[[bucket.lifecycle]]\nid = \"x\"\nnoncurrent_expire_days = 3\n";
        let err = parse_s3(Path::new("s3.toml"), text).unwrap_err().to_string();
        assert!(err.contains("s3.toml:3:8: `Bad_Name` is not a valid S3 bucket name"), "{err}");
        assert!(err.contains("expires noncurrent versions of an unversioned bucket"), "{err}");
    }
}
