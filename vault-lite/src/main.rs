//! `voyager-vault`: the vault-lite server.
//!
//! ```text
//! voyager-vault [--listen ADDR] [--state-file PATH] [--audit-file PATH]
//! ```
//!
//! Flags win over `VAULT_LITE_LISTEN`, `VAULT_LITE_STATE_FILE` and
//! `VAULT_LITE_AUDIT_FILE`; the default address is 127.0.0.1:8200. Prints
//! `listening on http://ADDR` once it accepts connections; exits 0 on
//! SIGINT/SIGTERM (after saving the state), 2 on bad arguments, 1 if it
//! cannot start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use vault_lite::{Options, Server, DEFAULT_PORT};

const USAGE: &str = "usage: voyager-vault [--listen ADDR] [--state-file PATH] [--audit-file PATH]

  --listen ADDR       address to listen on (env VAULT_LITE_LISTEN; default 127.0.0.1:8200)
  --state-file PATH   keep the encrypted state here across restarts (env VAULT_LITE_STATE_FILE)
  --audit-file PATH   always write HMAC'd audit lines here (env VAULT_LITE_AUDIT_FILE)";

struct Args {
    listen: SocketAddr,
    opts: Options,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut listen = env("VAULT_LITE_LISTEN");
    let mut state = env("VAULT_LITE_STATE_FILE");
    let mut audit = env("VAULT_LITE_AUDIT_FILE");
    while let Some(a) = argv.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| argv.next()).ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" | "-listen" => listen = Some(value()?),
            "--state-file" => state = Some(value()?),
            "--audit-file" => audit = Some(value()?),
            "-h" | "--help" => return Ok(None),
            "--version" => {
                println!("voyager-vault {} (Vault API {})", env!("CARGO_PKG_VERSION"), vault_lite::core::VERSION);
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let listen = listen.unwrap_or_else(|| format!("127.0.0.1:{DEFAULT_PORT}"));
    let listen: SocketAddr =
        listen.parse().map_err(|_| format!("--listen {listen:?} is not an address like 0.0.0.0:8200"))?;
    Ok(Some(Args {
        listen,
        opts: Options { state_file: state.map(PathBuf::from), audit_file: audit.map(PathBuf::from) },
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("voyager-vault: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let server = match Server::start(args.listen, args.opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("voyager-vault: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", server.url());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("voyager-vault: cannot handle SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    match server.shutdown() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voyager-vault: saving the state on shutdown: {e}");
            ExitCode::FAILURE
        }
    }
}
