//! kv-v2 as Vault has it: versions with their metadata, check-and-set,
//! soft delete, undelete, destroy, listing, and version trimming.

mod common;

use serde_json::{json, Value};
use vaultrs::api::kv2::requests::{SetSecretMetadataRequest, SetSecretRequestOptions};

#[tokio::test]
async fn kv2_keeps_versions_and_refuses_a_stale_check_and_set() {
    let u = common::unsealed().await;
    let c = &u.root;
    vaultrs::sys::mount::enable(c, "secret", "kv-v2", None).await.unwrap();
    let m = vaultrs::sys::mount::list(c).await.unwrap();
    assert_eq!(m["secret/"].mount_type, "kv");
    assert_eq!(m["secret/"].options.as_ref().unwrap()["version"], "2");

    let v1 = vaultrs::kv2::set(c, "secret", "voyager/app", &json!({ "password": "one" })).await.unwrap();
    assert_eq!((v1.version, v1.destroyed, v1.deletion_time.as_str()), (1, false, ""));
    assert!(v1.created_time.ends_with('Z'), "{}", v1.created_time);
    let v2 = vaultrs::kv2::set(c, "secret", "voyager/app", &json!({ "password": "two" })).await.unwrap();
    assert_eq!(v2.version, 2);
    let latest: Value = vaultrs::kv2::read(c, "secret", "voyager/app").await.unwrap();
    assert_eq!(latest, json!({ "password": "two" }));
    let first: Value = vaultrs::kv2::read_version(c, "secret", "voyager/app", 1).await.unwrap();
    assert_eq!(first["password"], "one");

    // Check-and-set: a stale version is refused with Vault's message.
    let e = vaultrs::kv2::set_with_options(
        c,
        "secret",
        "voyager/app",
        &json!({"password": "x"}),
        SetSecretRequestOptions { cas: 1 },
    )
    .await
    .unwrap_err();
    assert_eq!(common::code(&e), 400);
    assert_eq!(common::errors(&e), ["check-and-set parameter did not match the current version"]);
    let v3 = vaultrs::kv2::set_with_options(
        c,
        "secret",
        "voyager/app",
        &json!({"password": "three"}),
        SetSecretRequestOptions { cas: 2 },
    )
    .await
    .unwrap();
    assert_eq!(v3.version, 3);
    // cas = 0 writes only what does not exist yet.
    let e = vaultrs::kv2::set_with_options(
        c,
        "secret",
        "voyager/app",
        &json!({"a": "b"}),
        SetSecretRequestOptions { cas: 0 },
    )
    .await
    .unwrap_err();
    assert_eq!(common::code(&e), 400);
    vaultrs::kv2::set_with_options(c, "secret", "voyager/new", &json!({"a": "b"}), SetSecretRequestOptions { cas: 0 })
        .await
        .unwrap();

    // cas_required on the secret's metadata.
    vaultrs::kv2::set_metadata(
        c,
        "secret",
        "voyager/app",
        Some(SetSecretMetadataRequest::builder().cas_required(true)),
    )
    .await
    .unwrap();
    let e = vaultrs::kv2::set(c, "secret", "voyager/app", &json!({"password": "x"})).await.unwrap_err();
    assert_eq!(common::errors(&e), ["check-and-set parameter required for this call"]);

    // Soft delete of the latest version: 404, with its metadata in the body.
    vaultrs::kv2::delete_latest(c, "secret", "voyager/app").await.unwrap();
    let e = vaultrs::kv2::read::<Value>(c, "secret", "voyager/app").await.unwrap_err();
    assert_eq!(common::code(&e), 404);
    let (status, body) = u.api.raw("GET", "secret/data/voyager/app", None).await.unwrap();
    assert_eq!(status, 404);
    assert_eq!(body["data"]["data"], Value::Null);
    assert_eq!(body["data"]["metadata"]["version"], 3);
    assert_ne!(body["data"]["metadata"]["deletion_time"], "");
    vaultrs::kv2::undelete_versions(c, "secret", "voyager/app", vec![3]).await.unwrap();
    let back: Value = vaultrs::kv2::read(c, "secret", "voyager/app").await.unwrap();
    assert_eq!(back["password"], "three");

    // Delete and destroy named versions; a destroyed one cannot come back.
    vaultrs::kv2::delete_versions(c, "secret", "voyager/app", vec![1]).await.unwrap();
    assert_eq!(
        common::code(&vaultrs::kv2::read_version::<Value>(c, "secret", "voyager/app", 1).await.unwrap_err()),
        404
    );
    vaultrs::kv2::destroy_versions(c, "secret", "voyager/app", vec![2]).await.unwrap();
    vaultrs::kv2::undelete_versions(c, "secret", "voyager/app", vec![2]).await.unwrap();
    assert_eq!(
        common::code(&vaultrs::kv2::read_version::<Value>(c, "secret", "voyager/app", 2).await.unwrap_err()),
        404
    );
    let meta = vaultrs::kv2::read_metadata(c, "secret", "voyager/app").await.unwrap();
    assert_eq!((meta.current_version, meta.oldest_version, meta.cas_required), (3, 1, true));
    assert!(meta.versions["2"].destroyed);
    assert_ne!(meta.versions["1"].deletion_time, "");
    assert_eq!(meta.versions["3"].deletion_time, "");
    assert_eq!(meta.delete_version_after, "0s");

    // Listing shows folders with a trailing slash.
    vaultrs::kv2::set(c, "secret", "other", &json!({"k": "v"})).await.unwrap();
    let mut top = vaultrs::kv2::list(c, "secret", "").await.unwrap();
    top.sort();
    assert_eq!(top, ["other", "voyager/"]);
    let mut under = vaultrs::kv2::list(c, "secret", "voyager").await.unwrap();
    under.sort();
    assert_eq!(under, ["app", "new"]);
    assert_eq!(common::code(&vaultrs::kv2::list(c, "secret", "nothing").await.unwrap_err()), 404);

    // Deleting the metadata deletes every version.
    vaultrs::kv2::delete_metadata(c, "secret", "voyager/app").await.unwrap();
    assert_eq!(common::code(&vaultrs::kv2::read_metadata(c, "secret", "voyager/app").await.unwrap_err()), 404);
}

#[tokio::test]
async fn kv2_keeps_at_most_max_versions() {
    let u = common::unsealed().await;
    let c = &u.root;
    vaultrs::sys::mount::enable(c, "kv", "kv-v2", None).await.unwrap();
    u.api.write("kv/config", &json!({ "max_versions": 2 })).await.unwrap();
    assert_eq!(u.api.read("kv/config").await.unwrap()["data"]["max_versions"], 2);
    for i in 1..=4 {
        vaultrs::kv2::set(c, "kv", "k", &json!({ "i": i.to_string() })).await.unwrap();
    }
    let meta = vaultrs::kv2::read_metadata(c, "kv", "k").await.unwrap();
    assert_eq!((meta.current_version, meta.oldest_version, meta.versions.len()), (4, 3, 2));
    assert_eq!(common::code(&vaultrs::kv2::read_version::<Value>(c, "kv", "k", 1).await.unwrap_err()), 404);
}
