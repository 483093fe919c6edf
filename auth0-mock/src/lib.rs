//! A mock Auth0 tenant for local stacks and tests: the endpoints an
//! application and its resource servers use (OIDC discovery, JWKS,
//! `/oauth/token`, `/oauth/revoke`, `/userinfo`), RS256 tokens shaped like
//! Auth0's, and an admin API to rotate keys and mint tokens with chosen times.
//!
//! Layout:
//! - `config` — the tenant fixture (`Tenant`, `Client`, `User`), parsed from
//!   TOML with positioned errors. No I/O.
//! - `keys` — `KeyRing`: RSA signing keys, rotation with an overlap, the JWKS.
//! - `jwt` — signing, and `validate`: the checks a resource server makes.
//!   No I/O.
//! - `grant` — what `/oauth/token` and `/oauth/revoke` decide, as plain
//!   functions over a request's parameters; `OAuthError` in Auth0's shape.
//! - `admin` — the mock's own API: minting tokens with chosen times.
//! - `server` — the hyper server: routing, bodies, `/userinfo`, discovery,
//!   the admin API, graceful shutdown.
//!
//! The mock shares nothing with the simulator's harness but wire protocols.

pub mod admin;
pub mod config;
pub mod grant;
pub mod jwt;
pub mod keys;
pub mod server;

mod error;
mod secret;

pub use config::{parse_tenant, Client, ConfigError, GrantType, Tenant, User, BUILTIN_FIXTURE};
pub use error::Error;
pub use grant::OAuthError;
pub use jwt::{validate, Expectations, InvalidToken, PublicKeys};
pub use keys::KeyRing;
pub use secret::Secret;
pub use server::{Options, Running, Server};
