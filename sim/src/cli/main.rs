//! The `voyager-sim` command. The only place that talks to the terminal: it
//! parses arguments, calls the library, and renders results and errors.

use std::path::PathBuf;
use std::process::ExitCode;

mod print;
mod runs;

use clap::{Parser, Subcommand};
use print::{dotenv_quote, print_plan, print_status};
use runs::{run_scenario, LoadArgs};
use voyager_sim::fault::{Fault, LinkArgs, OutageMode, Side};
use voyager_sim::harness;
use voyager_sim::images::{ImageSet, ImageSource};
use voyager_sim::stack::Stack;
use voyager_sim::{Error, Progress, Sim};

#[derive(Parser)]
#[command(
    name = "voyager-sim",
    version,
    about = "Local, production-shaped simulator of the Voyager platform's infrastructure"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct StackArgs {
    /// Stack file [default: fixtures/voyager.toml, else the built-in production stack]
    #[arg(long, env = "VOYAGER_SIM_STACK_FILE", global = true)]
    stack: Option<PathBuf>,
    /// Name of the running stack [default: the stack file's `name`]
    #[arg(long, global = true)]
    name: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Bring the stack up and wait until every service answers
    Up {
        #[command(flatten)]
        stack: StackArgs,
        /// Start only these services (comma-separated)
        #[arg(long)]
        only: Option<String>,
        /// Image set: auto, offline or upstream
        #[arg(long, default_value = "auto")]
        images: ImageSource,
    },
    /// Show each instance with its AZ, subnet, address, endpoint and health
    Status {
        #[command(flatten)]
        stack: StackArgs,
        #[arg(long)]
        json: bool,
    },
    /// Print dotenv lines with the connection settings an application needs
    Env {
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Remove every container, network and volume of the stack
    Down {
        #[command(flatten)]
        stack: StackArgs,
        /// Remove every voyager-sim stack on this Docker engine
        #[arg(long, conflicts_with_all = ["stack", "name"])]
        all: bool,
    },
    /// Fail a service over like RDS "reboot with failover" (today: postgres)
    Failover {
        /// The service to fail over
        service: String,
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Take an on-demand backup now (an RDS manual snapshot; today: postgres)
    Backup {
        /// The service to back up
        service: String,
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Restore a backup to a point in time as a new instance with its own endpoint
    Restore {
        /// The service to restore (today: postgres)
        service: String,
        /// The time to restore to: RFC 3339 (2026-12-02T17:05:00Z) or a time ago (-5m);
        /// `status` shows the restorable window
        #[arg(long, value_name = "TIME")]
        to_time: String,
        /// The new instance's name (RDS's target DB instance identifier; `--name` names the stack,
        /// as everywhere) [default: postgres-restore-N, the first free N]
        #[arg(long, value_name = "NAME")]
        instance: Option<String>,
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Run a scenario: load, faults on their timeline, checks, a report
    Run {
        /// The scenario file (scenarios/*.toml)
        scenario: PathBuf,
        #[command(flatten)]
        load: LoadArgs,
        /// Also write the assertions as JUnit XML here, for CI test views
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Seeded chaos soak: cycle after cycle a fault drawn from the seed, healed, checked
    Soak {
        /// Seeds every cycle's fault, target and duration (replay with the same seed)
        #[arg(long)]
        seed: u64,
        /// How many cycles to run
        #[arg(long, default_value_t = 10, conflicts_with = "cycle")]
        cycles: u32,
        /// Run only this cycle of the seed (what a failing cycle prints to replay it)
        #[arg(long)]
        cycle: Option<u32>,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Break something by hand (undo with `heal`)
    Fault {
        #[command(subcommand)]
        fault: FaultCommand,
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Vault's root token and unseal keys (printed only when asked for)
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Act on the mock Auth0 tenant
    Auth0 {
        #[command(subcommand)]
        command: Auth0Command,
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Measure round trips between two AZs' private subnets (UDP, by the link agent)
    Probe {
        from: String,
        to: String,
        #[arg(long, default_value_t = 200)]
        count: u32,
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Undo every fault in force and wait until what they stopped answers again
    Heal {
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Validate a stack file and print the placement it describes
    Check {
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Manage the image sets
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
    /// Act on the Kubernetes tier
    Kube {
        #[command(subcommand)]
        command: KubeCommand,
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Run a stack's control plane (`up` starts it in a container of the stack)
    #[command(hide = true)]
    Control {
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum FaultCommand {
    /// Lose an AZ: every instance in it stops at once and its subnets are cut off
    AzOutage {
        az: String,
        /// kill (power loss) or pause (frozen, unresponsive)
        #[arg(long, default_value = "kill")]
        mode: String,
    },
    /// SIGKILL an instance
    Kill { instance: String },
    /// Freeze an instance
    Pause { instance: String },
    /// Kill an instance and start it again (nothing stays in force)
    Restart { instance: String },
    /// Drop packets from FROM to TO (AZ or instance names); one-way unless --both-ways
    Partition {
        #[command(flatten)]
        link: LinkSides,
    },
    /// Delay packets from FROM to TO, on top of the normal inter-AZ latency
    Latency {
        #[command(flatten)]
        link: LinkSides,
        /// e.g. 50ms or 500us
        #[arg(long)]
        delay: String,
        /// ± uniform, e.g. 10ms
        #[arg(long)]
        jitter: Option<String>,
    },
    /// Vary the delay of packets from FROM to TO by ± JITTER (uniform)
    Jitter {
        #[command(flatten)]
        link: LinkSides,
        #[arg(long)]
        jitter: String,
        #[arg(long)]
        delay: Option<String>,
    },
    /// Drop a share of the packets from FROM to TO at random
    Loss {
        #[command(flatten)]
        link: LinkSides,
        /// e.g. 5% or 0.5%
        #[arg(long)]
        loss: String,
    },
    /// Cap the rate from FROM to TO
    Bandwidth {
        #[command(flatten)]
        link: LinkSides,
        /// e.g. 512kbit, 10mbit
        #[arg(long)]
        rate: String,
    },
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Print the root token and the unseal keys (secrets: for an operator, not for applications)
    Credentials,
}

#[derive(Subcommand)]
enum KubeCommand {
    /// Put images of this host's Docker into every node (no registry), like `kind load docker-image`
    Load {
        /// Images as `docker images` names them (e.g. myapp:1.0)
        #[arg(required = true)]
        images: Vec<String>,
    },
}

#[derive(Subcommand)]
enum Auth0Command {
    /// New signing key: new tokens use it; the JWKS keeps the old key until the next rotation
    RotateKeys,
}

/// The two sides of a link fault.
#[derive(clap::Args)]
struct LinkSides {
    /// AZ or instance the packets come from
    from: String,
    /// AZ or instance they go to
    to: String,
    /// Both directions (two one-way faults)
    #[arg(long)]
    both_ways: bool,
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Build the offline images (or pull the upstream ones)
    Build {
        #[arg(long, default_value = "offline")]
        images: ImageSource,
        #[arg(long)]
        only: Option<String>,
    },
}

impl StackArgs {
    fn load(&self) -> Result<Stack, Error> {
        match &self.stack {
            Some(p) => harness::load_stack(p),
            None if std::path::Path::new("fixtures/voyager.toml").is_file() => {
                harness::load_stack("fixtures/voyager.toml".as_ref())
            }
            None => Ok(harness::builtin_stack()),
        }
    }

    /// The running stack's name without requiring the file when `--name` is
    /// given, so `down --name x` works after the file is gone.
    fn name(&self) -> Result<String, Error> {
        match &self.name {
            Some(n) => Ok(n.clone()),
            None => Ok(self.load()?.name),
        }
    }
}

/// Backups and restores exist for PostgreSQL only, as RDS's do.
fn only_postgres(service: &str, verb: &str) -> Result<(), Error> {
    if service == "postgres" {
        return Ok(());
    }
    Err(Error::usage(
        format!("cannot {verb} `{service}`"),
        "only `postgres` has backups (Kafka keeps three replicas; S3 versions its objects)",
    ))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            if e.is_bad_input() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    let p = Progress::stderr();
    match cli.command {
        Command::Up { stack, only, images } => up(stack, only, images, p).await,
        Command::Status { stack, json } => {
            let name = stack.name()?;
            match harness::status(&name, &p).await? {
                None => Err(not_up(&name)),
                Some(s) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&s).expect("serializable"));
                    } else {
                        print_status(&s);
                    }
                    Ok(if s.healthy() { ExitCode::SUCCESS } else { ExitCode::from(1) })
                }
            }
        }
        Command::Env { stack } => {
            let name = stack.name()?;
            let state = voyager_sim::state::load(&name).map_err(|source| Error::State {
                path: voyager_sim::state::path(&name).display().to_string(),
                source,
            })?;
            let state = state.ok_or_else(|| not_up(&name))?;
            for (k, v) in harness::env_of(&state) {
                println!("{k}={}", dotenv_quote(&v));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Down { stack, all } => {
            if all {
                let names = harness::down_all(&p).await?;
                eprintln!(
                    "voyager-sim: removed {} stacks{}",
                    names.len(),
                    if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) }
                );
                return Ok(ExitCode::SUCCESS);
            }
            let name = stack.name()?;
            let t = std::time::Instant::now();
            let swept = harness::down(&name, &p).await?;
            eprintln!(
                "voyager-sim: stack `{name}` is down: removed {} containers, {} networks, {} volumes in {:.1}s",
                swept.containers,
                swept.networks,
                swept.volumes,
                t.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { service, stack } => {
            only_postgres(&service, "back up")?;
            let mut running = voyager_sim::RunningStack::attach(&stack.name()?, &p).await?;
            let (b, took) = running.backup_postgres(&p).await?;
            println!(
                "postgres backup {} ({}) taken in {:.1}s: {:.1} MB of database, {:.1} MB in the bucket",
                b.label,
                b.kind,
                took.as_secs_f64(),
                b.size as f64 / 1e6,
                b.repo_size as f64 / 1e6
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { service, to_time, instance, stack } => {
            only_postgres(&service, "restore")?;
            let now = voyager_sim::state::now_unix_ms() as f64 / 1000.0;
            let target = voyager_sim::services::postgres::backup::parse_target(&to_time, now)
                .map_err(|e| Error::usage(e, "see `voyager-sim status` for the restorable window"))?;
            let mut running = voyager_sim::RunningStack::attach(&stack.name()?, &p).await?;
            let r = running.restore_postgres(target, instance.as_deref(), &p).await?;
            println!(
                "postgres restored to {} from backup {} in {:.1}s as `{}`",
                r.target,
                r.from_backup,
                r.took.as_secs_f64(),
                r.endpoint.instance
            );
            println!("  endpoint {} (inside the VPC {})", r.endpoint.host, r.endpoint.vpc);
            println!(
                "  `voyager-sim env` gives it as {}",
                voyager_sim::services::postgres::restored_env_name(&r.endpoint.instance)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Failover { service, stack } => {
            if service != "postgres" {
                return Err(Error::usage(
                    format!("cannot fail over `{service}`"),
                    "only `postgres` fails over (Kafka elects leaders by itself)",
                ));
            }
            let name = stack.name()?;
            let mut running = voyager_sim::RunningStack::attach(&name, &p).await?;
            let f = running.failover_postgres(&p).await?;
            println!("postgres failover: {} -> {}", f.old_primary, f.new_primary);
            println!("  writer endpoint unavailable for {:.2}s", f.writer_unavailable.as_secs_f64());
            println!(
                "  {} back as the synchronous standby after {:.2}s",
                f.old_primary,
                f.old_primary_rejoined_after.as_secs_f64()
            );
            println!("  total {:.2}s", f.total.as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { scenario, load, junit } => run_scenario(&scenario, &load, junit.as_deref(), &p).await,
        Command::Soak { seed, cycles, cycle, load } => runs::soak(seed, cycles, cycle, &load, &p).await,
        Command::Fault { fault, stack } => {
            let name = stack.name()?;
            let mut running = voyager_sim::RunningStack::attach(&name, &p).await?;
            let st = running.stack()?;
            let faults = match fault {
                FaultCommand::AzOutage { az, mode } => {
                    let mode = match mode.as_str() {
                        "kill" => OutageMode::Kill,
                        "pause" => OutageMode::Pause,
                        other => {
                            return Err(Error::usage(
                                format!("unknown outage mode `{other}`"),
                                "use --mode kill or --mode pause",
                            ))
                        }
                    };
                    vec![Fault::AzOutage { az, mode }]
                }
                FaultCommand::Kill { instance } => vec![Fault::Kill { instance }],
                FaultCommand::Pause { instance } => vec![Fault::Pause { instance }],
                FaultCommand::Restart { instance } => {
                    let took = running.restart_instance(&instance, std::time::Duration::from_secs(120)).await?;
                    println!("{instance} restarted; answering again after {:.2}s", took.as_secs_f64());
                    return Ok(ExitCode::SUCCESS);
                }
                FaultCommand::Partition { link } => link_faults("partition", link, LinkArgs::default(), &st)?,
                FaultCommand::Latency { link, delay, jitter } => {
                    link_faults("latency", link, LinkArgs { delay: Some(delay), jitter, ..Default::default() }, &st)?
                }
                FaultCommand::Jitter { link, jitter, delay } => {
                    link_faults("jitter", link, LinkArgs { delay, jitter: Some(jitter), ..Default::default() }, &st)?
                }
                FaultCommand::Loss { link, loss } => {
                    link_faults("loss", link, LinkArgs { loss: Some(loss), ..Default::default() }, &st)?
                }
                FaultCommand::Bandwidth { link, rate } => {
                    link_faults("bandwidth", link, LinkArgs { rate: Some(rate), ..Default::default() }, &st)?
                }
            };
            for f in faults {
                running.inject(f.clone()).await?;
                println!("fault in force: {f}");
            }
            println!("undo with `voyager-sim heal`");
            Ok(ExitCode::SUCCESS)
        }
        Command::Vault { command: VaultCommand::Credentials, stack } => {
            let name = stack.name()?;
            let running = voyager_sim::RunningStack::attach(&name, &p).await?;
            let ep = running.vault().ok_or_else(|| {
                Error::usage(format!("stack `{name}` runs no vault"), "add a vault instance to the stack file")
            })?;
            if ep.root_token().is_empty() {
                return Err(Error::usage("vault is not initialised yet", "wait for `voyager-sim up` to finish"));
            }
            println!("VAULT_ADDR={}", ep.addr());
            println!("VAULT_ROOT_TOKEN={}", ep.root_token());
            for (i, k) in ep.unseal_keys().iter().enumerate() {
                println!("VAULT_UNSEAL_KEY_{}={k}", i + 1);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Auth0 { command: Auth0Command::RotateKeys, stack } => {
            let name = stack.name()?;
            let running = voyager_sim::RunningStack::attach(&name, &p).await?;
            let ep = running.auth0().ok_or_else(|| {
                Error::usage(format!("stack `{name}` runs no auth0"), "add an auth0 instance to the stack file")
            })?;
            let answer = ep.rotate_keys().await.map_err(|e| Error::usage(e, "check `voyager-sim status`"))?;
            println!("{answer}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Probe { from, to, count, stack } => {
            let name = stack.name()?;
            let running = voyager_sim::RunningStack::attach(&name, &p).await?;
            let (mut rtts, lost) = running.round_trips(&from, &to, count, std::time::Duration::from_millis(10)).await?;
            rtts.sort();
            let ms = |q: f64| {
                rtts.get(((rtts.len() as f64 * q) as usize).min(rtts.len().saturating_sub(1)))
                    .map(|d| format!("{:.3}", d.as_secs_f64() * 1e3))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "{from} -> {to} -> {from}: {} round trips, {lost} lost; ms min {} p50 {} p90 {} p99 {} max {}",
                rtts.len(),
                ms(0.0),
                ms(0.5),
                ms(0.9),
                ms(0.99),
                ms(1.0)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Heal { stack } => {
            let name = stack.name()?;
            let mut running = voyager_sim::RunningStack::attach(&name, &p).await?;
            let t = std::time::Instant::now();
            let healed = running.heal(std::time::Duration::from_secs(180)).await?;
            if healed.is_empty() {
                println!("no fault was in force");
            }
            for f in &healed {
                println!("healed: {f}");
            }
            println!("everything answers again after {:.2}s", t.elapsed().as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { stack } => {
            let s = stack.load()?;
            print_plan(&s);
            Ok(ExitCode::SUCCESS)
        }
        Command::Kube { command: KubeCommand::Load { images }, stack } => {
            let name = stack.name()?;
            let running = voyager_sim::RunningStack::attach(&name, &p).await?;
            for (image, nodes) in running.kube_load(&images, &p).await? {
                println!("{image}: loaded into {} nodes ({})", nodes.len(), nodes.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Control { name } => {
            voyager_sim::control::run(&name, &p).await.map_err(|e| Error::usage(e, "see the control plane's log"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Images { command: ImagesCommand::Build { images, only } } => {
            let stack = harness::builtin_stack();
            let kinds = match only {
                Some(list) => harness::parse_only(&stack, &list)?,
                None => voyager_sim::ServiceKind::ALL.to_vec(),
            };
            let set = match images {
                ImageSource::Upstream => ImageSet::Upstream,
                ImageSource::Offline => ImageSet::Offline,
                ImageSource::Auto => {
                    return Err(Error::usage(
                        "`images build` needs a definite set",
                        "use --images offline or --images upstream",
                    ))
                }
            };
            let t = std::time::Instant::now();
            let out = harness::build_images(set, &kinds, &p).await?;
            for o in &out {
                println!(
                    "{:<52} {:>8} {:>7.1}s",
                    o.tag,
                    if o.built { "built" } else { "cached" },
                    o.elapsed.as_secs_f64()
                );
            }
            eprintln!("voyager-sim: images ready in {:.1}s", t.elapsed().as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn up(args: StackArgs, only: Option<String>, images: ImageSource, p: Progress) -> Result<ExitCode, Error> {
    let stack = args.load()?;
    let mut sim = Sim::new(stack.clone()).with_images(images).with_progress(p.clone()).detached();
    if let Some(path) = &args.stack {
        sim = sim.with_stack_file(std::fs::canonicalize(path).unwrap_or(path.clone()));
        sim = sim.with_fixtures(harness::load_fixtures_near(path)?);
    }
    if let Some(n) = &args.name {
        sim = sim.with_name(n.clone());
    }
    if let Some(list) = &only {
        sim = sim.with_only(&harness::parse_only(&stack, list)?);
    }
    let name = sim.name().to_string();
    // Ctrl-C or SIGTERM mid-way: drop the start and remove what it made, so
    // nothing half-started is left running.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::usage(e.to_string(), "signal setup failed"))?;
    let running = tokio::select! {
        r = sim.start() => r?,
        _ = tokio::signal::ctrl_c() => { interrupted(&name, &p).await; return Err(Error::Interrupted) }
        _ = term.recv() => { interrupted(&name, &p).await; return Err(Error::Interrupted) }
    };
    let t = running.timings().clone();
    let state = running.detach();
    println!("stack `{}` is up (run {}, {} images)", state.stack, state.run_id, state.images);
    let w = state.instances.iter().map(|i| i.name.len()).max().unwrap_or(0).max(20);
    for i in &state.instances {
        let ep = i.published.values().next().map(|a| a.to_string()).unwrap_or_default();
        println!("  {:<w$} az {:<2} {:<8} {:<11} {}", i.name, i.az, i.subnet, i.address, ep);
    }
    let phases: Vec<String> = t.phases.iter().map(|(n, d)| format!("{n} {:.2}s", d.as_secs_f64())).collect();
    println!("timings: {} | total {:.2}s", phases.join(", "), t.total.as_secs_f64());
    let services: Vec<String> = t.services.iter().map(|(n, d)| format!("{n} {:.2}s", d.as_secs_f64())).collect();
    println!("time to ready: {}", services.join(", "));
    println!("next: `voyager-sim status`, `voyager-sim env`, `voyager-sim down`");
    Ok(ExitCode::SUCCESS)
}

/// Where a run's report goes.
async fn interrupted(name: &str, p: &Progress) {
    p.say("interrupted; removing what this run started");
    if let Err(e) = harness::down_interrupted(name, p).await {
        eprintln!("voyager-sim: cleanup after interrupt failed: {e}; run `voyager-sim down --name {name}`");
    }
}

fn not_up(name: &str) -> Error {
    Error::Usage {
        message: format!("stack `{name}` is not up"),
        help: format!(
            "start it with `voyager-sim up` (or pass the --name/--stack it was started with); state is kept in {}",
            voyager_sim::state::home().display()
        ),
    }
}

/// A link fault from the command line: one way, or both with --both-ways.
fn link_faults(
    kind: &str,
    link: LinkSides,
    args: LinkArgs,
    st: &voyager_sim::stack::Stack,
) -> Result<Vec<Fault>, Error> {
    let bad = |e: String| Error::usage(e, "name AZs and instances as `voyager-sim status` shows them");
    let (a, b) = (Side::parse(&link.from, st).map_err(bad)?, Side::parse(&link.to, st).map_err(bad)?);
    let f = voyager_sim::fault::link_fault(kind, a, b, &args)
        .map_err(|e| Error::usage(e, format!("see `voyager-sim fault {kind} --help`")))?;
    let mut v = vec![f.clone()];
    if link.both_ways {
        v.extend(f.reversed());
    }
    Ok(v)
}
