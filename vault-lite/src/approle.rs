//! The AppRole auth method: roles (token policies and TTLs, secret ID TTL
//! and uses), role IDs, secret IDs, and `login`, which trades a role ID and
//! a secret ID for an orphan service token. **No I/O.**

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{
    get_bool, get_list, get_str, get_string_map, get_ttl, get_u64, ApiError, Operation, Reply, Request, Result, Secret,
};
use crate::clock::{self, NANOS};
use crate::core::Ctx;
use crate::random;
use crate::state::{Engine, State};
use crate::token::{self, TokenSpec};

#[derive(Serialize, Deserialize, Default)]
pub struct AppRoleStore {
    pub roles: BTreeMap<String, Role>,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct Role {
    pub role_id: String,
    pub bind_secret_id: bool,
    pub token_policies: Vec<String>,
    pub token_ttl: u64,
    pub token_max_ttl: u64,
    pub token_num_uses: u64,
    pub token_no_default_policy: bool,
    pub secret_id_ttl: u64,
    pub secret_id_num_uses: u64,
    /// Secret IDs by value.
    pub secret_ids: BTreeMap<String, SecretId>,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct SecretId {
    pub accessor: String,
    pub created: u64,
    pub expires: Option<u64>,
    /// Uses left; 0 is unlimited.
    pub uses_left: u64,
    pub metadata: BTreeMap<String, String>,
}

impl Default for Role {
    fn default() -> Role {
        Role {
            role_id: random::uuid(),
            bind_secret_id: true,
            token_policies: vec![],
            token_ttl: 0,
            token_max_ttl: 0,
            token_num_uses: 0,
            token_no_default_policy: false,
            secret_id_ttl: 0,
            secret_id_num_uses: 0,
            secret_ids: BTreeMap::new(),
        }
    }
}

impl SecretId {
    fn describe(&self, role: &Role) -> serde_json::Value {
        json!({
            "secret_id_accessor": self.accessor,
            "creation_time": clock::rfc3339(self.created),
            "expiration_time": self.expires.map(clock::rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "last_updated_time": clock::rfc3339(self.created),
            "metadata": self.metadata,
            "secret_id_num_uses": self.uses_left,
            "secret_id_ttl": role.secret_id_ttl,
            "cidr_list": [],
            "token_bound_cidrs": [],
        })
    }
}

fn store<'a>(st: &'a mut State, mount: &str) -> Result<&'a mut AppRoleStore> {
    match st.auths.get_mut(mount.trim_start_matches("auth/")).map(|m| &mut m.engine) {
        Some(Engine::AppRole(s)) => Ok(s),
        _ => Err(ApiError::unsupported_path(mount)),
    }
}

pub fn handle(st: &mut State, cx: &Ctx, req: &Request) -> Result<Reply> {
    let rest = cx.rest.as_str();
    let op = req.op;
    let write = matches!(op, Operation::Create | Operation::Update);
    if rest == "login" {
        return if write { login(st, cx, req) } else { Err(ApiError::unsupported_op()) };
    }
    let s = store(st, &cx.mount)?;
    if rest == "role/" {
        if op != Operation::List {
            return Err(ApiError::unsupported_op());
        }
        if s.roles.is_empty() {
            return Err(ApiError::not_found());
        }
        return Ok(Secret::keys(s.roles.keys().cloned().collect()));
    }
    let Some(rest) = rest.strip_prefix("role/") else { return Err(ApiError::unsupported_path(&req.path)) };
    let (name, sub) = rest.split_once('/').unwrap_or((rest, ""));
    match (sub, op) {
        ("", Operation::Read) => {
            let r = s.roles.get(name).ok_or_else(ApiError::not_found)?;
            Ok(Secret::data(json!({
                "bind_secret_id": r.bind_secret_id,
                "secret_id_bound_cidrs": null,
                "secret_id_num_uses": r.secret_id_num_uses,
                "secret_id_ttl": r.secret_id_ttl,
                "local_secret_ids": false,
                "token_ttl": r.token_ttl,
                "token_max_ttl": r.token_max_ttl,
                "token_policies": r.token_policies,
                "policies": r.token_policies,
                "token_bound_cidrs": [],
                "token_explicit_max_ttl": 0,
                "token_no_default_policy": r.token_no_default_policy,
                "token_num_uses": r.token_num_uses,
                "token_period": 0,
                "token_type": "default",
            })))
        }
        ("", Operation::Create | Operation::Update) => {
            let d = &req.data;
            let r = s.roles.entry(name.to_string()).or_default();
            if let Some(v) = get_bool(d, "bind_secret_id")? {
                r.bind_secret_id = v;
            }
            if let Some(v) = get_list(d, "token_policies")?.or(get_list(d, "policies")?) {
                r.token_policies = v;
            }
            if let Some(v) = get_ttl(d, "token_ttl")? {
                r.token_ttl = v;
            }
            if let Some(v) = get_ttl(d, "token_max_ttl")? {
                r.token_max_ttl = v;
            }
            if let Some(v) = get_u64(d, "token_num_uses")? {
                r.token_num_uses = v;
            }
            if let Some(v) = get_bool(d, "token_no_default_policy")? {
                r.token_no_default_policy = v;
            }
            if let Some(v) = get_ttl(d, "secret_id_ttl")? {
                r.secret_id_ttl = v;
            }
            if let Some(v) = get_u64(d, "secret_id_num_uses")? {
                r.secret_id_num_uses = v;
            }
            if let Some(t) = get_str(d, "token_type")? {
                if !matches!(t.as_str(), "service" | "default" | "") {
                    return Err(ApiError::bad(format!("vault-lite issues only service tokens, not {t:?}")));
                }
            }
            if r.token_max_ttl > 0 && r.token_ttl > r.token_max_ttl {
                return Err(ApiError::bad("\"token_ttl\" value must be less than \"token_max_ttl\" value"));
            }
            Ok(Reply::Empty)
        }
        ("", Operation::Delete) => {
            s.roles.remove(name);
            Ok(Reply::Empty)
        }
        ("role-id", Operation::Read) => {
            let r = s.roles.get(name).ok_or_else(ApiError::not_found)?;
            Ok(Secret::data(json!({ "role_id": r.role_id })))
        }
        ("role-id", Operation::Create | Operation::Update) => {
            let id = get_str(&req.data, "role_id")?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| ApiError::bad("missing role_id"))?;
            let r = s.roles.get_mut(name).ok_or_else(|| ApiError::bad(format!("role {name:?} does not exist")))?;
            r.role_id = id;
            Ok(Reply::Empty)
        }
        ("secret-id" | "custom-secret-id", Operation::Create | Operation::Update) => {
            let r = s.roles.get_mut(name).ok_or_else(|| ApiError::bad(format!("role {name:?} does not exist")))?;
            let value = match sub {
                "custom-secret-id" => {
                    get_str(&req.data, "secret_id")?.ok_or_else(|| ApiError::bad("missing secret_id"))?
                }
                _ => random::uuid(),
            };
            let ttl = get_ttl(&req.data, "ttl")?.filter(|t| *t > 0).unwrap_or(r.secret_id_ttl);
            let uses = get_u64(&req.data, "num_uses")?.unwrap_or(r.secret_id_num_uses);
            let sid = SecretId {
                accessor: random::uuid(),
                created: cx.now,
                expires: (ttl > 0).then(|| cx.now + ttl * NANOS),
                uses_left: uses,
                metadata: get_string_map(&req.data, "metadata")?.unwrap_or_default(),
            };
            let accessor = sid.accessor.clone();
            r.secret_ids.insert(value.clone(), sid);
            Ok(Secret::data(json!({
                "secret_id": value,
                "secret_id_accessor": accessor,
                "secret_id_ttl": ttl,
                "secret_id_num_uses": uses,
            })))
        }
        ("secret-id/" | "secret-id", Operation::List) => {
            let r = s.roles.get(name).ok_or_else(ApiError::not_found)?;
            if r.secret_ids.is_empty() {
                return Err(ApiError::not_found());
            }
            Ok(Secret::keys(r.secret_ids.values().map(|s| s.accessor.clone()).collect()))
        }
        ("secret-id/lookup" | "secret-id/destroy", Operation::Create | Operation::Update | Operation::Delete) => {
            let r = s.roles.get_mut(name).ok_or_else(|| ApiError::bad(format!("role {name:?} does not exist")))?;
            let value = get_str(&req.data, "secret_id")?.unwrap_or_default();
            if sub.ends_with("destroy") {
                r.secret_ids.remove(&value);
                return Ok(Reply::Empty);
            }
            let role = r.clone();
            match r.secret_ids.get(&value).filter(|s| s.expires.is_none_or(|e| e > cx.now)) {
                Some(sid) => Ok(Secret::data(sid.describe(&role))),
                None => Ok(Reply::Empty),
            }
        }
        _ => Err(ApiError::unsupported_path(&req.path)),
    }
}

fn login(st: &mut State, cx: &Ctx, req: &Request) -> Result<Reply> {
    let invalid = || ApiError::bad("invalid role or secret ID");
    let role_id =
        get_str(&req.data, "role_id")?.filter(|s| !s.is_empty()).ok_or_else(|| ApiError::bad("missing role_id"))?;
    let secret_id = get_str(&req.data, "secret_id")?.unwrap_or_default();
    let now = cx.now;
    let s = store(st, &cx.mount)?;
    let (name, role) = s.roles.iter_mut().find(|(_, r)| r.role_id == role_id).ok_or_else(invalid)?;
    if role.bind_secret_id {
        if secret_id.is_empty() {
            return Err(ApiError::bad("missing secret_id"));
        }
        let sid = role.secret_ids.get_mut(&secret_id).ok_or_else(invalid)?;
        if sid.expires.is_some_and(|e| e <= now) {
            role.secret_ids.remove(&secret_id);
            return Err(invalid());
        }
        if sid.uses_left > 0 {
            sid.uses_left -= 1;
            if sid.uses_left == 0 {
                role.secret_ids.remove(&secret_id);
            }
        }
    }
    let (name, role) = (name.clone(), role.clone());
    let ttl = if role.token_ttl > 0 { Some(role.token_ttl) } else { None };
    let t = token::issue(
        st,
        TokenSpec {
            policies: role.token_policies.clone(),
            no_default_policy: role.token_no_default_policy,
            meta: BTreeMap::from([("role_name".to_string(), name)]),
            display_name: "approle".into(),
            path: format!("{}login", cx.mount),
            parent: None,
            ttl,
            explicit_max_ttl: role.token_max_ttl,
            renewable: true,
            num_uses: role.token_num_uses,
            role: None,
        },
        now,
    );
    Ok(Reply::Secret(Secret { auth: Some(t.auth(now)), ..Default::default() }))
}
