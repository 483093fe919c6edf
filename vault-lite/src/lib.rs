//! vault-lite: an offline server for the subset of HashiCorp Vault's HTTP
//! API that the Voyager platform uses, with Vault's JSON shapes and status
//! codes, so the same client and provisioning code runs against it and
//! against a real Vault.
//!
//! Layout, each part using only those below it:
//!
//! - `server`: the HTTP edge (hyper) and the lease sweeper's task.
//! - `core`: the request pipeline every request goes through: seal check,
//!   token, ACL, audit, engine, persistence; `seal`, `barrier` and `shamir`
//!   for init/unseal and the encrypted state file.
//! - engines: `kv` (v1 and v2), `pki`, `database` (PostgreSQL), and the auth
//!   methods `token` and `approle`; `lease` and `sys` for the rest of `sys/`.
//! - `policy` (HCL subset and ACL matching), `audit` (HMAC'd JSON lines),
//!   `state` (everything persisted), `api` (request/reply types), `clock`,
//!   `random`.
//! - `client` and `provision`: a small Vault HTTP client and the code that
//!   applies `fixtures/vault.toml` to any Vault over the HTTP API alone.

#![recursion_limit = "256"]

pub mod api;
pub mod approle;
pub mod audit;
pub mod barrier;
pub mod client;
pub mod clock;
pub mod core;
pub mod database;
pub mod kv;
pub mod lease;
pub mod pki;
pub mod policy;
pub mod provision;
pub mod random;
pub mod seal;
pub mod server;
pub mod shamir;
pub mod state;
pub mod sys;
pub mod token;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use crate::core::Options;
pub use client::VaultClient;
pub use provision::{provision, DatabaseTarget, Fixture, Provisioned};
pub use server::Server;

/// The port Vault listens on.
pub const DEFAULT_PORT: u16 = 8200;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("state file {}: {reason}", path.display())]
    StateFile { path: PathBuf, reason: String },
}
