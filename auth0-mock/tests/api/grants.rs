use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn a_client_credentials_token_is_shaped_like_auth0s_and_verifies_with_a_standard_library() {
    let mock = start().await;
    let r = mock
        .post_json(
            "/oauth/token",
            &json!({
                "grant_type": "client_credentials",
                "client_id": PLATFORM_ID,
                "client_secret": PLATFORM_SECRET,
                "audience": AUDIENCE,
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("cache-control"), "no-store");
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 86400);
    assert_eq!(r.body["scope"], "read:runs write:runs read:journal write:journal");
    assert!(r.body.get("id_token").is_none() && r.body.get("refresh_token").is_none());
    let token = r.body["access_token"].as_str().unwrap();

    let jwks = mock.jwks().await;
    let claims = standard_verify(token, &jwks, &mock.issuer, AUDIENCE).unwrap();
    assert_eq!(claims["iss"], mock.issuer.as_str());
    assert_eq!(claims["sub"], format!("{PLATFORM_ID}@clients"));
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["azp"], PLATFORM_ID);
    assert_eq!(claims["gty"], "client-credentials");
    assert_eq!(claims["permissions"], json!(["read:runs", "write:runs", "read:journal", "write:journal"]));
    assert_eq!(claims["https://voyager.dev/service"], "voyager-platform");
    let (iat, exp) = (claims["iat"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
    assert_eq!(exp - iat, 86400);
    assert!((iat - now()).abs() <= 5);
    let (header, _) = peek(token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], jwks["keys"][0]["kid"]);
}

#[tokio::test]
async fn client_credentials_work_from_a_form_and_from_basic_authentication() {
    let mock = start().await;
    let form = [("grant_type", "client_credentials"), ("client_id", PLATFORM_ID), ("client_secret", PLATFORM_SECRET)];
    let r = mock.post_form("/oauth/token", &form).await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let basic = format!("Basic {}", STANDARD.encode(format!("{PLATFORM_ID}:{PLATFORM_SECRET}")));
    let body = "grant_type=client_credentials&audience=voyager-api";
    let headers = [("content-type", "application/x-www-form-urlencoded"), ("authorization", basic.as_str())];
    let r = mock.request("POST", "/oauth/token", &headers, body).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (_, claims) = peek(r.body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], format!("{PLATFORM_ID}@clients"));

    let wrong = format!("Basic {}", STANDARD.encode(format!("{PLATFORM_ID}:nope")));
    let headers = [("content-type", "application/x-www-form-urlencoded"), ("authorization", wrong.as_str())];
    let r = mock.request("POST", "/oauth/token", &headers, body).await;
    assert_eq!(r.error(), (401, "access_denied", "Unauthorized"));
}

#[tokio::test]
async fn a_requested_scope_narrows_the_token_and_an_ungranted_one_is_refused() {
    let mock = start().await;
    let base =
        json!({ "grant_type": "client_credentials", "client_id": PLATFORM_ID, "client_secret": PLATFORM_SECRET });
    let mut narrow = base.clone();
    narrow["scope"] = json!("read:runs");
    let r = mock.post_json("/oauth/token", &narrow).await;
    assert_eq!((r.status, r.body["scope"].as_str()), (200, Some("read:runs")));
    let (_, claims) = peek(r.body["access_token"].as_str().unwrap());
    assert_eq!(claims["permissions"], json!(["read:runs"]));

    let mut wide = base;
    wide["scope"] = json!("read:runs admin:platform");
    let r = mock.post_json("/oauth/token", &wide).await;
    assert_eq!(r.error(), (403, "access_denied", "Client has not been granted scopes: admin:platform"));
}

#[tokio::test]
async fn client_authentication_failures_answer_as_auth0_does() {
    let mock = start().await;
    let r = mock
        .post_json(
            "/oauth/token",
            &json!({ "grant_type": "client_credentials", "client_id": PLATFORM_ID, "client_secret": "wrong" }),
        )
        .await;
    assert_eq!(r.error(), (401, "access_denied", "Unauthorized"));
    let r =
        mock.post_json("/oauth/token", &json!({ "grant_type": "client_credentials", "client_id": PLATFORM_ID })).await;
    assert_eq!(r.error(), (401, "access_denied", "Unauthorized"), "a confidential client without its secret");
    let r = mock
        .post_json(
            "/oauth/token",
            &json!({ "grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x" }),
        )
        .await;
    assert_eq!(r.error(), (401, "access_denied", "Unauthorized"));
    let r = mock.post_json("/oauth/token", &json!({ "grant_type": "client_credentials" })).await;
    assert_eq!(r.error(), (400, "invalid_request", "Missing required parameter: client_id"));
}

#[tokio::test]
async fn grant_and_audience_refusals_answer_as_auth0_does() {
    let mock = start().await;
    let r = mock
        .post_json(
            "/oauth/token",
            &json!({
                "grant_type": "password", "client_id": PLATFORM_ID, "client_secret": PLATFORM_SECRET,
                "username": OPS_EMAIL, "password": OPS_PASSWORD,
            }),
        )
        .await;
    assert_eq!(r.error(), (403, "unauthorized_client", "Grant type 'password' not allowed for the client."));
    assert_eq!(r.body["error_uri"], "https://auth0.com/docs/clients/client-grant-types");

    let r = mock
        .post_json(
            "/oauth/token",
            &json!({ "grant_type": "client_credentials", "client_id": REPORTING_ID, "client_secret": REPORTING_SECRET }),
        )
        .await;
    let (status, error, description) = r.error();
    assert_eq!((status, error), (403, "access_denied"));
    assert!(description.starts_with("Client is not authorized to access \"voyager-api\""), "{description}");

    let r = mock
        .post_json(
            "/oauth/token",
            &json!({
                "grant_type": "client_credentials", "client_id": PLATFORM_ID, "client_secret": PLATFORM_SECRET,
                "audience": "https://other.example/api",
            }),
        )
        .await;
    assert_eq!(r.error(), (403, "access_denied", "Service not found: https://other.example/api"));

    let r = mock
        .post_json("/oauth/token", &json!({ "grant_type": "authorization_code", "client_id": WEB_ID, "code": "x" }))
        .await;
    assert_eq!(r.error(), (501, "unsupported_grant_type", "Unsupported grant type: authorization_code"));

    let r = mock.post_json("/oauth/token", &json!({ "client_id": WEB_ID })).await;
    assert_eq!(r.error(), (400, "invalid_request", "Missing required parameter: grant_type"));
}

#[tokio::test]
async fn malformed_bodies_are_invalid_requests() {
    let mock = start().await;
    let r = mock.request("POST", "/oauth/token", &[("content-type", "application/json")], "{not json").await;
    assert_eq!((r.status, r.body["error"].as_str()), (400, Some("invalid_request")));
    let r = mock
        .request(
            "POST",
            "/oauth/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            "grant_type=password&grant_type=client_credentials",
        )
        .await;
    assert_eq!(r.error(), (400, "invalid_request", "Parameter grant_type is repeated"));
    let big = "x".repeat(100 * 1024);
    let r = mock.request("POST", "/oauth/token", &[("content-type", "application/json")], &big).await;
    assert_eq!(r.status, 413);
}

#[tokio::test]
async fn the_password_grant_issues_an_access_token_an_id_token_and_a_refresh_token() {
    let mock = start().await;
    let r = mock.login("openid profile email offline_access read:runs write:runs").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["scope"], "openid profile email offline_access read:runs write:runs");
    assert_eq!(r.body["expires_in"], 86400);
    let jwks = mock.jwks().await;

    let access = standard_verify(r.body["access_token"].as_str().unwrap(), &jwks, &mock.issuer, AUDIENCE).unwrap();
    assert_eq!(access["sub"], OPS_ID);
    assert_eq!(access["aud"], json!([AUDIENCE, format!("{}userinfo", mock.issuer)]));
    assert_eq!(access["gty"], "password");
    assert_eq!(access["azp"], WEB_ID);
    assert_eq!(access["scope"], "openid profile email offline_access read:runs write:runs");
    assert_eq!(
        access["permissions"],
        json!(["read:runs", "write:runs", "read:journal", "write:journal", "admin:platform"])
    );
    assert_eq!(access["https://voyager.dev/roles"], json!(["admin"]));
    assert_eq!(access["https://voyager.dev/org"], "voyager");

    let id = standard_verify(r.body["id_token"].as_str().unwrap(), &jwks, &mock.issuer, WEB_ID).unwrap();
    assert_eq!(id["sub"], OPS_ID);
    assert_eq!(id["email"], OPS_EMAIL);
    assert_eq!(id["email_verified"], true);
    assert_eq!(id["name"], "Voyager Ops");
    assert_eq!(id["nickname"], "ops");
    assert!(id.get("permissions").is_none(), "an ID token is about the user, not API access");

    let refresh = r.body["refresh_token"].as_str().unwrap();
    assert!(refresh.len() >= 40 && !refresh.contains('.'), "refresh tokens are opaque: {refresh}");
}

#[tokio::test]
async fn without_openid_or_offline_access_there_is_no_id_or_refresh_token() {
    let mock = start().await;
    let r = mock.login("read:runs").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body.get("id_token").is_none() && r.body.get("refresh_token").is_none(), "{:?}", r.body);
    let (_, claims) = peek(r.body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], AUDIENCE, "the userinfo audience comes only with openid");
}

#[tokio::test]
async fn a_user_gets_only_the_api_scopes_their_permissions_allow() {
    let mock = start().await;
    let r = mock
        .post_json(
            "/oauth/token",
            &json!({
                "grant_type": "password", "client_id": CLI_ID, "username": "viewer",
                "password": "mock-viewer-password", "scope": "openid read:runs write:runs",
            }),
        )
        .await;
    assert_eq!(r.status, 200, "a public client logs in without a secret: {:?}", r.body);
    assert_eq!(r.body["scope"], "openid read:runs");
    let (_, claims) = peek(r.body["access_token"].as_str().unwrap());
    assert_eq!(claims["permissions"], json!(["read:runs", "read:journal"]));
    assert_eq!(claims["azp"], CLI_ID);
}

#[tokio::test]
async fn the_password_realm_grant_logs_in_through_the_named_connection() {
    let mock = start().await;
    let mut req = json!({
        "grant_type": "http://auth0.com/oauth/grant-type/password-realm",
        "client_id": WEB_ID, "client_secret": WEB_SECRET,
        "username": OPS_EMAIL, "password": OPS_PASSWORD,
        "realm": "Username-Password-Authentication", "scope": "openid",
    });
    let r = mock.post_json("/oauth/token", &req).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (_, claims) = peek(r.body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], OPS_ID);
    req["realm"] = json!("google-oauth2");
    let r = mock.post_json("/oauth/token", &req).await;
    assert_eq!(r.error(), (400, "invalid_request", "the connection was not found"));
}

#[tokio::test]
async fn wrong_credentials_missing_parameters_and_blocked_users_are_refused() {
    let mock = start().await;
    let login = |username: &'static str, password: &'static str| {
        json!({
            "grant_type": "password", "client_id": WEB_ID, "client_secret": WEB_SECRET,
            "username": username, "password": password,
        })
    };
    let r = mock.post_json("/oauth/token", &login(OPS_EMAIL, "wrong")).await;
    assert_eq!(r.error(), (403, "invalid_grant", "Wrong email or password."));
    let r = mock.post_json("/oauth/token", &login("nobody@voyager.dev", OPS_PASSWORD)).await;
    assert_eq!(r.error(), (403, "invalid_grant", "Wrong email or password."), "no hint that the user does not exist");
    let r = mock.post_json("/oauth/token", &login(OPS_EMAIL, "")).await;
    assert_eq!(r.error(), (400, "invalid_request", "Missing required parameter: password"));
    let r = mock.post_json("/oauth/token", &login("former@voyager.dev", "mock-former-password")).await;
    assert_eq!(r.error(), (401, "unauthorized", "user is blocked"));
    let r = mock.post_json("/oauth/token", &login("OPS@Voyager.dev", OPS_PASSWORD)).await;
    assert_eq!(r.status, 200, "emails match case-insensitively: {:?}", r.body);
}

#[tokio::test]
async fn a_refresh_token_gets_new_tokens_until_it_is_revoked() {
    let mock = start().await;
    let r = mock.login("openid email offline_access read:runs").await;
    let refresh = r.body["refresh_token"].as_str().unwrap().to_string();
    let grant = |scope: Option<&str>| {
        let mut g = json!({
            "grant_type": "refresh_token", "client_id": WEB_ID, "client_secret": WEB_SECRET, "refresh_token": refresh,
        });
        if let Some(s) = scope {
            g["scope"] = json!(s);
        }
        g
    };

    let r = mock.post_json("/oauth/token", &grant(None)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body.get("refresh_token").is_none(), "refresh tokens do not rotate: {:?}", r.body);
    assert!(r.body.get("id_token").is_some());
    let jwks = mock.jwks().await;
    let claims = standard_verify(r.body["access_token"].as_str().unwrap(), &jwks, &mock.issuer, AUDIENCE).unwrap();
    assert_eq!(
        (claims["sub"].as_str(), claims["scope"].as_str()),
        (Some(OPS_ID), Some("openid email offline_access read:runs"))
    );

    let r = mock.post_json("/oauth/token", &grant(Some("read:runs"))).await;
    assert_eq!((r.status, r.body["scope"].as_str()), (200, Some("read:runs")));
    let r = mock.post_json("/oauth/token", &grant(Some("read:runs write:runs"))).await;
    assert_eq!(r.error().0, 400);
    assert_eq!(r.error().1, "invalid_scope");

    // Another client cannot use it.
    let r = mock
        .post_json(
            "/oauth/token",
            &json!({ "grant_type": "refresh_token", "client_id": CLI_ID, "refresh_token": refresh }),
        )
        .await;
    assert_eq!(r.error(), (403, "invalid_grant", "Unknown or invalid refresh token."));

    // Revocation needs the owning client's credentials.
    let r = mock
        .post_json("/oauth/revoke", &json!({ "client_id": WEB_ID, "client_secret": "wrong", "token": refresh }))
        .await;
    assert_eq!(r.error(), (401, "invalid_client", "Client authentication failed."));
    let r = mock.post_json("/oauth/revoke", &json!({ "client_id": CLI_ID, "token": refresh })).await;
    assert_eq!(r.error().1, "invalid_grant");
    let r = mock
        .post_json("/oauth/revoke", &json!({ "client_id": WEB_ID, "client_secret": WEB_SECRET, "token": refresh }))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let r = mock.post_json("/oauth/token", &grant(None)).await;
    assert_eq!(r.error(), (403, "invalid_grant", "Unknown or invalid refresh token."));
    let r = mock.post_json("/oauth/token", &json!({ "grant_type": "refresh_token", "client_id": WEB_ID, "client_secret": WEB_SECRET, "refresh_token": "made-up" })).await;
    assert_eq!(r.error(), (403, "invalid_grant", "Unknown or invalid refresh token."));
}

#[tokio::test]
async fn userinfo_returns_the_claims_the_token_scope_releases() {
    let mock = start().await;
    let r = mock.login("openid profile email").await;
    let u = mock.userinfo(r.body["access_token"].as_str().unwrap()).await;
    assert_eq!(u.status, 200, "{:?}", u.body);
    assert_eq!(u.body["sub"], OPS_ID);
    assert_eq!(u.body["email"], OPS_EMAIL);
    assert_eq!(u.body["name"], "Voyager Ops");
    assert_eq!(u.body["https://voyager.dev/roles"], json!(["admin"]));

    let r = mock.login("openid").await;
    let u = mock.userinfo(r.body["access_token"].as_str().unwrap()).await;
    assert_eq!(u.status, 200);
    assert!(u.body.get("email").is_none() && u.body.get("name").is_none(), "{:?}", u.body);
}

#[tokio::test]
async fn userinfo_refuses_machine_tokens_and_requests_without_a_token() {
    let mock = start().await;
    let u = mock.userinfo(&mock.client_token().await).await;
    assert_eq!(u.status, 401);
    let challenge = u.header("www-authenticate");
    assert!(challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("audience"), "{challenge}");

    let u = mock.get("/userinfo").await;
    assert_eq!(u.status, 401);
    assert!(!u.header("www-authenticate").contains("error="), "no error code without a token (RFC 6750 §3)");
}
