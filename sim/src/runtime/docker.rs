//! Reaching the Docker engine, and starting it when this machine can: on Linux
//! as root with `dockerd` installed, a fresh machine needs no manual step.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;

use super::lock::FileLock;
use super::RuntimeError;
use crate::progress::Progress;

const DOCKERD_LOG: &str = "/var/log/voyager-sim-dockerd.log";

pub async fn connect(progress: &Progress) -> Result<Docker, RuntimeError> {
    if let Some(d) = try_connect().await {
        return Ok(d);
    }
    if !can_start_dockerd() {
        return Err(unavailable("no Docker engine answers"));
    }
    // Parallel test processes must not start two daemons.
    let _lock =
        FileLock::acquire(&std::env::temp_dir().join("voyager-sim-dockerd.lock"), progress, "Docker engine start")
            .await
            .map_err(|e| unavailable(&format!("taking the dockerd start lock: {e}")))?;
    if let Some(d) = try_connect().await {
        return Ok(d);
    }
    progress.say(&format!("starting dockerd (log: {DOCKERD_LOG})"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(DOCKERD_LOG)
        .map_err(|e| unavailable(&format!("opening {DOCKERD_LOG}: {e}")))?;
    let log2 = log.try_clone().map_err(|e| unavailable(&e.to_string()))?;
    let mut cmd = std::process::Command::new("dockerd");
    cmd.stdin(std::process::Stdio::null()).stdout(log).stderr(log2);
    // SAFETY: setsid is async-signal-safe. Its own session keeps the daemon
    // alive after we exit and away from our terminal's Ctrl-C.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| unavailable(&format!("starting dockerd: {e}")))?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Some(d) = try_connect().await {
            progress.say(&format!("dockerd is up after {:.1}s", start.elapsed().as_secs_f64()));
            return Ok(d);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(unavailable(&format!("dockerd was started but did not answer within 60 s; see {DOCKERD_LOG}")))
}

async fn try_connect() -> Option<Docker> {
    let d = Docker::connect_with_local_defaults().ok()?;
    d.ping().await.ok()?;
    d.negotiate_version().await.ok()
}

fn can_start_dockerd() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let local_socket =
        std::env::var("DOCKER_HOST").map_or(true, |h| h.is_empty() || h == "unix:///var/run/docker.sock");
    let has_dockerd =
        ["/usr/sbin/dockerd", "/usr/bin/dockerd", "/usr/local/bin/dockerd"].iter().any(|p| Path::new(p).is_file());
    cfg!(target_os = "linux") && root && local_socket && has_dockerd
}

fn unavailable(message: &str) -> RuntimeError {
    let has_dockerd = ["/usr/sbin/dockerd", "/usr/bin/dockerd"].iter().any(|p| Path::new(p).is_file());
    let help = if !cfg!(target_os = "linux") {
        "start Docker Desktop (or another engine) and check `docker info` works".to_string()
    } else if !has_dockerd {
        "install the engine with `apt-get install -y docker.io` (voyager-sim starts it when run as root), or point DOCKER_HOST at a running engine".to_string()
    } else {
        format!("start it with `dockerd > {DOCKERD_LOG} 2>&1 &` as root (or `systemctl start docker`), then check `docker info`")
    };
    RuntimeError::DockerUnavailable { message: message.to_string(), help }
}
