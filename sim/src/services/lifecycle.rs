//! An instance's life in Docker, for whoever starts or replaces one (the
//! harness's bring-up and heal, the control plane's rebuilds): fixing its
//! host ports so its endpoint never moves, recording what was started, and
//! waiting until it answers — its service's probe, retried until it passes
//! or the deadline goes by; a container that exits fails at once with its
//! last log lines.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::Docker;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::runtime::{container, RuntimeError};
use crate::services::{self, ProbeContext};
use crate::stack::{ServiceKind, Stack, Tier};
use crate::state::{InstanceState, RunState};

/// Readier than this on an idle machine, every service; slower is said.
const SLOW: Duration = Duration::from_secs(60);

fn kind_of(inst: &InstanceState) -> Result<ServiceKind> {
    inst.service.parse().map_err(|e: String| Error::usage(e, "the run state names a service this build does not know"))
}

/// [`wait_ready`] for an instance started again from nothing, then what its
/// service makes again after such a start ([`services::Service::restarted`]).
pub async fn wait_restarted(
    docker: &Docker,
    state: &RunState,
    inst: &InstanceState,
    timeout: Duration,
    p: &Progress,
) -> Result<Duration> {
    let kind = kind_of(inst)?;
    let start = Instant::now();
    let took = loop {
        match wait_ready(docker, state, inst, timeout.saturating_sub(start.elapsed()), p).await {
            // The stack's control plane rebuilds a returning old primary as
            // a standby: it stops and replaces the very container a heal
            // just started, which is not that instance failing. Or, when
            // the heal came just before its failover, it fences the node:
            // kills it and leaves it stopped, to come back in recovery
            // whenever something starts it. Start it then, as the heal
            // meant to; under the RDS lock, so never between the fence's
            // kill and its standby.signal.
            Err(Error::Runtime(RuntimeError::Exited { .. }))
                if kind == ServiceKind::Postgres && start.elapsed() < timeout =>
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Ok(_held) = services::postgres::rds_lock(&state.stack).await {
                    if container::state(docker, &inst.container).await.is_some_and(|s| !s.running && !s.paused) {
                        let _ = container::restart_stopped(docker, &inst.container).await;
                    }
                }
            }
            r => break r?,
        }
    };
    services::service(kind)
        .restarted(state, timeout)
        .await
        .map_err(|message| RuntimeError::Provision { service: inst.service.clone(), message })?;
    Ok(took)
}

pub async fn wait_ready(
    docker: &Docker,
    state: &RunState,
    inst: &InstanceState,
    timeout: Duration,
    p: &Progress,
) -> Result<Duration> {
    let kind = kind_of(inst)?;
    let start = Instant::now();
    loop {
        match container::state(docker, &inst.container).await {
            Some(s) if !s.running => {
                let logs = container::log_tail(docker, &inst.container, 30).await;
                return Err(RuntimeError::Exited { container: inst.container.clone(), code: s.exit_code, logs }.into());
            }
            None => {
                return Err(RuntimeError::Exited {
                    container: inst.container.clone(),
                    code: -1,
                    logs: "    (the container is gone)".into(),
                }
                .into());
            }
            _ => {}
        }
        let last_error = match services::service(kind).probe(&ProbeContext { state, docker }, inst).await {
            Ok(()) => {
                let took = start.elapsed();
                let slow = if took > SLOW { " (slow: the machine is busy)" } else { "" };
                p.say(&format!("{} ready in {:.2}s{slow}", inst.name, took.as_secs_f64()));
                return Ok(took);
            }
            Err(e) => e,
        };
        if start.elapsed() > timeout {
            let logs = container::log_tail(docker, &inst.container, 30).await;
            return Err(RuntimeError::NotReady {
                instance: inst.name.clone(),
                container: inst.container.clone(),
                waited: start.elapsed(),
                last_error,
                logs,
            }
            .into());
        }
        // A probe is a real connection attempt; this only paces retries.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Give every published port a fixed host port: the one the instance had
/// before (a rebuilt node keeps its address), else a free one. Docker's own
/// choice would change at every restart of the container, and an instance's
/// endpoint must not move when the instance reboots.
pub fn pin_host_ports(spec: &mut crate::spec::ContainerSpec, previous: Option<&InstanceState>) -> Result<()> {
    for p in &mut spec.published {
        if p.host.is_none() {
            let before = previous.and_then(|i| i.published.get(&p.container)).map(|a| a.port());
            p.host = Some(match before {
                Some(port) => port,
                None => crate::spec::free_local_port()
                    .map_err(|source| Error::State { path: "127.0.0.1:0".into(), source })?,
            });
        }
    }
    Ok(())
}

/// Start a new instance on free host ports. A free port is found by binding
/// port 0 and letting go, so another stack starting at the same moment (or
/// Docker's own pick for it) can take it before Docker binds: then the
/// container is removed and started again on other ports.
pub async fn start_on_free_ports(
    docker: &Docker,
    spec: &mut crate::spec::ContainerSpec,
    labels: &crate::runtime::labels::Labels,
) -> Result<String> {
    let unpinned: Vec<usize> = (0..spec.published.len()).filter(|i| spec.published[*i].host.is_none()).collect();
    let mut attempt = 0;
    loop {
        pin_host_ports(spec, None)?;
        match container::start(docker, spec, labels).await {
            Err(e) if attempt < 4 && !unpinned.is_empty() && e.to_string().contains("port is already allocated") => {
                attempt += 1;
                container::remove(docker, &container::container_name(&labels.stack, &spec.instance)).await?;
                for i in &unpinned {
                    spec.published[*i].host = None;
                }
            }
            r => return Ok(r?),
        }
    }
}

/// What the state file records of a started container. Parts a service runs
/// beside its instances (the database endpoints) are not in the stack file:
/// they are regional, in no one AZ.
pub async fn instance_state(
    docker: &Docker,
    stack: &Stack,
    kind: ServiceKind,
    spec: &crate::spec::ContainerSpec,
    container: String,
) -> Result<InstanceState> {
    let published = container::published_ports(docker, &container).await?.into_iter().collect::<BTreeMap<_, _>>();
    let declared = stack.services.iter().flat_map(|s| &s.instances).find(|i| i.name == spec.instance);
    Ok(match declared {
        Some(inst) => InstanceState {
            name: inst.name.clone(),
            service: kind.to_string(),
            az: inst.az.clone(),
            subnet: inst.tier.to_string(),
            address: inst.address,
            container,
            role: inst.role.clone(),
            published,
        },
        None => InstanceState {
            name: spec.instance.clone(),
            service: kind.to_string(),
            az: "*".into(),
            subnet: Tier::Private.to_string(),
            address: spec.address,
            container,
            role: "endpoint".into(),
            published,
        },
    })
}
