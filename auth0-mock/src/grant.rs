//! What `/oauth/token` and `/oauth/revoke` decide: client authentication,
//! the `client_credentials`, `password` (and password-realm) and
//! `refresh_token` grants, the claims Auth0 puts in access and ID tokens, and
//! errors in Auth0's shape and status codes (`OAuthError`). Plain functions
//! over a request's parameters; the server only moves bytes.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::rand_core::{OsRng, RngCore};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::config::{Client, GrantType, Tenant, User};
use crate::jwt;
use crate::keys::SigningKey;

/// Refresh tokens kept at most; past it the oldest is forgotten, so a long
/// load test cannot grow the mock without bound.
const MAX_REFRESH_TOKENS: usize = 100_000;

/// The standard OIDC scopes a user token may carry besides API permissions.
const OIDC_SCOPES: [&str; 6] = ["openid", "profile", "email", "address", "phone", "offline_access"];

/// An error in Auth0's shape: `{"error": ..., "error_description": ...}`
/// with the status Auth0 answers it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
    pub error_uri: Option<&'static str>,
}

impl OAuthError {
    pub fn new(status: u16, error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError { status, error, description: description.into(), error_uri: None }
    }

    pub fn invalid_request(description: impl Into<String>) -> OAuthError {
        OAuthError::new(400, "invalid_request", description)
    }

    fn missing(parameter: &str) -> OAuthError {
        OAuthError::invalid_request(format!("Missing required parameter: {parameter}"))
    }

    /// Unknown client or wrong secret: Auth0 says no more than this.
    fn unauthorized() -> OAuthError {
        OAuthError::new(401, "access_denied", "Unauthorized")
    }

    fn access_denied(description: impl Into<String>) -> OAuthError {
        OAuthError::new(403, "access_denied", description)
    }

    fn invalid_grant(description: impl Into<String>) -> OAuthError {
        OAuthError::new(403, "invalid_grant", description)
    }

    fn bad_refresh_token() -> OAuthError {
        OAuthError::invalid_grant("Unknown or invalid refresh token.")
    }

    pub fn to_json(&self) -> Value {
        let mut body = json!({ "error": self.error, "error_description": self.description });
        if let Some(uri) = self.error_uri {
            body["error_uri"] = Value::from(uri);
        }
        body
    }
}

/// A token request's parameters, from a form or a JSON body (Auth0 takes
/// both). Empty values count as missing.
#[derive(Debug, Clone, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn from_form(body: &[u8]) -> Result<Params, OAuthError> {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(body) {
            if map.insert(k.to_string(), v.into_owned()).is_some() {
                return Err(OAuthError::invalid_request(format!("Parameter {k} is repeated")));
            }
        }
        Ok(Params(map))
    }

    pub fn from_json(body: &[u8]) -> Result<Params, OAuthError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|_| OAuthError::invalid_request("The request body is not valid JSON"))?;
        let Value::Object(object) = value else {
            return Err(OAuthError::invalid_request("The request body must be a JSON object"));
        };
        let mut map = HashMap::new();
        for (k, v) in object {
            let v = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => continue,
                _ => return Err(OAuthError::invalid_request(format!("Parameter {k} must be a string"))),
            };
            map.insert(k, v);
        }
        Ok(Params(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::missing(name))
    }
}

/// Client credentials from an `Authorization: Basic` header
/// (`client_secret_basic`): id and secret are form-encoded, then base64.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    use base64::engine::general_purpose::STANDARD;
    let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unform = |s: &str| form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
    Some((unform(id)?, unform(secret)?))
}

/// The body of a successful token response.
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub expires_in: u64,
    pub token_type: &'static str,
}

/// What a refresh token stands for.
#[derive(Debug, Clone)]
struct RefreshGrant {
    client_id: String,
    user_id: String,
    audience: String,
    scope: Vec<String>,
    issued_at: u64,
    expires_at: u64,
}

/// The opaque refresh tokens handed out, until they expire or are revoked.
#[derive(Debug, Default)]
pub struct RefreshStore {
    grants: HashMap<String, RefreshGrant>,
}

impl RefreshStore {
    fn insert(&mut self, grant: RefreshGrant, now: u64) -> String {
        if self.grants.len() >= MAX_REFRESH_TOKENS {
            self.grants.retain(|_, g| g.expires_at > now);
        }
        if self.grants.len() >= MAX_REFRESH_TOKENS {
            let oldest = self.grants.iter().min_by_key(|(_, g)| g.issued_at).map(|(t, _)| t.clone());
            if let Some(t) = oldest {
                self.grants.remove(&t);
            }
        }
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        let token = URL_SAFE_NO_PAD.encode(bytes);
        self.grants.insert(token.clone(), grant);
        token
    }

    pub fn len(&self) -> usize {
        self.grants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }
}

/// Everything a token request is decided against.
pub struct Grants<'a> {
    pub tenant: &'a Tenant,
    /// `https://voyager.auth0.com/`: `iss`, and the base of the userinfo audience.
    pub issuer: &'a str,
    pub key: &'a SigningKey,
    pub refresh: &'a Mutex<RefreshStore>,
    pub now: u64,
}

impl Grants<'_> {
    /// `POST /oauth/token`.
    pub fn token(&self, params: &Params, basic: Option<(String, String)>) -> Result<TokenResponse, OAuthError> {
        let grant_name = params.require("grant_type")?;
        let grant = GrantType::parse(grant_name).ok_or_else(|| {
            OAuthError::new(501, "unsupported_grant_type", format!("Unsupported grant type: {grant_name}"))
        })?;
        let client = self.authenticate(params, basic)?;
        if !client.allows(grant) {
            return Err(OAuthError {
                error_uri: Some("https://auth0.com/docs/clients/client-grant-types"),
                ..OAuthError::new(
                    403,
                    "unauthorized_client",
                    format!("Grant type '{grant_name}' not allowed for the client."),
                )
            });
        }
        match grant {
            GrantType::ClientCredentials => self.client_credentials(client, params),
            GrantType::Password => self.password(client, params, false),
            GrantType::PasswordRealm => self.password(client, params, true),
            GrantType::RefreshToken => self.refresh_token(client, params),
        }
    }

    /// `POST /oauth/revoke`: revoke a refresh token the client holds.
    /// Revoking an unknown token succeeds (RFC 7009); one issued to another
    /// client is refused.
    pub fn revoke(&self, params: &Params, basic: Option<(String, String)>) -> Result<(), OAuthError> {
        let client = self.authenticate(params, basic).map_err(|e| match e.status {
            401 => OAuthError::new(401, "invalid_client", "Client authentication failed."),
            _ => e,
        })?;
        let token = params.require("token")?;
        let mut store = self.refresh.lock().expect("refresh store lock");
        match store.grants.get(token) {
            Some(g) if g.client_id != client.client_id => {
                Err(OAuthError::invalid_grant("The refresh token was not issued to this client."))
            }
            Some(_) => {
                store.grants.remove(token);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn authenticate(&self, params: &Params, basic: Option<(String, String)>) -> Result<&Client, OAuthError> {
        let (id, secret) = match basic {
            Some((id, secret)) => {
                if params.get("client_secret").is_some() || params.get("client_id").is_some_and(|b| b != id) {
                    return Err(OAuthError::invalid_request("Use one client authentication method, not two"));
                }
                (id, Some(secret))
            }
            None => (params.require("client_id")?.to_string(), params.get("client_secret").map(str::to_string)),
        };
        let client = self.tenant.client(&id).ok_or_else(OAuthError::unauthorized)?;
        match (&client.client_secret, secret) {
            (None, _) => Ok(client),
            (Some(expected), Some(given)) if expected.matches(&given) => Ok(client),
            _ => Err(OAuthError::unauthorized()),
        }
    }

    /// The API a token is for: the `audience` parameter, or the tenant's
    /// API when it is left out (Auth0's "Default Audience").
    fn audience(&self, params: &Params) -> Result<String, OAuthError> {
        match params.get("audience") {
            None => Ok(self.tenant.api.identifier.clone()),
            Some(a) if a == self.tenant.api.identifier => Ok(a.to_string()),
            Some(a) => Err(OAuthError::access_denied(format!("Service not found: {a}"))),
        }
    }

    fn client_credentials(&self, client: &Client, params: &Params) -> Result<TokenResponse, OAuthError> {
        let audience = self.audience(params)?;
        let Some(granted) = &client.scopes else {
            return Err(OAuthError::access_denied(format!(
                "Client is not authorized to access \"{audience}\". You need to create a \"client-grant\" associated to this API. See: https://auth0.com/docs/api/v2#!/Client_Grants/post_client_grants"
            )));
        };
        let scope = match params.get("scope") {
            None => granted.clone(),
            Some(s) => {
                let requested = split_scope(s);
                let missing: Vec<&str> =
                    requested.iter().filter(|r| !granted.contains(r)).map(String::as_str).collect();
                if !missing.is_empty() {
                    return Err(OAuthError::access_denied(format!(
                        "Client has not been granted scopes: {}",
                        missing.join(", ")
                    )));
                }
                requested
            }
        };
        let lifetime = self.tenant.api.token_lifetime;
        let claims = client_claims(self.tenant, self.issuer, client, &audience, &scope, self.now, self.now + lifetime);
        Ok(TokenResponse {
            access_token: jwt::encode(&claims, self.key),
            id_token: None,
            refresh_token: None,
            scope: Some(scope.join(" ")).filter(|s| !s.is_empty()),
            expires_in: lifetime,
            token_type: "Bearer",
        })
    }

    fn password(&self, client: &Client, params: &Params, realm: bool) -> Result<TokenResponse, OAuthError> {
        let username = params.require("username")?;
        let password = params.require("password")?;
        if realm && params.require("realm")? != self.tenant.connection {
            return Err(OAuthError::invalid_request("the connection was not found"));
        }
        let audience = self.audience(params)?;
        let user = self
            .tenant
            .user_by_login(username)
            .filter(|u| u.password.matches(password))
            .ok_or_else(|| OAuthError::invalid_grant("Wrong email or password."))?;
        if user.blocked {
            return Err(OAuthError::new(401, "unauthorized", "user is blocked"));
        }
        let scope = self.user_scope(client, user, &split_scope(params.get("scope").unwrap_or_default()));
        self.issue_for_user(client, user, &audience, scope, Some("password"), true)
    }

    fn refresh_token(&self, client: &Client, params: &Params) -> Result<TokenResponse, OAuthError> {
        let token = params.require("refresh_token")?;
        let grant = {
            let store = self.refresh.lock().expect("refresh store lock");
            store.grants.get(token).filter(|g| g.client_id == client.client_id && g.expires_at > self.now).cloned()
        }
        .ok_or_else(OAuthError::bad_refresh_token)?;
        let user = self.tenant.user(&grant.user_id).ok_or_else(OAuthError::bad_refresh_token)?;
        if user.blocked {
            return Err(OAuthError::new(401, "unauthorized", "user is blocked"));
        }
        let requested = match params.get("scope") {
            None => grant.scope.clone(),
            Some(s) => {
                let requested = split_scope(s);
                if let Some(extra) = requested.iter().find(|r| !grant.scope.contains(r)) {
                    return Err(OAuthError::new(
                        400,
                        "invalid_scope",
                        format!("Scope {extra} was not granted with the refresh token"),
                    ));
                }
                requested
            }
        };
        // Permissions are checked again: a user's may have been narrowed.
        let scope = self.user_scope(client, user, &requested);
        self.issue_for_user(client, user, &grant.audience, scope, None, false)
    }

    /// The scopes a user's token gets: the OIDC scopes asked for, and the
    /// API scopes asked for that the user holds as permissions (RBAC). A
    /// refresh token (`offline_access`) only where the API and the client
    /// allow one, as Auth0 silently drops it otherwise.
    fn user_scope(&self, client: &Client, user: &User, requested: &[String]) -> Vec<String> {
        let api = &self.tenant.api;
        let offline = api.allow_offline_access && client.allows(GrantType::RefreshToken);
        requested
            .iter()
            .filter(|s| match s.as_str() {
                "offline_access" => offline,
                s if OIDC_SCOPES.contains(&s) => true,
                s => user.permissions.iter().any(|p| p == s),
            })
            .cloned()
            .collect()
    }

    fn issue_for_user(
        &self,
        client: &Client,
        user: &User,
        audience: &str,
        scope: Vec<String>,
        gty: Option<&str>,
        new_refresh_token: bool,
    ) -> Result<TokenResponse, OAuthError> {
        let (t, now) = (self.tenant, self.now);
        let lifetime = t.api.token_lifetime;
        let access = user_claims(t, self.issuer, client, user, audience, &scope, gty, now, now + lifetime);
        let id_token = scope
            .iter()
            .any(|s| s == "openid")
            .then(|| jwt::encode(&id_token_claims(t, self.issuer, client, user, &scope, now), self.key));
        let refresh_token = (new_refresh_token && scope.iter().any(|s| s == "offline_access")).then(|| {
            let grant = RefreshGrant {
                client_id: client.client_id.clone(),
                user_id: user.user_id.clone(),
                audience: audience.to_string(),
                scope: scope.clone(),
                issued_at: now,
                expires_at: now + t.refresh_token_lifetime,
            };
            self.refresh.lock().expect("refresh store lock").insert(grant, now)
        });
        Ok(TokenResponse {
            access_token: jwt::encode(&access, self.key),
            id_token,
            refresh_token,
            scope: Some(scope.join(" ")).filter(|s| !s.is_empty()),
            expires_in: lifetime,
            token_type: "Bearer",
        })
    }
}

/// Space-separated scopes, each once, in the order given.
pub fn split_scope(s: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for part in s.split_whitespace() {
        if !out.iter().any(|o| o == part) {
            out.push(part.to_string());
        }
    }
    out
}

fn put_custom(claims: &mut Map<String, Value>, namespace: &str, custom: &Map<String, Value>) {
    for (k, v) in custom {
        claims.insert(format!("{namespace}{k}"), v.clone());
    }
}

/// A machine token's claims, as Auth0 issues them for `client_credentials`.
pub(crate) fn client_claims(
    t: &Tenant,
    issuer: &str,
    client: &Client,
    audience: &str,
    scope: &[String],
    iat: u64,
    exp: u64,
) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("iss".into(), issuer.into());
    c.insert("sub".into(), format!("{}@clients", client.client_id).into());
    c.insert("aud".into(), audience.into());
    c.insert("iat".into(), iat.into());
    c.insert("exp".into(), exp.into());
    if !scope.is_empty() {
        c.insert("scope".into(), scope.join(" ").into());
    }
    c.insert("gty".into(), "client-credentials".into());
    c.insert("azp".into(), client.client_id.clone().into());
    c.insert("permissions".into(), scope.into());
    put_custom(&mut c, &t.claims_namespace, &client.claims);
    c
}

/// A user's access token. With `openid` its audience is also the tenant's
/// `/userinfo`, so the one token serves both, as Auth0 does.
#[allow(clippy::too_many_arguments)]
pub(crate) fn user_claims(
    t: &Tenant,
    issuer: &str,
    client: &Client,
    user: &User,
    audience: &str,
    scope: &[String],
    gty: Option<&str>,
    iat: u64,
    exp: u64,
) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("iss".into(), issuer.into());
    c.insert("sub".into(), user.user_id.clone().into());
    let aud = if scope.iter().any(|s| s == "openid") {
        json!([audience, format!("{issuer}userinfo")])
    } else {
        Value::from(audience)
    };
    c.insert("aud".into(), aud);
    c.insert("iat".into(), iat.into());
    c.insert("exp".into(), exp.into());
    if !scope.is_empty() {
        c.insert("scope".into(), scope.join(" ").into());
    }
    if let Some(gty) = gty {
        c.insert("gty".into(), gty.into());
    }
    c.insert("azp".into(), client.client_id.clone().into());
    c.insert("permissions".into(), user.permissions.clone().into());
    put_custom(&mut c, &t.claims_namespace, &user.claims);
    c
}

/// The OIDC claims about a user that `scope` releases: `sub` always,
/// profile and email claims when asked for, and the custom claims.
pub(crate) fn profile_claims(t: &Tenant, user: &User, scope: &[String]) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("sub".into(), user.user_id.clone().into());
    if scope.iter().any(|s| s == "profile") {
        c.insert("name".into(), user.name.clone().into());
        c.insert("nickname".into(), user.nickname.clone().into());
        if let Some(p) = &user.picture {
            c.insert("picture".into(), p.clone().into());
        }
    }
    if scope.iter().any(|s| s == "email") {
        c.insert("email".into(), user.email.clone().into());
        c.insert("email_verified".into(), user.email_verified.into());
    }
    put_custom(&mut c, &t.claims_namespace, &user.claims);
    c
}

/// An ID token: for the client (`aud` is its id), about the user.
fn id_token_claims(
    t: &Tenant,
    issuer: &str,
    client: &Client,
    user: &User,
    scope: &[String],
    iat: u64,
) -> Map<String, Value> {
    let mut c = profile_claims(t, user, scope);
    c.insert("iss".into(), issuer.into());
    c.insert("aud".into(), client.client_id.clone().into());
    c.insert("iat".into(), iat.into());
    c.insert("exp".into(), (iat + client.id_token_lifetime).into());
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        use base64::engine::general_purpose::STANDARD;
        let header = format!("Basic {}", STANDARD.encode("my%20client:s%3Acret+x"));
        assert_eq!(basic_credentials(&header), Some(("my client".into(), "s:cret x".into())));
        assert_eq!(basic_credentials("Bearer abc"), None);
    }

    #[test]
    fn a_repeated_form_parameter_is_refused() {
        let e = Params::from_form(b"grant_type=password&grant_type=client_credentials").unwrap_err();
        assert_eq!(e.error, "invalid_request");
    }

    #[test]
    fn json_parameters_must_be_flat() {
        assert!(Params::from_json(br#"{"scope": ["a"]}"#).is_err());
        let p = Params::from_json(br#"{"grant_type": "password", "x": null, "n": 3}"#).unwrap();
        assert_eq!((p.get("grant_type"), p.get("x"), p.get("n")), (Some("password"), None, Some("3")));
    }

    #[test]
    fn scopes_are_split_once_each_in_order() {
        assert_eq!(split_scope(" openid  read:runs openid "), ["openid", "read:runs"]);
    }
}
