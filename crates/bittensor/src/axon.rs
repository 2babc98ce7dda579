//! The axon: the HTTP server side of the synapse protocol, as Python dendrites expect it.
//!
//! Build an [`Axon`] with the server's hotkey, attach typed handlers ([`Axon::attach`]), an
//! optional blacklist and priority function, then [`Axon::spawn`] it. Every request goes through
//! the SDK's pipeline in the SDK's order (route, headers, blacklist, verification, priority,
//! body hash, handler; see [`pipeline`]) and gets the SDK's status codes and messages. The
//! pipeline is a plain async function ([`Axon::handle`]) so tests drive it without a socket.
//!
//! The server around it (plain hyper) assumes every client may be hostile: connections are
//! capped globally and per address with idle ones reclaimed first ([`conn`]), each request has
//! one deadline for headers and body, and a body must keep a minimum rate ([`body`]).

mod body;
mod conn;
mod journal;
mod nonce;
mod pipeline;
mod priority;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::keys::{AccountId, Keypair};
use crate::synapse::{Synapse, SynapseHeader, SDK_VERSION_INT};
pub use nonce::{
    lane_id, NonceStore, ReplayBatch, ReplayError, ReplayJournal, ReplayLimits, ReplaySnapshot, ReplayStats, SavedLane,
    FLOOR_LANE, MAX_FUTURE_SKEW_NS, MAX_UUID_LEN, MAX_WINDOW_TIMEOUT_S, SAVE_INTERVAL, WINDOW_MAX_NS,
};
pub use priority::PriorityGate;

/// What a blacklist or priority function sees: the route and the header-built synapse
/// (unauthenticated at blacklist time, exactly as in the SDK).
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub name: &'a str,
    pub header: &'a SynapseHeader,
    pub peer: SocketAddr,
}

/// The verified caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub hotkey: AccountId,
    pub uuid: String,
    pub nonce: u64,
    pub version: Option<i64>,
    pub peer: SocketAddr,
}

/// A verified request handed to a handler.
#[derive(Debug, Clone)]
pub struct Request<S> {
    pub synapse: S,
    pub caller: Caller,
    /// The common fields as the body carried them.
    pub header: SynapseHeader,
}

/// A handler's failure. The caller sees `500` with the SDK's generic message; a `Public` reason
/// is appended for operators (it must not carry secrets).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Public(String),
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// Returns `Some(reason)` to refuse the request with 403.
pub type BlacklistFn = Arc<dyn Fn(&RequestHead<'_>) -> Option<String> + Send + Sync>;
/// Higher first when handlers are busy.
pub type PriorityFn = Arc<dyn Fn(&RequestHead<'_>) -> f64 + Send + Sync>;

/// A type-erased handler: parses fields into its synapse, runs, renders the result.
trait ErasedHandler: Send + Sync {
    fn hash_fields(&self) -> &'static [&'static str];
    /// The parsed synapse's fields as the SDK's `model_dump` would give them, or a type error.
    fn normalize(&self, fields: Map<String, Value>) -> Result<Map<String, Value>, String>;
    fn call(
        &self,
        fields: Map<String, Value>,
        header: SynapseHeader,
        caller: Caller,
    ) -> BoxFuture<Result<Map<String, Value>, HandlerError>>;
}

struct TypedHandler<S, F> {
    f: F,
    _s: std::marker::PhantomData<fn() -> S>,
}

impl<S, F, Fut> ErasedHandler for TypedHandler<S, F>
where
    S: Synapse,
    F: Fn(Request<S>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, HandlerError>> + Send + 'static,
{
    fn hash_fields(&self) -> &'static [&'static str] {
        S::REQUIRED_HASH_FIELDS
    }
    fn normalize(&self, fields: Map<String, Value>) -> Result<Map<String, Value>, String> {
        S::from_fields(fields).map(|s| s.to_fields()).map_err(|e| e.to_string())
    }
    fn call(
        &self,
        fields: Map<String, Value>,
        header: SynapseHeader,
        caller: Caller,
    ) -> BoxFuture<Result<Map<String, Value>, HandlerError>> {
        let synapse = match S::from_fields(fields) {
            Ok(s) => s,
            Err(e) => return Box::pin(async move { Err(HandlerError::Internal(e.to_string())) }),
        };
        let fut = (self.f)(Request { synapse, caller, header });
        Box::pin(async move { fut.await.map(|s| s.to_fields()) })
    }
}

/// The default body limit: SN27's `Allocate` (two public keys and the requirements) and
/// `Specs` requests are a few KB.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024;

/// Server settings.
///
/// The defaults hold against one hostile machine: it can keep at most
/// `max_connections_per_ip` connections open, none of them longer than `request_timeout` per
/// request (headers and body) or idle, and a body no faster than `min_body_bytes_per_s` is cut
/// off after a two-second grace.
#[derive(Debug, Clone)]
pub struct AxonConfig {
    /// Where to listen; port 0 picks a free port (tests).
    pub bind: SocketAddr,
    /// The body limit of every synapse without its own in `body_limits`; a larger body gets
    /// 413, from its `Content-Length` before any of it is read.
    pub max_body_bytes: usize,
    /// Body limits per synapse name (e.g. `"Allocate"`), overriding `max_body_bytes`.
    pub body_limits: BTreeMap<String, usize>,
    /// Requests with more header lines are refused by the HTTP layer.
    pub max_headers: usize,
    /// Bytes of request line and headers; more gets 431.
    pub max_header_bytes: usize,
    /// Connections open at once, from everyone.
    pub max_connections: usize,
    /// Connections open at once from one address (an IPv6 /64 counts as one).
    pub max_connections_per_ip: usize,
    /// Time from a request's first byte to its last (headers and body), and the longest a
    /// connection may sit idle before it sends a request.
    pub request_timeout: Duration,
    /// A body must arrive at least this fast (bytes per second, on average, after 2 s).
    pub min_body_bytes_per_s: u32,
}

impl Default for AxonConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8091)),
            max_body_bytes: DEFAULT_BODY_LIMIT,
            body_limits: BTreeMap::new(),
            max_headers: 100,
            max_header_bytes: 16 * 1024,
            max_connections: 1024,
            max_connections_per_ip: 128,
            request_timeout: Duration::from_secs(10),
            min_body_bytes_per_s: 1024,
        }
    }
}

/// An axon before it is served.
pub struct Axon {
    keypair: Arc<Keypair>,
    ss58: String,
    uuid: String,
    version: i64,
    handlers: BTreeMap<String, Arc<dyn ErasedHandler>>,
    /// Route names in the order attached, for the 404 message.
    order: Vec<String>,
    blacklist: Option<BlacklistFn>,
    priority: Option<PriorityFn>,
    gate: PriorityGate,
    clock: Clock,
    nonces: Arc<NonceStore>,
    /// Callers' keys, decoded once (bounded: cleared when full).
    keys: std::sync::Mutex<std::collections::HashMap<AccountId, crate::keys::VerifyingKey>>,
}

/// Decoded caller keys kept at most (a subnet has 256 UIDs).
const MAX_CACHED_KEYS: usize = 4096;

impl std::fmt::Debug for Axon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Axon").field("hotkey", &self.ss58).field("routes", &self.order).finish()
    }
}

impl Axon {
    pub fn new(keypair: Keypair) -> Self {
        let ss58 = keypair.ss58();
        Self {
            keypair: Arc::new(keypair),
            ss58,
            uuid: uuid::Uuid::new_v4().to_string(),
            version: SDK_VERSION_INT,
            handlers: BTreeMap::new(),
            order: vec!["Synapse".to_owned()],
            blacklist: None,
            priority: None,
            gate: PriorityGate::new(64),
            clock: Clock::system(),
            nonces: Arc::new(NonceStore::new()),
            keys: std::sync::Mutex::default(),
        }
    }

    /// The caller's key decoded for verification, from the cache when seen before.
    fn verifying_key(&self, who: &AccountId) -> Option<crate::keys::VerifyingKey> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = keys.get(who) {
            return Some(k.clone());
        }
        let k = who.verifying_key()?;
        if keys.len() >= MAX_CACHED_KEYS {
            keys.clear();
        }
        keys.insert(*who, k.clone());
        Some(k)
    }

    /// Serves `S` with `handler`.
    pub fn attach<S, F, Fut>(mut self, handler: F) -> Self
    where
        S: Synapse,
        F: Fn(Request<S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, HandlerError>> + Send + 'static,
    {
        let h = TypedHandler::<S, F> { f: handler, _s: std::marker::PhantomData };
        if self.handlers.insert(S::NAME.to_owned(), Arc::new(h)).is_none() {
            self.order.push(S::NAME.to_owned());
        }
        self
    }

    /// Refuses requests with 403 before any verification (the SDK's `blacklist_fn`).
    pub fn blacklist(mut self, f: impl Fn(&RequestHead<'_>) -> Option<String> + Send + Sync + 'static) -> Self {
        self.blacklist = Some(Arc::new(f));
        self
    }

    /// Orders requests when more than `slots` handlers would run at once.
    pub fn priority(mut self, slots: usize, f: impl Fn(&RequestHead<'_>) -> f64 + Send + Sync + 'static) -> Self {
        self.gate = PriorityGate::new(slots);
        self.priority = Some(Arc::new(f));
        self
    }

    /// The version int reported in `bt_header_axon_version` (SN27 miners report e.g. 183).
    pub fn version(mut self, version: i64) -> Self {
        self.version = version;
        self
    }

    /// Replaces the wall clock used for nonce windows (tests, recorded traffic). Set it before
    /// [`Axon::replay_journal`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Keeps the replay state in `journal` (restored now, saved every [`SAVE_INTERVAL`] while
    /// served and at a clean stop), so a captured request cannot be replayed after a restart.
    pub fn replay_journal(mut self, journal: Box<dyn ReplayJournal>) -> Result<Self, ReplayError> {
        let store = NonceStore::journaled(ReplayLimits::default(), journal, self.clock.now_ns())?;
        self.nonces = Arc::new(store);
        Ok(self)
    }

    /// How full the replay store is.
    pub fn replay_stats(&self) -> ReplayStats {
        self.nonces.stats()
    }

    pub fn hotkey(&self) -> &str {
        &self.ss58
    }

    /// Runs one request through the pipeline, both phases. Never panics on any input. The
    /// transport's bounds (body limits, deadlines) are the server's, not applied here.
    pub async fn handle(&self, req: http::Request<Bytes>, peer: SocketAddr) -> http::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        match pipeline::admit(self, &parts, peer) {
            Ok(admitted) => pipeline::finish(self, admitted, &body).await,
            Err(resp) => resp,
        }
    }

    /// Binds and serves in the background. Dropping the handle (or calling
    /// [`AxonHandle::shutdown`]) stops accepting and lets in-flight requests finish.
    pub async fn spawn(self, config: AxonConfig) -> std::io::Result<AxonHandle> {
        let listener = TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let nonces = self.nonces.clone();
        let axon = Arc::new(self);
        let task = tokio::spawn(serve(axon, listener, config, stop_rx));
        Ok(AxonHandle { addr, stop: stop_tx, task: Some(task), nonces })
    }
}

/// A running axon.
#[derive(Debug)]
pub struct AxonHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    nonces: Arc<NonceStore>,
}

impl AxonHandle {
    /// How full the replay store is.
    pub fn replay_stats(&self) -> ReplayStats {
        self.nonces.stats()
    }

    /// The address actually bound (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, waits for in-flight requests (at most 5 s), saves the replay state as
    /// a clean stop, then returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Waits for SIGTERM or Ctrl-C, then shuts down (for daemons).
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        self.shutdown().await;
    }
}

impl Drop for AxonHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Saves the replay state every [`SAVE_INTERVAL`] (also when idle: the last save's time is what
/// a restart after a crash refuses nonces up to).
async fn save_replay_state(nonces: Arc<NonceStore>, clock: Clock) {
    loop {
        tokio::time::sleep(SAVE_INTERVAL).await;
        let (n, now) = (nonces.clone(), clock.now_ns());
        match tokio::task::spawn_blocking(move || n.save(now, false)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "axon: replay state not saved; retrying"),
            Err(e) => tracing::error!(error = %e, "axon: the replay state saver failed"),
        }
    }
}

async fn serve(axon: Arc<Axon>, listener: TcpListener, config: AxonConfig, mut stop: watch::Receiver<bool>) {
    let saver =
        axon.nonces.is_journaled().then(|| tokio::spawn(save_replay_state(axon.nonces.clone(), axon.clock.clone())));
    let config = Arc::new(config);
    let table = conn::Table::new(config.max_connections, config.max_connections_per_ip);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Hyper's timer runs from the moment it waits for a request head, idle time included:
        // it closes idle keep-alive connections and bounds the headers; ours bounds the body.
        .header_read_timeout(config.request_timeout)
        .max_header_size(config.max_header_bytes)
        // The read buffer never needs more than the head plus a little; body chunks pass through.
        .max_buf_size((config.max_header_bytes * 2).max(8192))
        .keep_alive(true);
    if config.max_headers != 100 {
        // Hyper keeps 100 header slots on the stack; any other count costs a heap allocation.
        builder.max_headers(config.max_headers);
    }
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, usually: existing connections keep being served.
                    tracing::warn!(error = %e, open = table.open(), "axon accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Some(ticket) = table.admit(peer.ip()) else {
            tracing::debug!(%peer, "axon: connection refused, its address holds its share of connections");
            // A reset, not a close: no FIN exchange and no TIME_WAIT state kept for a refusal.
            let _ = stream.set_zero_linger();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let slot = ticket.slot.clone();
        let (axon, cfg) = (axon.clone(), config.clone());
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let (axon, cfg, slot) = (axon.clone(), cfg.clone(), slot.clone());
            async move {
                let started = slot.begin_request();
                let resp = read_and_handle(&axon, req, peer, &cfg, started).await;
                slot.end_request();
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let io = TokioIo::new(conn::Tracked { stream, slot: ticket.slot.clone() });
        let conn = builder.serve_connection(io, svc);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = ticket.slot.reclaimed() => None,
                _ = stop.changed() => None,
            };
            let result = match ended {
                Some(r) => r,
                None => {
                    // Finish the request in flight (if any), then close.
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(Duration::from_secs(30), conn).await.unwrap_or(Ok(()))
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "axon connection ended with an error");
            }
            drop(ticket);
        });
    }
    drop(listener);
    table.drained(Duration::from_secs(5)).await;
    if let Some(saver) = saver {
        saver.abort();
        let (nonces, now) = (axon.nonces.clone(), axon.clock.now_ns());
        match tokio::task::spawn_blocking(move || nonces.save(now, true)).await {
            Ok(Ok(())) => tracing::debug!("axon: replay state saved (clean stop)"),
            Ok(Err(e)) => tracing::error!(error = %e, "axon: replay state not saved at stop"),
            Err(e) => tracing::error!(error = %e, "axon: the replay state saver failed at stop"),
        }
    }
}

/// One request off the wire: the header phase, then (only if it admits the request) the body
/// within its synapse's limit and the request's deadline, then the body phase.
async fn read_and_handle(
    axon: &Axon,
    req: http::Request<hyper::body::Incoming>,
    peer: SocketAddr,
    config: &AxonConfig,
    started: std::time::Instant,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let admitted = match pipeline::admit(axon, &parts, peer) {
        Ok(a) => a,
        Err(mut resp) => {
            if !hyper::body::Body::is_end_stream(&body) {
                // The unread body cannot be skipped cheaply: close instead of draining it.
                resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            return resp;
        }
    };
    let declared = hyper::body::Body::size_hint(&body).exact();
    let bounds = body::Bounds {
        limit: config.body_limits.get(&admitted.name).copied().unwrap_or(config.max_body_bytes),
        deadline: tokio::time::Instant::from_std(started + config.request_timeout),
        min_rate: config.min_body_bytes_per_s,
        grace: body::RATE_GRACE,
    };
    match body::read(body, declared, bounds).await {
        Ok(body) => pipeline::finish(axon, admitted, &body).await,
        Err(e) => body_error(e),
    }
}

/// The answer when a body could not be read; the connection closes after it.
fn body_error(e: body::BodyError) -> http::Response<Full<Bytes>> {
    use body::BodyError;
    let (status, msg) = match e {
        BodyError::TooLarge { limit } => {
            (http::StatusCode::PAYLOAD_TOO_LARGE, format!("Request body larger than {limit} bytes"))
        }
        BodyError::Deadline => (http::StatusCode::REQUEST_TIMEOUT, "Request body not received in time".to_owned()),
        BodyError::TooSlow { min_rate } => {
            (http::StatusCode::REQUEST_TIMEOUT, format!("Request body arrived slower than {min_rate} bytes per second"))
        }
        BodyError::Broken => (http::StatusCode::BAD_REQUEST, "Request body could not be read".to_owned()),
    };
    let mut resp = pipeline::plain_error(status, &msg);
    resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    resp
}
