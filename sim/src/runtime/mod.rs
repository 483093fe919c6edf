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
    #[error("cannot create network {network} for subnet {subnet}: it overlaps a network Docker already has{owner}\n  help: {help}")]
    SubnetTaken { network: String, subnet: String, owner: String, help: String },
    #[error("container {container} exited with code {code} before it was ready; its last log lines:\n{logs}")]
    Exited { container: String, code: i64, logs: String },
    #[error("{instance} was not ready after {:.0}s: {last_error}\n  last log lines of {container}:\n{logs}", waited.as_secs_f64())]
    NotReady { instance: String, container: String, waited: Duration, last_error: String, logs: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("{service} did not become ready as a whole: {message}")]
    Provision { service: String, message: String },
    #[error("routing between subnets needs iptables on the Docker host: `{command}` failed: {stderr}")]
    Iptables { command: String, stderr: String },
}

impl RuntimeError {
    pub fn docker(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> RuntimeError {
        let action = action.into();
        move |source| RuntimeError::Docker { action, source }
    }
}
