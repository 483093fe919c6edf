//! The database secrets engine for PostgreSQL: connections
//! (`config/<name>`, with `{{username}}`/`{{password}}` in the URL), roles
//! (`roles/<name>`, statements with `{{name}}`, `{{password}}`,
//! `{{expiration}}`) and `creds/<role>`, which creates a real PostgreSQL
//! role and leases it. The handlers here do no I/O: anything that talks to
//! PostgreSQL is a [`Work`] the server runs outside the lock, followed by a
//! [`Then`] that records the outcome.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{
    get_bool, get_list, get_statements, get_str, get_ttl, ApiError, Operation, Reply, Request, Result, Secret,
};
use crate::clock::{self, NANOS};
use crate::core::{mount_ttls, Ctx, Job, Step};
use crate::lease::{Lease, LeaseKind};
use crate::random;
use crate::state::{Engine, State};

pub const PLUGIN: &str = "postgresql-database-plugin";

/// Vault's PostgreSQL plugin renews by moving `VALID UNTIL`.
const DEFAULT_RENEW: &str = r#"ALTER ROLE "{{name}}" VALID UNTIL '{{expiration}}';"#;

#[derive(Serialize, Deserialize, Default)]
pub struct DbStore {
    pub configs: BTreeMap<String, DbConfig>,
    pub roles: BTreeMap<String, DbRole>,
}

/// How to reach the database as its administrator.
#[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
pub struct ConnSpec {
    pub connection_url: String,
    pub username: String,
    pub password: String,
}

#[derive(Serialize, Deserialize, Clone, Default)]
pub struct DbConfig {
    pub plugin_name: String,
    pub conn: ConnSpec,
    pub allowed_roles: Vec<String>,
    pub verify_connection: bool,
}

#[derive(Serialize, Deserialize, Clone, Default)]
pub struct DbRole {
    pub db_name: String,
    pub creation_statements: Vec<String>,
    pub revocation_statements: Vec<String>,
    pub renew_statements: Vec<String>,
    pub rollback_statements: Vec<String>,
    pub default_ttl: u64,
    pub max_ttl: u64,
}

/// Statements to run on one database.
#[derive(Clone)]
pub struct Task {
    pub conn: ConnSpec,
    /// Run in one transaction, in order.
    pub sql: Vec<String>,
    /// Vault's default revocation for this user: end its sessions, drop
    /// what it owns, drop the role.
    pub drop_user: Option<String>,
}

/// Work for PostgreSQL, one outcome per task.
pub struct Work(pub Vec<Task>);

/// What to record once the work is done.
pub enum Then {
    ConfigWritten { mount: String, name: String, config: DbConfig },
    Issued { lease: Box<Lease>, username: String, password: String },
    Renewed { lease_id: String, expires: u64, ttl: u64, warnings: Vec<String> },
    Revoked { ids: Vec<String> },
}

impl DbStore {
    pub fn exists(&self, rest: &str) -> Option<bool> {
        if let Some(n) = rest.strip_prefix("config/") {
            return Some(self.configs.contains_key(n));
        }
        rest.strip_prefix("roles/").map(|n| self.roles.contains_key(n))
    }
}

/// `{{key}}` → value, for every pair.
pub fn template(s: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(s.to_string(), |acc, (k, v)| acc.replace(&format!("{{{{{k}}}}}"), v))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl ConnSpec {
    /// The URL with its credentials filled in, as a client configuration.
    pub fn config(&self) -> std::result::Result<tokio_postgres::Config, String> {
        let url = template(
            &self.connection_url,
            &[("username", &percent_encode(&self.username)), ("password", &percent_encode(&self.password))],
        );
        let mut c = tokio_postgres::Config::from_str(&url)
            .map_err(|_| "connection_url is not a valid PostgreSQL URL or key=value string".to_string())?;
        if c.get_user().is_none() && !self.username.is_empty() {
            c.user(&self.username);
        }
        if c.get_password().is_none() && !self.password.is_empty() {
            c.password(&self.password);
        }
        c.connect_timeout(Duration::from_secs(5));
        Ok(c)
    }
}

fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s = format!("{s}: {inner}");
                src = inner.source();
            }
            s
        }
    }
}

impl Task {
    pub async fn run(&self) -> std::result::Result<(), String> {
        let config = self.conn.config()?;
        let (client, conn) = config.connect(tokio_postgres::NoTls).await.map_err(|e| db_error(&e))?;
        let driver = tokio::spawn(conn);
        let out = self.statements(&client).await;
        drop(client);
        let _ = driver.await;
        out
    }

    async fn statements(&self, c: &tokio_postgres::Client) -> std::result::Result<(), String> {
        if let Some(user) = &self.drop_user {
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()",
                &[user],
            )
            .await
            .map_err(|e| db_error(&e))?;
            let exists =
                c.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[user]).await.map_err(|e| db_error(&e))?;
            if exists.is_some() {
                // What the role owns or was granted goes with it; a failure
                // here shows up as DROP ROLE's error below.
                let _ = c.batch_execute(&format!("DROP OWNED BY {}", quote_ident(user))).await;
                c.batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(user)))
                    .await
                    .map_err(|e| db_error(&e))?;
            }
            return Ok(());
        }
        if self.sql.is_empty() {
            return Ok(());
        }
        c.batch_execute("BEGIN").await.map_err(|e| db_error(&e))?;
        for s in &self.sql {
            if let Err(e) = c.batch_execute(s).await {
                let _ = c.batch_execute("ROLLBACK").await;
                return Err(db_error(&e));
            }
        }
        c.batch_execute("COMMIT").await.map_err(|e| db_error(&e))
    }
}

impl Work {
    pub async fn run(self) -> Vec<std::result::Result<(), String>> {
        let mut out = Vec::with_capacity(self.0.len());
        for t in &self.0 {
            out.push(t.run().await);
        }
        out
    }
}

/// The task that revokes a database lease.
pub fn revoke_task(kind: &LeaseKind) -> Task {
    let LeaseKind::Database { conn, username, revocation, .. } = kind;
    if revocation.is_empty() {
        Task { conn: conn.clone(), sql: vec![], drop_user: Some(username.clone()) }
    } else {
        Task {
            conn: conn.clone(),
            sql: revocation.iter().map(|s| template(s, &[("name", username), ("username", username)])).collect(),
            drop_user: None,
        }
    }
}

/// The task that renews a database lease until `expires`.
pub fn renew_task(kind: &LeaseKind, expires: u64) -> Task {
    let LeaseKind::Database { conn, username, renew, .. } = kind;
    let stmts = if renew.is_empty() { vec![DEFAULT_RENEW.to_string()] } else { renew.clone() };
    let exp = clock::pg_time(expires);
    Task {
        conn: conn.clone(),
        sql: stmts
            .iter()
            .map(|s| template(s, &[("name", username), ("username", username), ("expiration", &exp)]))
            .collect(),
        drop_user: None,
    }
}

fn store<'a>(st: &'a mut State, mount: &str) -> Result<&'a mut DbStore> {
    match st.mounts.get_mut(mount).map(|m| &mut m.engine) {
        Some(Engine::Database(s)) => Ok(s),
        _ => Err(ApiError::unsupported_path(mount)),
    }
}

fn keys<V>(m: &BTreeMap<String, V>) -> Result<Reply> {
    if m.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Secret::keys(m.keys().cloned().collect()))
}

/// A username like Vault's template makes:
/// `v-<display name>-<role>-<20 random>-<unix time>`, at most 63 bytes.
fn username(display: &str, role: &str, now: u64) -> String {
    let short = |s: &str, n: usize| {
        s.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(n).collect::<String>()
    };
    let mut u = format!("v-{}-{}-{}-{}", short(display, 8), short(role, 8), random::base62(20), clock::secs(now));
    u.truncate(63);
    u
}

pub fn handle(st: &mut State, cx: &Ctx, req: &Request) -> Result<Step> {
    let rest = cx.rest.as_str();
    let op = req.op;
    let write = matches!(op, Operation::Create | Operation::Update);
    let done = |r: Reply| Ok(Step::Done(Ok(r)));
    if rest == "config/" {
        return if op == Operation::List {
            done(keys(&store(st, &cx.mount)?.configs)?)
        } else {
            Err(ApiError::unsupported_op())
        };
    }
    if rest == "roles/" {
        return if op == Operation::List {
            done(keys(&store(st, &cx.mount)?.roles)?)
        } else {
            Err(ApiError::unsupported_op())
        };
    }
    if let Some(name) = rest.strip_prefix("config/") {
        let s = store(st, &cx.mount)?;
        return match op {
            Operation::Read => {
                let c = s.configs.get(name).ok_or_else(ApiError::not_found)?;
                done(Secret::data(json!({
                    "plugin_name": c.plugin_name,
                    "plugin_version": "",
                    "connection_details": { "connection_url": c.conn.connection_url, "username": c.conn.username },
                    "allowed_roles": c.allowed_roles,
                    "root_credentials_rotate_statements": [],
                    "password_policy": "",
                    "verify_connection": c.verify_connection,
                })))
            }
            Operation::Delete => {
                s.configs.remove(name);
                done(Reply::Empty)
            }
            _ if write => write_config(s, cx, name, req),
            _ => Err(ApiError::unsupported_op()),
        };
    }
    if let Some(name) = rest.strip_prefix("roles/") {
        let s = store(st, &cx.mount)?;
        return match op {
            Operation::Read => {
                let r = s.roles.get(name).ok_or_else(ApiError::not_found)?;
                done(Secret::data(json!({
                    "db_name": r.db_name,
                    "creation_statements": r.creation_statements,
                    "revocation_statements": r.revocation_statements,
                    "renew_statements": r.renew_statements,
                    "rollback_statements": r.rollback_statements,
                    "default_ttl": r.default_ttl,
                    "max_ttl": r.max_ttl,
                    "credential_type": "password",
                })))
            }
            Operation::Delete => {
                s.roles.remove(name);
                done(Reply::Empty)
            }
            _ if write => {
                let d = &req.data;
                let mut r = s.roles.get(name).cloned().unwrap_or_default();
                if let Some(v) = get_str(d, "db_name")? {
                    r.db_name = v;
                }
                if let Some(v) = get_statements(d, "creation_statements")? {
                    r.creation_statements = v;
                }
                if let Some(v) = get_statements(d, "revocation_statements")? {
                    r.revocation_statements = v;
                }
                if let Some(v) = get_statements(d, "renew_statements")? {
                    r.renew_statements = v;
                }
                if let Some(v) = get_statements(d, "rollback_statements")? {
                    r.rollback_statements = v;
                }
                if let Some(v) = get_ttl(d, "default_ttl")? {
                    r.default_ttl = v;
                }
                if let Some(v) = get_ttl(d, "max_ttl")? {
                    r.max_ttl = v;
                }
                if r.db_name.is_empty() {
                    return Err(ApiError::bad("empty database name attribute"));
                }
                if r.creation_statements.is_empty() {
                    return Err(ApiError::bad("empty creation statements"));
                }
                if r.max_ttl > 0 && r.default_ttl > r.max_ttl {
                    return Err(ApiError::bad("ttl cannot be greater than max_ttl"));
                }
                s.roles.insert(name.to_string(), r);
                done(Reply::Empty)
            }
            _ => Err(ApiError::unsupported_op()),
        };
    }
    if let Some(role_name) = rest.strip_prefix("creds/") {
        if op != Operation::Read {
            return Err(ApiError::unsupported_op());
        }
        return creds(st, cx, role_name);
    }
    Err(ApiError::unsupported_path(&req.path))
}

fn write_config(s: &mut DbStore, cx: &Ctx, name: &str, req: &Request) -> Result<Step> {
    let d = &req.data;
    let mut c = s.configs.get(name).cloned().unwrap_or(DbConfig { verify_connection: true, ..Default::default() });
    if let Some(v) = get_str(d, "plugin_name")? {
        c.plugin_name = v;
    }
    if c.plugin_name != PLUGIN {
        return Err(ApiError::bad(format!("vault-lite supports only the {PLUGIN}, not {:?}", c.plugin_name)));
    }
    if let Some(v) = get_str(d, "connection_url")? {
        c.conn.connection_url = v;
    }
    if let Some(v) = get_str(d, "username")? {
        c.conn.username = v;
    }
    if let Some(v) = get_str(d, "password")? {
        c.conn.password = v;
    }
    if let Some(v) = get_list(d, "allowed_roles")? {
        c.allowed_roles = v;
    }
    if let Some(v) = get_bool(d, "verify_connection")? {
        c.verify_connection = v;
    }
    if c.conn.connection_url.is_empty() {
        return Err(ApiError::bad("error creating database object: connection_url cannot be empty"));
    }
    c.conn.config().map_err(|e| ApiError::bad(format!("error creating database object: {e}")))?;
    if c.verify_connection {
        let task = Task { conn: c.conn.clone(), sql: vec!["SELECT 1".into()], drop_user: None };
        return Ok(Step::Job(Job {
            work: Work(vec![task]),
            then: Then::ConfigWritten { mount: cx.mount.clone(), name: name.to_string(), config: c },
        }));
    }
    s.configs.insert(name.to_string(), c);
    Ok(Step::Done(Ok(Reply::Empty)))
}

fn creds(st: &mut State, cx: &Ctx, role_name: &str) -> Result<Step> {
    let (mount_default, mount_max) = mount_ttls(st, &cx.mount);
    let s = store(st, &cx.mount)?;
    let role = s.roles.get(role_name).cloned().ok_or_else(|| ApiError::bad(format!("unknown role: {role_name}")))?;
    let config = s
        .configs
        .get(&role.db_name)
        .cloned()
        .ok_or_else(|| ApiError::bad(format!("could not find database config named {:?}", role.db_name)))?;
    if !config.allowed_roles.iter().any(|r| r == role_name || r == "*") {
        return Err(ApiError::bad(format!("{role_name:?} is not an allowed role")));
    }
    let max = if role.max_ttl > 0 { role.max_ttl.min(mount_max) } else { mount_max };
    let ttl = if role.default_ttl > 0 { role.default_ttl } else { mount_default }.min(max);
    let now = cx.now;
    let display = cx.caller.as_ref().map(|t| t.display_name.as_str()).unwrap_or("token");
    let user = username(display, role_name, now);
    let password = random::password();
    let expires = now + ttl * NANOS;
    let exp = clock::pg_time(expires);
    let vars = [
        ("name", user.as_str()),
        ("username", user.as_str()),
        ("password", password.as_str()),
        ("expiration", exp.as_str()),
    ];
    let sql = role.creation_statements.iter().map(|s| template(s, &vars)).collect();
    let lease = Lease {
        id: format!("{}creds/{role_name}/{}", cx.mount, random::base62(24)),
        issued: now,
        expires,
        max_expires: now + max * NANOS,
        last_renewal: None,
        renewable: true,
        owner: cx.caller.as_ref().map(|t| t.accessor.clone()).unwrap_or_default(),
        revoke_pending: false,
        revoking: false,
        retry_at: 0,
        kind: LeaseKind::Database {
            conn: config.conn.clone(),
            username: user.clone(),
            revocation: role.revocation_statements.clone(),
            renew: role.renew_statements.clone(),
        },
    };
    Ok(Step::Job(Job {
        work: Work(vec![Task { conn: config.conn, sql, drop_user: None }]),
        then: Then::Issued { lease: Box::new(lease), username: user, password },
    }))
}

/// Record what PostgreSQL did.
pub fn after(st: &mut State, then: Then, outcomes: Vec<std::result::Result<(), String>>, now: u64) -> Result<Reply> {
    let first = outcomes.first().cloned().unwrap_or(Ok(()));
    match then {
        Then::ConfigWritten { mount, name, config } => {
            first.map_err(|e| {
                ApiError::bad(format!("error creating database object: error verifying connection: {e}"))
            })?;
            store(st, &mount)?.configs.insert(name, config);
            Ok(Reply::Empty)
        }
        Then::Issued { lease, username, password } => {
            first.map_err(|e| ApiError::internal(format!("failed to create the database user: {e}")))?;
            let out = Secret {
                data: Some(json!({ "username": username, "password": password })),
                lease_id: lease.id.clone(),
                lease_duration: lease.expires.saturating_sub(lease.issued) / NANOS,
                renewable: true,
                ..Default::default()
            };
            st.leases.insert(lease.id.clone(), *lease);
            Ok(Reply::Secret(out))
        }
        Then::Renewed { lease_id, expires, ttl, warnings } => {
            first.map_err(|e| ApiError::internal(format!("failed to renew the lease: {e}")))?;
            let l = st.leases.get_mut(&lease_id).ok_or_else(|| ApiError::bad("lease not found"))?;
            l.expires = expires;
            l.last_renewal = Some(now);
            Ok(Reply::Secret(Secret { lease_id, lease_duration: ttl, renewable: true, warnings, ..Default::default() }))
        }
        Then::Revoked { ids } => {
            let mut errors = vec![];
            for (id, out) in ids.iter().zip(outcomes) {
                match out {
                    Ok(()) => {
                        st.leases.remove(id);
                    }
                    Err(e) => {
                        if let Some(l) = st.leases.get_mut(id) {
                            l.revoking = false;
                        }
                        errors.push(format!("failed to revoke lease {id}: {e}"));
                    }
                }
            }
            if errors.is_empty() {
                Ok(Reply::Empty)
            } else {
                Err(ApiError { status: 400, errors, data: None })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_usernames() {
        assert_eq!(
            template("CREATE ROLE \"{{name}}\" PASSWORD '{{password}}'", &[("name", "u"), ("password", "p")]),
            "CREATE ROLE \"u\" PASSWORD 'p'"
        );
        let u = username("token-something-long", "voyager-app-role", 1_700_000_000 * NANOS);
        assert!(u.starts_with("v-token-so-voyager--"), "{u}");
        assert!(u.ends_with("-1700000000"));
        assert!(u.len() <= 63);
    }

    #[test]
    fn credentials_are_url_encoded_into_the_url() {
        let c = ConnSpec {
            connection_url: "postgresql://{{username}}:{{password}}@127.0.0.1:5432/app?sslmode=disable".into(),
            username: "admin".into(),
            password: "p@ss/w:rd".into(),
        };
        let cfg = c.config().unwrap();
        assert_eq!(cfg.get_user(), Some("admin"));
        assert_eq!(cfg.get_password(), Some(&b"p@ss/w:rd"[..]));
        assert_eq!(cfg.get_dbname(), Some("app"));
    }
}
