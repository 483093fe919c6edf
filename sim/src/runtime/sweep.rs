//! Removing what a stack left behind, by label only: no state file is needed,
//! so this holds after a SIGKILL at any point of `up`.

use std::collections::{BTreeSet, HashMap};

use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use bollard::Docker;
use futures_util::future::join_all;

use super::labels::{self, STACK};
use super::{container, route, RuntimeError};

/// What a sweep removed, for messages and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub containers: usize,
    pub networks: usize,
    pub volumes: usize,
}

impl Swept {
    pub fn is_empty(&self) -> bool {
        self.containers + self.networks + self.volumes == 0
    }
}

fn filter(label: String) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![label])])
}

/// Everything Docker holds for one stack: (containers, networks, volumes).
pub async fn leftovers(docker: &Docker, stack: &str) -> Result<(Vec<String>, Vec<String>, Vec<String>), RuntimeError> {
    leftovers_by(docker, format!("{STACK}={stack}")).await
}

async fn leftovers_by(docker: &Docker, label: String) -> Result<(Vec<String>, Vec<String>, Vec<String>), RuntimeError> {
    let f = filter(label);
    let cs = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&f).build()))
        .await
        .map_err(RuntimeError::docker("list containers"))?;
    let ns = docker
        .list_networks(Some(ListNetworksOptionsBuilder::new().filters(&f).build()))
        .await
        .map_err(RuntimeError::docker("list networks"))?;
    let vs = docker
        .list_volumes(Some(ListVolumesOptionsBuilder::new().filters(&f).build()))
        .await
        .map_err(RuntimeError::docker("list volumes"))?;
    Ok((
        cs.into_iter()
            .filter_map(|c| c.names.and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_string())))
            .collect(),
        ns.into_iter().filter_map(|n| n.name).collect(),
        vs.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect(),
    ))
}

/// Names of every stack that has anything in Docker or the firewall.
pub async fn all_stacks(docker: &Docker) -> Result<Vec<String>, RuntimeError> {
    let f = filter(STACK.to_string());
    let mut names: BTreeSet<String> = BTreeSet::new();
    let cs = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&f).build()))
        .await
        .map_err(RuntimeError::docker("list containers"))?;
    names.extend(cs.into_iter().filter_map(|c| c.labels.and_then(|l| l.get(STACK).cloned())));
    let ns = docker
        .list_networks(Some(ListNetworksOptionsBuilder::new().filters(&f).build()))
        .await
        .map_err(RuntimeError::docker("list networks"))?;
    names.extend(ns.into_iter().filter_map(|n| n.labels.and_then(|l| l.get(STACK).cloned())));
    let vs = docker
        .list_volumes(Some(ListVolumesOptionsBuilder::new().filters(&f).build()))
        .await
        .map_err(RuntimeError::docker("list volumes"))?;
    names.extend(vs.volumes.unwrap_or_default().into_iter().filter_map(|v| v.labels.get(STACK).cloned()));
    names.extend(route::stacks_with_rules().await);
    Ok(names.into_iter().collect())
}

/// Remove every container, network, volume and firewall rule of a stack.
pub async fn sweep_stack(docker: &Docker, stack: &str) -> Result<Swept, RuntimeError> {
    // A process killed mid-request leaves the request running in dockerd: a
    // network or container can appear just after we listed. So sweep until a
    // second look, a moment after an empty one, still finds nothing.
    let mut total = Swept::default();
    let mut quiet_looks = 0;
    let mut busy_network = None;
    for _ in 0..20 {
        let (found, busy) = sweep_once(docker, stack).await?;
        busy_network = busy;
        if busy_network.is_some() {
            // A container joined the network after the listing (see above):
            // the next round removes it, then the network.
            quiet_looks = 0;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        } else if found.is_empty() {
            quiet_looks += 1;
            if quiet_looks == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        } else {
            quiet_looks = 0;
            total.containers += found.containers;
            total.networks += found.networks;
            total.volumes += found.volumes;
        }
    }
    if let Some((n, e)) = busy_network {
        // Nothing attached, yet "active endpoints": libnetwork kept an
        // endpoint of a container that is gone (Docker 20.10 does, after
        // a container is removed while it is being connected). Only a
        // restart of dockerd cleans its store.
        let attached = docker
            .inspect_network(&n, None::<bollard::query_parameters::InspectNetworkOptions>)
            .await
            .map(|i| i.containers.unwrap_or_default().len())
            .unwrap_or(1);
        if attached == 0 {
            return Err(RuntimeError::StaleEndpoint {
                network: n,
                help: "restart dockerd (as root: `pkill -x dockerd`, then `source scripts/setup.sh` starts it \
                       again), then run `voyager-sim down --all`"
                    .into(),
            });
        }
        return Err(RuntimeError::docker(format!("remove network {n}"))(e));
    }
    route::remove(stack).await?;
    Ok(total)
}

/// One round; also returns a network Docker would not remove yet because
/// something is still attached to it.
async fn sweep_once(
    docker: &Docker,
    stack: &str,
) -> Result<(Swept, Option<(String, bollard::errors::Error)>), RuntimeError> {
    let (cs, ns, vs) = leftovers(docker, stack).await?;
    // Containers first: networks and volumes in use cannot be removed.
    for r in join_all(cs.iter().map(|c| container::remove(docker, c))).await {
        r?;
    }
    let mut busy = None;
    for n in &ns {
        match docker.remove_network(n).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(e @ bollard::errors::Error::DockerResponseServerError { status_code: 403, .. })
                if e.to_string().contains("active endpoints") =>
            {
                busy = Some((n.clone(), e));
            }
            Err(e) => return Err(RuntimeError::docker(format!("remove network {n}"))(e)),
        }
    }
    for v in &vs {
        match docker.remove_volume(v, Some(RemoveVolumeOptionsBuilder::new().force(true).build())).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(e) => return Err(RuntimeError::docker(format!("remove volume {v}"))(e)),
        }
    }
    Ok((Swept { containers: cs.len(), networks: ns.len(), volumes: vs.len() }, busy))
}

/// Sweep stacks whose owning process is gone (library runs killed before they
/// could clean up), and firewall rules of stacks that have no network left.
/// Stacks started by `up` have no owner and are left to `down`.
/// A stack that cannot be swept does not stop the others, nor the start
/// that asked: it is named through `p` and left for `down`.
pub async fn sweep_orphans(docker: &Docker, p: &crate::progress::Progress) -> Result<Vec<String>, RuntimeError> {
    // Starts in parallel would all find the same orphans and trip over each
    // other's removals; one sweep at a time is plenty fast.
    let _lock = super::lock::FileLock::acquire(
        &std::env::temp_dir().join("voyager-sim-sweep.lock"),
        &crate::progress::Progress::silent(),
        "sweep",
    )
    .await
    .map_err(|source| RuntimeError::Io { context: "taking the sweep lock".into(), source })?;
    let f = filter(labels::OWNER.to_string());
    let mut dead: BTreeSet<String> = BTreeSet::new();
    let mut consider = |labels: Option<HashMap<String, String>>| {
        if let Some(l) = labels {
            if let (Some(stack), Some(owner)) = (l.get(STACK), l.get(labels::OWNER)) {
                if !labels::owner_alive(owner) {
                    dead.insert(stack.clone());
                }
            }
        }
    };
    let cs = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&f).build()))
        .await
        .map_err(RuntimeError::docker("list containers"))?;
    cs.into_iter().for_each(|c| consider(c.labels));
    let ns = docker
        .list_networks(Some(ListNetworksOptionsBuilder::new().filters(&f).build()))
        .await
        .map_err(RuntimeError::docker("list networks"))?;
    ns.into_iter().for_each(|n| consider(n.labels));
    let vs = docker
        .list_volumes(Some(ListVolumesOptionsBuilder::new().filters(&f).build()))
        .await
        .map_err(RuntimeError::docker("list volumes"))?;
    vs.volumes.unwrap_or_default().into_iter().for_each(|v| consider(Some(v.labels)));
    let mut swept = vec![];
    for stack in dead {
        match sweep_stack(docker, &stack).await {
            Ok(_) => swept.push(stack),
            Err(e) => p.say(&format!("could not remove the orphaned stack `{stack}`: {e}")),
        }
    }
    for stack in route::stacks_with_rules().await {
        let (_, nets, _) = leftovers(docker, &stack).await?;
        if nets.is_empty() {
            route::remove(&stack).await?;
        }
    }
    Ok(swept)
}
