//! The `voyager-vault` binary as a container runs it: the readiness line,
//! the environment, SIGTERM, and bad arguments.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_voyager-vault");

#[tokio::test]
async fn it_prints_where_it_listens_serves_and_saves_its_state_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .env("VAULT_LITE_STATE_FILE", &state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    eprintln!("ready after {:?}", started.elapsed());
    let url =
        line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("readiness line: {line:?}")).to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let api = vault_lite::VaultClient::new(&url);
    assert_eq!(api.raw("GET", "sys/health", None).await.unwrap().0, 501);
    let init = api.init(1, 1).await.unwrap();
    api.unseal(&init.keys).await.unwrap();
    assert_eq!(api.raw("GET", "sys/health", None).await.unwrap().0, 200);

    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(&init.root_token) && !stderr.contains(&init.keys[0]), "no secret in the log: {stderr}");
    assert!(std::fs::metadata(&state).unwrap().len() > 0);
}

#[test]
fn bad_arguments_exit_2_with_the_usage() {
    let out = Command::new(BIN).args(["--listen", "not-an-address"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not an address like 0.0.0.0:8200") && stderr.contains("usage: voyager-vault"),
        "{stderr}"
    );
    let out = Command::new(BIN).arg("--frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("VAULT_LITE_LISTEN"));
}

#[test]
fn a_port_in_use_is_an_error_that_names_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN).args(["--listen", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {addr}")));
}
