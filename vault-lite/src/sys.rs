//! `sys/*` behind the ACL: the mount tables (`sys/mounts`, `sys/auth`,
//! tuning), ACL policies (`sys/policies/acl` and the legacy `sys/policy`),
//! audit devices, `sys/seal`, capabilities, and the lease endpoints (which
//! live in `lease`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::api::{get_bool, get_str, get_ttl, ApiError, Operation, Reply, Request, Result, Secret};
use crate::audit;
use crate::core::{Core, Ctx, Step};
use crate::policy::{self, Acl};
use crate::state::{AuditDevice, Engine, Mount, State};
use crate::{approle, database, kv, lease, token};

fn done(r: Reply) -> Result<Step> {
    Ok(Step::Done(Ok(r)))
}

/// `a/b` → `a/b/`.
fn mount_path(p: &str) -> String {
    format!("{}/", p.trim_matches('/'))
}

pub fn handle(core: &mut Core, cx: &Ctx, req: &Request) -> Result<Step> {
    let rest = cx.rest.as_str();
    let op = req.op;
    let write = matches!(op, Operation::Create | Operation::Update);
    if rest.starts_with("leases/") || rest.starts_with("renew") || rest.starts_with("revoke") {
        let st = core.state.as_mut().expect("unsealed");
        let step = lease::handle(st, cx, req)?;
        core.wake.notify_one();
        return Ok(step);
    }
    if rest == "seal" && write {
        core.seal_now().map_err(ApiError::internal)?;
        return done(Reply::Empty);
    }
    if rest == "capabilities-self" || rest == "capabilities" {
        if !write {
            return Err(ApiError::unsupported_op());
        }
        let acl = if rest == "capabilities" {
            let id = get_str(&req.data, "token")?.unwrap_or_default();
            let t = core.state.as_ref().expect("unsealed").tokens.get(&id).cloned();
            let t = t.ok_or_else(|| ApiError::bad("invalid token"))?;
            core.acl_for(&t)
        } else {
            let t = cx.caller.clone().ok_or_else(ApiError::denied)?;
            core.acl_for(&t)
        };
        return done(capabilities(&acl, req)?);
    }
    if rest == "leader" {
        return done(Reply::Raw {
            status: 200,
            body: json!({
                "ha_enabled": false,
                "is_self": false,
                "active_time": "0001-01-01T00:00:00Z",
                "leader_address": "",
                "leader_cluster_address": "",
                "performance_standby": false,
                "performance_standby_last_remote_wal": 0,
            }),
        });
    }
    let policy_change = rest.starts_with("policies/acl/") || rest.starts_with("policy/");
    let st = core.state.as_mut().expect("unsealed");
    let out = if rest == "mounts" || rest == "mounts/" {
        match op {
            Operation::Read => Ok(list_mounts(&st.mounts, false)),
            _ => Err(ApiError::unsupported_op()),
        }
    } else if let Some(p) = rest.strip_prefix("mounts/") {
        mounts(st, p, req)
    } else if rest == "auth" || rest == "auth/" {
        match op {
            Operation::Read => Ok(list_mounts(&st.auths, true)),
            _ => Err(ApiError::unsupported_op()),
        }
    } else if let Some(p) = rest.strip_prefix("auth/") {
        auth(st, p, req)
    } else if rest == "policies/acl/" || rest == "policies/acl" {
        match op {
            Operation::List => Ok(Secret::keys(policy_names(st))),
            _ => Err(ApiError::unsupported_op()),
        }
    } else if let Some(name) = rest.strip_prefix("policies/acl/") {
        policies(st, name, req, false)
    } else if rest == "policy" || rest == "policy/" {
        match op {
            Operation::Read | Operation::List => {
                let names = policy_names(st);
                Ok(Secret::legacy(json!({ "policies": names, "keys": names })))
            }
            _ => Err(ApiError::unsupported_op()),
        }
    } else if let Some(name) = rest.strip_prefix("policy/") {
        policies(st, name, req, true)
    } else if rest == "audit" || rest == "audit/" {
        match op {
            Operation::Read => {
                let m: Map<String, Value> = st
                    .audits
                    .iter()
                    .map(|(p, d)| {
                        (
                            p.clone(),
                            json!({
                                "type": d.kind,
                                "description": d.description,
                                "options": { "file_path": d.file_path },
                                "path": p,
                                "local": false,
                            }),
                        )
                    })
                    .collect();
                Ok(Secret::legacy(Value::Object(m)))
            }
            _ => Err(ApiError::unsupported_op()),
        }
    } else if let Some(p) = rest.strip_prefix("audit/") {
        audit_device(st, p, req)
    } else if let Some(p) = rest.strip_prefix("audit-hash/") {
        if !write {
            return Err(ApiError::unsupported_op());
        }
        if !st.audits.contains_key(&mount_path(p)) {
            return Err(ApiError::bad("unknown audit backend"));
        }
        let input = get_str(&req.data, "input")?.ok_or_else(|| ApiError::bad("the \"input\" parameter is empty"))?;
        Ok(Secret::legacy(json!({ "hash": audit::hmac(st.hmac_key.as_bytes(), &input) })))
    } else {
        Err(ApiError::unsupported_path(&req.path))
    };
    if policy_change && out.is_ok() {
        core.policies_changed();
    }
    Ok(Step::Done(out))
}

fn list_mounts(table: &BTreeMap<String, Mount>, auth: bool) -> Reply {
    let mut m: Map<String, Value> = table.iter().map(|(p, mt)| (p.clone(), mt.describe(auth))).collect();
    if !auth {
        let sys = Mount::new(
            "system",
            "system endpoints used for control, policy and debugging",
            BTreeMap::new(),
            Engine::Token,
        );
        let mut d = sys.describe(false);
        d["accessor"] = json!("system_vault_lite");
        m.insert("sys/".into(), d);
    }
    Secret::legacy(Value::Object(m))
}

fn policy_names(st: &State) -> Vec<String> {
    let mut names: Vec<String> = st.policies.keys().cloned().collect();
    names.push("root".into());
    names.sort();
    names
}

fn mount_config(m: &Mount) -> Value {
    json!({
        "default_lease_ttl": m.default_lease_ttl,
        "max_lease_ttl": m.max_lease_ttl,
        "force_no_cache": false,
        "description": m.description,
        "options": m.options,
    })
}

fn tune(m: &mut Mount, req: &Request) -> Result<()> {
    if let Some(t) = get_ttl(&req.data, "default_lease_ttl")? {
        m.default_lease_ttl = t;
    }
    if let Some(t) = get_ttl(&req.data, "max_lease_ttl")? {
        m.max_lease_ttl = t;
    }
    if let Some(d) = get_str(&req.data, "description")? {
        m.description = d;
    }
    Ok(())
}

fn overlapping<'a>(table: impl Iterator<Item = &'a String>, path: &str) -> Option<String> {
    table.into_iter().find(|m| m.starts_with(path) || path.starts_with(m.as_str())).cloned()
}

/// `<table>/<path>/tune`: a secrets engine's or an auth method's lease
/// settings, read or changed the same way for both.
fn tune_entry(table: &mut BTreeMap<String, Mount>, p: &str, req: &Request) -> Result<Reply> {
    let m = table.get_mut(&mount_path(p)).ok_or_else(|| ApiError::bad(format!("no mount entry found at {p}")))?;
    match req.op {
        Operation::Read => Ok(Secret::data(mount_config(m))),
        Operation::Create | Operation::Update => tune(m, req).map(|_| Reply::Empty),
        _ => Err(ApiError::unsupported_op()),
    }
}

fn mounts(st: &mut State, p: &str, req: &Request) -> Result<Reply> {
    if let Some(p) = p.strip_suffix("/tune") {
        return tune_entry(&mut st.mounts, p, req);
    }
    let path = mount_path(p);
    match req.op {
        Operation::Read => {
            let m = st.mounts.get(&path).ok_or_else(|| ApiError::bad(format!("no secret engine mount at {path}")))?;
            Ok(Secret::data(m.describe(false)))
        }
        Operation::Create | Operation::Update => {
            for reserved in ["sys/", "auth/", "cubbyhole/", "identity/"] {
                if path.starts_with(reserved) || reserved.starts_with(&path) {
                    return Err(ApiError::bad(format!("cannot mount under reserved path {reserved:?}")));
                }
            }
            if let Some(existing) = overlapping(st.mounts.keys(), &path) {
                return Err(ApiError::bad(format!("path is already in use at {existing}")));
            }
            let kind = get_str(&req.data, "type")?.ok_or_else(|| ApiError::bad("missing type"))?;
            let options: BTreeMap<String, String> = match req.data.get("options") {
                Some(Value::Object(o)) => o
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                    .collect(),
                _ => BTreeMap::new(),
            };
            let description = get_str(&req.data, "description")?.unwrap_or_default();
            let mut m = match kind.as_str() {
                "kv" | "kv-v2" | "generic" => {
                    let mut options = options;
                    if kind == "kv-v2" {
                        options.insert("version".into(), "2".into());
                    }
                    let v2 = options.get("version").is_some_and(|v| v == "2");
                    if !v2 {
                        options.insert("version".into(), "1".into());
                    }
                    Mount::new("kv", &description, options, Engine::Kv(kv::KvStore::new(if v2 { 2 } else { 1 })))
                }
                "pki" => Mount::new("pki", &description, options, Engine::Pki(Box::default())),
                "database" => {
                    Mount::new("database", &description, options, Engine::Database(database::DbStore::default()))
                }
                other => return Err(ApiError::bad(format!("plugin not found in the catalog: {other}"))),
            };
            if let Some(Value::Object(c)) = req.data.get("config") {
                let creq = Request { data: c.clone(), ..clone_request(req) };
                tune(&mut m, &creq)?;
            }
            st.mounts.insert(path, m);
            Ok(Reply::Empty)
        }
        Operation::Delete => {
            if st.mounts.remove(&path).is_some() {
                for l in st.leases.values_mut().filter(|l| l.id.starts_with(&path)) {
                    l.revoke_pending = true;
                }
            }
            Ok(Reply::Empty)
        }
        Operation::List => Err(ApiError::unsupported_op()),
    }
}

fn clone_request(req: &Request) -> Request {
    Request {
        id: req.id.clone(),
        method: req.method,
        op: req.op,
        path: req.path.clone(),
        data: req.data.clone(),
        token: None,
        remote: req.remote,
    }
}

fn auth(st: &mut State, p: &str, req: &Request) -> Result<Reply> {
    if let Some(p) = p.strip_suffix("/tune") {
        return tune_entry(&mut st.auths, p, req);
    }
    let path = mount_path(p);
    match req.op {
        Operation::Read => st.auths.get(&path).map(|m| Secret::data(m.describe(true))).ok_or_else(ApiError::not_found),
        Operation::Create | Operation::Update => {
            if let Some(existing) = overlapping(st.auths.keys(), &path) {
                return Err(ApiError::bad(format!("path is already in use at auth/{existing}")));
            }
            let kind = get_str(&req.data, "type")?.ok_or_else(|| ApiError::bad("missing type"))?;
            if kind != "approle" {
                return Err(ApiError::bad(format!("plugin not found in the catalog: {kind}")));
            }
            let description = get_str(&req.data, "description")?.unwrap_or_default();
            let mut m =
                Mount::new("approle", &description, BTreeMap::new(), Engine::AppRole(approle::AppRoleStore::default()));
            if let Some(Value::Object(c)) = req.data.get("config") {
                tune(&mut m, &Request { data: c.clone(), ..clone_request(req) })?;
            }
            st.auths.insert(path, m);
            Ok(Reply::Empty)
        }
        Operation::Delete => {
            if path == "token/" {
                return Err(ApiError::bad("token credential backend cannot be disabled"));
            }
            if st.auths.remove(&path).is_some() {
                let prefix = format!("auth/{path}");
                let doomed: Vec<String> =
                    st.tokens.values().filter(|t| t.path.starts_with(&prefix)).map(|t| t.id.clone()).collect();
                for id in doomed {
                    token::revoke_tree(st, &id);
                }
            }
            Ok(Reply::Empty)
        }
        Operation::List => Err(ApiError::unsupported_op()),
    }
}

fn policies(st: &mut State, name: &str, req: &Request, legacy: bool) -> Result<Reply> {
    let name = name.trim_end_matches('/').to_lowercase();
    if name.is_empty() {
        return Err(ApiError::bad("policy name must be provided in the URL"));
    }
    match req.op {
        Operation::Read => {
            let text = if name == "root" { Some(String::new()) } else { st.policies.get(&name).cloned() };
            let text = text.ok_or_else(ApiError::not_found)?;
            Ok(if legacy {
                Secret::legacy(json!({ "name": name, "rules": text }))
            } else {
                Secret::data(json!({ "name": name, "policy": text }))
            })
        }
        Operation::Create | Operation::Update => {
            if name == "root" {
                return Err(ApiError::bad("cannot update \"root\" policy"));
            }
            let text = get_str(&req.data, "policy")?
                .or(get_str(&req.data, "rules")?)
                .ok_or_else(|| ApiError::bad("'policy' parameter not supplied or empty"))?;
            policy::parse(&text).map_err(|e| ApiError::bad(format!("failed to parse policy: {e}")))?;
            st.policies.insert(name, text);
            Ok(Reply::Empty)
        }
        Operation::Delete => {
            if name == "root" || name == "default" {
                return Err(ApiError::bad(format!("cannot delete \"{name}\" policy")));
            }
            st.policies.remove(&name);
            Ok(Reply::Empty)
        }
        Operation::List => Err(ApiError::unsupported_op()),
    }
}

fn audit_device(st: &mut State, p: &str, req: &Request) -> Result<Reply> {
    let path = mount_path(p);
    match req.op {
        Operation::Create | Operation::Update => {
            if st.audits.contains_key(&path) {
                return Err(ApiError::bad(format!("path already in use: {path}")));
            }
            let kind = get_str(&req.data, "type")?.unwrap_or_default();
            if kind != "file" {
                return Err(ApiError::bad(format!(
                    "unknown backend type: {kind:?} (vault-lite has the file device only)"
                )));
            }
            let opts = crate::api::obj(req.data.get("options").cloned().unwrap_or(Value::Null));
            if get_bool(&opts, "log_raw")?.unwrap_or(false) {
                return Err(ApiError::bad("vault-lite never writes raw values to the audit log"));
            }
            let file_path = get_str(&opts, "file_path")?
                .or(get_str(&opts, "path")?)
                .ok_or_else(|| ApiError::bad("file_path is required"))?;
            if file_path != "stdout" {
                audit::append(&file_path, "").map_err(|e| {
                    ApiError::bad(format!("sys/audit: file sink creation failed for path {file_path:?}: {e}"))
                })?;
            }
            let description = get_str(&req.data, "description")?.unwrap_or_default();
            st.audits.insert(path, AuditDevice { kind, description, file_path });
            Ok(Reply::Empty)
        }
        Operation::Delete => {
            st.audits.remove(&path);
            Ok(Reply::Empty)
        }
        _ => Err(ApiError::unsupported_op()),
    }
}

fn capabilities(acl: &Acl, req: &Request) -> Result<Reply> {
    let paths = crate::api::get_list(&req.data, "paths")?
        .or(get_str(&req.data, "path")?.map(|p| vec![p]))
        .ok_or_else(|| ApiError::bad("missing paths"))?;
    let caps_of = |p: &str| -> Vec<String> {
        if acl.is_root() {
            vec!["root".into()]
        } else {
            acl.capabilities(p.trim_start_matches('/')).names()
        }
    };
    let mut out = Map::new();
    let mut all: Vec<String> = vec![];
    for p in &paths {
        let c = caps_of(p);
        all.extend(c.iter().cloned());
        out.insert(p.clone(), json!(c));
    }
    if paths.len() == 1 {
        out.insert("capabilities".into(), out[&paths[0]].clone());
    } else {
        all.sort();
        all.dedup();
        out.insert("capabilities".into(), json!(all));
    }
    Ok(Secret::legacy(Value::Object(out)))
}
