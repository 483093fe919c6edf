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
    /// Container TCP ports published on 127.0.0.1.
    pub published: Vec<Publish>,
    /// Of those, the ports also published over UDP, on the same host port
    /// (a DNS server answers both).
    pub udp: Vec<u16>,
    /// DNS servers the container's resolver forwards to (Docker's own
    /// resolver still answers container names first): the VPC's resolver.
    pub dns: Vec<Ipv4Addr>,
    /// Named volumes (created and labelled by the runtime) and mount points.
    pub volumes: Vec<(String, String)>,
    /// Volumes of the stack that several containers mount (name within the
    /// stack, mount point): an AZ's block storage, shared by its nodes.
    pub shared_volumes: Vec<(String, String)>,
    /// Further networks joined before start, with an address Docker picks:
    /// for regional parts (the database endpoints) that sit in no one AZ.
    pub extra_networks: Vec<String>,
    /// Fixed addresses in some of `extra_networks` (a regional endpoint
    /// that every AZ reaches at an address of its own subnet).
    pub extra_addresses: BTreeMap<String, Ipv4Addr>,
    /// `/etc/hosts` entries: names the container resolves without DNS.
    pub extra_hosts: Vec<(String, Ipv4Addr)>,
    /// Files written into the container before it starts (path, mode,
    /// content): how both image sets get the same scripts and configs.
    pub files: Vec<(String, u32, String)>,
    /// Overrides of the image's entrypoint and user, when a file above
    /// replaces what the image would run.
    pub entrypoint: Option<Vec<String>>,
    pub user: Option<String>,
    /// Host files mounted read-only (host path, container path): how the
    /// workspace's companion binaries get into a plain Debian container.
    pub mounts: Vec<(String, String)>,
    /// What the container may do to the kernel.
    pub sandbox: Sandbox,
}

impl Default for ContainerSpec {
    fn default() -> ContainerSpec {
        ContainerSpec {
            instance: String::new(),
            image: String::new(),
            env: BTreeMap::new(),
            cmd: vec![],
            network: String::new(),
            address: Ipv4Addr::UNSPECIFIED,
            published: vec![],
            udp: vec![],
            dns: vec![],
            volumes: vec![],
            shared_volumes: vec![],
            extra_networks: vec![],
            extra_addresses: BTreeMap::new(),
            extra_hosts: vec![],
            files: vec![],
            entrypoint: None,
            user: None,
            mounts: vec![],
            sandbox: Sandbox::default(),
        }
    }
}

/// How much of the machine a container may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sandbox {
    /// Docker's defaults, with a small init as PID 1.
    #[default]
    Service,
    /// A machine of its own: systemd as PID 1 running containerd and
    /// kubelet, which create cgroups, mounts, network devices and firewall
    /// rules of their own. Not `--privileged` (this machine refuses it:
    /// its capability bounding set lacks CAP_SYS_RESOURCE), but every other
    /// capability, no seccomp or AppArmor filter, all devices allowed, a
    /// private cgroup namespace (pods nest under the node, so pausing or
    /// killing the node takes its pods with it) and IP forwarding on.
    Node,
}

/// A container port published on 127.0.0.1. Services leave `host: None`
/// unless they must know the port (Kafka advertises it); the harness then
/// fixes a free one before the container is created, so the port survives
/// restarts, and parallel runs never ask for the same fixed number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    pub container: u16,
    pub host: Option<u16>,
}

impl Publish {
    pub fn any(container: u16) -> Publish {
        Publish { container, host: None }
    }
}

/// A free TCP port on 127.0.0.1, found by binding port 0. The port is free
/// again when this returns; Docker binds it moments later, and the kernel
/// hands out ephemeral ports in rotation, so a clash needs bad luck.
pub fn free_local_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
