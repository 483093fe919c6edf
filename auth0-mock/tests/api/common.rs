//! A mock per test, on 127.0.0.1 port 0, with the shipped fixture, and a
//! small hyper client that speaks to it over real HTTP.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use auth0_mock::{parse_tenant, Options, PublicKeys, Running, Secret, Server, Tenant};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub const ADMIN_TOKEN: &str = "test-admin-token";

// Credentials from fixtures/auth0.toml.
pub const PLATFORM_ID: &str = "vygPlatformM2MxK3d9Qe7Lr2Tb5Wn8Za";
pub const PLATFORM_SECRET: &str = "mock-platform-secret-7c1f0e9a4b2d8e6f3a5c7b9d1e3f5a7c";
pub const WEB_ID: &str = "vygWebAppQm4Hs8Kd2Px6Ty1Vc9Nb3Rw";
pub const WEB_SECRET: &str = "mock-web-secret-2b4d6f8a0c1e3a5b7d9f1b3d5f7a9c0e";
pub const CLI_ID: &str = "vygCliNativeZp5Lc8Gm1Xs4Dv7Qk2Hj";
pub const REPORTING_ID: &str = "vygReportingWn6Bt9Jf2Ks5Mq8Ye1Uc";
pub const REPORTING_SECRET: &str = "mock-reporting-secret-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";
pub const OPS_ID: &str = "auth0|64f1a2b3c4d5e6f708091a2b";
pub const OPS_EMAIL: &str = "ops@voyager.dev";
pub const OPS_PASSWORD: &str = "mock-ops-password";
pub const AUDIENCE: &str = "voyager-api";

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn fixture() -> Tenant {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/auth0.toml");
    parse_tenant(&path, &std::fs::read_to_string(&path).unwrap()).unwrap()
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
    }

    /// Auth0's error shape: the error code and its description.
    pub fn error(&self) -> (u16, &str, &str) {
        (
            self.status,
            self.body["error"].as_str().unwrap_or("-"),
            self.body["error_description"].as_str().unwrap_or("-"),
        )
    }
}

pub struct Mock {
    pub base: String,
    pub issuer: String,
    running: Option<Running>,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// The shipped tenant, its public URL the address it listens on, with the
/// admin API on.
pub async fn start() -> Mock {
    start_with(fixture(), true, |_| {}).await
}

/// `public_url`: whether the mock is told its address (otherwise its issuer
/// is the tenant's `https://voyager.auth0.com/`).
pub async fn start_with(tenant: Tenant, public_url: bool, adjust: impl FnOnce(&mut Options)) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut options =
        Options { public_url: public_url.then(|| base.clone()), admin_token: Some(Secret::new(ADMIN_TOKEN)) };
    adjust(&mut options);
    let server = tokio::task::spawn_blocking(move || Server::new(tenant, options)).await.unwrap().unwrap();
    let issuer = server.issuer().to_string();
    let running = server.serve(listener).unwrap();
    Mock { base, issuer, running: Some(running), http: Client::builder(TokioExecutor::new()).build_http() }
}

impl Mock {
    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut req = Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self.http.request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], "").await
    }

    pub async fn post_form(&self, path: &str, params: &[(&str, &str)]) -> Reply {
        let body = form(params);
        self.request("POST", path, &[("content-type", "application/x-www-form-urlencoded")], &body).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.request("POST", path, &[("content-type", "application/json")], &body.to_string()).await
    }

    pub async fn admin(&self, path: &str, body: &Value) -> Reply {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        self.request("POST", path, &[("content-type", "application/json"), ("authorization", &auth)], &body.to_string())
            .await
    }

    pub async fn jwks(&self) -> Value {
        let r = self.get("/.well-known/jwks.json").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }

    /// The keys a resource server would build from the served JWKS.
    pub async fn public_keys(&self) -> PublicKeys {
        PublicKeys::from_jwks(&self.jwks().await).unwrap()
    }

    /// A machine token for the platform client.
    pub async fn client_token(&self) -> String {
        let r = self
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
        r.body["access_token"].as_str().unwrap().to_string()
    }

    /// The ops user's password login through the web client.
    pub async fn login(&self, scope: &str) -> Reply {
        self.post_form(
            "/oauth/token",
            &[
                ("grant_type", "password"),
                ("client_id", WEB_ID),
                ("client_secret", WEB_SECRET),
                ("username", OPS_EMAIL),
                ("password", OPS_PASSWORD),
                ("audience", AUDIENCE),
                ("scope", scope),
            ],
        )
        .await
    }

    /// A token from the admin API; panics unless it was minted.
    pub async fn mint(&self, request: Value) -> String {
        let r = self.admin("/voyager/tokens", &request).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["access_token"].as_str().unwrap().to_string()
    }

    pub async fn userinfo(&self, token: &str) -> Reply {
        let auth = format!("Bearer {token}");
        self.request("GET", "/userinfo", &[("authorization", &auth)], "").await
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

pub fn form(params: &[(&str, &str)]) -> String {
    params.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Decode a JWT's header and payload without checking anything (to look).
pub fn peek(token: &str) -> (Value, Value) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let mut parts = token.split('.');
    let mut next = || serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    (next(), next())
}

/// Verify a token as a typical resource server does with a standard JWT
/// library: key from the JWKS by kid (n and e), RS256 only, issuer,
/// audience, 300 s leeway.
pub fn standard_verify(token: &str, jwks: &Value, issuer: &str, audience: &str) -> Result<Value, String> {
    use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
    let header = decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
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
