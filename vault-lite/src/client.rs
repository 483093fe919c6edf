//! A small client for Vault's HTTP API (plain HTTP, hyper), enough for
//! provisioning and for reading what typed clients do not expose (a lease
//! id). Error messages name the method, path and status, never a token or a
//! request body.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{method} {path}: {reason}")]
    Transport { method: String, path: String, reason: String },
    #[error("{method} {path}: HTTP {status}: {}", errors.join("; "))]
    Status { method: String, path: String, status: u16, errors: Vec<String> },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            ClientError::Transport { .. } => None,
        }
    }
}

/// What `sys/init` returned.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct InitResponse {
    pub keys: Vec<String>,
    pub keys_base64: Vec<String>,
    pub root_token: String,
}

#[derive(Clone)]
pub struct VaultClient {
    base: String,
    token: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl VaultClient {
    /// `addr` is `http://host:port` or `host:port`.
    pub fn new(addr: &str) -> VaultClient {
        let base = if addr.contains("://") { addr.trim_end_matches('/').to_string() } else { format!("http://{addr}") };
        VaultClient { base, token: None, http: Client::builder(TokioExecutor::new()).build_http() }
    }

    pub fn with_token(mut self, token: &str) -> VaultClient {
        self.token = Some(token.to_string());
        self
    }

    /// One request; the status and the JSON body (`null` when empty).
    pub async fn raw(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), ClientError> {
        let path = path.trim_start_matches('/');
        let transport = |reason: String| ClientError::Transport { method: method.into(), path: path.into(), reason };
        let mut req = hyper::Request::builder().method(method).uri(format!("{}/v1/{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("x-vault-token", t);
        }
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default()).unwrap_or_default();
        if !bytes.is_empty() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(bytes))).map_err(|e| transport(e.to_string()))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| transport(format!("{e} ({:?})", std::error::Error::source(&e))))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| transport(e.to_string()))?.to_bytes();
        let v = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into()))
        };
        Ok((status, v))
    }

    /// A request that must succeed (2xx).
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let (status, v) = self.raw(method, path, body).await?;
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let errors = v.get("errors").and_then(|e| serde_json::from_value(e.clone()).ok()).unwrap_or_default();
        Err(ClientError::Status { method: method.into(), path: path.trim_start_matches('/').into(), status, errors })
    }

    pub async fn read(&self, path: &str) -> Result<Value, ClientError> {
        self.call("GET", path, None).await
    }

    pub async fn write(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call("POST", path, Some(body)).await
    }

    pub async fn list(&self, path: &str) -> Result<Value, ClientError> {
        self.call("LIST", path, None).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.call("DELETE", path, None).await
    }

    /// `sys/init`.
    pub async fn init(&self, shares: u8, threshold: u8) -> Result<InitResponse, ClientError> {
        let v = self
            .call("PUT", "sys/init", Some(&json!({ "secret_shares": shares, "secret_threshold": threshold })))
            .await?;
        serde_json::from_value(v).map_err(|e| ClientError::Transport {
            method: "PUT".into(),
            path: "sys/init".into(),
            reason: e.to_string(),
        })
    }

    /// `sys/unseal` with each key until unsealed; the final seal status.
    pub async fn unseal(&self, keys: &[String]) -> Result<Value, ClientError> {
        let mut last = Value::Null;
        for k in keys {
            last = self.call("PUT", "sys/unseal", Some(&json!({ "key": k }))).await?;
            if last["sealed"] == json!(false) {
                break;
            }
        }
        Ok(last)
    }
}
