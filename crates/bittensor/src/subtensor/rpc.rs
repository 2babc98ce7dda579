//! JSON-RPC 2.0 transports to a Subtensor node: WebSocket (the default, as the SDK uses) and
//! HTTP POST (which a polkadot-sdk node answers on the same port).
//!
//! [`Transport`] is the seam: the typed client speaks through it, the real implementations are
//! the only ones in the product, and tests drive the same code against a replay server or the
//! devnet chain. Every error names the endpoint and, where there was one, the failed call.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// The largest message accepted from a node (a whole subnet's state is well under 1 MiB; the
/// SDK accepts up to 4 GiB).
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// A failed JSON-RPC exchange.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum RpcError {
    #[error("cannot reach the chain at {endpoint}: {reason}. Check the endpoint (--subtensor.chain_endpoint / --subtensor.network) and your network")]
    Unreachable { endpoint: String, reason: String },
    #[error("{method} on {endpoint} timed out after {seconds:.1} s")]
    Timeout { endpoint: String, method: String, seconds: f64 },
    #[error("{method} on {endpoint} failed: error {code}: {message}")]
    Rpc { endpoint: String, method: String, code: i64, message: String },
    #[error("{method} on {endpoint}: unexpected response: {reason}")]
    Protocol { endpoint: String, method: String, reason: String },
    #[error("the connection to {endpoint} closed during {method}")]
    Closed { endpoint: String, method: String },
    #[error("unsupported endpoint '{endpoint}': use ws://, wss://, http:// or https://")]
    BadEndpoint { endpoint: String },
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends one JSON-RPC request and returns its `result`.
pub trait Transport: Send + Sync + std::fmt::Debug {
    fn request<'a>(&'a self, method: &'a str, params: Value) -> BoxFuture<'a, Result<Value, RpcError>>;
    fn endpoint(&self) -> &str;

    /// Opens a subscription (`author_submitAndWatchExtrinsic`, `chain_subscribeNewHeads`…);
    /// `unsubscribe` is the method that ends it. Only WebSocket transports carry them.
    fn subscribe<'a>(
        &'a self,
        method: &'a str,
        params: Value,
        unsubscribe: &'static str,
    ) -> BoxFuture<'a, Result<Subscription, RpcError>> {
        let _ = (params, unsubscribe);
        Box::pin(async move {
            Err(RpcError::Protocol {
                endpoint: self.endpoint().to_owned(),
                method: method.to_owned(),
                reason: "subscriptions need a WebSocket endpoint (ws:// or wss://)".into(),
            })
        })
    }
}

/// The notifications of one subscription, in order; ends when the connection closes. Dropping it
/// unsubscribes.
pub struct Subscription {
    id: Value,
    rx: mpsc::UnboundedReceiver<Value>,
    out: mpsc::UnboundedSender<Message>,
    subs: Subs,
    unsubscribe: &'static str,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("id", &self.id).finish()
    }
}

impl Subscription {
    /// The next notification's `result`, or `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<Value> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(key) = sub_key(&self.id) {
            self.subs.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        }
        // Best effort: the node also forgets it when the connection closes. The reply is ignored
        // (id 0 is never used by a request).
        let text = json!({"jsonrpc": "2.0", "id": 0, "method": self.unsubscribe, "params": [self.id]}).to_string();
        let _ = self.out.send(Message::Text(text.into()));
    }
}

/// Subscription ids are strings on substrate nodes and may be numbers elsewhere.
fn sub_key(id: &Value) -> Option<String> {
    match id {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Opens the transport the URL's scheme asks for.
pub fn connect(endpoint: &str, timeout: Duration) -> Result<Arc<dyn Transport>, RpcError> {
    if endpoint.starts_with("ws://") || endpoint.starts_with("wss://") {
        Ok(Arc::new(WsTransport::new(endpoint, timeout)))
    } else if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        HttpTransport::new(endpoint, timeout).map(|t| Arc::new(t) as Arc<dyn Transport>)
    } else {
        Err(RpcError::BadEndpoint { endpoint: endpoint.to_owned() })
    }
}

/// Reads a JSON-RPC response object into the result or a typed error.
fn take_result(endpoint: &str, method: &str, mut resp: Value) -> Result<Value, RpcError> {
    if let Some(err) = resp.get("error").filter(|e| !e.is_null()) {
        return Err(RpcError::Rpc {
            endpoint: endpoint.to_owned(),
            method: method.to_owned(),
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error_text(err),
        });
    }
    match resp.get_mut("result") {
        Some(r) => Ok(r.take()),
        None => Err(RpcError::Protocol {
            endpoint: endpoint.to_owned(),
            method: method.to_owned(),
            reason: "neither result nor error in the response".into(),
        }),
    }
}

/// An error object's message, with its `data` when the node gave one: a transaction pool says
/// "Invalid Transaction" in `message` and why ("Inability to pay some fees…") in `data`.
fn error_text(err: &Value) -> String {
    let message = err.get("message").and_then(Value::as_str).unwrap_or("(no message)");
    match err.get("data") {
        Some(Value::String(d)) if !d.is_empty() && d != message => format!("{message}: {d}"),
        Some(d) if !d.is_null() && !d.is_string() => format!("{message}: {d}"),
        _ => message.to_owned(),
    }
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .expect("ring supports the default TLS versions");
    Arc::new(config)
}

// ---------------------------------------------------------------------------------------------
// WebSocket

/// A request waiting for its response. A subscription's sender is registered under the
/// subscription id by the reader itself, before anything else is read, so no notification that
/// follows the response can be missed.
enum Waiter {
    Call(oneshot::Sender<Result<Value, RpcError>>),
    Subscribe(oneshot::Sender<Result<Value, RpcError>>, mpsc::UnboundedSender<Value>),
}

type Pending = Arc<Mutex<HashMap<u64, Waiter>>>;
type Subs = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Value>>>>;

struct Conn {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    subs: Subs,
    alive: Arc<AtomicBool>,
}

/// One WebSocket connection, opened on first use and reopened after it drops. Requests are
/// multiplexed by id, so concurrent calls share the connection.
pub struct WsTransport {
    url: String,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<Conn>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for WsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTransport").field("url", &self.url).finish()
    }
}

impl WsTransport {
    pub fn new(url: &str, timeout: Duration) -> Self {
        Self { url: url.to_owned(), timeout, conn: tokio::sync::Mutex::new(None), next_id: AtomicU64::new(1) }
    }

    async fn open(&self) -> Result<Conn, RpcError> {
        let unreachable = |reason: String| RpcError::Unreachable { endpoint: self.url.clone(), reason };
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(MAX_MESSAGE_BYTES);
        config.max_frame_size = Some(MAX_MESSAGE_BYTES);
        let connector = self.url.starts_with("wss://").then(|| tokio_tungstenite::Connector::Rustls(tls_config()));
        let connecting =
            tokio_tungstenite::connect_async_tls_with_config(self.url.as_str(), Some(config), true, connector);
        let (ws, _) = tokio::time::timeout(self.timeout, connecting)
            .await
            .map_err(|_| unreachable(format!("no WebSocket handshake within {:.1} s", self.timeout.as_secs_f64())))?
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let pending: Pending = Arc::default();
        let subs: Subs = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let (p, s, a, endpoint) = (pending.clone(), subs.clone(), alive.clone(), self.url.clone());
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let text = match msg {
                    Ok(Message::Text(t)) => t.to_string(),
                    Ok(Message::Binary(b)) => String::from_utf8_lossy(&b).into_owned(),
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => continue,
                };
                let Ok(mut v) = serde_json::from_str::<Value>(&text) else { continue };
                if let Some(id) = v.get("id").and_then(Value::as_u64) {
                    match p.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
                        Some(Waiter::Call(tx)) => {
                            let _ = tx.send(Ok(v));
                        }
                        Some(Waiter::Subscribe(tx, notify)) => {
                            if let Some(key) = v.get("result").and_then(sub_key) {
                                s.lock().unwrap_or_else(|e| e.into_inner()).insert(key, notify);
                            }
                            let _ = tx.send(Ok(v));
                        }
                        None => {}
                    }
                    continue;
                }
                // A notification: {"method", "params": {"subscription", "result"}}.
                let Some(params) = v.get_mut("params") else { continue };
                let Some(key) = params.get("subscription").and_then(sub_key) else { continue };
                let result = params.get_mut("result").map(Value::take).unwrap_or(Value::Null);
                let mut subs = s.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(tx) = subs.get(&key) {
                    if tx.send(result).is_err() {
                        subs.remove(&key);
                    }
                }
            }
            a.store(false, Ordering::SeqCst);
            // Subscriptions end (their receivers see the channel close).
            s.lock().unwrap_or_else(|e| e.into_inner()).clear();
            // Everything still waiting learns the connection is gone.
            for (_, w) in p.lock().unwrap_or_else(|e| e.into_inner()).drain() {
                let tx = match w {
                    Waiter::Call(tx) | Waiter::Subscribe(tx, _) => tx,
                };
                let _ = tx.send(Err(RpcError::Closed { endpoint: endpoint.clone(), method: String::new() }));
            }
        });
        Ok(Conn { out, pending, subs, alive })
    }

    /// Sends on a live connection (opening one if needed); `Ok(None)` means it was dead.
    async fn send(
        &self,
        id: u64,
        text: &str,
        notify: Option<mpsc::UnboundedSender<Value>>,
    ) -> Result<Option<Sent>, RpcError> {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_none_or(|c| !c.alive.load(Ordering::SeqCst)) {
            *guard = Some(self.open().await?);
        }
        let conn = guard.as_ref().expect("connection was just ensured");
        let (tx, rx) = oneshot::channel();
        let waiter = match notify {
            Some(n) => Waiter::Subscribe(tx, n),
            None => Waiter::Call(tx),
        };
        conn.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(id, waiter);
        if conn.out.send(Message::Text(text.to_owned().into())).is_err() {
            conn.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            *guard = None;
            return Ok(None);
        }
        Ok(Some(Sent { rx, out: conn.out.clone(), subs: conn.subs.clone() }))
    }

    /// Sends a request (retrying once on a connection found dead) and waits for its response.
    async fn exchange(
        &self,
        method: &str,
        params: Value,
        notify: Option<mpsc::UnboundedSender<Value>>,
    ) -> Result<(Value, Sent), RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let text = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        // One retry when the cached connection turned out to be dead before sending.
        let mut sent = match self.send(id, &text, notify.clone()).await? {
            Some(s) => s,
            None => self
                .send(id, &text, notify)
                .await?
                .ok_or_else(|| RpcError::Closed { endpoint: self.url.clone(), method: method.to_owned() })?,
        };
        let resp = match tokio::time::timeout(self.timeout, &mut sent.rx).await {
            Err(_) => {
                if let Some(c) = self.conn.lock().await.as_ref() {
                    c.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                }
                return Err(RpcError::Timeout {
                    endpoint: self.url.clone(),
                    method: method.to_owned(),
                    seconds: self.timeout.as_secs_f64(),
                });
            }
            Ok(Err(_)) | Ok(Ok(Err(RpcError::Closed { .. }))) => {
                return Err(RpcError::Closed { endpoint: self.url.clone(), method: method.to_owned() })
            }
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Ok(Ok(v))) => v,
        };
        Ok((take_result(&self.url, method, resp)?, sent))
    }
}

/// A request on its way: the response to come, and the connection's handles a subscription keeps.
struct Sent {
    rx: oneshot::Receiver<Result<Value, RpcError>>,
    out: mpsc::UnboundedSender<Message>,
    subs: Subs,
}

impl Transport for WsTransport {
    fn endpoint(&self) -> &str {
        &self.url
    }

    fn request<'a>(&'a self, method: &'a str, params: Value) -> BoxFuture<'a, Result<Value, RpcError>> {
        Box::pin(async move { self.exchange(method, params, None).await.map(|(v, _)| v) })
    }

    fn subscribe<'a>(
        &'a self,
        method: &'a str,
        params: Value,
        unsubscribe: &'static str,
    ) -> BoxFuture<'a, Result<Subscription, RpcError>> {
        Box::pin(async move {
            let (notify, rx) = mpsc::unbounded_channel();
            let (id, sent) = self.exchange(method, params, Some(notify)).await?;
            if sub_key(&id).is_none() {
                return Err(RpcError::Protocol {
                    endpoint: self.url.clone(),
                    method: method.to_owned(),
                    reason: format!("the subscription id {id} is neither a string nor a number"),
                });
            }
            Ok(Subscription { id, rx, out: sent.out, subs: sent.subs, unsubscribe })
        })
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// JSON-RPC over HTTP POST: one request per call on a fresh or kept-alive connection.
pub struct HttpTransport {
    url: String,
    host: String,
    port: u16,
    path: String,
    tls: bool,
    timeout: Duration,
    next_id: AtomicU64,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport").field("url", &self.url).finish()
    }
}

impl HttpTransport {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, RpcError> {
        let bad = || RpcError::BadEndpoint { endpoint: url.to_owned() };
        let uri: http::Uri = url.parse().map_err(|_| bad())?;
        let tls = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or_else(bad)?.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
        Ok(Self { url: url.to_owned(), host, port, path, tls, timeout, next_id: AtomicU64::new(1) })
    }

    async fn post(&self, body: String) -> Result<(http::StatusCode, Bytes), String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let req = http::Request::post(self.path.as_str())
            .header(http::header::HOST, format!("{}:{}", self.host, self.port))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        macro_rules! exchange {
            ($io:expr) => {{
                let (mut sender, conn) = hyper::client::conn::http1::handshake($io).await.map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
                let status = resp.status();
                let bytes = Limited::new(resp.into_body(), MAX_MESSAGE_BYTES)
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                Ok((status, bytes))
            }};
        }
        if self.tls {
            let name = rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
            let stream =
                tokio_rustls::TlsConnector::from(tls_config()).connect(name, tcp).await.map_err(|e| e.to_string())?;
            exchange!(TokioIo::new(stream))
        } else {
            exchange!(TokioIo::new(tcp))
        }
    }
}

impl Transport for HttpTransport {
    fn endpoint(&self) -> &str {
        &self.url
    }

    fn request<'a>(&'a self, method: &'a str, params: Value) -> BoxFuture<'a, Result<Value, RpcError>> {
        Box::pin(async move {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
            let (status, bytes) = match tokio::time::timeout(self.timeout, self.post(body)).await {
                Err(_) => {
                    return Err(RpcError::Timeout {
                        endpoint: self.url.clone(),
                        method: method.to_owned(),
                        seconds: self.timeout.as_secs_f64(),
                    })
                }
                Ok(Err(reason)) => return Err(RpcError::Unreachable { endpoint: self.url.clone(), reason }),
                Ok(Ok(x)) => x,
            };
            let protocol =
                |reason: String| RpcError::Protocol { endpoint: self.url.clone(), method: method.to_owned(), reason };
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| protocol(format!("HTTP {status} with a body that is not JSON ({e})")))?;
            take_result(&self.url, method, v)
        })
    }
}
