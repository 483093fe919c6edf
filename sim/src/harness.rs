//! The library API, in the spirit of testcontainers: describe a stack (or part
//! of one), start it, get typed endpoints, and have it removed on drop or on
//! an explicit shutdown. The CLI's `up` is the same call with the stack
//! detached from the process.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;
use futures_util::future::join_all;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::fault::{Fault, LinkEffect, Stop};
use crate::fixtures::{self, parse_influxdb, parse_kafka, Fixtures};
use crate::images::build::{ensure_offline, ensure_upstream, image_exists};
use crate::images::{image_for, recipe, ImageSet, ImageSource};
use crate::progress::Progress;
use crate::runtime::labels::{self, Labels};
use crate::runtime::sweep::{self, Swept};
use crate::runtime::{container, docker, link, network, route, RuntimeError};
use crate::services::{self, postgres::PostgresEndpoint, SpecContext};
use crate::stack::{parse_stack, ServiceKind, Stack, Tier};
use crate::state::{self, Credentials, InstanceState, RunState};

/// The production stack that ships with the binary (`fixtures/voyager.toml`).
pub const BUILTIN_STACK: &str = include_str!("../../fixtures/voyager.toml");

pub fn builtin_stack() -> Stack {
    parse_stack(Path::new("<built-in fixtures/voyager.toml>"), BUILTIN_STACK).expect("the built-in stack file is valid")
}

/// Read and validate a stack file.
pub fn load_stack(path: &Path) -> Result<Stack> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| Error::ReadStack { file: path.display().to_string(), source })?;
    Ok(parse_stack(path, &text)?)
}

/// The fixtures for a stack file: `kafka.toml` and `influxdb.toml` beside it
/// where present, else the built-in production fixtures.
pub fn load_fixtures_near(stack_file: &Path) -> Result<Fixtures> {
    let dir = stack_file.parent().unwrap_or(Path::new("."));
    let read = |name: &str| -> Result<Option<(std::path::PathBuf, String)>> {
        let p = dir.join(name);
        match std::fs::read_to_string(&p) {
            Ok(text) => Ok(Some((p, text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::ReadStack { file: p.display().to_string(), source }),
        }
    };
    let mut f = fixtures::builtin();
    if let Some((p, text)) = read("kafka.toml")? {
        f.kafka = parse_kafka(&p, &text)?;
    }
    if let Some((p, text)) = read("influxdb.toml")? {
        f.influxdb = parse_influxdb(&p, &text)?;
    }
    if let Some((_, text)) = read("auth0.toml")? {
        f.auth0 = text;
    }
    if let Some((p, text)) = read("s3.toml")? {
        f.s3 = fixtures::parse_s3(&p, &text)?;
    }
    if let Some((p, text)) = read("vault.toml")? {
        vault_lite::Fixture::parse(&text, &p.display().to_string()).map_err(|e| {
            Error::usage(e.to_string(), "fix the Vault fixture; fixtures/vault.toml is a complete example")
        })?;
        f.vault = text;
    }
    Ok(f)
}

/// Parse `--only postgres,kafka` against what the stack declares.
pub fn parse_only(stack: &Stack, list: &str) -> Result<Vec<ServiceKind>> {
    let mut kinds = vec![];
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let kind: ServiceKind = word.parse().map_err(|e: String| {
            Error::usage(format!("--only: {e}"), "name services as the stack file does, separated by commas")
        })?;
        if stack.service(kind).is_none() {
            let declared: Vec<String> = stack.services.iter().map(|s| s.kind.to_string()).collect();
            return Err(Error::usage(
                format!("--only: the stack does not declare `{kind}`"),
                format!("declared services: {}", declared.join(", ")),
            ));
        }
        kinds.push(kind);
    }
    if kinds.is_empty() {
        return Err(Error::usage("--only names no service", "give a comma-separated list such as `--only postgres`"));
    }
    Ok(kinds)
}

/// How long each phase of `up` took.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub phases: Vec<(String, Duration)>,
    /// Per instance: from container start to first successful probe.
    pub ready: Vec<(String, Duration)>,
    /// Per service: from container start to ready as a whole (every
    /// instance answering, fixtures provisioned).
    pub services: Vec<(String, Duration)>,
    pub total: Duration,
}

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
}

impl Sim {
    pub fn new(stack: Stack) -> Sim {
        Sim {
            stack,
            name: None,
            only: None,
            images: ImageSource::default(),
            detach: false,
            ready_timeout: Duration::from_secs(120),
            progress: Progress::from_env(),
            stack_file: None,
            fixtures: fixtures::builtin(),
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

    /// Leave the stack running when the handle is dropped or the process
    /// exits (what `voyager-sim up` does); `down` removes it.
    pub fn detached(mut self) -> Sim {
        self.detach = true;
        self
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
        let started = Instant::now();
        let p = &self.progress;
        let docker = docker::connect(p).await?;
        let orphans = sweep::sweep_orphans(&docker).await?;
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
            if let Some(c) = services::companion(*kind, set) {
                let path =
                    c.locate().map_err(|e| Error::usage(e, format!("{kind} runs a binary of this workspace")))?;
                companions.insert(c.binary.to_string(), path);
            }
        }
        let agent = if stack.inter_az_latency.is_zero() {
            None
        } else {
            Some(crate::companion::NETAGENT.locate().map_err(|e| {
                Error::usage(e, "or set `inter_az_latency = \"0ms\"` under [vpc] in the stack file to run without it")
            })?)
        };
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
        for svc in stack.services.iter().filter(|s| services::needs_host_port(s.kind)) {
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
        let mut specs: Vec<(ServiceKind, crate::spec::ContainerSpec)> =
            kinds.iter().flat_map(|k| services::specs(*k, &cx).into_iter().map(move |s| (*k, s))).collect();
        for (_, spec) in &mut specs {
            pin_host_ports(spec, None)?;
        }
        p.say(&format!("starting {} containers", specs.len()));
        let started_containers = join_all(specs.iter().map(|(_, s)| container::start(docker, s, labels))).await;
        let mut instances = vec![];
        for ((kind, spec), r) in specs.iter().zip(started_containers) {
            let cname = r?;
            instances.push(instance_state(docker, stack, *kind, spec, cname).await?);
        }
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

        // Each service is its own pipeline (its instances ready, then its
        // provisioning), and all run at once: the data tier is ready when
        // its slowest service is.
        let t = Instant::now();
        p.say("waiting for readiness");
        let pipelines = join_all(kinds.iter().map(|kind| {
            let state = &state;
            async move {
                let mine: Vec<&InstanceState> = state.instances.iter().filter(|i| i.service == kind.as_str()).collect();
                let waits = join_all(mine.iter().map(|i| wait_ready(docker, state, i, self.ready_timeout, p))).await;
                let mut ready = vec![];
                for (inst, r) in mine.iter().zip(waits) {
                    ready.push((inst.name.clone(), r?));
                }
                p.say(&format!("provisioning {kind}"));
                services::provision(*kind, state, &self.fixtures, self.ready_timeout)
                    .await
                    .map_err(|e| RuntimeError::Provision { service: kind.to_string(), message: e })?;
                let took = t.elapsed();
                p.say(&format!("{kind} ready in {:.2}s", took.as_secs_f64()));
                Ok::<_, Error>((ready, (kind.to_string(), took)))
            }
        }))
        .await;
        for r in pipelines {
            let (ready, service) = r?;
            timings.ready.extend(ready);
            timings.services.push(service);
        }
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
        timings.phases.push(("readiness".into(), t.elapsed()));
        timings.total = started.elapsed();
        Ok((state, timings))
    }
}

/// Give every published port a fixed host port: the one the instance had
/// before (a rebuilt node keeps its address), else a free one. Docker's own
/// choice would change at every restart of the container, and an instance's
/// endpoint must not move when the instance reboots.
fn pin_host_ports(spec: &mut crate::spec::ContainerSpec, previous: Option<&InstanceState>) -> Result<()> {
    for p in &mut spec.published {
        if p.host.is_none() {
            let before = previous.and_then(|i| i.published.get(&p.container)).map(|a| a.port());
            p.host = Some(match before {
                Some(port) => port,
                None => crate::spec::free_local_port()
                    .map_err(|source| Error::State { path: "127.0.0.1:0".into(), source })?,
            });
        }
    }
    Ok(())
}

/// What the state file records of a started container. Parts a service runs
/// beside its instances (the database endpoints) are not in the stack file:
/// they are regional, in no one AZ.
async fn instance_state(
    docker: &Docker,
    stack: &Stack,
    kind: ServiceKind,
    spec: &crate::spec::ContainerSpec,
    container: String,
) -> Result<InstanceState> {
    let published = container::published_ports(docker, &container).await?.into_iter().collect::<BTreeMap<_, _>>();
    let declared = stack.services.iter().flat_map(|s| &s.instances).find(|i| i.name == spec.instance);
    Ok(match declared {
        Some(inst) => InstanceState {
            name: inst.name.clone(),
            service: kind.to_string(),
            az: inst.az.clone(),
            subnet: inst.tier.to_string(),
            address: inst.address,
            container,
            role: inst.role.clone(),
            published,
        },
        None => InstanceState {
            name: spec.instance.clone(),
            service: kind.to_string(),
            az: "*".into(),
            subnet: Tier::Private.to_string(),
            address: spec.address,
            container,
            role: "endpoint".into(),
            published,
        },
    })
}

fn valid_stack_name(s: &str) -> bool {
    let mut c = s.chars();
    s.len() <= 32
        && matches!(c.next(), Some('a'..='z'))
        && c.all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
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

async fn wait_ready(
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
        let last_error = match services::probe(kind, state, inst).await {
            Ok(()) => {
                let took = start.elapsed();
                p.say(&format!("{} ready in {:.2}s", inst.name, took.as_secs_f64()));
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

/// A started stack. Dropping it removes everything it created unless it was
/// started [`Sim::detached`].
pub struct RunningStack {
    docker: Docker,
    state: RunState,
    timings: Timings,
    cleanup_on_drop: bool,
    done: bool,
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

    pub fn influxdb(&self) -> Option<crate::services::influxdb::InfluxEndpoint> {
        services::influxdb::endpoint(&self.state)
    }

    pub fn env(&self) -> Vec<(String, String)> {
        env_of(&self.state)
    }

    fn instance(&self, name: &str) -> Result<&InstanceState> {
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
        wait_ready(&self.docker, &self.state, inst, timeout, &Progress::silent()).await
    }

    /// The labels of what this run creates.
    fn labels(&self) -> Labels {
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

    /// Take hold of a stack started earlier (by `up` or a detached run), to
    /// act on it; dropping the handle leaves it running.
    pub async fn attach(name: &str, p: &Progress) -> Result<RunningStack> {
        let state = state::load(name)
            .map_err(|source| Error::State { path: state::path(name).display().to_string(), source })?
            .ok_or_else(|| Error::usage(format!("stack `{name}` is not up"), "start it with `voyager-sim up`"))?;
        let docker = docker::connect(p).await?;
        Ok(RunningStack { docker, state, timings: Timings::default(), cleanup_on_drop: false, done: false })
    }

    /// RDS "reboot with failover": the primary goes down, the synchronous
    /// standby is promoted, the writer endpoint moves to it, replicas follow
    /// it, and the old primary comes back as the new standby (from a fresh
    /// base backup). Measures how long writes through the writer endpoint
    /// failed.
    pub async fn failover_postgres(&mut self, p: &Progress) -> Result<crate::services::postgres::Failover> {
        use crate::services::postgres as pg;
        let fail =
            |m: String| Error::Runtime(RuntimeError::Provision { service: "postgres failover".into(), message: m });
        let old =
            pg::nodes(&self.state).find(|i| i.role == "primary").cloned().ok_or_else(|| fail("no primary".into()))?;
        let new = pg::nodes(&self.state).find(|i| i.role == "standby").cloned().ok_or_else(|| {
            Error::usage(
                "failover needs a standby, and this stack has none",
                "declare a `role = \"standby\"` PostgreSQL instance in another AZ",
            )
        })?;
        let writer = pg::writer(&self.state).ok_or_else(|| fail("no writer endpoint".into()))?;
        let new_ep = pg::instance(&self.state, &new.name).ok_or_else(|| fail("standby has no port".into()))?;
        writer
            .query_strings("CREATE TABLE IF NOT EXISTS voyager_sim_failover_probe (at timestamptz)")
            .await
            .map_err(fail)?;

        // Writes through the writer endpoint, as an application would make
        // them, from the moment the primary goes down until one succeeds.
        let t0 = Instant::now();
        let watcher = {
            let writer = writer.clone();
            tokio::spawn(async move {
                loop {
                    let attempt = tokio::time::timeout(
                        Duration::from_secs(2),
                        writer.query_strings("INSERT INTO voyager_sim_failover_probe VALUES (now())"),
                    );
                    if let Ok(Ok(_)) = attempt.await {
                        return t0.elapsed();
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        p.say(&format!("failover: {} down", old.name));
        container::kill(&self.docker, &old.container).await?;
        pg::haproxy_admin(&self.state, &format!("set server writer/{} state maint", old.name)).await.map_err(fail)?;
        pg::haproxy_admin(&self.state, &format!("shutdown sessions server writer/{}", old.name)).await.map_err(fail)?;
        p.say(&format!("failover: promoting {}", new.name));
        new_ep.query_strings("SELECT pg_promote(true, 60)").await.map_err(fail)?;
        // Until the old primary is back as a standby there is no one to be
        // synchronous with; RDS runs without a standby meanwhile, and so do we.
        new_ep.query_strings("ALTER SYSTEM SET synchronous_standby_names = ''").await.map_err(fail)?;
        new_ep.query_strings("SELECT pg_reload_conf()").await.map_err(fail)?;
        pg::haproxy_admin(&self.state, &format!("set server writer/{} state ready", new.name)).await.map_err(fail)?;
        let writer_unavailable = tokio::time::timeout(Duration::from_secs(60), watcher)
            .await
            .map_err(|_| fail("no write through the writer endpoint succeeded within 60 s of the promotion".into()))?
            .map_err(|e| fail(e.to_string()))?;
        p.say(&format!("failover: writer back after {:.2}s", writer_unavailable.as_secs_f64()));

        // Replicas follow the new primary.
        let conninfo = |host: std::net::Ipv4Addr, name: &str| {
            format!(
                "host={host} port={} user=replicator password={} application_name={}",
                pg::PORT,
                self.state.credentials.postgres_replication_password,
                pg::replication_name(name)
            )
        };
        for r in pg::nodes(&self.state).filter(|i| i.role == "replica").cloned().collect::<Vec<_>>() {
            let ep = pg::instance(&self.state, &r.name).ok_or_else(|| fail(format!("{} has no port", r.name)))?;
            let sql =
                format!("ALTER SYSTEM SET primary_conninfo = '{}'", conninfo(new.address, &r.name).replace('\'', "''"));
            ep.query_strings(&sql).await.map_err(fail)?;
            ep.query_strings("SELECT pg_reload_conf()").await.map_err(fail)?;
        }

        // The roles swap in the recorded stack; the old primary is rebuilt
        // from it as the new standby.
        let mut stack = parse_stack(Path::new("<run state>"), &self.state.stack_toml)?;
        for inst in stack.services.iter_mut().flat_map(|s| s.instances.iter_mut()) {
            if inst.name == old.name {
                inst.role = "standby".into();
            } else if inst.name == new.name {
                inst.role = "primary".into();
            }
        }
        let t_rejoin = Instant::now();
        p.say(&format!("failover: rebuilding {} as the standby of {}", old.name, new.name));
        let labels = self.labels();
        let fx = fixtures::builtin();
        let ports = BTreeMap::new();
        let cx = SpecContext {
            stack: &stack,
            stack_name: &self.state.stack,
            images: self.state.images,
            credentials: &self.state.credentials,
            host_ports: &ports,
            fixtures: &fx,
            companions: &BTreeMap::new(),
        };
        let mut spec =
            pg::specs(&cx).into_iter().find(|s| s.instance == old.name).expect("old primary is in the stack");
        pin_host_ports(&mut spec, Some(&old))?;
        container::remove(&self.docker, &old.container).await?;
        for (vol, _) in &spec.volumes {
            let vname = container::volume_name(&self.state.stack, &old.name, vol);
            let _ = self.docker.remove_volume(&vname, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
        }
        let cname = container::start(&self.docker, &spec, &labels).await?;
        let rebuilt = instance_state(&self.docker, &stack, ServiceKind::Postgres, &spec, cname).await?;
        for inst in &mut self.state.instances {
            if inst.name == old.name {
                *inst = rebuilt.clone();
            } else if inst.name == new.name {
                inst.role = "primary".into();
            }
        }
        self.state.stack_toml = stack.to_toml();
        state::save(&self.state)
            .map_err(|source| Error::State { path: state::path(&self.state.stack).display().to_string(), source })?;
        wait_ready(&self.docker, &self.state, &rebuilt, Duration::from_secs(120), p).await?;
        let standbys = [old.name.as_str()];
        new_ep
            .query_strings(&format!("ALTER SYSTEM SET synchronous_standby_names = '{}'", pg::sync_names(&standbys)))
            .await
            .map_err(fail)?;
        new_ep.query_strings("SELECT pg_reload_conf()").await.map_err(fail)?;
        pg::provision(&self.state, Duration::from_secs(120)).await.map_err(fail)?;
        Ok(pg::Failover {
            old_primary: old.name,
            new_primary: new.name,
            writer_unavailable,
            old_primary_rejoined_after: t_rejoin.elapsed(),
            total: t0.elapsed(),
        })
    }

    /// The stack as it runs now (roles as they are after any failover).
    pub fn stack(&self) -> Result<Stack> {
        Ok(parse_stack(Path::new("<run state>"), &self.state.stack_toml)?)
    }

    fn save_state(&self) -> Result<()> {
        state::save(&self.state)
            .map_err(|source| Error::State { path: state::path(&self.state.stack).display().to_string(), source })
    }

    /// Break something. The fault is recorded in the run's state before it
    /// takes effect, so `heal` (or `down`) can undo it even if we die halfway.
    pub async fn inject(&mut self, fault: Fault) -> Result<()> {
        let stack = self.stack()?;
        fault.validate(&stack).map_err(|e| {
            Error::usage(format!("fault `{fault}`: {e}"), "name AZs and instances as `voyager-sim status` shows them")
        })?;
        let binary = match fault {
            Fault::Latency { .. } => Some(
                crate::companion::NETAGENT
                    .locate()
                    .map_err(|e| Error::usage(e, "latency faults run the link agent"))?,
            ),
            _ => None,
        };
        self.state.faults.push(fault.clone());
        let index = self.state.faults.len();
        self.save_state()?;
        route::install_drops(&self.state.stack, &fault.drops(&stack)).await?;
        match fault.shapes(&stack) {
            Some((LinkEffect::Delay { delay_us, jitter_us }, pairs)) => {
                // A queued packet skips the normal latency's queue, so this
                // agent adds it when the link crosses AZs.
                let base = if fault.crosses_azs(&stack) { stack.inter_az_latency } else { Duration::ZERO };
                let role = format!("{}-{index}", link::FAULT_AGENT);
                let image = crate::images::companion_base(self.state.images);
                let binary = binary.expect("located above");
                let delay = base + Duration::from_micros(delay_us);
                let q = link::start_delay_agent(
                    &self.docker,
                    &self.labels(),
                    &role,
                    &image,
                    &binary,
                    link::Hold { delay, jitter: Duration::from_micros(jitter_us), seed: index as u64 },
                )
                .await?;
                route::install_queue(&self.state.stack, &pairs, q, true).await?;
            }
            Some((LinkEffect::Loss { ppm }, pairs)) => route::install_loss(&self.state.stack, &pairs, ppm).await?,
            Some((LinkEffect::Rate { kbit }, pairs)) => {
                link::install_rate(&self.state.stack, &stack, &pairs, kbit, 0x10 + index as u16).await?
            }
            None => {}
        }
        let stops = fault.stops(&stack);
        let this = &*self;
        let results = join_all(stops.iter().map(|(name, how)| async move {
            let inst = this.instance(name)?;
            match how {
                Stop::Kill => container::kill(&this.docker, &inst.container).await?,
                Stop::Pause => container::pause(&this.docker, &inst.container).await?,
            }
            Ok::<_, Error>(())
        }))
        .await;
        results.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    /// Undo every fault in force: network drops go, paused instances thaw,
    /// killed ones start again; returns when each of those answers again.
    pub async fn heal(&mut self, timeout: Duration) -> Result<Vec<Fault>> {
        let stack = self.stack()?;
        route::remove_faults(&self.state.stack).await?;
        link::remove_agents(&self.docker, &self.state.stack, link::FAULT_AGENT).await?;
        link::remove_rates(&self.state.stack, &stack).await;
        // Each stopped instance once; its container's state says whether it
        // thaws or starts (a paused one may have been killed since).
        let resume: BTreeMap<String, ()> =
            self.state.faults.iter().flat_map(|f| f.stops(&stack)).map(|(name, _)| (name, ())).collect();
        let this = &*self;
        let results = join_all(resume.keys().map(|name| async move {
            let inst = this.instance(name)?;
            match container::state(&this.docker, &inst.container).await {
                Some(s) if s.paused => container::unpause(&this.docker, &inst.container).await?,
                Some(s) if !s.running => container::restart_stopped(&this.docker, &inst.container).await?,
                _ => {}
            }
            wait_ready(&this.docker, &this.state, inst, timeout, &Progress::silent()).await
        }))
        .await;
        results.into_iter().collect::<Result<Vec<_>>>()?;
        let healed = std::mem::take(&mut self.state.faults);
        self.save_state()?;
        Ok(healed)
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

/// The services a run has, each once.
fn kinds_of(state: &RunState) -> Vec<ServiceKind> {
    let mut kinds: Vec<ServiceKind> = state.instances.iter().filter_map(|i| i.service.parse().ok()).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// dotenv lines for a run, service by service.
pub fn env_of(state: &RunState) -> Vec<(String, String)> {
    let kinds = kinds_of(state);
    let mut out = vec![("VOYAGER_SIM_STACK".to_string(), state.stack.clone())];
    for k in kinds {
        out.extend(services::env(k, state));
    }
    out
}

/// Remove a stack by name, whether or not its state file survived.
pub async fn down(name: &str, p: &Progress) -> Result<Swept> {
    let docker = docker::connect(p).await?;
    let swept = sweep::sweep_stack(&docker, name).await?;
    state::remove(name).map_err(|source| Error::State { path: state::path(name).display().to_string(), source })?;
    Ok(swept)
}

/// Remove every stack this engine holds (`down --all`): for CI and for
/// cleaning a machine after experiments.
pub async fn down_all(p: &Progress) -> Result<Vec<String>> {
    let docker = docker::connect(p).await?;
    let names = sweep::all_stacks(&docker).await?;
    for n in &names {
        sweep::sweep_stack(&docker, n).await?;
        let _ = state::remove(n);
    }
    Ok(names)
}

/// One instance as `status` shows it. Its own type: the JSON is a contract.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub instance: String,
    pub service: String,
    pub az: String,
    pub subnet: String,
    pub address: String,
    pub endpoint: Option<String>,
    pub container: String,
    pub health: String,
    /// What the instance is doing in its service (Kafka: partitions led).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StackStatus {
    pub stack: String,
    pub run_id: String,
    pub images: ImageSet,
    pub vpc: String,
    pub instances: Vec<InstanceStatus>,
}

impl StackStatus {
    pub fn healthy(&self) -> bool {
        self.instances.iter().all(|i| i.health == "healthy")
    }
}

/// Live status of a stack: container state plus a real probe per instance.
pub async fn status(name: &str, p: &Progress) -> Result<Option<StackStatus>> {
    let Some(state) =
        state::load(name).map_err(|source| Error::State { path: state::path(name).display().to_string(), source })?
    else {
        return Ok(None);
    };
    let docker = docker::connect(p).await?;
    let kinds = kinds_of(&state);
    let mut roles: BTreeMap<String, String> = BTreeMap::new();
    for r in join_all(kinds.iter().map(|k| services::roles(*k, &state))).await {
        roles.extend(r);
    }
    let checks = join_all(state.instances.iter().map(|i| async {
        let (health, detail) = match container::state(&docker, &i.container).await {
            None => ("missing".to_string(), Some("the container is gone".to_string())),
            Some(s) if s.paused => ("paused".to_string(), None),
            Some(s) if !s.running => ("exited".to_string(), Some(format!("exit code {}", s.exit_code))),
            Some(_) => match i.service.parse::<ServiceKind>() {
                Ok(k) => match tokio::time::timeout(Duration::from_secs(5), services::probe(k, &state, i)).await {
                    Ok(Ok(())) => ("healthy".to_string(), None),
                    Ok(Err(e)) => ("unhealthy".to_string(), Some(e)),
                    Err(_) => ("unhealthy".to_string(), Some("probe timed out after 5s".to_string())),
                },
                Err(e) => ("unknown".to_string(), Some(e)),
            },
        };
        InstanceStatus {
            instance: i.name.clone(),
            service: i.service.clone(),
            az: i.az.clone(),
            subnet: i.subnet.clone(),
            address: i.address.to_string(),
            endpoint: i.published.values().next().map(|a| a.to_string()),
            container: i.container.clone(),
            health,
            role: roles.get(&i.name).cloned(),
            detail,
        }
    }))
    .await;
    Ok(Some(StackStatus {
        stack: state.stack.clone(),
        run_id: state.run_id.clone(),
        images: state.images,
        vpc: state.vpc.clone(),
        instances: checks,
    }))
}

/// Build (offline) or pull (upstream) the images for the given services.
pub async fn build_images(
    set: ImageSet,
    kinds: &[ServiceKind],
    p: &Progress,
) -> Result<Vec<crate::images::build::ImageOutcome>> {
    let docker = docker::connect(p).await?;
    Ok(ensure_images(&docker, set, kinds, p).await?)
}

/// Every image the services need in a set: offline ones built (or found by
/// their recipe's tag), upstream ones pulled (or found).
async fn ensure_images(
    docker: &Docker,
    set: ImageSet,
    kinds: &[ServiceKind],
    p: &Progress,
) -> std::result::Result<Vec<crate::images::build::ImageOutcome>, crate::images::build::ImageError> {
    match set {
        ImageSet::Offline => {
            // The base is also where companion binaries run.
            let mut recipes = vec![recipe::base()];
            recipes.extend(kinds.iter().flat_map(|k| recipe::for_service_all(*k)));
            ensure_offline(docker, &recipes, p).await
        }
        ImageSet::Upstream => {
            let mut out = vec![];
            let images = kinds.iter().flat_map(|k| crate::images::images_for(*k, set));
            for image in images.chain([crate::images::UPSTREAM_DEBIAN.to_string()]) {
                out.push(ensure_upstream(docker, &image, p).await?);
            }
            Ok(out)
        }
    }
}
