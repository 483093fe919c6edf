//! The request pipeline, in one place so that no request can skip a step:
//! lifecycle endpoints (answered sealed or not) → sealed? 503 → route to a
//! mount → authenticate the token → decide create or update by the
//! engine's existence check → ACL check (sudo where Vault wants it) →
//! audit the request → the engine → audit the response → persist.
//! **Every request but the lifecycle endpoints and Vault's unauthenticated
//! paths passes the ACL check, and every audited string is an HMAC.**
//!
//! The pipeline is synchronous and runs under one lock; an engine that must
//! talk to PostgreSQL returns a [`Job`], which the server runs without the
//! lock and hands back through [`Core::after_job`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::api::{get_bool, get_str, get_u64, ApiError, Method, Operation, Reply, Request, Result, Secret};
use crate::audit::AuditRecord;
use crate::policy::{self, Acl, Policy};
use crate::seal::{self, Seal, SealedFile};
use crate::state::{Engine, State};
use crate::token::{self, TokenEntry, TokenSpec};
use crate::{approle, barrier, clock, database, kv, pki, sys};

/// The server's settings.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Where the encrypted state is kept across restarts; memory only if
    /// `None`.
    pub state_file: Option<PathBuf>,
    /// An audit device that is always on (besides those `sys/audit`
    /// enables), for the simulator's own record.
    pub audit_file: Option<PathBuf>,
}

pub const VERSION: &str = "1.17.0";

/// What a handler knows about the request beyond its body.
pub struct Ctx {
    pub caller: Option<TokenEntry>,
    pub acl: Acl,
    /// The mount's path: `secret/`, `auth/approle/`, `sys/`.
    pub mount: String,
    pub mount_type: String,
    /// The path below the mount.
    pub rest: String,
    pub now: u64,
    /// The mount's (default, maximum) lease TTL in seconds.
    pub ttls: (u64, u64),
}

/// Work that must leave the lock (PostgreSQL), and what to do with its
/// outcome.
pub struct Job {
    pub work: database::Work,
    pub then: database::Then,
}

pub enum Step {
    Done(Result<Reply>),
    Job(Job),
}

/// What [`Core::finish`] needs after the handler ran.
#[derive(Default)]
pub struct Pending {
    audit: Option<AuditRecord>,
    mount_type: String,
    persist: bool,
}

/// A finished HTTP answer.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

pub struct Core {
    pub seal: Seal,
    /// The decrypted state; `Some` exactly while unsealed.
    pub state: Option<State>,
    parsed: HashMap<String, Policy>,
    pub opts: Options,
    /// Wakes the lease sweeper (a token revoked, a lease due).
    pub wake: Arc<Notify>,
}

fn sudo_required(path: &str, op: Operation) -> bool {
    const EXACT: &[&str] = &["sys/audit", "sys/auth", "sys/seal", "sys/rotate", "auth/token/revoke-orphan"];
    const PREFIX: &[&str] = &[
        "sys/audit/",
        "sys/audit-hash/",
        "sys/auth/",
        "sys/leases/revoke-prefix/",
        "sys/leases/revoke-force/",
        "sys/raw",
        "auth/token/accessors",
    ];
    EXACT.contains(&path)
        || PREFIX.iter().any(|p| path.starts_with(p))
        || (op == Operation::List && path.starts_with("sys/leases/lookup"))
}

impl Core {
    /// A core for `opts`: uninitialised, or sealed over the state file's
    /// contents if there is one.
    pub fn open(opts: Options) -> std::result::Result<Core, crate::Error> {
        let mut seal = Seal::default();
        if let Some(path) = &opts.state_file {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let f: SealedFile = serde_json::from_slice(&bytes)
                        .map_err(|e| crate::Error::StateFile { path: path.clone(), reason: e.to_string() })?;
                    seal =
                        Seal::from_file(&f).map_err(|reason| crate::Error::StateFile { path: path.clone(), reason })?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(crate::Error::StateFile { path: path.clone(), reason: e.to_string() }),
            }
        }
        Ok(Core { seal, state: None, parsed: HashMap::new(), opts, wake: Arc::new(Notify::new()) })
    }

    /// Encrypt the state and, with a state file, write it atomically (a
    /// temporary file renamed over the old one), mode 0600.
    pub fn persist(&mut self) -> std::result::Result<(), String> {
        let (Some(key), Some(st)) = (self.seal.key, self.state.as_ref()) else { return Ok(()) };
        let plain = serde_json::to_vec(st).map_err(|e| e.to_string())?;
        self.seal.blob = barrier::seal(&key, &plain);
        self.write_file()
    }

    fn write_file(&self) -> std::result::Result<(), String> {
        let (Some(path), Some(file)) = (&self.opts.state_file, self.seal.to_file()) else { return Ok(()) };
        let bytes = serde_json::to_vec(&file).map_err(|e| e.to_string())?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| format!("writing the state file {}: {e}", path.display()))
    }

    pub fn policy(&mut self, name: &str) -> Option<&Policy> {
        if !self.parsed.contains_key(name) {
            let text = self.state.as_ref()?.policies.get(name)?;
            let p = policy::parse(text).ok()?;
            self.parsed.insert(name.to_string(), p);
        }
        self.parsed.get(name)
    }

    /// Forget parsed policies (one was written or deleted).
    pub fn policies_changed(&mut self) {
        self.parsed.clear();
    }

    pub fn acl_for(&mut self, t: &TokenEntry) -> Acl {
        if t.is_root() {
            return Acl::root();
        }
        let policies: Vec<Policy> = t.policies.iter().filter_map(|n| self.policy(n).cloned()).collect();
        Acl::new(policies.iter())
    }

    /// Run the pipeline up to the handler.
    pub fn handle(&mut self, req: &mut Request) -> (Pending, Step) {
        let now = clock::now();
        if let Some(r) = self.lifecycle(req, now) {
            return (Pending::default(), Step::Done(r));
        }
        let Some(st) = self.state.as_ref() else {
            return (Pending::default(), Step::Done(Err(ApiError::sealed())));
        };
        if req.op == Operation::List && !req.path.ends_with('/') {
            req.path.push('/');
        }
        let route = route(st, &req.path);
        let (mount, mount_type, rest) = route.clone().unwrap_or_default();
        let unauthenticated = route.is_some() && unauthenticated(&mount_type, &rest, req.op);

        // Authenticate.
        let mut caller = None;
        if !unauthenticated {
            match req.token.as_deref().and_then(|id| st.tokens.get(id)).filter(|t| !t.expired(now)) {
                Some(t) => caller = Some(t.clone()),
                None => {
                    let pending = self.audit_request(req, None, &mount_type);
                    return (pending, Step::Done(Err(ApiError::denied())));
                }
            }
        }
        let st = self.state.as_mut().expect("unsealed");
        if let Some(t) = &caller {
            if t.num_uses > 0 {
                let e = st.tokens.get_mut(&t.id).expect("present");
                e.num_uses -= 1;
                if e.num_uses == 0 {
                    token::revoke_tree(st, &t.id);
                }
            }
        }

        // Create or update?
        if req.method == Method::Write {
            req.op = match route.as_ref().and_then(|(m, ty, rest)| exists(st, m, ty, rest)) {
                Some(false) => Operation::Create,
                _ => Operation::Update,
            };
        }

        let acl = match &caller {
            Some(t) => self.acl_for(t),
            None => Acl::default(),
        };
        if !unauthenticated && !acl.allows(&req.path, req.op, sudo_required(&req.path, req.op)) {
            let pending = self.audit_request(req, caller.as_ref(), &mount_type);
            return (pending, Step::Done(Err(ApiError::denied())));
        }
        let mut pending = self.audit_request(req, caller.as_ref(), &mount_type);
        if pending.audit.as_ref().is_some_and(AuditRecord::is_failed) {
            // Vault serves no request it cannot audit.
            return (
                pending,
                Step::Done(Err(ApiError::internal("internal error: the audit log could not be written"))),
            );
        }
        pending.persist = req.op.writes() || caller.as_ref().is_some_and(|t| t.num_uses > 0);
        if route.is_none() {
            return (pending, Step::Done(Err(ApiError::unsupported_path(&req.path))));
        }
        let ttls = mount_ttls(self.state.as_ref().expect("unsealed"), &mount);
        let cx = Ctx { caller, acl, mount, mount_type, rest, now, ttls };
        let step = self.dispatch(&cx, req);
        (pending, step)
    }

    fn dispatch(&mut self, cx: &Ctx, req: &Request) -> Step {
        if cx.mount_type == "system" {
            return match sys::handle(self, cx, req) {
                Ok(s) => s,
                Err(e) => Step::Done(Err(e)),
            };
        }
        let st = self.state.as_mut().expect("unsealed");
        let done = |r| Step::Done(r);
        match cx.mount_type.as_str() {
            "token" => done(token::handle(st, cx, req)),
            "approle" => done(approle::handle(st, cx, req)),
            "database" => database::handle(st, cx, req).unwrap_or_else(|e| Step::Done(Err(e))),
            _ => {
                let Some(m) = st.mounts.get_mut(&cx.mount) else {
                    return done(Err(ApiError::unsupported_path(&req.path)));
                };
                match &mut m.engine {
                    Engine::Kv(store) => done(kv::handle(store, cx, req)),
                    Engine::Pki(store) => done(pki::handle(store, cx, req)),
                    _ => done(Err(ApiError::unsupported_path(&req.path))),
                }
            }
        }
    }

    /// Finish a [`Job`] the server ran outside the lock.
    pub fn after_job(&mut self, then: database::Then, outcomes: Vec<std::result::Result<(), String>>) -> Result<Reply> {
        let Some(st) = self.state.as_mut() else { return Err(ApiError::sealed()) };
        database::after(st, then, outcomes, clock::now())
    }

    fn audit_request(&mut self, req: &Request, caller: Option<&TokenEntry>, mount_type: &str) -> Pending {
        let mut pending = Pending { mount_type: mount_type.to_string(), ..Default::default() };
        let Some(st) = self.state.as_ref() else { return pending };
        let mut paths: Vec<String> = st.audits.values().map(|d| d.file_path.clone()).collect();
        if let Some(p) = &self.opts.audit_file {
            paths.push(p.display().to_string());
        }
        if paths.is_empty() {
            return pending;
        }
        let rec = AuditRecord::new(st.hmac_key.as_bytes(), paths, req, caller, mount_type);
        // A request that cannot be audited is not served, as in Vault.
        if let Err(e) = rec.write_request() {
            eprintln!("audit: {e}");
            pending.audit = Some(rec.failed());
            return pending;
        }
        pending.audit = Some(rec);
        pending
    }

    /// Audit the response, persist, and render the HTTP answer.
    pub fn finish(&mut self, req: &Request, pending: Pending, mut result: Result<Reply>) -> Answer {
        if pending.audit.as_ref().is_some_and(AuditRecord::is_failed) {
            result = Err(ApiError::internal("internal error: the audit log could not be written"));
        }
        if result.is_ok() && pending.persist {
            if let Err(e) = self.persist() {
                eprintln!("persist: {e}");
                result = Err(ApiError::internal("internal error: the state could not be saved"));
            }
        }
        if let (Some(rec), Some(st)) = (&pending.audit, &self.state) {
            if let Err(e) = rec.write_response(st.hmac_key.as_bytes(), &result) {
                eprintln!("audit: {e}");
            }
        }
        render(&req.id, &pending.mount_type, result)
    }

    /// `sys/init`, `sys/seal-status`, `sys/unseal`, `sys/health`,
    /// `sys/leader`: answered whether sealed or not, never audited (they
    /// carry unseal keys and the root token).
    fn lifecycle(&mut self, req: &Request, now: u64) -> Option<Result<Reply>> {
        let write = req.method == Method::Write;
        Some(match req.path.trim_end_matches('/') {
            "sys/init" if write => self.init(req, now),
            "sys/init" if req.method == Method::Read => {
                Ok(Reply::Raw { status: 200, body: json!({ "initialized": self.seal.initialized() }) })
            }
            "sys/seal-status" if req.method == Method::Read => Ok(Reply::Raw { status: 200, body: self.seal_status() }),
            "sys/unseal" if write => self.unseal(req),
            "sys/health" if matches!(req.method, Method::Read | Method::Head) => Ok(self.health(req, now)),
            "sys/init" | "sys/seal-status" | "sys/unseal" | "sys/health" => Err(ApiError::unsupported_op()),
            _ => return None,
        })
    }

    fn init(&mut self, req: &Request, now: u64) -> Result<Reply> {
        if self.seal.initialized() {
            return Err(ApiError::bad("Vault is already initialized"));
        }
        if req.data.get("pgp_keys").is_some_and(|v| !v.is_null())
            || req.data.get("root_token_pgp_key").is_some_and(|v| !v.is_null() && v != "")
        {
            return Err(ApiError::bad("vault-lite does not support PGP-encrypted unseal keys"));
        }
        let shares = get_u64(&req.data, "secret_shares")?.unwrap_or(0);
        let threshold = get_u64(&req.data, "secret_threshold")?.unwrap_or(0);
        let out = self.seal.init(shares, threshold).map_err(ApiError::bad)?;
        let mut st = State::new();
        let root = token::issue(
            &mut st,
            TokenSpec {
                policies: vec!["root".into()],
                display_name: "root".into(),
                path: "auth/token/root".into(),
                ..Default::default()
            },
            now,
        );
        self.state = Some(st);
        let persisted = self.persist();
        // Vault comes out of init sealed.
        self.state = None;
        self.seal.key = None;
        persisted.map_err(ApiError::internal)?;
        eprintln!("initialized with {shares} key shares and a key threshold of {threshold}");
        Ok(Reply::Raw {
            status: 200,
            body: json!({
                "keys": out.keys.iter().map(|k| seal::hex(k)).collect::<Vec<_>>(),
                "keys_base64": out.keys.iter().map(|k| seal::b64(k)).collect::<Vec<_>>(),
                "root_token": root.id,
            }),
        })
    }

    fn unseal(&mut self, req: &Request) -> Result<Reply> {
        if !self.seal.initialized() {
            return Err(ApiError::bad("Vault is not initialized"));
        }
        if get_bool(&req.data, "reset")?.unwrap_or(false) {
            self.seal.progress.clear();
            return Ok(Reply::Raw { status: 200, body: self.seal_status() });
        }
        let key = get_str(&req.data, "key")?
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::bad("'key' must be specified in request body as JSON, or 'reset' set to true"))?;
        if !self.seal.sealed() {
            return Ok(Reply::Raw { status: 200, body: self.seal_status() });
        }
        let share =
            seal::decode_key(&key).ok_or_else(|| ApiError::bad("'key' must be a valid hex or base64 string"))?;
        if let Some(root_key) = self.seal.add_share(share).map_err(ApiError::bad)? {
            let plain = barrier::open(&root_key, &self.seal.blob)
                .map_err(|e| ApiError::bad(format!("Error unsealing: {e}")))?;
            let st: State = serde_json::from_slice(&plain)
                .map_err(|e| ApiError::internal(format!("the stored state is unreadable: {e}")))?;
            self.seal.key = Some(root_key);
            self.state = Some(st);
            self.policies_changed();
            self.wake.notify_one();
            eprintln!("unsealed");
        }
        Ok(Reply::Raw { status: 200, body: self.seal_status() })
    }

    /// Seal: save, then drop the key and the plaintext.
    pub fn seal_now(&mut self) -> std::result::Result<(), String> {
        self.persist()?;
        self.state = None;
        self.seal.key = None;
        self.parsed.clear();
        eprintln!("sealed");
        Ok(())
    }

    pub fn seal_status(&self) -> Value {
        let c = self.seal.config;
        let mut v = json!({
            "type": "shamir",
            "initialized": self.seal.initialized(),
            "sealed": self.seal.sealed(),
            "t": c.map(|c| c.secret_threshold).unwrap_or(0),
            "n": c.map(|c| c.secret_shares).unwrap_or(0),
            "progress": self.seal.progress.len(),
            "nonce": self.seal.nonce,
            "version": VERSION,
            "build_date": "2024-06-10T10:11:34Z",
            "migration": false,
            "recovery_seal": false,
            "storage_type": if self.opts.state_file.is_some() { "file" } else { "inmem" },
        });
        if let Some(st) = &self.state {
            v["cluster_name"] = json!("vault-lite");
            v["cluster_id"] = json!(st.cluster_id);
        }
        v
    }

    fn health(&self, req: &Request, now: u64) -> Reply {
        let code = |name: &str, default: u16| -> u16 {
            get_u64(&req.data, name).ok().flatten().and_then(|c| u16::try_from(c).ok()).unwrap_or(default)
        };
        let status = if !self.seal.initialized() {
            code("uninitcode", 501)
        } else if self.seal.sealed() {
            code("sealedcode", 503)
        } else {
            code("activecode", 200)
        };
        let mut body = json!({
            "initialized": self.seal.initialized(),
            "sealed": self.seal.sealed(),
            "standby": false,
            "performance_standby": false,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": clock::secs(now),
            "version": VERSION,
            "enterprise": false,
            "echo_duration_ms": 0,
            "clock_skew_ms": 0,
            "replication_primary_canary_age_ms": 0,
            "removed_from_cluster": false,
        });
        if let Some(st) = &self.state {
            body["cluster_name"] = json!("vault-lite");
            body["cluster_id"] = json!(st.cluster_id);
        }
        if req.method == Method::Head {
            return Reply::Raw { status, body: Value::Null };
        }
        Reply::Raw { status, body }
    }
}

/// (mount path, mount type, rest) for a request path.
fn route(st: &State, path: &str) -> Option<(String, String, String)> {
    if let Some(rest) = path.strip_prefix("sys/") {
        return Some(("sys/".into(), "system".into(), rest.into()));
    }
    if let Some(p) = path.strip_prefix("auth/") {
        let m = st.auth_for(p)?;
        let rest = p.strip_prefix(m.as_str()).unwrap_or("").to_string();
        return Some((format!("auth/{m}"), st.auths[&m].kind.clone(), rest));
    }
    let m = st.mount_for(path)?;
    let rest = path.strip_prefix(m.as_str()).unwrap_or("").to_string();
    Some((m.clone(), st.mounts[&m].kind.clone(), rest))
}

/// Vault's unauthenticated paths (AppRole login, the CA certificate).
fn unauthenticated(mount_type: &str, rest: &str, op: Operation) -> bool {
    match mount_type {
        "approle" => rest == "login",
        "pki" => {
            op == Operation::Read
                && (matches!(rest, "ca" | "ca/pem" | "ca_chain" | "cert/ca_chain" | "cert/ca")
                    || (rest.starts_with("cert/") && !rest.ends_with('/')))
        }
        _ => false,
    }
}

/// Does the object a write names exist? `None` where Vault has no
/// existence check (the write is an update).
fn exists(st: &State, mount: &str, mount_type: &str, rest: &str) -> Option<bool> {
    match mount_type {
        "system" => rest
            .strip_prefix("policies/acl/")
            .or_else(|| rest.strip_prefix("policy/"))
            .map(|name| st.policies.contains_key(name) || name == "root"),
        "approle" => rest
            .strip_prefix("role/")
            .filter(|n| !n.contains('/'))
            .map(|n| matches!(st.auths.get(mount.trim_start_matches("auth/")).map(|m| &m.engine), Some(Engine::AppRole(a)) if a.roles.contains_key(n))),
        _ => match &st.mounts.get(mount)?.engine {
            Engine::Kv(store) => Some(store.exists(rest)),
            Engine::Pki(store) => store.exists(rest),
            Engine::Database(store) => store.exists(rest),
            _ => None,
        },
    }
}

pub fn render(request_id: &str, mount_type: &str, result: Result<Reply>) -> Answer {
    let json = |status: u16, v: &Value| Answer {
        status,
        content_type: "application/json",
        body: serde_json::to_vec(v).unwrap_or_default(),
    };
    match result {
        Ok(Reply::Empty) => Answer { status: 204, content_type: "application/json", body: vec![] },
        Ok(Reply::Raw { status, body: Value::Null }) => {
            Answer { status, content_type: "application/json", body: vec![] }
        }
        Ok(Reply::Raw { status, body }) => json(status, &body),
        Ok(Reply::Text { content_type, body }) => Answer { status: 200, content_type, body: body.into_bytes() },
        Ok(Reply::Secret(s)) => json(200, &s.envelope(request_id, mount_type)),
        Err(ApiError { status, data: Some(d), .. }) => {
            json(status, &Secret { data: Some(d), ..Default::default() }.envelope(request_id, mount_type))
        }
        Err(e) => json(e.status, &e.body()),
    }
}

/// Used by handlers that need the mount's TTL limits.
pub fn mount_ttls(st: &State, mount: &str) -> (u64, u64) {
    st.mounts
        .get(mount)
        .map(|m| (m.default_ttl(), m.max_ttl()))
        .unwrap_or((crate::state::SYSTEM_MAX_TTL, crate::state::SYSTEM_MAX_TTL))
}
