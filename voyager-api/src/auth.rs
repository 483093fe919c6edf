//! Access tokens checked as an Auth0 resource server does: the signing key
//! by `kid` from the tenant's JWKS (fetched again, at most every
//! `REFRESH_EVERY`, when a token names a key not seen yet — that is how a
//! rotation reaches a running service), RS256 only, `iss`, `aud`, `exp` and
//! `nbf` with the tenant's clock skew, then the scope the route needs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::http::Http;

/// Auth0's SDKs refetch a JWKS at most a few times a minute; a flood of
/// tokens with made-up `kid`s must not become a flood of fetches.
const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// Why a request was refused, as RFC 6750 names it.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// No bearer token at all (401, no error code).
    Missing,
    /// 401 `invalid_token`, with the reason.
    Invalid(String),
    /// 403 `insufficient_scope`.
    Scope(&'static str),
}

pub struct Verifier {
    issuer: String,
    audience: String,
    leeway: Duration,
    jwks_uri: String,
    http: Http,
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<DecodingKey>>,
    fetched: Option<Instant>,
}

/// The caller a valid token speaks for.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: String,
}

impl Verifier {
    pub fn new(issuer: &str, audience: &str, leeway: Duration, jwks_uri: &str, http: Http) -> Verifier {
        Verifier {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            leeway,
            jwks_uri: jwks_uri.to_string(),
            http,
            keys: Mutex::new(Keys::default()),
        }
    }

    /// Fetch the JWKS now (at start, and by the deep health check).
    pub async fn refresh(&self) -> Result<usize, String> {
        let mut keys = self.keys.lock().await;
        self.fetch_into(&mut keys).await
    }

    async fn fetch_into(&self, keys: &mut Keys) -> Result<usize, String> {
        keys.fetched = Some(Instant::now());
        let r = self.http.get(&self.jwks_uri, &[]).await?;
        if r.status != 200 {
            return Err(format!("the JWKS at {} answered HTTP {}", self.jwks_uri, r.status));
        }
        let doc: Value = serde_json::from_slice(&r.body).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
        keys.by_kid = parse_jwks(&doc)?;
        Ok(keys.by_kid.len())
    }

    async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, Refusal> {
        let mut keys = self.keys.lock().await;
        if let Some(k) = keys.by_kid.get(kid) {
            return Ok(k.clone());
        }
        if keys.fetched.is_none_or(|t| t.elapsed() >= REFRESH_EVERY) {
            self.fetch_into(&mut keys).await.map_err(Refusal::Invalid)?;
        }
        keys.by_kid.get(kid).cloned().ok_or_else(|| Refusal::Invalid("the token's key is not the tenant's".into()))
    }

    /// Check `authorization` (the header's value) for a token carrying `scope`.
    pub async fn check(&self, authorization: Option<&str>, scope: &'static str) -> Result<Caller, Refusal> {
        let token = bearer(authorization)?;
        let header = decode_header(token).map_err(|e| Refusal::Invalid(format!("malformed token: {e}")))?;
        // Checked before any key is looked up: a token signed with a
        // symmetric algorithm (or none) is refused whatever its kid says.
        if header.alg != Algorithm::RS256 {
            return Err(Refusal::Invalid(format!("algorithm {:?} is not accepted (RS256 only)", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| Refusal::Invalid("the token names no key (kid)".into()))?;
        let key = self.key(&kid).await?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = self.leeway.as_secs();
        v.validate_nbf = true;
        let claims = decode::<Value>(token, &key, &v).map_err(|e| Refusal::Invalid(e.to_string()))?.claims;
        if !has_scope(&claims, scope) {
            return Err(Refusal::Scope(scope));
        }
        Ok(Caller { subject: claims["sub"].as_str().unwrap_or_default().to_string() })
    }
}

fn bearer(authorization: Option<&str>) -> Result<&str, Refusal> {
    let value = authorization.ok_or(Refusal::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| Refusal::Invalid("not a Bearer token".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Refusal::Invalid("not a Bearer token".into()));
    }
    Ok(token.trim())
}

/// Auth0 puts a grant's scopes in `scope` (space-separated) and, with RBAC,
/// in `permissions`; either counts.
fn has_scope(claims: &Value, scope: &str) -> bool {
    claims["scope"].as_str().is_some_and(|s| s.split(' ').any(|s| s == scope))
        || claims["permissions"].as_array().is_some_and(|p| p.iter().any(|p| p == scope))
}

/// The RSA signing keys of a JWKS by `kid`; other keys are ignored, as a
/// resource server that accepts RS256 alone must.
fn parse_jwks(doc: &Value) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
    let keys = doc["keys"].as_array().ok_or("the JWKS has no keys array")?;
    let mut out = HashMap::new();
    for k in keys {
        let usable = k["kty"] == "RSA" && (k["use"].is_null() || k["use"] == "sig");
        if let (true, Some(kid), Some(n), Some(e)) = (usable, k["kid"].as_str(), k["n"].as_str(), k["e"].as_str()) {
            let key = DecodingKey::from_rsa_components(n, e).map_err(|e| format!("key {kid}: {e}"))?;
            out.insert(kid.to_string(), Arc::new(key));
        }
    }
    if out.is_empty() {
        return Err("the JWKS holds no RSA signing key".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scopes_come_from_scope_or_permissions() {
        assert!(has_scope(&json!({"scope": "read:runs write:runs"}), "write:runs"));
        assert!(has_scope(&json!({"permissions": ["write:runs"]}), "write:runs"));
        assert!(!has_scope(&json!({"scope": "read:runs write:runsx"}), "write:runs"));
        assert!(!has_scope(&json!({}), "write:runs"));
    }

    #[test]
    fn only_bearer_tokens_are_read() {
        assert_eq!(bearer(None), Err(Refusal::Missing));
        assert_eq!(bearer(Some("bearer abc")), Ok("abc"));
        assert!(matches!(bearer(Some("Basic dXNlcjpwYXNz")), Err(Refusal::Invalid(_))));
        assert!(matches!(bearer(Some("Bearer ")), Err(Refusal::Invalid(_))));
    }

    #[test]
    fn a_jwks_without_rsa_signing_keys_is_refused() {
        let ec = json!({"keys": [{"kty": "EC", "kid": "e", "crv": "P-256", "x": "AA", "y": "AA"}]});
        assert!(parse_jwks(&ec).is_err());
        let enc = json!({"keys": [{"kty": "RSA", "kid": "r", "use": "enc", "n": "AQAB", "e": "AQAB"}]});
        assert!(parse_jwks(&enc).is_err());
        let sig = json!({"keys": [{"kty": "RSA", "kid": "r", "use": "sig", "n": "AQAB", "e": "AQAB"}]});
        assert_eq!(parse_jwks(&sig).unwrap().len(), 1);
    }
}
