//! PostgreSQL through the writer endpoint, logged in with credentials from
//! Vault's database engine: leased, renewed at two thirds of the lease, and
//! replaced by new ones when Vault will not extend the lease further (its
//! `max_ttl`) — the way Vault Agent keeps an application's credentials.
//! Connections opened with credentials that were replaced are closed and
//! opened again with the new ones before Vault revokes the old role.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Mutex, RwLock};
use tokio_postgres::{Client, NoTls};
use vault_lite::client::VaultClient;

use crate::config::Config;

/// Connections kept to the writer: enough to overlap commits, which each
/// wait for the synchronous standby, without crowding RDS's connection limit.
const POOL: usize = 8;
const VAULT_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The platform's table of runs (created by the stack before Vault issues
/// credentials, whose grants cover the tables that exist then).
pub const INSERT: &str = "INSERT INTO voyager_runs (id, subject, zone) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING";

#[derive(Clone)]
struct Lease {
    id: String,
    user: String,
    password: String,
    duration: Duration,
    generation: u64,
}

pub struct Database {
    vault: VaultClient,
    role: String,
    host: String,
    port: u16,
    database: String,
    lease: RwLock<Lease>,
    slots: Vec<Mutex<Option<(u64, Client)>>>,
    next: AtomicUsize,
}

/// What the insert did: a new row, or one that a retry of the same id had
/// already written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Inserted {
    New,
    AlreadyThere,
}

impl Database {
    /// Lease the first credentials; the caller retries while Vault or the
    /// database is not there yet.
    pub async fn open(cfg: &Config) -> Result<Arc<Database>, String> {
        let vault = VaultClient::new(&cfg.vault_addr).with_token(&cfg.vault_token);
        let lease = lease(&vault, &cfg.db_role, 1).await?;
        Ok(Arc::new(Database {
            vault,
            role: cfg.db_role.clone(),
            host: cfg.pg_host.clone(),
            port: cfg.pg_port,
            database: cfg.pg_database.clone(),
            lease: RwLock::new(lease),
            slots: (0..POOL).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }))
    }

    /// Keep the credentials alive for as long as the service runs.
    pub fn spawn_renewal(self: &Arc<Database>) {
        let db = self.clone();
        tokio::spawn(async move {
            loop {
                let current = db.lease.read().await.clone();
                tokio::time::sleep(current.duration * 2 / 3).await;
                let renewed = tokio::time::timeout(
                    VAULT_TIMEOUT,
                    db.vault.write(
                        "sys/leases/renew",
                        &json!({ "lease_id": current.id, "increment": current.duration.as_secs() }),
                    ),
                )
                .await;
                let granted = match renewed {
                    Ok(Ok(v)) => v["lease_duration"].as_u64().map(Duration::from_secs),
                    _ => None,
                };
                match granted {
                    // Extended by (nearly) what was asked: keep it.
                    Some(d) if d >= current.duration / 2 => db.lease.write().await.duration = d,
                    // Vault's max_ttl is close, or renewal failed: new credentials.
                    _ => loop {
                        match lease(&db.vault, &db.role, current.generation + 1).await {
                            Ok(l) => {
                                eprintln!("voyager-api: database credentials replaced (lease {})", short(&l.id));
                                *db.lease.write().await = l;
                                break;
                            }
                            Err(e) => {
                                eprintln!("voyager-api: new database credentials: {e}; trying again");
                                tokio::time::sleep(Duration::from_secs(2)).await;
                            }
                        }
                    },
                }
            }
        });
    }

    /// A pooled connection with the current credentials, opened if need be.
    async fn with_client<T>(
        &self,
        f: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, String> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        let lease = self.lease.read().await.clone();
        let stale = slot.as_ref().is_none_or(|(generation, c)| *generation != lease.generation || c.is_closed());
        if stale {
            *slot = None;
            let mut conf = tokio_postgres::Config::new();
            conf.host(&self.host)
                .port(self.port)
                .dbname(&self.database)
                .user(&lease.user)
                .password(&lease.password)
                .connect_timeout(CONNECT_TIMEOUT)
                .application_name("voyager-api");
            let (client, conn) = tokio::time::timeout(CONNECT_TIMEOUT, conf.connect(NoTls))
                .await
                .map_err(|_| format!("connecting to the writer {}:{}: no answer", self.host, self.port))?
                .map_err(|e| format!("connecting to the writer {}:{}: {e}", self.host, self.port))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            *slot = Some((lease.generation, client));
        }
        let (_, client) = slot.as_ref().expect("a connection was just put there");
        f(client).await.map_err(|e| e.to_string())
    }

    /// Insert a run; committed means on the primary and its synchronous
    /// standby (RDS Multi-AZ's guarantee, the cluster's setting).
    pub async fn insert(&self, id: &str, subject: &str, zone: &str) -> Result<Inserted, String> {
        let n = self.with_client(async |c| c.execute(INSERT, &[&id, &subject, &zone]).await).await?;
        Ok(if n == 1 { Inserted::New } else { Inserted::AlreadyThere })
    }

    /// For the deep health check: the writer answers with these credentials.
    pub async fn ping(&self) -> Result<(), String> {
        self.with_client(async |c| c.simple_query("SELECT 1").await.map(|_| ())).await
    }

    /// The lease's user, for the health document (never the password).
    pub async fn user(&self) -> String {
        self.lease.read().await.user.clone()
    }
}

async fn lease(vault: &VaultClient, role: &str, generation: u64) -> Result<Lease, String> {
    let v = tokio::time::timeout(VAULT_TIMEOUT, vault.read(&format!("database/creds/{role}")))
        .await
        .map_err(|_| format!("Vault did not answer within {VAULT_TIMEOUT:?}"))?
        .map_err(|e| format!("reading database credentials from Vault: {e}"))?;
    let s = |k: &str| v["data"][k].as_str().map(str::to_string).ok_or(format!("Vault's answer has no {k}"));
    Ok(Lease {
        id: v["lease_id"].as_str().unwrap_or_default().to_string(),
        user: s("username")?,
        password: s("password")?,
        // A lease shorter than a few seconds would make renewal spin.
        duration: Duration::from_secs(v["lease_duration"].as_u64().unwrap_or(3600).max(6)),
        generation,
    })
}

/// Lease ids name the role and path; the tail is enough to tell them apart.
fn short(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}
