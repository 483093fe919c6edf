//! AppRole: a role ID and a secret ID log in to an orphan token with the
//! role's policies; a used-up or unknown secret ID does not.

mod common;

use serde_json::{json, Value};
use vaultrs::api::auth::approle::requests::SetAppRoleRequest;

#[tokio::test]
async fn approle_login_trades_a_secret_id_for_a_token_with_the_roles_policies() {
    let u = common::unsealed().await;
    let c = &u.root;
    vaultrs::sys::auth::enable(c, "approle", "approle", None).await.unwrap();
    assert!(vaultrs::sys::auth::list(c).await.unwrap().contains_key("approle/"));
    vaultrs::sys::mount::enable(c, "secret", "kv-v2", None).await.unwrap();
    vaultrs::kv2::set(c, "secret", "voyager/app", &json!({ "k": "v" })).await.unwrap();
    vaultrs::sys::policy::set(c, "voyager-secrets-read", r#"path "secret/data/voyager/*" { capabilities = ["read"] }"#)
        .await
        .unwrap();
    vaultrs::auth::approle::role::set(
        c,
        "approle",
        "voyager-platform",
        Some(
            SetAppRoleRequest::builder()
                .token_policies(vec!["voyager-secrets-read".into()])
                .token_ttl("20m")
                .token_max_ttl("1h")
                .secret_id_num_uses(1u64),
        ),
    )
    .await
    .unwrap();
    let role = vaultrs::auth::approle::role::read(c, "approle", "voyager-platform").await.unwrap();
    assert_eq!((role.token_ttl, role.token_max_ttl, role.secret_id_num_uses), (1200, 3600, 1));
    let role_id = vaultrs::auth::approle::role::read_id(c, "approle", "voyager-platform").await.unwrap().role_id;
    let secret = vaultrs::auth::approle::role::secret::generate(c, "approle", "voyager-platform", None).await.unwrap();
    assert_ne!(secret.secret_id, secret.secret_id_accessor);

    let anon = common::vaultrs(&u.url, "");
    let auth = vaultrs::auth::approle::login(&anon, "approle", &role_id, &secret.secret_id).await.unwrap();
    assert_eq!(auth.policies, ["default", "voyager-secrets-read"]);
    assert_eq!((auth.lease_duration, auth.renewable, auth.orphan), (1200, true, true));
    assert_eq!(auth.metadata.as_ref().unwrap()["role_name"], "voyager-platform");
    let app = u.as_token(&auth.client_token);
    let v: Value = vaultrs::kv2::read(&app, "secret", "voyager/app").await.unwrap();
    assert_eq!(v["k"], "v");
    assert_eq!(common::code(&vaultrs::kv2::set(&app, "secret", "voyager/app", &json!({})).await.unwrap_err()), 403);

    // The secret ID had one use.
    let e = vaultrs::auth::approle::login(&anon, "approle", &role_id, &secret.secret_id).await.unwrap_err();
    assert_eq!(common::errors(&e), ["invalid role or secret ID"]);
    let fresh = vaultrs::auth::approle::role::secret::generate(c, "approle", "voyager-platform", None).await.unwrap();
    let e = vaultrs::auth::approle::login(&anon, "approle", "not-the-role-id", &fresh.secret_id).await.unwrap_err();
    assert_eq!(common::code(&e), 400);
    let e = vaultrs::auth::approle::login(&anon, "approle", &role_id, "not-a-secret-id").await.unwrap_err();
    assert_eq!(common::errors(&e), ["invalid role or secret ID"]);
    vaultrs::auth::approle::login(&anon, "approle", &role_id, &fresh.secret_id).await.unwrap();

    // Managing roles needs more than a login token has.
    assert_eq!(
        common::code(&vaultrs::auth::approle::role::read_id(&app, "approle", "voyager-platform").await.unwrap_err()),
        403
    );
}
