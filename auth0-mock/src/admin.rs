//! The admin API's decisions (not Auth0's: the mock's own, under
//! `/voyager/`): minting a token with chosen times and claims, so tests can
//! hold expired, not-yet-valid or foreign tokens signed by the tenant's real
//! key. Key rotation itself is `KeyRing::rotate`.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::config::Tenant;
use crate::grant::{client_claims, split_scope, user_claims, OAuthError};
use crate::jwt;
use crate::keys::SigningKey;

/// `POST /voyager/tokens`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    /// A configured client: the machine token's subject, or the user token's `azp`.
    pub client_id: String,
    /// A configured user: mint a user token rather than a machine token.
    pub user_id: Option<String>,
    /// Default: the client's grant on the API; `openid profile email` for a user.
    pub scope: Option<String>,
    /// Default: the tenant's API. Any string, to mint tokens for another API.
    pub audience: Option<String>,
    /// Unix seconds. Defaults: now, and now plus the API's token lifetime.
    pub iat: Option<i64>,
    pub exp: Option<i64>,
    /// Left out of the token unless given.
    pub nbf: Option<i64>,
    /// Set last, over everything else (`iss`, `aud`, custom claims, ...).
    #[serde(default)]
    pub claims: Map<String, Value>,
}

pub fn mint(t: &Tenant, issuer: &str, key: &SigningKey, req: &MintRequest, now: u64) -> Result<Value, OAuthError> {
    let client = t
        .client(&req.client_id)
        .ok_or_else(|| OAuthError::invalid_request(format!("No client with client_id {}", req.client_id)))?;
    let audience = req.audience.clone().unwrap_or_else(|| t.api.identifier.clone());
    let lifetime = t.api.token_lifetime;
    let mut claims = match &req.user_id {
        None => {
            let scope = match &req.scope {
                Some(s) => split_scope(s),
                None => client.scopes.clone().unwrap_or_default(),
            };
            client_claims(t, issuer, client, &audience, &scope, now, now + lifetime)
        }
        Some(id) => {
            let user = t.user(id).ok_or_else(|| OAuthError::invalid_request(format!("No user with user_id {id}")))?;
            let scope = split_scope(req.scope.as_deref().unwrap_or("openid profile email"));
            user_claims(t, issuer, client, user, &audience, &scope, Some("password"), now, now + lifetime)
        }
    };
    let iat = req.iat.unwrap_or(now as i64);
    let exp = req.exp.unwrap_or(iat + lifetime as i64);
    claims.insert("iat".into(), iat.into());
    claims.insert("exp".into(), exp.into());
    if let Some(nbf) = req.nbf {
        claims.insert("nbf".into(), nbf.into());
    }
    claims.extend(req.claims.clone());
    Ok(json!({
        "access_token": jwt::encode(&claims, key),
        "token_type": "Bearer",
        "expires_in": exp - now as i64,
        "kid": key.kid(),
    }))
}
