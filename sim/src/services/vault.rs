//! Vault: real `hashicorp/vault` (server mode, file storage) in the upstream
//! set; offline, no Vault binary can be had, so `voyager-vault` (the
//! workspace's `vault-lite`, a Vault-API-compatible server) mounted into
//! plain Debian. Both start uninitialised and sealed, and the same code —
//! Vault's HTTP API only — initialises, unseals and provisions them.
//!
//! The root token and unseal keys live in the run state (0600) and are
//! printed only by `voyager-sim vault credentials`; `env` hands out a token
//! scoped by the platform's policies, never the root token. A restarted
//! Vault comes back sealed; its readiness probe unseals it with the keys
//! the run holds, as an operator's auto-unseal would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use vault_lite::{DatabaseTarget, Fixture, VaultClient};

use super::SpecContext;
use crate::companion::{mount_point, VAULT};
use crate::images::{image_for, ImageSet};
use crate::runtime::network::network_name;
use crate::spec::{ContainerSpec, Publish};
use crate::stack::ServiceKind;
use crate::state::{InstanceState, RunState};

pub const PORT: u16 = 8200;
/// Unseal key shares and how many open it, as `vault operator init`'s defaults.
const SHARES: u8 = 5;
const THRESHOLD: u8 = 3;
/// Real Vault's file storage (upstream image) and our server's state file.
const UPSTREAM_DATA: &str = "/vault/file";
const OFFLINE_DATA: &str = "/vault/data";
/// Where the audit device writes: the container's output, so `docker logs`
/// (and a test) can read it without a shell in the image.
const AUDIT_PATH: &str = "stdout";

/// What initialising Vault produced. `Debug` hides all of it.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VaultSecrets {
    pub root_token: String,
    pub unseal_keys: Vec<String>,
    /// A token with the platform's policies: what `env` exports.
    pub app_token: String,
}

impl std::fmt::Debug for VaultSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSecrets").field("unseal_keys", &self.unseal_keys.len()).finish_non_exhaustive()
    }
}

pub fn specs(cx: &SpecContext) -> Vec<ContainerSpec> {
    let Some(svc) = cx.stack.service(ServiceKind::Vault) else { return vec![] };
    let binary = cx.companions.get(VAULT.binary).map(|p| p.display().to_string()).unwrap_or_default();
    svc.instances
        .iter()
        .map(|inst| {
            let az = cx.stack.az(&inst.az).expect("validated");
            let (env, cmd, entrypoint, mounts, data) = match cx.images {
                ImageSet::Upstream => {
                    let config = json!({
                        "storage": { "file": { "path": UPSTREAM_DATA } },
                        "listener": [{ "tcp": { "address": format!("0.0.0.0:{PORT}"), "tls_disable": true } }],
                        "disable_mlock": true,
                        "ui": false,
                        "api_addr": format!("http://{}:{PORT}", inst.address),
                    });
                    let env = BTreeMap::from([("VAULT_LOCAL_CONFIG".to_string(), config.to_string())]);
                    (env, vec!["server".to_string()], None, vec![], UPSTREAM_DATA)
                }
                ImageSet::Offline => {
                    let entry = vec![
                        mount_point(VAULT),
                        "--listen".into(),
                        format!("0.0.0.0:{PORT}"),
                        "--state-file".into(),
                        format!("{OFFLINE_DATA}/state.json"),
                    ];
                    (BTreeMap::new(), vec![], Some(entry), vec![(binary.clone(), mount_point(VAULT))], OFFLINE_DATA)
                }
            };
            ContainerSpec {
                instance: inst.name.clone(),
                image: image_for(ServiceKind::Vault, cx.images),
                env,
                cmd,
                network: network_name(cx.stack_name, &az.name, inst.tier),
                address: inst.address,
                published: vec![Publish::any(PORT)],
                volumes: vec![("data".into(), data.into())],
                extra_networks: vec![],
                files: vec![],
                entrypoint,
                user: None,
                mounts,
                ..Default::default()
            }
        })
        .collect()
}

/// Where Vault is reached from the host. `Debug` hides the token.
#[derive(Clone)]
pub struct VaultEndpoint {
    pub host: SocketAddr,
    pub instance: String,
    pub container: String,
    secrets: VaultSecrets,
}

impl std::fmt::Debug for VaultEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultEndpoint").field("host", &self.host).finish_non_exhaustive()
    }
}

impl VaultEndpoint {
    pub fn addr(&self) -> String {
        format!("http://{}", self.host)
    }

    /// The policy-scoped token `env` exports.
    pub fn app_token(&self) -> &str {
        &self.secrets.app_token
    }

    /// The root token: for tests and `voyager-sim vault credentials` only.
    pub fn root_token(&self) -> &str {
        &self.secrets.root_token
    }

    pub fn unseal_keys(&self) -> &[String] {
        &self.secrets.unseal_keys
    }
}

pub fn endpoint(state: &RunState) -> Option<VaultEndpoint> {
    let inst = state.instances.iter().find(|i| i.service == ServiceKind::Vault.as_str())?;
    Some(VaultEndpoint {
        host: *inst.published.get(&PORT)?,
        instance: inst.name.clone(),
        container: inst.container.clone(),
        secrets: state.credentials.vault.clone().unwrap_or_default(),
    })
}

/// Ready when Vault answers as active. Uninitialised counts as answering
/// before the run has initialised it (that is the next step); sealed is
/// unsealed with the run's keys, then probed again.
pub async fn probe(state: &RunState, inst: &InstanceState) -> Result<(), String> {
    let addr = inst.published.get(&PORT).ok_or("no published port")?;
    let c = VaultClient::new(&format!("http://{addr}"));
    let (status, _) = c.raw("GET", "sys/health", None).await.map_err(|e| e.to_string())?;
    let secrets = state.credentials.vault.as_ref();
    match (status, secrets) {
        (200, _) => Ok(()),
        (501, None) => Ok(()),
        (503, Some(s)) => {
            c.unseal(&s.unseal_keys).await.map_err(|e| format!("unsealing: {e}"))?;
            Err("sealed; unsealed it with the run's keys".into())
        }
        (s, _) => Err(format!("sys/health answered {s}")),
    }
}

/// Initialise and unseal a new Vault, provision it from the fixture (with
/// the stack's PostgreSQL writer for the database engine, when there is
/// one), turn on the audit device and make the scoped token. Runs after
/// every other service is ready: the database engine checks its connection.
pub async fn bootstrap(state: &RunState, fixture_text: &str) -> Result<VaultSecrets, String> {
    let ep = endpoint(state).ok_or("no Vault instance")?;
    let c = VaultClient::new(&ep.addr());
    let init = c.init(SHARES, THRESHOLD).await.map_err(|e| format!("initialising: {e}"))?;
    c.unseal(&init.keys).await.map_err(|e| format!("unsealing: {e}"))?;
    let root = VaultClient::new(&ep.addr()).with_token(&init.root_token);
    // Standby-to-active takes a moment on real Vault.
    let mut active = false;
    for _ in 0..100 {
        if matches!(c.raw("GET", "sys/health", None).await, Ok((200, _))) {
            active = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !active {
        return Err("Vault did not become active after unsealing".into());
    }
    let audit = json!({ "type": "file", "options": { "file_path": AUDIT_PATH } });
    root.call("PUT", "sys/audit/stdout", Some(&audit)).await.map_err(|e| format!("enabling the audit device: {e}"))?;

    let mut fixture = Fixture::parse(fixture_text, "fixtures/vault.toml").map_err(|e| e.to_string())?;
    let target = super::postgres::writer(state).map(|w| DatabaseTarget {
        host: w.vpc.ip().to_string(),
        port: w.vpc.port(),
        database: w.database.clone(),
        username: w.user.clone(),
        password: w.password.clone(),
    });
    if target.is_none() {
        // No PostgreSQL in this stack: everything but the database engine.
        fixture.database = None;
    }
    vault_lite::provision(&ep.addr(), &init.root_token, &fixture, target.as_ref())
        .await
        .map_err(|e| format!("provisioning from the fixture: {e}"))?;
    let policies: Vec<&str> = fixture.policy.iter().map(|p| p.name.as_str()).collect();
    let token = root
        .write(
            "auth/token/create",
            &json!({ "policies": policies, "ttl": "768h", "renewable": true, "display_name": "voyager-sim-env" }),
        )
        .await
        .map_err(|e| format!("creating the scoped token: {e}"))?;
    let app_token = token["auth"]["client_token"].as_str().ok_or("token/create returned no client_token")?.to_string();
    Ok(VaultSecrets { root_token: init.root_token, unseal_keys: init.keys, app_token })
}

/// `VAULT_ADDR` and a policy-scoped `VAULT_TOKEN`, as the Vault CLI and
/// client libraries read them.
pub fn env(state: &RunState) -> Vec<(String, String)> {
    let Some(ep) = endpoint(state) else { return vec![] };
    vec![("VAULT_ADDR".into(), ep.addr()), ("VAULT_TOKEN".into(), ep.secrets.app_token.clone())]
}

/// The service's contract with the harness (see [`super::Service`]).
pub struct Vault;

#[async_trait::async_trait]
impl super::Service for Vault {
    fn specs(&self, cx: &SpecContext) -> Vec<ContainerSpec> {
        specs(cx)
    }
    fn companion(&self, images: crate::images::ImageSet) -> Option<crate::companion::Companion> {
        // Offline there is no Vault binary: vault-lite stands in.
        (images == crate::images::ImageSet::Offline).then_some(crate::companion::VAULT)
    }
    async fn probe(&self, cx: &super::ProbeContext<'_>, inst: &InstanceState) -> Result<(), String> {
        probe(cx.state, inst).await
    }
    // Provisioning is `bootstrap`, after every other service is ready: the
    // database engine checks PostgreSQL.
    fn env(&self, state: &RunState) -> Vec<(String, String)> {
        env(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_runs_real_vault_in_server_mode_with_file_storage() {
        let v = super::super::test_specs(ServiceKind::Vault, ImageSet::Upstream);
        assert_eq!(v.len(), 1);
        let s = &v[0];
        assert_eq!(s.image, crate::images::UPSTREAM_VAULT);
        assert_eq!(s.cmd, ["server"], "server mode, never -dev");
        let config: serde_json::Value = serde_json::from_str(&s.env["VAULT_LOCAL_CONFIG"]).unwrap();
        assert_eq!(config["storage"]["file"]["path"], UPSTREAM_DATA);
        assert_eq!(s.volumes, [("data".to_string(), UPSTREAM_DATA.to_string())]);
        assert!(s.mounts.is_empty());
        assert_eq!((s.address.to_string(), s.published.clone()), ("10.0.1.50".to_string(), vec![Publish::any(PORT)]));
    }

    #[test]
    fn offline_runs_vault_lite_mounted_with_its_state_on_a_volume() {
        let s = &super::super::test_specs(ServiceKind::Vault, ImageSet::Offline)[0];
        assert_eq!(s.image, crate::images::recipe::base().tag());
        assert_eq!(s.mounts, [("/opt/bin/voyager-vault".to_string(), mount_point(VAULT))]);
        let entry = s.entrypoint.as_ref().unwrap().join(" ");
        assert!(entry.ends_with("--state-file /vault/data/state.json"), "{entry}");
        assert_eq!(s.volumes, [("data".to_string(), OFFLINE_DATA.to_string())]);
        let up = &super::super::test_specs(ServiceKind::Vault, ImageSet::Upstream)[0];
        assert_eq!((s.network.as_str(), s.address, &s.published), (up.network.as_str(), up.address, &up.published));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s =
            VaultSecrets { root_token: "hvs.root".into(), unseal_keys: vec!["k1".into()], app_token: "hvs.app".into() };
        let text = format!("{s:?}");
        assert!(!text.contains("hvs.") && !text.contains("k1"), "{text}");
    }
}
