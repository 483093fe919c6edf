//! The mock Auth0 tenant (`voyager-auth0`, the workspace's `auth0-mock`
//! crate) as a service of the stack: a plain Debian container with the
//! binary mounted, the fixture copied in, and the issuer set to the URL
//! applications on this host reach it by. Readiness is its discovery
//! document; key rotation goes through its admin API, whose token is a
//! per-run secret.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::SpecContext;
use crate::companion::{mount_point, AUTH0};
use crate::http::request;
use crate::images::image_for;
use crate::runtime::network::network_name;
use crate::spec::{ContainerSpec, Publish};
use crate::stack::ServiceKind;
use crate::state::{InstanceState, RunState};

pub const PORT: u16 = 8080;
const CONFIG: &str = "/etc/voyager/auth0.toml";

/// Where the tenant is reached from the host. `Debug` hides the secrets.
#[derive(Clone)]
pub struct Auth0Endpoint {
    pub host: SocketAddr,
    pub audience: String,
    pub client_id: String,
    pub client_secret: String,
    admin_token: String,
}

impl std::fmt::Debug for Auth0Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth0Endpoint")
            .field("host", &self.host)
            .field("audience", &self.audience)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

impl Auth0Endpoint {
    /// The tenant's base URL (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// The `iss` of its tokens: the base URL with a slash, as Auth0's.
    pub fn issuer(&self) -> String {
        format!("{}/", self.url())
    }

    /// Start a key rotation: new tokens carry the new `kid`; the JWKS keeps
    /// the old key until the next rotation. Returns the admin API's answer.
    pub async fn rotate_keys(&self) -> Result<String, String> {
        let auth = format!("Bearer {}", self.admin_token);
        let r = request(
            "POST",
            &format!("{}/voyager/keys/rotate", self.url()),
            &[("authorization", &auth)],
            "",
            Duration::from_secs(30),
        )
        .await?;
        if r.status != 200 {
            return Err(format!("key rotation answered {}: {}", r.status, r.body.trim()));
        }
        Ok(r.body)
    }
}

/// What `env` hands an application from the fixture: the API's audience,
/// and its first confidential client allowed `client_credentials` (for
/// machine-to-machine tokens), read in one pass.
pub struct TenantSettings {
    pub audience: String,
    pub machine_client: Option<(String, String)>,
}

pub fn tenant_settings(fixture: &str) -> TenantSettings {
    let t: toml::Table = toml::from_str(fixture).unwrap_or_default();
    let audience =
        t.get("api").and_then(|a| a.get("identifier")).and_then(|v| v.as_str()).unwrap_or("voyager-api").to_string();
    let clients = t.get("client").and_then(|c| c.as_array()).map(Vec::as_slice).unwrap_or_default();
    let machine_client = clients.iter().find_map(|c| {
        let grants = c.get("grant_types")?.as_array()?;
        if !grants.iter().any(|g| g.as_str() == Some("client_credentials")) {
            return None;
        }
        Some((c.get("client_id")?.as_str()?.to_string(), c.get("client_secret")?.as_str()?.to_string()))
    });
    TenantSettings { audience, machine_client }
}

pub fn specs(cx: &SpecContext) -> Vec<ContainerSpec> {
    let Some(svc) = cx.stack.service(ServiceKind::Auth0) else { return vec![] };
    let binary = cx.companions.get(AUTH0.binary).map(|p| p.display().to_string()).unwrap_or_default();
    svc.instances
        .iter()
        .map(|inst| {
            let az = cx.stack.az(&inst.az).expect("validated");
            let host_port = cx.host_ports.get(&inst.name).copied();
            let public_url = format!("http://127.0.0.1:{}", host_port.unwrap_or(PORT));
            let env =
                BTreeMap::from([("AUTH0_MOCK_ADMIN_TOKEN".to_string(), cx.credentials.auth0_admin_token.clone())]);
            ContainerSpec {
                instance: inst.name.clone(),
                image: image_for(ServiceKind::Auth0, cx.images),
                env,
                cmd: vec![],
                network: network_name(cx.stack_name, &az.name, inst.tier),
                address: inst.address,
                published: vec![Publish { container: PORT, host: host_port }],
                volumes: vec![],
                extra_networks: vec![],
                files: vec![(CONFIG.into(), 0o644, cx.fixtures.auth0.clone())],
                entrypoint: Some(vec![
                    mount_point(AUTH0),
                    "--config".into(),
                    CONFIG.into(),
                    "--listen".into(),
                    format!("0.0.0.0:{PORT}"),
                    "--public-url".into(),
                    public_url,
                ]),
                user: Some("nobody".into()),
                mounts: vec![(binary.clone(), mount_point(AUTH0))],
                ..Default::default()
            }
        })
        .collect()
}

pub fn endpoint(state: &RunState) -> Option<Auth0Endpoint> {
    let inst = state.instances.iter().find(|i| i.service == ServiceKind::Auth0.as_str())?;
    let c = &state.credentials;
    Some(Auth0Endpoint {
        host: *inst.published.get(&PORT)?,
        audience: c.auth0_audience.clone(),
        client_id: c.auth0_client_id.clone(),
        client_secret: c.auth0_client_secret.clone(),
        admin_token: c.auth0_admin_token.clone(),
    })
}

/// The discovery document answers once the keys exist and it listens.
pub async fn probe(_state: &RunState, inst: &InstanceState) -> Result<(), String> {
    let addr = inst.published.get(&PORT).ok_or("no published port")?;
    let url = format!("http://{addr}/.well-known/openid-configuration");
    let r = request("GET", &url, &[], "", Duration::from_secs(3)).await?;
    match r.status {
        200 => Ok(()),
        s => Err(format!("discovery answered {s}")),
    }
}

/// The names express-openid-connect and the Auth0 SDKs read.
pub fn env(state: &RunState) -> Vec<(String, String)> {
    let Some(ep) = endpoint(state) else { return vec![] };
    vec![
        ("AUTH0_DOMAIN".into(), ep.host.to_string()),
        ("AUTH0_ISSUER_BASE_URL".into(), ep.url()),
        ("AUTH0_ISSUER".into(), ep.issuer()),
        ("AUTH0_JWKS_URI".into(), format!("{}/.well-known/jwks.json", ep.url())),
        ("AUTH0_AUDIENCE".into(), ep.audience.clone()),
        ("AUTH0_CLIENT_ID".into(), ep.client_id.clone()),
        ("AUTH0_CLIENT_SECRET".into(), ep.client_secret.clone()),
    ]
}

/// A token for the tenant's machine-to-machine client, got as an
/// application configured by [`env`]'s names gets one (the client
/// credentials grant).
pub async fn client_token(env: &BTreeMap<String, String>) -> Result<String, String> {
    let get = |k: &str| env.get(k).cloned().ok_or(format!("{k} is not set (`voyager-sim env` sets it)"));
    let grant = serde_json::json!({
        "grant_type": "client_credentials", "client_id": get("AUTH0_CLIENT_ID")?,
        "client_secret": get("AUTH0_CLIENT_SECRET")?, "audience": get("AUTH0_AUDIENCE")?,
    });
    let url = format!("{}/oauth/token", get("AUTH0_ISSUER_BASE_URL")?.trim_end_matches('/'));
    let headers = [("content-type", "application/json")];
    let r = request("POST", &url, &headers, &grant.to_string(), Duration::from_secs(30)).await?;
    let v: serde_json::Value = serde_json::from_str(&r.body).map_err(|_| format!("token: HTTP {}", r.status))?;
    v["access_token"].as_str().map(str::to_string).ok_or(format!("token: HTTP {}: {}", r.status, r.body.trim()))
}

/// The service's contract with the harness (see [`super::Service`]).
pub struct Auth0;

#[async_trait::async_trait]
impl super::Service for Auth0 {
    fn specs(&self, cx: &SpecContext) -> Vec<ContainerSpec> {
        specs(cx)
    }
    fn companion(&self, _images: crate::images::ImageSet) -> Option<crate::companion::Companion> {
        Some(AUTH0)
    }
    fn needs_host_port(&self) -> bool {
        // The issuer URL holds the tenant's host port.
        true
    }
    async fn probe(&self, cx: &super::ProbeContext<'_>, inst: &InstanceState) -> Result<(), String> {
        probe(cx.state, inst).await
    }
    fn env(&self, state: &RunState) -> Vec<(String, String)> {
        env(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_hands_out_the_fixtures_machine_client_and_audience() {
        let t = tenant_settings(crate::fixtures::BUILTIN_AUTH0);
        assert_eq!(t.audience, "voyager-api");
        let (id, secret) = t.machine_client.expect("the fixture has a client_credentials client");
        assert!(!id.is_empty() && !secret.is_empty());
    }
}

#[cfg(test)]
mod spec_tests {
    use super::*;
    use crate::images::ImageSet;

    #[test]
    fn the_tenant_runs_our_binary_with_the_fixture_and_its_host_url_as_issuer() {
        for set in [ImageSet::Offline, ImageSet::Upstream] {
            let v = super::super::test_specs(ServiceKind::Auth0, set);
            let s = &v[0];
            assert_eq!(s.mounts, [("/opt/bin/voyager-auth0".to_string(), mount_point(AUTH0))]);
            let entry = s.entrypoint.as_ref().unwrap().join(" ");
            assert!(entry.ends_with("--public-url http://127.0.0.1:41234"), "{entry}");
            assert_eq!(s.published, vec![Publish { container: PORT, host: Some(41234) }]);
            assert_eq!(s.files[0].0, CONFIG);
            assert_eq!(s.user.as_deref(), Some("nobody"), "the mock needs no root");
            assert!(!s.env["AUTH0_MOCK_ADMIN_TOKEN"].is_empty());
        }
    }
}
