//! The file audit device: one JSON line per request and one per response,
//! shaped like Vault's, with every string in the request and response data,
//! every client token and every accessor replaced by
//! `hmac-sha256:<hex>` under the server's HMAC key. **The audit log never
//! holds a secret value**; `sys/audit-hash` gives the HMAC of a known value
//! so a person can still find it.

use std::io::Write;

use ring::hmac;
use serde_json::{json, Map, Value};

use crate::api::{ApiError, Reply, Request, Result};
use crate::clock;
use crate::token::TokenEntry;

pub fn hmac(key: &[u8], s: &str) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&k, s.as_bytes());
    format!("hmac-sha256:{}", crate::seal::hex(tag.as_ref()))
}

/// Every string inside `v`, replaced by its HMAC.
pub fn hash_value(key: &[u8], v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(hmac(key, s)),
        Value::Array(a) => Value::Array(a.iter().map(|x| hash_value(key, x)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), hash_value(key, x))).collect()),
        other => other.clone(),
    }
}

/// An `auth` block (of a caller or a response) with its token and
/// accessor hashed.
fn hash_auth(key: &[u8], auth: &Value) -> Value {
    let mut a = auth.clone();
    for field in ["client_token", "accessor"] {
        if let Some(Value::String(s)) = a.get(field) {
            a[field] = json!(hmac(key, s));
        }
    }
    a
}

/// One request's audit trail: where it goes and what was said about it.
pub struct AuditRecord {
    paths: Vec<String>,
    auth: Value,
    request: Value,
    failed: bool,
}

impl AuditRecord {
    pub fn new(key: &[u8], paths: Vec<String>, req: &Request, caller: Option<&TokenEntry>, mount_type: &str) -> Self {
        let now = clock::now();
        let auth = match caller {
            Some(t) => hash_auth(
                key,
                &json!({
                    "client_token": t.id,
                    "accessor": t.accessor,
                    "display_name": t.display_name,
                    "policies": t.policies,
                    "token_policies": t.policies,
                    "metadata": t.meta,
                    "entity_id": "",
                    "token_type": "service",
                    "token_ttl": t.ttl(now),
                    "token_issue_time": clock::rfc3339(t.issued),
                }),
            ),
            None => json!({ "token_type": "default" }),
        };
        let mut request = json!({
            "id": req.id,
            "operation": req.op.as_str(),
            "mount_type": mount_type,
            "namespace": { "id": "root" },
            "path": req.path,
            "remote_address": req.remote.map(|a| a.ip().to_string()).unwrap_or_default(),
            "remote_port": req.remote.map(|a| a.port()).unwrap_or(0),
        });
        if let Some(t) = &req.token {
            request["client_token"] = json!(hmac(key, t));
        }
        if let Some(t) = caller {
            request["client_token_accessor"] = json!(hmac(key, &t.accessor));
        }
        if !req.data.is_empty() {
            request["data"] = hash_value(key, &Value::Object(req.data.clone()));
        }
        AuditRecord { paths, auth, request, failed: false }
    }

    pub fn failed(mut self) -> Self {
        self.failed = true;
        self
    }

    pub fn is_failed(&self) -> bool {
        self.failed
    }

    pub fn write_request(&self) -> std::io::Result<()> {
        let line = json!({
            "time": clock::rfc3339(clock::now()),
            "type": "request",
            "auth": self.auth,
            "request": self.request,
        });
        self.write(&line)
    }

    pub fn write_response(&self, key: &[u8], result: &Result<Reply>) -> std::io::Result<()> {
        let mut response = Map::new();
        response.insert("mount_type".into(), self.request["mount_type"].clone());
        let mut error = None;
        match result {
            Ok(Reply::Secret(s)) => {
                if let Some(d) = &s.data {
                    response.insert("data".into(), hash_value(key, d));
                }
                if let Some(a) = &s.auth {
                    response.insert("auth".into(), hash_auth(key, a));
                }
                if !s.lease_id.is_empty() {
                    response.insert(
                        "secret".into(),
                        json!({ "lease_id": s.lease_id, "lease_duration": s.lease_duration, "renewable": s.renewable }),
                    );
                }
                if !s.warnings.is_empty() {
                    response.insert("warnings".into(), json!(s.warnings));
                }
            }
            Ok(Reply::Raw { body, .. }) if !body.is_null() => {
                response.insert("data".into(), hash_value(key, body));
            }
            Ok(Reply::Text { body, .. }) => {
                response.insert("data".into(), json!({ "http_raw_body": hmac(key, body) }));
            }
            Ok(_) => {}
            Err(ApiError { errors, data, .. }) => {
                error = Some(errors.join("; "));
                if let Some(d) = data {
                    response.insert("data".into(), hash_value(key, d));
                }
            }
        }
        let mut line = json!({
            "time": clock::rfc3339(clock::now()),
            "type": "response",
            "auth": self.auth,
            "request": self.request,
            "response": response,
        });
        if let Some(e) = error {
            line["error"] = json!(e);
        }
        self.write(&line)
    }

    fn write(&self, line: &Value) -> std::io::Result<()> {
        let mut text = serde_json::to_string(line).map_err(std::io::Error::other)?;
        text.push('\n');
        for p in &self.paths {
            append(p, &text)?;
        }
        Ok(())
    }
}

pub fn append(path: &str, text: &str) -> std::io::Result<()> {
    if path == "stdout" {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        return out.flush();
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_every_string_and_nothing_else() {
        let v = json!({"a": "secret", "n": 3, "b": true, "l": ["x", {"y": "z"}]});
        let h = hash_value(b"k", &v);
        let text = h.to_string();
        for s in ["secret", "\"x\"", "\"z\""] {
            assert!(!text.contains(s), "{text}");
        }
        assert_eq!(h["n"], 3);
        assert_eq!(h["b"], true);
        assert_eq!(h["a"], json!(hmac(b"k", "secret")));
        assert_ne!(hmac(b"k", "secret"), hmac(b"other", "secret"));
    }
}
