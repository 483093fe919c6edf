//! `api_request`: a request from the internet to the platform, made the
//! way a user's client makes it. Each of [`USERS`] virtual users has its
//! own HTTPS client (its own connections) and its own DNS cache: it asks
//! Route 53 for the API's name, keeps the answer for its TTL, and connects
//! through the ALB node the answer names, trying the next address when a
//! node refuses the connection. Tokens come from the Auth0 tenant
//! (client credentials) and are reused until shortly before they expire.
//!
//! The ALB's nodes are reached as the internet reaches them: a node's
//! public address is translated to the host port it is published on (an
//! internet gateway's part). An address that is no ALB node — Route 53's
//! maintenance answer — serves no API.
//!
//! An answer counts as acknowledged only when the service said every tier
//! holds the run (201). A refusal (4xx, and the WAF's 429) certainly wrote
//! nothing; a 5xx or a timeout may have written some tiers: ambiguous.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::http::{request_with, send, HttpClient, SendError};
use crate::ledger::Outcome;
use crate::state::RunState;

/// Virtual users, each with its own client and DNS cache.
pub const USERS: usize = 16;

/// The bucket voyager-api stores its artifacts in (its default).
pub const ARTIFACTS_BUCKET: &str = "voyager-jarvis-artifacts";

/// The id of the `n`th request of a run: voyager-api's idempotency key,
/// and how every tier names the run.
pub fn run_id(run: &str, n: u64) -> String {
    format!("{run}.api.{n}")
}

struct User {
    client: HttpClient,
    /// The last answer for the API's name and when it expires.
    resolved: Mutex<Option<(Vec<Ipv4Addr>, Instant)>>,
}

/// The API as the load reaches it.
pub struct ApiTarget {
    run: String,
    domain: String,
    /// Route 53, if the stack runs it; otherwise every ALB node is the
    /// answer, as a client with the nodes' addresses written down has.
    dns: Option<SocketAddr>,
    nodes: BTreeMap<Ipv4Addr, SocketAddr>,
    users: Vec<User>,
    next: AtomicUsize,
    token_url: String,
    grant: String,
    token: Mutex<Option<(String, Instant)>>,
}

/// What one request got: its outcome and the HTTP status, if any.
pub struct Answer {
    pub outcome: Outcome,
    pub status: Option<u16>,
}

impl ApiTarget {
    /// The API behind the stack's ALB, or `None` when it runs no ALB.
    pub fn of(state: &RunState, run: &str) -> Result<Option<ApiTarget>, String> {
        let nodes: BTreeMap<Ipv4Addr, SocketAddr> = state
            .instances
            .iter()
            .filter(|i| i.service == crate::stack::ServiceKind::Alb.as_str())
            .filter_map(|i| Some((i.address, *i.published.get(&crate::services::alb::HTTPS_PORT)?)))
            .collect();
        if nodes.is_empty() {
            return Ok(None);
        }
        let stack = state.parsed_stack()?;
        let domain = stack.alb.map(|a| a.domain).ok_or("the stack has no [service.alb]")?;
        let auth0 = crate::services::auth0::endpoint(state).ok_or("api_request needs the Auth0 tenant for tokens")?;
        let ca = &state.credentials.edge_tls.as_ref().ok_or("the ALB has no certificate")?.ca;
        let users = (0..USERS)
            .map(|_| Ok(User { client: HttpClient::trusting(ca)?, resolved: Mutex::new(None) }))
            .collect::<Result<Vec<_>, String>>()?;
        let grant = serde_json::json!({
            "grant_type": "client_credentials", "client_id": auth0.client_id,
            "client_secret": auth0.client_secret, "audience": auth0.audience,
        });
        Ok(Some(ApiTarget {
            run: run.to_string(),
            domain,
            dns: crate::services::route53::dns_addr(state),
            nodes,
            users,
            next: AtomicUsize::new(0),
            token_url: format!("http://{}/oauth/token", auth0.host),
            grant: grant.to_string(),
            token: Mutex::new(None),
        }))
    }

    /// A token of the tenant's, reused until a minute before it expires.
    async fn token(&self) -> Result<String, String> {
        let mut held = self.token.lock().await;
        if let Some((t, until)) = held.as_ref() {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let headers = [("content-type", "application/json")];
        let r = request_with(
            &self.users[0].client,
            "POST",
            &self.token_url,
            &headers,
            &self.grant,
            Duration::from_secs(10),
        )
        .await?;
        let v: serde_json::Value = serde_json::from_str(&r.body).map_err(|_| format!("token: HTTP {}", r.status))?;
        let token = v["access_token"].as_str().ok_or(format!("token: HTTP {}: {}", r.status, r.body.trim()))?;
        let life = Duration::from_secs(v["expires_in"].as_u64().unwrap_or(3600));
        *held = Some((token.to_string(), Instant::now() + life.saturating_sub(Duration::from_secs(60))));
        Ok(token.to_string())
    }

    /// The API's addresses for this user: its cached answer while its TTL
    /// lasts, else Route 53's.
    async fn resolve(&self, user: &User) -> Result<Vec<Ipv4Addr>, String> {
        let Some(dns) = self.dns else { return Ok(self.nodes.keys().copied().collect()) };
        let mut cache = user.resolved.lock().await;
        if let Some((addrs, until)) = cache.as_ref() {
            if Instant::now() < *until {
                return Ok(addrs.clone());
            }
        }
        let a = crate::dns::query_a(dns, &self.domain, Duration::from_secs(2)).await?;
        let ttl = a.a.iter().map(|(_, t)| *t).min().unwrap_or(0);
        let addrs: Vec<Ipv4Addr> = a.a.into_iter().map(|(ip, _)| ip).collect();
        *cache = Some((addrs.clone(), Instant::now() + Duration::from_secs(ttl as u64)));
        Ok(addrs)
    }

    /// One run created through the edge, classified.
    pub async fn request(&self, n: u64) -> Answer {
        let failed = Answer { outcome: Outcome::Failed, status: None };
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let user = &self.users[turn % USERS];
        let Ok(token) = self.token().await else { return failed };
        let Ok(addrs) = self.resolve(user).await else { return failed };
        let auth = format!("Bearer {token}");
        let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
        let body = serde_json::json!({ "id": run_id(&self.run, n) }).to_string();
        // Clients spread over the answer's addresses and move on from one
        // that refuses the connection.
        for k in 0..addrs.len() {
            let Some(host) = self.nodes.get(&addrs[(turn + k) % addrs.len()]) else { continue };
            let url = format!("https://{host}/v1/runs");
            match send(&user.client, "POST", &url, &headers, &body, Duration::from_secs(30)).await {
                Ok(r) => return Answer { outcome: outcome_of(r.status), status: Some(r.status) },
                // Nothing was sent: try the next address.
                Err(SendError::NotSent(_)) => continue,
                // A connection reset or closed mid-request may follow a
                // write the service made; sending it again would be a
                // second write the client never asked for.
                Err(SendError::MaybeSent(_)) => return Answer { outcome: Outcome::Ambiguous, status: None },
            }
        }
        failed
    }
}

/// 201 means every tier holds the run; a 4xx refused it before anything
/// was written; a 5xx (the service's "not durable", the ALB's 502/503/504)
/// may have left some tiers holding it.
pub fn outcome_of(status: u16) -> Outcome {
    match status {
        201 => Outcome::Acked,
        400..=499 => Outcome::Failed,
        _ => Outcome::Ambiguous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_201_is_acknowledged_and_only_a_refusal_is_certainly_not_written() {
        assert_eq!(outcome_of(201), Outcome::Acked);
        assert_eq!(outcome_of(429), Outcome::Failed, "the WAF refused it");
        assert_eq!(outcome_of(401), Outcome::Failed);
        assert_eq!(outcome_of(503), Outcome::Ambiguous, "some tiers may hold it");
        assert_eq!(outcome_of(502), Outcome::Ambiguous);
        assert_eq!(outcome_of(200), Outcome::Ambiguous, "not the answer the API gives");
        assert_eq!(run_id("az_loss-x1", 7), "az_loss-x1.api.7");
    }
}
