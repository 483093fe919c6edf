//! What `status`, `env` and `down` do: read the run state, probe each
//! instance live, render dotenv lines, remove stacks by label.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::images::ImageSet;
use crate::progress::Progress;
use crate::runtime::sweep::{self, Swept};
use crate::runtime::{container, docker};
use crate::services::{self, ProbeContext};
use crate::stack::ServiceKind;
use crate::state::{self, RunState};

/// The services a run has, each once.
fn kinds_of(state: &RunState) -> Vec<ServiceKind> {
    let mut kinds: Vec<ServiceKind> = state.instances.iter().filter_map(|i| i.service.parse().ok()).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// dotenv lines for a run, service by service.
pub fn env_of(state: &RunState) -> Vec<(String, String)> {
    let kinds = kinds_of(state);
    let mut out = vec![("VOYAGER_SIM_STACK".to_string(), state.stack.clone())];
    for k in kinds {
        out.extend(services::service(k).env(state));
    }
    out
}

/// Remove a stack by name, whether or not its state file survived.
pub async fn down(name: &str, p: &Progress) -> Result<Swept> {
    let docker = docker::connect(p).await?;
    let swept = sweep::sweep_stack(&docker, name).await?;
    state::remove(name).map_err(|source| Error::State { path: state::path(name).display().to_string(), source })?;
    Ok(swept)
}

/// `down` after an interrupted start. The start was dropped mid-way, but a
/// create request it had already sent may still land after the first
/// sweep (CI saw two of three PostgreSQL containers appear after it): the
/// stack is swept again whenever a look a moment later finds something,
/// for a few seconds.
pub async fn down_interrupted(name: &str, p: &Progress) -> Result<()> {
    down(name, p).await?;
    let docker = docker::connect(p).await?;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (cs, ns, vs) = sweep::leftovers(&docker, name).await?;
        if !(cs.is_empty() && ns.is_empty() && vs.is_empty()) {
            sweep::sweep_stack(&docker, name).await?;
        }
    }
    Ok(())
}

/// Remove every stack this engine holds (`down --all`): for CI and for
/// cleaning a machine after experiments.
pub async fn down_all(p: &Progress) -> Result<Vec<String>> {
    let docker = docker::connect(p).await?;
    let names = sweep::all_stacks(&docker).await?;
    for n in &names {
        sweep::sweep_stack(&docker, n).await?;
        let _ = state::remove(n);
    }
    Ok(names)
}

/// One instance as `status` shows it. Its own type: the JSON is a contract.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub instance: String,
    pub service: String,
    pub az: String,
    pub subnet: String,
    pub address: String,
    pub endpoint: Option<String>,
    pub container: String,
    pub health: String,
    /// What the instance is doing in its service (Kafka: partitions led).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StackStatus {
    pub stack: String,
    pub run_id: String,
    pub images: ImageSet,
    pub vpc: String,
    pub instances: Vec<InstanceStatus>,
    /// The stack's control plane: whether it runs, and what it did last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlStatus>,
    /// PostgreSQL's backups and restorable window, for stacks with PostgreSQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backups: Option<super::backups::BackupStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ControlStatus {
    pub running: bool,
    /// Its latest actions, oldest first, each `seconds ago: what`.
    pub recent: Vec<String>,
}

impl StackStatus {
    pub fn healthy(&self) -> bool {
        self.instances.iter().all(|i| i.health == "healthy")
    }
}

/// Live status of a stack: container state plus a real probe per instance.
pub async fn status(name: &str, p: &Progress) -> Result<Option<StackStatus>> {
    let Some(state) =
        state::load(name).map_err(|source| Error::State { path: state::path(name).display().to_string(), source })?
    else {
        return Ok(None);
    };
    let docker = docker::connect(p).await?;
    let kinds = kinds_of(&state);
    let mut roles: BTreeMap<String, String> = BTreeMap::new();
    for r in join_all(kinds.iter().map(|k| services::service(*k).roles(&state))).await {
        roles.extend(r);
    }
    let checks = join_all(state.instances.iter().map(|i| async {
        let (health, detail) = match container::state(&docker, &i.container).await {
            None => ("missing".to_string(), Some("the container is gone".to_string())),
            Some(s) if s.paused => ("paused".to_string(), None),
            Some(s) if !s.running => ("exited".to_string(), Some(format!("exit code {}", s.exit_code))),
            Some(_) => match i.service.parse::<ServiceKind>() {
                Ok(k) => match tokio::time::timeout(
                    Duration::from_secs(5),
                    services::service(k).probe(&ProbeContext { state: &state, docker: &docker }, i),
                )
                .await
                {
                    Ok(Ok(())) => ("healthy".to_string(), None),
                    Ok(Err(e)) => ("unhealthy".to_string(), Some(e)),
                    Err(_) => ("unhealthy".to_string(), Some("probe timed out after 5s".to_string())),
                },
                Err(e) => ("unknown".to_string(), Some(e)),
            },
        };
        InstanceStatus {
            instance: i.name.clone(),
            service: i.service.clone(),
            az: i.az.clone(),
            subnet: i.subnet.clone(),
            address: i.address.to_string(),
            endpoint: i.published.values().next().map(|a| a.to_string()),
            container: i.container.clone(),
            health,
            role: roles.get(&i.name).cloned(),
            detail,
        }
    }))
    .await;
    let mut checks = checks;
    // The API's pods, when it runs on the cluster: each a row of its own,
    // healthy when Ready.
    match services::api::pods::pods(&state).await {
        Ok(pods) => checks.extend(pods.into_iter().map(|p| InstanceStatus {
            instance: p.name,
            service: ServiceKind::Api.as_str().into(),
            az: p.az,
            subnet: "private".into(),
            address: p.address,
            endpoint: None,
            container: String::new(),
            health: if p.ready { "healthy".into() } else { "unhealthy".into() },
            role: Some(format!("pod on {}", p.node)),
            detail: p.detail,
        })),
        Err(e) => checks.push(InstanceStatus {
            instance: "voyager-api pods".into(),
            service: ServiceKind::Api.as_str().into(),
            az: "*".into(),
            subnet: "private".into(),
            address: String::new(),
            endpoint: None,
            container: String::new(),
            health: "unknown".into(),
            role: None,
            detail: Some(e),
        }),
    }
    let control = crate::control::find(&docker, &state.stack).await.map(|running| {
        let now = state::now_unix_ms();
        let events = state::events_since(&state.stack, 0);
        let recent = events[events.len().saturating_sub(5)..]
            .iter()
            .map(|e| format!("{:.0}s ago: {}", now.saturating_sub(e.at_unix_ms) as f64 / 1000.0, e.what))
            .collect();
        ControlStatus { running, recent }
    });
    let backups = if services::postgres::nodes(&state).next().is_some() {
        let mut handle = super::running::RunningStack::attach(&state.stack, &Progress::silent()).await?;
        let b = tokio::time::timeout(Duration::from_secs(20), handle.backup_status()).await;
        handle.detach();
        Some(match b {
            Ok(b) => b?,
            Err(_) => super::backups::BackupStatus {
                unavailable: None,
                backups: vec![],
                latest_restorable: None,
                earliest_restorable: None,
                error: Some("the repository gave no answer within 20s".into()),
            },
        })
    } else {
        None
    };
    Ok(Some(StackStatus {
        stack: state.stack.clone(),
        run_id: state.run_id.clone(),
        images: state.images,
        vpc: state.vpc.clone(),
        instances: checks,
        control,
        backups,
    }))
}
