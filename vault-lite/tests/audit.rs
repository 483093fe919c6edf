//! The audit log: a request and a response line for every request, shaped
//! like Vault's file device, and never a secret value, token or accessor in
//! the clear; `sys/audit-hash` finds a known value's HMAC.

mod common;

use serde_json::{json, Value};
use vault_lite::Options;
use vaultrs::api::token::requests::CreateTokenRequest;

const CANARY: &str = "s3cret-canary-93b1d";

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn the_audit_log_records_every_request_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("audit.log");
    let boot = dir.path().join("boot-audit.log");
    let u = common::unsealed_with(Options { state_file: None, audit_file: Some(boot.clone()) }).await;

    u.api
        .call(
            "PUT",
            "sys/audit/file",
            Some(&json!({ "type": "file", "options": { "file_path": device.display().to_string() } })),
        )
        .await
        .unwrap();
    let listed = u.api.read("sys/audit").await.unwrap();
    assert_eq!(listed["data"]["file/"]["type"], "file");
    let raw = u
        .api
        .raw(
            "PUT",
            "sys/audit/raw",
            Some(&json!({ "type": "file", "options": { "file_path": "/tmp/x", "log_raw": true } })),
        )
        .await
        .unwrap();
    assert_eq!(raw.0, 400, "raw logging is refused");

    vaultrs::sys::mount::enable(&u.root, "secret", "kv-v2", None).await.unwrap();
    vaultrs::kv2::set(&u.root, "secret", "voyager/app", &json!({ "password": CANARY })).await.unwrap();
    let back: Value = vaultrs::kv2::read(&u.root, "secret", "voyager/app").await.unwrap();
    assert_eq!(back["password"], CANARY);
    let child = vaultrs::token::new(&u.root, Some(CreateTokenRequest::builder().policies(vec!["default".into()])))
        .await
        .unwrap();
    let denied =
        vaultrs::kv2::read::<Value>(&u.as_token(&child.client_token), "secret", "voyager/app").await.unwrap_err();
    assert_eq!(common::code(&denied), 403);

    let hash = u.api.write("sys/audit-hash/file", &json!({ "input": CANARY })).await.unwrap()["data"]["hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(hash.starts_with("hmac-sha256:"), "{hash}");

    for path in [&device, &boot] {
        let text = std::fs::read_to_string(path).unwrap();
        for secret in [CANARY, &u.root_token, &child.client_token, &child.accessor] {
            assert!(!text.contains(secret), "{} holds a secret in the clear", path.display());
        }
        assert!(text.contains(&hash), "{} should hold the canary's HMAC", path.display());
        let entries = lines(path);
        let write = entries
            .iter()
            .find(|e| {
                e["type"] == "request"
                    && e["request"]["path"] == "secret/data/voyager/app"
                    && e["request"]["operation"] == "create"
            })
            .expect("the write's request entry");
        assert_eq!(write["request"]["data"]["data"]["password"], json!(hash));
        assert!(write["auth"]["client_token"].as_str().unwrap().starts_with("hmac-sha256:"));
        assert_eq!(write["auth"]["policies"], json!(["root"]));
        let read = entries
            .iter()
            .find(|e| {
                e["type"] == "response"
                    && e["request"]["path"] == "secret/data/voyager/app"
                    && e["request"]["operation"] == "read"
            })
            .expect("the read's response entry");
        assert_eq!(read["response"]["data"]["data"]["password"], json!(hash));
        let created =
            entries.iter().find(|e| e["type"] == "response" && e["request"]["path"] == "auth/token/create").unwrap();
        assert!(created["response"]["auth"]["client_token"].as_str().unwrap().starts_with("hmac-sha256:"));
        let refused =
            entries.iter().find(|e| e["type"] == "response" && e.get("error") == Some(&json!("permission denied")));
        assert!(refused.is_some(), "a denied request is audited with its error");
        assert_eq!(
            entries.iter().filter(|e| e["type"] == "request").count(),
            entries.iter().filter(|e| e["type"] == "response").count(),
            "a response line for every request line"
        );
    }
    // The boot device (--audit-file) has seen everything since unseal, the
    // enabled one only what came after it.
    assert!(lines(&boot).len() > lines(&device).len());
}
