//! The mock Auth0 tenant as a container of the stack, driven the way an
//! application drives Auth0: discovery, JWKS, each grant, tokens verified
//! by a standard JWT library against the served keys, every token real
//! Auth0 would refuse refused, and key rotation through the admin API with
//! old tokens valid during the overlap. (The mock's own crate tests each
//! case in depth in-process; this proves the stack's container is that
//! server, reachable with what `env` exports.)

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use voyager_sim::http::request;
use voyager_sim::ServiceKind;

mod common;

async fn get(url: &str, bearer: Option<&str>) -> (u16, Value) {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let r = request("GET", url, &headers, "", Duration::from_secs(10)).await.unwrap();
    (r.status, serde_json::from_str(&r.body).unwrap_or(Value::Null))
}

async fn post(url: &str, body: Value, bearer: Option<&str>) -> (u16, Value) {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(auth.iter().map(|a| ("authorization", a.as_str())));
    let r = request("POST", url, &headers, &body.to_string(), Duration::from_secs(30)).await.unwrap();
    (r.status, serde_json::from_str(&r.body).unwrap_or(Value::Null))
}

/// Verify as a resource server does: key by kid from the JWKS, RS256 only,
/// issuer, audience, 300 s leeway.
fn verify(token: &str, jwks: &Value, issuer: &str, audience: &str) -> Result<Value, String> {
    use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
    let kid = decode_header(token).map_err(|e| e.to_string())?.kid.ok_or("no kid")?;
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).ok_or("unknown kid")?;
    let key = DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
        .map_err(|e| e.to_string())?;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.leeway = 300;
    v.validate_nbf = true;
    decode::<Value>(token, &key, &v).map(|d| d.claims).map_err(|e| e.to_string())
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stacks_auth0_tenant_issues_verifiable_tokens_and_refuses_what_auth0_refuses() {
    let running = common::start("t-auth0", 223, &[ServiceKind::Auth0]).await;
    let ep = running.auth0().expect("the stack runs auth0");
    let env: std::collections::BTreeMap<String, String> = running.env().into_iter().collect();
    let base = env["AUTH0_ISSUER_BASE_URL"].clone();
    assert_eq!(env["AUTH0_AUDIENCE"], "voyager-api");
    assert_eq!(base, ep.url());
    assert!(base.starts_with("http://127.0.0.1:"), "published on loopback only: {base}");

    let (s, disco) = get(&format!("{base}/.well-known/openid-configuration"), None).await;
    assert_eq!(s, 200);
    assert_eq!(disco["issuer"], env["AUTH0_ISSUER"].as_str());
    assert_eq!(disco["jwks_uri"], env["AUTH0_JWKS_URI"].as_str());
    let (_, jwks) = get(&env["AUTH0_JWKS_URI"], None).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);

    // client_credentials with exactly what `env` gives an application.
    let token_url = format!("{base}/oauth/token");
    let cc = json!({"grant_type": "client_credentials", "client_id": env["AUTH0_CLIENT_ID"],
        "client_secret": env["AUTH0_CLIENT_SECRET"], "audience": env["AUTH0_AUDIENCE"]});
    let (s, t) = post(&token_url, cc.clone(), None).await;
    assert_eq!(s, 200, "{t}");
    let m2m = t["access_token"].as_str().unwrap().to_string();
    let claims = verify(&m2m, &jwks, &env["AUTH0_ISSUER"], "voyager-api").unwrap();
    assert_eq!(claims["sub"], format!("{}@clients", env["AUTH0_CLIENT_ID"]));
    assert_eq!(claims["gty"], "client-credentials");

    // A wrong secret gets Auth0's error shape.
    let mut bad = cc.clone();
    bad["client_secret"] = json!("not-the-secret");
    let (s, e) = post(&token_url, bad, None).await;
    assert_eq!((s, e["error"].as_str()), (401, Some("access_denied")), "{e}");
    assert!(e["error_description"].is_string());

    // password grant (a user of the fixture), then refresh_token.
    let pw = json!({"grant_type": "password", "client_id": "vygWebAppQm4Hs8Kd2Px6Ty1Vc9Nb3Rw",
        "client_secret": "mock-web-secret-2b4d6f8a0c1e3a5b7d9f1b3d5f7a9c0e", "username": "ops@voyager.dev",
        "password": "mock-ops-password", "audience": "voyager-api", "scope": "openid profile email offline_access"});
    let (s, t) = post(&token_url, pw.clone(), None).await;
    assert_eq!(s, 200, "{t}");
    let user_token = t["access_token"].as_str().unwrap().to_string();
    assert!(t["id_token"].is_string() && t["refresh_token"].is_string(), "{t}");
    let claims = verify(&user_token, &jwks, &env["AUTH0_ISSUER"], "voyager-api").unwrap();
    assert_eq!(claims["sub"], "auth0|64f1a2b3c4d5e6f708091a2b");
    let (s, info) = get(&format!("{base}/userinfo"), Some(&user_token)).await;
    assert_eq!((s, info["email"].as_str()), (200, Some("ops@voyager.dev")));
    let mut wrong = pw.clone();
    wrong["password"] = json!("guess");
    let (s, e) = post(&token_url, wrong, None).await;
    assert_eq!((s, e["error"].as_str()), (403, Some("invalid_grant")), "{e}");
    let rt = json!({"grant_type": "refresh_token", "client_id": "vygWebAppQm4Hs8Kd2Px6Ty1Vc9Nb3Rw",
        "client_secret": "mock-web-secret-2b4d6f8a0c1e3a5b7d9f1b3d5f7a9c0e", "refresh_token": t["refresh_token"]});
    let (s, t) = post(&token_url, rt, None).await;
    assert_eq!(s, 200, "{t}");
    verify(t["access_token"].as_str().unwrap(), &jwks, &env["AUTH0_ISSUER"], "voyager-api").unwrap();

    // What real Auth0 (and any validating API) refuses, /userinfo refuses.
    let payload = |extra: Value| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let mut c = json!({"iss": env["AUTH0_ISSUER"], "aud": "voyager-api", "sub": "auth0|64f1a2b3c4d5e6f708091a2b",
            "iat": now, "exp": now + 600});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let none = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(payload(json!({})).to_string().as_bytes()));
    let n = jwks["keys"][0]["n"].as_str().unwrap();
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &payload(json!({})),
        &jsonwebtoken::EncodingKey::from_secret(n.as_bytes()),
    )
    .unwrap();
    let admin = running.state().credentials.auth0_admin_token.clone();
    let mint = |over: Value| {
        let mut body =
            json!({"client_id": "vygWebAppQm4Hs8Kd2Px6Ty1Vc9Nb3Rw", "user_id": "auth0|64f1a2b3c4d5e6f708091a2b"});
        for (k, v) in over.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut refused = vec![("alg none", none), ("HS256 keyed with the public key", hs)];
    for (what, over) in [
        ("expired beyond the skew", json!({"iat": now - 4000, "exp": now - 301})),
        ("not yet valid beyond the skew", json!({"nbf": now + 3600})),
        ("wrong issuer", json!({"claims": {"iss": "https://evil.example/"}})),
        ("wrong audience", json!({"audience": "someone-else"})),
    ] {
        let (s, t) = post(&format!("{base}/voyager/tokens"), mint(over), Some(&admin)).await;
        assert_eq!(s, 200, "minting {what}: {t}");
        refused.push((what, t["access_token"].as_str().unwrap().to_string()));
    }
    for (what, token) in &refused {
        // /userinfo is an audience of its own (`<issuer>userinfo`, which a
        // user token carries whatever API it was for), so a token for
        // another API is refused by that API, not by /userinfo.
        if *what != "wrong audience" {
            let (s, _) = get(&format!("{base}/userinfo"), Some(token)).await;
            assert_eq!(s, 401, "{what} must be refused");
        }
        assert!(verify(token, &jwks, &env["AUTH0_ISSUER"], "voyager-api").is_err(), "{what}: the JWT library agrees");
    }
    let (s, t) =
        post(&format!("{base}/voyager/tokens"), mint(json!({"iat": now - 4000, "exp": now - 200})), Some(&admin)).await;
    assert_eq!(s, 200);
    let (s, _) = get(&format!("{base}/userinfo"), Some(t["access_token"].as_str().unwrap())).await;
    assert_eq!(s, 200, "expired within the 300 s skew is still accepted");
    let (s, _) = post(&format!("{base}/voyager/tokens"), mint(json!({})), Some("not-the-admin-token")).await;
    assert_eq!(s, 401, "the admin API needs the run's admin token");

    // Rotation: new tokens carry the new kid, old ones stay valid.
    let old_kid = jsonwebtoken::decode_header(&user_token).unwrap().kid.unwrap();
    ep.rotate_keys().await.unwrap();
    let (_, jwks) = get(&env["AUTH0_JWKS_URI"], None).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "old and new key during the overlap");
    let (_, t) = post(&token_url, cc, None).await;
    let fresh = t["access_token"].as_str().unwrap();
    assert_ne!(jsonwebtoken::decode_header(fresh).unwrap().kid.unwrap(), old_kid);
    verify(fresh, &jwks, &env["AUTH0_ISSUER"], "voyager-api").unwrap();
    verify(&user_token, &jwks, &env["AUTH0_ISSUER"], "voyager-api").expect("old token valid during the overlap");
    let (s, _) = get(&format!("{base}/userinfo"), Some(&user_token)).await;
    assert_eq!(s, 200);
    running.shutdown().await.unwrap();
}
