//! PostgreSQL 15 shaped like RDS Multi-AZ: a primary, a synchronous standby
//! in another AZ (promoted on failover), an asynchronous read replica in a
//! third, and writer and reader endpoints. The endpoints are one HAProxy
//! container (`postgres-endpoints`) on every AZ's private subnet and owned by
//! none, as RDS's DNS endpoints are; the harness points the writer at the
//! current primary through HAProxy's runtime API, as RDS's control plane
//! flips DNS. Instances are reached from the host on 127.0.0.1 and inside the
//! VPC on their fixed addresses.

pub mod backup;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::SpecContext;
use crate::images::{haproxy_image, image_for};
use crate::runtime::network::network_name;
use crate::spec::{ContainerSpec, Publish};
use crate::stack::{ServiceKind, Stack, Tier};
use crate::state::{InstanceState, RunState};

pub const PORT: u16 = 5432;
pub const DATA_DIR: &str = "/var/lib/postgresql/data";
/// The endpoints container: writer and reader listeners and HAProxy's
/// runtime API.
pub const ENDPOINTS: &str = "postgres-endpoints";
pub const WRITER_PORT: u16 = 5432;
pub const READER_PORT: u16 = 5433;
pub const ADMIN_PORT: u16 = 9999;
/// The endpoints' address in the first AZ's private subnet: below the
/// addresses stack files may use, which start at `parse::FIRST_DERIVED_HOST`.
pub const ENDPOINTS_HOST: u32 = 5;
pub const ENTRYPOINT_PATH: &str = "/usr/local/bin/voyager-pg-entrypoint";
const ENTRYPOINT: &str = include_str!("../../images/recipes/postgres/entrypoint.sh");
const HAPROXY_CFG: &str = "/usr/local/etc/haproxy/haproxy.cfg";

/// Connection settings for a PostgreSQL endpoint or instance. `Debug` hides
/// the password so an endpoint can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresEndpoint {
    /// The instance, or `postgres-endpoints` for the writer and reader.
    pub instance: String,
    /// 127.0.0.1 and the published port: for clients on the host.
    pub host: SocketAddr,
    /// The address inside the VPC: for containers in the stack.
    pub vpc: SocketAddr,
    pub user: String,
    pub password: String,
    pub database: String,
}

impl PostgresEndpoint {
    pub fn url(&self) -> String {
        format!("postgres://{}:{}@{}/{}", self.user, self.password, self.host, self.database)
    }

    pub fn config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(self.host.ip().to_string())
            .port(self.host.port())
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.database);
        c.connect_timeout(Duration::from_secs(3));
        c
    }

    /// Connect, run one statement, and return its rows' first columns as text.
    pub async fn query_strings(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let (client, conn) = self.config().connect(tokio_postgres::NoTls).await.map_err(|e| db_error(&e))?;
        let task = tokio::spawn(conn);
        let rows = client.simple_query(sql).await.map_err(|e| db_error(&e));
        drop(client);
        let _ = task.await;
        let mut out = vec![];
        for m in rows? {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                out.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
            }
        }
        Ok(out)
    }
}

/// A server error's message, not tokio-postgres' generic "db error".
pub fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => {
            // The generic text ("db error", "error connecting to server") is
            // useless alone; the cause says what happened.
            let cause = std::error::Error::source(e).map(|s| format!(": {s}")).unwrap_or_default();
            format!("{e}{cause}")
        }
    }
}

impl fmt::Debug for PostgresEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresEndpoint")
            .field("instance", &self.instance)
            .field("host", &self.host)
            .field("vpc", &self.vpc)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("database", &self.database)
            .finish()
    }
}

/// What a failover did and how long the writer endpoint refused writes.
#[derive(Debug, Clone)]
pub struct Failover {
    pub old_primary: String,
    pub new_primary: String,
    /// From the old primary going down to the first write through the
    /// writer endpoint that succeeded.
    pub writer_unavailable: Duration,
    /// From the start of the rebuild to the old primary streaming as the
    /// new synchronous standby.
    pub old_primary_rejoined_after: Duration,
    pub total: Duration,
}

/// The name a node replicates under (`application_name`): SQL-friendly.
pub fn replication_name(instance: &str) -> String {
    instance.replace('-', "_")
}

/// `synchronous_standby_names` for a primary whose standbys are these.
pub fn sync_names(standbys: &[&str]) -> String {
    if standbys.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = standbys.iter().map(|s| replication_name(s)).collect();
        format!("FIRST 1 ({})", names.join(", "))
    }
}

pub fn specs(cx: &SpecContext) -> Vec<ContainerSpec> {
    let Some(svc) = cx.stack.service(ServiceKind::Postgres) else { return vec![] };
    let primary = cx.stack.with_role(ServiceKind::Postgres, "primary")[0];
    let standbys: Vec<&str> =
        cx.stack.with_role(ServiceKind::Postgres, "standby").iter().map(|i| i.name.as_str()).collect();
    let creds = cx.credentials;
    let backups =
        backup::env(cx.stack, cx.images, cx.fixtures.s3.backups_bucket(), &cx.fixtures.s3.region, &creds.postgres_user);
    let archive_timeout =
        cx.stack.rds.as_ref().map(|r| r.archive_timeout).unwrap_or(crate::stack::model::DEFAULT_ARCHIVE_TIMEOUT);
    let mut out: Vec<ContainerSpec> = svc
        .instances
        .iter()
        .map(|inst| {
            let az = cx.stack.az(&inst.az).expect("validated");
            let mut env: BTreeMap<String, String> = [
                ("POSTGRES_USER", creds.postgres_user.clone()),
                ("POSTGRES_PASSWORD", creds.postgres_password.clone()),
                ("POSTGRES_DB", creds.postgres_db.clone()),
                ("POSTGRES_REPLICATION_PASSWORD", creds.postgres_replication_password.clone()),
                ("PGDATA", DATA_DIR.into()),
                ("VOYAGER_PG_ROLE", inst.role.clone()),
                ("VOYAGER_PG_NAME", replication_name(&inst.name)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            if inst.role == "primary" {
                env.insert("VOYAGER_PG_SYNC".into(), sync_names(&standbys));
            } else {
                env.insert("VOYAGER_PG_PRIMARY".into(), primary.address.to_string());
            }
            let mut cmd: Vec<String> = [
                "postgres",
                "-c",
                "wal_level=replica",
                "-c",
                "max_wal_senders=10",
                "-c",
                "wal_keep_size=512MB",
                "-c",
                "hot_standby=on",
                // Keeps pg_rewind possible for tools that want it.
                "-c",
                "wal_log_hints=on",
                // A killed peer sends no FIN: without short timeouts a dead
                // standby's walsender lingers for a minute and, as the
                // named synchronous standby, holds every commit.
                "-c",
                "wal_sender_timeout=5s",
                "-c",
                "wal_receiver_timeout=5s",
                "-c",
                "wal_receiver_status_interval=1s",
                "-c",
                "max_connections=200",
            ]
            .map(String::from)
            .to_vec();
            if let Some(b) = &backups {
                env.extend(b.clone());
                cmd.extend(backup::archive_args(archive_timeout));
            }
            ContainerSpec {
                instance: inst.name.clone(),
                image: image_for(ServiceKind::Postgres, cx.images),
                env,
                cmd,
                network: network_name(cx.stack_name, &az.name, inst.tier),
                address: inst.address,
                published: vec![Publish::any(PORT)],
                volumes: vec![("data".into(), DATA_DIR.into())],
                extra_networks: vec![],
                files: vec![(ENTRYPOINT_PATH.into(), 0o755, ENTRYPOINT.into())],
                entrypoint: Some(vec![ENTRYPOINT_PATH.into()]),
                user: Some("postgres".into()),
                mounts: vec![],
                ..Default::default()
            }
        })
        .collect();
    out.push(endpoints_spec(cx));
    out
}

fn endpoints_spec(cx: &SpecContext) -> ContainerSpec {
    let first = &cx.stack.azs[0];
    ContainerSpec {
        instance: ENDPOINTS.into(),
        image: haproxy_image(cx.images),
        env: BTreeMap::new(),
        cmd: ["-W", "-db", "-f", HAPROXY_CFG].map(String::from).to_vec(),
        network: network_name(cx.stack_name, &first.name, Tier::Private),
        address: first.private.nth(ENDPOINTS_HOST),
        published: vec![Publish::any(WRITER_PORT), Publish::any(READER_PORT), Publish::any(ADMIN_PORT)],
        volumes: vec![],
        extra_networks: cx.stack.azs[1..]
            .iter()
            .map(|az| network_name(cx.stack_name, &az.name, Tier::Private))
            .collect(),
        // The same host number in every AZ: an address Docker picked would
        // be its lowest free one, the .2 the VPC's resolver holds.
        extra_addresses: cx.stack.azs[1..]
            .iter()
            .map(|az| (network_name(cx.stack_name, &az.name, Tier::Private), az.private.nth(ENDPOINTS_HOST)))
            .collect(),
        files: vec![(HAPROXY_CFG.into(), 0o644, haproxy_config(cx.stack))],
        entrypoint: Some(vec!["haproxy".into()]),
        user: Some("haproxy".into()),
        mounts: vec![],
        ..Default::default()
    }
}

/// HAProxy's configuration: the writer goes to the primary (the other
/// promotable nodes are listed but disabled until a failover enables one),
/// the reader to the read replicas, or to the primary when there are none.
pub fn haproxy_config(stack: &Stack) -> String {
    let server = |name: &str, addr: std::net::Ipv4Addr, disabled: bool| {
        format!("    server {name} {addr}:{PORT} check{}\n", if disabled { " disabled" } else { "" })
    };
    let mut writer = String::new();
    for role in ["primary", "standby"] {
        for i in stack.with_role(ServiceKind::Postgres, role) {
            writer += &server(&i.name, i.address, role != "primary");
        }
    }
    let replicas = stack.with_role(ServiceKind::Postgres, "replica");
    let readers = if replicas.is_empty() { stack.with_role(ServiceKind::Postgres, "primary") } else { replicas };
    let reader: String = readers.iter().map(|i| server(&i.name, i.address, false)).collect();
    format!(
        "global\n    stats socket ipv4@0.0.0.0:{ADMIN_PORT} level admin\n\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 1h\n    timeout server 1h\n    \
         default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions\n\n\
         frontend writer\n    bind :{WRITER_PORT}\n    default_backend writer\n\n\
         frontend reader\n    bind :{READER_PORT}\n    default_backend reader\n\n\
         backend writer\n{writer}\nbackend reader\n{reader}"
    )
}

fn endpoint_at(state: &RunState, inst: &InstanceState, container_port: u16, vpc_port: u16) -> Option<PostgresEndpoint> {
    Some(PostgresEndpoint {
        instance: inst.name.clone(),
        host: *inst.published.get(&container_port)?,
        vpc: SocketAddr::new(inst.address.into(), vpc_port),
        user: state.credentials.postgres_user.clone(),
        password: state.credentials.postgres_password.clone(),
        database: state.credentials.postgres_db.clone(),
    })
}

fn find<'a>(state: &'a RunState, name: &str) -> Option<&'a InstanceState> {
    state.instances.iter().find(|i| i.name == name && i.service == ServiceKind::Postgres.as_str())
}

/// The writer endpoint: always the current primary.
pub fn writer(state: &RunState) -> Option<PostgresEndpoint> {
    endpoint_at(state, find(state, ENDPOINTS)?, WRITER_PORT, WRITER_PORT)
}

/// The reader endpoint: the read replicas.
pub fn reader(state: &RunState) -> Option<PostgresEndpoint> {
    endpoint_at(state, find(state, ENDPOINTS)?, READER_PORT, READER_PORT)
}

/// One database node, bypassing the endpoints.
pub fn instance(state: &RunState, name: &str) -> Option<PostgresEndpoint> {
    endpoint_at(state, find(state, name).filter(|i| i.name != ENDPOINTS)?, PORT, PORT)
}

/// The database nodes of a run: not the endpoints container, nor restored
/// instances (databases of their own, outside replication).
pub fn nodes(state: &RunState) -> impl Iterator<Item = &InstanceState> {
    state.instances.iter().filter(|i| {
        i.service == ServiceKind::Postgres.as_str() && i.name != ENDPOINTS && i.role != backup::RESTORED_ROLE
    })
}

/// The instances `voyager-sim restore postgres` made.
pub fn restored(state: &RunState) -> impl Iterator<Item = &InstanceState> {
    state.instances.iter().filter(|i| i.service == ServiceKind::Postgres.as_str() && i.role == backup::RESTORED_ROLE)
}

/// Ready means: a node answers a query; the endpoints container routes a
/// writer connection to a server that is not in recovery.
pub async fn probe(state: &RunState, inst: &InstanceState) -> Result<(), String> {
    if inst.name == ENDPOINTS {
        let w = writer(state).ok_or("no writer endpoint")?;
        let rows = w.query_strings("SELECT pg_is_in_recovery()").await?;
        return match rows.first().and_then(|r| r[0].as_deref()) {
            Some("f") => Ok(()),
            other => Err(format!("the writer endpoint reaches a server in recovery ({other:?})")),
        };
    }
    let ep = endpoint_at(state, inst, PORT, PORT).ok_or("no published port")?;
    ep.query_strings("SELECT 1").await.map(|_| ())
}

/// Replication as the primary reports it: (name, state, sync_state).
pub async fn replication(primary: &PostgresEndpoint) -> Result<Vec<(String, String, String)>, String> {
    let rows =
        primary.query_strings("SELECT application_name, state, sync_state FROM pg_stat_replication ORDER BY 1").await?;
    Ok(rows
        .into_iter()
        .map(|r| (r[0].clone().unwrap_or_default(), r[1].clone().unwrap_or_default(), r[2].clone().unwrap_or_default()))
        .collect())
}

/// The primary's view is the whole story: every standby streaming and
/// synchronous, every replica streaming.
pub async fn replication_complete(state: &RunState) -> Result<(), String> {
    let primary = nodes(state).find(|i| i.role == "primary").ok_or("no primary")?;
    let ep = endpoint_at(state, primary, PORT, PORT).ok_or("primary has no port")?;
    let repl = replication(&ep).await?;
    for node in nodes(state).filter(|i| i.role != "primary") {
        let want = if node.role == "standby" { "sync" } else { "async" };
        let name = replication_name(&node.name);
        match repl.iter().find(|(n, _, _)| *n == name) {
            Some((_, st, sync)) if st == "streaming" && sync == want => {}
            Some((_, st, sync)) => return Err(format!("{} is {st}/{sync}, want streaming/{want}", node.name)),
            None => return Err(format!("{} is not replicating from {}", node.name, primary.name)),
        }
    }
    Ok(())
}

/// Wait until replication is as the roles say.
pub async fn provision(state: &RunState, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match replication_complete(state).await.and(endpoints_answer(state).await) {
            Ok(()) => return create_schema(state).await,
            Err(e) if start.elapsed() > timeout => {
                return Err(format!("replication not established after {timeout:?}: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The platform's own table, which `voyager-api` writes runs to. Made here,
/// before Vault issues its first database credentials: the role's grants
/// (`ON ALL TABLES IN SCHEMA public`) cover the tables that exist then.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS voyager_runs (\
    id text PRIMARY KEY, \
    subject text NOT NULL, \
    zone text NOT NULL, \
    created_at timestamptz NOT NULL DEFAULT now())";

async fn create_schema(state: &RunState) -> Result<(), String> {
    let w = writer(state).ok_or("no writer endpoint")?;
    w.query_strings(SCHEMA).await.map(|_| ()).map_err(|e| format!("creating the platform's schema: {e}"))
}

/// The writer and reader endpoints each answer a query: HAProxy marks a
/// server up only after its health checks pass, and until then it closes
/// client connections, so replication alone does not make the service
/// ready for applications.
async fn endpoints_answer(state: &RunState) -> Result<(), String> {
    for ep in [writer(state), reader(state)].into_iter().flatten() {
        ep.query_strings("SELECT 1").await.map_err(|e| format!("{} endpoint: {e}", ep.host))?;
    }
    Ok(())
}

/// Each node's role as it sees itself, for `status`.
pub async fn roles(state: &RunState) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for node in nodes(state) {
        let Some(ep) = endpoint_at(state, node, PORT, PORT) else { continue };
        let role = match ep.query_strings("SELECT pg_is_in_recovery()").await {
            Ok(r) if r.first().and_then(|r| r[0].as_deref()) == Some("f") => match replication(&ep).await {
                Ok(repl) => {
                    let parts: Vec<String> = repl.iter().map(|(n, st, sync)| format!("{n} {sync} {st}")).collect();
                    format!("primary; {}", if parts.is_empty() { "no replicas".into() } else { parts.join(", ") })
                }
                Err(_) => "primary".into(),
            },
            Ok(_) => {
                let recv =
                    ep.query_strings("SELECT status, sender_host FROM pg_stat_wal_receiver").await.unwrap_or_default();
                match recv.first() {
                    Some(r) => format!(
                        "{} of {}, {}",
                        node.role,
                        r[1].clone().unwrap_or_default(),
                        r[0].clone().unwrap_or_default()
                    ),
                    None => format!("{}, not receiving WAL", node.role),
                }
            }
            Err(_) => continue,
        };
        out.insert(node.name.clone(), role);
    }
    if let Some(ep) = find(state, ENDPOINTS) {
        let target = nodes(state).find(|i| i.role == "primary").map(|i| i.name.clone()).unwrap_or_default();
        out.insert(ep.name.clone(), format!("writer -> {target}"));
    }
    out
}

/// The stack's RDS lock, held by every change of which node is what (the
/// control plane's actions, a planned failover, a heal starting a node the
/// control plane fenced).
pub async fn rds_lock(stack: &str) -> std::io::Result<crate::runtime::lock::FileLock> {
    let p = crate::state::path(stack).with_extension("rds.lock");
    std::fs::create_dir_all(p.parent().expect("has a parent"))?;
    crate::runtime::lock::FileLock::acquire(&p, &crate::progress::Progress::silent(), "database action").await
}

/// One command to the endpoints' HAProxy runtime API.
pub async fn haproxy_admin(state: &RunState, command: &str) -> Result<String, String> {
    let ep = find(state, ENDPOINTS).ok_or("no endpoints container")?;
    super::haproxy::admin(*ep.published.get(&ADMIN_PORT).ok_or("no admin port")?, command).await
}

pub fn env(state: &RunState) -> Vec<(String, String)> {
    let Some(w) = writer(state) else { return vec![] };
    let mut out = vec![("DATABASE_URL".to_string(), w.url())];
    if let Some(r) = reader(state) {
        out.push(("DATABASE_READER_URL".into(), r.url()));
    }
    out.extend([
        ("PGHOST".into(), w.host.ip().to_string()),
        ("PGPORT".into(), w.host.port().to_string()),
        ("PGUSER".into(), w.user.clone()),
        ("PGPASSWORD".into(), w.password.clone()),
        ("PGDATABASE".into(), w.database.clone()),
    ]);
    // A restored instance is reached on an endpoint of its own, as a
    // restored RDS instance is: `postgres-restore-1` -> POSTGRES_RESTORE_1_URL.
    for r in restored(state) {
        if let Some(ep) = instance(state, &r.name) {
            out.push((restored_env_name(&r.name), ep.url()));
        }
    }
    out
}

/// The `env` name of a restored instance's URL.
pub fn restored_env_name(instance: &str) -> String {
    format!("{}_URL", instance.to_uppercase().replace('-', "_"))
}

/// The service's contract with the harness (see [`super::Service`]).
pub struct Postgres;

#[async_trait::async_trait]
impl super::Service for Postgres {
    fn specs(&self, cx: &SpecContext) -> Vec<ContainerSpec> {
        specs(cx)
    }
    async fn probe(&self, cx: &super::ProbeContext<'_>, inst: &InstanceState) -> Result<(), String> {
        probe(cx.state, inst).await
    }
    async fn provision(&self, cx: &super::ProvisionContext<'_>) -> Result<(), String> {
        provision(cx.state, cx.timeout).await
    }
    async fn roles(&self, state: &RunState) -> BTreeMap<String, String> {
        roles(state).await
    }
    fn env(&self, state: &RunState) -> Vec<(String, String)> {
        env(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::ImageSet;
    use crate::state::Credentials;

    fn specs_for(set: ImageSet) -> Vec<ContainerSpec> {
        let s = crate::harness::builtin_stack();
        let creds = Credentials {
            postgres_password: "p".into(),
            postgres_replication_password: "r".into(),
            ..Credentials::generate()
        };
        let (ports, fx) = (Default::default(), crate::fixtures::builtin());
        let cx = SpecContext {
            stack: &s,
            stack_name: "voyager",
            images: set,
            credentials: &creds,
            host_ports: &ports,
            fixtures: &fx,
            companions: &BTreeMap::new(),
        };
        specs(&cx)
    }

    #[test]
    fn primary_in_a_sync_standby_in_b_replica_in_c() {
        let v = specs_for(ImageSet::Offline);
        let got: Vec<(String, String, String, Option<String>)> = v[..3]
            .iter()
            .map(|s| {
                (
                    s.instance.clone(),
                    s.address.to_string(),
                    s.env["VOYAGER_PG_ROLE"].clone(),
                    s.env.get("VOYAGER_PG_PRIMARY").cloned(),
                )
            })
            .collect();
        let p = Some("10.0.1.10".to_string());
        assert_eq!(
            got,
            [
                ("postgres-a".into(), "10.0.1.10".into(), "primary".into(), None),
                ("postgres-b".into(), "10.0.2.10".into(), "standby".into(), p.clone()),
                ("postgres-c".into(), "10.0.3.10".into(), "replica".into(), p),
            ]
        );
        assert_eq!(v[0].env["VOYAGER_PG_SYNC"], "FIRST 1 (postgres_b)");
        assert_eq!(v[0].env["POSTGRES_PASSWORD"], "p");
        assert_eq!(v[1].env["POSTGRES_REPLICATION_PASSWORD"], "r");
    }

    #[test]
    fn the_endpoints_span_every_az_and_the_writer_starts_on_the_primary() {
        let v = specs_for(ImageSet::Offline);
        let e = v.iter().find(|s| s.instance == ENDPOINTS).unwrap();
        assert_eq!((e.network.as_str(), e.address.to_string()), ("vs-voyager-a-private", "10.0.1.5".to_string()));
        assert_eq!(e.extra_networks, ["vs-voyager-b-private", "vs-voyager-c-private"]);
        let cfg = &e.files[0].2;
        assert!(cfg.contains("backend writer\n    server postgres-a 10.0.1.10:5432 check\n    server postgres-b 10.0.2.10:5432 check disabled\n"), "{cfg}");
        assert!(cfg.contains("backend reader\n    server postgres-c 10.0.3.10:5432 check\n"), "{cfg}");
        assert!(!cfg.contains("postgres-c 10.0.3.10:5432 check disabled"));
    }

    #[test]
    fn both_image_sets_run_the_same_entrypoint_and_differ_only_in_image_and_backups() {
        let (off, up) = (specs_for(ImageSet::Offline), specs_for(ImageSet::Upstream));
        assert_eq!(up[0].image, crate::images::UPSTREAM_POSTGRES);
        assert_eq!(up[3].image, crate::images::UPSTREAM_HAPROXY);
        assert!(off[0].image.starts_with("voyager-sim/postgres:") && off[3].image.starts_with("voyager-sim/haproxy:"));
        for (mut o, u) in off.into_iter().zip(up) {
            // The official image has no pgBackRest: it archives nothing.
            assert!(
                !u.env.keys().any(|k| k.starts_with("PGBACKREST_")) && !u.cmd.iter().any(|c| c.contains("archive"))
            );
            if o.instance != ENDPOINTS {
                assert!(o.cmd.contains(&"archive_mode=on".to_string()), "{:?}", o.cmd);
            }
            o.env.retain(|k, _| !k.starts_with("PGBACKREST_"));
            if let Some(at) = o.cmd.iter().position(|c| c == "archive_mode=on") {
                o.cmd.truncate(at - 1);
            }
            assert_eq!(ContainerSpec { image: String::new(), ..o }, ContainerSpec { image: String::new(), ..u });
        }
    }

    #[test]
    fn endpoint_debug_hides_the_password() {
        let ep = PostgresEndpoint {
            instance: "postgres-a".into(),
            host: "127.0.0.1:5555".parse().unwrap(),
            vpc: "10.0.1.10:5432".parse().unwrap(),
            user: "u".into(),
            password: "hunter2".into(),
            database: "d".into(),
        };
        assert!(!format!("{ep:?}").contains("hunter2"));
        assert_eq!(ep.url(), "postgres://u:hunter2@127.0.0.1:5555/d");
    }

    #[test]
    fn a_restored_instance_has_a_url_of_its_own_in_env() {
        assert_eq!(restored_env_name("postgres-restore-1"), "POSTGRES_RESTORE_1_URL");
        assert_eq!(restored_env_name("pitr"), "PITR_URL");
    }

    #[test]
    fn sync_names_quote_nothing_and_list_every_standby() {
        assert_eq!(sync_names(&[]), "");
        assert_eq!(sync_names(&["postgres-b", "postgres-d"]), "FIRST 1 (postgres_b, postgres_d)");
    }
}
