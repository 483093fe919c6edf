//! Leases: what a dynamic secret is, how long it lives, who made it;
//! `sys/leases/{renew,revoke,revoke-prefix,lookup}` (and the legacy
//! `sys/renew`, `sys/revoke`); and the sweeper, which revokes expired tokens
//! and expired or orphaned leases in the background, retrying a revocation
//! that failed (the database was down) until it succeeds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{get_str, get_ttl, ApiError, Operation, Reply, Request, Result, Secret};
use crate::clock::{self, NANOS};
use crate::core::{Core, Ctx, Job, Step};
use crate::database::{self, ConnSpec, Then, Work};
use crate::state::State;
use crate::token;

#[derive(Serialize, Deserialize, Clone)]
pub struct Lease {
    pub id: String,
    pub issued: u64,
    pub expires: u64,
    pub max_expires: u64,
    pub last_renewal: Option<u64>,
    pub renewable: bool,
    /// The accessor of the token that asked for it: revoking that token
    /// revokes this lease.
    pub owner: String,
    /// Revoke as soon as possible (its token or mount went).
    pub revoke_pending: bool,
    /// A revocation is running now.
    #[serde(skip)]
    pub revoking: bool,
    /// After a failed revocation, not before this time.
    #[serde(skip)]
    pub retry_at: u64,
    pub kind: LeaseKind,
}

#[derive(Serialize, Deserialize, Clone)]
pub enum LeaseKind {
    /// A PostgreSQL role; the connection is kept so revocation works even
    /// after the mount or its configuration is gone.
    Database { conn: ConnSpec, username: String, revocation: Vec<String>, renew: Vec<String> },
}

impl Lease {
    fn lookup(&self, now: u64) -> serde_json::Value {
        json!({
            "id": self.id,
            "issue_time": clock::rfc3339(self.issued),
            "expire_time": clock::rfc3339(self.expires),
            "last_renewal": self.last_renewal.map(clock::rfc3339),
            "renewable": self.renewable,
            "ttl": self.expires.saturating_sub(now) / NANOS,
        })
    }
}

fn lease_id(rest: &str, prefix: &str, req: &Request) -> Result<String> {
    match rest.strip_prefix(prefix).map(|s| s.trim_start_matches('/')).filter(|s| !s.is_empty()) {
        Some(id) => Ok(id.to_string()),
        None => get_str(&req.data, "lease_id")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::bad("lease_id must be specified")),
    }
}

/// Start revoking `ids` (those not already being revoked).
fn revoke_job(st: &mut State, ids: Vec<String>) -> Step {
    let mut tasks = vec![];
    let mut kept = vec![];
    for id in ids {
        if let Some(l) = st.leases.get_mut(&id).filter(|l| !l.revoking) {
            l.revoking = true;
            tasks.push(database::revoke_task(&l.kind));
            kept.push(id);
        }
    }
    if tasks.is_empty() {
        return Step::Done(Ok(Reply::Empty));
    }
    Step::Job(Job { work: Work(tasks), then: Then::Revoked { ids: kept } })
}

/// `sys/leases/*`, `sys/renew`, `sys/revoke`.
pub fn handle(st: &mut State, cx: &Ctx, req: &Request) -> Result<Step> {
    let rest = cx.rest.as_str();
    let now = cx.now;
    let write = matches!(req.op, Operation::Create | Operation::Update);
    let rest = rest.strip_prefix("leases/").unwrap_or(rest);
    if rest.starts_with("lookup") && req.op == Operation::List {
        let prefix = rest.trim_start_matches("lookup").trim_start_matches('/');
        let mut keys: Vec<String> = st
            .leases
            .keys()
            .filter_map(|id| id.strip_prefix(prefix))
            .map(|r| match r.split_once('/') {
                Some((dir, _)) => format!("{dir}/"),
                None => r.to_string(),
            })
            .collect();
        keys.dedup();
        if keys.is_empty() {
            return Err(ApiError::not_found());
        }
        return Ok(Step::Done(Ok(Secret::keys(keys))));
    }
    if !write {
        return Err(ApiError::unsupported_op());
    }
    if rest == "lookup" {
        let id = lease_id(rest, "lookup", req)?;
        let l = st.leases.get(&id).ok_or_else(|| ApiError::bad("invalid lease"))?;
        return Ok(Step::Done(Ok(Secret::data(l.lookup(now)))));
    }
    if rest.starts_with("renew") {
        let id = lease_id(rest, "renew", req)?;
        let increment = get_ttl(&req.data, "increment")?.unwrap_or(0);
        let l = st.leases.get(&id).ok_or_else(|| ApiError::bad("lease not found"))?;
        if !l.renewable {
            return Err(ApiError::bad("lease is not renewable"));
        }
        let want = if increment > 0 { increment } else { l.expires.saturating_sub(l.issued) / NANOS };
        let mut expires = now + want * NANOS;
        let mut warnings = vec![];
        if expires > l.max_expires {
            expires = l.max_expires;
            warnings.push(format!(
                "TTL of \"{want}s\" exceeded the effective max_ttl of \"{}s\"; TTL value is capped accordingly",
                l.max_expires.saturating_sub(now) / NANOS
            ));
        }
        let task = database::renew_task(&l.kind, expires);
        let ttl = expires.saturating_sub(now) / NANOS;
        return Ok(Step::Job(Job {
            work: Work(vec![task]),
            then: Then::Renewed { lease_id: id, expires, ttl, warnings },
        }));
    }
    if let Some(prefix) = rest.strip_prefix("revoke-prefix/").or(rest.strip_prefix("revoke-force/")) {
        let ids = st.leases.keys().filter(|id| id.starts_with(prefix)).cloned().collect();
        return Ok(revoke_job(st, ids));
    }
    if rest.starts_with("revoke") {
        let id = lease_id(rest, "revoke", req)?;
        return Ok(revoke_job(st, vec![id]));
    }
    Err(ApiError::unsupported_path(&req.path))
}

/// Expire tokens and revoke due leases, until the task is aborted. Wakes on
/// the core's `wake` or every 250 ms.
pub async fn sweep(core: Arc<Mutex<Core>>) {
    let wake = core.lock().expect("core lock").wake.clone();
    loop {
        let step = {
            let mut c = core.lock().expect("core lock");
            let now = clock::now();
            let mut changed = false;
            let due: Vec<String> = match c.state.as_mut() {
                None => vec![],
                Some(st) => {
                    let expired: Vec<String> =
                        st.tokens.values().filter(|t| t.expired(now)).map(|t| t.id.clone()).collect();
                    for id in &expired {
                        changed |= token::revoke_tree(st, id) > 0;
                    }
                    st.leases
                        .values()
                        .filter(|l| (l.expires <= now || l.revoke_pending) && !l.revoking && l.retry_at <= now)
                        .map(|l| l.id.clone())
                        .collect()
                }
            };
            if changed {
                if let Err(e) = c.persist() {
                    eprintln!("persist: {e}");
                }
            }
            match (due.is_empty(), c.state.as_mut()) {
                (false, Some(st)) => Some(revoke_job(st, due)),
                _ => None,
            }
        };
        if let Some(Step::Job(job)) = step {
            let outcomes = job.work.run().await;
            let mut c = core.lock().expect("core lock");
            let failed: Vec<(String, String)> = match &job.then {
                Then::Revoked { ids } => {
                    ids.iter().zip(&outcomes).filter_map(|(id, o)| o.clone().err().map(|e| (id.clone(), e))).collect()
                }
                _ => vec![],
            };
            let _ = c.after_job(job.then, outcomes);
            let retry = clock::now() + 5 * NANOS;
            if let Some(st) = c.state.as_mut() {
                for (id, e) in &failed {
                    eprintln!("lease {id}: revocation failed, retrying in 5s: {e}");
                    if let Some(l) = st.leases.get_mut(id) {
                        l.retry_at = retry;
                    }
                }
            }
            if let Err(e) = c.persist() {
                eprintln!("persist: {e}");
            }
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}
