use serde_json::json;

use crate::common::*;

fn kids(jwks: &serde_json::Value) -> Vec<String> {
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn rotation_signs_new_tokens_with_the_new_key_and_keeps_old_tokens_valid() {
    let mock = start().await;
    let old_token = mock.login("openid").await.body["access_token"].as_str().unwrap().to_string();
    let old_kid = peek(&old_token).0["kid"].as_str().unwrap().to_string();

    let r = mock.admin("/voyager/keys/rotate", &json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let new_kid = r.body["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, old_kid);
    assert_eq!(r.body["retired"], old_kid.as_str());

    let jwks = mock.jwks().await;
    assert_eq!(kids(&jwks), [new_kid.clone(), old_kid.clone()], "both keys are published during the overlap");

    let new_token = mock.login("openid").await.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(peek(&new_token).0["kid"], new_kid.as_str());
    for token in [&old_token, &new_token] {
        assert_eq!(mock.userinfo(token).await.status, 200);
        assert!(standard_verify(token, &jwks, &mock.issuer, AUDIENCE).is_ok());
    }

    // The next rotation ends the first key's overlap.
    let r = mock.admin("/voyager/keys/rotate", &json!({})).await;
    assert_eq!(r.body["dropped"], json!([old_kid]));
    let jwks = mock.jwks().await;
    assert!(!kids(&jwks).contains(&old_kid));
    let r = mock.userinfo(&old_token).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").contains("no signing key with kid"));
    assert_eq!(mock.userinfo(&new_token).await.status, 200, "the second key is in its overlap now");
}

#[tokio::test]
async fn with_a_zero_length_overlap_a_rotated_out_key_is_gone_at_once() {
    let mut tenant = fixture();
    tenant.key_overlap = Some(0);
    let mock = start_with(tenant, true, |_| {}).await;
    let old_token = mock.client_token().await;
    let r = mock.admin("/voyager/keys/rotate", &json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(kids(&mock.jwks().await), [r.body["kid"].as_str().unwrap()]);
    let expect = auth0_mock::Expectations { issuer: mock.issuer.clone(), audience: AUDIENCE.into(), leeway: 300 };
    assert!(matches!(
        auth0_mock::validate(&old_token, &mock.public_keys().await, &expect, now() as u64),
        Err(auth0_mock::InvalidToken::UnknownKid(_))
    ));
}
