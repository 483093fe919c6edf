//! The database engine against a real PostgreSQL: the simulator's own
//! (library API, `--only postgres`, VPC 10.230.0.0/16). Credentials are real
//! roles that log in; revoking the lease, its expiry, or revoking the token
//! that asked for it drops the role and ends its sessions.

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vault_lite::{provision, DatabaseTarget, Fixture, VaultClient};
use vaultrs::api::token::requests::CreateTokenRequest;
use voyager_sim::harness::builtin_stack;
use voyager_sim::{ImageSource, PostgresEndpoint, Progress, ServiceKind, Sim};

fn as_user(admin: &PostgresEndpoint, user: &str, password: &str) -> PostgresEndpoint {
    PostgresEndpoint { user: user.into(), password: password.into(), ..admin.clone() }
}

async fn role_exists(admin: &PostgresEndpoint, user: &str) -> bool {
    let rows = admin.query_strings(&format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")).await.unwrap();
    rows[0][0].as_deref() == Some("1")
}

/// Wait (bounded) until `user` is gone from `pg_roles`.
async fn gone_within(admin: &PostgresEndpoint, user: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while role_exists(admin, user).await {
        assert!(start.elapsed() < limit, "{user} still exists after {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    start.elapsed()
}

async fn creds(api: &VaultClient, role: &str) -> (String, String, String, u64) {
    let v = api.read(&format!("database/creds/{role}")).await.unwrap();
    (
        v["lease_id"].as_str().unwrap().to_string(),
        v["data"]["username"].as_str().unwrap().to_string(),
        v["data"]["password"].as_str().unwrap().to_string(),
        v["lease_duration"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn database_credentials_are_real_roles_that_go_when_their_lease_does() {
    let mut stack = builtin_stack().relocated("10.230.0.0/16".parse().unwrap()).unwrap();
    stack.name = "t-vault-db".into();
    let running = Sim::new(stack)
        .with_images(ImageSource::Offline)
        .with_progress(Progress::stderr())
        .with_only(&[ServiceKind::Postgres])
        .start()
        .await
        .unwrap();
    let admin = running.postgres().unwrap();
    admin
        .query_strings("CREATE TABLE runs (id int PRIMARY KEY, status text); INSERT INTO runs VALUES (1, 'queued')")
        .await
        .unwrap();

    let u = common::unsealed().await;
    let target = DatabaseTarget {
        host: admin.host.ip().to_string(),
        port: admin.host.port(),
        database: admin.database.clone(),
        username: admin.user.clone(),
        password: admin.password.clone(),
    };
    let done = provision(&u.url, &u.root_token, &Fixture::builtin(), Some(&target)).await.unwrap();
    assert!(done.database_configured);
    let cfg = u.api.read("database/config/voyager").await.unwrap();
    assert_eq!(cfg["data"]["plugin_name"], "postgresql-database-plugin");
    assert_eq!(cfg["data"]["allowed_roles"], json!(["voyager-app"]));
    assert!(!cfg.to_string().contains(&admin.password), "the admin password is never read back");

    // A connection that cannot be verified is refused.
    let bad = u
        .api
        .raw(
            "POST",
            "database/config/broken",
            Some(&json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": target.connection_url(),
                "username": admin.user, "password": "wrong-password",
            })),
        )
        .await
        .unwrap();
    assert_eq!(bad.0, 400);
    assert!(bad.1["errors"][0].as_str().unwrap().contains("error verifying connection"), "{}", bad.1);

    // Credentials through vaultrs: a real role that logs in and has the
    // grants of the creation statements.
    let vc = vaultrs::database::role::creds(&u.root, "database", "voyager-app").await.unwrap();
    let app = as_user(&admin, &vc.username, &vc.password);
    let who = app.query_strings("SELECT current_user, (SELECT status FROM runs WHERE id = 1)").await.unwrap();
    assert_eq!(who[0], [Some(vc.username.clone()), Some("queued".into())]);
    assert!(vc.username.starts_with("v-root-voyager--"), "{}", vc.username);

    // The lease: id, TTL, renewal capped by max_ttl, lookup.
    let (lease, user, password, ttl) = creds(&u.api, "voyager-app").await;
    assert!(lease.starts_with("database/creds/voyager-app/"), "{lease}");
    assert_eq!(ttl, 3600);
    let renewed =
        u.api.call("PUT", "sys/leases/renew", Some(&json!({ "lease_id": lease, "increment": "2h" }))).await.unwrap();
    assert_eq!((renewed["lease_id"].as_str(), renewed["lease_duration"].as_u64()), (Some(lease.as_str()), Some(7200)));
    let capped =
        u.api.call("PUT", "sys/leases/renew", Some(&json!({ "lease_id": lease, "increment": "48h" }))).await.unwrap();
    assert!(capped["lease_duration"].as_u64().unwrap() <= 24 * 3600);
    assert!(!capped["warnings"].as_array().unwrap().is_empty());
    let looked = u.api.call("PUT", "sys/leases/lookup", Some(&json!({ "lease_id": lease }))).await.unwrap();
    assert_eq!(looked["data"]["id"], json!(lease));
    assert_ne!(looked["data"]["last_renewal"], Value::Null);

    // Revoking the lease drops the role and ends its open session.
    let app = as_user(&admin, &user, &password);
    let (session, conn) = app.config().connect(tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(conn);
    session.simple_query("SELECT 1").await.unwrap();
    let revoked = u.api.raw("PUT", "sys/leases/revoke", Some(&json!({ "lease_id": lease }))).await.unwrap();
    assert_eq!(revoked.0, 204);
    assert!(!role_exists(&admin, &user).await, "revocation is synchronous");
    assert!(session.simple_query("SELECT 1").await.is_err(), "the open session was ended");
    let _ = driver.await;
    let refused = app.query_strings("SELECT 1").await.unwrap_err();
    assert!(refused.contains("authentication failed") || refused.contains("does not exist"), "{refused}");
    assert_eq!(u.api.raw("PUT", "sys/leases/lookup", Some(&json!({ "lease_id": lease }))).await.unwrap().0, 400);

    // A lease that ends on its own takes its role with it.
    u.api
        .write(
            "database/roles/short",
            &json!({
                "db_name": "voyager",
                "creation_statements": "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
                "default_ttl": "2s",
                "max_ttl": "10s",
            }),
        )
        .await
        .unwrap();
    let e = u.api.raw("GET", "database/creds/short", None).await.unwrap();
    assert_eq!(e, (400, json!({ "errors": ["\"short\" is not an allowed role"] })));
    u.api.write("database/config/voyager", &json!({ "allowed_roles": ["voyager-app", "short"] })).await.unwrap();
    let (_, short_user, short_password, short_ttl) = creds(&u.api, "short").await;
    assert_eq!(short_ttl, 2);
    as_user(&admin, &short_user, &short_password).query_strings("SELECT 1").await.unwrap();
    let took = gone_within(&admin, &short_user, Duration::from_secs(10)).await;
    eprintln!("expired role dropped {took:?} after the check began");
    assert!(as_user(&admin, &short_user, &short_password).query_strings("SELECT 1").await.is_err());

    // Revoking the token that asked for credentials revokes them too.
    u.api
        .call(
            "PUT",
            "sys/policies/acl/creds",
            Some(&json!({ "policy": "path \"database/creds/voyager-app\" { capabilities = [\"read\"] }" })),
        )
        .await
        .unwrap();
    let t =
        vaultrs::token::new(&u.root, Some(CreateTokenRequest::builder().policies(vec!["creds".into()]))).await.unwrap();
    let (_, tok_user, _, _) = creds(&VaultClient::new(&u.url).with_token(&t.client_token), "voyager-app").await;
    assert!(role_exists(&admin, &tok_user).await);
    vaultrs::token::revoke(&u.root, &t.client_token).await.unwrap();
    gone_within(&admin, &tok_user, Duration::from_secs(10)).await;

    // revoke-prefix takes every lease under a role.
    let (_, a, _, _) = creds(&u.api, "voyager-app").await;
    let (_, b, _, _) = creds(&u.api, "voyager-app").await;
    assert_eq!(u.api.raw("PUT", "sys/leases/revoke-prefix/database/creds/voyager-app", None).await.unwrap().0, 204);
    assert!(!role_exists(&admin, &a).await && !role_exists(&admin, &b).await);

    running.shutdown().await.unwrap();
}
