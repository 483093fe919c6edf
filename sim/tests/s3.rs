//! S3 through the stack's LocalStack (offline: its Python runtime in our
//! image), driven with aws-sdk-s3 over what `env` exports: the fixture's
//! buckets exist with their versioning and lifecycle rules, and objects go
//! in, come back, list, and keep their versions.

use std::collections::BTreeMap;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::BucketVersioningStatus;
use voyager_sim::ServiceKind;

mod common;

#[tokio::test(flavor = "multi_thread")]
async fn the_stacks_s3_holds_the_fixture_buckets_and_keeps_object_versions() {
    let running = common::start("t-s3", 225, &[ServiceKind::S3]).await;
    let env: BTreeMap<String, String> = running.env().into_iter().collect();
    assert!(env["AWS_ENDPOINT_URL"].starts_with("http://127.0.0.1:"));
    let s3 = common::s3_client(&env);

    let listed = s3.list_buckets().send().await.unwrap();
    let mut names: Vec<&str> = listed.buckets().iter().filter_map(|b| b.name()).collect();
    names.sort();
    assert_eq!(names, ["voyager-db-backups", "voyager-jarvis-artifacts", "voyager-static-assets"]);

    let v = s3.get_bucket_versioning().bucket("voyager-jarvis-artifacts").send().await.unwrap();
    assert_eq!(v.status(), Some(&BucketVersioningStatus::Enabled));
    let v = s3.get_bucket_versioning().bucket("voyager-static-assets").send().await.unwrap();
    assert_eq!(v.status(), None, "static assets are not versioned");

    let lc = s3.get_bucket_lifecycle_configuration().bucket("voyager-db-backups").send().await.unwrap();
    let rule = &lc.rules()[0];
    assert_eq!(rule.id(), Some("backups-to-glacier"));
    assert_eq!(rule.expiration().and_then(|e| e.days()), Some(365));
    assert_eq!(rule.transitions()[0].storage_class().map(|c| c.as_str()), Some("GLACIER"));

    // Put twice, read both versions back, list.
    let bucket = "voyager-jarvis-artifacts";
    let key = "runs/42/output.json";
    let first =
        s3.put_object().bucket(bucket).key(key).body(ByteStream::from_static(b"{\"v\":1}")).send().await.unwrap();
    s3.put_object().bucket(bucket).key(key).body(ByteStream::from_static(b"{\"v\":2}")).send().await.unwrap();
    let latest = s3.get_object().bucket(bucket).key(key).send().await.unwrap();
    assert_eq!(latest.body.collect().await.unwrap().into_bytes().as_ref(), b"{\"v\":2}");
    let old = s3.get_object().bucket(bucket).key(key).version_id(first.version_id().unwrap()).send().await.unwrap();
    assert_eq!(old.body.collect().await.unwrap().into_bytes().as_ref(), b"{\"v\":1}");
    let versions = s3.list_object_versions().bucket(bucket).prefix("runs/").send().await.unwrap();
    assert_eq!(versions.versions().len(), 2);
    let objects = s3.list_objects_v2().bucket(bucket).prefix("runs/").send().await.unwrap();
    assert_eq!(objects.contents().iter().filter_map(|o| o.key()).collect::<Vec<_>>(), [key]);
    let missing = s3.get_object().bucket(bucket).key("runs/none").send().await;
    assert!(missing.is_err(), "a missing key is an error, not an empty object");

    // Killed (as with its AZ) and started again: LocalStack's community
    // edition keeps objects in memory, so they are gone, but the buckets
    // are made again with their settings, and writes work.
    running.restart_instance("s3-a", std::time::Duration::from_secs(180)).await.unwrap();
    let env: BTreeMap<String, String> = running.env().into_iter().collect();
    let s3 = common::s3_client(&env);
    let listed = s3.list_buckets().send().await.unwrap();
    assert_eq!(listed.buckets().len(), 3, "every fixture bucket is back after a restart");
    let v = s3.get_bucket_versioning().bucket(bucket).send().await.unwrap();
    assert_eq!(v.status(), Some(&BucketVersioningStatus::Enabled));
    s3.put_object().bucket(bucket).key(key).body(ByteStream::from_static(b"{\"v\":3}")).send().await.unwrap();
    running.shutdown().await.unwrap();
}
