//! A container as data: what the services layer asks for and the runtime
//! creates. Kept apart from both so specs can be unit-tested without Docker.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The instance name from the stack (`postgres-a`).
    pub instance: String,
    pub image: String,
    pub env: BTreeMap<String, String>,
    pub cmd: Vec<String>,
    /// Docker network (one per subnet) and the fixed address in it.
    pub network: String,
    pub address: Ipv4Addr,
    /// Container TCP ports published on 127.0.0.1 at a port Docker picks, so
    /// parallel runs never fight over host ports.
    pub published: Vec<u16>,
    /// Named volumes (created and labelled by the runtime) and mount points.
    pub volumes: Vec<(String, String)>,
}
