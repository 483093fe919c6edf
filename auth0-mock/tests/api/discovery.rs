use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::common::{fixture, start, start_with};

#[tokio::test]
async fn discovery_names_the_issuer_and_endpoints_under_the_public_url() {
    let mock = start().await;
    let r = mock.get("/.well-known/openid-configuration").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("application/json"));
    let d = &r.body;
    let issuer = format!("{}/", mock.base);
    assert_eq!(d["issuer"], issuer.as_str());
    assert_eq!(d["jwks_uri"], format!("{issuer}.well-known/jwks.json"));
    assert_eq!(d["token_endpoint"], format!("{issuer}oauth/token"));
    assert_eq!(d["userinfo_endpoint"], format!("{issuer}userinfo"));
    assert_eq!(d["authorization_endpoint"], format!("{issuer}authorize"));
    assert_eq!(d["revocation_endpoint"], format!("{issuer}oauth/revoke"));
    assert_eq!(d["id_token_signing_alg_values_supported"], serde_json::json!(["RS256"]));
    let grants: Vec<&str> =
        d["grant_types_supported"].as_array().unwrap().iter().map(|g| g.as_str().unwrap()).collect();
    for g in ["client_credentials", "password", "refresh_token", "http://auth0.com/oauth/grant-type/password-realm"] {
        assert!(grants.contains(&g), "{g} missing from {grants:?}");
    }
    assert!(d["response_types_supported"].as_array().unwrap().iter().any(|t| t == "code"));
}

#[tokio::test]
async fn without_a_public_url_the_issuer_is_the_tenant_domain() {
    let mock = start_with(fixture(), false, |_| {}).await;
    let d = mock.get("/.well-known/openid-configuration").await.body;
    assert_eq!(d["issuer"], "https://voyager.auth0.com/");
    assert_eq!(d["jwks_uri"], "https://voyager.auth0.com/.well-known/jwks.json");
    assert_eq!(mock.issuer, "https://voyager.auth0.com/");
}

#[tokio::test]
async fn jwks_serves_one_2048_bit_rs256_signing_key() {
    let mock = start().await;
    let jwks = mock.jwks().await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    let k = &keys[0];
    assert_eq!((k["kty"].as_str(), k["use"].as_str(), k["alg"].as_str()), (Some("RSA"), Some("sig"), Some("RS256")));
    assert!(!k["kid"].as_str().unwrap().is_empty());
    assert_eq!(URL_SAFE_NO_PAD.decode(k["n"].as_str().unwrap()).unwrap().len(), 256);
    assert_eq!(k["e"], "AQAB");
    assert_eq!(mock.public_keys().await.kids().collect::<Vec<_>>(), [k["kid"].as_str().unwrap()]);
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_get_json_errors() {
    let mock = start().await;
    let r = mock.get("/nope").await;
    assert_eq!((r.status, r.body["error"].as_str()), (404, Some("not_found")));
    let r = mock.get("/oauth/token").await;
    assert_eq!((r.status, r.header("allow").as_str()), (405, "POST"));
    let r = mock.get("/authorize").await;
    assert_eq!(r.status, 501, "the mock has no interactive login: {:?}", r.body);
}

#[tokio::test]
async fn shutdown_stops_accepting_connections() {
    let mock = start().await;
    let addr = mock.base.trim_start_matches("http://").to_string();
    mock.shutdown().await;
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err(), "{addr} still accepts after shutdown");
}
