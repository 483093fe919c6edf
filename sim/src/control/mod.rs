//! The stack's always-on control plane: what AWS runs for its managed
//! services while nobody is looking. It is `voyager-sim control` running in
//! a container of the stack (labelled and swept like everything else,
//! independent of any CLI process), on the host's network so it reaches
//! the stack as host clients do. It is RDS's control plane for the
//! database ([`rds`] decides, [`rds_ops`] acts: standby detach and attach,
//! automatic failover, rebuilds; [`backups`] takes its automated backups)
//! and provisions the cluster's EBS-like volumes ([`ebs`]); [`route53`] is
//! Route 53's health checkers and the records they change; [`targets`]
//! keeps the load balancers' target groups on the API's pods.
//!
//! Each part keeps its decisions pure (what to do given what it observed)
//! apart from the effects, so they are unit-tested on synthetic
//! observations.

pub mod backups;
pub mod ebs;
pub mod rds;
pub mod rds_ops;
pub mod route53;
pub mod targets;

use std::time::Duration;

use bollard::Docker;

use crate::companion::{self, Companion};
use crate::images::{companion_base, ImageSet};
use crate::progress::Progress;
use crate::runtime::container::OneShot;
use crate::runtime::labels::Labels;
use crate::runtime::RuntimeError;
use crate::services::kubernetes;
use crate::state;

/// The control plane's instance label and container name stem.
pub const ROLE: &str = "aws-control";

/// Start the control plane of a stack; returns its container's name.
pub async fn start(
    docker: &Docker,
    labels: &Labels,
    images: ImageSet,
    binary: &std::path::Path,
) -> Result<String, RuntimeError> {
    let c: Companion = companion::SIM;
    let home = state::home();
    std::fs::create_dir_all(&home)
        .map_err(|source| RuntimeError::Io { context: format!("creating {}", home.display()), source })?;
    let socket = docker_socket();
    let shot = OneShot {
        image: companion_base(images),
        network: None,
        address: None,
        argv: [companion::mount_point(c), "control".into(), "--name".into(), labels.stack.clone()].into(),
        mounts: vec![(binary.display().to_string(), companion::mount_point(c))],
        writable_mounts: vec![(home.display().to_string(), home.display().to_string()), (socket.clone(), socket)],
        env: vec![("VOYAGER_SIM_HOME".into(), home.display().to_string())],
        role: ROLE.into(),
        ..Default::default()
    };
    shot.start(docker, labels).await
}

/// Whether a stack has a control plane container, and if it runs.
pub async fn find(docker: &Docker, stack: &str) -> Option<bool> {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let f = std::collections::HashMap::from([(
        "label".to_string(),
        vec![
            format!("{}={stack}", crate::runtime::labels::STACK),
            format!("{}={ROLE}", crate::runtime::labels::INSTANCE),
        ],
    )]);
    let cs =
        docker.list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&f).build())).await.ok()?;
    let c = cs.first()?;
    Some(c.state.as_ref().is_some_and(|s| format!("{s:?}").to_lowercase().contains("running")))
}

/// The Docker engine's socket on this host.
fn docker_socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| "/var/run/docker.sock".into())
}

/// The control loop: every second, each part looks at the stack and acts.
/// Ends when the stack's run state is gone (it was taken down).
pub async fn run(stack: &str, p: &Progress) -> Result<(), String> {
    p.say(&format!("control plane of stack `{stack}` running"));
    let mut refused = std::collections::BTreeSet::new();
    let mut client: Option<kube::Client> = None;
    let mut last_error = String::new();
    let docker = crate::runtime::docker::connect(&Progress::silent()).await.map_err(|e| e.to_string())?;
    let mut rds: Option<(rds_ops::Rds, backups::Backups)> = None;
    let mut last_rds_error = String::new();
    // Route 53's checkers keep their own interval and may wait seconds on
    // a frozen node: a task of their own, so RDS's detection never waits.
    if let Ok(Some(st)) = state::load(stack) {
        if st.instances.iter().any(|i| i.service == crate::stack::ServiceKind::Route53.as_str()) {
            tokio::spawn(route53::run(stack.to_string(), p.clone()));
        }
        let pods = st.parsed_stack().is_ok_and(|s| s.api_on_kubernetes() && (s.alb.is_some() || s.nlb.is_some()));
        if pods {
            tokio::spawn(targets::run(stack.to_string(), p.clone()));
        }
    }
    loop {
        let st = match state::load(stack) {
            Ok(Some(s)) => s,
            Ok(None) => {
                p.say("the stack is down; stopping");
                return Ok(());
            }
            Err(e) => return Err(format!("reading the run state: {e}")),
        };
        if crate::services::postgres::nodes(&st).next().is_some() {
            let (r, b) = match &mut rds {
                Some(r) => r,
                None => {
                    let stack = st.parsed_stack()?;
                    rds.insert((rds_ops::Rds::new(&stack), backups::Backups::new(&stack, st.images)))
                }
            };
            b.tick(&docker, stack).await.iter().for_each(|l| p.say(l));
            match r.tick(&docker, stack, p).await {
                Ok(lines) => lines.iter().for_each(|l| p.say(l)),
                Err(e) if e != last_rds_error => {
                    p.say(&format!("rds: {e}"));
                    last_rds_error = e;
                }
                Err(_) => {}
            }
        }
        if let Some(ep) = kubernetes::endpoint(&st) {
            if client.is_none() {
                client = ep.probe_client(Duration::from_secs(10)).await.ok();
            }
            if let Some(c) = &client {
                match ebs::tick(c, &mut refused).await {
                    Ok(lines) => lines.iter().for_each(|l| p.say(l)),
                    Err(e) if e != last_error => {
                        p.say(&format!("ebs: {e}"));
                        last_error = e;
                    }
                    Err(_) => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
