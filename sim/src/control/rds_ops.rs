//! RDS's control plane, the effects: observing the database nodes, and
//! detaching, attaching, failing over and rebuilding as [`super::rds`]
//! decides. Used by the always-on control plane and by `voyager-sim
//! failover postgres` (RDS "reboot with failover") alike, under one lock per
//! stack, so two of them never act on one database at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bollard::Docker;

use super::rds::{decide, Action, Memory, NodeView, Observation, Settings};
use crate::fixtures;
use crate::progress::Progress;
use crate::runtime::container;
use crate::runtime::labels::Labels;
use crate::services::lifecycle::{instance_state, pin_host_ports, wait_ready};
use crate::services::postgres::{self as pg, PostgresEndpoint};
use crate::services::SpecContext;
use crate::stack::{ServiceKind, Stack};
use crate::state::{self, RunState};

/// The lock one actor holds while it acts on a stack's database.
pub async fn lock(stack: &str) -> std::io::Result<crate::runtime::lock::FileLock> {
    pg::rds_lock(stack).await
}

fn stack_of(st: &RunState) -> Result<Stack, String> {
    st.parsed_stack()
}

/// `primary` and `standby` in their new roles, in the run state's instances
/// and in the stack it re-creates instances from. Returns that stack.
fn assign_roles(s: &mut RunState, primary: &str, standby: &str) -> Result<Stack, String> {
    let role = |name: &str| match name {
        n if n == primary => Some("primary"),
        n if n == standby => Some("standby"),
        _ => None,
    };
    for inst in &mut s.instances {
        if let Some(r) = role(&inst.name) {
            inst.role = r.into();
        }
    }
    let mut stack = stack_of(s)?;
    for i in stack.services.iter_mut().flat_map(|svc| svc.instances.iter_mut()) {
        if let Some(r) = role(&i.name) {
            i.role = r.into();
        }
    }
    s.stack_toml = stack.to_toml();
    Ok(stack)
}

/// One connection per node, kept between looks: a look a second with a
/// fresh connection per query made the control plane the busiest process
/// of an idle stack (SCRAM hashes a password on both ends of each one).
#[derive(Default)]
pub struct Conns {
    clients: BTreeMap<String, tokio_postgres::Client>,
}

impl Conns {
    async fn query(
        &mut self,
        node: &str,
        ep: &PostgresEndpoint,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, String> {
        let ready = self.clients.get(node).is_some_and(|c| !c.is_closed());
        if !ready {
            let (client, conn) =
                tokio::time::timeout(Duration::from_secs(2), ep.config().connect(tokio_postgres::NoTls))
                    .await
                    .map_err(|_| "no answer within 2s".to_string())?
                    .map_err(|e| pg::db_error(&e))?;
            tokio::spawn(conn);
            self.clients.insert(node.to_string(), client);
        }
        let client = self.clients.get(node).expect("connected above");
        let rows = match tokio::time::timeout(Duration::from_secs(2), client.simple_query(sql)).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                self.clients.remove(node);
                return Err(pg::db_error(&e));
            }
            Err(_) => {
                // A frozen server: start afresh next time.
                self.clients.remove(node);
                return Err("no answer within 2s".into());
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect())
    }
}

/// Whether a fault in force stops `node`, or cuts it off from `primary`.
fn held_by_fault(st: &RunState, stack: &Stack, node: &str, primary: Option<std::net::Ipv4Addr>) -> bool {
    let addr = st.instances.iter().find(|i| i.name == node).map(|i| i.address);
    st.faults.iter().any(|f| {
        f.stops(stack).iter().any(|(n, _)| n == node)
            || match (addr, primary) {
                (Some(a), Some(p)) => f
                    .drops(stack)
                    .iter()
                    .any(|(src, dst)| (src.contains(a) && dst.contains(p)) || (src.contains(p) && dst.contains(a))),
                _ => false,
            }
    })
}

/// Look at every database node.
pub async fn observe(docker: &Docker, st: &RunState, conns: &mut Conns) -> Result<Observation, String> {
    let stack = stack_of(st)?;
    let primary_addr = pg::nodes(st).find(|i| i.role == "primary").map(|i| i.address);
    let mut obs = Observation::default();
    for inst in pg::nodes(st) {
        let running = container::state(docker, &inst.container).await.is_some_and(|s| s.running && !s.paused);
        let ep = pg::instance(st, &inst.name);
        let mut reachable = false;
        let mut receiving = false;
        let n = inst.name.as_str();
        if let (true, Some(ep)) = (running, &ep) {
            reachable = conns.query(n, ep, "SELECT 1").await.is_ok();
            if reachable && inst.role != "primary" {
                receiving = conns
                    .query(n, ep, "SELECT status FROM pg_stat_wal_receiver")
                    .await
                    .is_ok_and(|r| r.first().and_then(|r| r[0].as_deref()) == Some("streaming"));
            }
            if reachable && inst.role == "primary" {
                if let Ok(rows) = conns.query(n, ep, "SELECT application_name, state FROM pg_stat_replication").await {
                    for r in rows {
                        if r[1].as_deref() == Some("streaming") {
                            let app = r[0].clone().unwrap_or_default();
                            if let Some(n) = pg::nodes(st).find(|i| pg::replication_name(&i.name) == app) {
                                obs.primary_streams_to.push(n.name.clone());
                            }
                        }
                    }
                }
                obs.sync_on = conns
                    .query(n, ep, "SHOW synchronous_standby_names")
                    .await
                    .is_ok_and(|r| r.first().and_then(|r| r[0].as_deref()).is_some_and(|v| !v.is_empty()));
            }
        }
        obs.nodes.push(NodeView {
            name: inst.name.clone(),
            role: inst.role.clone(),
            running,
            reachable,
            receiving,
            held_by_fault: held_by_fault(st, &stack, &inst.name, primary_addr),
        });
    }
    Ok(obs)
}

/// `ALTER SYSTEM` refuses to run inside a transaction, which a
/// multi-statement query is: two round trips.
pub async fn set_sync_names(primary: &PostgresEndpoint, names: &str) -> Result<(), String> {
    primary.query_strings(&format!("ALTER SYSTEM SET synchronous_standby_names = '{names}'")).await?;
    primary.query_strings("SELECT pg_reload_conf()").await.map(|_| ())
}

/// Fail over from `from` to `to`: fence the old primary first (stopped,
/// out of the writer endpoint, and marked so that if anything starts it
/// again it comes up in recovery, read-only), promote the standby, move the
/// writer to it, point the replicas at it, and record the new roles.
pub async fn failover(docker: &Docker, stack_name: &str, from: &str, to: &str, p: &Progress) -> Result<(), String> {
    let st = state::load(stack_name).map_err(|e| e.to_string())?.ok_or("the stack is down")?;
    let old = st.instances.iter().find(|i| i.name == from).cloned().ok_or_else(|| format!("no instance {from}"))?;
    let new = st.instances.iter().find(|i| i.name == to).cloned().ok_or_else(|| format!("no instance {to}"))?;
    let new_ep = pg::instance(&st, &new.name).ok_or("the standby has no port")?;

    p.say(&format!("failover: fencing {from}"));
    // A kill delivers to a frozen container too; a stopped one is fine.
    let _ = container::kill(docker, &old.container).await;
    pg::haproxy_admin(&st, &format!("set server writer/{from} state maint")).await?;
    pg::haproxy_admin(&st, &format!("shutdown sessions server writer/{from}")).await?;
    // Whatever starts it next (a heal, `docker start`), it starts as a
    // standby with no primary: in recovery, refusing every write.
    container::upload(docker, &old.container, &[(format!("{}/standby.signal", pg::DATA_DIR), 0o644, vec![])])
        .await
        .map_err(|e| format!("fencing {from}: {e}"))?;

    p.say(&format!("failover: promoting {to}"));
    new_ep.query_strings("SELECT pg_promote(true, 60)").await?;
    // Until a new standby streams there is no one to be synchronous with;
    // RDS runs without one meanwhile, and so does this.
    set_sync_names(&new_ep, "").await?;
    pg::haproxy_admin(&st, &format!("set server writer/{to} state ready")).await?;

    for r in pg::nodes(&st).filter(|i| i.role == "replica") {
        let Some(ep) = pg::instance(&st, &r.name) else { continue };
        let conninfo = format!(
            "host={} port={} user=replicator password={} application_name={}",
            new.address,
            pg::PORT,
            st.credentials.postgres_replication_password,
            pg::replication_name(&r.name)
        );
        let sql = format!("ALTER SYSTEM SET primary_conninfo = '{}'", conninfo.replace('\'', "''"));
        if let Err(e) = ep.query_strings(&sql).await.and(ep.query_strings("SELECT pg_reload_conf()").await) {
            p.say(&format!("failover: {} could not be pointed at {to} yet: {e}", r.name));
        }
    }
    state::update(stack_name, |s| assign_roles(s, to, from))
        .map_err(|e| e.to_string())?
        .ok_or("the stack is down")?
        .1
        .map(|_| ())
}

/// Re-create `node` as the synchronous standby of the current primary,
/// from a fresh base backup (its old data may hold commits the new primary
/// never had). Returns how long until it streamed, in sync.
pub async fn rebuild(docker: &Docker, stack_name: &str, node: &str, p: &Progress) -> Result<Duration, String> {
    let t = Instant::now();
    let st = state::load(stack_name).map_err(|e| e.to_string())?.ok_or("the stack is down")?;
    let old = st.instances.iter().find(|i| i.name == node).cloned().ok_or_else(|| format!("no instance {node}"))?;
    let primary = pg::nodes(&st).find(|i| i.role == "primary").cloned().ok_or("no primary")?;
    // After a failover these are the roles already; said again, so the
    // node is made as a standby whatever the state says.
    let stack = assign_roles(&mut st.clone(), &primary.name, node)?;
    p.say(&format!("rebuilding {node} as the standby of {}", primary.name));
    let labels = Labels { run_id: st.run_id.clone(), stack: st.stack.clone(), owner: None };
    let fx = fixtures::builtin();
    let ports = BTreeMap::new();
    let cx = SpecContext {
        stack: &stack,
        stack_name: &st.stack,
        images: st.images,
        credentials: &st.credentials,
        host_ports: &ports,
        fixtures: &fx,
        companions: &BTreeMap::new(),
    };
    let mut spec = crate::services::specs_of(ServiceKind::Postgres, &cx)
        .into_iter()
        .find(|s| s.instance == node)
        .ok_or("the node is not in the stack")?;
    pin_host_ports(&mut spec, Some(&old)).map_err(|e| e.to_string())?;
    container::remove(docker, &old.container).await.map_err(|e| e.to_string())?;
    for (vol, _) in &spec.volumes {
        let vname = container::volume_name(&st.stack, node, vol);
        let _ = docker.remove_volume(&vname, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
    }
    let cname = container::start(docker, &spec, &labels).await.map_err(|e| e.to_string())?;
    let rebuilt =
        instance_state(docker, &stack, ServiceKind::Postgres, &spec, cname).await.map_err(|e| e.to_string())?;
    let (st, _) = state::update(stack_name, |s| {
        for inst in &mut s.instances {
            if inst.name == node {
                *inst = rebuilt.clone();
            }
        }
        s.stack_toml = stack.to_toml();
    })
    .map_err(|e| e.to_string())?
    .ok_or("the stack is down")?;
    wait_ready(docker, &st, &rebuilt, Duration::from_secs(300), p).await.map_err(|e| e.to_string())?;
    let primary_ep = pg::instance(&st, &primary.name).ok_or("the primary has no port")?;
    set_sync_names(&primary_ep, &pg::sync_names(&[node])).await?;
    // Waiting here holds the control loop, so a primary lost meanwhile
    // ends the wait at once: the next look fails it over.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match pg::provision(&st, Duration::from_secs(5)).await {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(e) => {
                let alive = container::state(docker, &primary.container).await.is_some_and(|s| s.running && !s.paused);
                if !alive {
                    return Err(format!("the primary {} was lost during the rebuild: {e}", primary.name));
                }
            }
        }
    }
    Ok(t.elapsed())
}

/// The always-on part: look, decide, act, once a tick.
pub struct Rds {
    mem: Memory,
    settings: Settings,
    clock: Instant,
    /// Notes said once per situation.
    said: BTreeSet<String>,
    /// A failed rebuild is not tried again before this (seconds on `clock`).
    next_rebuild: f64,
    conns: Conns,
}

impl Rds {
    pub fn new(stack: &Stack) -> Rds {
        let detection =
            stack.rds.as_ref().map(|r| r.failover_detection).unwrap_or(crate::stack::model::DEFAULT_FAILOVER_DETECTION);
        Rds {
            mem: Memory::default(),
            settings: Settings { detection, standby_detection: Duration::from_secs(1).min(detection) },
            clock: Instant::now(),
            said: BTreeSet::new(),
            next_rebuild: 0.0,
            conns: Conns::default(),
        }
    }

    /// One look. Returns what was done, one line each (also recorded as
    /// the control plane's events).
    pub async fn tick(&mut self, docker: &Docker, stack_name: &str, p: &Progress) -> Result<Vec<String>, String> {
        let Ok(_held) = tokio::time::timeout(Duration::from_millis(100), lock(stack_name)).await else {
            // Someone else (a manual failover) is acting.
            return Ok(vec![]);
        };
        let st = state::load(stack_name).map_err(|e| e.to_string())?.ok_or("the stack is down")?;
        if pg::nodes(&st).next().is_none() {
            return Ok(vec![]);
        }
        let obs = observe(docker, &st, &mut self.conns).await?;
        let now = self.clock.elapsed().as_secs_f64();
        let mut done = vec![];
        let actions = decide(&obs, &mut self.mem, &self.settings, now);
        let notes: BTreeSet<String> =
            actions.iter().filter_map(|a| if let Action::Note(n) = a { Some(n.clone()) } else { None }).collect();
        self.said.retain(|n| notes.contains(n));
        for action in actions {
            let primary = pg::nodes(&st).find(|i| i.role == "primary").and_then(|i| pg::instance(&st, &i.name));
            let line = match &action {
                Action::Detach { standby } => {
                    set_sync_names(primary.as_ref().ok_or("no primary")?, "").await?;
                    self.mem.applied(&action);
                    format!("standby {standby} lost; the primary stops waiting for it")
                }
                Action::Attach { standby } => {
                    set_sync_names(primary.as_ref().ok_or("no primary")?, &pg::sync_names(&[standby.as_str()])).await?;
                    format!("standby {standby} streaming again; commits wait for it again")
                }
                Action::Failover { from, to } => {
                    let t = Instant::now();
                    failover(docker, stack_name, from, to, p).await?;
                    self.mem.applied(&action);
                    format!(
                        "primary {from} lost for {:.0}s: failed over to {to} in {:.1}s",
                        self.settings.detection.as_secs_f64(),
                        t.elapsed().as_secs_f64()
                    )
                }
                Action::Rebuild { .. } if now < self.next_rebuild => continue,
                Action::Rebuild { node } => match rebuild(docker, stack_name, node, p).await {
                    Ok(took) => {
                        if self.mem.to_rebuild.as_deref() == Some(node.as_str()) {
                            self.mem.to_rebuild = None;
                        }
                        self.mem.applied(&action);
                        format!("{node} rebuilt as the synchronous standby in {:.1}s", took.as_secs_f64())
                    }
                    Err(e) => {
                        self.next_rebuild = self.clock.elapsed().as_secs_f64() + 30.0;
                        format!("rebuilding {node} failed, trying again in 30s: {e}")
                    }
                },
                Action::Note(n) => {
                    if !self.said.insert(n.clone()) {
                        continue;
                    }
                    n.clone()
                }
            };
            let _ = state::record_event(stack_name, &format!("rds: {line}"));
            done.push(format!("rds: {line}"));
        }
        Ok(done)
    }
}
