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

/// `7d`, `12h`, `30m`, `45s`: the units retention is written in.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
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
                "write it like `7d`, `12h`, `30m` or `45s`",
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
