//! What a running stack is, as saved between commands: `up` writes it, and
//! `status`, `env` and `down` read it. Holds credentials, so the file is
//! readable by its owner only.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::images::ImageSet;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunState {
    pub run_id: String,
    pub stack: String,
    pub stack_file: Option<PathBuf>,
    pub vpc: String,
    pub images: ImageSet,
    pub started_unix: u64,
    pub instances: Vec<InstanceState>,
    pub credentials: Credentials,
    /// The stack as started, with the roles it has now (failover swaps
    /// them): what instances are re-created from.
    #[serde(default)]
    pub stack_toml: String,
    /// Faults in force, oldest first: what `heal` undoes.
    #[serde(default)]
    pub faults: Vec<crate::fault::Fault>,
}

impl RunState {
    /// The stack as it runs now (roles as the control plane last set
    /// them), parsed again from `stack_toml`, which was written valid.
    pub fn parsed_stack(&self) -> Result<crate::stack::Stack, String> {
        crate::stack::parse_stack(std::path::Path::new("<run state>"), &self.stack_toml).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceState {
    pub name: String,
    pub service: String,
    pub az: String,
    pub subnet: String,
    pub address: Ipv4Addr,
    pub container: String,
    /// The instance's role when the stack started (see `ServiceKind::roles`).
    #[serde(default)]
    pub role: String,
    /// Container port → host address it is published on.
    pub published: BTreeMap<u16, SocketAddr>,
}

/// Secrets made fresh for each run, so nothing guessable is ever listening.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    pub postgres_user: String,
    pub postgres_password: String,
    pub postgres_db: String,
    /// KRaft cluster id: 16 random bytes, base64url without padding.
    #[serde(default)]
    pub kafka_cluster_id: String,
    #[serde(default)]
    pub postgres_replication_password: String,
    #[serde(default)]
    pub influxdb_password: String,
    /// InfluxDB's `shared-secret`: what its JWT bearer tokens are signed
    /// with (absent in state files older than it: basic auth then).
    #[serde(default)]
    pub influxdb_shared_secret: String,
    /// The database `env` points applications at.
    #[serde(default)]
    pub influxdb_database: String,
    /// Bearer token of the Auth0 mock's admin API (key rotation).
    #[serde(default)]
    pub auth0_admin_token: String,
    /// A machine-to-machine client of the Auth0 fixture, for `env`.
    #[serde(default)]
    pub auth0_client_id: String,
    #[serde(default)]
    pub auth0_client_secret: String,
    #[serde(default)]
    pub auth0_audience: String,
    /// Root token, unseal keys and the scoped token, once Vault is
    /// initialised (after readiness, so absent until then).
    #[serde(default)]
    pub vault: Option<crate::services::vault::VaultSecrets>,
    /// The S3 fixture's region, for `env`.
    #[serde(default)]
    pub s3_region: String,
    /// kubeadm's bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`): what nodes
    /// join the cluster with.
    #[serde(default)]
    pub kube_bootstrap_token: String,
    /// The ALB listener's certificate and key, issued by the stack's Vault
    /// PKI before the ALB starts, and the CA that signed it.
    #[serde(default)]
    pub edge_tls: Option<EdgeTls>,
    /// The key of the DNS server's HTTP API (Route 53's control plane).
    #[serde(default)]
    pub route53_api_key: String,
    /// The cluster's read-only identity for Prometheus, made before it
    /// starts (only where both run).
    #[serde(default)]
    pub kube_reader: Option<KubeReader>,
}

/// A service account's token and the cluster CA that signed the API's
/// certificate.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KubeReader {
    pub token: String,
    pub ca: String,
}

impl std::fmt::Debug for KubeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeReader { .. }")
    }
}

/// A TLS server's certificate (PEM, leaf first then its issuer), its
/// private key (PEM) and the CA clients verify it with.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EdgeTls {
    pub certificate: String,
    pub private_key: String,
    pub ca: String,
}

impl std::fmt::Debug for EdgeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EdgeTls { .. }")
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("postgres_user", &self.postgres_user)
            .field("postgres_password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    pub fn generate() -> Credentials {
        use rand::Rng;
        let mut rng = rand::rng();
        // No look-alike characters: these get read off a terminal.
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
        let mut secret =
            || -> String { (0..24).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect() };
        let (postgres_password, postgres_replication_password, influxdb_password) = (secret(), secret(), secret());
        let influxdb_shared_secret = secret();
        let auth0_admin_token = secret();
        let route53_api_key = secret();
        // Kafka's own Uuid.randomUuid draws again when the text starts with
        // '-': kafka-storage's argument parser reads such an id as an option
        // and refuses to format (1 start in 64 failed that way).
        let kafka_cluster_id = loop {
            let id: Vec<u8> = (0..16).map(|_| rng.random()).collect();
            let text = base64url(&id);
            if !text.starts_with('-') {
                break text;
            }
        };
        let mut lower = |n: usize| -> String {
            (0..n).map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])).collect()
        };
        let kube_bootstrap_token = format!("{}.{}", lower(6), lower(16));
        Credentials {
            postgres_user: "voyager".into(),
            postgres_password,
            postgres_db: "voyager".into(),
            kafka_cluster_id,
            postgres_replication_password,
            influxdb_password,
            influxdb_shared_secret,
            influxdb_database: String::new(),
            auth0_admin_token,
            auth0_client_id: String::new(),
            auth0_client_secret: String::new(),
            auth0_audience: String::new(),
            vault: None,
            s3_region: String::new(),
            kube_bootstrap_token,
            edge_tls: None,
            route53_api_key,
            kube_reader: None,
        }
    }
}

/// `VOYAGER_SIM_HOME`, else `$XDG_STATE_HOME/voyager-sim`, else
/// `~/.local/state/voyager-sim`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("VOYAGER_SIM_HOME") {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(x).join("voyager-sim");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/state/voyager-sim")
}

pub fn path(stack: &str) -> PathBuf {
    home().join("stacks").join(format!("{stack}.json"))
}

pub fn load(stack: &str) -> std::io::Result<Option<RunState>> {
    match std::fs::read_to_string(path(stack)) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn save(state: &RunState) -> std::io::Result<()> {
    let p = path(&state.stack);
    std::fs::create_dir_all(p.parent().expect("has a parent"))?;
    let tmp = p.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
    f.write_all(serde_json::to_string_pretty(state).map_err(std::io::Error::other)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(tmp, p)
}

/// The kubeconfig of a stack's Kubernetes tier (what `env` exports as
/// `KUBECONFIG`): beside the run state and, like it, readable by its owner
/// only, since it holds the cluster's admin credentials.
pub fn kubeconfig_path(stack: &str) -> PathBuf {
    home().join("stacks").join(format!("{stack}.kubeconfig"))
}

/// The CA certificate the ALB's listener chains to (what `env` exports as
/// `VOYAGER_CA_CERT`). Public, unlike the files beside it.
pub fn ca_cert_path(stack: &str) -> PathBuf {
    home().join("stacks").join(format!("{stack}.ca.pem"))
}

/// Write a file readable by its owner only, whole or not at all.
pub fn write_private(p: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(p.parent().expect("has a parent"))?;
    let tmp = p.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(tmp, p)
}

/// Change a run's state under a lock, whole: the control plane (its own
/// process) and the CLI both write it, each only the parts it owns, so
/// neither overwrites the other's news with a stale copy.
pub fn update<T>(stack: &str, f: impl FnOnce(&mut RunState) -> T) -> std::io::Result<Option<(RunState, T)>> {
    let p = path(stack);
    std::fs::create_dir_all(p.parent().expect("has a parent"))?;
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(p.with_extension("lock"))?;
    // SAFETY: the fd is valid for the life of `lock`; the lock goes with it.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let Some(mut st) = load(stack)? else { return Ok(None) };
    let out = f(&mut st);
    save(&st)?;
    Ok(Some((st, out)))
}

/// Something the stack's control plane did, as `status` and reports show.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ControlEvent {
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    pub what: String,
}

fn events_path(stack: &str) -> PathBuf {
    home().join("stacks").join(format!("{stack}.control.jsonl"))
}

pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Append one event to the control plane's log.
pub fn record_event(stack: &str, what: &str) -> std::io::Result<()> {
    let p = events_path(stack);
    std::fs::create_dir_all(p.parent().expect("has a parent"))?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(p)?;
    let line = serde_json::to_string(&ControlEvent { at_unix_ms: now_unix_ms(), what: what.to_string() })
        .map_err(std::io::Error::other)?;
    writeln!(f, "{line}")
}

/// The control plane's events since a time (all with 0).
pub fn events_since(stack: &str, since_unix_ms: u64) -> Vec<ControlEvent> {
    std::fs::read_to_string(events_path(stack))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<ControlEvent>(l).ok())
        .filter(|e| e.at_unix_ms >= since_unix_ms)
        .collect()
}

pub fn remove(stack: &str) -> std::io::Result<()> {
    for p in [
        path(stack),
        kubeconfig_path(stack),
        ca_cert_path(stack),
        events_path(stack),
        path(stack).with_extension("lock"),
    ] {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_cluster_ids_are_22_base64url_characters() {
        let id = Credentials::generate().kafka_cluster_id;
        assert_eq!(id.len(), 22, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{id}");
        assert_eq!(base64url(b"\xff\xff\xff"), "____");
        // One id in 64 would start with '-' if drawn plainly; 2000 draws
        // leave that unnoticed with odds near 1e-14.
        for _ in 0..2000 {
            let id = Credentials::generate().kafka_cluster_id;
            assert!(!id.starts_with('-'), "{id} reads as an option to kafka-storage");
        }
        assert_eq!(base64url(b"Ma"), "TWE");
    }

    #[test]
    fn bootstrap_tokens_have_kubeadms_shape() {
        let t = Credentials::generate().kube_bootstrap_token;
        let (id, secret) = t.split_once('.').unwrap();
        assert_eq!((id.len(), secret.len()), (6, 16), "{t}");
        assert!(t.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.'), "{t}");
    }
}
