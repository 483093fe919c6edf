//! `RunningStack`, the handle to a started stack: typed endpoints, acting
//! on instances, probes between AZs, and removal (explicit, or on drop
//! unless detached).

use std::path::Path;
use std::time::Duration;

use bollard::Docker;

use crate::error::{Error, Result};
use crate::images::image_for;
use crate::progress::Progress;
use crate::runtime::labels::{self, Labels};
use crate::runtime::sweep::{self, Swept};
use crate::runtime::{container, docker, link, network};
use crate::services::{self, postgres::PostgresEndpoint};
use crate::stack::{parse_stack, ServiceKind, Stack, Tier};
use crate::state::{self, InstanceState, RunState};

use super::status::env_of;
use super::Timings;
use crate::services::lifecycle::wait_restarted;

/// A started stack. Dropping it removes everything it created unless it was
/// started [`Sim::detached`].
pub struct RunningStack {
    pub(crate) docker: Docker,
    pub(crate) state: RunState,
    pub(crate) timings: Timings,
    pub(crate) cleanup_on_drop: bool,
    pub(crate) done: bool,
}

impl RunningStack {
    pub fn name(&self) -> &str {
        &self.state.stack
    }

    pub fn state(&self) -> &RunState {
        &self.state
    }

    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// The PostgreSQL writer endpoint (always the current primary), if the
    /// stack runs PostgreSQL.
    pub fn postgres(&self) -> Option<PostgresEndpoint> {
        services::postgres::writer(&self.state)
    }

    /// The PostgreSQL reader endpoint (the read replicas).
    pub fn postgres_reader(&self) -> Option<PostgresEndpoint> {
        services::postgres::reader(&self.state)
    }

    /// One PostgreSQL node directly, bypassing the endpoints.
    pub fn postgres_instance(&self, name: &str) -> Option<PostgresEndpoint> {
        services::postgres::instance(&self.state, name)
    }

    /// The Kafka cluster (brokers and bootstrap list), if the stack runs Kafka.
    pub fn kafka(&self) -> Option<crate::services::kafka::KafkaEndpoint> {
        services::kafka::endpoint(&self.state)
    }

    /// InfluxDB, if the stack runs it.
    pub fn s3(&self) -> Option<crate::services::s3::S3Endpoint> {
        crate::services::s3::endpoint(&self.state)
    }

    pub fn vault(&self) -> Option<crate::services::vault::VaultEndpoint> {
        crate::services::vault::endpoint(&self.state)
    }

    pub fn auth0(&self) -> Option<crate::services::auth0::Auth0Endpoint> {
        crate::services::auth0::endpoint(&self.state)
    }

    /// The Kubernetes tier, once bootstrapped: its kubeconfig and a ready
    /// `kube::Client` through [`KubernetesEndpoint::client`].
    ///
    /// [`KubernetesEndpoint::client`]: crate::services::kubernetes::KubernetesEndpoint::client
    pub fn kubernetes(&self) -> Option<crate::services::kubernetes::KubernetesEndpoint> {
        crate::services::kubernetes::endpoint(&self.state)
    }

    /// Load Docker images of this host into every running Kubernetes node
    /// (no registry needed), as `kind load docker-image` does.
    pub async fn kube_load(&self, images: &[String], p: &Progress) -> Result<Vec<(String, Vec<String>)>> {
        if self.kubernetes().is_none() {
            return Err(Error::usage(
                format!("stack `{}` runs no Kubernetes", self.state.stack),
                "add a `[service.kubernetes]` to the stack file (fixtures/voyager.toml has one)",
            ));
        }
        let mut out = vec![];
        for image in images {
            let nodes = crate::services::kubernetes::actions::load_image(&self.docker, &self.state, image, p)
                .await
                .map_err(|e| Error::usage(e, "name an image as `docker images` shows it, e.g. `myapp:1.0`"))?;
            out.push((image.clone(), nodes));
        }
        Ok(out)
    }

    /// Run a command in a pod through its node's container runtime (not
    /// through the API server, so it works while the network is cut).
    pub async fn exec_in_pod(&self, namespace: &str, pod: &str, argv: &[&str]) -> Result<container::ExecOutput> {
        crate::services::kubernetes::actions::exec_in_pod(&self.docker, &self.state, namespace, pod, argv)
            .await
            .map_err(|e| Error::usage(e, "name a running pod as `kubectl get pods` shows it"))
    }

    pub fn influxdb(&self) -> Option<crate::services::influxdb::InfluxEndpoint> {
        services::influxdb::endpoint(&self.state)
    }

    pub fn env(&self) -> Vec<(String, String)> {
        env_of(&self.state)
    }

    pub(crate) fn instance(&self, name: &str) -> Result<&InstanceState> {
        self.state.instances.iter().find(|i| i.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.state.instances.iter().map(|i| i.name.as_str()).collect();
            Error::usage(
                format!("no instance `{name}` in stack `{}`", self.state.stack),
                format!("instances: {}", names.join(", ")),
            )
        })
    }

    /// Kill an instance with SIGKILL (a crashed host: no clean shutdown).
    pub async fn kill_instance(&self, name: &str) -> Result<()> {
        let inst = self.instance(name)?;
        Ok(container::kill(&self.docker, &inst.container).await?)
    }

    /// Start a killed or stopped instance again and wait until it answers.
    pub async fn start_instance(&self, name: &str, timeout: Duration) -> Result<Duration> {
        let inst = self.instance(name)?;
        container::restart_stopped(&self.docker, &inst.container).await?;
        wait_restarted(&self.docker, &self.state, inst, timeout, &Progress::silent()).await
    }

    /// The labels of what this run creates.
    pub(crate) fn labels(&self) -> Labels {
        Labels {
            run_id: self.state.run_id.clone(),
            stack: self.state.stack.clone(),
            owner: self.cleanup_on_drop.then(labels::this_process_owner),
        }
    }

    /// Where link probes run between AZ `from` and AZ `to`: each AZ's
    /// private subnet, at addresses the stack keeps for the harness (.8 and
    /// .9; services start at .10).
    fn probe_sites(&self, from: &str, to: &str) -> Result<link::ProbeSites> {
        let stack = self.stack()?;
        let site = |az: &str, host: u32| -> Result<(String, std::net::Ipv4Addr)> {
            let a = stack.az(az).ok_or_else(|| {
                Error::usage(format!("unknown AZ `{az}`"), "name AZs as `voyager-sim status` shows them")
            })?;
            let ip = std::net::Ipv4Addr::from(u32::from(a.private.network()) + host);
            Ok((network::network_name(&self.state.stack, az, Tier::Private), ip))
        };
        let binary =
            crate::companion::NETAGENT.locate().map_err(|e| Error::usage(e, "link probes run the link agent"))?;
        let image = crate::images::companion_base(self.state.images);
        Ok(link::ProbeSites { image, binary, client: site(from, 8)?, server: site(to, 9)? })
    }

    /// UDP round trips AZ `from` → AZ `to` → back, by the link agent's
    /// pinger: what a link's delay really is. Returns each round trip and
    /// how many probes were lost.
    pub async fn round_trips(
        &self,
        from: &str,
        to: &str,
        count: u32,
        interval: Duration,
    ) -> Result<(Vec<Duration>, u32)> {
        let sites = self.probe_sites(from, to)?;
        Ok(sites.round_trips(&self.docker, &self.labels(), count, interval).await?)
    }

    /// TCP throughput from AZ `from` to AZ `to`, in kbit/s, sending `bytes`.
    pub async fn throughput(&self, from: &str, to: &str, bytes: u64) -> Result<f64> {
        let sites = self.probe_sites(from, to)?;
        Ok(sites.throughput(&self.docker, &self.labels(), bytes).await?)
    }

    /// Run a command in a throwaway container placed in one of the stack's
    /// subnets: how tests check what the VPC lets through.
    pub async fn run_in_subnet(&self, az: &str, tier: Tier, argv: &[&str]) -> Result<(i64, String)> {
        let net = network::network_name(&self.state.stack, az, tier);
        let image = image_for(ServiceKind::Postgres, self.state.images);
        let labels = self.labels();
        let shot = container::OneShot {
            image,
            network: Some(net),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            role: "probe".into(),
            ..Default::default()
        };
        Ok(shot.run(&self.docker, &labels).await?)
    }

    /// Run a command from a service's own image on the host's network, so
    /// it reaches the stack through the same 127.0.0.1 ports as any host
    /// client: how benches run the field's own tools (pgbench, Kafka's perf
    /// tool) on the path the load generator takes. `out` is mounted
    /// writable at `/out` for files the tool reads or writes.
    pub async fn run_beside_host(&self, kind: ServiceKind, argv: &[&str], out: &Path) -> Result<(i64, String)> {
        let shot = container::OneShot {
            image: image_for(kind, self.state.images),
            network: None,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            writable_mounts: vec![(out.display().to_string(), "/out".into())],
            // Images run as their service's user, which cannot write to a
            // directory the host made.
            user: Some("0".into()),
            role: "tool".into(),
            ..Default::default()
        };
        Ok(shot.run(&self.docker, &self.labels()).await?)
    }

    /// Take hold of a stack started earlier (by `up` or a detached run), to
    /// act on it; dropping the handle leaves it running.
    pub async fn attach(name: &str, p: &Progress) -> Result<RunningStack> {
        let state = state::load(name)
            .map_err(|source| Error::State { path: state::path(name).display().to_string(), source })?
            .ok_or_else(|| Error::usage(format!("stack `{name}` is not up"), "start it with `voyager-sim up`"))?;
        let docker = docker::connect(p).await?;
        Ok(RunningStack { docker, state, timings: Timings::default(), cleanup_on_drop: false, done: false })
    }

    /// The stack as it runs now (roles as they are after any failover).
    pub fn stack(&self) -> Result<Stack> {
        Ok(parse_stack(Path::new("<run state>"), &self.state.stack_toml)?)
    }

    /// Read the run state again: the stack's control plane changes it (a
    /// failover swaps roles, a rebuild replaces a container) behind this
    /// handle's back.
    pub fn refresh(&mut self) -> Result<()> {
        let fresh = state::load(&self.state.stack)
            .map_err(|source| Error::State { path: state::path(&self.state.stack).display().to_string(), source })?;
        if let Some(s) = fresh {
            self.state = s;
        }
        Ok(())
    }

    /// Write the faults in force, and only them: the rest of the state is
    /// the control plane's too.
    pub(crate) fn save_state(&mut self) -> Result<()> {
        let faults = self.state.faults.clone();
        let path = || state::path(&self.state.stack).display().to_string();
        match state::update(&self.state.stack, |s| s.faults = faults) {
            Ok(Some((fresh, ()))) => {
                self.state = fresh;
                Ok(())
            }
            // A library run whose state file is gone (or never was): keep
            // it in memory, and on disk as it is.
            Ok(None) => state::save(&self.state).map_err(|source| Error::State { path: path(), source }),
            Err(source) => Err(Error::State { path: path(), source }),
        }
    }

    /// Stop and start an instance (a reboot): no fault stays in force.
    pub async fn restart_instance(&self, name: &str, timeout: Duration) -> Result<Duration> {
        self.kill_instance(name).await?;
        self.start_instance(name, timeout).await
    }

    /// Remove everything now, reporting what was removed.
    pub async fn shutdown(mut self) -> Result<Swept> {
        self.done = true;
        let swept = sweep::sweep_stack(&self.docker, &self.state.stack).await?;
        let _ = state::remove(&self.state.stack);
        Ok(swept)
    }

    /// Keep the stack running past this handle (as `up` does).
    pub fn detach(mut self) -> RunState {
        self.done = true;
        self.state.clone()
    }
}

impl Drop for RunningStack {
    fn drop(&mut self) {
        if self.done || !self.cleanup_on_drop {
            return;
        }
        // Drop cannot await, and may run inside a runtime that is shutting
        // down: sweep on a thread with a runtime of its own.
        let stack = self.state.stack.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let docker = docker::connect(&Progress::silent()).await.ok()?;
                sweep::sweep_stack(&docker, &stack).await.ok()
            })?;
            state::remove(&stack).ok()
        })
        .join();
    }
}
