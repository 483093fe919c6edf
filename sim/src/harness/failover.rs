//! RDS "reboot with failover" on a running stack's PostgreSQL, by hand:
//! the same fencing, promotion and rebuild as the control plane's
//! automatic failover (`control::rds_ops`), without waiting to detect.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::runtime::RuntimeError;
use crate::state;

use super::running::RunningStack;

impl RunningStack {
    /// RDS "reboot with failover": the primary goes down, the synchronous
    /// standby is promoted, the writer endpoint moves to it, replicas follow
    /// it, and the old primary comes back as the new standby (from a fresh
    /// base backup). Measures how long writes through the writer endpoint
    /// failed.
    pub async fn failover_postgres(&mut self, p: &Progress) -> Result<crate::services::postgres::Failover> {
        use crate::services::postgres as pg;
        self.refresh()?;
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
        let lock = crate::control::rds_ops::lock(&self.state.stack)
            .await
            .map_err(|source| Error::State { path: state::path(&self.state.stack).display().to_string(), source })?;
        // The failover's fencing takes the primary down first.
        crate::control::rds_ops::failover(&self.docker, &self.state.stack, &old.name, &new.name, p)
            .await
            .map_err(fail)?;
        let writer_unavailable = tokio::time::timeout(Duration::from_secs(60), watcher)
            .await
            .map_err(|_| fail("no write through the writer endpoint succeeded within 60 s of the promotion".into()))?
            .map_err(|e| fail(e.to_string()))?;
        p.say(&format!("failover: writer back after {:.2}s", writer_unavailable.as_secs_f64()));
        let rejoined =
            crate::control::rds_ops::rebuild(&self.docker, &self.state.stack, &old.name, p).await.map_err(fail)?;
        drop(lock);
        let _ = state::record_event(
            &self.state.stack,
            &format!(
                "rds: reboot with failover {} -> {}: writer unavailable {:.1}s, {} back as standby after {:.1}s",
                old.name,
                new.name,
                writer_unavailable.as_secs_f64(),
                old.name,
                rejoined.as_secs_f64()
            ),
        );
        self.refresh()?;
        Ok(pg::Failover {
            old_primary: old.name,
            new_primary: new.name,
            writer_unavailable,
            old_primary_rejoined_after: rejoined,
            total: t0.elapsed(),
        })
    }
}
