//! Every token a resource server must refuse is refused: by `/userinfo`, by
//! the library's `validate` fed from the served JWKS, and (where it checks
//! the same thing) by a standard JWT library. And tokens inside the clock
//! skew are accepted by all three.

use auth0_mock::{validate, Expectations, InvalidToken};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};

use crate::common::*;

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn userinfo_audience(mock: &Mock) -> String {
    format!("{}userinfo", mock.issuer)
}

async fn check(mock: &Mock, token: &str, audience: &str) -> Result<(), InvalidToken> {
    let expect = Expectations { issuer: mock.issuer.clone(), audience: audience.to_string(), leeway: 300 };
    validate(token, &mock.public_keys().await, &expect, now() as u64).map(|_| ())
}

/// `/userinfo` refused the token, naming why in its challenge.
fn assert_refused(r: &Reply, why: &str) {
    assert_eq!(r.status, 401, "{:?}", r.body);
    let challenge = r.header("www-authenticate");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains(why), "{challenge} does not say {why}");
}

async fn user_token(mock: &Mock, times: Value) -> String {
    let mut req = json!({ "client_id": WEB_ID, "user_id": OPS_ID, "scope": "openid email" });
    req.as_object_mut().unwrap().extend(times.as_object().unwrap().clone());
    mock.mint(req).await
}

#[tokio::test]
async fn alg_none_is_refused_in_any_spelling() {
    let mock = start().await;
    let good = mock.login("openid").await.body["access_token"].as_str().unwrap().to_string();
    let (header, claims) = peek(&good);
    for alg in ["none", "None", "NONE"] {
        let mut h = header.clone();
        h["alg"] = json!(alg);
        let forged = format!("{}.{}.", b64(&h), b64(&claims));
        assert_refused(&mock.userinfo(&forged).await, alg);
        assert_eq!(check(&mock, &forged, &userinfo_audience(&mock)).await, Err(InvalidToken::Algorithm(alg.into())));
        assert!(standard_verify(&forged, &mock.jwks().await, &mock.issuer, AUDIENCE).is_err());
    }
    assert_eq!(mock.userinfo(&good).await.status, 200, "the unforged token is fine");
}

/// The classic key-confusion attack: HMAC-sign with the published public
/// key as the secret, hoping the validator feeds "the key" to HS256.
#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    use jsonwebtoken::{encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::EncodePublicKey;
    use rsa::{BigUint, RsaPublicKey};

    let mock = start().await;
    let jwks = mock.jwks().await;
    let jwk = &jwks["keys"][0];
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
    let public = RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e)).unwrap();
    let pem = |label: &str, der: &[u8]| {
        let body = STANDARD.encode(der);
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    };
    let secrets: Vec<Vec<u8>> = vec![
        pem("PUBLIC KEY", public.to_public_key_der().unwrap().as_bytes()).into_bytes(),
        pem("RSA PUBLIC KEY", public.to_pkcs1_der().unwrap().as_bytes()).into_bytes(),
        n.clone(),
        jwk.to_string().into_bytes(),
    ];

    let (_, claims) = peek(mock.login("openid").await.body["access_token"].as_str().unwrap());
    for secret in &secrets {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(jwk["kid"].as_str().unwrap().to_string());
        let forged = encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap();

        // The forgery is a well-made HS256 token: a validator that let the
        // token pick the algorithm would accept it.
        let mut naive = Validation::new(Algorithm::HS256);
        naive.set_audience(&[AUDIENCE]);
        assert!(jsonwebtoken::decode::<Value>(&forged, &DecodingKey::from_secret(secret), &naive).is_ok());

        assert_refused(&mock.userinfo(&forged).await, "HS256");
        assert_eq!(check(&mock, &forged, AUDIENCE).await, Err(InvalidToken::Algorithm("HS256".into())));
        assert!(standard_verify(&forged, &jwks, &mock.issuer, AUDIENCE).is_err());
    }
}

#[tokio::test]
async fn an_unknown_kid_and_a_bad_signature_are_refused() {
    let mock = start().await;
    let good = mock.login("openid").await.body["access_token"].as_str().unwrap().to_string();
    let parts: Vec<&str> = good.split('.').collect();
    let (mut header, mut claims) = peek(&good);

    header["kid"] = json!("not-a-published-kid");
    let unknown_kid = format!("{}.{}.{}", b64(&header), parts[1], parts[2]);
    assert_refused(&mock.userinfo(&unknown_kid).await, "no signing key with kid");
    assert_eq!(check(&mock, &unknown_kid, AUDIENCE).await, Err(InvalidToken::UnknownKid("not-a-published-kid".into())));

    claims["sub"] = json!("auth0|64f1a2b3c4d5e6f708091a2c");
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert_refused(&mock.userinfo(&tampered).await, "invalid signature");
    assert_eq!(check(&mock, &tampered, AUDIENCE).await, Err(InvalidToken::Signature));
    assert!(standard_verify(&tampered, &mock.jwks().await, &mock.issuer, AUDIENCE).is_err());

    // A token signed by another tenant's key, given this tenant's kid.
    let other = start().await;
    let foreign = other.login("openid").await.body["access_token"].as_str().unwrap().to_string();
    let fparts: Vec<&str> = foreign.split('.').collect();
    let relabelled = format!("{}.{}.{}", parts[0], parts[1], fparts[2]);
    assert_eq!(check(&mock, &relabelled, AUDIENCE).await, Err(InvalidToken::Signature));
}

#[tokio::test]
async fn a_wrong_issuer_is_refused() {
    let mock = start().await;
    let token = user_token(&mock, json!({ "claims": { "iss": "https://evil.example/" } })).await;
    assert_refused(&mock.userinfo(&token).await, "issuer");
    assert!(matches!(check(&mock, &token, AUDIENCE).await, Err(InvalidToken::Issuer { .. })));
    assert!(standard_verify(&token, &mock.jwks().await, &mock.issuer, AUDIENCE).is_err());
    // The same token with the right issuer passes everywhere: only iss differs.
    let token = user_token(&mock, json!({})).await;
    assert_eq!(mock.userinfo(&token).await.status, 200);
    assert!(standard_verify(&token, &mock.jwks().await, &mock.issuer, AUDIENCE).is_ok());
}

#[tokio::test]
async fn a_wrong_audience_is_refused() {
    let mock = start().await;
    let token = mock.mint(json!({ "client_id": PLATFORM_ID, "audience": "https://other.example/api" })).await;
    assert_eq!(check(&mock, &token, AUDIENCE).await, Err(InvalidToken::Audience { expected: AUDIENCE.into() }));
    assert!(standard_verify(&token, &mock.jwks().await, &mock.issuer, AUDIENCE).is_err());
    assert!(check(&mock, &token, "https://other.example/api").await.is_ok());
    // A user token without openid is for the API only, not for /userinfo.
    let token = user_token(&mock, json!({ "scope": "read:runs" })).await;
    assert_refused(&mock.userinfo(&token).await, "audience");
}

#[tokio::test]
async fn expiry_is_refused_beyond_the_clock_skew_and_accepted_within_it() {
    let mock = start().await;
    let jwks = mock.jwks().await;
    let t = now();
    let beyond = user_token(&mock, json!({ "iat": t - 4000, "exp": t - 301 })).await;
    assert_refused(&mock.userinfo(&beyond).await, "expired");
    assert!(matches!(check(&mock, &beyond, AUDIENCE).await, Err(InvalidToken::Expired { .. })));
    assert!(standard_verify(&beyond, &jwks, &mock.issuer, AUDIENCE).unwrap_err().contains("Expired"));

    let within = user_token(&mock, json!({ "iat": t - 4000, "exp": t - 200 })).await;
    assert_eq!(mock.userinfo(&within).await.status, 200);
    assert_eq!(check(&mock, &within, AUDIENCE).await, Ok(()));
    assert!(standard_verify(&within, &jwks, &mock.issuer, AUDIENCE).is_ok());
}

#[tokio::test]
async fn not_yet_valid_is_refused_beyond_the_clock_skew_and_accepted_within_it() {
    let mock = start().await;
    let jwks = mock.jwks().await;
    let t = now();
    let beyond = user_token(&mock, json!({ "nbf": t + 400 })).await;
    assert_refused(&mock.userinfo(&beyond).await, "not valid before");
    assert!(matches!(check(&mock, &beyond, AUDIENCE).await, Err(InvalidToken::NotYetValid { .. })));
    assert!(standard_verify(&beyond, &jwks, &mock.issuer, AUDIENCE).unwrap_err().contains("ImmatureSignature"));

    let within = user_token(&mock, json!({ "nbf": t + 200 })).await;
    assert_eq!(mock.userinfo(&within).await.status, 200);
    assert!(standard_verify(&within, &jwks, &mock.issuer, AUDIENCE).is_ok());

    let future_iat = user_token(&mock, json!({ "iat": t + 400, "exp": t + 4000 })).await;
    assert_refused(&mock.userinfo(&future_iat).await, "issued in the future");
    let near_iat = user_token(&mock, json!({ "iat": t + 200, "exp": t + 4000 })).await;
    assert_eq!(mock.userinfo(&near_iat).await.status, 200);
}
