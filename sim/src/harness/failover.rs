//! RDS "reboot with failover" on a running stack's PostgreSQL.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::fixtures;
use crate::progress::Progress;
use crate::runtime::{container, RuntimeError};
use crate::services::SpecContext;
use crate::stack::{parse_stack, ServiceKind};
use crate::state;

use super::ready::wait_ready;
use super::running::RunningStack;
use super::sim::{instance_state, pin_host_ports};

impl RunningStack {
    /// RDS "reboot with failover": the primary goes down, the synchronous
    /// standby is promoted, the writer endpoint moves to it, replicas follow
    /// it, and the old primary comes back as the new standby (from a fresh
    /// base backup). Measures how long writes through the writer endpoint
    /// failed.
    pub async fn failover_postgres(&mut self, p: &Progress) -> Result<crate::services::postgres::Failover> {
        use crate::services::postgres as pg;
        let fail =
            |m: String| Error::Runtime(RuntimeError::Provision { service: "postgres failover".into(), message: m });
        let old =
            pg::nodes(&self.state).find(|i| i.role == "primary").cloned().ok_or_else(|| fail("no primary".into()))?;
        let new = pg::nodes(&self.state).find(|i| i.role == "standby").cloned().ok_or_else(|| {
            Error::usage(
                "failover needs a standby, and this stack has none",
                "declare a `role = \"standby\"` PostgreSQL instance in another AZ",
            )
        })?;
        let writer = pg::writer(&self.state).ok_or_else(|| fail("no writer endpoint".into()))?;
        let new_ep = pg::instance(&self.state, &new.name).ok_or_else(|| fail("standby has no port".into()))?;
        writer
            .query_strings("CREATE TABLE IF NOT EXISTS voyager_sim_failover_probe (at timestamptz)")
            .await
            .map_err(fail)?;

        // Writes through the writer endpoint, as an application would make
        // them, from the moment the primary goes down until one succeeds.
        let t0 = Instant::now();
        let watcher = {
            let writer = writer.clone();
            tokio::spawn(async move {
                loop {
                    let attempt = tokio::time::timeout(
                        Duration::from_secs(2),
                        writer.query_strings("INSERT INTO voyager_sim_failover_probe VALUES (now())"),
                    );
                    if let Ok(Ok(_)) = attempt.await {
                        return t0.elapsed();
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        p.say(&format!("failover: {} down", old.name));
        container::kill(&self.docker, &old.container).await?;
        pg::haproxy_admin(&self.state, &format!("set server writer/{} state maint", old.name)).await.map_err(fail)?;
        pg::haproxy_admin(&self.state, &format!("shutdown sessions server writer/{}", old.name)).await.map_err(fail)?;
        p.say(&format!("failover: promoting {}", new.name));
        new_ep.query_strings("SELECT pg_promote(true, 60)").await.map_err(fail)?;
        // Until the old primary is back as a standby there is no one to be
        // synchronous with; RDS runs without a standby meanwhile, and so do we.
        new_ep.query_strings("ALTER SYSTEM SET synchronous_standby_names = ''").await.map_err(fail)?;
        new_ep.query_strings("SELECT pg_reload_conf()").await.map_err(fail)?;
        pg::haproxy_admin(&self.state, &format!("set server writer/{} state ready", new.name)).await.map_err(fail)?;
        let writer_unavailable = tokio::time::timeout(Duration::from_secs(60), watcher)
            .await
            .map_err(|_| fail("no write through the writer endpoint succeeded within 60 s of the promotion".into()))?
            .map_err(|e| fail(e.to_string()))?;
        p.say(&format!("failover: writer back after {:.2}s", writer_unavailable.as_secs_f64()));

        // Replicas follow the new primary.
        let conninfo = |host: std::net::Ipv4Addr, name: &str| {
            format!(
                "host={host} port={} user=replicator password={} application_name={}",
                pg::PORT,
                self.state.credentials.postgres_replication_password,
                pg::replication_name(name)
            )
        };
        for r in pg::nodes(&self.state).filter(|i| i.role == "replica").cloned().collect::<Vec<_>>() {
            let ep = pg::instance(&self.state, &r.name).ok_or_else(|| fail(format!("{} has no port", r.name)))?;
            let sql =
                format!("ALTER SYSTEM SET primary_conninfo = '{}'", conninfo(new.address, &r.name).replace('\'', "''"));
            ep.query_strings(&sql).await.map_err(fail)?;
            ep.query_strings("SELECT pg_reload_conf()").await.map_err(fail)?;
        }

        // The roles swap in the recorded stack; the old primary is rebuilt
        // from it as the new standby.
        let mut stack = parse_stack(Path::new("<run state>"), &self.state.stack_toml)?;
        for inst in stack.services.iter_mut().flat_map(|s| s.instances.iter_mut()) {
            if inst.name == old.name {
                inst.role = "standby".into();
            } else if inst.name == new.name {
                inst.role = "primary".into();
            }
        }
        let t_rejoin = Instant::now();
        p.say(&format!("failover: rebuilding {} as the standby of {}", old.name, new.name));
        let labels = self.labels();
        let fx = fixtures::builtin();
        let ports = BTreeMap::new();
        let cx = SpecContext {
            stack: &stack,
            stack_name: &self.state.stack,
            images: self.state.images,
            credentials: &self.state.credentials,
            host_ports: &ports,
            fixtures: &fx,
            companions: &BTreeMap::new(),
        };
        let mut spec =
            pg::specs(&cx).into_iter().find(|s| s.instance == old.name).expect("old primary is in the stack");
        pin_host_ports(&mut spec, Some(&old))?;
        container::remove(&self.docker, &old.container).await?;
        for (vol, _) in &spec.volumes {
            let vname = container::volume_name(&self.state.stack, &old.name, vol);
            let _ = self.docker.remove_volume(&vname, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
        }
        let cname = container::start(&self.docker, &spec, &labels).await?;
        let rebuilt = instance_state(&self.docker, &stack, ServiceKind::Postgres, &spec, cname).await?;
        for inst in &mut self.state.instances {
            if inst.name == old.name {
                *inst = rebuilt.clone();
            } else if inst.name == new.name {
                inst.role = "primary".into();
            }
        }
        self.state.stack_toml = stack.to_toml();
        state::save(&self.state)
            .map_err(|source| Error::State { path: state::path(&self.state.stack).display().to_string(), source })?;
        wait_ready(&self.docker, &self.state, &rebuilt, Duration::from_secs(120), p).await?;
        let standbys = [old.name.as_str()];
        new_ep
            .query_strings(&format!("ALTER SYSTEM SET synchronous_standby_names = '{}'", pg::sync_names(&standbys)))
            .await
            .map_err(fail)?;
        new_ep.query_strings("SELECT pg_reload_conf()").await.map_err(fail)?;
        pg::provision(&self.state, Duration::from_secs(120)).await.map_err(fail)?;
        Ok(pg::Failover {
            old_primary: old.name,
            new_primary: new.name,
            writer_unavailable,
            old_primary_rejoined_after: t_rejoin.elapsed(),
            total: t0.elapsed(),
        })
    }
}
