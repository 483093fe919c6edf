//! `voyager-auth0`: the mock Auth0 tenant as a process. The only code that
//! prints: one readiness line on stdout, everything else on stderr, errors
//! rendered once. Exit 2 for bad input (flags, fixture), 1 for failures.

mod args;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use auth0_mock::{parse_tenant, Error, Options, Server, BUILTIN_FIXTURE};
use tokio::net::TcpListener;

use crate::args::{Args, Command};

fn main() -> ExitCode {
    let started = Instant::now();
    let args = match args::parse(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(Command::Run(a)) => a,
        Ok(Command::Help) => {
            println!("{}", args::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("voyager-auth0 {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("voyager-auth0: {e}\n  help: see `voyager-auth0 --help`");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("voyager-auth0: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, started)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voyager-auth0: {e}");
            match e {
                Error::ReadConfig { .. } | Error::Config(_) | Error::PublicUrl { .. } | Error::ListenAddr { .. } => {
                    ExitCode::from(2)
                }
                Error::Bind { .. } | Error::Listener(_) | Error::KeyGeneration(_) | Error::Signals(_) => {
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(args: Args, started: Instant) -> Result<(), Error> {
    let signals = StopSignals::install().map_err(Error::Signals)?;
    let (tenant, source) = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| Error::ReadConfig { file: path.clone(), source: e })?;
            (parse_tenant(path, &text)?, path.display().to_string())
        }
        None => (
            parse_tenant(Path::new("<built-in fixtures/auth0.toml>"), BUILTIN_FIXTURE)?,
            "built-in fixture".to_string(),
        ),
    };
    let addr: SocketAddr = args.listen.parse().map_err(|_| Error::ListenAddr { addr: args.listen.clone() })?;
    // Bind before the slow key generation, so a taken port fails at once.
    let listener = TcpListener::bind(addr).await.map_err(|e| Error::Bind { addr, source: e })?;
    let (clients, users) = (tenant.clients.len(), tenant.users.len());
    let options = Options { public_url: args.public_url.clone(), admin_token: args.admin_token.clone() };

    let keygen = Instant::now();
    let server = tokio::task::spawn_blocking(move || Server::new(tenant, options))
        .await
        .map_err(|e| Error::KeyGeneration(e.to_string()))??;
    let keygen = keygen.elapsed();
    let issuer = server.issuer().to_string();
    let kid = server.current_kid();
    let running = server.serve(listener)?;
    let local = running.local_addr();

    eprintln!(
        "voyager-auth0: tenant from {source} ({clients} clients, {users} users); issuer {issuer}; \
         signing key {kid} generated in {} ms; admin API {}",
        keygen.as_millis(),
        if args.admin_token.is_some() { "on" } else { "off (set AUTH0_MOCK_ADMIN_TOKEN)" },
    );
    eprintln!("voyager-auth0: ready {} ms after start", started.elapsed().as_millis());
    println!("listening on http://{local}");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let signal = signals.wait().await;
    eprintln!("voyager-auth0: {signal}: finishing requests in flight, then exiting");
    running.shutdown().await;
    Ok(())
}

/// SIGTERM (how containers are stopped) and SIGINT (Ctrl-C), caught from
/// the moment this is made: a signal that arrives between the readiness line
/// and the wait must still drain requests, not kill the process outright.
struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<StopSignals, std::io::Error> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(StopSignals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    async fn wait(mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
