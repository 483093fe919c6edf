//! `Sim`, the builder, and the bring-up it drives: images, networks,
//! containers, then each service's readiness and provisioning as
//! concurrent pipelines. **`start` either returns a ready stack or removes
//! everything it created before returning the error.**

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use futures_util::future::join_all;

use crate::error::{Error, Result};
use crate::fixtures::{self, Fixtures};
use crate::images::build::{ensure_upstream, image_exists};
use crate::images::{image_for, ImageSet, ImageSource};
use crate::progress::Progress;
use crate::runtime::labels::{self, Labels};
use crate::runtime::sweep;
use crate::runtime::{container, docker, link, network, route, RuntimeError};
use crate::services::{self, ProvisionContext, SpecContext};
use crate::stack::{ServiceKind, Stack};
use crate::state::{self, Credentials, InstanceState, RunState};

use super::images::ensure_images;
use super::running::RunningStack;
use super::{builtin_stack, valid_stack_name, Timings};
use crate::services::lifecycle::{instance_state, start_on_free_ports, wait_ready};

/// A stack to start. Built with `with_*`-style setters; `start` does the work.
#[derive(Debug, Clone)]
pub struct Sim {
    stack: Stack,
    name: Option<String>,
    only: Option<Vec<ServiceKind>>,
    images: ImageSource,
    detach: bool,
    ready_timeout: Duration,
    progress: Progress,
    stack_file: Option<std::path::PathBuf>,
    fixtures: Fixtures,
    control_plane: bool,
}

impl Sim {
    pub fn new(stack: Stack) -> Sim {
        Sim {
            stack,
            name: None,
            only: None,
            images: ImageSource::default(),
            detach: false,
            // A cold 2-core machine starting six JVMs, LocalStack and a
            // Kubernetes cluster at once takes minutes for a service that
            // is ready in seconds on an idle one; a container that exits
            // still fails at once.
            ready_timeout: Duration::from_secs(360),
            progress: Progress::from_env(),
            stack_file: None,
            fixtures: fixtures::builtin(),
            control_plane: true,
        }
    }

    /// The production stack as shipped.
    pub fn production() -> Sim {
        Sim::new(builtin_stack())
    }

    /// Docker object names and the state file use this; defaults to the stack
    /// file's `name`. Parallel runs need distinct names (and VPC ranges).
    pub fn with_name(mut self, name: impl Into<String>) -> Sim {
        self.name = Some(name.into());
        self
    }

    pub fn with_only(mut self, kinds: &[ServiceKind]) -> Sim {
        self.only = Some(kinds.to_vec());
        self
    }

    pub fn with_images(mut self, images: ImageSource) -> Sim {
        self.images = images;
        self
    }

    pub fn with_ready_timeout(mut self, t: Duration) -> Sim {
        self.ready_timeout = t;
        self
    }

    pub fn with_progress(mut self, p: Progress) -> Sim {
        self.progress = p;
        self
    }

    /// What services are provisioned with (default: `fixtures/*.toml` as
    /// built in).
    pub fn with_fixtures(mut self, f: Fixtures) -> Sim {
        self.fixtures = f;
        self
    }

    pub fn with_stack_file(mut self, p: impl Into<std::path::PathBuf>) -> Sim {
        self.stack_file = Some(p.into());
        self
    }

    /// Run the stack without its always-on control plane (no automatic
    /// failover, no detaching a lost standby, no volume provisioning, no
    /// Route 53 health checks, and the API's pods registered at the
    /// balancers once at `up` but never again as they come and go): for
    /// tests of what a bare database does, and for library users without
    /// the `voyager-sim` binary at hand.
    pub fn without_control_plane(mut self) -> Sim {
        self.control_plane = false;
        self
    }

    /// Leave the stack running when the handle is dropped or the process
    /// exits (what `voyager-sim up` does); `down` removes it.
    pub fn detached(mut self) -> Sim {
        self.detach = true;
        self
    }

    /// How long a service may take to be ready as a whole once its
    /// instances answer. A Kubernetes cluster is bootstrapped in that time
    /// (kubeadm init, joins one after another, add-ons), which on a cold
    /// 2-core machine starting everything else too takes minutes.
    fn provision_timeout(&self, kind: ServiceKind) -> Duration {
        match kind {
            ServiceKind::Kubernetes => self.ready_timeout.max(Duration::from_secs(900)),
            _ => self.ready_timeout,
        }
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.stack.name)
    }

    /// Bring the stack up and wait until every instance answers. On any
    /// failure everything this call created is removed before it returns.
    pub async fn start(self) -> Result<RunningStack> {
        let name = self.name().to_string();
        if !valid_stack_name(&name) {
            return Err(Error::usage(
                format!("stack name `{name}` is not usable"),
                "use up to 32 lowercase letters, digits and `-`, starting with a letter",
            ));
        }
        let stack = match &self.only {
            Some(kinds) => self.stack.only(kinds),
            None => self.stack.clone(),
        };
        missing_needs(&stack)?;
        let started = Instant::now();
        let p = &self.progress;
        let docker = docker::connect(p).await?;
        let orphans = sweep::sweep_orphans(&docker, p).await?;
        if !orphans.is_empty() {
            p.say(&format!("removed stacks left by dead processes: {}", orphans.join(", ")));
        }
        if let Some(prev) = state::load(&name)
            .map_err(|source| Error::State { path: state::path(&name).display().to_string(), source })?
        {
            if any_running(&docker, &prev).await {
                return Err(Error::usage(
                    format!("stack `{name}` is already up (run {})", prev.run_id),
                    format!("run `voyager-sim down --name {name}` first, or pick another name with --name"),
                ));
            }
        }
        let left = sweep::sweep_stack(&docker, &name).await?;
        if !left.is_empty() {
            p.say(&format!(
                "removed leftovers of an earlier `{name}` run: {} containers, {} networks, {} volumes",
                left.containers, left.networks, left.volumes
            ));
        }
        let owner = (!self.detach).then(labels::this_process_owner);
        let labels = Labels { run_id: labels::new_run_id(), stack: name.clone(), owner };
        match self.bring_up(&docker, &stack, &labels, started).await {
            Ok((state, timings)) => {
                Ok(RunningStack { docker, state, timings, cleanup_on_drop: !self.detach, done: false })
            }
            Err(e) => {
                p.say("start failed; removing what this run created");
                let _ = sweep::sweep_stack(&docker, &name).await;
                let _ = state::remove(&name);
                Err(e)
            }
        }
    }

    async fn bring_up(
        &self,
        docker: &Docker,
        stack: &Stack,
        labels: &Labels,
        started: Instant,
    ) -> Result<(RunState, Timings)> {
        let p = &self.progress;
        let name = &labels.stack;
        let kinds: Vec<ServiceKind> = stack.services.iter().map(|s| s.kind).collect();
        let mut timings = Timings::default();
        let t = Instant::now();
        let set = resolve_images(docker, self.images, &kinds, p).await;
        // Found before anything is created: a missing companion binary must
        // not leave a half-started stack.
        let mut companions = BTreeMap::new();
        for kind in &kinds {
            if let Some(c) = services::service(*kind).companion(set) {
                let path =
                    c.locate().map_err(|e| Error::usage(e, format!("{kind} runs a binary of this workspace")))?;
                companions.insert(c.binary.to_string(), path);
            }
        }
        // The stack's control plane is this program, run inside the stack.
        let control = if self.control_plane
            && kinds.iter().any(|k| matches!(k, ServiceKind::Kubernetes | ServiceKind::Postgres | ServiceKind::Route53))
        {
            Some(crate::companion::SIM.locate().map_err(|e| Error::usage(e, "the stack's control plane runs it"))?)
        } else {
            None
        };
        let agent = if stack.inter_az_latency.is_zero() {
            None
        } else {
            Some(crate::companion::NETAGENT.locate().map_err(|e| {
                Error::usage(e, "or set `inter_az_latency = \"0ms\"` under [vpc] in the stack file to run without it")
            })?)
        };
        // Services configured with Vault's scoped token start once Vault
        // is bootstrapped; everything else starts at once.
        let (late, early): (Vec<ServiceKind>, Vec<ServiceKind>) =
            kinds.iter().partition(|k| services::service(**k).after_vault());
        for kind in &kinds {
            services::service(*kind)
                .preflight(docker)
                .await
                .map_err(|(message, help)| Error::usage(format!("{kind}: {message}"), help))?;
        }
        ensure_images(docker, set, &kinds, p).await?;
        timings.phases.push(("images".into(), t.elapsed()));

        let t = Instant::now();
        p.say(&format!("creating {} subnets of VPC {}", stack.azs.len() * 2, stack.vpc));
        network::create_all(docker, stack, labels).await?;
        route::install(name, stack.vpc, p).await?;
        if let Some(binary) = &agent {
            let lat = stack.inter_az_latency;
            p.say(&format!("inter-AZ latency {}", crate::fault::micros_text(lat.as_micros() as u64)));
            let image = crate::images::companion_base(set);
            let hold = link::Hold { delay: lat, jitter: Duration::ZERO, seed: 1 };
            let q = link::start_delay_agent(docker, labels, link::BASE_AGENT, &image, binary, hold).await?;
            route::install_queue(name, &crate::fault::inter_az_pairs(stack), q, false).await?;
        }
        timings.phases.push(("networks".into(), t.elapsed()));

        let t = Instant::now();
        let mut credentials = Credentials::generate();
        credentials.influxdb_database =
            self.fixtures.influxdb.databases.first().map(|d| d.name.clone()).unwrap_or_default();
        let tenant = services::auth0::tenant_settings(&self.fixtures.auth0);
        credentials.auth0_audience = tenant.audience;
        credentials.s3_region = self.fixtures.s3.region.clone();
        if let Some((id, secret)) = tenant.machine_client {
            credentials.auth0_client_id = id;
            credentials.auth0_client_secret = secret;
        }
        let mut host_ports = BTreeMap::new();
        for svc in stack.services.iter().filter(|s| services::service(s.kind).needs_host_port()) {
            for inst in &svc.instances {
                let port = crate::spec::free_local_port()
                    .map_err(|source| Error::State { path: "127.0.0.1:0".into(), source })?;
                host_ports.insert(inst.name.clone(), port);
            }
        }
        let cx = SpecContext {
            stack,
            stack_name: name,
            images: set,
            credentials: &credentials,
            host_ports: &host_ports,
            fixtures: &self.fixtures,
            companions: &companions,
        };
        let instances = start_containers(docker, stack, &early, &cx, labels, p).await?;
        timings.phases.push(("containers".into(), t.elapsed()));

        let mut state = RunState {
            run_id: labels.run_id.clone(),
            stack: name.clone(),
            stack_file: self.stack_file.clone(),
            vpc: stack.vpc.to_string(),
            images: set,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            instances,
            credentials,
            stack_toml: stack.to_toml(),
            faults: vec![],
        };
        // Saved before readiness so `down` and `status` see a run that is
        // still coming up.
        state::save(&state).map_err(|source| Error::State { path: state::path(name).display().to_string(), source })?;

        let t = Instant::now();
        p.say("waiting for readiness");
        self.ready_all(docker, &state, &early, labels, t, &mut timings).await?;
        if kinds.contains(&ServiceKind::Vault) {
            p.say("initialising, unsealing and provisioning vault");
            let t_boot = Instant::now();
            let secrets = services::vault::bootstrap(&state, &self.fixtures.vault)
                .await
                .map_err(|e| RuntimeError::Provision { service: "vault".into(), message: e })?;
            state.credentials.vault = Some(secrets);
            state::save(&state)
                .map_err(|source| Error::State { path: state::path(name).display().to_string(), source })?;
            // Vault's time to ready: its own pipeline plus its bootstrap,
            // not the wait for the other services before it.
            for (name, took) in &mut timings.services {
                if name == "vault" {
                    *took += t_boot.elapsed();
                }
            }
        }
        if !late.is_empty() {
            for kind in &late {
                services::service(*kind)
                    .prepare(&mut state)
                    .await
                    .map_err(|e| RuntimeError::Provision { service: kind.to_string(), message: e })?;
            }
            state::save(&state)
                .map_err(|source| Error::State { path: state::path(name).display().to_string(), source })?;
            let cx = SpecContext {
                stack,
                stack_name: name,
                images: set,
                credentials: &state.credentials,
                host_ports: &host_ports,
                fixtures: &self.fixtures,
                companions: &companions,
            };
            let more = start_containers(docker, stack, &late, &cx, labels, p).await?;
            state.instances.extend(more);
            state::save(&state)
                .map_err(|source| Error::State { path: state::path(name).display().to_string(), source })?;
            self.ready_all(docker, &state, &late, labels, Instant::now(), &mut timings).await?;
        }
        timings.phases.push(("readiness".into(), t.elapsed()));
        if let Some(binary) = &control {
            p.say("starting the stack's control plane (RDS failover, EBS volumes, Route 53 health checks)");
            crate::control::start(docker, labels, set, binary).await?;
        }
        timings.total = started.elapsed();
        Ok((state, timings))
    }

    /// Each service of `kinds` is its own pipeline (its instances ready,
    /// then its provisioning), and all run at once: the tier is ready when
    /// its slowest service is. Times count from `t`.
    async fn ready_all(
        &self,
        docker: &Docker,
        state: &RunState,
        kinds: &[ServiceKind],
        labels: &Labels,
        t: Instant,
        timings: &mut Timings,
    ) -> Result<()> {
        let p = &self.progress;
        let pipelines = join_all(kinds.iter().map(|kind| async move {
            let mine: Vec<&InstanceState> = state.instances.iter().filter(|i| i.service == kind.as_str()).collect();
            let waits = join_all(mine.iter().map(|i| wait_ready(docker, state, i, self.ready_timeout, p))).await;
            let mut ready = vec![];
            for (inst, r) in mine.iter().zip(waits) {
                ready.push((inst.name.clone(), r?));
            }
            p.say(&format!("provisioning {kind}"));
            let cx = ProvisionContext {
                state,
                docker,
                fixtures: &self.fixtures,
                labels,
                progress: p,
                timeout: self.provision_timeout(*kind),
            };
            services::service(*kind)
                .provision(&cx)
                .await
                .map_err(|e| RuntimeError::Provision { service: kind.to_string(), message: e })?;
            let took = t.elapsed();
            p.say(&format!("{kind} ready in {:.2}s", took.as_secs_f64()));
            Ok::<_, Error>((ready, (kind.to_string(), took)))
        }))
        .await;
        for r in pipelines {
            let (ready, service) = r?;
            timings.ready.extend(ready);
            timings.services.push(service);
        }
        Ok(())
    }
}

/// A service the stack runs without a tier it cannot run without is
/// refused before anything (even Docker) is touched.
fn missing_needs(stack: &Stack) -> Result<()> {
    let kinds: Vec<ServiceKind> = stack.services.iter().map(|s| s.kind).collect();
    for kind in &kinds {
        if let Some(dep) = services::service(*kind).needs().iter().find(|d| !kinds.contains(d)) {
            return Err(Error::usage(
                format!("{kind} needs {dep}, which this stack does not run"),
                format!("add {dep} to --only (or to the stack file), or leave {kind} out"),
            ));
        }
    }
    Ok(())
}

/// Create and start the containers of `kinds`, each on free host ports.
async fn start_containers(
    docker: &Docker,
    stack: &Stack,
    kinds: &[ServiceKind],
    cx: &SpecContext<'_>,
    labels: &Labels,
    p: &Progress,
) -> Result<Vec<InstanceState>> {
    let mut specs: Vec<(ServiceKind, crate::spec::ContainerSpec)> =
        kinds.iter().flat_map(|k| services::specs_of(*k, cx).into_iter().map(move |s| (*k, s))).collect();
    p.say(&format!("starting {} containers", specs.len()));
    let started = join_all(specs.iter_mut().map(|(_, s)| start_on_free_ports(docker, s, labels))).await;
    let mut instances = vec![];
    for ((kind, spec), r) in specs.iter().zip(started) {
        let cname = r?;
        instances.push(instance_state(docker, stack, *kind, spec, cname).await?);
    }
    Ok(instances)
}

async fn any_running(docker: &Docker, state: &RunState) -> bool {
    for i in &state.instances {
        if container::state(docker, &i.container).await.is_some_and(|s| s.running) {
            return true;
        }
    }
    false
}

/// Upstream when asked, or for `auto` when the images are here or a pull
/// works; offline otherwise.
async fn resolve_images(docker: &Docker, source: ImageSource, kinds: &[ServiceKind], p: &Progress) -> ImageSet {
    match source {
        ImageSource::Offline => ImageSet::Offline,
        ImageSource::Upstream => ImageSet::Upstream,
        ImageSource::Auto => {
            let mut all_here = true;
            for k in kinds {
                all_here &= image_exists(docker, &image_for(*k, ImageSet::Upstream)).await;
            }
            if all_here {
                return ImageSet::Upstream;
            }
            let Some(first) = kinds.first() else {
                return ImageSet::Offline;
            };
            let (image, silent) = (image_for(*first, ImageSet::Upstream), Progress::silent());
            let probe = ensure_upstream(docker, &image, &silent);
            match tokio::time::timeout(Duration::from_secs(20), probe).await {
                Ok(Ok(_)) => ImageSet::Upstream,
                _ => {
                    p.say("no container registry answered; using the offline image set");
                    ImageSet::Offline
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_without_the_tiers_it_needs_is_refused_by_name() {
        let e = missing_needs(&builtin_stack().only(&[ServiceKind::Api, ServiceKind::Postgres])).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("api needs kafka"), "{text}");
        assert!(missing_needs(&builtin_stack()).is_ok());
        assert!(missing_needs(&builtin_stack().only(&[ServiceKind::Postgres])).is_ok());
    }
}
