//! RDS's backups on a running stack, by hand: an on-demand snapshot, the
//! repository's state with the latest restorable time, and point-in-time
//! restore into a new instance with its own endpoint (what
//! `RestoreDBInstanceToPointInTime` does). The automated backups are the
//! control plane's (`control::backups`); the repository and the settings are
//! `services::postgres::backup`'s.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::runtime::container;
use crate::runtime::labels::Labels;
use crate::runtime::RuntimeError;
use crate::services::lifecycle::{instance_state, start_on_free_ports};
use crate::services::postgres::backup::{self, BackupRecord, Repository, RESTORED_ROLE};
use crate::services::postgres::{self as pg, PostgresEndpoint};
use crate::services::SpecContext;
use crate::stack::{ServiceKind, Stack};
use crate::state;

use super::running::RunningStack;

/// The backups as `status` shows them. Its own type: the JSON is a contract.
#[derive(Debug, Clone, Serialize)]
pub struct BackupStatus {
    /// Why the stack takes no backups, when it takes none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// Backups in the repository, oldest first: `label (kind, ended TIME)`.
    pub backups: Vec<String>,
    /// RDS's `LatestRestorableTime`: the latest `--to-time` a restore takes.
    pub latest_restorable: Option<String>,
    /// The earliest: the end of the oldest backup.
    pub earliest_restorable: Option<String>,
    /// Why the repository could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a point-in-time restore made.
#[derive(Debug, Clone)]
pub struct Restored {
    pub endpoint: PostgresEndpoint,
    /// The target, as pgBackRest was given it.
    pub target: String,
    /// The backup it started from.
    pub from_backup: String,
    /// From the start of the restore to the instance taking writes.
    pub took: Duration,
}

fn fail(m: impl Into<String>) -> Error {
    Error::Runtime(RuntimeError::Provision { service: "postgres backups".into(), message: m.into() })
}

impl RunningStack {
    /// Why this stack takes no backups, if it takes none.
    fn backups_unavailable(&self) -> Result<Option<String>> {
        let fx = crate::fixtures::builtin();
        Ok(backup::unavailable(&self.stack()?, self.state.images, fx.s3.backups_bucket()))
    }

    fn primary_container(&self) -> Result<String> {
        pg::nodes(&self.state)
            .find(|i| i.role == "primary")
            .map(|i| i.container.clone())
            .ok_or_else(|| fail("the stack has no PostgreSQL primary"))
    }

    fn require_backups(&self) -> Result<()> {
        match self.backups_unavailable()? {
            None => Ok(()),
            Some(why) => Err(Error::usage(
                format!("this stack takes no PostgreSQL backups: {why}"),
                "bring the stack up with PostgreSQL and S3 from the offline images (the default)",
            )),
        }
    }

    /// An on-demand full backup (an RDS manual snapshot), from the primary.
    pub async fn backup_postgres(&mut self, p: &Progress) -> Result<(BackupRecord, Duration)> {
        self.refresh()?;
        self.require_backups()?;
        let primary = self.primary_container()?;
        let t = Instant::now();
        let mut said = (false, false);
        let b = loop {
            // The control plane's automated backup holds pgBackRest's lock
            // while it makes the repository and takes its first backup: a
            // snapshot asked for meanwhile waits for it, as RDS queues one
            // behind a running backup, and whichever made the repository,
            // it is made once.
            let waiting = |e: &String| e.contains(backup::ANOTHER_BACKUP) && t.elapsed() < Duration::from_secs(3600);
            if backup::info(&self.docker, &primary).await.map_err(fail)? == Repository::NoStanza {
                if !said.0 {
                    p.say("backup: making the repository first (the control plane has not yet)");
                    said.0 = true;
                }
                match backup::create_stanza(&self.docker, &primary).await {
                    Err(e) if waiting(&e) => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                    r => r.map_err(fail)?,
                }
            }
            if !said.1 {
                p.say("backup: full backup from the primary");
            }
            match backup::take(&self.docker, &primary, Duration::from_secs(3600)).await {
                Err(e) if waiting(&e) => {
                    if !said.1 {
                        p.say("backup: waiting for the running automated backup to end");
                    }
                    said.1 = true;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                r => break r.map_err(fail)?,
            }
        };
        let took = t.elapsed();
        let _ = state::record_event(
            &self.state.stack,
            &format!("backup: {}", crate::control::backups::describe(&b, "on demand", took)),
        );
        Ok((b, took))
    }

    /// The repository's backups and the window a restore can reach.
    pub async fn backup_status(&mut self) -> Result<BackupStatus> {
        self.refresh()?;
        let mut out = BackupStatus {
            unavailable: self.backups_unavailable()?,
            backups: vec![],
            latest_restorable: None,
            earliest_restorable: None,
            error: None,
        };
        if out.unavailable.is_some() {
            return Ok(out);
        }
        match self.restorable_window().await {
            Ok((backups, window)) => {
                out.backups = backups
                    .iter()
                    .map(|b| format!("{} ({}, ended {})", b.label, b.kind, backup::format_time(b.stop as f64)))
                    .collect();
                if let Some((earliest, latest)) = window {
                    out.earliest_restorable = Some(backup::format_time(earliest));
                    out.latest_restorable = Some(backup::format_time(latest));
                }
            }
            Err(e) => out.error = Some(e),
        }
        Ok(out)
    }

    /// The backups, and (earliest, latest) restorable unix times.
    async fn restorable_window(&self) -> std::result::Result<(Vec<BackupRecord>, Option<(f64, f64)>), String> {
        let primary = self.primary_container().map_err(|e| e.to_string())?;
        let backups = match backup::info(&self.docker, &primary).await? {
            Repository::NoStanza => vec![],
            Repository::Ready(b) => b,
        };
        let node = pg::nodes(&self.state).find(|i| i.role == "primary").map(|i| i.name.clone()).unwrap_or_default();
        let archived = match pg::instance(&self.state, &node) {
            Some(ep) => backup::last_archived(&ep).await.unwrap_or(None),
            None => None,
        };
        let window = match (backups.first(), backup::latest_restorable(archived, &backups)) {
            (Some(first), Some(latest)) => Some((first.stop as f64, latest)),
            _ => None,
        };
        Ok((backups, window))
    }

    /// RDS's `RestoreDBInstanceToPointInTime`: a new instance, `name`, made
    /// from the newest backup before `target` (unix seconds) and the
    /// archived WAL up to it, taking writes on its own endpoint. It is a
    /// database of its own: outside replication, the writer endpoint and
    /// the control plane; `down` removes it with the stack.
    pub async fn restore_postgres(&mut self, target: f64, name: Option<&str>, p: &Progress) -> Result<Restored> {
        self.refresh()?;
        self.require_backups()?;
        let stack = self.stack()?;
        let name = match name {
            Some(n) => {
                check_name(n, &self.state)?;
                n.to_string()
            }
            None => (1..)
                .map(|i| format!("postgres-restore-{i}"))
                .find(|n| check_name(n, &self.state).is_ok())
                .expect("unbounded"),
        };
        // The archive is brought up to now first when the primary answers,
        // so a target between the last archived segment and now is
        // reachable (RDS's own log upload runs every five minutes).
        if let Some(ep) = self.postgres() {
            match backup::archive_now(&ep, Duration::from_secs(60)).await {
                Ok(_) => {}
                Err(e) => p.say(&format!(
                    "restore: could not archive the newest WAL first ({e}); restoring from what is archived"
                )),
            }
        }
        let (backups, window) = self.restorable_window().await.map_err(fail)?;
        let Some((earliest, latest)) = window else {
            return Err(Error::usage(
                "there is no backup to restore from yet",
                "wait for the control plane's first backup (see `voyager-sim status`), or take one: `voyager-sim backup postgres`",
            ));
        };
        if target < earliest || target > latest {
            return Err(Error::usage(
                format!(
                    "{} is outside the restorable window, {} to {}",
                    backup::format_time(target),
                    backup::format_time(earliest),
                    backup::format_time(latest)
                ),
                "pick a time inside it; the latest moves forward as WAL is archived (every archive_timeout while there are writes)",
            ));
        }
        let Some(from) = backups.iter().rev().find(|b| backup::base_for(b.stop, target)).map(|b| b.label.clone())
        else {
            return Err(Error::usage(
                format!(
                    "no backup ended before {} (pgBackRest counts a backup's end in whole seconds)",
                    backup::format_time(target)
                ),
                format!("pick a time from {} on", backup::format_time(earliest.floor() + 1.0)),
            ));
        };
        let target_text = backup::format_time(target);
        let primary =
            pg::nodes(&self.state).find(|i| i.role == "primary").cloned().ok_or_else(|| fail("no primary"))?;
        let address = free_address(&stack, &self.state, &primary.az)
            .ok_or_else(|| fail(format!("no free address in AZ {}'s private subnet for {name}", primary.az)))?;
        let mut spec = restore_spec(self, &stack, &primary.name, &name, address, &target_text)?;
        p.say(&format!("restore: {name} from backup {from} to {target_text}, in AZ {} at {address}", primary.az));
        let t = Instant::now();
        let labels = Labels { run_id: self.state.run_id.clone(), stack: self.state.stack.clone(), owner: None };
        let cname = start_on_free_ports(&self.docker, &mut spec, &labels).await?;
        let mut inst = instance_state(&self.docker, &stack, ServiceKind::Postgres, &spec, cname.clone()).await?;
        inst.az = primary.az.clone();
        inst.role = RESTORED_ROLE.into();
        state::update(&self.state.stack, |s| s.instances.push(inst.clone()))
            .map_err(|source| Error::State { path: state::path(&self.state.stack).display().to_string(), source })?;
        self.refresh()?;
        let endpoint = pg::instance(&self.state, &name).ok_or_else(|| fail("the restored instance has no port"))?;
        if let Err(e) = wait_promoted(&self.docker, &cname, &endpoint, Duration::from_secs(1800), p).await {
            // A failed restore leaves nothing behind.
            self.remove_restored(&name).await?;
            return Err(e);
        }
        let took = t.elapsed();
        let _ = state::record_event(
            &self.state.stack,
            &format!("backup: {name} restored to {target_text} from {from} in {:.1}s", took.as_secs_f64()),
        );
        Ok(Restored { endpoint, target: target_text, from_backup: from, took })
    }
}

impl RunningStack {
    /// Remove a restored instance (RDS's DeleteDBInstance of a restore):
    /// its container, its volume, its entry in the run state.
    pub async fn remove_restored(&mut self, name: &str) -> Result<()> {
        self.refresh()?;
        let Some(inst) = pg::restored(&self.state).find(|i| i.name == name).cloned() else {
            return Err(Error::usage(
                format!("the stack has no restored instance `{name}`"),
                "`voyager-sim status` lists them (role restored)",
            ));
        };
        container::remove(&self.docker, &inst.container).await?;
        let vname = container::volume_name(&self.state.stack, name, "data");
        match self.docker.remove_volume(&vname, None::<bollard::query_parameters::RemoveVolumeOptions>).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(e) => return Err(RuntimeError::docker(format!("remove volume {vname}"))(e).into()),
        }
        state::update(&self.state.stack, |s| s.instances.retain(|i| i.name != name))
            .map_err(|source| Error::State { path: state::path(&self.state.stack).display().to_string(), source })?;
        self.refresh()
    }
}

/// A new instance's name: one an instance could have, not taken.
fn check_name(n: &str, st: &state::RunState) -> Result<()> {
    let valid = (1..=40).contains(&n.len())
        && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && n.starts_with(|c: char| c.is_ascii_lowercase())
        && !n.ends_with('-');
    if !valid {
        return Err(Error::usage(
            format!("`{n}` cannot name an instance"),
            "use up to 40 lowercase letters, digits and `-`, starting with a letter (RDS's identifier rules)",
        ));
    }
    if st.instances.iter().any(|i| i.name == n) {
        return Err(Error::usage(
            format!("the stack already has an instance named `{n}`"),
            "give the restore another name with --instance",
        ));
    }
    Ok(())
}

/// The lowest address of `az`'s private subnet that the stack leaves free:
/// above the reserved hosts, used by no instance of the run or the stack
/// file, and below the Kubernetes nodes' pod blocks at the top.
pub fn free_address(stack: &Stack, st: &state::RunState, az: &str) -> Option<Ipv4Addr> {
    let net = stack.az(az)?.private;
    let pods_from = match &stack.kubernetes {
        Some(k) => {
            let nodes =
                stack.service(ServiceKind::Kubernetes).map(|s| s.instances.iter().filter(|i| i.az == az).count());
            net.size() - k.pods_per_node as u64 * nodes.unwrap_or(0) as u64
        }
        None => net.size() - 1,
    };
    let taken = |a: Ipv4Addr| {
        st.instances.iter().any(|i| i.address == a)
            || stack.services.iter().flat_map(|s| &s.instances).any(|i| i.address == a)
    };
    (crate::stack::parse::FIRST_DERIVED_HOST as u64..pods_from).map(|h| net.nth(h as u32)).find(|a| !taken(*a))
}

fn restore_spec(
    r: &RunningStack,
    stack: &Stack,
    like: &str,
    name: &str,
    address: Ipv4Addr,
    target: &str,
) -> Result<crate::spec::ContainerSpec> {
    let fx = crate::fixtures::builtin();
    let ports = std::collections::BTreeMap::new();
    let cx = SpecContext {
        stack,
        stack_name: &r.state.stack,
        images: r.state.images,
        credentials: &r.state.credentials,
        host_ports: &ports,
        fixtures: &fx,
        companions: &std::collections::BTreeMap::new(),
    };
    let mut spec = crate::services::specs_of(ServiceKind::Postgres, &cx)
        .into_iter()
        .find(|s| s.instance == like)
        .ok_or_else(|| fail(format!("{like} is not in the stack")))?;
    spec.instance = name.to_string();
    spec.address = address;
    for (k, v) in [("VOYAGER_PG_ROLE", "restore"), ("VOYAGER_PG_RESTORE_TARGET", target)] {
        spec.env.insert(k.into(), v.into());
    }
    spec.env.insert("VOYAGER_PG_NAME".into(), pg::replication_name(name));
    spec.env.remove("VOYAGER_PG_PRIMARY");
    spec.env.remove("VOYAGER_PG_SYNC");
    // A database of its own: it archives nothing into the source's
    // repository and waits for no standby.
    let keep = spec.cmd.iter().position(|c| c == "archive_mode=on").map(|i| i - 1).unwrap_or(spec.cmd.len());
    spec.cmd.truncate(keep);
    spec.cmd.extend(["-c", "archive_mode=off", "-c", "synchronous_standby_names="].map(String::from));
    for p in &mut spec.published {
        p.host = None;
    }
    Ok(spec)
}

/// Until the restored server has replayed to its target and promoted
/// itself; a restore that fails (the container exits) says why.
async fn wait_promoted(
    docker: &bollard::Docker,
    container_name: &str,
    ep: &PostgresEndpoint,
    within: Duration,
    p: &Progress,
) -> Result<()> {
    let t = Instant::now();
    let mut said = Instant::now();
    loop {
        if let Ok(rows) = ep.query_strings("SELECT pg_is_in_recovery()").await {
            if rows.first().and_then(|r| r[0].as_deref()) == Some("f") {
                return Ok(());
            }
        }
        match container::state(docker, container_name).await {
            Some(s) if !s.running => {
                let logs = container::logs(docker, container_name, 20).await;
                let hint = if logs.contains("recovery ended before configured recovery target was reached") {
                    "\nthe archive holds nothing committed after the target (the primary could not archive \
                     its newest WAL): pick an earlier time"
                } else {
                    ""
                };
                return Err(fail(format!("the restore ended with exit code {}:\n{logs}{hint}", s.exit_code)));
            }
            None => return Err(fail("the restored instance's container is gone")),
            _ => {}
        }
        if t.elapsed() > within {
            return Err(fail(format!("the restored instance did not take writes within {}s", within.as_secs())));
        }
        if said.elapsed() > Duration::from_secs(10) {
            p.say(&format!("restore: replaying WAL ({:.0}s)", t.elapsed().as_secs_f64()));
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run state of the built-in stack, its instances where the file
    /// puts them.
    fn run_state(stack: &Stack) -> state::RunState {
        state::RunState {
            run_id: "r".into(),
            stack: "t".into(),
            stack_file: None,
            vpc: stack.vpc.to_string(),
            images: crate::images::ImageSet::Offline,
            started_unix: 0,
            instances: stack
                .services
                .iter()
                .flat_map(|s| s.instances.iter().map(move |i| (s.kind, i)))
                .map(|(kind, i)| state::InstanceState {
                    name: i.name.clone(),
                    service: kind.to_string(),
                    az: i.az.clone(),
                    subnet: i.tier.to_string(),
                    address: i.address,
                    container: i.name.clone(),
                    role: i.role.clone(),
                    published: Default::default(),
                })
                .collect(),
            credentials: state::Credentials::generate(),
            stack_toml: stack.to_toml(),
            faults: vec![],
        }
    }

    #[test]
    fn a_restore_gets_an_address_no_instance_of_its_az_has() {
        let stack = crate::harness::builtin_stack();
        let st = run_state(&stack);
        let a = free_address(&stack, &st, "a").unwrap();
        assert!(stack.az("a").unwrap().private.contains(a));
        assert!(stack.services.iter().flat_map(|s| &s.instances).all(|i| i.address != a), "{a}");
        assert!(a.octets()[3] >= crate::stack::parse::FIRST_DERIVED_HOST as u8);
    }

    #[test]
    fn restore_names_follow_rds_rules_and_are_unique() {
        let stack = crate::harness::builtin_stack();
        let st = run_state(&stack);
        assert!(check_name("pitr-1", &st).is_ok());
        for bad in ["Pitr", "1abc", "a_b", "end-", ""] {
            assert!(check_name(bad, &st).unwrap_err().to_string().contains("cannot name"), "{bad}");
        }
        let taken = &st.instances[0].name;
        assert!(check_name(taken, &st).unwrap_err().to_string().contains("already has"));
    }
}
