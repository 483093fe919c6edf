//! ACL enforcement on every path, and token lifetimes: a token holding
//! `voyager-secrets-read` reads `secret/data/voyager/*` and nothing else;
//! TTLs expire; revocation takes children with it.

mod common;

use serde_json::{json, Value};
use vaultrs::api::token::requests::CreateTokenRequest;

const READ_ONLY: &str = r#"
path "secret/data/voyager/*" {
  capabilities = ["read"]
}
"#;

#[tokio::test]
async fn a_read_only_token_reads_its_secrets_and_can_do_nothing_else() {
    let u = common::unsealed().await;
    vaultrs::sys::mount::enable(&u.root, "secret", "kv-v2", None).await.unwrap();
    vaultrs::kv2::set(&u.root, "secret", "voyager/app", &json!({ "api_key": "k-123" })).await.unwrap();
    vaultrs::kv2::set(&u.root, "secret", "billing/app", &json!({ "api_key": "k-456" })).await.unwrap();
    vaultrs::sys::policy::set(&u.root, "voyager-secrets-read", READ_ONLY).await.unwrap();
    assert_eq!(vaultrs::sys::policy::read(&u.root, "voyager-secrets-read").await.unwrap().rules, READ_ONLY);

    let auth = vaultrs::token::new(
        &u.root,
        Some(CreateTokenRequest::builder().policies(vec!["voyager-secrets-read".into()]).ttl("1h")),
    )
    .await
    .unwrap();
    assert_eq!(auth.policies, ["default", "voyager-secrets-read"]);
    assert_eq!(auth.lease_duration, 3600);
    let reader = u.as_token(&auth.client_token);

    let v: Value = vaultrs::kv2::read(&reader, "secret", "voyager/app").await.unwrap();
    assert_eq!(v["api_key"], "k-123");
    let denied = |e: vaultrs::error::ClientError| {
        assert_eq!(common::code(&e), 403, "{e:?}");
        assert_eq!(common::errors(&e), ["permission denied"]);
    };
    denied(vaultrs::kv2::set(&reader, "secret", "voyager/app", &json!({"api_key": "mine"})).await.unwrap_err());
    denied(vaultrs::kv2::set(&reader, "secret", "voyager/new", &json!({"a": "b"})).await.unwrap_err());
    denied(vaultrs::kv2::delete_latest(&reader, "secret", "voyager/app").await.unwrap_err());
    denied(vaultrs::kv2::read::<Value>(&reader, "secret", "billing/app").await.unwrap_err());
    denied(vaultrs::kv2::read_metadata(&reader, "secret", "voyager/app").await.unwrap_err());
    denied(vaultrs::kv2::list(&reader, "secret", "voyager").await.unwrap_err());
    denied(vaultrs::sys::mount::list(&reader).await.unwrap_err());
    denied(vaultrs::sys::mount::enable(&reader, "mine", "kv-v2", None).await.unwrap_err());
    denied(
        vaultrs::sys::policy::set(&reader, "voyager-secrets-read", r#"path "*" { capabilities = ["sudo"] }"#)
            .await
            .unwrap_err(),
    );
    denied(vaultrs::token::new(&reader, None).await.unwrap_err());
    // The root's data is still the root's.
    let still: Value = vaultrs::kv2::read(&u.root, "secret", "voyager/app").await.unwrap();
    assert_eq!(still["api_key"], "k-123");

    // What the default policy grants: looking itself up, its capabilities.
    let me = vaultrs::token::lookup_self(&reader).await.unwrap();
    assert_eq!(me.policies, ["default", "voyager-secrets-read"]);
    assert!(me.ttl > 3500 && me.ttl <= 3600, "{}", me.ttl);
    let reader_api = vault_lite::VaultClient::new(&u.url).with_token(&auth.client_token);
    let caps =
        reader_api.write("sys/capabilities-self", &json!({ "paths": ["secret/data/voyager/app"] })).await.unwrap();
    assert_eq!(caps["data"]["capabilities"], json!(["read"]));
    let caps = reader_api.write("sys/capabilities-self", &json!({ "path": "secret/data/billing/app" })).await.unwrap();
    assert_eq!(caps["data"]["capabilities"], json!(["deny"]));

    // No token, or one that does not exist: 403.
    let anon = vault_lite::VaultClient::new(&u.url);
    assert_eq!(anon.raw("GET", "secret/data/voyager/app", None).await.unwrap().0, 403);
    let forged = u.as_token("hvs.not-a-token");
    assert_eq!(common::code(&vaultrs::kv2::read::<Value>(&forged, "secret", "voyager/app").await.unwrap_err()), 403);
}

#[tokio::test]
async fn tokens_expire_renew_within_their_maximum_and_take_their_children_when_revoked() {
    let u = common::unsealed().await;
    vaultrs::sys::policy::set(&u.root, "p", r#"path "sys/mounts" { capabilities = ["read"] }"#).await.unwrap();
    vaultrs::sys::policy::set(&u.root, "q", r#"path "sys/auth" { capabilities = ["read", "sudo"] }"#).await.unwrap();

    // A two-second token works, then does not.
    let short = vaultrs::token::new(&u.root, Some(CreateTokenRequest::builder().policies(vec!["p".into()]).ttl("2s")))
        .await
        .unwrap();
    let short_c = u.as_token(&short.client_token);
    vaultrs::sys::mount::list(&short_c).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(common::code(&vaultrs::sys::mount::list(&short_c).await.unwrap_err()), 403);
    let e = vaultrs::token::lookup(&u.root, &short.client_token).await.unwrap_err();
    assert_eq!((common::code(&e), common::errors(&e)), (403, vec!["bad token".to_string()]));

    // Renewal moves the expiry, but never past explicit_max_ttl.
    let t = vaultrs::token::new(
        &u.root,
        Some(CreateTokenRequest::builder().policies(vec!["p".into()]).ttl("60s").explicit_max_ttl("120s")),
    )
    .await
    .unwrap();
    let tc = u.as_token(&t.client_token);
    let renewed = vault_lite::VaultClient::new(&u.url)
        .with_token(&t.client_token)
        .write("auth/token/renew-self", &json!({ "increment": "1h" }))
        .await
        .unwrap();
    let dur = renewed["auth"]["lease_duration"].as_u64().unwrap();
    assert!((115..=120).contains(&dur), "{dur}");
    assert!(renewed["warnings"][0].as_str().unwrap().contains("capped"), "{renewed}");
    vaultrs::token::renew_self(&tc, Some("30s")).await.unwrap();
    assert!(vaultrs::token::lookup_self(&tc).await.unwrap().ttl <= 30);

    // Creating tokens is a capability like any other; a child must hold a
    // subset of its parent's policies; only root (or sudo) makes orphans.
    let e = vaultrs::token::new(&tc, None).await.unwrap_err();
    assert_eq!(common::code(&e), 403, "p does not grant auth/token/create");
    vaultrs::sys::policy::set(
        &u.root,
        "p",
        r#"path "sys/mounts" { capabilities = ["read"] }
path "auth/token/create" { capabilities = ["update"] }"#,
    )
    .await
    .unwrap();
    let e = vaultrs::token::new(&tc, Some(CreateTokenRequest::builder().policies(vec!["q".into()]))).await.unwrap_err();
    assert_eq!(common::errors(&e), ["child policies must be subset of parent"]);
    let e = vaultrs::token::new(&tc, Some(CreateTokenRequest::builder().no_parent(true))).await.unwrap_err();
    assert_eq!(common::errors(&e), ["root or sudo privileges required to create orphan token"]);

    // Revoking a parent revokes its child.
    let child = vaultrs::token::new(&tc, Some(CreateTokenRequest::builder().policies(vec!["p".into()]))).await.unwrap();
    assert!(!child.orphan);
    let child_c = u.as_token(&child.client_token);
    vaultrs::sys::mount::list(&child_c).await.unwrap();
    vaultrs::token::revoke(&u.root, &t.client_token).await.unwrap();
    assert_eq!(common::code(&vaultrs::sys::mount::list(&tc).await.unwrap_err()), 403);
    assert_eq!(common::code(&vaultrs::sys::mount::list(&child_c).await.unwrap_err()), 403);

    // An orphan outlives its creator; revoke-self ends it.
    let orphan = vaultrs::token::new_orphan(&u.root, None).await.unwrap();
    assert!(orphan.orphan);
    let oc = u.as_token(&orphan.client_token);
    vaultrs::token::lookup_self(&oc).await.unwrap();
    vaultrs::token::revoke_self(&oc).await.unwrap();
    assert_eq!(common::code(&vaultrs::token::lookup_self(&oc).await.unwrap_err()), 403);

    // num_uses: a one-use token works once.
    let once =
        vaultrs::token::new(&u.root, Some(CreateTokenRequest::builder().policies(vec!["p".into()]).num_uses(1u64)))
            .await
            .unwrap();
    let once_c = u.as_token(&once.client_token);
    vaultrs::sys::mount::list(&once_c).await.unwrap();
    assert_eq!(common::code(&vaultrs::sys::mount::list(&once_c).await.unwrap_err()), 403);
}
