//! PostgreSQL 15: one instance per declared placement, reached from the host
//! through a port published on 127.0.0.1 and inside the VPC on its fixed
//! address. Ready when a real connection runs a query.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::SpecContext;
use crate::images::image_for;
use crate::runtime::network::network_name;
use crate::spec::{ContainerSpec, Publish};
use crate::stack::ServiceKind;
use crate::state::{InstanceState, RunState};

pub const PORT: u16 = 5432;
pub const DATA_DIR: &str = "/var/lib/postgresql/data";

/// Connection settings for one PostgreSQL instance. `Debug` hides the password
/// so an endpoint can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresEndpoint {
    pub instance: String,
    /// 127.0.0.1 and the published port: for clients on the host.
    pub host: SocketAddr,
    /// The fixed address inside the VPC: for containers in the stack.
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

pub fn specs(cx: &SpecContext) -> Vec<ContainerSpec> {
    let Some(svc) = cx.stack.service(ServiceKind::Postgres) else {
        return vec![];
    };
    svc.instances
        .iter()
        .map(|inst| {
            let az = cx.stack.az(&inst.az).expect("validated");
            ContainerSpec {
                instance: inst.name.clone(),
                image: image_for(ServiceKind::Postgres, cx.images),
                env: BTreeMap::from([
                    ("POSTGRES_USER".into(), cx.credentials.postgres_user.clone()),
                    ("POSTGRES_PASSWORD".into(), cx.credentials.postgres_password.clone()),
                    ("POSTGRES_DB".into(), cx.credentials.postgres_db.clone()),
                    ("PGDATA".into(), DATA_DIR.into()),
                ]),
                // Both image sets take the official image's `postgres -c` form.
                cmd: vec![
                    "postgres".into(),
                    "-c".into(),
                    "wal_level=replica".into(),
                    "-c".into(),
                    "max_wal_senders=10".into(),
                ],
                network: network_name(cx.stack_name, az, inst.tier),
                address: inst.address,
                published: vec![Publish::any(PORT)],
                volumes: vec![("data".into(), DATA_DIR.into())],
            }
        })
        .collect()
}

/// The endpoint of one instance of a run.
pub fn endpoint(state: &RunState, inst: &InstanceState) -> Option<PostgresEndpoint> {
    Some(PostgresEndpoint {
        instance: inst.name.clone(),
        host: *inst.published.get(&PORT)?,
        vpc: SocketAddr::new(inst.address.into(), PORT),
        user: state.credentials.postgres_user.clone(),
        password: state.credentials.postgres_password.clone(),
        database: state.credentials.postgres_db.clone(),
    })
}

/// The first PostgreSQL instance: the writer until the data tier adds roles.
pub fn primary(state: &RunState) -> Option<PostgresEndpoint> {
    state.instances.iter().find(|i| i.service == ServiceKind::Postgres.as_str()).and_then(|i| endpoint(state, i))
}

pub async fn probe(state: &RunState, inst: &InstanceState) -> Result<(), String> {
    let ep = endpoint(state, inst).ok_or("no published port")?;
    let (client, conn) = ep.config().connect(tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    let r = client.query_one("SELECT 1", &[]).await.map(|_| ()).map_err(|e| e.to_string());
    drop(client);
    let _ = task.await;
    r
}

pub fn env(state: &RunState) -> Vec<(String, String)> {
    let Some(ep) = primary(state) else {
        return vec![];
    };
    vec![
        ("DATABASE_URL".into(), ep.url()),
        ("PGHOST".into(), ep.host.ip().to_string()),
        ("PGPORT".into(), ep.host.port().to_string()),
        ("PGUSER".into(), ep.user.clone()),
        ("PGPASSWORD".into(), ep.password.clone()),
        ("PGDATABASE".into(), ep.database.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::ImageSet;
    use crate::state::Credentials;

    fn stack() -> crate::stack::Stack {
        let text = include_str!("../../../fixtures/voyager.toml");
        crate::stack::parse_stack("voyager.toml".as_ref(), text).unwrap()
    }

    fn spec_for(set: ImageSet) -> ContainerSpec {
        let s = stack();
        let creds = Credentials {
            postgres_user: "u".into(),
            postgres_password: "p".into(),
            postgres_db: "d".into(),
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
        };
        let mut v = specs(&cx);
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    #[test]
    fn both_image_sets_give_the_same_container_but_the_image() {
        let (off, up) = (spec_for(ImageSet::Offline), spec_for(ImageSet::Upstream));
        assert!(off.image.starts_with("voyager-sim/postgres:"), "{}", off.image);
        assert_eq!(up.image, crate::images::UPSTREAM_POSTGRES);
        assert_eq!(ContainerSpec { image: String::new(), ..off }, ContainerSpec { image: String::new(), ..up });
    }

    #[test]
    fn postgres_sits_in_az_a_private_on_its_fixed_address() {
        let s = spec_for(ImageSet::Offline);
        assert_eq!(s.instance, "postgres-a");
        assert_eq!(s.network, "vs-voyager-a-private");
        assert_eq!(s.address.to_string(), "10.0.1.10");
        assert_eq!(s.published, vec![Publish::any(5432)]);
        assert_eq!(s.env["POSTGRES_PASSWORD"], "p");
        assert_eq!(s.volumes, vec![("data".to_string(), DATA_DIR.to_string())]);
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
}
