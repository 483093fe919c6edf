//! Lifecycle like real Vault: uninitialised, then sealed until enough
//! unseal keys; everything else answers 503 while sealed; the state file
//! survives a restart, encrypted.

mod common;

use serde_json::{json, Value};
use vault_lite::{Options, VaultClient};
use vaultrs::sys::ServerStatus;

#[tokio::test]
async fn a_new_server_is_uninitialised_then_sealed_until_the_threshold_of_keys() {
    let s = common::server(Options::default()).await;
    let anon = common::vaultrs(&s.url(), "");
    let api = VaultClient::new(&s.url());
    assert!(matches!(vaultrs::sys::status(&anon).await.unwrap(), ServerStatus::UNINITIALIZED));
    let (status, health) = api.raw("GET", "sys/health", None).await.unwrap();
    assert_eq!((status, &health["initialized"], &health["sealed"]), (501, &json!(false), &json!(true)));
    assert_eq!(api.read("sys/init").await.unwrap(), json!({ "initialized": false }));

    let init = vaultrs::sys::start_initialization(&anon, 5, 3, None).await.unwrap();
    assert_eq!((init.keys.len(), init.keys_base64.len()), (5, 5));
    assert!(init.root_token.starts_with("hvs."), "{}", init.root_token);
    assert!(matches!(vaultrs::sys::status(&anon).await.unwrap(), ServerStatus::SEALED));
    assert_eq!(api.raw("GET", "sys/health", None).await.unwrap().0, 503);
    assert_eq!(api.raw("GET", "sys/health?sealedcode=299", None).await.unwrap().0, 299);
    let again = api.raw("PUT", "sys/init", Some(&json!({"secret_shares": 1, "secret_threshold": 1}))).await.unwrap();
    assert_eq!(again, (400, json!({ "errors": ["Vault is already initialized"] })));

    // Sealed: every other endpoint is 503, even with the root token.
    let root = common::vaultrs(&s.url(), &init.root_token);
    let e = vaultrs::kv2::read::<Value>(&root, "secret", "x").await.unwrap_err();
    assert_eq!(common::code(&e), 503);
    let sealed = VaultClient::new(&s.url()).with_token(&init.root_token).raw("GET", "sys/mounts", None).await.unwrap();
    assert_eq!(sealed, (503, json!({ "errors": ["Vault is sealed"] })));

    // Shares from another initialisation do not open this one, and the
    // attempt resets progress.
    let other = common::server(Options::default()).await;
    let other_keys = VaultClient::new(&other.url()).init(3, 3).await.unwrap().keys;
    for k in &other_keys[..2] {
        vaultrs::sys::unseal(&anon, Some(k.clone()), None, None).await.unwrap();
    }
    let e = vaultrs::sys::unseal(&anon, Some(other_keys[2].clone()), None, None).await.unwrap_err();
    assert_eq!(common::code(&e), 400);
    assert_eq!(api.read("sys/seal-status").await.unwrap()["progress"], 0);

    // Hex or base64, any three of five.
    let r = vaultrs::sys::unseal(&anon, Some(init.keys[4].clone()), None, None).await.unwrap();
    assert!(r.sealed);
    assert_eq!((r.progress, r.threshold, r.n_shares), (1, 3, 5));
    let r = vaultrs::sys::unseal(&anon, Some(init.keys_base64[1].clone()), None, None).await.unwrap();
    assert_eq!((r.sealed, r.progress), (true, 2));
    let r = vaultrs::sys::unseal(&anon, Some(init.keys[2].clone()), None, None).await.unwrap();
    assert!(!r.sealed);
    assert!(matches!(vaultrs::sys::status(&anon).await.unwrap(), ServerStatus::OK));
    let health = vaultrs::sys::health(&anon).await.unwrap();
    assert!(health.initialized && !health.sealed && !health.standby);
    let mounts = vaultrs::sys::mount::list(&root).await.unwrap();
    assert!(mounts.contains_key("sys/"));

    // Sealing needs a token and puts everything back behind 503.
    assert_eq!(api.raw("PUT", "sys/seal", None).await.unwrap().0, 403);
    vaultrs::sys::seal(&root).await.unwrap();
    assert!(matches!(vaultrs::sys::status(&anon).await.unwrap(), ServerStatus::SEALED));
    assert_eq!(common::code(&vaultrs::sys::mount::list(&root).await.unwrap_err()), 503);
}

#[tokio::test]
async fn the_state_file_survives_a_restart_and_holds_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault-state.json");
    let opts = Options { state_file: Some(path.clone()), audit_file: None };
    let s = common::server(opts.clone()).await;
    let anon = VaultClient::new(&s.url());
    let init = anon.init(3, 2).await.unwrap();
    anon.unseal(&init.keys[..2]).await.unwrap();
    let root = common::vaultrs(&s.url(), &init.root_token);
    vaultrs::sys::mount::enable(&root, "secret", "kv-v2", None).await.unwrap();
    vaultrs::kv2::set(&root, "secret", "voyager/app", &json!({ "password": "canary-7f3a9c" })).await.unwrap();
    s.shutdown().unwrap();

    let bytes = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("canary-7f3a9c") && !text.contains(&init.root_token), "plaintext in the state file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    let s = common::server(opts).await;
    let anon = VaultClient::new(&s.url());
    let status = anon.read("sys/seal-status").await.unwrap();
    assert_eq!((&status["initialized"], &status["sealed"], &status["t"]), (&json!(true), &json!(true), &json!(2)));
    let root = common::vaultrs(&s.url(), &init.root_token);
    assert_eq!(common::code(&vaultrs::kv2::read::<Value>(&root, "secret", "voyager/app").await.unwrap_err()), 503);
    anon.unseal(&[init.keys[2].clone(), init.keys[0].clone()]).await.unwrap();
    let v: Value = vaultrs::kv2::read(&root, "secret", "voyager/app").await.unwrap();
    assert_eq!(v["password"], "canary-7f3a9c");
}
