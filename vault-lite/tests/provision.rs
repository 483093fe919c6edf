//! The shipped fixture provisions an empty server over the HTTP API, and a
//! second run changes nothing; what it provisions works for the tokens the
//! platform holds.

mod common;

use serde_json::{json, Value};
use vault_lite::provision::ProvisionError;
use vault_lite::{provision, Fixture};
use vaultrs::api::token::requests::CreateTokenRequest;

#[tokio::test]
async fn the_fixture_provisions_an_empty_server_and_a_second_run_changes_nothing() {
    let u = common::unsealed().await;
    let full = Fixture::builtin();
    let e = provision(&u.url, &u.root_token, &full, None).await.unwrap_err();
    assert!(matches!(e, ProvisionError::NoDatabase), "{e}");

    // Everything but the database engine, which needs PostgreSQL (see
    // tests/database.rs).
    let mut f = full.clone();
    f.database = None;
    let first = provision(&u.url, &u.root_token, &f, None).await.unwrap();
    let mut enabled = first.enabled.clone();
    enabled.sort();
    assert_eq!(enabled, ["auth/approle/", "database/", "pki/", "secret/"]);
    assert_eq!(
        first.policies,
        ["voyager-secrets-read", "voyager-pki-issue", "voyager-edge-certs", "voyager-database-creds"]
    );
    assert_eq!(first.seeded, ["secret/voyager/app", "secret/voyager/auth0", "secret/voyager/kafka"]);
    let ca = first.ca_certificate.clone().expect("a root CA");

    // Change a seed secret, then run again: nothing is re-created or reset.
    vaultrs::kv2::set(&u.root, "secret", "voyager/app", &json!({ "environment": "changed" })).await.unwrap();
    let second = provision(&u.url, &u.root_token, &f, None).await.unwrap();
    assert!(second.enabled.is_empty() && second.seeded.is_empty(), "{second:?}");
    assert_eq!(second.ca_certificate.as_deref(), Some(ca.as_str()), "the root CA is kept");
    let app: Value = vaultrs::kv2::read(&u.root, "secret", "voyager/app").await.unwrap();
    assert_eq!(app["environment"], "changed");
    let tune = u.api.read("sys/mounts/pki/tune").await.unwrap();
    assert_eq!(tune["data"]["max_lease_ttl"], 87600 * 3600);

    // voyager-pki-issue issues under voyager.internal and reads nothing else.
    let pki =
        vaultrs::token::new(&u.root, Some(CreateTokenRequest::builder().policies(vec!["voyager-pki-issue".into()])))
            .await
            .unwrap();
    let issuer = vault_lite::VaultClient::new(&u.url).with_token(&pki.client_token);
    let cert =
        issuer.write("pki/issue/voyager-internal", &json!({ "common_name": "runs.voyager.internal" })).await.unwrap();
    assert_eq!(cert["data"]["issuing_ca"], json!(ca));
    assert_eq!(issuer.raw("GET", "secret/data/voyager/app", None).await.unwrap().0, 403);
    assert_eq!(
        issuer.raw("POST", "pki/roles/voyager-internal", Some(&json!({"allow_any_name": true}))).await.unwrap().0,
        403
    );

    // The platform's AppRole logs in to a token that reads the seeds.
    let role_id = u.api.read("auth/approle/role/voyager-platform/role-id").await.unwrap()["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = u.api.write("auth/approle/role/voyager-platform/secret-id", &json!({})).await.unwrap()["data"]
        ["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    let anon = common::vaultrs(&u.url, "");
    let auth = vaultrs::auth::approle::login(&anon, "approle", &role_id, &secret_id).await.unwrap();
    assert_eq!(auth.policies, ["default", "voyager-database-creds", "voyager-pki-issue", "voyager-secrets-read"]);
    let kafka: Value = vaultrs::kv2::read(&u.as_token(&auth.client_token), "secret", "voyager/kafka").await.unwrap();
    assert_eq!(kafka["security_protocol"], "PLAINTEXT");
}
