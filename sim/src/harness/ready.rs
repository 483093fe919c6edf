//! Waiting for one instance to answer: its service's probe, retried until
//! it passes or the deadline goes by; a container that exits fails at once
//! with its last log lines.

use std::time::{Duration, Instant};

use bollard::Docker;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::runtime::{container, RuntimeError};
use crate::services::{self, ProbeContext};
use crate::stack::ServiceKind;
use crate::state::{InstanceState, RunState};

/// Readier than this on an idle machine, every service; slower is said.
const SLOW: Duration = Duration::from_secs(60);

pub(crate) async fn wait_ready(
    docker: &Docker,
    state: &RunState,
    inst: &InstanceState,
    timeout: Duration,
    p: &Progress,
) -> Result<Duration> {
    let kind: ServiceKind = inst
        .service
        .parse()
        .map_err(|e: String| Error::usage(e, "the run state names a service this build does not know"))?;
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
