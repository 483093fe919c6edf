//! `voyager-bench crash`: SIGKILL the CLI's `up`, `run` and `down` at seeded
//! random points, do what a user would do next (`heal` after a killed run,
//! `down` after anything), and count what is left of the stack: containers,
//! networks, volumes, firewall rules, link agents, rate caps. The target is
//! nothing, every time; the bench prints each count and exits non-zero if
//! any kill left anything.
//!
//! The CLI is driven as a user drives it (a child process, killed with
//! SIGKILL, so nothing of it runs after the kill), on the PostgreSQL-only
//! stack moved to a VPC of its own so it clashes with no other stack.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use voyager_sim::harness::builtin_stack;
use voyager_sim::runner::soak::SplitMix64;
use voyager_sim::runtime::{docker, link, sweep};
use voyager_sim::{Progress, Tier};

/// The scenario a killed `run` was running: every kind of fault that
/// installs something on the host (a delay agent, a rate cap, firewall
/// drops and loss rules, a killed instance), all in force within 5 s.
const SCENARIO: &str = r#"
name = "crash-bench"
seed = 1
duration = "14s"
[load]
rate = { postgres_insert = 20 }
[[fault]]
at = "1s"
heal_at = "11s"
kind = "latency"
from = "a"
to = "b"
delay = "40ms"
[[fault]]
at = "2s"
heal_at = "11s"
kind = "bandwidth"
from = "b"
to = "c"
rate = "1mbit"
[[fault]]
at = "3s"
heal_at = "11s"
kind = "partition"
from = "a"
to = "c"
[[fault]]
at = "4s"
heal_at = "11s"
kind = "loss"
from = "c"
to = "a"
loss = "10%"
[[fault]]
at = "5s"
heal_at = "11s"
kind = "kill"
target = "postgres-c"
"#;

/// Windows the kill is first drawn from; each then follows how long the
/// command really took last time it ran unkilled (a kill after the command
/// ended tests what follows alone, which counts too, but says less).
const UP_WINDOW: Duration = Duration::from_secs(30);
const RUN_WINDOW: Duration = Duration::from_secs(16);
const DOWN_WINDOW: Duration = Duration::from_secs(6);

/// What a stack left behind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Left {
    containers: usize,
    networks: usize,
    volumes: usize,
    rules: usize,
    agents: usize,
    rate_caps: usize,
}

impl Left {
    fn total(&self) -> usize {
        self.containers + self.networks + self.volumes + self.rules + self.agents + self.rate_caps
    }
}

fn cli() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent().expect("target dir").join("voyager-sim")
}

/// Run a CLI command to its end; a failure is printed with its stderr.
/// Returns whether it succeeded and how long it took.
fn finish_timed(args: &[&str], dir: &Path) -> (bool, Duration) {
    let t = Instant::now();
    let out = Command::new(cli()).args(args).current_dir(dir).output().expect("voyager-sim runs");
    if !out.status.success() {
        eprintln!("voyager-sim {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    (out.status.success(), t.elapsed())
}

fn finish(args: &[&str], dir: &Path) -> bool {
    finish_timed(args, dir).0
}

/// Start a CLI command and SIGKILL it after `after` (or when it ends, if
/// sooner). Returns whether the kill landed before the command finished.
fn kill_after(args: &[&str], dir: &Path, after: Duration) -> bool {
    let mut child = Command::new(cli())
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("voyager-sim starts");
    let t = Instant::now();
    while t.elapsed() < after {
        if child.try_wait().expect("wait").is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let landed = child.try_wait().expect("wait").is_none();
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    landed
}

async fn left(stack: &voyager_sim::Stack) -> Left {
    let d = docker::connect(&Progress::silent()).await.expect("docker");
    let (cs, ns, vs) = sweep::leftovers(&d, &stack.name).await.expect("list");
    let agents = cs.iter().filter(|c| c.contains("netagent")).count();
    // Every table, not just the chains the sweep looks in.
    let saved = Command::new("iptables-save").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let tag = format!("voyager-sim:{}", stack.name);
    let rules = saved.unwrap_or_default().lines().filter(|l| l.contains(&tag)).count();
    let mut rate_caps = 0;
    for az in &stack.azs {
        for tier in [Tier::Private, Tier::Public] {
            let dev = link::bridge_name(&stack.name, &az.name, tier);
            let out = Command::new("tc").args(["qdisc", "show", "dev", &dev]).output();
            if let Ok(o) = out {
                rate_caps += String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.contains("htb")).count();
            }
        }
    }
    Left { containers: cs.len() - agents, networks: ns.len(), volumes: vs.len(), rules, agents, rate_caps }
}

/// Fault leftovers only (the stack itself is meant to be up): fault rules,
/// fault agents, rate caps.
fn fault_part(l: Left, base: Left) -> Left {
    Left {
        rules: l.rules.saturating_sub(base.rules),
        agents: l.agents.saturating_sub(base.agents),
        rate_caps: l.rate_caps.saturating_sub(base.rate_caps),
        ..Left::default()
    }
}

pub async fn crash(runs: usize, seed: u64) {
    let dir = tempfile_dir();
    std::fs::write(dir.join("crash.toml"), SCENARIO).expect("scenario file");
    let mut d = SplitMix64::new(seed);
    let (mut up_window, mut down_window) = (UP_WINDOW, DOWN_WINDOW);
    let mut results: Vec<(String, Duration, bool, Left)> = vec![];
    let t0 = Instant::now();
    for i in 0..runs {
        let mut stack = builtin_stack()
            .only(&[voyager_sim::ServiceKind::Postgres])
            .relocated("10.249.0.0/16".parse().expect("cidr"))
            .expect("same size");
        stack.name = format!("crash-{seed}-{i}");
        let file = dir.join(format!("{}.toml", stack.name));
        std::fs::write(&file, stack.to_toml()).expect("stack file");
        let f = file.to_str().expect("utf-8 path");
        let up = ["up", "--stack", f, "--images", "offline"];
        let down = ["down", "--stack", f];
        let what = ["up", "run", "down"][i % 3];
        let at = d.within(match what {
            "up" => up_window,
            "run" => RUN_WINDOW,
            _ => down_window,
        });
        let mut faults_left = Left::default();
        let landed = match what {
            "up" => kill_after(&up, &dir, at),
            "run" => {
                let (ok, took) = finish_timed(&up, &dir);
                assert!(ok, "up before the run");
                up_window = took;
                let base = left(&stack).await;
                let landed = kill_after(&["run", "crash.toml", "--stack", f, "--report-dir", "reports"], &dir, at);
                assert!(finish(&["heal", "--stack", f], &dir), "heal after the killed run");
                faults_left = fault_part(left(&stack).await, base);
                landed
            }
            _ => {
                let (ok, took) = finish_timed(&up, &dir);
                assert!(ok, "up before the down");
                up_window = took;
                kill_after(&down, &dir, at)
            }
        };
        let (downed, took) = finish_timed(&down, &dir);
        if what != "down" {
            down_window = took;
        }
        let mut l = left(&stack).await;
        l.rules += faults_left.rules;
        l.agents += faults_left.agents;
        l.rate_caps += faults_left.rate_caps;
        println!(
            "kill {:>3}/{runs}: {what:<4} at {:>5.2}s{} -> left {} ({l:?}){}",
            i + 1,
            at.as_secs_f64(),
            if landed { "" } else { " (after it ended)" },
            l.total(),
            if downed { "" } else { "; down failed" }
        );
        results.push((what.to_string(), at, landed, l));
        // Nothing of one kill may stay to blur the next count.
        if l.total() > 0 {
            let _ = finish(&down, &dir);
        }
    }
    println!("crash bench, seed {seed}: {runs} kills in {:.0}s", t0.elapsed().as_secs_f64());
    for what in ["up", "run", "down"] {
        let of: Vec<_> = results.iter().filter(|r| r.0 == what).collect();
        let landed = of.iter().filter(|r| r.2).count();
        let dirty = of.iter().filter(|r| r.3.total() > 0).count();
        println!("  {what:<4} killed {:>3} times ({landed} mid-command): {dirty} left something behind", of.len());
    }
    let dirty: usize = results.iter().filter(|r| r.3.total() > 0).count();
    println!("  total left behind: {dirty} of {runs} kills (target 0)");
    let _ = std::fs::remove_dir_all(&dir);
    if dirty > 0 {
        std::process::exit(1);
    }
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("voyager-crash-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
