//! The real `voyager-auth0` binary: its readiness line, its environment
//! contract, graceful exit on SIGTERM, and exit codes with errors a person
//! can act on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_voyager-auth0");
const ADMIN_TOKEN: &str = "cli-test-admin-token";

/// The binary with a clean environment for its own variables.
fn command() -> Command {
    let mut c = Command::new(BIN);
    for var in ["AUTH0_MOCK_CONFIG", "AUTH0_MOCK_LISTEN", "AUTH0_MOCK_PUBLIC_URL", "AUTH0_MOCK_ADMIN_TOKEN"] {
        c.env_remove(var);
    }
    c
}

fn run(c: &mut Command) -> Output {
    c.stdin(Stdio::null()).output().unwrap()
}

/// Wait for the readiness line, within a minute (key generation included).
fn ready_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("no readiness line within a minute")
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the mock did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let path = std::env::temp_dir().join(format!("voyager-auth0-{}-{nanos}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_binary_announces_itself_serves_and_exits_cleanly_on_sigterm() {
    let mut child = command()
        .env("AUTH0_MOCK_LISTEN", "127.0.0.1:0")
        .env("AUTH0_MOCK_PUBLIC_URL", "http://auth0.test:8080")
        .env("AUTH0_MOCK_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = ready_line(&mut child);
    let addr = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("readiness line: {line:?}"));
    assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");

    let discovery = http_get(addr, "/.well-known/openid-configuration");
    assert!(discovery.starts_with("HTTP/1.1 200"), "{discovery}");
    assert!(discovery.contains(r#""issuer":"http://auth0.test:8080/""#), "{discovery}");

    let pid = child.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_with_timeout(&mut child, Duration::from_secs(15));
    assert!(status.success(), "exit after SIGTERM: {status:?}");

    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("issuer http://auth0.test:8080/"), "{stderr}");
    assert!(!stderr.contains(ADMIN_TOKEN), "the admin token was logged: {stderr}");
    assert!(!stderr.contains("mock-") && !stderr.contains("secret-"), "a secret was logged: {stderr}");
}

#[test]
fn flags_override_the_environment() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    // The environment names a taken port; the flag a free one.
    let mut child = command()
        .env("AUTH0_MOCK_LISTEN", &taken_addr)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = ready_line(&mut child);
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line:?}");
    assert!(!line.contains(&taken_addr), "{line:?}");
    let addr = line.trim().strip_prefix("listening on http://").unwrap();
    let discovery = http_get(addr, "/.well-known/openid-configuration");
    assert!(discovery.contains(r#""issuer":"https://voyager.auth0.com/""#), "no public URL: {discovery}");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(wait_with_timeout(&mut child, Duration::from_secs(15)).success());
}

#[test]
fn a_broken_fixture_exits_2_naming_the_file_the_line_and_the_fix() {
    let path = temp_file(
        "broken.toml",
        "[tenant]\ndomain = \"voyager.auth0.com\"\nclaims_namespace = \"https://voyager.dev/\"\n\n[api]\nidentifier = \"voyager-api\"\ntoken_lifetime = 0\n",
    );
    let out = run(command().arg("--config").arg(&path).args(["--listen", "127.0.0.1:0"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}:7:18: the token lifetime must be between 1 and", path.display())), "{stderr}");
    assert!(stderr.contains("help:"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout, or a harness might think it is ready");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_missing_fixture_and_a_bad_flag_exit_2() {
    let out = run(command().args(["--config", "/nonexistent/auth0.toml"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the tenant fixture /nonexistent/auth0.toml"));

    let out = run(command().arg("--port"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument `--port`"));

    let out = run(command().args(["--listen", "localhost"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`localhost` is not a listen address"));
}

#[test]
fn a_taken_port_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(command().args(["--listen", &addr]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {addr}")));
}

#[test]
fn help_names_every_flag_and_variable() {
    let out = run(command().arg("--help"));
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--config",
        "--listen",
        "--public-url",
        "AUTH0_MOCK_CONFIG",
        "AUTH0_MOCK_LISTEN",
        "AUTH0_MOCK_PUBLIC_URL",
        "AUTH0_MOCK_ADMIN_TOKEN",
        "listening on",
    ] {
        assert!(help.contains(word), "{word} missing from --help");
    }
}
