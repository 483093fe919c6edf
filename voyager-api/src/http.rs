//! The service's outgoing HTTP (JWKS, InfluxDB, S3): pooled keep-alive
//! connections and a deadline on every request, so a dependency that stops
//! answering fails the request instead of holding it. Errors name the host
//! and path, never the query string (InfluxDB's carries a password).

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::HeaderMap;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Http {
    pub fn new(timeout: Duration) -> Http {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Http { client, timeout }
    }

    pub async fn get(&self, url: &str, headers: &[(&str, String)]) -> Result<Response, String> {
        self.request("GET", url, headers, Bytes::new()).await
    }

    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Response, String> {
        let shown = url.split('?').next().unwrap_or(url);
        let mut req = hyper::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(Full::new(body)).map_err(|e| format!("{method} {shown}: {e}"))?;
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| {
                let cause = std::error::Error::source(&e).map(|c| format!(" ({c})")).unwrap_or_default();
                format!("{method} {shown}: {e}{cause}")
            })?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await.map_err(|e| format!("{method} {shown}: {e}"))?.to_bytes();
            Ok(Response { status, headers, body })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| format!("{method} {shown}: no answer within {:?}", self.timeout))?
    }
}
