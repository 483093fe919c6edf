//! The stack against a real Docker engine, through the library API and the
//! real CLI. Every test gets its own stack name and VPC range (Docker refuses
//! overlapping subnets), so they run in parallel.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use voyager_sim::runtime::{docker, route, sweep};
use voyager_sim::{Progress, ServiceKind, Sim, Tier};

mod common;

use common::stack;

/// PostgreSQL only: these tests are about the stack's lifecycle, and every
/// Kafka node is a JVM on a two-core machine.
fn sim(name: &str, octet: u8) -> Sim {
    common::sim(name, octet, &[ServiceKind::Postgres])
}

async fn assert_nothing_left(name: &str) {
    let d = docker::connect(&Progress::silent()).await.unwrap();
    let (cs, ns, vs) = sweep::leftovers(&d, name).await.unwrap();
    assert!(
        cs.is_empty() && ns.is_empty() && vs.is_empty(),
        "left behind for {name}: containers {cs:?}, networks {ns:?}, volumes {vs:?}"
    );
    assert!(
        !route::stacks_with_rules().await.contains(&name.to_string()),
        "firewall rules of {name} are still installed"
    );
}

async fn query_one_string(url: &str, sql: &str) -> String {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let row = client.query_one(sql, &[]).await.unwrap();
    row.get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn library_stack_serves_postgres_and_is_gone_after_drop() {
    let name = "t-lib-drop";
    let running = sim(name, 201).start().await.unwrap();
    let pg = running.postgres().expect("postgres endpoint");
    assert_eq!(pg.host.ip().to_string(), "127.0.0.1", "services publish on loopback only");
    assert_eq!(pg.vpc.to_string(), "10.201.1.5:5432", "the writer endpoint's VPC address");
    let env = running.env();
    let url = env.iter().find(|(k, _)| k == "DATABASE_URL").map(|(_, v)| v.clone()).expect("DATABASE_URL");
    assert_eq!(url, pg.url());

    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE TABLE runs (id int PRIMARY KEY, status text); INSERT INTO runs VALUES (1, 'queued'), (2, 'done');",
        )
        .await
        .unwrap();
    let rows = client.query("SELECT status FROM runs ORDER BY id", &[]).await.unwrap();
    let got: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(got, ["queued", "done"]);
    drop(client);

    drop(running);
    assert_nothing_left(name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn subnets_reach_each_other_with_source_addresses_intact() {
    let name = "t-vpc-route";
    let running = sim(name, 202).start().await.unwrap();
    let pg = running.postgres_instance("postgres-a").unwrap();
    let inside = format!("postgres://{}:{}@{}/{}", pg.user, pg.password, pg.vpc, pg.database);
    // From AZ b's public subnet to PostgreSQL in AZ a's private subnet, as a
    // VPC's local route allows; the server must see the client's own address.
    let (code, out) = running
        .run_in_subnet("b", Tier::Public, &["psql", &inside, "-tAc", "SELECT host(inet_client_addr())"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.trim().starts_with("10.202.102."), "client address seen by the server: {out:?}");
    let swept = running.shutdown().await.unwrap();
    // Three database nodes, the endpoints, the link agent holding the
    // inter-AZ latency and the control plane (RDS's); a data volume per node.
    assert_eq!((swept.containers, swept.networks, swept.volumes), (6, 6, 3));
    assert_nothing_left(name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_subnet_is_reported_with_its_owner_and_nothing_is_left_half_started() {
    let first = sim("t-taken-a", 203).start().await.unwrap();
    let err = sim("t-taken-b", 203).start().await.err().expect("overlapping VPC must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("overlaps a network Docker already has") && msg.contains("voyager-sim down --name t-taken-a"),
        "{msg}"
    );
    assert_nothing_left("t-taken-b").await;
    first.shutdown().await.unwrap();
    assert_nothing_left("t-taken-a").await;
}

// ---- the CLI ----

fn cli(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_voyager-sim"));
    c.env("VOYAGER_SIM_HOME", home).env_remove("VOYAGER_SIM_STACK_FILE");
    c
}

fn write_stack(dir: &Path, name: &str, octet: u8) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, stack(name, octet).to_toml()).unwrap();
    p
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}\n{}",
        c,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_up_env_status_down_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_stack(dir.path(), "t-cli", 204);
    let f = file.to_str().unwrap();
    let up = run_ok(cli(dir.path()).args(["up", "--stack", f, "--only", "postgres", "--images", "offline"]));
    assert!(up.contains("stack `t-cli` is up") && up.contains("timings: images"), "{up}");

    let env = run_ok(cli(dir.path()).args(["env", "--stack", f]));
    let url = env.lines().find_map(|l| l.strip_prefix("DATABASE_URL=")).expect("DATABASE_URL line").to_string();
    assert!(url.starts_with("postgres://voyager:") && url.contains("@127.0.0.1:"), "{url}");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('written through DATABASE_URL')")
        .await
        .unwrap();
    drop(client);
    assert_eq!(query_one_string(&url, "SELECT v FROM t").await, "written through DATABASE_URL");

    let status: serde_json::Value =
        serde_json::from_str(&run_ok(cli(dir.path()).args(["status", "--stack", f, "--json"]))).unwrap();
    let inst = &status["instances"][0];
    assert_eq!(
        (
            inst["instance"].as_str(),
            inst["az"].as_str(),
            inst["subnet"].as_str(),
            inst["address"].as_str(),
            inst["health"].as_str()
        ),
        (Some("postgres-a"), Some("a"), Some("private"), Some("10.204.1.10"), Some("healthy"))
    );
    assert_eq!(status["images"], "offline");

    let again =
        cli(dir.path()).args(["up", "--stack", f, "--only", "postgres", "--images", "offline"]).output().unwrap();
    assert_eq!(again.status.code(), Some(2), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("stack `t-cli` is already up"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let down = cli(dir.path()).args(["down", "--stack", f]).output().unwrap();
    assert!(down.status.success());
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("removed 6 containers, 6 networks, 3 volumes"),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_nothing_left("t-cli").await;
    let after = cli(dir.path()).args(["status", "--stack", f]).output().unwrap();
    assert_eq!(after.status.code(), Some(2), "status after down says the stack is not up");
}

/// Kill `up` with SIGKILL at several points (first network made, first
/// container made), then `down`: nothing may be left.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_up_then_down_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = docker::connect(&Progress::silent()).await.unwrap();
    for (i, kill_when) in ["network", "container"].iter().enumerate() {
        let name = format!("t-kill-{kill_when}");
        let file = write_stack(dir.path(), &name, 205 + i as u8);
        let mut child = cli(dir.path())
            .args(["up", "--stack", file.to_str().unwrap(), "--only", "postgres", "--images", "offline"])
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        loop {
            let (cs, ns, _) = sweep::leftovers(&d, &name).await.unwrap();
            let hit = if *kill_when == "network" { !ns.is_empty() } else { !cs.is_empty() };
            if hit {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "no {kill_when} appeared for {name}");
            assert!(child.try_wait().unwrap().is_none(), "up finished before it could be killed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (cs, ns, _) = sweep::leftovers(&d, &name).await.unwrap();
        assert!(!cs.is_empty() || !ns.is_empty(), "the kill should leave something for down to find");
        run_ok(cli(dir.path()).args(["down", "--name", &name]));
        assert_nothing_left(&name).await;
    }
}

/// A library run owned by a process that dies by SIGKILL is removed by the
/// next start's sweep, without a reaper container.
#[tokio::test(flavor = "multi_thread")]
async fn a_library_run_killed_by_sigkill_is_swept_by_the_next_start() {
    if let Ok(name) = std::env::var("VOYAGER_TEST_CHILD_STACK") {
        // Child mode: start, announce, and wait to be killed.
        let running = sim(&name, 207).start().await.unwrap();
        println!("READY {}", running.name());
        std::mem::forget(running);
        tokio::time::sleep(Duration::from_secs(600)).await;
        return;
    }
    let name = "t-orphan";
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_library_run_killed_by_sigkill_is_swept_by_the_next_start", "--nocapture"])
        .env("VOYAGER_TEST_CHILD_STACK", name)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.unwrap().starts_with("READY ")), "child never became ready");
    child.kill().unwrap();
    child.wait().unwrap();

    let d = docker::connect(&Progress::silent()).await.unwrap();
    let (cs, _, _) = sweep::leftovers(&d, name).await.unwrap();
    assert_eq!(cs.len(), 6, "the killed child's containers (link agent and control plane too) should still be there");
    let other = sim("t-orphan-next", 208).start().await.unwrap();
    assert_nothing_left(name).await;
    other.shutdown().await.unwrap();
}

/// SIGTERM (or Ctrl-C) during `up`: it removes what it started by itself and
/// says so; no `down` needed.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_up_removes_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let d = docker::connect(&Progress::silent()).await.unwrap();
    let name = "t-term";
    let file = write_stack(dir.path(), name, 209);
    let child = cli(dir.path())
        .args(["up", "--stack", file.to_str().unwrap(), "--only", "postgres", "--images", "offline"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while sweep::leftovers(&d, name).await.unwrap().0.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(120), "no container appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("interrupted; everything this run started has been removed"), "{err}");
    assert_nothing_left(name).await;
}
