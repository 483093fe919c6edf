//! Vault as a service of the stack (offline: vault-lite in its container),
//! driven with a third-party client (vaultrs) over what `env` exports:
//! initialised, unsealed and provisioned by `up`; the scoped token reads
//! and cannot write; kv-v2 versions and check-and-set; a PKI certificate
//! verifies against the CA; database credentials log in to the stack's
//! PostgreSQL and stop working when revoked; the audit log holds no secret;
//! a killed Vault comes back sealed and the harness unseals it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use vaultrs::api::pki::requests::GenerateCertificateRequest;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use voyager_sim::runtime::{container, docker};
use voyager_sim::{Progress, ServiceKind};

mod common;

fn client(addr: &str, token: &str) -> VaultClient {
    // reqwest's rustls backend needs a crypto provider; ring builds here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    VaultClient::new(VaultClientSettingsBuilder::default().address(addr).token(token).build().unwrap()).unwrap()
}

fn status(e: &ClientError) -> u16 {
    match e {
        ClientError::APIError { code, .. } => *code,
        other => panic!("not an API refusal: {other:?}"),
    }
}

async fn pg_login(url: &str) -> Result<(), String> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    c.simple_query("SELECT 1").await.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stacks_vault_serves_secrets_pki_and_database_credentials_by_policy() {
    let running = common::start("t-vault", 224, &[ServiceKind::Postgres, ServiceKind::Vault]).await;
    let env: BTreeMap<String, String> = running.env().into_iter().collect();
    let ep = running.vault().expect("the stack runs vault");
    assert!(env["VAULT_ADDR"].starts_with("http://127.0.0.1:"));
    assert_ne!(env["VAULT_TOKEN"], ep.root_token(), "env never hands out the root token");
    assert_eq!(ep.unseal_keys().len(), 5);

    // The scoped token reads the seeded secrets and nothing may be written.
    let app = client(&env["VAULT_ADDR"], &env["VAULT_TOKEN"]);
    let seeded: Value = vaultrs::kv2::read(&app, "secret", "voyager/app").await.unwrap();
    assert_eq!(seeded["environment"], "simulator");
    let denied = vaultrs::kv2::set(&app, "secret", "voyager/app", &json!({"environment": "hacked"})).await.unwrap_err();
    assert_eq!(status(&denied), 403, "voyager-secrets-read cannot write");
    let denied = vaultrs::sys::mount::list(&app).await.unwrap_err();
    assert_eq!(status(&denied), 403);

    // kv-v2 round trip with versions and a check-and-set conflict (root).
    let root = client(&env["VAULT_ADDR"], ep.root_token());
    let secret_value = "kv-test-secret-7f3a9c";
    vaultrs::kv2::set(&root, "secret", "voyager/test", &json!({"v": "one"})).await.unwrap();
    vaultrs::kv2::set(&root, "secret", "voyager/test", &json!({"v": secret_value})).await.unwrap();
    let v1: Value = vaultrs::kv2::read_version(&root, "secret", "voyager/test", 1).await.unwrap();
    let v2: Value = vaultrs::kv2::read(&root, "secret", "voyager/test").await.unwrap();
    assert_eq!((v1["v"].as_str(), v2["v"].as_str()), (Some("one"), Some(secret_value)));
    let api = vault_lite::VaultClient::new(&env["VAULT_ADDR"]).with_token(ep.root_token());
    let cas = api
        .raw("POST", "secret/data/voyager/test", Some(&json!({"data": {"v": "x"}, "options": {"cas": 1}})))
        .await
        .unwrap();
    assert_eq!(cas.0, 400, "check-and-set against an old version is refused: {}", cas.1);

    // PKI: the scoped token (voyager-pki-issue) gets a certificate that
    // verifies against the CA.
    let issued = vaultrs::pki::cert::generate(
        &app,
        "pki",
        "voyager-internal",
        Some(GenerateCertificateRequest::builder().common_name("jarvis.voyager.internal")),
    )
    .await
    .unwrap();
    let (_, ca_pem) = x509_parser::pem::parse_x509_pem(issued.issuing_ca.as_bytes()).unwrap();
    let (_, leaf_pem) = x509_parser::pem::parse_x509_pem(issued.certificate.as_bytes()).unwrap();
    let (ca, leaf) = (ca_pem.parse_x509().unwrap(), leaf_pem.parse_x509().unwrap());
    assert_eq!(leaf.issuer(), ca.subject());
    assert!(leaf.verify_signature(Some(ca.public_key())).is_ok(), "the leaf is signed by the CA");
    let refused = vaultrs::pki::cert::generate(
        &app,
        "pki",
        "voyager-internal",
        Some(GenerateCertificateRequest::builder().common_name("evil.example.com")),
    )
    .await
    .unwrap_err();
    assert_eq!(status(&refused), 400, "a name outside the role is refused");

    // Database credentials: a real PostgreSQL role, usable until revoked.
    let creds = api.read("database/creds/voyager-app").await.unwrap();
    let (user, password) = (creds["data"]["username"].as_str().unwrap(), creds["data"]["password"].as_str().unwrap());
    let lease = creds["lease_id"].as_str().unwrap().to_string();
    let writer = running.postgres().unwrap();
    let url = format!("postgres://{user}:{password}@{}/{}", writer.host, writer.database);
    pg_login(&url).await.expect("Vault's credentials log in");
    api.call("PUT", "sys/leases/revoke", Some(&json!({"lease_id": lease}))).await.unwrap();
    assert!(pg_login(&url).await.is_err(), "revoked credentials no longer log in");

    // The audit device (the container's output) records requests, never
    // the values: the secret written above appears only as an HMAC.
    let d = docker::connect(&Progress::silent()).await.unwrap();
    let log = container::logs(&d, &ep.container, 100_000).await;
    assert!(log.contains("secret/data/voyager/test"), "the audit log records the request");
    assert!(log.contains("hmac-sha256:"), "values are HMACs");
    for s in [secret_value, password, ep.root_token(), env["VAULT_TOKEN"].as_str()] {
        assert!(!log.contains(s), "the audit log holds a secret value");
    }

    // Killed, Vault comes back sealed; the harness unseals it with the run's
    // keys and the data survived (the state file is on a volume).
    running.kill_instance(&ep.instance).await.unwrap();
    running.start_instance(&ep.instance, Duration::from_secs(60)).await.unwrap();
    let kept: Value = vaultrs::kv2::read(&root, "secret", "voyager/test").await.unwrap();
    assert_eq!(kept["v"], secret_value);
    let again: Value = vaultrs::kv2::read(&app, "secret", "voyager/app").await.unwrap();
    assert_eq!(again["environment"], "simulator", "tokens survive the restart too");
    running.shutdown().await.unwrap();
}
