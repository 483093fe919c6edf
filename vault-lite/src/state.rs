//! Everything the server keeps behind the barrier, as one serialisable
//! value: the mount tables (each mount owning its engine's data), policies,
//! tokens, leases and audit devices. What goes to the state file is this,
//! encrypted. **No I/O.**

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{approle, database, kv, pki, random};

/// Vault's system-wide maximum TTL (32 days), also the default.
pub const SYSTEM_MAX_TTL: u64 = 768 * 3600;

#[derive(Serialize, Deserialize, Default)]
pub struct State {
    /// Key for the audit log's HMACs.
    pub hmac_key: String,
    pub cluster_id: String,
    /// Secrets engines by path, each ending in `/`.
    pub mounts: BTreeMap<String, Mount>,
    /// Auth methods by path under `auth/`, each ending in `/`.
    pub auths: BTreeMap<String, Mount>,
    pub audits: BTreeMap<String, AuditDevice>,
    /// Policy text by name; `root` is built in and never stored.
    pub policies: BTreeMap<String, String>,
    pub tokens: BTreeMap<String, crate::token::TokenEntry>,
    pub leases: BTreeMap<String, crate::lease::Lease>,
}

#[derive(Serialize, Deserialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
    pub accessor: String,
    pub uuid: String,
    pub options: BTreeMap<String, String>,
    pub default_lease_ttl: u64,
    pub max_lease_ttl: u64,
    pub engine: Engine,
}

/// A mount's data, by the engine that owns it.
#[derive(Serialize, Deserialize)]
pub enum Engine {
    Kv(kv::KvStore),
    Pki(Box<pki::PkiStore>),
    Database(database::DbStore),
    Token,
    AppRole(approle::AppRoleStore),
}

#[derive(Serialize, Deserialize, Clone)]
pub struct AuditDevice {
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
    pub file_path: String,
}

impl Mount {
    pub fn new(kind: &str, description: &str, options: BTreeMap<String, String>, engine: Engine) -> Mount {
        let short = kind.split('-').next().unwrap_or(kind);
        Mount {
            kind: kind.to_string(),
            description: description.to_string(),
            accessor: format!("{short}_{}", &random::hex(4)),
            uuid: random::uuid(),
            options,
            default_lease_ttl: 0,
            max_lease_ttl: 0,
            engine,
        }
    }

    /// The mount's effective maximum TTL.
    pub fn max_ttl(&self) -> u64 {
        if self.max_lease_ttl == 0 {
            SYSTEM_MAX_TTL
        } else {
            self.max_lease_ttl
        }
    }

    pub fn default_ttl(&self) -> u64 {
        if self.default_lease_ttl == 0 {
            self.max_ttl().min(SYSTEM_MAX_TTL)
        } else {
            self.default_lease_ttl
        }
    }

    /// The mount as `sys/mounts` and `sys/auth` list it.
    pub fn describe(&self, auth: bool) -> Value {
        let mut config = json!({
            "default_lease_ttl": self.default_lease_ttl,
            "max_lease_ttl": self.max_lease_ttl,
            "force_no_cache": false,
        });
        if auth {
            config["token_type"] = json!("default-service");
        }
        json!({
            "type": self.kind,
            "description": self.description,
            "accessor": self.accessor,
            "uuid": self.uuid,
            "config": config,
            "options": if self.options.is_empty() { Value::Null } else { json!(self.options) },
            "local": false,
            "seal_wrap": false,
            "external_entropy_access": false,
            "plugin_version": "",
            "running_plugin_version": "",
            "running_sha256": "",
        })
    }
}

impl State {
    /// A fresh state, as `sys/init` leaves it: the token auth method, the
    /// default policy, and nothing else.
    pub fn new() -> State {
        let mut st = State { hmac_key: random::hex(32), cluster_id: random::uuid(), ..Default::default() };
        st.auths
            .insert("token/".into(), Mount::new("token", "token based credentials", BTreeMap::new(), Engine::Token));
        st.policies.insert("default".into(), crate::policy::DEFAULT_POLICY.into());
        st
    }

    /// The secrets engine mounted at the longest prefix of `path`.
    pub fn mount_for(&self, path: &str) -> Option<String> {
        self.mounts
            .keys()
            .filter(|m| path.starts_with(m.as_str()) || path == m.trim_end_matches('/'))
            .max_by_key(|m| m.len())
            .cloned()
    }

    /// The auth method at the longest prefix of `path` (which lacks `auth/`).
    pub fn auth_for(&self, path: &str) -> Option<String> {
        self.auths
            .keys()
            .filter(|m| path.starts_with(m.as_str()) || path == m.trim_end_matches('/'))
            .max_by_key(|m| m.len())
            .cloned()
    }
}
