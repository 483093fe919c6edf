//! The token auth method: token entries (policies, TTL, parent), issuing,
//! looking up, renewing and revoking them, and `auth/token/*`. Revoking a
//! token revokes its children (unless they are orphans) and every lease it
//! created; an expired token is refused at once, before the expiry sweep
//! removes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{
    get_bool, get_list, get_str, get_string_map, get_ttl, get_u64, ApiError, Reply, Request, Result, Secret,
};
use crate::clock::{self, NANOS};
use crate::core::Ctx;
use crate::policy::Caps;
use crate::random;
use crate::state::{State, SYSTEM_MAX_TTL};

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct TokenEntry {
    pub id: String,
    pub accessor: String,
    pub policies: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub display_name: String,
    /// The path that created it (`auth/token/create`, `auth/approle/login`).
    pub path: String,
    /// The parent token's id; `None` for orphans and the root token.
    pub parent: Option<String>,
    pub orphan: bool,
    /// Nanoseconds since the epoch.
    pub issued: u64,
    pub creation_ttl: u64,
    /// `None` never expires (root tokens).
    pub expires: Option<u64>,
    /// The latest any renewal may push `expires` to.
    pub max_expires: Option<u64>,
    pub explicit_max_ttl: u64,
    pub renewable: bool,
    /// Uses left; 0 is unlimited.
    pub num_uses: u64,
    pub role: Option<String>,
}

impl TokenEntry {
    pub fn ttl(&self, now: u64) -> u64 {
        self.expires.map(|e| e.saturating_sub(now) / NANOS).unwrap_or(0)
    }

    pub fn expired(&self, now: u64) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }

    /// The `auth` block of a response that issued or renewed this token.
    pub fn auth(&self, now: u64) -> Value {
        json!({
            "client_token": self.id,
            "accessor": self.accessor,
            "policies": self.policies,
            "token_policies": self.policies,
            "metadata": if self.meta.is_empty() { Value::Null } else { json!(self.meta) },
            "lease_duration": self.ttl(now),
            "renewable": self.renewable,
            "entity_id": "",
            "token_type": "service",
            "orphan": self.orphan,
            "mfa_requirement": null,
            "num_uses": self.num_uses,
        })
    }

    /// The `data` of a lookup.
    pub fn lookup(&self, now: u64, show_id: bool) -> Value {
        json!({
            "accessor": self.accessor,
            "creation_time": clock::secs(self.issued),
            "creation_ttl": self.creation_ttl,
            "display_name": self.display_name,
            "entity_id": "",
            "expire_time": self.expires.map(clock::rfc3339),
            "explicit_max_ttl": self.explicit_max_ttl,
            "id": if show_id { self.id.as_str() } else { "" },
            "issue_time": clock::rfc3339(self.issued),
            "meta": if self.meta.is_empty() { Value::Null } else { json!(self.meta) },
            "num_uses": self.num_uses,
            "orphan": self.orphan,
            "path": self.path,
            "policies": self.policies,
            "renewable": self.renewable,
            "role": self.role.clone().unwrap_or_default(),
            "ttl": self.ttl(now),
            "type": "service",
        })
    }
}

/// What a new token should be.
#[derive(Default)]
pub struct TokenSpec {
    pub policies: Vec<String>,
    pub no_default_policy: bool,
    pub meta: BTreeMap<String, String>,
    pub display_name: String,
    pub path: String,
    pub parent: Option<String>,
    pub ttl: Option<u64>,
    pub explicit_max_ttl: u64,
    pub renewable: bool,
    pub num_uses: u64,
    pub role: Option<String>,
}

/// Policies as Vault stores them: sorted, unique, `default` added unless
/// refused, and nothing else beside `root`.
pub fn sanitize_policies(mut p: Vec<String>, add_default: bool) -> Vec<String> {
    if p.iter().any(|x| x == "root") {
        return vec!["root".into()];
    }
    if add_default {
        p.push("default".into());
    }
    p.sort();
    p.dedup();
    p.retain(|x| !x.is_empty());
    p
}

pub fn issue(st: &mut State, spec: TokenSpec, now: u64) -> TokenEntry {
    let policies = sanitize_policies(spec.policies, !spec.no_default_policy);
    let root = policies.iter().any(|p| p == "root");
    let max = if spec.explicit_max_ttl > 0 { spec.explicit_max_ttl.min(SYSTEM_MAX_TTL) } else { SYSTEM_MAX_TTL };
    let (ttl, expires, max_expires) = match spec.ttl {
        None | Some(0) if root => (0, None, None),
        t => {
            let ttl = t.filter(|t| *t > 0).unwrap_or(SYSTEM_MAX_TTL).min(max);
            (ttl, Some(now + ttl * NANOS), Some(now + max * NANOS))
        }
    };
    let entry = TokenEntry {
        id: format!("hvs.{}", random::base62(24)),
        accessor: random::base62(24),
        policies,
        meta: spec.meta,
        display_name: spec.display_name,
        path: spec.path,
        orphan: spec.parent.is_none(),
        parent: spec.parent,
        issued: now,
        creation_ttl: ttl,
        expires,
        max_expires,
        explicit_max_ttl: spec.explicit_max_ttl,
        renewable: spec.renewable && expires.is_some(),
        num_uses: spec.num_uses,
        role: spec.role,
    };
    st.tokens.insert(entry.id.clone(), entry.clone());
    entry
}

/// Revoke a token and its non-orphan descendants; their leases are marked
/// for revocation. Returns how many tokens went.
pub fn revoke_tree(st: &mut State, id: &str) -> usize {
    let mut doomed = vec![id.to_string()];
    let mut i = 0;
    while i < doomed.len() {
        let parent = doomed[i].clone();
        doomed.extend(st.tokens.values().filter(|t| t.parent.as_deref() == Some(&parent)).map(|t| t.id.clone()));
        i += 1;
    }
    let mut n = 0;
    for id in doomed {
        if let Some(t) = st.tokens.remove(&id) {
            n += 1;
            for lease in st.leases.values_mut().filter(|l| l.owner == t.accessor) {
                lease.revoke_pending = true;
            }
        }
    }
    n
}

fn by_accessor<'a>(st: &'a State, accessor: &str) -> Option<&'a TokenEntry> {
    st.tokens.values().find(|t| t.accessor == accessor)
}

/// Renew `id` by `increment` seconds (0: its original TTL), never past its
/// maximum. Returns the warnings to pass on.
pub fn renew(st: &mut State, id: &str, increment: u64, now: u64) -> Result<Vec<String>> {
    let t = st.tokens.get_mut(id).filter(|t| !t.expired(now)).ok_or_else(|| ApiError::bad("invalid token"))?;
    if t.expires.is_none() {
        return Ok(vec![]);
    }
    if !t.renewable {
        return Err(ApiError::bad("lease is not renewable"));
    }
    let want = if increment > 0 { increment } else { t.creation_ttl };
    let mut new = now + want * NANOS;
    let mut warnings = vec![];
    if let Some(max) = t.max_expires {
        if new > max {
            new = max;
            warnings.push(format!(
                "TTL of \"{want}s\" exceeded the effective max_ttl of \"{}s\"; TTL value is capped accordingly",
                max.saturating_sub(now) / NANOS
            ));
        }
    }
    t.expires = Some(new);
    Ok(warnings)
}

fn caller(cx: &Ctx) -> Result<&TokenEntry> {
    cx.caller.as_ref().ok_or_else(ApiError::denied)
}

fn token_arg(req: &Request) -> Result<String> {
    get_str(&req.data, "token")?.filter(|t| !t.is_empty()).ok_or_else(|| ApiError::bad("missing token to look up"))
}

/// `auth/token/<rest>`.
pub fn handle(st: &mut State, cx: &Ctx, req: &Request) -> Result<Reply> {
    let now = cx.now;
    let write = req.op.writes();
    match cx.rest.as_str() {
        "create" | "create-orphan" if write => create(st, cx, req),
        "lookup-self" => {
            let t = caller(cx)?;
            let t = st.tokens.get(&t.id).unwrap_or(t);
            Ok(Secret::data(t.lookup(now, true)))
        }
        "lookup" if write => {
            let id = token_arg(req)?;
            // Vault answers an unknown token with 403 "bad token".
            let t = st.tokens.get(&id).filter(|t| !t.expired(now)).ok_or_else(|| ApiError::new(403, "bad token"))?;
            Ok(Secret::data(t.lookup(now, true)))
        }
        "lookup-accessor" if write => {
            let a = get_str(&req.data, "accessor")?.unwrap_or_default();
            let t = by_accessor(st, &a).filter(|t| !t.expired(now)).ok_or_else(|| ApiError::bad("invalid accessor"))?;
            Ok(Secret::data(t.lookup(now, false)))
        }
        "renew-self" | "renew" if write => {
            let id = if cx.rest == "renew" { token_arg(req)? } else { caller(cx)?.id.clone() };
            let warnings = renew(st, &id, get_ttl(&req.data, "increment")?.unwrap_or(0), now)?;
            let t = &st.tokens[&id];
            Ok(Reply::Secret(Secret { auth: Some(t.auth(now)), warnings, ..Default::default() }))
        }
        "revoke-self" if write => {
            revoke_tree(st, &caller(cx)?.id);
            Ok(Reply::Empty)
        }
        "revoke" if write => {
            revoke_tree(st, &token_arg(req)?);
            Ok(Reply::Empty)
        }
        "revoke-accessor" if write => {
            let a = get_str(&req.data, "accessor")?.unwrap_or_default();
            let id = by_accessor(st, &a).map(|t| t.id.clone()).ok_or_else(|| ApiError::bad("invalid accessor"))?;
            revoke_tree(st, &id);
            Ok(Reply::Empty)
        }
        "revoke-orphan" if write => {
            let id = token_arg(req)?;
            if st.tokens.remove(&id).is_some() {
                for t in st.tokens.values_mut().filter(|t| t.parent.as_deref() == Some(&id)) {
                    t.parent = None;
                    t.orphan = true;
                }
            }
            Ok(Reply::Empty)
        }
        "accessors" | "accessors/" if req.op == crate::api::Operation::List => {
            Ok(Secret::keys(st.tokens.values().map(|t| t.accessor.clone()).collect()))
        }
        "create" | "create-orphan" | "lookup" | "lookup-accessor" | "renew-self" | "renew" | "revoke-self"
        | "revoke" | "revoke-accessor" | "revoke-orphan" => Err(ApiError::unsupported_op()),
        _ => Err(ApiError::unsupported_path(&req.path)),
    }
}

fn create(st: &mut State, cx: &Ctx, req: &Request) -> Result<Reply> {
    let parent = caller(cx)?.clone();
    let d = &req.data;
    let orphan = cx.rest == "create-orphan" || get_bool(d, "no_parent")?.unwrap_or(false);
    let privileged = parent.is_root() || cx.acl.capabilities("auth/token/create").has(Caps::SUDO);
    if cx.rest == "create" && orphan && !privileged {
        return Err(ApiError::bad("root or sudo privileges required to create orphan token"));
    }
    let requested = get_list(d, "policies")?;
    let policies = requested.unwrap_or_else(|| parent.policies.clone());
    if !parent.is_root() {
        if policies.iter().any(|p| p == "root") {
            return Err(ApiError::bad("root tokens may not be created by a non-root token"));
        }
        if !privileged && !policies.iter().all(|p| p == "default" || parent.policies.contains(p)) {
            return Err(ApiError::bad("child policies must be subset of parent"));
        }
    }
    if let Some(t) = get_str(d, "type")? {
        if t != "service" && t != "default" {
            return Err(ApiError::bad(format!("vault-lite issues only service tokens, not {t:?}")));
        }
    }
    let display = get_str(d, "display_name")?.filter(|s| !s.is_empty());
    let spec = TokenSpec {
        policies,
        no_default_policy: get_bool(d, "no_default_policy")?.unwrap_or(false),
        meta: get_string_map(d, "meta")?.unwrap_or_default(),
        display_name: display.map(|s| format!("token-{s}")).unwrap_or_else(|| "token".into()),
        path: format!("auth/token/{}", cx.rest),
        parent: if orphan { None } else { Some(parent.id.clone()) },
        ttl: get_ttl(d, "ttl")?.or(get_ttl(d, "lease")?),
        explicit_max_ttl: get_ttl(d, "explicit_max_ttl")?.unwrap_or(0),
        renewable: get_bool(d, "renewable")?.unwrap_or(true),
        num_uses: get_u64(d, "num_uses")?.unwrap_or(0),
        role: None,
    };
    let t = issue(st, spec, cx.now);
    Ok(Reply::Secret(Secret { auth: Some(t.auth(cx.now)), ..Default::default() }))
}
