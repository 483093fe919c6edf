//! The HTTP side: `Server` (the tenant, its key ring and refresh tokens,
//! behind shared state) and `Running`, a server accepting connections until
//! it is shut down or dropped. Routing, body limits, `/userinfo`, discovery
//! and the admin API live here; what a token request means is `grant`'s.
//!
//! Endpoints: `GET /.well-known/openid-configuration`,
//! `GET /.well-known/jwks.json`, `POST /oauth/token`, `POST /oauth/revoke`,
//! `GET|POST /userinfo`; admin (bearer admin token): `POST /voyager/keys/rotate`,
//! `POST /voyager/tokens`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, MintRequest};
use crate::config::{GrantType, Tenant};
use crate::error::Error;
use crate::grant::{basic_credentials, profile_claims, split_scope, Grants, OAuthError, Params, RefreshStore};
use crate::jwt::{validate, Expectations};
use crate::keys::{KeyRing, SigningKey};
use crate::secret::Secret;

/// Request bodies larger than this are refused; token requests are tiny.
const MAX_BODY: usize = 64 * 1024;

/// How long shutdown waits for requests in flight before closing anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Run-time settings, apart from the tenant fixture.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The base URL clients reach the mock at (`http://127.0.0.1:8080`).
    /// The issuer is it plus `/`; without it, `https://<tenant domain>/`,
    /// as real Auth0 has it.
    pub public_url: Option<String>,
    /// Bearer token for `/voyager/*`; without it the admin API is off.
    pub admin_token: Option<Secret>,
}

/// The issuer (`iss`) for a tenant domain and an optional public URL.
pub fn issuer_for(domain: &str, public_url: Option<&str>) -> Result<String, Error> {
    let Some(url) = public_url else {
        return Ok(format!("https://{domain}/"));
    };
    let bad = |reason| Error::PublicUrl { url: url.to_string(), reason };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("it must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("it has no host"));
    }
    if rest.contains(['?', '#']) || rest.contains(char::is_whitespace) {
        return Err(bad("it may not have a query, a fragment or spaces"));
    }
    Ok(format!("{}/", url.trim_end_matches('/')))
}

struct State {
    tenant: Tenant,
    issuer: String,
    admin_token: Option<Secret>,
    keys: RwLock<KeyRing>,
    refresh: Mutex<RefreshStore>,
    /// The discovery document never changes for a run.
    discovery: Bytes,
}

impl State {
    /// What `/oauth/token` and `/oauth/revoke` decide against, signing with
    /// the current key of `keys` (the caller holds the ring's read lock).
    fn grants<'a>(&'a self, keys: &'a KeyRing) -> Grants<'a> {
        Grants { tenant: &self.tenant, issuer: &self.issuer, key: keys.current(), refresh: &self.refresh, now: now() }
    }
}

/// A tenant ready to serve: its first signing key is made.
pub struct Server {
    state: Arc<State>,
}

impl Server {
    /// Generates the first 2048-bit key: blocking and slow (typically tens
    /// to hundreds of milliseconds optimised); keep it off async workers.
    pub fn new(tenant: Tenant, options: Options) -> Result<Server, Error> {
        let key = SigningKey::generate()?;
        Server::with_key(tenant, options, key)
    }

    /// A server whose first signing key is `key`.
    pub fn with_key(tenant: Tenant, options: Options, key: SigningKey) -> Result<Server, Error> {
        let issuer = issuer_for(&tenant.domain, options.public_url.as_deref())?;
        let discovery = Bytes::from(discovery(&issuer).to_string());
        let keys = RwLock::new(KeyRing::new(key, tenant.key_overlap));
        let state = State {
            tenant,
            issuer,
            admin_token: options.admin_token,
            keys,
            refresh: Mutex::new(RefreshStore::default()),
            discovery,
        };
        Ok(Server { state: Arc::new(state) })
    }

    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    /// The kid new tokens are signed with.
    pub fn current_kid(&self) -> String {
        self.state.keys.read().expect("key ring lock").current().kid().to_string()
    }

    /// Accept connections on `listener` until the returned `Running` is shut
    /// down or dropped. Must be called within a Tokio runtime.
    pub fn serve(self, listener: TcpListener) -> Result<Running, Error> {
        let addr = listener.local_addr().map_err(Error::Listener)?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(self.state, listener, stopped));
        Ok(Running { addr, stop, task })
    }
}

/// A server accepting connections. Dropping it stops accepting; `shutdown`
/// also waits for requests in flight.
pub struct Running {
    addr: SocketAddr,
    /// Dropping the sender is the stop signal too, so a dropped `Running`
    /// never leaves a listener behind.
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, let requests in flight finish (up to a grace period),
    /// then return.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(state: Arc<State>, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    // Out of file descriptors and the like: back off, don't spin.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let state = state.clone();
                let service = service_fn(move |req| handle(state.clone(), req));
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, body: &Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    r
}

fn error_reply(e: &OAuthError) -> Reply {
    reply(e.status, &e.to_json())
}

/// Token responses carry credentials: never cached (RFC 6749 §5.1).
fn no_store(mut r: Reply) -> Reply {
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// A 401 with a Bearer challenge (RFC 6750 §3). `error` is `None` when the
/// request carried no token at all.
fn challenge(realm: &str, error: Option<(&str, &str)>) -> Reply {
    let quoted = |s: &str| -> String {
        s.chars().filter(|c| (' '..='~').contains(c) && *c != '"' && *c != '\\').take(200).collect()
    };
    let (header, body) = match error {
        None => (
            format!("Bearer realm=\"{}\"", quoted(realm)),
            json!({ "error": "invalid_request", "error_description": "Missing access token" }),
        ),
        Some((code, description)) => (
            format!(
                "Bearer realm=\"{}\", error=\"{code}\", error_description=\"{}\"",
                quoted(realm),
                quoted(description)
            ),
            json!({ "error": code, "error_description": description }),
        ),
    };
    let mut r = reply(401, &body);
    if let Ok(v) = HeaderValue::from_str(&header) {
        r.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    r
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

async fn read_body(body: Incoming) -> Result<Bytes, Reply> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(reply(
            413,
            &json!({ "error": "invalid_request", "error_description": format!("The request body is larger than {MAX_BODY} bytes") }),
        )),
        Err(_) => Err(reply(
            400,
            &json!({ "error": "invalid_request", "error_description": "The request body could not be read" }),
        )),
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Reply, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let allowed: &'static str = match path.as_str() {
        "/.well-known/openid-configuration" | "/.well-known/jwks.json" | "/authorize" => "GET",
        "/oauth/token" | "/oauth/revoke" | "/voyager/keys/rotate" | "/voyager/tokens" => "POST",
        "/userinfo" => "GET, POST",
        _ => {
            return Ok(reply(
                404,
                &json!({ "error": "not_found", "error_description": format!("No endpoint at {path}") }),
            ));
        }
    };
    if !allowed.split(", ").any(|m| m == method.as_str()) {
        let mut r = reply(
            405,
            &json!({ "error": "method_not_allowed", "error_description": format!("{path} takes {allowed}") }),
        );
        r.headers_mut().insert(ALLOW, HeaderValue::from_static(allowed));
        return Ok(r);
    }
    let r = match path.as_str() {
        "/.well-known/openid-configuration" => {
            let mut r = Response::new(Full::new(state.discovery.clone()));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
            r
        }
        "/.well-known/jwks.json" => reply(200, &state.keys.read().expect("key ring lock").jwks(now())),
        "/authorize" => reply(
            501,
            &json!({
                "error": "unsupported_response_type",
                "error_description": "The mock has no interactive login; use the password or client_credentials grant at /oauth/token",
            }),
        ),
        "/oauth/token" => token(&state, req).await,
        "/oauth/revoke" => revoke(&state, req).await,
        "/userinfo" => userinfo(&state, req.headers()),
        "/voyager/keys/rotate" => match admin_refusal(&state, req.headers()) {
            Some(refused) => refused,
            None => rotate(&state).await,
        },
        "/voyager/tokens" => match admin_refusal(&state, req.headers()) {
            Some(refused) => refused,
            None => mint(&state, req).await,
        },
        _ => unreachable!("every routed path is listed above"),
    };
    Ok(r)
}

async fn params(req: Request<Incoming>) -> Result<(Params, Option<(String, String)>), Reply> {
    let basic = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(basic_credentials);
    let json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/json"));
    let body = read_body(req.into_body()).await?;
    let params = if json { Params::from_json(&body) } else { Params::from_form(&body) };
    params.map(|p| (p, basic)).map_err(|e| error_reply(&e))
}

async fn token(state: &State, req: Request<Incoming>) -> Reply {
    let (params, basic) = match params(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let keys = state.keys.read().expect("key ring lock");
    let grants = state.grants(&keys);
    no_store(match grants.token(&params, basic) {
        Ok(t) => reply(200, &serde_json::to_value(t).expect("a token response serialises")),
        Err(e) => error_reply(&e),
    })
}

async fn revoke(state: &State, req: Request<Incoming>) -> Reply {
    let (params, basic) = match params(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let keys = state.keys.read().expect("key ring lock");
    let grants = state.grants(&keys);
    match grants.revoke(&params, basic) {
        Ok(()) => reply(200, &json!({})),
        Err(e) => error_reply(&e),
    }
}

/// `/userinfo` is a resource server like any other: its audience is
/// `<issuer>userinfo`, which user tokens asked for with `openid` carry.
fn userinfo(state: &State, headers: &HeaderMap) -> Reply {
    let realm = &state.tenant.domain;
    let Some(token) = bearer(headers) else {
        return challenge(realm, None);
    };
    let expect = Expectations {
        issuer: state.issuer.clone(),
        audience: format!("{}userinfo", state.issuer),
        leeway: state.tenant.clock_skew,
    };
    let now = now();
    let keys = state.keys.read().expect("key ring lock").public_keys(now);
    let claims = match validate(token, &keys, &expect, now) {
        Ok(c) => c,
        Err(e) => return challenge(realm, Some(("invalid_token", &e.to_string()))),
    };
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or_default();
    let Some(user) = state.tenant.user(sub) else {
        return challenge(realm, Some(("invalid_token", "the token's subject is not a user of this tenant")));
    };
    let scope = split_scope(claims.get("scope").and_then(Value::as_str).unwrap_or_default());
    reply(200, &Value::Object(profile_claims(&state.tenant, user, &scope)))
}

/// The answer refusing an admin request, or `None` when it carries the
/// admin token.
fn admin_refusal(state: &State, headers: &HeaderMap) -> Option<Reply> {
    let Some(expected) = &state.admin_token else {
        return Some(reply(
            403,
            &json!({
                "error": "admin_disabled",
                "error_description": "The admin API is disabled: start the mock with AUTH0_MOCK_ADMIN_TOKEN set",
            }),
        ));
    };
    match bearer(headers) {
        Some(t) if expected.matches(t) => None,
        Some(_) => Some(challenge("voyager-admin", Some(("invalid_token", "Wrong admin token")))),
        None => Some(challenge("voyager-admin", None)),
    }
}

async fn rotate(state: &Arc<State>) -> Reply {
    let next = match tokio::task::spawn_blocking(SigningKey::generate).await {
        Ok(Ok(k)) => k,
        Ok(Err(e)) => return reply(500, &json!({ "error": "server_error", "error_description": e.to_string() })),
        Err(e) => return reply(500, &json!({ "error": "server_error", "error_description": e.to_string() })),
    };
    let now = now();
    let mut keys = state.keys.write().expect("key ring lock");
    let rotation = keys.rotate(next, now);
    let published: Vec<String> = keys.published(now).map(|k| k.kid().to_string()).collect();
    reply(
        200,
        &json!({
            "kid": rotation.current,
            "retired": rotation.retired,
            "dropped": rotation.dropped,
            "published": published,
        }),
    )
}

async fn mint(state: &State, req: Request<Incoming>) -> Reply {
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let request: MintRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error_reply(&OAuthError::invalid_request(format!("Bad mint request: {e}"))),
    };
    let keys = state.keys.read().expect("key ring lock");
    match admin::mint(&state.tenant, &state.issuer, keys.current(), &request, now()) {
        Ok(v) => no_store(reply(200, &v)),
        Err(e) => error_reply(&e),
    }
}

/// `/.well-known/openid-configuration`, shaped like Auth0's.
fn discovery(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}authorize"),
        "token_endpoint": format!("{issuer}oauth/token"),
        "userinfo_endpoint": format!("{issuer}userinfo"),
        "revocation_endpoint": format!("{issuer}oauth/revoke"),
        "jwks_uri": format!("{issuer}.well-known/jwks.json"),
        "scopes_supported": [
            "openid", "profile", "offline_access", "name", "given_name", "family_name", "nickname",
            "email", "email_verified", "picture", "created_at", "identities", "phone", "address",
        ],
        "response_types_supported": [
            "code", "token", "id_token", "code token", "code id_token", "token id_token", "code token id_token",
        ],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["public"],
        "grant_types_supported": GrantType::ALL.map(GrantType::as_str),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": [
            "aud", "auth_time", "created_at", "email", "email_verified", "exp", "family_name", "given_name",
            "iat", "identities", "iss", "name", "nickname", "phone_number", "picture", "sub",
        ],
        "request_uri_parameter_supported": false,
        "request_parameter_supported": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issuer_is_the_public_url_with_one_trailing_slash() {
        assert_eq!(issuer_for("voyager.auth0.com", None).unwrap(), "https://voyager.auth0.com/");
        assert_eq!(issuer_for("x", Some("http://127.0.0.1:8080")).unwrap(), "http://127.0.0.1:8080/");
        assert_eq!(issuer_for("x", Some("http://auth0:8080/")).unwrap(), "http://auth0:8080/");
        assert!(issuer_for("x", Some("127.0.0.1:8080")).is_err());
        assert!(issuer_for("x", Some("http://")).is_err());
        assert!(issuer_for("x", Some("http://a/?q=1")).is_err());
    }

    #[test]
    fn a_challenge_never_breaks_its_header() {
        let r = challenge("t", Some(("invalid_token", "issuer \"evil\"\nx")));
        let h = r.headers().get(WWW_AUTHENTICATE).unwrap().to_str().unwrap();
        assert_eq!(h, "Bearer realm=\"t\", error=\"invalid_token\", error_description=\"issuer evilx\"");
    }
}
