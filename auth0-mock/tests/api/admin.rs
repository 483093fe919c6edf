use serde_json::json;

use crate::common::*;

const ADMIN_PATHS: [&str; 2] = ["/voyager/keys/rotate", "/voyager/tokens"];

#[tokio::test]
async fn the_admin_api_refuses_requests_without_the_admin_token() {
    let mock = start().await;
    let kid_before = mock.jwks().await["keys"][0]["kid"].clone();
    for path in ADMIN_PATHS {
        let body = json!({ "client_id": PLATFORM_ID }).to_string();
        let r = mock.request("POST", path, &[("content-type", "application/json")], &body).await;
        assert_eq!(r.status, 401, "{path} without a token: {:?}", r.body);
        assert!(r.header("www-authenticate").starts_with("Bearer"));

        let r = mock
            .request("POST", path, &[("content-type", "application/json"), ("authorization", "Bearer wrong")], &body)
            .await;
        assert_eq!(r.status, 401, "{path} with a wrong token: {:?}", r.body);
        assert!(r.header("www-authenticate").contains("Wrong admin token"));

        // A client's own access token is no admin token either.
        let auth = format!("Bearer {}", mock.client_token().await);
        let r =
            mock.request("POST", path, &[("content-type", "application/json"), ("authorization", &auth)], &body).await;
        assert_eq!(r.status, 401, "{path} with an access token: {:?}", r.body);
    }
    assert_eq!(mock.jwks().await["keys"][0]["kid"], kid_before, "no refused request rotated the key");
    assert_eq!(mock.jwks().await["keys"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn without_an_admin_token_configured_the_admin_api_is_off() {
    let mock = start_with(fixture(), true, |o| o.admin_token = None).await;
    for path in ADMIN_PATHS {
        let r = mock.admin(path, &json!({ "client_id": PLATFORM_ID })).await;
        assert_eq!(r.status, 403, "{path}: {:?}", r.body);
        assert_eq!(r.body["error"], "admin_disabled");
        assert!(r.body["error_description"].as_str().unwrap().contains("AUTH0_MOCK_ADMIN_TOKEN"));
    }
}

#[tokio::test]
async fn minted_tokens_carry_the_requested_times_and_claims() {
    let mock = start().await;
    let t = now();
    let token = mock
        .mint(json!({
            "client_id": WEB_ID, "user_id": OPS_ID, "iat": t - 10, "exp": t + 60, "nbf": t - 5,
            "claims": { "https://voyager.dev/org": "other" },
        }))
        .await;
    let claims = standard_verify(&token, &mock.jwks().await, &mock.issuer, AUDIENCE).unwrap();
    assert_eq!(
        (claims["iat"].as_i64(), claims["exp"].as_i64(), claims["nbf"].as_i64()),
        (Some(t - 10), Some(t + 60), Some(t - 5))
    );
    assert_eq!(claims["sub"], OPS_ID);
    assert_eq!(claims["azp"], WEB_ID);
    assert_eq!(claims["https://voyager.dev/org"], "other");

    let token = mock.mint(json!({ "client_id": PLATFORM_ID })).await;
    let (_, claims) = peek(&token);
    assert_eq!(claims["sub"], format!("{PLATFORM_ID}@clients"));
    assert_eq!(claims["gty"], "client-credentials");
}

#[tokio::test]
async fn minting_for_an_unknown_client_or_user_or_with_unknown_fields_fails() {
    let mock = start().await;
    let r = mock.admin("/voyager/tokens", &json!({ "client_id": "nobody" })).await;
    assert_eq!(r.error(), (400, "invalid_request", "No client with client_id nobody"));
    let r = mock.admin("/voyager/tokens", &json!({ "client_id": WEB_ID, "user_id": "auth0|nobody" })).await;
    assert_eq!(r.error(), (400, "invalid_request", "No user with user_id auth0|nobody"));
    let r = mock.admin("/voyager/tokens", &json!({ "client_id": WEB_ID, "expires": 5 })).await;
    assert_eq!(r.status, 400);
    assert!(r.body["error_description"].as_str().unwrap().contains("unknown field"), "{:?}", r.body);
}
