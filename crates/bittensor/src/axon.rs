//! The axon: the HTTP server side of the synapse protocol, as Python dendrites expect it.
//!
//! Build an [`Axon`] with the server's hotkey, attach typed handlers ([`Axon::attach`]), an
//! optional blacklist and priority function, then [`Axon::spawn`] it. Every request goes through
//! the SDK's pipeline in the SDK's order (route, headers, blacklist, verification, priority,
//! body hash, handler; see [`pipeline`]) and gets the SDK's status codes and messages. The
//! pipeline is a plain async function ([`Axon::handle`]) so tests drive it without a socket.

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
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::keys::{AccountId, Keypair};
use crate::synapse::{Synapse, SynapseHeader, SDK_VERSION_INT};
pub use nonce::{Clock, ManualClock, NonceStore, SystemClock};
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

/// Server settings.
#[derive(Debug, Clone)]
pub struct AxonConfig {
    /// Where to listen; port 0 picks a free port (tests).
    pub bind: SocketAddr,
    /// Requests with a larger body get 413.
    pub max_body_bytes: usize,
    /// Requests with more header lines are refused by the HTTP layer.
    pub max_headers: usize,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time allowed to receive a request's headers.
    pub header_read_timeout: Duration,
}

impl Default for AxonConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8091)),
            max_body_bytes: 1 << 20,
            max_headers: 64,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
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
    clock: Arc<dyn Clock>,
    nonces: Arc<NonceStore>,
}

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
            clock: Arc::new(SystemClock),
            nonces: Arc::new(NonceStore::new()),
        }
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

    /// Replaces the wall clock used for nonce windows (tests, recorded traffic).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn hotkey(&self) -> &str {
        &self.ss58
    }

    /// Runs one request through the pipeline. Never panics on any input.
    pub async fn handle(&self, req: http::Request<Bytes>, peer: SocketAddr) -> http::Response<Full<Bytes>> {
        pipeline::process(self, req, peer).await
    }

    /// Binds and serves in the background. Dropping the handle (or calling
    /// [`AxonHandle::shutdown`]) stops accepting and lets in-flight requests finish.
    pub async fn spawn(self, config: AxonConfig) -> std::io::Result<AxonHandle> {
        let listener = TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let axon = Arc::new(self);
        let task = tokio::spawn(serve(axon, listener, config, stop_rx));
        Ok(AxonHandle { addr, stop: stop_tx, task: Some(task) })
    }
}

/// A running axon.
#[derive(Debug)]
pub struct AxonHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl AxonHandle {
    /// The address actually bound (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, waits for in-flight requests (at most 5 s), then returns.
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

async fn serve(axon: Arc<Axon>, listener: TcpListener, config: AxonConfig, mut stop: watch::Receiver<bool>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(config.max_connections));
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "axon accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let axon = axon.clone();
        let max_body = config.max_body_bytes;
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let axon = axon.clone();
            async move { Ok::<_, std::convert::Infallible>(read_and_handle(&axon, req, peer, max_body).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_headers(config.max_headers)
            .keep_alive(true);
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "axon connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

async fn read_and_handle(
    axon: &Axon,
    req: http::Request<hyper::body::Incoming>,
    peer: SocketAddr,
    max_body: usize,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, max_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_large = e.downcast_ref::<http_body_util::LengthLimitError>().is_some();
            let (status, msg) = if too_large {
                (http::StatusCode::PAYLOAD_TOO_LARGE, format!("Request body larger than {max_body} bytes"))
            } else {
                (http::StatusCode::BAD_REQUEST, "Request body could not be read".to_owned())
            };
            return pipeline::plain_error(status, &msg);
        }
    };
    axon.handle(http::Request::from_parts(parts, body), peer).await
}
