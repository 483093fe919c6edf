//! `voyager-api`: serve until SIGTERM or Ctrl-C, then let requests in flight
//! finish. Settings come from the environment (see `config`).

#[tokio::main]
async fn main() {
    let cfg = match voyager_api::config::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let zone = cfg.zone.clone();
    let running = match voyager_api::serve(cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("voyager-api: {e}");
            std::process::exit(1);
        }
    };
    // The test harness and the stack read the address from this line.
    println!("voyager-api listening on {} (zone {zone})", running.addr);
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("voyager-api: stopping; requests in flight may finish");
    running.shutdown().await;
}
