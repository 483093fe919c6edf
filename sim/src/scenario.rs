//! Scenario files: load (an open-model arrival rate per operation), faults at
//! given times with optional heal times, and the expectations that make a
//! run fail. Parsed with positioned errors like stack files. **No I/O.**
//!
//! ```toml
//! name = "az-loss"
//! seed = 7
//! duration = "150s"
//! [load]
//! ramp = "5s"
//! rate = { kafka_produce = 40, postgres_insert = 20, influx_write = 20 }
//! [[fault]]
//! at = "30s"
//! heal_at = "90s"
//! kind = "az-outage"
//! target = "b"
//! [expect]
//! lost_acknowledged = 0
//! recovery = { kafka = "30s", postgres = "30s" }
//! error_rate = { after = 0.01 }
//! duplicated = 0                        # every operation, or per operation:
//! ambiguous = { kafka_produce = 20 }    # { OP = N, ... }
//! ```
//!
//! Link faults (`partition`, `latency`, `jitter`, `loss`, `bandwidth`) take
//! `from`, `to`, `both_ways` and their parameter (`delay`/`jitter`, `loss`,
//! `rate`); scenarios/README.md lists every kind's keys.
//!
//! `kind = "accident"` is a destructive statement through the writer (every
//! row the run's load inserted, deleted, as a `DELETE` without its `WHERE`
//! would); after the load the run restores PostgreSQL from its backups to
//! just before it and checks the restored instance write by write.
//! `[expect] restore = { rto = "1h", rpo = "15m" }` bounds the restore.
//!
//! On a stack with Kubernetes, `[kubernetes]` deploys workloads for the run
//! (a Deployment spread over the zones, a StatefulSet with a zonal volume)
//! and `[expect.kubernetes]` bounds what Kubernetes does with them after an
//! AZ is lost, as slack over the stack's own node-lifecycle timers:
//!
//! ```toml
//! [kubernetes]
//! deployment_replicas = 3
//! statefulset_replicas = 1
//! [expect.kubernetes]
//! not_ready_slack = "20s"      # NotReady within the grace period + this
//! eviction_slack = "30s"       # evicted within grace + toleration + this
//! rescheduled_within = "60s"   # every replica Ready again this long after eviction
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::fault::{Fault, OutageMode, Side};
use crate::fixtures::parse_duration;
use crate::ledger::Op;
use crate::stack::parse::{from_toml, Collector, Lines};
use crate::stack::{Stack, StackError};

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Seeds the arrival times; printed in the report so a run can be replayed.
    pub seed: u64,
    pub duration: Duration,
    pub ramp: Duration,
    /// Operations per second, per operation.
    pub rates: BTreeMap<Op, f64>,
    pub faults: Vec<TimedFault>,
    /// Workloads deployed on the stack's cluster for the run.
    pub kubernetes: Option<KubeWorkloads>,
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeWorkloads {
    /// A Deployment spread over the zones (topology spread, one pod per zone).
    pub deployment_replicas: u32,
    /// A StatefulSet whose pods each hold a `gp3` volume bound to its zone.
    pub statefulset_replicas: u32,
}

/// Bounds on Kubernetes' reaction to a lost AZ, as slack over the stack's
/// timers (they are the stack's, so one scenario fits production timers
/// and CI's short ones alike).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KubeExpect {
    pub not_ready_slack: Option<Duration>,
    pub eviction_slack: Option<Duration>,
    pub rescheduled_within: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TimedFault {
    pub at: Duration,
    pub heal_at: Option<Duration>,
    pub action: Action,
}

/// What happens at a fault's time.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Faults in force until `heal_at` (a two-way partition is two).
    Inject(Vec<Fault>),
    /// Kill and start again: nothing to heal.
    Restart(String),
    /// RDS "reboot with failover" of PostgreSQL.
    Failover,
    /// An operator's mistake: every row the run inserted, deleted through
    /// the writer. The run ends with a point-in-time restore to before it.
    Accident,
}

impl Action {
    /// How the timeline, the report and the soak name it: the faults as
    /// `voyager-sim fault` prints them.
    pub fn label(&self) -> String {
        match self {
            Action::Inject(fs) => fs.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(" + "),
            Action::Restart(n) => format!("restart {n}"),
            Action::Failover => "failover postgres".into(),
            Action::Accident => "accident: DELETE of every row the run inserted".into(),
        }
    }
}

/// Report phases: before the first fault, while faults are in force, after
/// the last heal. A scenario without faults has only `before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Before,
    During,
    After,
}

/// A bound on a count of writes: over all operations, or per operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    Overall(usize),
    PerOp(BTreeMap<Op, usize>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expect {
    pub lost_acknowledged: Option<usize>,
    /// Writes found more than once: zero wherever exactly-once is promised.
    pub duplicated: Option<Limit>,
    /// Writes the client could not tell the outcome of (timeouts).
    pub ambiguous: Option<Limit>,
    /// Per tier: sustained recovery (RTO) at most this long after a fault.
    pub recovery: BTreeMap<String, Duration>,
    pub error_rate: BTreeMap<Phase, f64>,
    pub p99: BTreeMap<(Phase, Op), Duration>,
    pub kubernetes: KubeExpect,
    /// A point-in-time restore after an accident: how long it may take
    /// (RTO), and how much before the accident it may lose (RPO).
    pub restore_rto: Option<Duration>,
    pub restore_rpo: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    seed: u64,
    duration: Spanned<String>,
    load: RawLoad,
    #[serde(default)]
    fault: Vec<Spanned<RawFault>>,
    kubernetes: Option<Spanned<RawKube>>,
    #[serde(default)]
    expect: RawExpect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKube {
    deployment_replicas: Option<Spanned<i64>>,
    statefulset_replicas: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKubeExpect {
    not_ready_slack: Option<Spanned<String>>,
    eviction_slack: Option<Spanned<String>>,
    rescheduled_within: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    #[serde(default)]
    ramp: Option<Spanned<String>>,
    rate: BTreeMap<Spanned<String>, Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at: Spanned<String>,
    heal_at: Option<Spanned<String>>,
    kind: Spanned<String>,
    target: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
    #[serde(default)]
    both_ways: bool,
    delay: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    loss: Option<Spanned<String>>,
    rate: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    lost_acknowledged: Option<usize>,
    duplicated: Option<Spanned<toml::Value>>,
    ambiguous: Option<Spanned<toml::Value>>,
    #[serde(default)]
    recovery: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    error_rate: BTreeMap<Spanned<String>, Spanned<f64>>,
    #[serde(default)]
    p99: BTreeMap<Spanned<String>, BTreeMap<Spanned<String>, Spanned<String>>>,
    #[serde(default)]
    kubernetes: RawKubeExpect,
    restore: Option<Spanned<RawRestoreExpect>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestoreExpect {
    rto: Option<Spanned<String>>,
    rpo: Option<Spanned<String>>,
}

/// `N` or `{ OP = N, ... }`.
fn limit(c: &mut Collector, v: &Spanned<toml::Value>, key: &str) -> Option<Limit> {
    let count = |n: &toml::Value| n.as_integer().filter(|n| *n >= 0).map(|n| n as usize);
    let help = format!("write `{key} = 0` for every operation, or `{{ kafka_produce = 0 }}` for some");
    match v.get_ref() {
        toml::Value::Table(t) => {
            let mut per = BTreeMap::new();
            for (op, n) in t {
                match (Op::parse(op), count(n)) {
                    (Some(o), Some(n)) => {
                        per.insert(o, n);
                    }
                    (None, _) => c.push(
                        v.span(),
                        format!("{key}: unknown operation `{op}`"),
                        format!("use {}", Op::ALL.map(|o| o.as_str()).join(", ")),
                    ),
                    (_, None) => c.push(v.span(), format!("{key}.{op}: `{}` is not a count", shown(n)), &help),
                }
            }
            Some(Limit::PerOp(per))
        }
        other => match count(other) {
            Some(n) => Some(Limit::Overall(n)),
            None => {
                c.push(v.span(), format!("{key}: `{}` is not a count", shown(other)), help);
                None
            }
        },
    }
}

/// A TOML value as its writer wrote it, for error messages.
fn shown(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("\"{s}\""),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => format!("a {}", other.type_str()),
    }
}

const KINDS: &[&str] = &[
    "az-outage",
    "kill",
    "pause",
    "restart",
    "failover",
    "accident",
    "partition",
    "latency",
    "jitter",
    "loss",
    "bandwidth",
];

fn phase(s: &str) -> Option<Phase> {
    match s {
        "before" => Some(Phase::Before),
        "during" => Some(Phase::During),
        "after" => Some(Phase::After),
        _ => None,
    }
}

/// Parse a scenario file. Names of AZs and instances are checked against a
/// stack separately ([`Scenario::validate`]), since one file can run on
/// several stacks.
pub fn parse_scenario(file: &Path, text: &str) -> Result<Scenario, StackError> {
    let raw: RawScenario = from_toml(file, text)?;
    let mut c = Collector { lines: Lines { text }, problems: vec![] };
    let dur = |c: &mut Collector, s: &Spanned<String>, what: &str| -> Duration {
        parse_duration(s.get_ref()).unwrap_or_else(|| {
            c.push(
                s.span(),
                format!("{what}: `{}` is not a duration", s.get_ref()),
                "write it like `30s`, `2m` or `1h`",
            );
            Duration::ZERO
        })
    };
    let duration = dur(&mut c, &raw.duration, "duration");
    let ramp = raw.load.ramp.as_ref().map(|r| dur(&mut c, r, "load.ramp")).unwrap_or_default();
    let mut rates = BTreeMap::new();
    for (op, rate) in &raw.load.rate {
        match Op::parse(op.get_ref()) {
            Some(o) if *rate.get_ref() >= 0.0 && rate.get_ref().is_finite() => {
                rates.insert(o, *rate.get_ref());
            }
            Some(_) => c.push(
                rate.span(),
                format!("rate {} is not a rate", rate.get_ref()),
                "use operations per second, 0 or more",
            ),
            None => c.push(
                op.span(),
                format!("unknown operation `{}`", op.get_ref()),
                format!("use {}", Op::ALL.map(|o| o.as_str()).join(", ")),
            ),
        }
    }
    let mut faults = vec![];
    for f in &raw.fault {
        let r = f.get_ref();
        let at = dur(&mut c, &r.at, "fault.at");
        let heal_at = r.heal_at.as_ref().map(|h| dur(&mut c, h, "fault.heal_at"));
        if at > duration {
            c.push(
                r.at.span(),
                format!("the fault comes after the scenario ends ({})", raw.duration.get_ref()),
                "move it inside the duration",
            );
        }
        if let (Some(h), Some(hs)) = (heal_at, &r.heal_at) {
            if h <= at || h > duration {
                c.push(
                    hs.span(),
                    "heal_at must come after `at` and within the duration",
                    "move it, or leave it out to heal at the end",
                );
            }
        }
        let need = |c: &mut Collector, v: &Option<Spanned<String>>, key: &str| -> Option<String> {
            match v {
                Some(s) => Some(s.get_ref().clone()),
                None => {
                    c.push(
                        r.kind.span(),
                        format!("a `{}` fault needs `{key}`", r.kind.get_ref()),
                        format!("add `{key} = \"...\"`"),
                    );
                    None
                }
            }
        };
        let action = match r.kind.get_ref().as_str() {
            "az-outage" => {
                let mode = match r.mode.as_ref().map(|m| m.get_ref().as_str()) {
                    None | Some("kill") => OutageMode::Kill,
                    Some("pause") => OutageMode::Pause,
                    Some(other) => {
                        c.push(
                            r.mode.as_ref().unwrap().span(),
                            format!("unknown mode `{other}`"),
                            "use `kill` or `pause`",
                        );
                        continue;
                    }
                };
                need(&mut c, &r.target, "target").map(|az| Action::Inject(vec![Fault::AzOutage { az, mode }]))
            }
            "kill" => need(&mut c, &r.target, "target").map(|instance| Action::Inject(vec![Fault::Kill { instance }])),
            "pause" => {
                need(&mut c, &r.target, "target").map(|instance| Action::Inject(vec![Fault::Pause { instance }]))
            }
            "restart" => need(&mut c, &r.target, "target").map(Action::Restart),
            "failover" => Some(Action::Failover),
            "accident" => {
                if let Some(h) = &r.heal_at {
                    c.push(
                        h.span(),
                        "an accident is not healed",
                        "drop heal_at: the run restores from backups after the load",
                    );
                }
                Some(Action::Accident)
            }
            kind if crate::fault::LINK_KINDS.contains(&kind) => {
                match (need(&mut c, &r.from, "from"), need(&mut c, &r.to, "to")) {
                    (Some(from), Some(to)) => {
                        // AZ or instance is decided against the stack in
                        // `validate`; until then a one-letter name is an AZ.
                        let side = |s: String| if s.len() <= 2 { Side::Az(s) } else { Side::Instance(s) };
                        let text = |v: &Option<Spanned<String>>| v.as_ref().map(|s| s.get_ref().clone());
                        let args = crate::fault::LinkArgs {
                            delay: text(&r.delay),
                            jitter: text(&r.jitter),
                            loss: text(&r.loss),
                            rate: text(&r.rate),
                        };
                        match crate::fault::link_fault(kind, side(from), side(to), &args) {
                            Ok(f) => {
                                let mut v = vec![f.clone()];
                                if r.both_ways {
                                    v.extend(f.reversed());
                                }
                                Some(Action::Inject(v))
                            }
                            Err(e) => {
                                let at = [&r.delay, &r.jitter, &r.loss, &r.rate]
                                    .into_iter()
                                    .flatten()
                                    .next()
                                    .map(|s| s.span())
                                    .unwrap_or(r.kind.span());
                                c.push(at, e, "see scenarios/README.md for each fault's keys");
                                None
                            }
                        }
                    }
                    _ => None,
                }
            }
            other => {
                let help = match crate::stack::parse::did_you_mean(other, KINDS.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("use one of {}", KINDS.join(", ")),
                };
                c.push(r.kind.span(), format!("unknown fault kind `{other}`"), help);
                None
            }
        };
        if let Some(action) = action {
            faults.push(TimedFault { at, heal_at, action });
        }
    }
    let mut expect = Expect {
        lost_acknowledged: raw.expect.lost_acknowledged,
        duplicated: raw.expect.duplicated.as_ref().and_then(|v| limit(&mut c, v, "expect.duplicated")),
        ambiguous: raw.expect.ambiguous.as_ref().and_then(|v| limit(&mut c, v, "expect.ambiguous")),
        ..Default::default()
    };
    for (tier, d) in &raw.expect.recovery {
        if !Op::ALL.iter().any(|o| o.tier() == tier.get_ref().as_str()) {
            let tiers = Op::ALL.map(|o| o.tier()).join(", ");
            c.push(tier.span(), format!("unknown tier `{}`", tier.get_ref()), format!("use {tiers}"));
            continue;
        }
        let v = dur(&mut c, d, "expect.recovery");
        expect.recovery.insert(tier.get_ref().clone(), v);
    }
    for (p, rate) in &raw.expect.error_rate {
        match phase(p.get_ref()) {
            Some(ph) => {
                expect.error_rate.insert(ph, *rate.get_ref());
            }
            None => c.push(p.span(), format!("unknown phase `{}`", p.get_ref()), "use before, during or after"),
        }
    }
    for (p, ops) in &raw.expect.p99 {
        let Some(ph) = phase(p.get_ref()) else {
            c.push(p.span(), format!("unknown phase `{}`", p.get_ref()), "use before, during or after");
            continue;
        };
        for (op, d) in ops {
            match Op::parse(op.get_ref()) {
                Some(o) => {
                    let v = dur(&mut c, d, "expect.p99");
                    expect.p99.insert((ph, o), v);
                }
                None => c.push(
                    op.span(),
                    format!("unknown operation `{}`", op.get_ref()),
                    format!("use {}", Op::ALL.map(|o| o.as_str()).join(", ")),
                ),
            }
        }
    }
    let kubernetes = raw.kubernetes.as_ref().map(|k| {
        let count = |c: &mut Collector, v: &Option<Spanned<i64>>, key: &str, default: i64| -> u32 {
            match v {
                None => default as u32,
                Some(n) if (0..=30).contains(n.get_ref()) => *n.get_ref() as u32,
                Some(n) => {
                    c.push(n.span(), format!("{key} = {} is not a replica count", n.get_ref()), "use 0 to 30");
                    default as u32
                }
            }
        };
        let k = k.get_ref();
        KubeWorkloads {
            deployment_replicas: count(&mut c, &k.deployment_replicas, "deployment_replicas", 3),
            statefulset_replicas: count(&mut c, &k.statefulset_replicas, "statefulset_replicas", 1),
        }
    });
    let ke = &raw.expect.kubernetes;
    expect.kubernetes = KubeExpect {
        not_ready_slack: ke.not_ready_slack.as_ref().map(|d| dur(&mut c, d, "expect.kubernetes.not_ready_slack")),
        eviction_slack: ke.eviction_slack.as_ref().map(|d| dur(&mut c, d, "expect.kubernetes.eviction_slack")),
        rescheduled_within: ke
            .rescheduled_within
            .as_ref()
            .map(|d| dur(&mut c, d, "expect.kubernetes.rescheduled_within")),
    };
    let any_kube_expect =
        [&ke.not_ready_slack, &ke.eviction_slack, &ke.rescheduled_within].into_iter().flatten().next();
    if let (Some(span), None) = (any_kube_expect, &raw.kubernetes) {
        c.push(
            span.span(),
            "expectations on Kubernetes, but the scenario deploys nothing on it",
            "add a `[kubernetes]` section (deployment_replicas, statefulset_replicas)",
        );
    }
    if let Some(r) = &raw.expect.restore {
        let accidents = faults.iter().filter(|f| f.action == Action::Accident).count();
        if accidents != 1 {
            c.push(
                r.span(),
                format!("expectations on a restore, but the scenario has {accidents} accidents"),
                "add one `[[fault]]` with `kind = \"accident\"`: the restore goes to just before it",
            );
        }
        let r = r.get_ref();
        expect.restore_rto = r.rto.as_ref().map(|d| dur(&mut c, d, "expect.restore.rto"));
        expect.restore_rpo = r.rpo.as_ref().map(|d| dur(&mut c, d, "expect.restore.rpo"));
    }
    if let Some(second) = raw.fault.iter().filter(|f| f.get_ref().kind.get_ref() == "accident").nth(1) {
        c.push(
            second.get_ref().kind.span(),
            "a scenario has at most one accident",
            "keep one: the run restores to just before it",
        );
    }
    if !c.problems.is_empty() {
        return Err(StackError { file: file.to_path_buf(), problems: c.problems });
    }
    faults.sort_by_key(|f| f.at);
    Ok(Scenario {
        name: raw.name,
        description: raw.description,
        seed: raw.seed,
        duration,
        ramp,
        rates,
        faults,
        kubernetes,
        expect,
    })
}

impl Scenario {
    /// Check the scenario's faults name things the stack has, settling
    /// whether each partition side is an AZ or an instance.
    pub fn validate(&mut self, stack: &Stack) -> Result<(), String> {
        if self.kubernetes.is_some() && stack.kubernetes.is_none() {
            return Err("the scenario deploys workloads on Kubernetes, and the stack runs none".into());
        }
        for (i, tf) in self.faults.iter_mut().enumerate() {
            let n = i + 1;
            match &mut tf.action {
                Action::Inject(fs) => {
                    for f in fs.iter_mut() {
                        if let Some(sides) = f.sides_mut() {
                            for side in sides {
                                let word = match side {
                                    Side::Az(w) | Side::Instance(w) => w.clone(),
                                };
                                *side = Side::parse(&word, stack).map_err(|e| format!("fault #{n}: {e}"))?;
                            }
                        }
                        f.validate(stack).map_err(|e| format!("fault #{n}: {e}"))?;
                    }
                }
                Action::Restart(name) => {
                    Fault::Kill { instance: name.clone() }.validate(stack).map_err(|e| format!("fault #{n}: {e}"))?;
                }
                Action::Failover => {
                    if stack.with_role(crate::stack::ServiceKind::Postgres, "standby").is_empty() {
                        return Err(format!("fault #{n}: failover needs a PostgreSQL standby and the stack has none"));
                    }
                }
                Action::Accident => {
                    for kind in [crate::stack::ServiceKind::Postgres, crate::stack::ServiceKind::S3] {
                        if stack.service(kind).is_none() {
                            return Err(format!(
                                "fault #{n}: an accident is restored from PostgreSQL's backups in S3, and the stack runs no {kind}"
                            ));
                        }
                    }
                    if !self.rates.get(&Op::PostgresInsert).is_some_and(|r| *r > 0.0) {
                        return Err(format!(
                            "fault #{n}: an accident needs postgres_insert load to destroy and restore"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The same scenario with every time multiplied by `factor`: CI runs the
    /// shipped scenarios shortened, same steps, phases of a few seconds.
    pub fn scaled(&self, factor: f64) -> Scenario {
        let s = |d: Duration| Duration::from_secs_f64(d.as_secs_f64() * factor);
        let mut out = self.clone();
        out.duration = s(self.duration);
        out.ramp = s(self.ramp);
        for f in &mut out.faults {
            f.at = s(f.at);
            f.heal_at = f.heal_at.map(s);
        }
        out
    }

    /// When the phases start: `during` at the first fault, `after` at the
    /// last heal (or the last fault, for faults that heal themselves).
    pub fn phase_at(&self, t: Duration) -> Phase {
        let Some(first) = self.faults.first() else { return Phase::Before };
        let last_heal = self.faults.iter().map(|f| f.heal_at.unwrap_or(f.at)).max().unwrap_or(first.at);
        if t < first.at {
            Phase::Before
        } else if t < last_heal {
            Phase::During
        } else {
            Phase::After
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Before => "before",
            Phase::During => "during",
            Phase::After => "after",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AZ_LOSS: &str = r#"
name = "az-loss"
seed = 7
duration = "150s"
[load]
ramp = "5s"
rate = { kafka_produce = 40, postgres_insert = 20 }
[[fault]]
at = "30s"
heal_at = "90s"
kind = "az-outage"
target = "b"
[expect]
lost_acknowledged = 0
duplicated = 0
ambiguous = { kafka_produce = 5 }
recovery = { kafka = "30s" }
error_rate = { after = 0.01 }
p99 = { before = { kafka_produce = "500ms" } }
"#;

    #[test]
    fn an_accident_is_restored_not_healed_and_comes_once() {
        let head = "name = \"p\"\nseed = 1\nduration = \"90s\"\n[load]\nrate = { postgres_insert = 30 }\n";
        let accident = |extra: &str| format!("[[fault]]\nat = \"60s\"\nkind = \"accident\"\n{extra}");
        let ok = format!("{head}{}[expect]\nrestore = {{ rto = \"1h\", rpo = \"15m\" }}\n", accident(""));
        let s = parse_scenario(Path::new("p.toml"), &ok).unwrap();
        assert_eq!(s.faults[0].action, Action::Accident);
        assert_eq!(
            (s.expect.restore_rto, s.expect.restore_rpo),
            (Some(Duration::from_secs(3600)), Some(Duration::from_secs(900)))
        );

        let healed = format!("{head}{}", accident("heal_at = \"70s\"\n"));
        let e = parse_scenario(Path::new("p.toml"), &healed).unwrap_err().to_string();
        assert!(e.contains("p.toml:9:11: an accident is not healed"), "{e}");
        let twice = format!("{head}{}{}", accident(""), accident(""));
        let e = parse_scenario(Path::new("p.toml"), &twice).unwrap_err().to_string();
        assert!(e.contains("at most one accident"), "{e}");
        let no_accident = format!("{head}[expect]\nrestore = {{ rto = \"1h\" }}\n");
        let e = parse_scenario(Path::new("p.toml"), &no_accident).unwrap_err().to_string();
        assert!(e.contains("expectations on a restore, but the scenario has 0 accidents"), "{e}");

        // A stack without S3 has no backups to restore from.
        let mut s = parse_scenario(Path::new("p.toml"), &ok).unwrap();
        let stack = crate::harness::builtin_stack().only(&[crate::stack::ServiceKind::Postgres]);
        assert!(s.validate(&stack).unwrap_err().contains("runs no s3"));
    }

    #[test]
    fn a_scenario_parses_into_load_faults_and_expectations() {
        let s = parse_scenario(Path::new("az-loss.toml"), AZ_LOSS).unwrap();
        assert_eq!((s.seed, s.duration, s.ramp), (7, Duration::from_secs(150), Duration::from_secs(5)));
        assert_eq!(s.rates[&Op::KafkaProduce], 40.0);
        assert_eq!(
            s.faults[0].action,
            Action::Inject(vec![Fault::AzOutage { az: "b".into(), mode: OutageMode::Kill }])
        );
        assert_eq!(s.faults[0].heal_at, Some(Duration::from_secs(90)));
        assert_eq!(s.expect.lost_acknowledged, Some(0));
        assert_eq!(s.expect.duplicated, Some(Limit::Overall(0)));
        assert_eq!(s.expect.ambiguous, Some(Limit::PerOp([(Op::KafkaProduce, 5)].into())));
        assert_eq!(s.expect.recovery["kafka"], Duration::from_secs(30));
        assert_eq!(s.expect.p99[&(Phase::Before, Op::KafkaProduce)], Duration::from_millis(500));
        assert_eq!(
            (
                s.phase_at(Duration::from_secs(10)),
                s.phase_at(Duration::from_secs(30)),
                s.phase_at(Duration::from_secs(90))
            ),
            (Phase::Before, Phase::During, Phase::After)
        );
    }

    #[test]
    fn scaling_shortens_every_time_and_keeps_the_steps() {
        let s = parse_scenario(Path::new("az-loss.toml"), AZ_LOSS).unwrap().scaled(0.1);
        assert_eq!(s.duration, Duration::from_secs(15));
        assert_eq!((s.faults[0].at, s.faults[0].heal_at), (Duration::from_secs(3), Some(Duration::from_secs(9))));
    }

    #[test]
    fn mistakes_are_reported_with_position_and_fix() {
        let bad = AZ_LOSS
            .replace("kind = \"az-outage\"", "kind = \"az-outge\"")
            .replace("kafka_produce = 40", "kafka_prodce = 40");
        let err = parse_scenario(Path::new("az-loss.toml"), &bad).unwrap_err().to_string();
        assert!(err.contains("az-loss.toml:7:10: unknown operation `kafka_prodce`"), "{err}");
        assert!(err.contains("unknown fault kind `az-outge`\n  help: did you mean `az-outage`?"), "{err}");
        let bad =
            AZ_LOSS.replace("duplicated = 0", "duplicated = \"none\"").replace("kafka_produce = 5 }", "kafka = 5 }");
        let err = parse_scenario(Path::new("az-loss.toml"), &bad).unwrap_err().to_string();
        assert!(err.contains("az-loss.toml:15:14: expect.duplicated: `\"none\"` is not a count"), "{err}");
        assert!(err.contains("expect.ambiguous: unknown operation `kafka`"), "{err}");
    }

    #[test]
    fn faults_are_checked_against_the_stack() {
        let mut s = parse_scenario(Path::new("x.toml"), &AZ_LOSS.replace("target = \"b\"", "target = \"q\"")).unwrap();
        let err = s.validate(&crate::harness::builtin_stack()).unwrap_err();
        assert_eq!(err, "fault #1: unknown AZ `q`; the stack's AZs are a, b, c");
    }
}
