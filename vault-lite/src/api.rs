//! The request and reply types every handler speaks, Vault's error shape and
//! its status codes, and the helpers that read typed fields out of a
//! request's JSON body the way Vault does (a TTL may be `3600` or `"1h"`, a
//! list may be an array or a comma-separated string).

use std::net::SocketAddr;

use serde_json::{json, Map, Value};

use crate::clock;

pub type Data = Map<String, Value>;

/// What the HTTP method asked for, before the existence check turns a write
/// into `create` or `update`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Read,
    List,
    Write,
    Delete,
    Head,
}

/// Vault's logical operation, as ACL capabilities and the audit log name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Read,
    List,
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::List => "list",
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }

    pub fn writes(self) -> bool {
        matches!(self, Operation::Create | Operation::Update | Operation::Delete)
    }
}

/// One API request: the path without `/v1/`, the body (and, for reads and
/// lists, the query parameters, as Vault merges them), and the client token.
#[derive(Debug)]
pub struct Request {
    pub id: String,
    pub method: Method,
    pub op: Operation,
    pub path: String,
    pub data: Data,
    pub token: Option<String>,
    pub remote: Option<SocketAddr>,
}

/// A successful reply.
#[derive(Debug)]
pub enum Reply {
    /// 204 with no body.
    Empty,
    /// A body without Vault's envelope (`sys/init`, `sys/seal-status`, …).
    Raw { status: u16, body: Value },
    /// A body that is not JSON (`<pki>/ca/pem`).
    Text { content_type: &'static str, body: String },
    /// The usual envelope.
    Secret(Secret),
}

/// The contents of Vault's response envelope.
#[derive(Debug, Default)]
pub struct Secret {
    pub data: Option<Value>,
    pub auth: Option<Value>,
    pub lease_id: String,
    pub lease_duration: u64,
    pub renewable: bool,
    pub warnings: Vec<String>,
    /// Some `sys/` endpoints also repeat `data`'s keys at the top level.
    pub legacy_top_level: bool,
}

impl Secret {
    pub fn data(data: Value) -> Reply {
        Reply::Secret(Secret { data: Some(data), ..Default::default() })
    }

    pub fn legacy(data: Value) -> Reply {
        Reply::Secret(Secret { data: Some(data), legacy_top_level: true, ..Default::default() })
    }

    pub fn keys(keys: Vec<String>) -> Reply {
        Secret::data(json!({ "keys": keys }))
    }

    /// The envelope as Vault serialises it.
    pub fn envelope(&self, request_id: &str, mount_type: &str) -> Value {
        let mut out = json!({
            "request_id": request_id,
            "lease_id": self.lease_id,
            "renewable": self.renewable,
            "lease_duration": self.lease_duration,
            "data": self.data.clone().unwrap_or(Value::Null),
            "wrap_info": null,
            "warnings": if self.warnings.is_empty() { Value::Null } else { json!(self.warnings) },
            "auth": self.auth.clone().unwrap_or(Value::Null),
            "mount_type": mount_type,
        });
        if let (true, Some(Value::Object(d)), Value::Object(top)) = (self.legacy_top_level, &self.data, &mut out) {
            for (k, v) in d {
                top.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        out
    }
}

/// An error reply: `{"errors": [...]}` with Vault's status code, or, where
/// Vault sends data with its 404 (a deleted kv version), the usual envelope
/// around that data.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub errors: Vec<String>,
    pub data: Option<Value>,
}

impl ApiError {
    pub fn new(status: u16, msg: impl Into<String>) -> ApiError {
        ApiError { status, errors: vec![msg.into()], data: None }
    }

    pub fn bad(msg: impl Into<String>) -> ApiError {
        ApiError::new(400, msg)
    }

    pub fn denied() -> ApiError {
        ApiError::new(403, "permission denied")
    }

    /// Vault's bare 404: an empty error list.
    pub fn not_found() -> ApiError {
        ApiError { status: 404, errors: vec![], data: None }
    }

    pub fn unsupported_path(path: &str) -> ApiError {
        ApiError::new(404, format!("no handler for route \"{path}\". route entry not found."))
    }

    pub fn unsupported_op() -> ApiError {
        ApiError::new(405, "unsupported operation")
    }

    pub fn sealed() -> ApiError {
        ApiError::new(503, "Vault is sealed")
    }

    pub fn internal(msg: impl Into<String>) -> ApiError {
        ApiError::new(500, msg)
    }

    pub fn body(&self) -> Value {
        json!({ "errors": self.errors })
    }
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

fn invalid(key: &str, want: &str) -> ApiError {
    ApiError::bad(format!("error converting input for field \"{key}\": expected {want}"))
}

pub fn get_str(d: &Data, key: &str) -> Result<Option<String>> {
    match d.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        _ => Err(invalid(key, "a string")),
    }
}

pub fn get_bool(d: &Data, key: &str) -> Result<Option<bool>> {
    match d.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.as_str() {
            "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(Some(true)),
            "false" | "0" | "f" | "F" | "FALSE" | "False" | "" => Ok(Some(false)),
            _ => Err(invalid(key, "a boolean")),
        },
        Some(Value::Number(n)) => Ok(Some(n.as_f64() != Some(0.0))),
        _ => Err(invalid(key, "a boolean")),
    }
}

pub fn get_u64(d: &Data, key: &str) -> Result<Option<u64>> {
    match d.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| invalid(key, "a non-negative integer")),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| invalid(key, "a non-negative integer")),
        _ => Err(invalid(key, "a non-negative integer")),
    }
}

/// A duration in seconds: an integer, or a string like `"72h"`, `"30m"`,
/// `"1h30m"`, `"3600"`, `"7d"`.
pub fn get_ttl(d: &Data, key: &str) -> Result<Option<u64>> {
    match d.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| invalid(key, "a duration")),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => clock::parse_duration(s).map(Some).map_err(|e| invalid(key, &e)),
        _ => Err(invalid(key, "a duration")),
    }
}

/// A list of strings: a JSON array or a comma-separated string.
pub fn get_list(d: &Data, key: &str) -> Result<Option<Vec<String>>> {
    match d.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            Ok(Some(s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()))
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.trim().to_string()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(invalid(key, "a list of strings")),
            })
            .collect::<Result<Vec<_>>>()
            .map(|v| Some(v.into_iter().filter(|s| !s.is_empty()).collect())),
        _ => Err(invalid(key, "a list of strings")),
    }
}

/// A list of statements: like [`get_list`] but a string is one statement,
/// never split on commas (SQL has commas).
pub fn get_statements(d: &Data, key: &str) -> Result<Option<Vec<String>>> {
    match d.get(key) {
        Some(Value::String(s)) => Ok(Some(if s.trim().is_empty() { vec![] } else { vec![s.clone()] })),
        _ => get_list(d, key),
    }
}

/// A map of string to string (`metadata`, `custom_metadata`).
pub fn get_string_map(d: &Data, key: &str) -> Result<Option<std::collections::BTreeMap<String, String>>> {
    match d.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Ok((k.clone(), other.to_string())),
            })
            .collect::<Result<_>>()
            .map(Some),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        _ => Err(invalid(key, "a map of strings")),
    }
}

/// Every value a handler got, as one `{key: value}` object, for a reply.
pub fn obj(v: Value) -> Data {
    match v {
        Value::Object(m) => m,
        _ => Data::new(),
    }
}
