//! A JSON-RPC 2.0 server answering over HTTP POST and WebSocket on one port, as a polkadot-sdk
//! node does. The devnet chain serves its methods through it; tests serve recorded traffic
//! through it. Methods are a handler function; this module owns only the protocol, including
//! subscriptions on a WebSocket (`author_submitAndWatchExtrinsic`, `chain_subscribeNewHeads`):
//! a handler answers with a [`Subscription`], the server sends the subscription id first and
//! then every item as a notification, and ends it on the unsubscribe method or when the
//! connection closes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

use super::rpc::MAX_MESSAGE_BYTES;

/// JSON-RPC error codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const SERVER_ERROR: i64 = -32000;

/// An error answer to one call.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcFault {
    pub code: i64,
    pub message: String,
    /// The error object's `data` (a node says why a transaction is invalid there).
    pub data: Option<Value>,
}

impl RpcFault {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None }
    }
    pub fn with_data(mut self, data: impl Into<Value>) -> Self {
        self.data = Some(data.into());
        self
    }
    pub fn method_not_found(method: &str) -> Self {
        Self::new(METHOD_NOT_FOUND, format!("Method not found: {method}"))
    }
    pub fn invalid_params(reason: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, format!("Invalid params: {}", reason.into()))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Answers one method call.
pub type Handler = Arc<dyn Fn(String, Value) -> BoxFuture<Result<Value, RpcFault>> + Send + Sync>;

/// A subscription a method opened: the server answers the call with a fresh id, then sends each
/// item as `{"method": notification, "params": {"subscription": id, "result": item}}`.
#[derive(Debug)]
pub struct Subscription {
    /// The notification's method name (`author_extrinsicUpdate`, `chain_newHead`).
    pub notification: &'static str,
    /// The method that ends it (`author_unwatchExtrinsic`, `chain_unsubscribeNewHeads`).
    pub unsubscribe: &'static str,
    pub items: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

/// What a [`Service`] answers: a value, or a subscription (WebSocket only).
#[derive(Debug)]
pub enum Reply {
    Value(Value),
    Subscription(Subscription),
}

impl From<Value> for Reply {
    fn from(v: Value) -> Self {
        Reply::Value(v)
    }
}

/// Answers one method call, possibly with a subscription. The flag says whether the call came
/// over a WebSocket (HTTP cannot carry subscriptions).
pub type Service = Arc<dyn Fn(String, Value, bool) -> BoxFuture<Result<Reply, RpcFault>> + Send + Sync>;

/// A plain handler as a service.
pub fn service(handler: Handler) -> Service {
    Arc::new(move |method, params, _ws| {
        let fut = handler(method, params);
        Box::pin(async move { fut.await.map(Reply::Value) })
    })
}

/// A handler answering from recorded traffic: `entries` are `{"request": {...}, "response":
/// {...}}` objects (the shape of the fixtures' `rpc_transcript.json`), matched on method and
/// params. For tests and for reproducing what a node once answered.
pub fn replay(entries: &[Value]) -> Handler {
    let mut map = std::collections::HashMap::new();
    for e in entries {
        let req = &e["request"];
        let method = req["method"].as_str().unwrap_or("");
        map.insert(replay_key(method, &req["params"]), e["response"].clone());
    }
    let map = Arc::new(map);
    Arc::new(move |method: String, params: Value| {
        let answer = match map.get(&replay_key(&method, &params)) {
            Some(resp) if resp.get("error").is_some_and(|e| !e.is_null()) => Err(RpcFault::new(
                resp["error"]["code"].as_i64().unwrap_or(SERVER_ERROR),
                resp["error"]["message"].as_str().unwrap_or("").to_owned(),
            )),
            Some(resp) => Ok(resp["result"].clone()),
            None => Err(RpcFault::new(SERVER_ERROR, format!("not in the recording: {method} {params}"))),
        };
        Box::pin(async move { answer })
    })
}

/// A request's key in a recording. `state_call` data is compared without its `0x`, since a node
/// accepts both forms (the SDKs send either).
fn replay_key(method: &str, params: &Value) -> String {
    let mut params = params.clone();
    if method == "state_call" {
        if let Some(Value::String(data)) = params.get_mut(1) {
            if let Some(bare) = data.strip_prefix("0x") {
                *data = bare.to_owned();
            }
        }
    }
    format!("{method}{params}")
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Binds `addr` and serves `handler` until the handle is dropped or shut down.
pub async fn spawn(addr: SocketAddr, handler: Handler) -> std::io::Result<ServerHandle> {
    spawn_service(addr, service(handler)).await
}

/// Binds `addr` and serves `handler`, subscriptions included.
pub async fn spawn_service(addr: SocketAddr, handler: Service) -> std::io::Result<ServerHandle> {
    let listener = TcpListener::bind(addr).await?;
    serve_listener(listener, handler)
}

/// Serves `handler` on a listener the caller bound (port 0 handed over, never re-bound).
pub fn serve_listener(listener: TcpListener, handler: Service) -> std::io::Result<ServerHandle> {
    let addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, handler, stop_rx));
    Ok(ServerHandle { addr, stop, task: Some(task) })
}

async fn accept_loop(listener: TcpListener, handler: Service, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let (h, stop_ws) = (handler.clone(), stop.clone());
        let svc = service_fn(move |req| {
            let (h, stop_ws) = (h.clone(), stop_ws.clone());
            async move { Ok::<_, std::convert::Infallible>(serve_request(req, h, stop_ws).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
        let conn = builder.serve_connection(TokioIo::new(stream), svc).with_upgrades();
        let mut stop_conn = stop.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop_conn.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
}

fn plain(status: http::StatusCode, body: Value) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

async fn serve_request(
    req: http::Request<hyper::body::Incoming>,
    handler: Service,
    stop: watch::Receiver<bool>,
) -> http::Response<Full<Bytes>> {
    let is_ws = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_ws {
        let Some(key) = req.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes())) else {
            return plain(http::StatusCode::BAD_REQUEST, json!({"error": "missing Sec-WebSocket-Key"}));
        };
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
            let mut config = WebSocketConfig::default();
            config.max_message_size = Some(MAX_MESSAGE_BYTES);
            let ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                    .await;
            serve_ws(ws, handler, stop).await;
        });
        let mut r = http::Response::new(Full::new(Bytes::new()));
        *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
        h.insert(http::header::CONNECTION, http::HeaderValue::from_static("Upgrade"));
        if let Ok(v) = http::HeaderValue::from_str(&key) {
            h.insert("sec-websocket-accept", v);
        }
        return r;
    }
    if req.method() != http::Method::POST {
        return plain(http::StatusCode::METHOD_NOT_ALLOWED, json!({"error": "JSON-RPC takes POST or a WebSocket"}));
    }
    let body = match Limited::new(req.into_body(), 16 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return plain(http::StatusCode::PAYLOAD_TOO_LARGE, json!({"error": "request too large"})),
    };
    match handle_text(&body, &handler, None).await {
        Some(v) => plain(http::StatusCode::OK, v),
        None => plain(http::StatusCode::OK, Value::Null),
    }
}

/// The subscriptions open on one WebSocket connection: id → (unsubscribe method, forwarder).
type OpenSubs = Arc<std::sync::Mutex<std::collections::HashMap<String, (&'static str, tokio::task::JoinHandle<()>)>>>;

/// What a WebSocket call needs to open subscriptions: where messages go and what is open.
#[derive(Clone)]
struct WsSession {
    tx: tokio::sync::mpsc::UnboundedSender<Message>,
    subs: OpenSubs,
}

static NEXT_SUB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

async fn serve_ws<S>(ws: tokio_tungstenite::WebSocketStream<S>, handler: Service, mut stop: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let subs: OpenSubs = Arc::default();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = stop.changed() => break,
        };
        let text: Vec<u8> = match msg {
            Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
            Some(Ok(Message::Binary(b))) => b.to_vec(),
            Some(Ok(Message::Ping(p))) => {
                let _ = tx.send(Message::Pong(p));
                continue;
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        };
        // Calls on one connection run concurrently; answers carry their ids.
        let (h, session) = (handler.clone(), WsSession { tx: tx.clone(), subs: subs.clone() });
        tokio::spawn(async move {
            if let Some(v) = handle_text(&text, &h, Some(&session)).await {
                let _ = session.tx.send(Message::Text(v.to_string().into()));
            }
        });
    }
    for (_, (_, task)) in subs.lock().unwrap_or_else(|e| e.into_inner()).drain() {
        task.abort();
    }
    drop(tx);
    let _ = writer.await;
}

/// Handles one message (a call or a batch); `None` when nothing is to be answered.
async fn handle_text(text: &[u8], handler: &Service, ws: Option<&WsSession>) -> Option<Value> {
    let v: Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => return Some(error_response(Value::Null, PARSE_ERROR, &format!("Parse error: {e}"))),
    };
    match v {
        Value::Array(calls) if calls.is_empty() => {
            Some(error_response(Value::Null, INVALID_REQUEST, "Invalid request: empty batch"))
        }
        Value::Array(calls) => {
            let mut out = Vec::with_capacity(calls.len());
            for c in calls {
                // Subscriptions are answered one call at a time, never inside a batch.
                if let Some(r) = handle_call(c, handler, None).await {
                    out.push(r);
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        call => handle_call(call, handler, ws).await,
    }
}

fn error_response(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn fault_response(id: Value, f: &RpcFault) -> Value {
    let mut v = error_response(id, f.code, &f.message);
    if let Some(d) = &f.data {
        v["error"]["data"] = d.clone();
    }
    v
}

/// Ends a subscription of this connection if `method` is its unsubscribe method.
fn unsubscribe(ws: &WsSession, method: &str, params: &Value) -> Option<bool> {
    let id = match params.get(0)? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let mut subs = ws.subs.lock().unwrap_or_else(|e| e.into_inner());
    match subs.get(&id) {
        Some((m, _)) if *m == method => {
            if let Some((_, task)) = subs.remove(&id) {
                task.abort();
            }
            Some(true)
        }
        _ => None,
    }
}

async fn handle_call(call: Value, handler: &Service, ws: Option<&WsSession>) -> Option<Value> {
    let Value::Object(mut obj) = call else {
        return Some(error_response(Value::Null, INVALID_REQUEST, "Invalid request: not an object"));
    };
    let id = obj.remove("id");
    let is_notification = id.is_none();
    let id = id.unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some(error_response(id, INVALID_REQUEST, "Invalid request: jsonrpc must be \"2.0\""));
    }
    let Some(method) = obj.get("method").and_then(Value::as_str).map(str::to_owned) else {
        return Some(error_response(id, INVALID_REQUEST, "Invalid request: no method"));
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Value::Array(Vec::new()),
        Some(p @ (Value::Array(_) | Value::Object(_))) => p,
        Some(_) => return Some(error_response(id, INVALID_PARAMS, "Invalid params: must be an array or an object")),
    };
    if let Some(done) = ws.and_then(|ws| unsubscribe(ws, &method, &params)) {
        return Some(json!({"jsonrpc": "2.0", "id": id, "result": done}));
    }
    let result = handler(method, params, ws.is_some()).await;
    if is_notification {
        return None;
    }
    Some(match result {
        Ok(Reply::Value(r)) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
        Ok(Reply::Subscription(sub)) => match ws {
            None => error_response(id, METHOD_NOT_FOUND, "Subscriptions need a WebSocket connection"),
            Some(ws) => {
                let sub_id = format!("{:016x}", NEXT_SUB.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
                // The answer is queued before the forwarder starts, so the client knows the id
                // before its first notification.
                let _ =
                    ws.tx.send(Message::Text(json!({"jsonrpc": "2.0", "id": id, "result": sub_id}).to_string().into()));
                let (tx, sid, notification) = (ws.tx.clone(), sub_id.clone(), sub.notification);
                let mut items = sub.items;
                let task = tokio::spawn(async move {
                    while let Some(item) = items.recv().await {
                        let msg = json!({"jsonrpc": "2.0", "method": notification,
                                         "params": {"subscription": sid, "result": item}});
                        if tx.send(Message::Text(msg.to_string().into())).is_err() {
                            break;
                        }
                    }
                });
                ws.subs.lock().unwrap_or_else(|e| e.into_inner()).insert(sub_id, (sub.unsubscribe, task));
                return None;
            }
        },
        Err(f) => fault_response(id, &f),
    })
}
