//! The dendrite: the client side of the synapse protocol, as Python axons expect it.
//!
//! [`Dendrite::call`] sends one typed synapse to one axon; [`Dendrite::query`] sends it to many
//! concurrently (bounded) under per-request timeouts. Requests carry the SDK's full header set
//! and body, signed with the wallet hotkey; responses are merged and classified with the SDK's
//! rules (spec §7), so `is_success` means what it means in Python.
//!
//! Replay protection on the axon keys nonces by `hotkey:uuid` and requires them to arrive in
//! increasing order. Requests that share a uuid and run concurrently can arrive out of order
//! and be refused, so each in-flight request borrows a uuid from a pool ("lanes"): within a
//! lane requests are sequential, and the pool never grows beyond the concurrency in use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::keys::{AccountId, Keypair};
use crate::synapse::{header_map, py, RawSynapse, Synapse, SynapseHeader, TerminalInfo, SDK_VERSION_INT};

/// Largest response body accepted.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Where to send a synapse: the axon's address and its hotkey (which the signature names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AxonTarget {
    pub ip: String,
    pub port: u16,
    pub hotkey: String,
}

impl AxonTarget {
    pub fn new(ip: impl Into<String>, port: u16, hotkey: &AccountId) -> Self {
        Self { ip: ip.into(), port, hotkey: hotkey.to_ss58() }
    }
    fn authority(&self) -> String {
        if self.ip.contains(':') {
            format!("[{}]:{}", self.ip, self.port)
        } else {
            format!("{}:{}", self.ip, self.port)
        }
    }
}

/// What the dendrite chose for one request — the values its signature covers — handed to
/// [`Dendrite::call_with`]'s `extend` so that an extension of the body can bind to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub nonce: u64,
    pub uuid: String,
    /// Our hotkey (SS58).
    pub dendrite_hotkey: String,
    /// The target axon's hotkey (SS58).
    pub axon_hotkey: String,
}

/// A body extension: called once per request with its [`Stamp`], before the body is hashed,
/// signed and serialized; it may add fields.
type Extend<'a> = dyn FnMut(&Stamp, &mut Map<String, Value>) + Send + 'a;

/// How a call ended, in the SDK's terms (`dendrite.status_code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusKind {
    /// HTTP 200 and `axon.status_code` 200.
    Success,
    /// 401: signature, nonce or hotkey refused.
    Unauthorized,
    /// 403: the axon's blacklist refused our hotkey.
    Forbidden,
    /// 404: the axon does not serve this synapse.
    NotFound,
    /// 408: no answer within the timeout (ours or the axon's priority queue).
    Timeout,
    /// 500: the axon failed while handling the request.
    ServerError,
    /// 503 `Service unavailable`: nothing accepted the connection.
    Unavailable,
    /// 503 `Service disconnected`: the connection closed without a response.
    Disconnected,
    /// 400: the response body broke off.
    BadPayload,
    /// 422: the response could not be parsed (not JSON, wrong content type, wrong field types).
    BadResponse,
    /// Any other code, or a 200 without an axon status (the SDK counts that as failure).
    Other,
}

/// The outcome of one call.
#[derive(Debug, Clone)]
pub struct Response<S> {
    /// The merged synapse (server values on success, our request values otherwise).
    pub synapse: S,
    /// The merged common fields; `dendrite.status_code`/`status_message` hold the outcome.
    pub header: SynapseHeader,
    pub kind: StatusKind,
    pub elapsed: Duration,
}

impl<S> Response<S> {
    pub fn is_success(&self) -> bool {
        self.kind == StatusKind::Success
    }
    pub fn status_code(&self) -> Option<i64> {
        self.header.dendrite.status_code
    }
    pub fn status_message(&self) -> Option<&str> {
        self.header.dendrite.status_message.as_deref()
    }
}

/// Dendrite settings.
#[derive(Debug, Clone)]
pub struct DendriteConfig {
    /// The address announced in `bt_header_dendrite_ip`.
    pub external_ip: String,
    /// Requests in flight at once, across all axons.
    pub max_concurrency: usize,
    /// Idle keep-alive connections are closed before this (uvicorn closes them after 5 s).
    pub pool_idle_timeout: Duration,
    /// The version int announced (must be ≥ 7002000 for the nonce window).
    pub version: i64,
}

impl Default for DendriteConfig {
    fn default() -> Self {
        Self {
            external_ip: "127.0.0.1".into(),
            max_concurrency: 256,
            pool_idle_timeout: Duration::from_secs(4),
            version: SDK_VERSION_INT,
        }
    }
}

/// A signing HTTP client for synapses. Cheap to clone; clones share connections and nonces.
#[derive(Clone)]
pub struct Dendrite {
    inner: Arc<Inner>,
}

struct Inner {
    keypair: Keypair,
    ss58: String,
    config: DendriteConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    last_nonce: AtomicU64,
    lanes: Mutex<Vec<String>>,
    limit: Semaphore,
}

impl std::fmt::Debug for Dendrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dendrite").field("hotkey", &self.inner.ss58).finish()
    }
}

impl Dendrite {
    pub fn new(keypair: Keypair) -> Self {
        Self::with_config(keypair, DendriteConfig::default())
    }

    pub fn with_config(keypair: Keypair, config: DendriteConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.max_concurrency)
            .build(connector);
        let ss58 = keypair.ss58();
        let limit = Semaphore::new(config.max_concurrency.max(1));
        Self {
            inner: Arc::new(Inner {
                keypair,
                ss58,
                config,
                client,
                last_nonce: AtomicU64::new(0),
                lanes: Mutex::new(Vec::new()),
                limit,
            }),
        }
    }

    pub fn hotkey(&self) -> &str {
        &self.inner.ss58
    }

    /// The hotkey requests are signed with (to sign extensions of them too).
    pub fn keypair(&self) -> &Keypair {
        &self.inner.keypair
    }

    /// Sends a typed synapse to one axon.
    pub async fn call<S: Synapse>(&self, target: &AxonTarget, synapse: S, timeout: Duration) -> Response<S> {
        self.call_with(target, synapse, timeout, |_: &Stamp, _: &mut Map<String, Value>| ()).await.0
    }

    /// [`Self::call`] with `extend` run on the request body's fields once the nonce and uuid are
    /// chosen (and before the body is hashed and signed): how a signed extension binds to one
    /// request. Returns what `extend` returned (`None` only if the request was never built).
    pub async fn call_with<S, T, F>(
        &self,
        target: &AxonTarget,
        synapse: S,
        timeout: Duration,
        extend: F,
    ) -> (Response<S>, Option<T>)
    where
        S: Synapse,
        T: Send,
        F: FnOnce(&Stamp, &mut Map<String, Value>) -> T + Send,
    {
        let raw = RawSynapse::from_typed(&synapse);
        let mut extend = Some(extend);
        let mut made = None;
        let r = {
            let mut hook = |stamp: &Stamp, fields: &mut Map<String, Value>| {
                if let Some(f) = extend.take() {
                    made = Some(f(stamp, fields));
                }
            };
            self.send(
                target,
                raw,
                timeout,
                |m| S::from_fields(m).map(|s| s.to_fields()).map_err(|e| e.to_string()),
                &mut hook,
            )
            .await
        };
        let typed = S::from_fields(r.synapse.fields).unwrap_or(synapse);
        (Response { synapse: typed, header: r.header, kind: r.kind, elapsed: r.elapsed }, made)
    }

    /// Sends an untyped synapse (fields are taken as the axon returns them).
    pub async fn call_raw(&self, target: &AxonTarget, synapse: RawSynapse, timeout: Duration) -> Response<RawSynapse> {
        self.send(target, synapse, timeout, Ok, &mut |_: &Stamp, _: &mut Map<String, Value>| {}).await
    }

    /// Sends the same synapse to many axons concurrently; results in the order of `targets`.
    pub async fn query<S: Synapse>(&self, targets: &[AxonTarget], synapse: &S, timeout: Duration) -> Vec<Response<S>> {
        let mut set = tokio::task::JoinSet::new();
        for (i, t) in targets.iter().enumerate() {
            let (d, t, s) = (self.clone(), t.clone(), synapse.clone());
            set.spawn(async move { (i, d.call(&t, s, timeout).await) });
        }
        let mut out: Vec<Option<Response<S>>> = (0..targets.len()).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            if let Ok((i, r)) = joined {
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .zip(targets)
            .map(|(r, t)| r.unwrap_or_else(|| failed(S::default(), t, S::NAME, 500, "task failed".into())))
            .collect()
    }

    fn next_nonce(&self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let mut last = self.inner.last_nonce.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.inner.last_nonce.compare_exchange_weak(last, next, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }

    fn take_lane(&self) -> String {
        self.inner
            .lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
    }

    fn return_lane(&self, lane: String) {
        self.inner.lanes.lock().unwrap_or_else(|e| e.into_inner()).push(lane);
    }

    /// Builds the signed request exactly as the SDK does (headers of spec §3.1, body of §3.2).
    fn build_request(
        &self,
        target: &AxonTarget,
        raw: &mut RawSynapse,
        timeout: f64,
        lane: &str,
        extend: &mut Extend<'_>,
    ) -> (SynapseHeader, http::Request<Full<Bytes>>) {
        let nonce = self.next_nonce();
        let stamp = Stamp {
            nonce,
            uuid: lane.to_owned(),
            dendrite_hotkey: self.inner.ss58.clone(),
            axon_hotkey: target.hotkey.clone(),
        };
        extend(&stamp, &mut raw.fields);
        let hash = raw.body_hash();
        let message = format!("{nonce}.{}.{}.{lane}.{hash}", self.inner.ss58, target.hotkey);
        let signature = self.inner.keypair.sign(message.as_bytes()).to_hex();
        let header = SynapseHeader {
            name: Some(raw.name.clone()),
            timeout: Some(timeout),
            total_size: Some(0),
            header_size: Some(0),
            dendrite: TerminalInfo {
                ip: Some(self.inner.config.external_ip.clone()),
                version: Some(self.inner.config.version),
                nonce: Some(nonce),
                uuid: Some(lane.to_owned()),
                hotkey: Some(self.inner.ss58.clone()),
                signature: Some(signature),
                ..TerminalInfo::default()
            },
            axon: TerminalInfo {
                ip: Some(target.ip.clone()),
                port: Some(i64::from(target.port)),
                hotkey: Some(target.hotkey.clone()),
                ..TerminalInfo::default()
            },
            computed_body_hash: String::new(),
        };
        let body = py::to_json(&Value::Object(header.join_body(&raw.fields)), true, true);
        let mut req = http::Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = format!("http://{}/{}", target.authority(), raw.name).parse().unwrap_or_default();
        *req.headers_mut() = header_map(&header.to_headers(&hash));
        req.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        (header, req)
    }

    async fn send(
        &self,
        target: &AxonTarget,
        mut raw: RawSynapse,
        timeout: Duration,
        validate: impl Fn(Map<String, Value>) -> Result<Map<String, Value>, String>,
        extend: &mut Extend<'_>,
    ) -> Response<RawSynapse> {
        let started = Instant::now();
        let _permit = self.inner.limit.acquire().await;
        let lane = self.take_lane();
        let (request_header, req) = self.build_request(target, &mut raw, timeout.as_secs_f64(), &lane, extend);
        let exchange = async {
            let resp = self.inner.client.request(req).await?;
            let (parts, body) = resp.into_parts();
            let bytes = Limited::new(body, MAX_RESPONSE_BYTES).collect().await.map(|b| b.to_bytes());
            Ok::<_, hyper_util::client::legacy::Error>((parts, bytes))
        };
        let outcome = tokio::time::timeout(timeout, exchange).await;
        self.return_lane(lane);
        let elapsed = started.elapsed();
        let name = raw.name.clone();
        let mut r = match outcome {
            Err(_) => failed_with(
                raw,
                request_header,
                408,
                format!("Request timeout after {} seconds", py::float_repr(timeout.as_secs_f64())),
            ),
            Ok(Err(e)) => {
                let (code, msg) = classify_transport(&e, target, &name);
                failed_with(raw, request_header, code, msg)
            }
            Ok(Ok((_, Err(e)))) => failed_with(raw, request_header, 400, format!("Response payload error: {e}")),
            Ok(Ok((parts, Ok(body)))) => merge(raw, request_header, parts.status, &parts.headers, &body, &validate),
        };
        r.elapsed = elapsed;
        r.header.dendrite.process_time = Some(elapsed.as_secs_f64());
        r
    }
}

fn classify_transport(e: &hyper_util::client::legacy::Error, target: &AxonTarget, name: &str) -> (i64, String) {
    if e.is_connect() {
        return (503, format!("Service unavailable at {}/{name}", target.authority()));
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return (503, "Service disconnected: Server disconnected".into());
            }
            return (422, format!("Failed to parse response: {h}"));
        }
        src = s.source();
    }
    (500, format!("Client error: {e}"))
}

fn failed<S>(synapse: S, target: &AxonTarget, name: &str, code: i64, message: String) -> Response<S> {
    let mut header = SynapseHeader { name: Some(name.to_owned()), ..SynapseHeader::default() };
    header.axon.ip = Some(target.ip.clone());
    header.axon.port = Some(i64::from(target.port));
    header.axon.hotkey = Some(target.hotkey.clone());
    set_status(&mut header, Some(code), Some(message));
    Response { synapse, kind: kind_of(Some(code), &header), header, elapsed: Duration::ZERO }
}

fn failed_with(raw: RawSynapse, mut header: SynapseHeader, code: i64, message: String) -> Response<RawSynapse> {
    set_status(&mut header, Some(code), Some(message));
    Response { synapse: raw, kind: kind_of(Some(code), &header), header, elapsed: Duration::ZERO }
}

fn set_status(header: &mut SynapseHeader, code: Option<i64>, message: Option<String>) {
    header.axon.status_code = code;
    header.axon.status_message = message.clone();
    header.dendrite.status_code = code;
    header.dendrite.status_message = message;
}

fn kind_of(code: Option<i64>, header: &SynapseHeader) -> StatusKind {
    match code {
        Some(200) => StatusKind::Success,
        Some(401) => StatusKind::Unauthorized,
        Some(403) => StatusKind::Forbidden,
        Some(404) => StatusKind::NotFound,
        Some(408) => StatusKind::Timeout,
        Some(500) => StatusKind::ServerError,
        Some(503)
            if header.dendrite.status_message.as_deref().is_some_and(|m| m.starts_with("Service disconnected")) =>
        {
            StatusKind::Disconnected
        }
        Some(503) => StatusKind::Unavailable,
        Some(400) => StatusKind::BadPayload,
        Some(422) => StatusKind::BadResponse,
        _ => StatusKind::Other,
    }
}

/// The SDK's `process_server_response`.
fn merge(
    raw: RawSynapse,
    mut header: SynapseHeader,
    status: StatusCode,
    headers: &http::HeaderMap,
    body: &Bytes,
    validate: &dyn Fn(Map<String, Value>) -> Result<Map<String, Value>, String>,
) -> Response<RawSynapse> {
    // aiohttp's `response.json()` runs first for every status: wrong mimetype or bad JSON → 422.
    let is_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"))
        .unwrap_or(false);
    if !is_json {
        let ct = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("none");
        return failed_with(
            raw,
            header,
            422,
            format!(
                "Failed to parse response: {}, message='Attempt to decode JSON with unexpected mimetype: {ct}'",
                status.as_u16()
            ),
        );
    }
    let json: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return failed_with(raw, header, 422, format!("Failed to parse response: {e}")),
    };
    let mut synapse = raw;
    if status == StatusCode::OK {
        let Value::Object(map) = json else {
            return failed_with(synapse, header, 422, "Failed to parse response: body is not a JSON object".into());
        };
        let (server_header, fields) = match SynapseHeader::split_body(map) {
            Ok(x) => x,
            Err(e) => return failed_with(synapse, header, 422, format!("Failed to parse response: {e}")),
        };
        let fields = match validate(fields) {
            Ok(f) => f,
            Err(e) => return failed_with(synapse, header, 422, format!("Failed to parse response: {e}")),
        };
        // Every field takes the server's value (missing ones their defaults).
        header = server_header;
        synapse.fields = fields;
    } else {
        header.axon.status_code = Some(i64::from(status.as_u16()));
        header.axon.status_message = json.get("message").and_then(Value::as_str).map(str::to_owned);
    }
    // Non-null header values overlay the terminal infos. Unlike the Python dendrite (which
    // matches names case-sensitively), header names are case-insensitive here, as HTTP says.
    if let Ok(from_headers) = SynapseHeader::from_headers(headers) {
        header.dendrite.overlay(&from_headers.dendrite);
        header.axon.overlay(&from_headers.axon);
    }
    header.dendrite.status_code = header.axon.status_code;
    header.dendrite.status_message = header.axon.status_message.clone();
    let kind = kind_of(header.dendrite.status_code, &header);
    Response { synapse, kind, header, elapsed: Duration::ZERO }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_strictly_increase() {
        let d = Dendrite::new(Keypair::generate(12).expect("gen"));
        let mut last = 0;
        for _ in 0..1000 {
            let n = d.next_nonce();
            assert!(n > last);
            last = n;
        }
    }
}
