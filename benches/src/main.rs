//! `voyager-bench`: times the operations users wait for and prints numbers.
//!
//! `voyager-bench --help` lists the benchmarks and their flags ([`USAGE`]).

mod api;
mod crash;
mod peers;
mod rds;

use std::time::{Duration, Instant};

use voyager_sim::harness::{build_images, builtin_stack};
use voyager_sim::images::{recipe, ImageSet};
use voyager_sim::{ImageSource, Progress, ServiceKind, Sim};

/// Every benchmark, its flags and what it prints.
const USAGE: &str = "\
usage: voyager-bench BENCHMARK [FLAGS]

  voyager-bench up-down [--runs N]   start the postgres-only stack (cached
                                     images) and shut it down, N times
  voyager-bench image-build          remove the offline images, rebuild them
  voyager-bench load-max             per operation, double the open-model
                                     rate every 10 s step until fewer than
                                     95% are acknowledged or p90 passes 1 s,
                                     then bisect three times between the
                                     last rate held and the first not
                                     (p99 also holds each step's client
                                     start-up, so it is shown, not judged)
  voyager-bench data-tier [--runs N] start the whole data tier (cached
                                     images): time to ready per service, then
                                     one PostgreSQL failover per run
  voyager-bench services [--runs N]  start Auth0, Vault, S3 (and the
                                     PostgreSQL Vault's database engine
                                     needs): time to ready per service,
                                     then each container's memory
  voyager-bench kubernetes [--runs N] start the cluster alone (cached
                                     images): time to ready per bring-up
                                     step, memory per node; the last run
                                     also with the whole stack beside it
  voyager-bench kube-build           build Kubernetes, etcd and CoreDNS
                                     from their modules into empty build
                                     caches (cold; modules already fetched
                                     stay), then again (cached)
  voyager-bench link-delay           inject one-way delays (with and without
                                     jitter) between AZs a and b and compare
                                     each measured round trip with the
                                     normal link's median plus the delay
                                     asked: median and p99 error
  voyager-bench crash [--runs N] [--seed S]
                                     SIGKILL `up`, `run` and `down` at
                                     seeded random points, then `heal` /
                                     `down` as a user would, and count
                                     what is left (target: nothing)
  voyager-bench auto-failover [--runs N] [--detection S]
                                     kill the PostgreSQL primary from
                                     outside N times: writer endpoint
                                     unavailability (detection: the
                                     stack's, 30 s by default)
  voyager-bench restore [--rows N]   a database of N rows (~200 B each),
                                     backed up, restored to a time: backup
                                     and restore durations, RPO
  voyager-bench api [--seconds S] [--pods]
                                     voyager-api's three replicas on the
                                     stack's tiers, directly, through the
                                     ALB and through the NLB: answers per
                                     second, share answered 201 and
                                     latency at 1, 4, 16 and 32 clients;
                                     --pods: as a Deployment on the
                                     cluster, through the balancers only
  voyager-bench ready [--runs N]     the data and identity tier (Kafka,
                                     PostgreSQL, InfluxDB, Vault, Auth0,
                                     S3; cached images) started whole, N
                                     times: time to ready, median and
                                     spread, each service's share; then
                                     each service started alone, so the
                                     cost of starting together shows
  voyager-bench footprint            start the whole built-in stack (cached
                                     images), wait an idle minute, then
                                     memory (the cgroup's figure, as
                                     `docker stats` reads it) per
                                     container, per service and in all
  voyager-bench peers [--seconds S] [--only kafka|postgres] [--steps]
                                     our generator beside pgbench (the
                                     load's insert through the writer
                                     endpoint) and Kafka's producer perf
                                     tool (acks=all) on one stack: each
                                     peer's best rate and p50/p99, ours
                                     as the highest sustained open-model
                                     rate, and ours as a ratio of theirs

Wall-clock numbers on a shared 2-core machine wobble; the runs are there
to show the spread, not to hide it.
";

/// The flags each benchmark takes; those ending in `=` take a value.
const FLAGS: &[(&str, &[&str])] = &[
    ("up-down", &["--runs="]),
    ("image-build", &[]),
    ("data-tier", &["--runs="]),
    ("load-max", &[]),
    ("link-delay", &[]),
    ("services", &["--runs="]),
    ("kubernetes", &["--runs="]),
    ("kube-build", &[]),
    ("crash", &["--runs=", "--seed="]),
    ("auto-failover", &["--runs=", "--detection="]),
    ("restore", &["--rows="]),
    ("api", &["--seconds=", "--pods"]),
    ("ready", &["--runs="]),
    ("footprint", &[]),
    ("peers", &["--seconds=", "--only=", "--steps"]),
];

fn summary(label: &str, mut xs: Vec<Duration>) {
    xs.sort();
    let s = |d: Duration| format!("{:.3}s", d.as_secs_f64());
    println!(
        "{label:<28} n={:<3} min {}  median {}  max {}",
        xs.len(),
        s(xs[0]),
        s(xs[xs.len() / 2]),
        s(xs[xs.len() - 1])
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse(std::env::args().skip(1).collect()).unwrap_or_else(|e| {
        eprintln!("voyager-bench: {e}\n(`voyager-bench --help` lists the benchmarks and their flags)");
        std::process::exit(2)
    });
    let runs = args.number("--runs").unwrap_or(5) as usize;
    match args.bench.as_str() {
        "--help" | "-h" | "help" => print!("{USAGE}"),
        "up-down" => up_down(runs).await,
        "image-build" => image_build().await,
        "data-tier" => data_tier(runs).await,
        "load-max" => load_max().await,
        "link-delay" => link_delay().await,
        "services" => services(runs).await,
        "kubernetes" => kubernetes(runs).await,
        "kube-build" => kube_build().await,
        "crash" => crash::crash(args.number("--runs").unwrap_or(51) as usize, args.number("--seed").unwrap_or(1)).await,
        "auto-failover" => rds::auto_failover(runs, args.number("--detection").map(Duration::from_secs)).await,
        "restore" => rds::restore(args.number("--rows").unwrap_or(1_000_000)).await,
        "api" => api::api(args.number("--seconds").unwrap_or(20), &[1, 4, 16, 32], args.has("--pods")).await,
        "ready" => ready(runs).await,
        "footprint" => footprint().await,
        "peers" => peers::peers(args.number("--seconds").unwrap_or(10), args.only, args.has("--steps")).await,
        other => unreachable!("Args::parse lets only known benchmarks through, not {other}"),
    }
}

/// A command line checked against [`FLAGS`]: a typo, a flag another
/// benchmark takes or a value that is not a number stops the run before
/// anything starts, rather than running for minutes on a default.
struct Args {
    bench: String,
    given: Vec<(String, Option<String>)>,
    only: Option<ServiceKind>,
}

impl Args {
    fn parse(args: Vec<String>) -> Result<Args, String> {
        let mut it = args.into_iter();
        let bench = it.next().unwrap_or_else(|| "up-down".into());
        if ["--help", "-h", "help"].contains(&bench.as_str()) {
            return Ok(Args { bench, given: vec![], only: None });
        }
        let Some((_, flags)) = FLAGS.iter().find(|(b, _)| *b == bench) else {
            let all: Vec<&str> = FLAGS.iter().map(|(b, _)| *b).collect();
            return Err(format!("unknown benchmark `{bench}`; use one of {}", all.join(", ")));
        };
        let mut given = vec![];
        while let Some(arg) = it.next() {
            if ["--help", "-h"].contains(&arg.as_str()) {
                return Ok(Args { bench: arg, given: vec![], only: None });
            }
            if flags.contains(&arg.as_str()) {
                given.push((arg, None));
            } else if flags.contains(&format!("{arg}=").as_str()) {
                let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
                given.push((arg, Some(value)));
            } else {
                let takes: Vec<&str> = flags.iter().map(|f| f.trim_end_matches('=')).collect();
                let takes = if takes.is_empty() { "no flags".to_string() } else { takes.join(", ") };
                return Err(format!("`{bench}` does not take `{arg}`; it takes {takes}"));
            }
        }
        let mut parsed = Args { bench, given, only: None };
        for (name, value) in &parsed.given {
            match (name.as_str(), value) {
                ("--only", Some(k)) => {
                    parsed.only = Some(
                        k.parse::<ServiceKind>()
                            .ok()
                            .filter(|k| [ServiceKind::Kafka, ServiceKind::Postgres].contains(k))
                            .ok_or_else(|| format!("--only takes kafka or postgres, not `{k}`"))?,
                    )
                }
                (_, Some(v)) if v.parse::<u64>().is_err() => {
                    return Err(format!("{name} takes a whole number, not `{v}`"))
                }
                _ => {}
            }
        }
        Ok(parsed)
    }

    fn has(&self, name: &str) -> bool {
        self.given.iter().any(|(n, _)| n == name)
    }

    /// A numeric flag's value; [`Args::parse`] has checked it is one.
    fn number(&self, name: &str) -> Option<u64> {
        self.given.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.as_ref()?.parse().ok())
    }
}

async fn up_down(runs: usize) {
    build_images(ImageSet::Offline, &[ServiceKind::Postgres], &Progress::stderr()).await.expect("offline images");
    let stack = builtin_stack().relocated("10.250.0.0/16".parse().unwrap()).unwrap();
    let (mut up, mut ready, mut down) = (vec![], vec![], vec![]);
    for i in 0..runs {
        let t = Instant::now();
        let running = Sim::new(stack.clone())
            .with_name("bench")
            .with_only(&[ServiceKind::Postgres])
            .with_images(ImageSource::Offline)
            .start()
            .await
            .expect("up");
        up.push(t.elapsed());
        ready.push(running.timings().ready[0].1);
        let t = Instant::now();
        running.shutdown().await.expect("down");
        down.push(t.elapsed());
        eprintln!("run {}/{runs} done", i + 1);
    }
    summary("up --only postgres (cached)", up);
    summary("  of which postgres ready", ready);
    summary("down", down);
}

async fn image_build() {
    for tag in [recipe::postgres().tag(), recipe::base().tag()] {
        let _ = std::process::Command::new("docker").args(["rmi", "-f", &tag]).output();
    }
    let t = Instant::now();
    let out = build_images(ImageSet::Offline, &[ServiceKind::Postgres], &Progress::stderr()).await.expect("build");
    for o in out {
        println!("{:<48} {:.1}s", o.tag, o.elapsed.as_secs_f64());
    }
    println!("offline image build (base + postgres): {:.1}s", t.elapsed().as_secs_f64());
}

async fn data_tier(runs: usize) {
    let kinds = [ServiceKind::Influxdb, ServiceKind::Kafka, ServiceKind::Postgres];
    build_images(ImageSet::Offline, &kinds, &Progress::stderr()).await.expect("offline images");
    let stack = builtin_stack().relocated("10.251.0.0/16".parse().unwrap()).unwrap();
    let mut per_service: std::collections::BTreeMap<String, Vec<Duration>> = Default::default();
    let (mut total, mut writer_down, mut rejoin) = (vec![], vec![], vec![]);
    for i in 0..runs {
        let t = Instant::now();
        let mut running = Sim::new(stack.clone())
            .with_name("bench-data")
            .with_only(&kinds)
            .with_images(ImageSource::Offline)
            .start()
            .await
            .expect("up");
        total.push(t.elapsed());
        for (name, d) in &running.timings().services {
            per_service.entry(name.clone()).or_default().push(*d);
        }
        let f = running.failover_postgres(&Progress::silent()).await.expect("failover");
        writer_down.push(f.writer_unavailable);
        rejoin.push(f.old_primary_rejoined_after);
        running.shutdown().await.expect("down");
        eprintln!("run {}/{runs} done", i + 1);
    }
    summary("whole data tier up", total);
    for (name, xs) in per_service {
        summary(&format!("  {name} ready"), xs);
    }
    summary("failover: writer unavailable", writer_down);
    summary("failover: old primary rejoined", rejoin);
}

/// The built-in stack moved to `cidr` (so benches run beside each other),
/// `kinds` of it started from the offline images, built first if needed.
pub(crate) async fn start_offline(
    stack: voyager_sim::Stack,
    name: &str,
    kinds: &[ServiceKind],
    progress: Progress,
) -> voyager_sim::RunningStack {
    build_images(ImageSet::Offline, kinds, &Progress::stderr()).await.expect("offline images");
    Sim::new(stack)
        .with_name(name)
        .with_only(kinds)
        .with_images(ImageSource::Offline)
        .with_progress(progress)
        .start()
        .await
        .expect("up")
}

/// The built-in stack in another VPC range.
pub(crate) fn builtin_in(cidr: &str) -> voyager_sim::Stack {
    builtin_stack().relocated(cidr.parse().expect("a CIDR")).expect("the built-in stack relocates")
}

async fn load_max() {
    use voyager_sim::ledger::Op;
    let kinds = [ServiceKind::Influxdb, ServiceKind::Kafka, ServiceKind::Postgres];
    let mut running = start_offline(builtin_in("10.252.0.0/16"), "bench-load", &kinds, Progress::silent()).await;
    for op in [Op::KafkaProduce, Op::PostgresInsert, Op::InfluxWrite] {
        let best = highest_sustained(&mut running, op, true).await;
        println!(
            "{:<16} highest sustained offered rate: {}",
            op.as_str(),
            best.map(|(b, _)| format!("{b:.0}/s")).unwrap_or_else(|| "below 100/s".into())
        );
    }
    running.shutdown().await.expect("down");
}

/// The highest open-model rate of one operation the stack sustains (95%
/// acknowledged, p90 within 1 s, latency from each intended send time):
/// double from 100/s until a rate is not held (no cap: the point is the
/// real ceiling), then halve the gap three times, which puts the answer
/// within 1/16 of the last doubling. Returns it with its 10 s step's stats.
pub(crate) async fn highest_sustained(
    running: &mut voyager_sim::RunningStack,
    op: voyager_sim::ledger::Op,
    print_steps: bool,
) -> Option<(f64, voyager_sim::report::PhaseStats)> {
    use voyager_sim::runner::{run, RunOptions};
    use voyager_sim::scenario::{Expect, Scenario};
    let step = |rate: f64, secs: u64| Scenario {
        name: format!("load-max-{}", op.as_str()),
        description: String::new(),
        seed: 1,
        duration: Duration::from_secs(secs),
        ramp: Duration::ZERO,
        rates: [(op, rate)].into(),
        faults: vec![],
        kubernetes: None,
        expect: Expect::default(),
    };
    // Fresh JVMs and empty caches first: their warm-up is not the
    // generator's limit.
    run(running, &step(50.0, 10), &RunOptions::default(), &Progress::silent()).await.expect("warm-up");
    let mut measure = async |rate: f64| {
        let r = run(running, &step(rate, 10), &RunOptions::default(), &Progress::silent()).await.expect("run");
        let ph = r.phases[0].clone();
        let acked_rate = ph.ok as f64 / 10.0;
        if print_steps {
            println!(
                "{:<16} offered {rate:>6.0}/s  acknowledged {acked_rate:>7.1}/s  p50 {:>7.1} ms  p90 {:>7.1} ms  p99 {:>8.1} ms",
                op.as_str(),
                ph.p50_ms,
                ph.p90_ms,
                ph.p99_ms
            );
        }
        (acked_rate >= rate * 0.95 && ph.p90_ms <= 1000.0, ph)
    };
    let (mut lo, mut rate) = (None, 100.0);
    let hi = loop {
        match measure(rate).await {
            (true, ph) => lo = Some((rate, ph)),
            (false, _) => break rate,
        }
        rate *= 2.0;
    };
    let (mut l, mut best) = lo?;
    let mut h = hi;
    for _ in 0..3 {
        let m = ((l + h) / 2.0).round();
        match measure(m).await {
            (true, ph) => (l, best) = (m, ph),
            (false, _) => h = m,
        }
    }
    Some((l, best))
}

async fn link_delay() {
    use voyager_sim::fault::{Fault, Side};
    build_images(ImageSet::Offline, &[ServiceKind::Influxdb], &Progress::stderr()).await.expect("offline images");
    let stack = builtin_stack().relocated("10.253.0.0/16".parse().unwrap()).unwrap();
    let mut running = Sim::new(stack)
        .with_name("bench-link")
        .with_images(ImageSource::Offline)
        .with_only(&[ServiceKind::Influxdb])
        .start()
        .await
        .expect("up");
    let (n, gap) = (500, Duration::from_millis(4));
    let ms = |d: f64| d * 1e3;
    let pct = |v: &[f64], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    let (mut normal, lost) = running.round_trips("a", "b", n, gap).await.expect("probe");
    normal.sort();
    let base = normal[normal.len() / 2].as_secs_f64();
    println!(
        "normal link (1 ms each way): round trip median {:.3} ms, p99 {:.3} ms, {lost} lost",
        ms(base),
        ms(pct(&normal.iter().map(|d| d.as_secs_f64()).collect::<Vec<_>>(), 0.99))
    );
    println!(
        "{:<22} {:>9} {:>10} {:>10} {:>10}",
        "asked (one way a->b)", "samples", "median err", "p99 |err|", "spread"
    );
    for (delay_ms, jitter_ms) in [(1u64, 0u64), (5, 0), (20, 0), (50, 0), (100, 0), (50, 10)] {
        let (a, b) = (Side::Az("a".into()), Side::Az("b".into()));
        let f = Fault::Latency { from: a, to: b, delay_us: delay_ms * 1000, jitter_us: jitter_ms * 1000 };
        running.inject(f).await.expect("inject");
        let (rtts, lost) = running.round_trips("a", "b", n, gap).await.expect("probe");
        running.heal(Duration::from_secs(30)).await.expect("heal");
        let mut err: Vec<f64> = rtts.iter().map(|d| d.as_secs_f64() - base - delay_ms as f64 / 1e3).collect();
        err.sort_by(|x, y| x.total_cmp(y));
        let mut abs: Vec<f64> = err.iter().map(|e| e.abs()).collect();
        abs.sort_by(|x, y| x.total_cmp(y));
        // With jitter, the spread is what to compare: uniform ± J has a
        // standard deviation of J/√3.
        let mean = err.iter().sum::<f64>() / err.len() as f64;
        let sd = (err.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / err.len() as f64).sqrt();
        let asked = if jitter_ms > 0 { format!("{delay_ms} ms ± {jitter_ms} ms") } else { format!("{delay_ms} ms") };
        println!(
            "{asked:<22} {:>9} {:>+9.3}ms {:>9.3}ms {:>7.3}ms sd{}",
            format!("{}/{n}", n - lost),
            ms(pct(&err, 0.5)),
            ms(pct(&abs, 0.99)),
            ms(sd),
            if jitter_ms > 0 {
                format!(" (uniform ± {jitter_ms} ms: {:.3} ms)", jitter_ms as f64 / 3f64.sqrt())
            } else {
                String::new()
            }
        );
    }
    running.shutdown().await.expect("down");
}

async fn services(runs: usize) {
    let kinds = [ServiceKind::Auth0, ServiceKind::Postgres, ServiceKind::S3, ServiceKind::Vault];
    build_images(ImageSet::Offline, &kinds, &Progress::stderr()).await.expect("offline images");
    let stack = builtin_stack().relocated("10.254.0.0/16".parse().unwrap()).unwrap();
    let mut per_service: std::collections::BTreeMap<String, Vec<Duration>> = Default::default();
    let mut memory = String::new();
    for i in 0..runs {
        let running = Sim::new(stack.clone())
            .with_name("bench-svc")
            .with_images(ImageSource::Offline)
            .with_only(&kinds)
            .start()
            .await
            .expect("up");
        for (name, d) in &running.timings().services {
            per_service.entry(name.clone()).or_default().push(*d);
        }
        if i + 1 == runs {
            // Memory after start-up, as Docker accounts it (cgroup usage).
            let out = std::process::Command::new("docker")
                .args(["stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}"])
                .output()
                .expect("docker stats");
            // And the resident set of the processes in each, which is what
            // a small server costs (the cgroup figure leaves out shared pages).
            memory = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("vs-bench-svc-"))
                .map(|l| {
                    let name = l.split('\t').next().unwrap_or("");
                    let top = std::process::Command::new("docker")
                        .args(["top", name, "-eo", "pid,rss"])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default();
                    let rss_kib: u64 =
                        top.lines().skip(1).filter_map(|x| x.split_whitespace().nth(1)?.parse::<u64>().ok()).sum();
                    format!(
                        "  {}  (processes' RSS {:.1} MiB)\n",
                        l.trim_start_matches("vs-bench-svc-"),
                        rss_kib as f64 / 1024.0
                    )
                })
                .collect();
        }
        running.shutdown().await.expect("down");
        eprintln!("run {}/{runs} done", i + 1);
    }
    for (name, xs) in per_service {
        summary(&format!("{name} ready (from containers up)"), xs);
    }
    println!("memory per container after start (docker stats; RSS from docker top):\n{memory}");
}

/// Memory of each of a stack's containers as Docker accounts it (its cgroup).
fn container_memory(prefix: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}\t{{.CPUPerc}}"])
        .output()
        .expect("docker stats");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| format!("  {}\n", l.trim_start_matches(prefix)))
        .collect()
}

/// The data and identity tier: what a developer's service needs up before
/// it starts (Kubernetes and the edge have their own benches).
const DATA_AND_IDENTITY: [ServiceKind; 6] = [
    ServiceKind::Auth0,
    ServiceKind::Influxdb,
    ServiceKind::Kafka,
    ServiceKind::Postgres,
    ServiceKind::S3,
    ServiceKind::Vault,
];

async fn ready(runs: usize) {
    build_images(ImageSet::Offline, &DATA_AND_IDENTITY, &Progress::stderr()).await.expect("offline images");
    let stack = builtin_stack().relocated("10.245.0.0/16".parse().unwrap()).unwrap();
    let start = async |kinds: &[ServiceKind]| {
        let t = Instant::now();
        let running = Sim::new(stack.clone())
            .with_name("bench-ready")
            .with_only(kinds)
            .with_images(ImageSource::Offline)
            .start()
            .await
            .expect("up");
        let whole = t.elapsed();
        let per: Vec<(String, Duration)> = running.timings().services.clone();
        running.shutdown().await.expect("down");
        (whole, per)
    };
    let mut whole = vec![];
    let mut together: std::collections::BTreeMap<String, Vec<Duration>> = Default::default();
    for i in 0..runs {
        let (w, per) = start(&DATA_AND_IDENTITY).await;
        whole.push(w);
        for (name, d) in per {
            together.entry(name).or_default().push(d);
        }
        eprintln!("together: run {}/{runs}: {:.1}s", i + 1, w.as_secs_f64());
    }
    // Alone, a service still brings what it needs (Vault's database engine
    // needs PostgreSQL): its own line is what is timed.
    let mut alone: std::collections::BTreeMap<String, Vec<Duration>> = Default::default();
    for kind in DATA_AND_IDENTITY {
        for i in 0..runs {
            let (_, per) = start(&[kind]).await;
            if let Some((_, d)) = per.iter().find(|(n, _)| n == kind.as_str()) {
                alone.entry(kind.as_str().to_string()).or_default().push(*d);
            }
            eprintln!("{kind} alone: run {}/{runs}", i + 1);
        }
    }
    summary("data + identity tier ready", whole);
    let median = |xs: &[Duration]| {
        let mut v = xs.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    let mut sum_alone = Duration::ZERO;
    println!("{:<16} {:>18} {:>14}", "service", "ready (together)", "ready (alone)");
    for (name, xs) in &together {
        let a = alone.get(name).map(|v| median(v));
        sum_alone += a.unwrap_or_default();
        println!(
            "{name:<16} {:>17.1}s {:>13}",
            median(xs).as_secs_f64(),
            a.map(|d| format!("{:.1}s", d.as_secs_f64())).unwrap_or_else(|| "-".into())
        );
    }
    println!("sum of the services' medians started alone: {:.1}s", sum_alone.as_secs_f64());
}

/// Memory per container of a running stack, in MiB, by container name.
fn memory_mib(prefix: &str) -> Vec<(String, f64)> {
    let out = std::process::Command::new("docker")
        .args(["stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}"])
        .output()
        .expect("docker stats");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, usage) = l.split_once('\t')?;
            let name = name.strip_prefix(prefix)?;
            let used = usage.split('/').next()?.trim();
            let (num, unit) = used.split_at(used.find(|c: char| c.is_ascii_alphabetic())?);
            let scale = match unit {
                "B" => 1.0 / 1048576.0,
                "KiB" => 1.0 / 1024.0,
                "MiB" => 1.0,
                "GiB" => 1024.0,
                _ => return None,
            };
            Some((name.to_string(), num.parse::<f64>().ok()? * scale))
        })
        .collect()
}

async fn footprint() {
    let t = Instant::now();
    let running =
        start_offline(builtin_in("10.246.0.0/16"), "bench-footprint", ServiceKind::ALL, Progress::stderr()).await;
    println!("whole stack ready in {:.1}s; measuring after an idle minute", t.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let service_of: std::collections::BTreeMap<String, String> =
        running.state().instances.iter().map(|i| (i.name.clone(), i.service.clone())).collect();
    let mut per_service: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
    let mut total = 0.0;
    println!("{:<32} {:<12} {:>9}", "container", "service", "memory");
    for (name, mib) in memory_mib("vs-bench-footprint-") {
        // The stack's own parts (control plane, link agent, endpoints) are
        // containers of no declared instance.
        let service = service_of.get(&name).cloned().unwrap_or_else(|| "(simulator)".into());
        println!("{name:<32} {service:<12} {mib:>6.0} MiB");
        let e = per_service.entry(service).or_default();
        e.0 += 1;
        e.1 += mib;
        total += mib;
    }
    println!("\n{:<16} {:>10} {:>10}", "service", "containers", "memory");
    for (service, (n, mib)) in &per_service {
        println!("{service:<16} {n:>10} {mib:>6.0} MiB");
    }
    println!("{:<16} {:>10} {:>6.0} MiB", "whole stack", per_service.values().map(|v| v.0).sum::<usize>(), total);
    running.shutdown().await.expect("down");
}

async fn kubernetes(runs: usize) {
    let kinds = [ServiceKind::Kubernetes];
    build_images(ImageSet::Offline, &kinds, &Progress::stderr()).await.expect("offline images");
    let stack = builtin_stack().relocated("10.250.0.0/16".parse().unwrap()).unwrap();
    let mut alone = vec![];
    for i in 0..runs {
        let t = Instant::now();
        let running = Sim::new(stack.clone())
            .with_name("bench-kube")
            .with_images(ImageSource::Offline)
            .with_only(&kinds)
            .start()
            .await
            .expect("up");
        alone.push(t.elapsed());
        if i + 1 == runs {
            // A minute after ready: what an idle cluster costs.
            tokio::time::sleep(Duration::from_secs(60)).await;
            println!(
                "memory and CPU per container, an idle minute after ready:\n{}",
                container_memory("vs-bench-kube-")
            );
        }
        running.shutdown().await.expect("down");
        eprintln!("run {}/{runs} done", i + 1);
    }
    summary("cluster ready (up --only kubernetes)", alone);
    let all: Vec<ServiceKind> = ServiceKind::ALL.to_vec();
    build_images(ImageSet::Offline, &all, &Progress::stderr()).await.expect("offline images");
    let t = Instant::now();
    let running =
        Sim::new(stack.clone()).with_name("bench-kube").with_images(ImageSource::Offline).start().await.expect("up");
    let whole = t.elapsed();
    for (name, d) in &running.timings().services {
        println!("  whole stack: {name:<11} ready in {:.1}s", d.as_secs_f64());
    }
    println!("whole stack ready in {:.1}s", whole.as_secs_f64());
    running.shutdown().await.expect("down");
}

async fn kube_build() {
    use voyager_sim::images::kubernetes::{COREDNS_BUILD, ETCD_BUILD, KUBERNETES_BUILD};
    let scratch = std::env::temp_dir().join(format!("voyager-bench-gocache-{}", std::process::id()));
    for (label, fresh) in [("cold", true), ("cached", false)] {
        if fresh {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        // Empty build caches (Go's and ours) without touching the user's:
        // the module cache stays, downloads are not what this measures.
        std::env::set_var("GOCACHE", scratch.join("go-build"));
        std::env::set_var("XDG_CACHE_HOME", scratch.join("xdg"));
        for b in [&KUBERNETES_BUILD, &ETCD_BUILD, &COREDNS_BUILD] {
            let _ = std::fs::remove_dir_all(scratch.join("xdg"));
            let t = Instant::now();
            voyager_sim::images::gobuild::programs(b, &Progress::stderr()).await.expect("go build");
            println!("{label:<7} {:<11} {:.1}s", b.name, t.elapsed().as_secs_f64());
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

#[cfg(test)]
mod tests {
    use super::Args;

    fn parse(line: &str) -> Result<Args, String> {
        Args::parse(line.split_whitespace().map(String::from).collect())
    }

    #[test]
    fn a_flag_the_benchmark_does_not_take_is_refused_before_anything_starts() {
        let e = parse("api --help-me").err().unwrap();
        assert!(e.contains("`api` does not take `--help-me`; it takes --seconds, --pods"), "{e}");
        assert!(parse("footprint --runs 3").err().unwrap().contains("it takes no flags"));
        assert!(parse("api --seconds ten").err().unwrap().contains("--seconds takes a whole number, not `ten`"));
        assert!(parse("api --seconds").err().unwrap().contains("--seconds needs a value"));
        assert!(parse("peers --only influxdb").err().unwrap().contains("kafka or postgres"));
        assert!(parse("uptime").err().unwrap().contains("unknown benchmark `uptime`"));
    }

    #[test]
    fn help_is_asked_for_anywhere_and_flags_are_read() {
        assert_eq!(parse("api --help").unwrap().bench, "--help");
        let a = parse("api --pods --seconds 10").unwrap();
        assert!(a.has("--pods") && a.number("--seconds") == Some(10) && a.number("--runs").is_none());
        assert_eq!(parse("").unwrap().bench, "up-down");
    }
}
