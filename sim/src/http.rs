//! A small HTTP/1.1 client over hyper for the services' own APIs (InfluxDB's
//! `/ping`, `/query`, `/write`): requests to 127.0.0.1, bodies read whole.
//! HTTPS only with [`HttpClient::trusting`]: the one CA it is given, never
//! the machine's roots, since a stack's certificates come from its own
//! Vault.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

type Http = Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>;

/// A pooled HTTP client: connections are kept alive and reused, as an
/// application's client would; a client per request would open a TCP
/// connection per write and measure that instead of the service. Owned by an
/// endpoint (not the process) because a connection lives on the runtime that
/// opened it.
#[derive(Clone)]
pub struct HttpClient(Http);

impl HttpClient {
    pub fn new() -> HttpClient {
        HttpClient::with_roots(rustls::RootCertStore::empty())
    }

    /// A client for HTTPS servers whose certificate chains to `ca_pem` (and
    /// no other CA); plain HTTP works as with [`HttpClient::new`].
    pub fn trusting(ca_pem: &str) -> Result<HttpClient, String> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("the CA certificate is not PEM: {e}"))?;
            roots.add(cert).map_err(|e| format!("the CA certificate is not usable: {e}"))?;
        }
        if roots.is_empty() {
            return Err("the CA file holds no certificate".into());
        }
        Ok(HttpClient::with_roots(roots))
    }

    fn with_roots(roots: rustls::RootCertStore) -> HttpClient {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        HttpClient(Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https))
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new()
    }
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

/// Send one request and read the whole answer, within `timeout`.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> Result<Response, String> {
    request_with(&HttpClient::new(), method, url, headers, body, timeout).await
}

/// [`request`] on a client whose connections are reused.
pub async fn request_with(
    client: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> Result<Response, String> {
    send(client, method, url, headers, body, timeout).await.map_err(|e| match e {
        SendError::NotSent(e) | SendError::MaybeSent(e) => e,
    })
}

/// Why a request has no answer, split by what a caller may do next: one
/// that never reached the server can go elsewhere; one that may have
/// reached it must not be sent again under another connection, since a
/// server that acted on it would act twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No connection was made (refused, unreachable, TLS refused): nothing
    /// of the request left this process.
    NotSent(String),
    /// Sent, or perhaps sent: a reset or close mid-exchange, a timeout.
    MaybeSent(String),
}

/// [`request_with`], saying whether the request may have been sent.
pub async fn send(
    client: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> Result<Response, SendError> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).map_err(|e| SendError::NotSent(e.to_string()))?;
    let work = async {
        let resp = client.0.request(req).await.map_err(|e| {
            let text = format!("{method} {}: {}", redact(url), chain(&e));
            if e.is_connect() {
                SendError::NotSent(text)
            } else {
                SendError::MaybeSent(text)
            }
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.map_err(|e| SendError::MaybeSent(e.to_string()))?.to_bytes();
        Ok(Response { status, body: String::from_utf8_lossy(&bytes).into_owned() })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| SendError::MaybeSent(format!("{method} {} timed out", redact(url))))?
}

/// An error with its causes: hyper's own says only "client error
/// (Connect)", the cause says which certificate was refused and why.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out += &format!(": {s}");
        next = s.source();
    }
    out
}

/// URLs may carry credentials in their query (InfluxDB's `u=`/`p=`); error
/// messages must not.
fn redact(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// Percent-encode a query parameter value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_reserved_characters_and_keeps_the_rest() {
        assert_eq!(encode("SHOW DATABASES"), "SHOW%20DATABASES");
        assert_eq!(encode("a=b&c\"d"), "a%3Db%26c%22d");
        assert_eq!(encode("journal_v1.x-y~"), "journal_v1.x-y~");
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_sent_and_a_close_mid_request_may_have_been() {
        use tokio::io::AsyncReadExt;
        let client = HttpClient::new();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url = format!("http://127.0.0.1:{port}/v1/runs");
        let e = send(&client, "POST", &url, &[], "{}", Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(e, SendError::NotSent(_)), "{e:?}");

        // A server that reads the request, then closes without answering:
        // the message hyper gives ("connection closed before message
        // completed") names a connection, yet the request was delivered.
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/runs", server.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut conn, _) = server.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
        });
        let e = send(&client, "POST", &url, &[], "{}", Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(&e, SendError::MaybeSent(m) if m.contains("onnection")), "{e:?}");
    }

    #[test]
    fn redaction_drops_the_query_string() {
        assert_eq!(redact("http://127.0.0.1:1/query?u=a&p=secret"), "http://127.0.0.1:1/query");
    }
}
