//! Everything that talks to Docker (and, for routing between subnets, the
//! host's firewall). **The only layer with side effects on the machine**;
//! what to create comes in as data ([`crate::spec::ContainerSpec`],
//! [`crate::stack::Stack`]).

pub mod container;
pub mod docker;
pub mod labels;
pub mod link;
pub mod lock;
pub mod network;
pub mod route;
pub mod sweep;

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot reach the Docker engine: {message}\n  help: {help}")]
    DockerUnavailable { message: String, help: String },
    #[error("Docker refused to {action}: {source}")]
    Docker { action: String, source: bollard::errors::Error },
    #[error("network {network} cannot be removed: Docker still counts an endpoint on it, but no container is attached\n  help: {help}")]
    StaleEndpoint { network: String, help: String },
    #[error("cannot create network {network} for subnet {subnet}: it overlaps a network Docker already has{owner}\n  help: {help}")]
    SubnetTaken { network: String, subnet: String, owner: String, help: String },
    #[error("container {container} exited with code {code} before it was ready; its last log lines:\n{logs}")]
    Exited { container: String, code: i64, logs: String },
    #[error("{instance} was not ready after {:.0}s: {last_error}\n  last log lines of {container}:\n{logs}", waited.as_secs_f64())]
    NotReady { instance: String, container: String, waited: Duration, last_error: String, logs: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("`{command}` in {container} exited with code {code}:\n{tail}")]
    Exec { container: String, command: String, code: i64, tail: String },
    #[error("{service} did not become ready as a whole: {message}")]
    Provision { service: String, message: String },
    /// iptables (the VPC route, faults) or tc (rate caps) on the Docker host.
    #[error("`{command}` failed on the Docker host: {stderr}")]
    HostTool { command: String, stderr: String },
}

impl RuntimeError {
    pub fn docker(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> RuntimeError {
        let action = action.into();
        move |source| match source {
            // Debian 12's Docker 20.10 can deadlock in libnetwork when many
            // containers on user-defined networks exit at once (moby/moby
            // #46661, fixed upstream only after this release): every network
            // call then hangs until dockerd restarts. Say so, not "timeout".
            bollard::errors::Error::RequestTimeoutError => RuntimeError::DockerUnavailable {
                message: format!("Docker did not answer in time when asked to {action}"),
                help: "if `docker network ls` hangs too, dockerd is deadlocked (Docker 20.10's libnetwork, \
                       moby/moby#46661): restart dockerd (`source scripts/setup.sh` does), then run \
                       `voyager-sim down --all`"
                    .into(),
            },
            source => RuntimeError::Docker { action, source },
        }
    }
}

/// Run a host tool (iptables, tc) and return its output; a failure names the
/// whole command line and what the tool said, or `missing` if it could not
/// be run at all.
pub(crate) async fn host_tool(program: &str, args: &[String], missing: &str) -> Result<String, RuntimeError> {
    let command = || format!("{program} {}", args.join(" "));
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| RuntimeError::HostTool { command: command(), stderr: format!("{e} ({missing})") })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(RuntimeError::HostTool { command: command(), stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
