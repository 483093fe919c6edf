//! What the in-process tests share: a server on 127.0.0.1:0, initialised
//! and unsealed, with a root token; clients for it (the third-party
//! `vaultrs` and our own `VaultClient`).

#![allow(dead_code)]

use vault_lite::{Options, Server, VaultClient};
use vaultrs::client::{VaultClient as Vaultrs, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

pub async fn server(opts: Options) -> Server {
    Server::start("127.0.0.1:0".parse().unwrap(), opts).await.unwrap()
}

/// A vaultrs client for `url` with `token` (which may be empty).
pub fn vaultrs(url: &str, token: &str) -> Vaultrs {
    // reqwest's rustls backend needs a crypto provider; ring builds here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Vaultrs::new(VaultClientSettingsBuilder::default().address(url).token(token).build().unwrap()).unwrap()
}

pub struct Unsealed {
    pub server: Server,
    pub url: String,
    pub root_token: String,
    /// Our own client with the root token.
    pub api: VaultClient,
    /// vaultrs with the root token.
    pub root: Vaultrs,
}

impl Unsealed {
    pub fn as_token(&self, token: &str) -> Vaultrs {
        vaultrs(&self.url, token)
    }
}

pub async fn unsealed_with(opts: Options) -> Unsealed {
    let server = server(opts).await;
    let url = server.url();
    let anon = VaultClient::new(&url);
    let init = anon.init(1, 1).await.unwrap();
    let status = anon.unseal(&init.keys).await.unwrap();
    assert_eq!(status["sealed"], false);
    Unsealed {
        api: VaultClient::new(&url).with_token(&init.root_token),
        root: vaultrs(&url, &init.root_token),
        root_token: init.root_token,
        url,
        server,
    }
}

pub async fn unsealed() -> Unsealed {
    unsealed_with(Options::default()).await
}

/// The HTTP status of a vaultrs error.
pub fn code(e: &ClientError) -> u16 {
    match e {
        ClientError::APIError { code, .. } => *code,
        ClientError::RestClientError { source: rustify::errors::ClientError::ServerResponseError { code, .. } } => {
            *code
        }
        other => panic!("not an HTTP status: {other:?}"),
    }
}

/// The error messages of a vaultrs error.
pub fn errors(e: &ClientError) -> Vec<String> {
    match e {
        ClientError::APIError { errors, .. } => errors.clone(),
        other => panic!("not an API error: {other:?}"),
    }
}
