//! Shaping the links between subnets where the kernel may have no netem:
//! delay and jitter by the link agent (a companion binary holding packets
//! the firewall queues to it), rate caps by HTB on the destination subnet's
//! bridge. Loss and cuts are plain firewall rules ([`super::route`]).
//!
//! Agents are containers on the host's network, labelled like the stack's
//! own, so the sweep removes them; their queue rules carry the stack's
//! comment and are swept with the route. Rate caps live on the bridges and
//! go with them.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use sha2::{Digest, Sha256};

use super::container::{self, OneShot};
use super::labels::{self, Labels};
use super::RuntimeError;
use crate::companion;
use crate::stack::{Cidr, Stack, Tier};

/// The `voyager-sim.instance` label of the agent holding the stack's normal
/// inter-AZ latency, and the stem of fault agents'.
pub const BASE_AGENT: &str = "netagent-az";
pub const FAULT_AGENT: &str = "netagent-fault";

/// The bridge device of a subnet's network. Named by us, not Docker, so rate
/// caps find it from names alone; 15 characters is the kernel's limit.
pub fn bridge_name(stack: &str, az: &str, tier: Tier) -> String {
    let digest = Sha256::digest(format!("{stack}/{az}/{tier}").as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("vs{hex}")
}

/// The first queue number an agent tries: spread by stack and role so
/// parallel stacks rarely probe the same numbers (the agent skips taken ones).
fn queue_hint(stack: &str, role: &str) -> u16 {
    let d = Sha256::digest(format!("{stack}/{role}").as_bytes());
    1000 + (u16::from_be_bytes([d[0], d[1]]) % 50_000)
}

/// What a delay agent holds each packet for: `delay` ± uniform `jitter`,
/// drawn from `seed`.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    pub delay: Duration,
    pub jitter: Duration,
    pub seed: u64,
}

/// Start a delay agent and return the queue it holds.
pub async fn start_delay_agent(
    docker: &Docker,
    labels: &Labels,
    role: &str,
    image: &str,
    binary: &Path,
    hold: Hold,
) -> Result<u16, RuntimeError> {
    let Hold { delay, jitter, seed } = hold;
    let c = companion::NETAGENT;
    let shot = OneShot {
        image: image.to_string(),
        network: None,
        address: None,
        argv: [
            companion::mount_point(c),
            "delay".into(),
            "--queue-from".into(),
            queue_hint(&labels.stack, role).to_string(),
            "--delay-us".into(),
            delay.as_micros().to_string(),
            "--jitter-us".into(),
            jitter.as_micros().to_string(),
            "--seed".into(),
            seed.to_string(),
        ]
        .into(),
        mounts: vec![(binary.display().to_string(), companion::mount_point(c))],
        cap_add: vec!["NET_ADMIN".into()],
        role: role.to_string(),
        ..Default::default()
    };
    let name = shot.start(docker, labels).await?;
    let line = wait_for_line(docker, &name, "bound queue ").await?;
    line.split_whitespace().next().and_then(|q| q.parse().ok()).ok_or_else(|| RuntimeError::Exited {
        container: name,
        code: -1,
        logs: format!("    unreadable queue announcement: bound queue {line}"),
    })
}

/// Wait until a companion container prints a line starting with `prefix`
/// (its readiness announcement) and return the rest of that line. A
/// container that exits, or stays silent for a minute, is removed and
/// reported with its last lines.
async fn wait_for_line(docker: &Docker, name: &str, prefix: &str) -> Result<String, RuntimeError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = container::logs(docker, name, 20).await;
        if let Some(rest) = out.lines().find_map(|l| l.strip_prefix(prefix)) {
            return Ok(rest.to_string());
        }
        let st = container::state(docker, name).await;
        if st.as_ref().is_none_or(|s| !s.running) || Instant::now() > deadline {
            let logs = container::log_tail(docker, name, 20).await;
            let _ = container::remove(docker, name).await;
            return Err(RuntimeError::Exited {
                container: name.to_string(),
                code: st.map(|s| s.exit_code).unwrap_or(-1),
                logs,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Remove a stack's agents whose role starts with `stem`; how many.
pub async fn remove_agents(docker: &Docker, stack: &str, stem: &str) -> Result<usize, RuntimeError> {
    let f = std::collections::HashMap::from([("label".to_string(), vec![format!("{}={stack}", labels::STACK)])]);
    let cs = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&f).build()))
        .await
        .map_err(RuntimeError::docker("list containers"))?;
    let mut n = 0;
    for c in cs {
        let role = c.labels.as_ref().and_then(|l| l.get(labels::INSTANCE)).cloned().unwrap_or_default();
        if !role.starts_with(stem) {
            continue;
        }
        if let Some(name) = c.names.and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_string())) {
            container::remove(docker, &name).await?;
            n += 1;
        }
    }
    Ok(n)
}

async fn tc(args: &[String]) -> Result<String, RuntimeError> {
    super::host_tool("tc", args, "rate caps need iproute2: apt-get install -y iproute2").await
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// The bridge of the subnet holding a destination network.
fn bridge_for(stack_name: &str, stack: &Stack, dst: Cidr) -> Option<String> {
    stack.subnets().find(|(_, _, c)| c.contains_net(&dst)).map(|(az, tier, _)| bridge_name(stack_name, &az.name, tier))
}

/// Cap traffic from each source to each destination network at `kbit`.
/// `class` tells caps apart on one bridge. HTB on the destination bridge's
/// egress sees exactly the packets routed into that subnet.
pub async fn install_rate(
    stack_name: &str,
    stack: &Stack,
    pairs: &[(Cidr, Cidr)],
    kbit: u64,
    class: u16,
) -> Result<(), RuntimeError> {
    let mut devices: Vec<(String, Vec<(Cidr, Cidr)>)> = vec![];
    for (src, dst) in pairs {
        let dev = bridge_for(stack_name, stack, *dst).ok_or_else(|| RuntimeError::HostTool {
            command: "tc".into(),
            stderr: format!("no subnet of the stack holds {dst}"),
        })?;
        match devices.iter_mut().find(|(d, _)| *d == dev) {
            Some((_, v)) => v.push((*src, *dst)),
            None => devices.push((dev, vec![(*src, *dst)])),
        }
    }
    let id = format!("{class:x}");
    for (dev, pairs) in devices {
        let shown = tc(&words(&format!("qdisc show dev {dev}"))).await?;
        if !shown.contains("htb 1: root") {
            tc(&words(&format!("qdisc replace dev {dev} root handle 1: htb default 0"))).await?;
        }
        tc(&words(&format!("class add dev {dev} parent 1: classid 1:{id} htb rate {kbit}kbit ceil {kbit}kbit")))
            .await?;
        // A bridge has no transmit queue length; without an explicit limit
        // HTB's leaf would hold one packet and drop the rest.
        tc(&words(&format!("qdisc add dev {dev} parent 1:{id} handle {id}: pfifo limit 1000"))).await?;
        for (src, dst) in pairs {
            tc(&words(&format!(
                "filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip src {src} match ip dst {dst} flowid 1:{id}"
            )))
            .await?;
        }
    }
    Ok(())
}

/// Remove every rate cap on the stack's bridges (none is fine).
pub async fn remove_rates(stack_name: &str, stack: &Stack) {
    for (az, tier, _) in stack.subnets() {
        let dev = bridge_name(stack_name, &az.name, tier);
        let _ = tc(&words(&format!("qdisc del dev {dev} root"))).await;
    }
}

/// Where a probe's two ends run: the image with the link agent mounted,
/// and a (network, reserved address) for each end.
pub struct ProbeSites {
    pub image: String,
    pub binary: std::path::PathBuf,
    pub client: (String, Ipv4Addr),
    pub server: (String, Ipv4Addr),
}

impl ProbeSites {
    fn shot(&self, role: &str, site: &(String, Ipv4Addr), args: &[String]) -> OneShot {
        let c = companion::NETAGENT;
        let mut argv = vec![companion::mount_point(c)];
        argv.extend_from_slice(args);
        OneShot {
            image: self.image.clone(),
            network: Some(site.0.clone()),
            address: Some(site.1),
            argv,
            mounts: vec![(self.binary.display().to_string(), companion::mount_point(c))],
            role: role.to_string(),
            ..Default::default()
        }
    }

    /// Run the agent's `server` command at the server end and its `client`
    /// command at the client end; returns the client's output.
    async fn run(
        &self,
        docker: &Docker,
        labels: &Labels,
        server: &[&str],
        client: &[String],
    ) -> Result<String, RuntimeError> {
        let server: Vec<String> = server.iter().map(|s| s.to_string()).collect();
        let name = self.shot("probe-server", &self.server, &server).start(docker, labels).await?;
        // Both servers announce `… listening on ADDR` once bound; a client
        // started before that would count its first probes as lost.
        wait_for_line(docker, &name, &format!("{} listening on ", server[0])).await?;
        let result = self.shot("probe-client", &self.client, client).run(docker, labels).await;
        container::remove(docker, &name).await?;
        let (code, out) = result?;
        if code != 0 {
            return Err(RuntimeError::Exited { container: "probe-client".into(), code, logs: out });
        }
        Ok(out)
    }

    /// UDP round trips client → server → client; lost probes are missing
    /// from the list, and counted.
    pub async fn round_trips(
        &self,
        docker: &Docker,
        labels: &Labels,
        count: u32,
        interval: Duration,
    ) -> Result<(Vec<Duration>, u32), RuntimeError> {
        let target = format!("{}:7000", self.server.1);
        let client = ["ping", "--target", &target, "--count", &count.to_string()]
            .into_iter()
            .map(String::from)
            .chain(["--interval-ms".to_string(), interval.as_millis().to_string()])
            // A lost probe costs its timeout: short, but above any delay a
            // test or bench asks for.
            .chain(["--timeout-ms".to_string(), "300".to_string()])
            .collect::<Vec<_>>();
        let out = self.run(docker, labels, &["echo", "--listen", "0.0.0.0:7000"], &client).await?;
        let rtts: Vec<Duration> = out
            .lines()
            .filter_map(|l| l.strip_prefix("rtt_us ")?.trim().parse().ok())
            .map(Duration::from_micros)
            .collect();
        Ok((rtts.clone(), count.saturating_sub(rtts.len() as u32)))
    }

    /// TCP throughput client → server for `bytes`, in kbit/s.
    pub async fn throughput(&self, docker: &Docker, labels: &Labels, bytes: u64) -> Result<f64, RuntimeError> {
        let target = format!("{}:7001", self.server.1);
        let client: Vec<String> =
            ["send", "--target", &target, "--bytes", &bytes.to_string()].into_iter().map(String::from).collect();
        let out = self.run(docker, labels, &["sink", "--listen", "0.0.0.0:7001"], &client).await?;
        out.lines()
            .find_map(|l| l.strip_prefix("throughput_kbit ")?.split_whitespace().next()?.parse().ok())
            .ok_or(RuntimeError::Exited { container: "probe-client".into(), code: 0, logs: out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names_fit_the_kernel_and_differ_per_subnet() {
        let a = bridge_name("voyager", "a", Tier::Private);
        assert!(a.len() <= 15, "{a}");
        assert_ne!(a, bridge_name("voyager", "a", Tier::Public));
        assert_ne!(a, bridge_name("voyager2", "a", Tier::Private));
        assert_eq!(a, bridge_name("voyager", "a", Tier::Private));
    }

    #[test]
    fn a_rate_cap_goes_on_the_bridge_of_the_destination_subnet() {
        let s = crate::harness::builtin_stack();
        let dst: Cidr = "10.0.2.20/32".parse().unwrap();
        assert_eq!(bridge_for("t", &s, dst), Some(bridge_name("t", "b", Tier::Private)));
        assert_eq!(bridge_for("t", &s, "192.168.0.0/24".parse().unwrap()), None);
    }
}
