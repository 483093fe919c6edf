//! Creating, starting and looking into containers built from a [`ContainerSpec`].

use std::collections::HashMap;
use std::net::SocketAddr;

use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, NetworkingConfig, PortBinding,
    VolumeCreateRequest,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;

use super::labels::{self, Labels};
use super::RuntimeError;
use crate::spec::{ContainerSpec, Sandbox};

/// A Kubernetes node's sandbox: the capability set KUBERNETES.md found to
/// work where `--privileged` is refused (every capability but
/// SYS_RESOURCE), no syscall or AppArmor filter, /proc and /sys unmasked,
/// every device allowed in the node's device cgroup (kubelet grants pods
/// devices, and a child cgroup gets no more than its parent), tmpfs for
/// /run and /tmp as systemd expects, and a private cgroup namespace, in
/// which the node's entrypoint mounts its own cgroup tree writable.
fn node_sandbox(h: &mut HostConfig) {
    h.init = Some(false);
    h.cap_add = Some(vec!["ALL".into()]);
    h.cap_drop = Some(vec!["SYS_RESOURCE".into()]);
    h.security_opt = Some(["seccomp=unconfined", "apparmor=unconfined"].map(String::from).to_vec());
    // The CLI's `systempaths=unconfined`: nothing in /proc or /sys masked
    // or read-only.
    h.masked_paths = Some(vec![]);
    h.readonly_paths = Some(vec![]);
    h.devices = Some(vec![bollard::models::DeviceMapping {
        path_on_host: Some("/dev/kmsg".into()),
        path_in_container: Some("/dev/kmsg".into()),
        cgroup_permissions: Some("rwm".into()),
    }]);
    h.device_cgroup_rules = Some(vec!["a *:* rwm".into()]);
    h.tmpfs = Some(HashMap::from([("/run".to_string(), String::new()), ("/tmp".to_string(), String::new())]));
    h.cgroupns_mode = Some(bollard::models::HostConfigCgroupnsModeEnum::PRIVATE);
    // Pods' packets are routed through the node; proxy ARP lets the node
    // answer for its pods' VPC addresses on the subnet, as an ENI does.
    h.sysctls = Some(HashMap::from([
        ("net.ipv4.ip_forward".to_string(), "1".to_string()),
        ("net.ipv4.conf.all.proxy_arp".to_string(), "1".to_string()),
    ]));
}

pub fn container_name(stack: &str, instance: &str) -> String {
    labels::object_name(stack, instance)
}

/// The container's Docker-side shape. Pure, so the published-port and label
/// rules are unit-tested.
pub fn create_body(spec: &ContainerSpec, labels: &Labels) -> ContainerCreateBody {
    let protocols = |p: &crate::spec::Publish| {
        let (port, host) = (p.container, p.host);
        let udp = spec.udp.contains(&port).then_some("udp");
        ["tcp"].into_iter().chain(udp).map(move |proto| (format!("{port}/{proto}"), host))
    };
    let ports: Vec<String> = spec.published.iter().flat_map(protocols).map(|(k, _)| k).collect();
    let bindings = spec
        .published
        .iter()
        .flat_map(protocols)
        .map(|(key, host)| {
            let host_port = host.map(|h| h.to_string()).unwrap_or_default();
            let binding = PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(host_port) };
            (key, Some(vec![binding]))
        })
        .collect();
    let binds = spec
        .volumes
        .iter()
        .map(|(vol, path)| format!("{}:{path}", volume_name(&labels.stack, &spec.instance, vol)))
        .chain(
            spec.shared_volumes.iter().map(|(vol, path)| format!("{}:{path}", labels::object_name(&labels.stack, vol))),
        )
        .chain(spec.mounts.iter().map(|(host, path)| format!("{host}:{path}:ro")))
        .collect();
    let extra_hosts: Vec<String> = spec.extra_hosts.iter().map(|(name, ip)| format!("{name}:{ip}")).collect();
    let mut host_config = HostConfig {
        port_bindings: Some(bindings),
        binds: Some(binds),
        init: Some(true),
        extra_hosts: (!extra_hosts.is_empty()).then_some(extra_hosts),
        dns: (!spec.dns.is_empty()).then(|| spec.dns.iter().map(|a| a.to_string()).collect()),
        ..Default::default()
    };
    if spec.sandbox == Sandbox::Node {
        node_sandbox(&mut host_config);
    }
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        hostname: Some(spec.instance.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        cmd: if spec.cmd.is_empty() { None } else { Some(spec.cmd.clone()) },
        entrypoint: spec.entrypoint.clone(),
        user: spec.user.clone(),
        exposed_ports: Some(ports),
        labels: Some(labels.with_instance(&spec.instance)),
        // systemd stops on SIGRTMIN+3, not SIGTERM.
        stop_signal: (spec.sandbox == Sandbox::Node).then(|| "SIGRTMIN+3".to_string()),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                spec.network.clone(),
                EndpointSettings {
                    ipam_config: Some(EndpointIpamConfig {
                        ipv4_address: Some(spec.address.to_string()),
                        ..Default::default()
                    }),
                    aliases: Some(vec![spec.instance.clone()]),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}

pub fn volume_name(stack: &str, instance: &str, vol: &str) -> String {
    labels::object_name(stack, &format!("{instance}-{vol}"))
}

/// Create the spec's volumes and container, and start it. Returns the
/// container name.
pub async fn start(docker: &Docker, spec: &ContainerSpec, labels: &Labels) -> Result<String, RuntimeError> {
    let name = container_name(&labels.stack, &spec.instance);
    // Volumes several containers share (an AZ's disks) are the stack's, not
    // an instance's; creating an existing one is a no-op.
    for (vol, _) in &spec.shared_volumes {
        let vname = labels::object_name(&labels.stack, vol);
        let req = VolumeCreateRequest { name: Some(vname.clone()), labels: Some(labels.map()), ..Default::default() };
        docker.create_volume(req).await.map_err(RuntimeError::docker(format!("create volume {vname}")))?;
    }
    for (vol, _) in &spec.volumes {
        let vname = volume_name(&labels.stack, &spec.instance, vol);
        let req = VolumeCreateRequest {
            name: Some(vname.clone()),
            labels: Some(labels.with_instance(&spec.instance)),
            ..Default::default()
        };
        docker.create_volume(req).await.map_err(RuntimeError::docker(format!("create volume {vname}")))?;
    }
    let opts = CreateContainerOptionsBuilder::new().name(&name).build();
    docker
        .create_container(Some(opts), create_body(spec, labels))
        .await
        .map_err(RuntimeError::docker(format!("create container {name} from {}", spec.image)))?;
    for net in &spec.extra_networks {
        let endpoint_config = spec.extra_addresses.get(net).map(|ip| EndpointSettings {
            ipam_config: Some(EndpointIpamConfig { ipv4_address: Some(ip.to_string()), ..Default::default() }),
            aliases: Some(vec![spec.instance.clone()]),
            ..Default::default()
        });
        let req = bollard::models::NetworkConnectRequest { container: name.clone(), endpoint_config };
        docker.connect_network(net, req).await.map_err(RuntimeError::docker(format!("connect {name} to {net}")))?;
    }
    if !spec.files.is_empty() {
        let tar = files_tar(&spec.files)
            .map_err(|source| RuntimeError::Io { context: format!("packing files for {name}"), source })?;
        let opts = bollard::query_parameters::UploadToContainerOptionsBuilder::new().path("/").build();
        docker
            .upload_to_container(&name, Some(opts), bollard::body_full(tar.into()))
            .await
            .map_err(RuntimeError::docker(format!("copy files into {name}")))?;
    }
    docker.start_container(&name, None).await.map_err(RuntimeError::docker(format!("start container {name}")))?;
    Ok(name)
}

/// A tar of files with absolute paths (stored relative to `/`), readable by
/// every user: the images run their services as unprivileged users.
fn files_tar(files: &[(String, u32, String)]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, path.trim_start_matches('/'), body.as_bytes())?;
    }
    b.into_inner()
}

/// Host addresses Docker picked for the container's published ports.
pub async fn published_ports(docker: &Docker, name: &str) -> Result<HashMap<u16, SocketAddr>, RuntimeError> {
    let info = docker
        .inspect_container(name, None)
        .await
        .map_err(RuntimeError::docker(format!("inspect container {name}")))?;
    let mut out = HashMap::new();
    let ports = info.network_settings.and_then(|n| n.ports).unwrap_or_default();
    for (key, bindings) in ports {
        let Some(cport) = key.split('/').next().and_then(|p| p.parse::<u16>().ok()) else {
            continue;
        };
        for b in bindings.unwrap_or_default() {
            let ip = b.host_ip.unwrap_or_default();
            let port = b.host_port.and_then(|p| p.parse::<u16>().ok());
            if let (Ok(ip), Some(port)) = (ip.parse(), port) {
                out.insert(cport, SocketAddr::new(ip, port));
            }
        }
    }
    Ok(out)
}

/// Running, or exited with a code (the container is gone: `None`).
pub async fn state(docker: &Docker, name: &str) -> Option<ContainerState> {
    let info = docker.inspect_container(name, None).await.ok()?;
    let st = info.state?;
    Some(ContainerState {
        running: st.running.unwrap_or(false),
        paused: st.paused.unwrap_or(false),
        exit_code: st.exit_code.unwrap_or(0),
        status: st.status.map(|s| s.to_string()).unwrap_or_default(),
    })
}

#[derive(Debug, Clone)]
pub struct ContainerState {
    pub running: bool,
    pub paused: bool,
    pub exit_code: i64,
    pub status: String,
}

/// The last lines a container wrote, indented, for error messages.
pub async fn log_tail(docker: &Docker, name: &str, lines: usize) -> String {
    let out = logs(docker, name, lines).await;
    out.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

pub async fn remove(docker: &Docker, name: &str) -> Result<(), RuntimeError> {
    let opts = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
    match docker.remove_container(name, Some(opts)).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        // Another process (a parallel sweep) is removing it: done once it is gone.
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, message })
            if message.contains("in progress") =>
        {
            for _ in 0..300 {
                if docker.inspect_container(name, None).await.is_err() {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(RuntimeError::docker(format!("remove container {name}"))(
                bollard::errors::Error::DockerResponseServerError { status_code: 409, message },
            ))
        }
        Err(e) => Err(RuntimeError::docker(format!("remove container {name}"))(e)),
    }
}

/// A throwaway container: a command in one subnet (or on the host's
/// network), with host files mounted read-only.
#[derive(Debug, Clone, Default)]
pub struct OneShot {
    pub image: String,
    /// The Docker network, or `None` for the host's network namespace.
    pub network: Option<String>,
    /// A fixed address in `network` (Docker picks one otherwise).
    pub address: Option<std::net::Ipv4Addr>,
    pub argv: Vec<String>,
    /// (host path, container path), mounted read-only.
    pub mounts: Vec<(String, String)>,
    /// (host path, container path), mounted writable.
    pub writable_mounts: Vec<(String, String)>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Linux capabilities added (the link agent needs `NET_ADMIN`).
    pub cap_add: Vec<String>,
    /// The user to run as, or the image's own.
    pub user: Option<String>,
    /// The `voyager-sim.instance` label and the name's stem.
    pub role: String,
}

impl OneShot {
    fn body(&self, labels: &Labels) -> ContainerCreateBody {
        let networking_config = match (&self.network, self.address) {
            (Some(net), Some(ip)) => Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    net.clone(),
                    EndpointSettings {
                        ipam_config: Some(EndpointIpamConfig {
                            ipv4_address: Some(ip.to_string()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )])),
            }),
            _ => None,
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            env: (!self.env.is_empty()).then(|| self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            entrypoint: Some(vec![]),
            cmd: Some(self.argv.clone()),
            user: self.user.clone(),
            labels: Some(labels.with_instance(&self.role)),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone().unwrap_or_else(|| "host".into())),
                binds: Some(
                    self.mounts
                        .iter()
                        .map(|(h, c)| format!("{h}:{c}:ro"))
                        .chain(self.writable_mounts.iter().map(|(h, c)| format!("{h}:{c}")))
                        .collect(),
                ),
                cap_add: (!self.cap_add.is_empty()).then(|| self.cap_add.clone()),
                init: Some(true),
                ..Default::default()
            }),
            networking_config,
            ..Default::default()
        }
    }

    /// Create and start it; returns the container name. Labelled like the
    /// stack's own containers, so a sweep catches it if we die.
    pub async fn start(&self, docker: &Docker, labels: &Labels) -> Result<String, RuntimeError> {
        let name = container_name(&labels.stack, &format!("{}-{}", self.role, labels::random_suffix()));
        let place = self.network.as_deref().unwrap_or("the host network");
        docker
            .create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), self.body(labels))
            .await
            .map_err(RuntimeError::docker(format!("create {} container in {place}", self.role)))?;
        if let Err(e) = docker.start_container(&name, None).await {
            let _ = remove(docker, &name).await;
            return Err(RuntimeError::docker(format!("start {name}"))(e));
        }
        Ok(name)
    }

    /// Run it to the end and collect its exit code and output.
    pub async fn run(&self, docker: &Docker, labels: &Labels) -> Result<(i64, String), RuntimeError> {
        let name = self.start(docker, labels).await?;
        let result = async {
            let mut wait = docker.wait_container(&name, None);
            let mut code = 0;
            while let Some(r) = wait.next().await {
                match r {
                    Ok(w) => code = w.status_code,
                    // bollard reports a non-zero exit as an error carrying the code.
                    Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => code = c,
                    Err(e) => return Err(RuntimeError::docker(format!("wait for {name}"))(e)),
                }
            }
            Ok((code, logs(docker, &name, 100_000).await))
        }
        .await;
        remove(docker, &name).await?;
        result
    }
}

/// A container's output, unindented.
pub async fn logs(docker: &Docker, name: &str, lines: usize) -> String {
    let opts = LogsOptionsBuilder::new().stdout(true).stderr(true).tail(&lines.to_string()).build();
    let mut s = docker.logs(name, Some(opts));
    let mut out = String::new();
    while let Some(Ok(chunk)) = s.next().await {
        out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    out
}

/// SIGKILL, as a crashed host would: no shutdown hooks run.
pub async fn kill(docker: &Docker, name: &str) -> Result<(), RuntimeError> {
    let opts = bollard::query_parameters::KillContainerOptionsBuilder::new().signal("SIGKILL").build();
    docker.kill_container(name, Some(opts)).await.map_err(RuntimeError::docker(format!("kill container {name}")))
}

/// Start an existing (stopped or killed) container again.
pub async fn restart_stopped(docker: &Docker, name: &str) -> Result<(), RuntimeError> {
    docker.start_container(name, None).await.map_err(RuntimeError::docker(format!("start container {name}")))
}

/// Freeze every process of the container (cgroup freezer).
pub async fn pause(docker: &Docker, name: &str) -> Result<(), RuntimeError> {
    docker.pause_container(name).await.map_err(RuntimeError::docker(format!("pause container {name}")))
}

pub async fn unpause(docker: &Docker, name: &str) -> Result<(), RuntimeError> {
    docker.unpause_container(name).await.map_err(RuntimeError::docker(format!("unpause container {name}")))
}

/// What a command run inside a container did.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub code: i64,
    /// stdout and stderr, interleaved as written.
    pub output: String,
}

/// Run `argv` inside a running container and wait for it to end.
pub async fn exec(docker: &Docker, name: &str, argv: &[&str]) -> Result<ExecOutput, RuntimeError> {
    use bollard::exec::{CreateExecOptions, StartExecResults};
    let what = || format!("run `{}` in {name}", argv.join(" "));
    let created = docker
        .create_exec(
            name,
            CreateExecOptions {
                cmd: Some(argv.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(RuntimeError::docker(what()))?;
    let mut output = String::new();
    if let StartExecResults::Attached { output: mut stream, .. } =
        docker.start_exec(&created.id, None).await.map_err(RuntimeError::docker(what()))?
    {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => output.push_str(&String::from_utf8_lossy(&c.into_bytes())),
                Err(e) => return Err(RuntimeError::docker(what())(e)),
            }
        }
    }
    let inspect = docker.inspect_exec(&created.id).await.map_err(RuntimeError::docker(what()))?;
    Ok(ExecOutput { code: inspect.exit_code.unwrap_or(-1), output })
}

/// [`exec`], with a non-zero exit turned into an error that carries the
/// command's last lines.
pub async fn exec_ok(docker: &Docker, name: &str, argv: &[&str]) -> Result<String, RuntimeError> {
    let out = exec(docker, name, argv).await?;
    if out.code == 0 {
        return Ok(out.output);
    }
    let lines: Vec<&str> = out.output.lines().collect();
    Err(RuntimeError::Exec {
        container: name.to_string(),
        command: argv.join(" "),
        code: out.code,
        tail: lines[lines.len().saturating_sub(25)..].iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n"),
    })
}

/// Write files into a container (running or not): (path, mode, content).
pub async fn upload(docker: &Docker, name: &str, files: &[(String, u32, Vec<u8>)]) -> Result<(), RuntimeError> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, path.trim_start_matches('/'), &body[..])
            .map_err(|source| RuntimeError::Io { context: format!("packing files for {name}"), source })?;
    }
    let tar =
        b.into_inner().map_err(|source| RuntimeError::Io { context: format!("packing files for {name}"), source })?;
    let opts = bollard::query_parameters::UploadToContainerOptionsBuilder::new().path("/").build();
    docker
        .upload_to_container(name, Some(opts), bollard::body_full(tar.into()))
        .await
        .map_err(RuntimeError::docker(format!("copy files into {name}")))
}
