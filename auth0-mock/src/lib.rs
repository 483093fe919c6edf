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
//!
//! The mock shares nothing with the simulator's harness but wire protocols.

pub mod config;
pub mod jwt;
pub mod keys;

mod error;
mod secret;

pub use config::{parse_tenant, Client, ConfigError, GrantType, Tenant, User, BUILTIN_FIXTURE};
pub use error::Error;
pub use jwt::{validate, Expectations, InvalidToken, PublicKeys};
pub use keys::KeyRing;
pub use secret::Secret;
