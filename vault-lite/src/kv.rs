//! The key/value secrets engine, both versions. Version 2 keeps every
//! version of a secret with its metadata (`created_time`, `deletion_time`,
//! `destroyed`), check-and-set, soft delete, undelete and destroy, under the
//! same `data/`, `metadata/`, `delete/`, `undelete/`, `destroy/` and
//! `config` paths as Vault (which is also what ACL rules name). Version 1 is
//! a plain map. **No I/O.**

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{get_bool, get_string_map, get_ttl, get_u64, ApiError, Operation, Reply, Request, Result, Secret};
use crate::clock;
use crate::core::Ctx;

const DEFAULT_MAX_VERSIONS: u64 = 10;

#[derive(Serialize, Deserialize, Default)]
pub struct KvStore {
    pub version: u8,
    pub max_versions: u64,
    pub cas_required: bool,
    pub delete_version_after: u64,
    /// Version 2: secrets with their versions.
    pub entries: BTreeMap<String, KvEntry>,
    /// Version 1: plain values.
    pub plain: BTreeMap<String, Value>,
}

#[derive(Serialize, Deserialize, Default)]
pub struct KvEntry {
    pub versions: BTreeMap<u64, KvVersion>,
    pub current: u64,
    pub max_versions: u64,
    pub cas_required: bool,
    pub delete_version_after: u64,
    pub custom_metadata: Option<BTreeMap<String, String>>,
    pub created: u64,
    pub updated: u64,
}

#[derive(Serialize, Deserialize)]
pub struct KvVersion {
    pub data: Option<Value>,
    pub created: u64,
    pub deleted: Option<u64>,
    pub destroyed: bool,
}

/// Go's rendering of a duration, as Vault shows `delete_version_after`.
fn go_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

impl KvVersion {
    fn metadata(&self, version: u64, custom: &Option<BTreeMap<String, String>>) -> Value {
        json!({
            "created_time": clock::rfc3339(self.created),
            "custom_metadata": custom,
            "deletion_time": self.deleted.map(clock::rfc3339).unwrap_or_default(),
            "destroyed": self.destroyed,
            "version": version,
        })
    }
}

impl KvEntry {
    fn metadata(&self) -> Value {
        let versions: serde_json::Map<String, Value> = self
            .versions
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    json!({
                        "created_time": clock::rfc3339(v.created),
                        "deletion_time": v.deleted.map(clock::rfc3339).unwrap_or_default(),
                        "destroyed": v.destroyed,
                    }),
                )
            })
            .collect();
        json!({
            "cas_required": self.cas_required,
            "created_time": clock::rfc3339(self.created),
            "current_version": self.current,
            "custom_metadata": self.custom_metadata,
            "delete_version_after": go_duration(self.delete_version_after),
            "max_versions": self.max_versions,
            "oldest_version": self.versions.keys().next().copied().unwrap_or(0),
            "updated_time": clock::rfc3339(self.updated),
            "versions": versions,
        })
    }
}

impl KvStore {
    pub fn new(version: u8) -> KvStore {
        KvStore { version, ..Default::default() }
    }

    /// Whether a write to `rest` creates (false) or updates (true).
    pub fn exists(&self, rest: &str) -> bool {
        if self.version == 1 {
            return self.plain.contains_key(rest);
        }
        match split(rest) {
            Some(("data" | "metadata", key)) => self.entries.contains_key(key),
            _ => true,
        }
    }
}

fn split(rest: &str) -> Option<(&str, &str)> {
    rest.split_once('/').or(if rest == "config" { Some(("config", "")) } else { None })
}

/// Keys directly under `prefix` (folders end in `/`), or 404.
fn list<'a>(keys: impl Iterator<Item = &'a String>, prefix: &str) -> Result<Reply> {
    let mut out: Vec<String> = keys
        .filter_map(|k| k.strip_prefix(prefix))
        .filter(|rest| !rest.is_empty())
        .map(|rest| match rest.split_once('/') {
            Some((dir, _)) => format!("{dir}/"),
            None => rest.to_string(),
        })
        .collect();
    out.dedup();
    if out.is_empty() {
        return Err(ApiError::not_found());
    }
    out.sort();
    out.dedup();
    Ok(Secret::keys(out))
}

fn versions_arg(req: &Request) -> Result<Vec<u64>> {
    let v = crate::api::get_list(&req.data, "versions")?.unwrap_or_default();
    let v: Vec<u64> =
        v.iter().map(|s| s.parse().map_err(|_| ApiError::bad("invalid version number"))).collect::<Result<_>>()?;
    if v.is_empty() {
        return Err(ApiError::bad("no version number provided"));
    }
    Ok(v)
}

pub fn handle(store: &mut KvStore, cx: &Ctx, req: &Request) -> Result<Reply> {
    if store.version == 1 {
        return handle_v1(store, cx, req);
    }
    let now = cx.now;
    let rest = cx.rest.as_str();
    let (kind, key) = split(rest).ok_or_else(|| ApiError::unsupported_path(&req.path))?;
    let op = req.op;
    match (kind, op) {
        ("config", Operation::Read) => Ok(Secret::data(json!({
            "cas_required": store.cas_required,
            "delete_version_after": go_duration(store.delete_version_after),
            "max_versions": store.max_versions,
        }))),
        ("config", Operation::Create | Operation::Update) => {
            if let Some(m) = get_u64(&req.data, "max_versions")? {
                store.max_versions = m;
            }
            if let Some(c) = get_bool(&req.data, "cas_required")? {
                store.cas_required = c;
            }
            if let Some(d) = get_ttl(&req.data, "delete_version_after")? {
                store.delete_version_after = d;
            }
            Ok(Reply::Empty)
        }
        ("data", Operation::Read) => read(store, key, req),
        ("data", Operation::Create | Operation::Update) => write(store, key, req, now),
        ("data", Operation::Delete) => {
            if let Some(e) = store.entries.get_mut(key) {
                let cur = e.current;
                if let Some(v) = e.versions.get_mut(&cur).filter(|v| !v.destroyed && v.deleted.is_none()) {
                    v.deleted = Some(now);
                    e.updated = now;
                }
            }
            Ok(Reply::Empty)
        }
        ("metadata", Operation::List) => {
            let prefix = if key.is_empty() || key.ends_with('/') { key.to_string() } else { format!("{key}/") };
            list(store.entries.keys(), &prefix)
        }
        ("metadata", Operation::Read) => {
            let e = store.entries.get(key).ok_or_else(ApiError::not_found)?;
            Ok(Secret::data(e.metadata()))
        }
        ("metadata", Operation::Create | Operation::Update) => {
            if key.is_empty() {
                return Err(ApiError::bad("missing path"));
            }
            let e =
                store.entries.entry(key.to_string()).or_insert_with(|| KvEntry { created: now, ..Default::default() });
            if let Some(m) = get_u64(&req.data, "max_versions")? {
                e.max_versions = m;
            }
            if let Some(c) = get_bool(&req.data, "cas_required")? {
                e.cas_required = c;
            }
            if let Some(d) = get_ttl(&req.data, "delete_version_after")? {
                e.delete_version_after = d;
            }
            if let Some(c) = get_string_map(&req.data, "custom_metadata")? {
                e.custom_metadata = Some(c);
            }
            e.updated = now;
            Ok(Reply::Empty)
        }
        ("metadata", Operation::Delete) => {
            store.entries.remove(key);
            Ok(Reply::Empty)
        }
        ("delete" | "undelete" | "destroy", Operation::Create | Operation::Update) => {
            let versions = versions_arg(req)?;
            if let Some(e) = store.entries.get_mut(key) {
                for n in versions {
                    let Some(v) = e.versions.get_mut(&n) else { continue };
                    match kind {
                        "delete" if !v.destroyed && v.deleted.is_none() => v.deleted = Some(now),
                        "undelete" if !v.destroyed => v.deleted = None,
                        "destroy" => {
                            v.destroyed = true;
                            v.data = None;
                        }
                        _ => {}
                    }
                }
                e.updated = now;
            }
            Ok(Reply::Empty)
        }
        ("config" | "data" | "delete" | "undelete" | "destroy", _) => Err(ApiError::unsupported_op()),
        _ => Err(ApiError::unsupported_path(&req.path)),
    }
}

fn read(store: &KvStore, key: &str, req: &Request) -> Result<Reply> {
    let e = store.entries.get(key).ok_or_else(ApiError::not_found)?;
    let n = match get_u64(&req.data, "version")? {
        Some(0) | None => e.current,
        Some(n) => n,
    };
    let v = e.versions.get(&n).ok_or_else(ApiError::not_found)?;
    let meta = v.metadata(n, &e.custom_metadata);
    match &v.data {
        Some(d) if v.deleted.is_none() => Ok(Secret::data(json!({ "data": d, "metadata": meta }))),
        // Vault answers a deleted or destroyed version with 404 and its
        // metadata, so clients can tell it from one that never was.
        _ => Err(ApiError { status: 404, errors: vec![], data: Some(json!({ "data": null, "metadata": meta })) }),
    }
}

fn write(store: &mut KvStore, key: &str, req: &Request, now: u64) -> Result<Reply> {
    if key.is_empty() {
        return Err(ApiError::bad("missing path"));
    }
    let data = match req.data.get("data") {
        Some(Value::Object(d)) => Value::Object(d.clone()),
        _ => return Err(ApiError::bad("no data provided")),
    };
    let cas = match req.data.get("options").and_then(|o| o.get("cas")) {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| ApiError::bad("invalid cas parameter"))?,
        ),
    };
    let store_cas = store.cas_required;
    let e = store.entries.entry(key.to_string()).or_insert_with(|| KvEntry { created: now, ..Default::default() });
    if (store_cas || e.cas_required) && cas.is_none() {
        return Err(ApiError::bad("check-and-set parameter required for this call"));
    }
    if let Some(c) = cas {
        if c != e.current {
            return Err(ApiError::bad("check-and-set parameter did not match the current version"));
        }
    }
    e.current += 1;
    e.updated = now;
    let n = e.current;
    e.versions.insert(n, KvVersion { data: Some(data), created: now, deleted: None, destroyed: false });
    let meta = e.versions[&n].metadata(n, &e.custom_metadata);
    let max = [e.max_versions, store.max_versions].into_iter().find(|m| *m > 0).unwrap_or(DEFAULT_MAX_VERSIONS);
    while e.versions.len() as u64 > max {
        let oldest = *e.versions.keys().next().expect("non-empty");
        e.versions.remove(&oldest);
    }
    Ok(Secret::data(meta))
}

fn handle_v1(store: &mut KvStore, cx: &Ctx, req: &Request) -> Result<Reply> {
    let key = cx.rest.as_str();
    match req.op {
        Operation::Read => store.plain.get(key).map(|v| Secret::data(v.clone())).ok_or_else(ApiError::not_found),
        Operation::List => {
            let prefix = if key.is_empty() || key.ends_with('/') { key.to_string() } else { format!("{key}/") };
            list(store.plain.keys(), &prefix)
        }
        Operation::Create | Operation::Update => {
            if key.is_empty() {
                return Err(ApiError::bad("missing path"));
            }
            store.plain.insert(key.to_string(), Value::Object(req.data.clone()));
            Ok(Reply::Empty)
        }
        Operation::Delete => {
            store.plain.remove(key);
            Ok(Reply::Empty)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_render_like_go() {
        assert_eq!(super::go_duration(0), "0s");
        assert_eq!(super::go_duration(90), "1m30s");
        assert_eq!(super::go_duration(3600), "1h0m0s");
    }
}
