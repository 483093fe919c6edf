//! Provisioning from `fixtures/vault.toml`: secrets engines, auth methods,
//! audit devices, policies, seed secrets, the PKI root and roles, the
//! database connection and roles, AppRole roles. **It speaks only Vault's
//! documented HTTP API** (through `client`), so it provisions a real Vault
//! exactly as it provisions vault-lite, and it can run again on a
//! provisioned server: what exists is left alone (a seed secret is written
//! with `cas = 0`, a root CA only where the mount has no issuer).

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::client::{ClientError, VaultClient};

/// The provisioning the platform expects, as shipped in `fixtures/vault.toml`.
pub const BUILTIN: &str = include_str!("../../fixtures/vault.toml");

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{origin}: {reason}")]
    Fixture { origin: String, reason: String },
    #[error("provisioning: {0}")]
    Api(#[from] ClientError),
    #[error("{path} is already mounted as {have:?}, the fixture wants {want:?}; disable it or change the fixture")]
    Conflict { path: String, have: String, want: String },
    #[error("the fixture configures the database engine but no PostgreSQL target was given")]
    NoDatabase,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    #[serde(default)]
    pub mount: Vec<MountSpec>,
    #[serde(default)]
    pub auth: Vec<MountSpec>,
    #[serde(default)]
    pub audit: Vec<AuditSpec>,
    #[serde(default)]
    pub policy: Vec<PolicySpec>,
    #[serde(default)]
    pub secret: Vec<SecretSpec>,
    pub pki: Option<PkiSpec>,
    pub database: Option<DatabaseSpec>,
    #[serde(default)]
    pub approle: Vec<AppRoleSpec>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    pub path: String,
    /// `kv-v2`, `kv`, `pki`, `database`; `approle` for `[[auth]]`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub description: String,
    pub default_lease_ttl: Option<String>,
    pub max_lease_ttl: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct AuditSpec {
    pub path: String,
    pub file_path: String,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub name: String,
    /// The policy in HCL, as `vault policy write` takes it.
    pub hcl: String,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// The kv-v2 mount (default `secret`).
    #[serde(default = "default_secret_mount")]
    pub mount: String,
    /// The path below the mount (without `data/`).
    pub path: String,
    pub data: Map<String, Value>,
}

/// A named object whose other keys are the API request body, verbatim.
#[derive(Deserialize, Debug, Clone)]
pub struct Named {
    pub name: String,
    #[serde(flatten)]
    pub params: Map<String, Value>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct PkiSpec {
    #[serde(default = "default_pki_mount")]
    pub mount: String,
    /// The body of `root/generate/internal` (`common_name`, `ttl`, `key_type`…).
    pub root: Map<String, Value>,
    /// The body of `config/urls`.
    pub urls: Option<Map<String, Value>>,
    #[serde(default)]
    pub role: Vec<Named>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSpec {
    #[serde(default = "default_db_mount")]
    pub mount: String,
    /// The connection's name (`config/<connection>`).
    pub connection: String,
    #[serde(default = "default_plugin")]
    pub plugin_name: String,
    /// Defaults to every role below.
    pub allowed_roles: Option<Vec<String>>,
    #[serde(default)]
    pub role: Vec<Named>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct AppRoleSpec {
    #[serde(default = "default_approle_mount")]
    pub mount: String,
    pub name: String,
    #[serde(flatten)]
    pub params: Map<String, Value>,
}

fn default_secret_mount() -> String {
    "secret".into()
}
fn default_pki_mount() -> String {
    "pki".into()
}
fn default_db_mount() -> String {
    "database".into()
}
fn default_approle_mount() -> String {
    "approle".into()
}
fn default_plugin() -> String {
    crate::database::PLUGIN.into()
}

impl Fixture {
    pub fn parse(text: &str, origin: &str) -> Result<Fixture, ProvisionError> {
        toml::from_str(text).map_err(|e| ProvisionError::Fixture { origin: origin.into(), reason: e.to_string() })
    }

    pub fn load(path: &Path) -> Result<Fixture, ProvisionError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ProvisionError::Fixture { origin: path.display().to_string(), reason: e.to_string() })?;
        Fixture::parse(&text, &path.display().to_string())
    }

    /// `fixtures/vault.toml`, compiled in.
    pub fn builtin() -> Fixture {
        Fixture::parse(BUILTIN, "fixtures/vault.toml").expect("the shipped fixture parses (a unit test checks)")
    }
}

/// Where the database engine reaches PostgreSQL, as its administrator.
/// `Debug` hides the password.
#[derive(Clone)]
pub struct DatabaseTarget {
    /// As the Vault server sees it (a VPC address for a container).
    pub host: String,
    pub port: u16,
    pub database: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl DatabaseTarget {
    /// The templated URL Vault stores; credentials stay in their own fields.
    pub fn connection_url(&self) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@{}:{}/{}?sslmode=disable",
            self.host, self.port, self.database
        )
    }
}

/// What provisioning did.
#[derive(Debug, Default)]
pub struct Provisioned {
    /// Engines, auth methods and audit devices it enabled (those already
    /// there are not listed).
    pub enabled: Vec<String>,
    pub policies: Vec<String>,
    /// Seed secrets it wrote (those already there are left alone).
    pub seeded: Vec<String>,
    /// The PKI root certificate (PEM), new or existing.
    pub ca_certificate: Option<String>,
    pub database_configured: bool,
}

fn data_of(v: &Value) -> &Value {
    match v.get("data") {
        Some(d) if d.is_object() => d,
        _ => v,
    }
}

fn is_kv2(m: &Value) -> bool {
    m["type"] == "kv" && m["options"]["version"] == "2"
}

/// Apply `fixture` to the Vault at `addr` with `root_token`. The database
/// section needs `database`; without it, [`ProvisionError::NoDatabase`].
pub async fn provision(
    addr: &str,
    root_token: &str,
    fixture: &Fixture,
    database: Option<&DatabaseTarget>,
) -> Result<Provisioned, ProvisionError> {
    let c = VaultClient::new(addr).with_token(root_token);
    let mut out = Provisioned::default();
    if fixture.database.is_some() && database.is_none() {
        return Err(ProvisionError::NoDatabase);
    }

    let mounts = c.read("sys/mounts").await?;
    for m in &fixture.mount {
        let key = format!("{}/", m.path.trim_matches('/'));
        let (kind, options) = match m.kind.as_str() {
            "kv-v2" => ("kv", json!({ "version": "2" })),
            other => (other, json!({})),
        };
        match data_of(&mounts).get(&key) {
            Some(have) => {
                let same = if m.kind == "kv-v2" { is_kv2(have) } else { have["type"] == kind };
                if !same {
                    return Err(ProvisionError::Conflict {
                        path: key,
                        have: have["type"].to_string(),
                        want: m.kind.clone(),
                    });
                }
            }
            None => {
                c.write(
                    &format!("sys/mounts/{key}"),
                    &json!({ "type": kind, "description": m.description, "options": options }),
                )
                .await?;
                out.enabled.push(key.clone());
            }
        }
        let mut tune = Map::new();
        for (k, v) in [("default_lease_ttl", &m.default_lease_ttl), ("max_lease_ttl", &m.max_lease_ttl)] {
            if let Some(v) = v {
                tune.insert(k.into(), json!(v));
            }
        }
        if !tune.is_empty() {
            c.write(&format!("sys/mounts/{key}tune"), &Value::Object(tune)).await?;
        }
    }

    let auths = c.read("sys/auth").await?;
    for a in &fixture.auth {
        let key = format!("{}/", a.path.trim_matches('/'));
        match data_of(&auths).get(&key) {
            Some(have) if have["type"] != a.kind.as_str() => {
                return Err(ProvisionError::Conflict {
                    path: format!("auth/{key}"),
                    have: have["type"].to_string(),
                    want: a.kind.clone(),
                })
            }
            Some(_) => {}
            None => {
                c.write(&format!("sys/auth/{key}"), &json!({ "type": a.kind, "description": a.description })).await?;
                out.enabled.push(format!("auth/{key}"));
            }
        }
    }

    let audits = c.read("sys/audit").await?;
    for a in &fixture.audit {
        let key = format!("{}/", a.path.trim_matches('/'));
        if data_of(&audits).get(&key).is_none() {
            c.call(
                "PUT",
                &format!("sys/audit/{key}"),
                Some(&json!({ "type": "file", "options": { "file_path": a.file_path } })),
            )
            .await?;
            out.enabled.push(format!("audit {key}"));
        }
    }

    for p in &fixture.policy {
        c.call("PUT", &format!("sys/policies/acl/{}", p.name), Some(&json!({ "policy": p.hcl }))).await?;
        out.policies.push(p.name.clone());
    }

    for s in &fixture.secret {
        let path = format!("{}/data/{}", s.mount.trim_matches('/'), s.path.trim_matches('/'));
        match c.write(&path, &json!({ "data": s.data, "options": { "cas": 0 } })).await {
            Ok(_) => out.seeded.push(format!("{}/{}", s.mount.trim_matches('/'), s.path.trim_matches('/'))),
            // Already there: check-and-set with 0 refuses to overwrite.
            Err(ClientError::Status { status: 400, errors, .. })
                if errors.iter().any(|e| e.contains("check-and-set")) => {}
            Err(e) => return Err(e.into()),
        }
    }

    if let Some(p) = &fixture.pki {
        let m = p.mount.trim_matches('/');
        let has_issuer = match c.list(&format!("{m}/issuers")).await {
            Ok(v) => v["data"]["keys"].as_array().is_some_and(|k| !k.is_empty()),
            Err(e) if e.status() == Some(404) => false,
            Err(e) => return Err(e.into()),
        };
        if !has_issuer {
            c.write(&format!("{m}/root/generate/internal"), &Value::Object(p.root.clone())).await?;
        }
        if let Some(urls) = &p.urls {
            c.write(&format!("{m}/config/urls"), &Value::Object(urls.clone())).await?;
        }
        for r in &p.role {
            c.write(&format!("{m}/roles/{}", r.name), &Value::Object(r.params.clone())).await?;
        }
        let ca = c.read(&format!("{m}/cert/ca")).await?;
        out.ca_certificate = ca["data"]["certificate"].as_str().map(str::to_string);
    }

    if let (Some(d), Some(target)) = (&fixture.database, database) {
        let m = d.mount.trim_matches('/');
        let allowed = d.allowed_roles.clone().unwrap_or_else(|| d.role.iter().map(|r| r.name.clone()).collect());
        c.write(
            &format!("{m}/config/{}", d.connection),
            &json!({
                "plugin_name": d.plugin_name,
                "connection_url": target.connection_url(),
                "username": target.username,
                "password": target.password,
                "allowed_roles": allowed,
                "verify_connection": true,
            }),
        )
        .await?;
        for r in &d.role {
            let mut body = r.params.clone();
            body.entry("db_name").or_insert(json!(d.connection));
            c.write(&format!("{m}/roles/{}", r.name), &Value::Object(body)).await?;
        }
        out.database_configured = true;
    }

    for r in &fixture.approle {
        c.write(&format!("auth/{}/role/{}", r.mount.trim_matches('/'), r.name), &Value::Object(r.params.clone()))
            .await?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_fixture_parses_and_its_policies_too() {
        let f = Fixture::builtin();
        assert!(f.mount.iter().any(|m| m.path == "secret" && m.kind == "kv-v2"));
        assert!(f.mount.iter().any(|m| m.path == "pki" && m.kind == "pki"));
        assert!(f.mount.iter().any(|m| m.path == "database" && m.kind == "database"));
        let names: Vec<&str> = f.policy.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["voyager-secrets-read", "voyager-pki-issue", "voyager-edge-certs", "voyager-database-creds"]
        );
        for p in &f.policy {
            crate::policy::parse(&p.hcl).unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
        assert!(f.secret.iter().all(|s| s.path.starts_with("voyager/")));
        assert_eq!(f.pki.as_ref().unwrap().role[0].name, "voyager-internal");
        assert_eq!(f.database.as_ref().unwrap().role[0].name, "voyager-app");
    }

    #[test]
    fn fixture_errors_name_the_line() {
        let e = Fixture::parse("[[mount]]\npath = \"x\"\ntipe = \"kv\"\n", "f.toml").unwrap_err().to_string();
        assert!(e.starts_with("f.toml:") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn database_target_hides_its_password() {
        let t = DatabaseTarget {
            host: "10.0.1.5".into(),
            port: 5432,
            database: "voyager".into(),
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{t:?}").contains("hunter2"));
        assert_eq!(t.connection_url(), "postgresql://{{username}}:{{password}}@10.0.1.5:5432/voyager?sslmode=disable");
    }
}
