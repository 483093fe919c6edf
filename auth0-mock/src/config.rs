//! The tenant the mock plays: its domain, its one API (the audience), clients
//! and users, parsed from a TOML fixture (`fixtures/auth0.toml`). Every
//! problem in a file is reported at once with its line, column and a hint.
//! **No I/O**: callers hand in the text.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

use crate::secret::Secret;

/// The shipped fixture, used when no `--config` is given.
pub const BUILTIN_FIXTURE: &str = include_str!("../../fixtures/auth0.toml");

/// Auth0's longest access-token lifetime ("Token Expiration", 30 days).
const MAX_TOKEN_LIFETIME: u64 = 2_592_000;

#[derive(Debug, Clone)]
pub struct Tenant {
    /// `voyager.auth0.com`; the issuer is `https://<domain>/` unless the mock
    /// is given a public URL.
    pub domain: String,
    /// Prefix of custom claims (`https://voyager.dev/`), as Auth0 requires.
    pub claims_namespace: String,
    /// Seconds of leeway on `exp`, `nbf` and `iat` when validating.
    pub clock_skew: u64,
    /// The database connection users log in through (the password-realm
    /// grant's `realm`).
    pub connection: String,
    /// Absolute lifetime of a refresh token, in seconds.
    pub refresh_token_lifetime: u64,
    pub api: Api,
    /// How long a rotated-out key stays published and accepted; `None` keeps
    /// it until the next rotation.
    pub key_overlap: Option<u64>,
    pub clients: Vec<Client>,
    pub users: Vec<User>,
}

/// The tenant's API: the resource server tokens are issued for.
#[derive(Debug, Clone)]
pub struct Api {
    /// The audience (`aud`) of access tokens.
    pub identifier: String,
    /// Access-token lifetime in seconds.
    pub token_lifetime: u64,
    /// Whether refresh tokens may be issued for it (`offline_access`).
    pub allow_offline_access: bool,
    /// Every permission (scope) the API defines; clients and users are
    /// granted subsets.
    pub permissions: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    pub client_id: String,
    /// `None` for a public client (a SPA or native app), which authenticates
    /// with its id alone.
    pub client_secret: Option<Secret>,
    pub grant_types: Vec<GrantType>,
    /// The client grant on the API for `client_credentials`; `None` when the
    /// client is not authorised for the API at all.
    pub scopes: Option<Vec<String>>,
    pub id_token_lifetime: u64,
    /// Custom claims put (namespaced) on this client's machine tokens.
    pub claims: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct User {
    /// `auth0|<id>`: the `sub` of the user's tokens.
    pub user_id: String,
    pub email: String,
    pub email_verified: bool,
    pub username: Option<String>,
    pub password: Secret,
    pub name: String,
    pub nickname: String,
    pub picture: Option<String>,
    /// RBAC permissions on the API: the `permissions` claim, and the API
    /// scopes a user's token may carry.
    pub permissions: Vec<String>,
    /// A blocked user cannot log in, and their refresh tokens stop working.
    pub blocked: bool,
    /// Custom claims put (namespaced) on the user's access and ID tokens.
    pub claims: Map<String, Value>,
}

/// The grants `/oauth/token` serves, by Auth0's names for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantType {
    ClientCredentials,
    Password,
    PasswordRealm,
    RefreshToken,
}

impl GrantType {
    pub const ALL: [GrantType; 4] =
        [GrantType::ClientCredentials, GrantType::Password, GrantType::PasswordRealm, GrantType::RefreshToken];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::ClientCredentials => "client_credentials",
            GrantType::Password => "password",
            GrantType::PasswordRealm => "http://auth0.com/oauth/grant-type/password-realm",
            GrantType::RefreshToken => "refresh_token",
        }
    }

    pub fn parse(s: &str) -> Option<GrantType> {
        GrantType::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

impl Client {
    /// Whether the client may use `grant`. `password` enables the
    /// password-realm variant too, as the dashboard's Password box does.
    pub fn allows(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
            || (grant == GrantType::PasswordRealm && self.grant_types.contains(&GrantType::Password))
    }
}

impl Tenant {
    pub fn client(&self, client_id: &str) -> Option<&Client> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    pub fn user(&self, user_id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.user_id == user_id)
    }

    /// The user a login names: by email (case-insensitive, as Auth0 stores
    /// emails lower-cased) or by username.
    pub fn user_by_login(&self, login: &str) -> Option<&User> {
        self.users.iter().find(|u| u.email.eq_ignore_ascii_case(login) || u.username.as_deref() == Some(login))
    }
}

/// One thing wrong in a fixture, where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub help: String,
}

/// Everything wrong with one fixture file, shown all at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}\n  help: {}", self.file.display(), p.line, p.col, p.message, p.help)?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenantFile {
    tenant: RawTenant,
    api: RawApi,
    #[serde(default)]
    keys: RawKeys,
    #[serde(default)]
    client: Vec<RawClient>,
    #[serde(default)]
    user: Vec<RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    domain: Spanned<String>,
    claims_namespace: Spanned<String>,
    clock_skew: Option<Spanned<u64>>,
    connection: Option<Spanned<String>>,
    refresh_token_lifetime: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    identifier: Spanned<String>,
    token_lifetime: Option<Spanned<u64>>,
    #[serde(default)]
    allow_offline_access: bool,
    #[serde(default)]
    permissions: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    rotation_overlap: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: Spanned<String>,
    client_id: Spanned<String>,
    client_secret: Option<Spanned<String>>,
    grant_types: Spanned<Vec<Spanned<String>>>,
    scopes: Option<Vec<Spanned<String>>>,
    id_token_lifetime: Option<Spanned<u64>>,
    #[serde(default)]
    claims: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    user_id: Spanned<String>,
    email: Spanned<String>,
    #[serde(default = "yes")]
    email_verified: bool,
    username: Option<Spanned<String>>,
    password: Spanned<String>,
    name: Option<String>,
    nickname: Option<String>,
    picture: Option<String>,
    #[serde(default)]
    permissions: Vec<Spanned<String>>,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    claims: toml::Table,
}

fn yes() -> bool {
    true
}

struct Collector<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Collector<'_> {
    fn push(&mut self, span: Range<usize>, message: impl Into<String>, help: impl Into<String>) {
        let offset = span.start.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        self.problems.push(Problem { line, col, message: message.into(), help: help.into() });
    }

    /// A duration in seconds within `1..=max`.
    fn seconds(&mut self, v: &Option<Spanned<u64>>, default: u64, max: u64, what: &str) -> u64 {
        match v {
            None => default,
            Some(s) if (1..=max).contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                self.push(
                    s.span(),
                    format!("{what} must be between 1 and {max} seconds"),
                    format!("use e.g. {default}"),
                );
                default
            }
        }
    }
}

/// Parse and validate a tenant fixture. `file` is only used in messages.
pub fn parse_tenant(file: &Path, text: &str) -> Result<Tenant, ConfigError> {
    let raw: RawTenantFile = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        let help = if message.contains("unknown field") {
            "remove the key or fix its spelling; the keys allowed here are listed above"
        } else if message.contains("missing field") {
            "add the missing key; fixtures/auth0.toml shows a complete tenant"
        } else if message.contains("duplicate key") {
            "each key may appear once; rename or remove the second one"
        } else {
            "fix the TOML at this point"
        };
        let mut c = Collector { text, problems: vec![] };
        c.push(e.span().unwrap_or(0..0), message, help);
        ConfigError { file: file.to_path_buf(), problems: c.problems }
    })?;
    let mut c = Collector { text, problems: vec![] };
    let tenant = validate(&mut c, raw);
    if c.problems.is_empty() {
        Ok(tenant)
    } else {
        Err(ConfigError { file: file.to_path_buf(), problems: c.problems })
    }
}

fn validate(c: &mut Collector<'_>, raw: RawTenantFile) -> Tenant {
    let t = raw.tenant;
    let domain = t.domain.get_ref().trim().to_string();
    if domain.is_empty() || domain.contains("://") || domain.contains('/') {
        c.push(
            t.domain.span(),
            format!("`{domain}` is not a tenant domain"),
            "write the bare host, like `voyager.auth0.com`",
        );
    }
    let namespace = t.claims_namespace.get_ref().clone();
    if !(namespace.starts_with("https://") || namespace.starts_with("http://")) || !namespace.ends_with('/') {
        c.push(
            t.claims_namespace.span(),
            format!("claims namespace `{namespace}` is not a URL ending in `/`"),
            "Auth0 custom claims are namespaced by a URL, like `https://voyager.dev/`",
        );
    } else if ["auth0.com", "webtask.io", "webtask.run"].iter().any(|d| namespace.contains(d)) {
        c.push(
            t.claims_namespace.span(),
            format!("Auth0 refuses claims namespaced under its own domains (`{namespace}`)"),
            "use a domain of your own, like `https://voyager.dev/`",
        );
    }
    let clock_skew = match &t.clock_skew {
        None => 300,
        Some(s) if *s.get_ref() <= 3600 => *s.get_ref(),
        Some(s) => {
            c.push(s.span(), "clock skew above an hour would accept long-expired tokens", "the seed uses 300");
            300
        }
    };
    let connection = match t.connection {
        None => "Username-Password-Authentication".to_string(),
        Some(s) if s.get_ref().trim().is_empty() => {
            c.push(s.span(), "the connection name is empty", "use `Username-Password-Authentication`");
            String::new()
        }
        Some(s) => s.into_inner(),
    };
    let refresh_token_lifetime =
        c.seconds(&t.refresh_token_lifetime, 2_592_000, 31_557_600, "the refresh-token lifetime");

    let a = raw.api;
    let identifier = a.identifier.get_ref().trim().to_string();
    if identifier.is_empty() {
        c.push(a.identifier.span(), "the API identifier is empty", "it is the audience, like `voyager-api`");
    }
    let token_lifetime = c.seconds(&a.token_lifetime, 86_400, MAX_TOKEN_LIFETIME, "the token lifetime");
    let mut permissions: Vec<String> = vec![];
    for p in &a.permissions {
        let name = p.get_ref();
        if name.is_empty() || name.contains(char::is_whitespace) {
            c.push(p.span(), format!("`{name}` is not a permission name"), "use one word, like `read:runs`");
        } else if permissions.contains(name) {
            c.push(p.span(), format!("permission `{name}` is listed twice"), "remove one of them");
        } else {
            permissions.push(name.clone());
        }
    }
    let api = Api { identifier, token_lifetime, allow_offline_access: a.allow_offline_access, permissions };

    let overlap = raw.keys.rotation_overlap;
    let key_overlap = overlap.is_some().then(|| c.seconds(&overlap, 3600, 31_557_600, "the rotation overlap"));

    let mut clients: Vec<Client> = vec![];
    for rc in raw.client {
        if let Some(client) = client(c, rc, &api, &clients) {
            clients.push(client);
        }
    }
    let mut users: Vec<User> = vec![];
    for ru in raw.user {
        if let Some(user) = user(c, ru, &api, &users) {
            users.push(user);
        }
    }
    Tenant {
        domain,
        claims_namespace: namespace,
        clock_skew,
        connection,
        refresh_token_lifetime,
        api,
        key_overlap,
        clients,
        users,
    }
}

/// Permissions that the API defines, reporting the others.
fn known_permissions(c: &mut Collector<'_>, list: &[Spanned<String>], api: &Api, whose: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for p in list {
        let name = p.get_ref();
        if !api.permissions.contains(name) {
            c.push(
                p.span(),
                format!("{whose} is granted `{name}`, which the API `{}` does not define", api.identifier),
                "add it to `[api] permissions`, or fix its spelling",
            );
        } else if !out.contains(name) {
            out.push(name.clone());
        }
    }
    out
}

fn client(c: &mut Collector<'_>, rc: RawClient, api: &Api, seen: &[Client]) -> Option<Client> {
    let id = rc.client_id.get_ref().clone();
    if id.is_empty() || id.contains(char::is_whitespace) || id.contains(':') {
        c.push(
            rc.client_id.span(),
            format!("`{id}` is not a usable client id"),
            "use letters and digits, no spaces or `:`",
        );
        return None;
    }
    if seen.iter().any(|s| s.client_id == id) {
        c.push(rc.client_id.span(), format!("client id `{id}` is used twice"), "give each client its own id");
        return None;
    }
    let secret = match rc.client_secret {
        Some(s) if s.get_ref().is_empty() => {
            c.push(s.span(), "the client secret is empty", "remove the key for a public client, or set a secret");
            None
        }
        Some(s) => Some(Secret::new(s.into_inner())),
        None => None,
    };
    let mut grant_types: Vec<GrantType> = vec![];
    for g in rc.grant_types.get_ref() {
        match GrantType::parse(g.get_ref()) {
            Some(gt) if !grant_types.contains(&gt) => grant_types.push(gt),
            Some(_) => c.push(g.span(), format!("grant type `{}` is listed twice", g.get_ref()), "remove one of them"),
            None => c.push(
                g.span(),
                format!("the mock does not serve grant type `{}`", g.get_ref()),
                format!("use some of: {}", GrantType::ALL.map(|g| format!("`{}`", g.as_str())).join(", ")),
            ),
        }
    }
    if rc.grant_types.get_ref().is_empty() {
        c.push(
            rc.grant_types.span(),
            format!("client `{id}` has no grant types"),
            "list at least one, like `client_credentials`",
        );
    }
    if grant_types.contains(&GrantType::ClientCredentials) && secret.is_none() {
        c.push(
            rc.client_id.span(),
            format!("client `{id}` uses client_credentials without a client secret"),
            "add `client_secret`: machine-to-machine clients authenticate with one",
        );
    }
    let scopes = rc.scopes.as_ref().map(|s| known_permissions(c, s, api, &format!("client `{id}`")));
    let id_token_lifetime = c.seconds(&rc.id_token_lifetime, 36_000, MAX_TOKEN_LIFETIME, "the ID-token lifetime");
    let claims = claims(c, &rc.claims, rc.client_id.span());
    Some(Client {
        name: rc.name.into_inner(),
        client_id: id,
        client_secret: secret,
        grant_types,
        scopes,
        id_token_lifetime,
        claims,
    })
}

fn user(c: &mut Collector<'_>, ru: RawUser, api: &Api, seen: &[User]) -> Option<User> {
    let id = ru.user_id.get_ref().clone();
    if !id.split_once('|').is_some_and(|(provider, rest)| !provider.is_empty() && !rest.is_empty()) {
        c.push(
            ru.user_id.span(),
            format!("`{id}` is not an Auth0 user id"),
            "write `<provider>|<id>`, like `auth0|64f1c0ffee`",
        );
        return None;
    }
    if seen.iter().any(|u| u.user_id == id) {
        c.push(ru.user_id.span(), format!("user id `{id}` is used twice"), "give each user their own id");
        return None;
    }
    let email = ru.email.get_ref().to_ascii_lowercase();
    if !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        c.push(ru.email.span(), format!("`{email}` is not an email address"), "write it like `ops@voyager.dev`");
        return None;
    }
    if seen.iter().any(|u| u.email == email) {
        c.push(
            ru.email.span(),
            format!("email `{email}` belongs to two users"),
            "emails are unique within a connection",
        );
        return None;
    }
    if let Some(name) = &ru.username {
        if seen.iter().any(|u| u.username.as_deref() == Some(name.get_ref())) {
            c.push(name.span(), format!("username `{}` belongs to two users", name.get_ref()), "usernames are unique");
        }
    }
    if ru.password.get_ref().is_empty() {
        c.push(
            ru.password.span(),
            format!("user `{id}` has an empty password"),
            "set one; the password grant needs it",
        );
    }
    let permissions = known_permissions(c, &ru.permissions, api, &format!("user `{id}`"));
    let claims = claims(c, &ru.claims, ru.user_id.span());
    let local = email.split('@').next().unwrap_or_default().to_string();
    Some(User {
        user_id: id,
        name: ru.name.unwrap_or_else(|| email.clone()),
        nickname: ru.nickname.unwrap_or(local),
        email,
        email_verified: ru.email_verified,
        username: ru.username.map(Spanned::into_inner),
        password: Secret::new(ru.password.into_inner()),
        picture: ru.picture,
        permissions,
        blocked: ru.blocked,
        claims,
    })
}

/// Custom claims as JSON. Their names are namespaced when tokens are made,
/// so they cannot collide with registered claims.
fn claims(c: &mut Collector<'_>, table: &toml::Table, at: Range<usize>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in table {
        if k.is_empty() {
            c.push(at.clone(), "a custom claim has an empty name", "name every claim");
            continue;
        }
        out.insert(k.clone(), toml_to_json(v));
    }
    out
}

fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Tenant, ConfigError> {
        parse_tenant(Path::new("auth0.toml"), text)
    }

    const MINIMAL: &str = r#"
[tenant]
domain = "voyager.auth0.com"
claims_namespace = "https://voyager.dev/"

[api]
identifier = "voyager-api"
permissions = ["read:runs"]
"#;

    #[test]
    fn the_builtin_fixture_is_valid_and_shaped_like_the_seed() {
        let t = parse_tenant(Path::new("fixtures/auth0.toml"), BUILTIN_FIXTURE).unwrap();
        assert_eq!(t.domain, "voyager.auth0.com");
        assert_eq!(t.api.identifier, "voyager-api");
        assert_eq!(t.clock_skew, 300);
        assert_eq!(t.api.token_lifetime, 86_400);
        assert!(t.api.allow_offline_access);
        assert!(!t.clients.is_empty() && !t.users.is_empty());
    }

    #[test]
    fn defaults_fill_what_a_minimal_tenant_leaves_out() {
        let t = parse(MINIMAL).unwrap();
        assert_eq!(t.clock_skew, 300);
        assert_eq!(t.api.token_lifetime, 86_400);
        assert_eq!(t.connection, "Username-Password-Authentication");
        assert_eq!(t.key_overlap, None);
    }

    #[test]
    fn a_syntax_error_names_file_line_and_column() {
        let e = parse("[tenant]\ndomain = \n").unwrap_err();
        assert_eq!(e.problems.len(), 1);
        assert_eq!(e.problems[0].line, 2, "{e}");
        assert!(e.to_string().starts_with("auth0.toml:2:"), "{e}");
        assert!(e.to_string().contains("help:"), "{e}");
    }

    #[test]
    fn an_unknown_key_is_reported_where_it_is() {
        let text = MINIMAL.replace("identifier", "identifer");
        let e = parse(&text).unwrap_err();
        assert!(e.to_string().contains("unknown field `identifer`"), "{e}");
        assert_eq!(e.problems[0].line, 7, "{e}");
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once_with_its_line() {
        let text = format!(
            "{MINIMAL}
[[client]]
name = \"worker\"
client_id = \"w1\"
grant_types = [\"client_credentials\", \"implicit\"]
scopes = [\"write:everything\"]

[[user]]
user_id = \"no-provider\"
email = \"a@b.c\"
password = \"x\"
"
        );
        let e = parse(&text).unwrap_err();
        let lines: Vec<(usize, &str)> = e.problems.iter().map(|p| (p.line, p.message.as_str())).collect();
        assert!(lines.iter().any(|(l, m)| *l == 13 && m.contains("`implicit`")), "{e}");
        assert!(lines.iter().any(|(l, m)| *l == 12 && m.contains("without a client secret")), "{e}");
        assert!(lines.iter().any(|(l, m)| *l == 14 && m.contains("`write:everything`")), "{e}");
        assert!(lines.iter().any(|(l, m)| *l == 17 && m.contains("not an Auth0 user id")), "{e}");
    }

    #[test]
    fn a_namespace_under_auth0_is_refused() {
        let e = parse(&MINIMAL.replace("https://voyager.dev/", "https://voyager.auth0.com/")).unwrap_err();
        assert!(e.to_string().contains("its own domains"), "{e}");
    }

    #[test]
    fn password_enables_the_realm_variant() {
        let text = format!(
            "{MINIMAL}
[[client]]
name = \"web\"
client_id = \"web1\"
grant_types = [\"password\"]
"
        );
        let t = parse(&text).unwrap();
        assert!(t.clients[0].allows(GrantType::PasswordRealm));
        assert!(!t.clients[0].allows(GrantType::RefreshToken));
    }
}
