//! `Error`: what can stop the mock from starting. Each variant carries what a
//! person needs to fix it; the CLI renders them in one place.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the tenant fixture {}: {source}\n  help: pass an existing file with --config or AUTH0_MOCK_CONFIG", file.display())]
    ReadConfig { file: PathBuf, source: std::io::Error },

    #[error("{0}")]
    Config(#[from] ConfigError),

    #[error("`{url}` is not a usable public URL: {reason}\n  help: write the base URL clients reach the mock at, like `http://127.0.0.1:8080`")]
    PublicUrl { url: String, reason: &'static str },

    #[error(
        "`{addr}` is not a listen address\n  help: write an IP and a port, like `127.0.0.1:8080` or `0.0.0.0:8080`"
    )]
    ListenAddr { addr: String },

    #[error("cannot listen on {addr}: {source}\n  help: pick a free port, or port 0 for any free one")]
    Bind { addr: SocketAddr, source: std::io::Error },

    #[error("the listening socket has no local address: {0}")]
    Listener(std::io::Error),

    #[error("cannot generate an RSA signing key: {0}")]
    KeyGeneration(String),

    #[error("cannot catch SIGTERM/SIGINT: {0}")]
    Signals(std::io::Error),
}
