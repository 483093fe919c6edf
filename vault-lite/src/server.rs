//! The HTTP edge: binds, accepts, turns each HTTP request into an
//! [`api::Request`] (method → operation, `?list=true`, `X-Vault-Token` or
//! `Authorization: Bearer`, JSON body, query parameters), runs it through
//! [`Core`], and runs the lease sweeper beside it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{ApiError, Data, Method, Operation, Request};
use crate::core::{render, Core, Options, Step};
use crate::{lease, random, Error};

const MAX_BODY: usize = 32 << 20;

/// A running server. Dropping it stops accepting and closes connections.
pub struct Server {
    addr: SocketAddr,
    core: Arc<Mutex<Core>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Bind `listen` (port 0 picks a free port) and serve.
    pub async fn start(listen: SocketAddr, opts: Options) -> Result<Server, Error> {
        let core = Arc::new(Mutex::new(Core::open(opts)?));
        let listener = TcpListener::bind(listen).await.map_err(|source| Error::Bind { addr: listen, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind { addr: listen, source })?;
        let (stop, stopped) = watch::channel(false);
        let accept = tokio::spawn(accept(listener, core.clone(), stopped));
        let sweeper = tokio::spawn(lease::sweep(core.clone()));
        Ok(Server { addr, core, stop, tasks: vec![accept, sweeper] })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, as `VAULT_ADDR` wants it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop serving and save the state (if unsealed).
    pub fn shutdown(self) -> Result<(), String> {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        let mut c = self.core.lock().map_err(|_| "the core lock is poisoned".to_string())?;
        c.persist()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn accept(listener: TcpListener, core: Arc<Mutex<Core>>, stopped: watch::Receiver<bool>) {
    loop {
        let Ok((stream, remote)) = listener.accept().await else { continue };
        let core = core.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let core = core.clone();
                async move { Ok::<_, Infallible>(serve(core, remote, req).await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = stopped.changed() => {}
            }
        });
    }
}

/// `%XX` decoding; `+` is a space only in query strings.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if plus_is_space && b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(q: Option<&str>) -> Data {
    let mut d = Data::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        d.insert(percent_decode(k, true), Value::String(percent_decode(v, true)));
    }
    d
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn error(e: ApiError) -> hyper::Response<Full<Bytes>> {
    let a = render("", "", Err(e));
    respond(a.status, a.content_type, a.body)
}

async fn serve(
    core: Arc<Mutex<Core>>,
    remote: SocketAddr,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let Some(path) = req.uri().path().strip_prefix("/v1/") else {
        return error(ApiError::not_found());
    };
    let path = percent_decode(path, false);
    let mut params = query(req.uri().query());
    let list_param = params.get("list").and_then(Value::as_str).is_some_and(|v| v == "true" || v == "1");
    let method = match req.method().as_str() {
        "GET" if list_param => Method::List,
        "GET" => Method::Read,
        "LIST" => Method::List,
        "POST" | "PUT" => Method::Write,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        _ => return error(ApiError::unsupported_op()),
    };
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let token = header("x-vault-token")
        .or_else(|| header("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_string)))
        .filter(|t| !t.is_empty());
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(ApiError::bad(format!("failed to read the request body: {e}"))),
    };
    let mut data = if body.iter().all(u8::is_ascii_whitespace) {
        Data::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return error(ApiError::bad("failed to parse JSON input: expected an object")),
            Err(e) => return error(ApiError::bad(format!("failed to parse JSON input: {e}"))),
        }
    };
    if matches!(method, Method::Read | Method::List | Method::Head | Method::Delete) {
        params.remove("list");
        for (k, v) in params {
            data.entry(k).or_insert(v);
        }
    }
    let op = match method {
        Method::Read | Method::Head => Operation::Read,
        Method::List => Operation::List,
        Method::Write => Operation::Update,
        Method::Delete => Operation::Delete,
    };
    let mut r = Request { id: random::uuid(), method, op, path, data, token, remote: Some(remote) };
    let (pending, step) = lock(&core).handle(&mut r);
    let result = match step {
        Step::Done(r) => r,
        Step::Job(job) => {
            let outcomes = job.work.run().await;
            lock(&core).after_job(job.then, outcomes)
        }
    };
    let a = lock(&core).finish(&r, pending, result);
    respond(a.status, a.content_type, a.body)
}

/// The core, even if a handler panicked while holding it (the state is
/// still consistent: handlers mutate only after validating).
fn lock(core: &Mutex<Core>) -> std::sync::MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}
