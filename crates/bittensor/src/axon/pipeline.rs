//! The request pipeline of the SDK's `AxonMiddleware.dispatch`, step by step (spec §6):
//! route → headers → blacklist (403) → verification (401) → priority (408) → body and body hash
//! → handler (500 on failure) → the full synapse back with `200`.
//!
//! It runs in two phases so the server can decide before reading a body: [`admit`] needs only
//! the head (the signature covers the body hash the headers declare), and [`finish`] takes the
//! body of an admitted request. An unknown or unverified caller's body is never read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::Full;
use serde_json::{Map, Value};

use super::{Axon, Caller, ErasedHandler, HandlerError, RequestHead};
use crate::keys::{AccountId, Signature};
use crate::synapse::{body_hash, header_map, py, SynapseHeader, EMPTY_BODY_HASH};

type Response = http::Response<Full<Bytes>>;

/// The longest value accepted in any header the synapse reads (an SS58 hotkey is 48 bytes, a
/// signature 130, a uuid 36). Longer values are refused before anything echoes them.
pub const MAX_SYNAPSE_HEADER_BYTES: usize = 256;

/// A request that passed every check its head allows: route, header types, blacklist, and the
/// signature with its nonce. Only such requests have their body read.
pub(super) struct Admitted {
    pub(super) name: String,
    handler: Option<Arc<dyn ErasedHandler>>,
    head: SynapseHeader,
    header_hotkey: Option<String>,
    caller: Caller,
    peer: SocketAddr,
    started: Instant,
}

/// The header phase: everything decided without the body (route, headers, blacklist,
/// verification). `Err` is the response to send; the body is then never read.
// Both sides are moved once per request; boxing the response would only add an allocation.
#[allow(clippy::result_large_err)]
pub(super) fn admit(axon: &Axon, parts: &http::request::Parts, peer: SocketAddr) -> Result<Admitted, Response> {
    let started = Instant::now();

    // 1. Route: the first path segment names the synapse.
    let name = parts.uri.path().trim_start_matches('/').split('/').next().unwrap_or("");
    let handler = axon.handlers.get(name).cloned();
    if handler.is_none() && name != "Synapse" {
        let shown = if name.len() <= 64 { name } else { "(a name longer than 64 bytes)" };
        let msg = format!(
            "Synapse name '{shown}' not found. Available synapses [{}]",
            axon.order.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
        );
        return Err(bare_error(StatusCode::NOT_FOUND, &msg, started));
    }
    let name = name.to_owned();
    if parts.method != Method::POST && parts.method != Method::GET {
        return Err(plain_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"));
    }

    // 2. Headers into a synapse; then the axon's own terminal fields.
    if let Some(long) = overlong_header(&parts.headers) {
        let msg = format!("Header {long} is longer than {MAX_SYNAPSE_HEADER_BYTES} bytes");
        return Err(bare_error(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, &msg, started));
    }
    let mut head = match SynapseHeader::from_headers(&parts.headers) {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!(error = %e, %peer, "axon: header parse failure");
            return Err(bare_error(StatusCode::INTERNAL_SERVER_ERROR, &internal_message(), started));
        }
    };
    let header_hotkey = head.axon.hotkey.clone();
    head.axon.version = Some(axon.version);
    head.axon.uuid = Some(axon.uuid.clone());
    head.axon.nonce = Some(axon.clock.now_ns());
    head.axon.status_code = Some(100);
    head.dendrite.ip = Some(peer.ip().to_string());
    head.dendrite.port = Some(i64::from(peer.port()));
    let errors = ErrorCtx { axon, head: &head, name: &name, header_hotkey: header_hotkey.as_deref(), started };

    // 3. Blacklist, before any verification.
    if let Some(f) = &axon.blacklist {
        let view = RequestHead { name: &name, header: &head, peer };
        if let Some(reason) = f(&view) {
            let msg = format!("Forbidden. Key is blacklisted: {reason}.");
            return Err(errors.refuse(StatusCode::FORBIDDEN, &msg));
        }
    }

    // 4. Verification: the signature covers the body hash the headers declare, so it needs no
    //    body; step 6 checks the body against that hash.
    let caller = match verify(axon, &head, peer) {
        Ok(c) => c,
        Err(e) => return Err(errors.refuse(StatusCode::UNAUTHORIZED, &format!("Not Verified with error: {e}"))),
    };
    Ok(Admitted { name, handler, head, header_hotkey, caller, peer, started })
}

/// The body phase of an admitted request: priority, body and body hash, the handler.
pub(super) async fn finish(axon: &Axon, req: Admitted, body: &Bytes) -> Response {
    let Admitted { name, handler, head, header_hotkey, caller, peer, started } = req;
    let errors = ErrorCtx { axon, head: &head, name: &name, header_hotkey: header_hotkey.as_deref(), started };

    // 5. Priority: wait for a handler slot, best first, within the request's timeout.
    let timeout = head.timeout.filter(|t| t.is_finite() && *t > 0.0).unwrap_or(crate::synapse::DEFAULT_TIMEOUT);
    let _permit = match &axon.priority {
        Some(f) => {
            let p = f(&RequestHead { name: &name, header: &head, peer });
            match axon.gate.acquire(p, Duration::from_secs_f64(timeout.min(3600.0))).await {
                Some(permit) => Some(permit),
                None => {
                    let msg = format!("Response timeout after: {}s", py::float_repr(timeout));
                    return errors.respond(StatusCode::REQUEST_TIMEOUT, &msg);
                }
            }
        }
        None => None,
    };

    // 6. Body: JSON object, typed fields, body hash against the signed header value.
    let Some(handler) = handler else {
        // The built-in `/Synapse` ping: echo the body's common fields.
        return match parse_body(body) {
            Ok((header, fields)) => success(header, Map::new(), &fields, &[], started),
            Err(e) => errors.internal(&e),
        };
    };
    let (mut body_header, fields) = match parse_body(body) {
        Ok(x) => x,
        Err(e) => return errors.internal(&e),
    };
    // The SDK's model forces `name` to the class name.
    body_header.name = Some(name.clone());
    let normalized = match handler.normalize(fields) {
        Ok(f) => f,
        Err(e) => return errors.internal(&format!("body does not fit {name}: {e}")),
    };
    let hash = body_hash(&normalized, handler.hash_fields());
    if hash != head.computed_body_hash {
        return errors.internal("computed_body_hash does not match the body");
    }

    // 7. The handler.
    match handler.call(normalized, body_header.clone(), caller).await {
        Ok(out) => success(body_header, out, &Map::new(), handler.hash_fields(), started),
        Err(HandlerError::Public(msg)) => {
            tracing::warn!(synapse = %name, error = %msg, "handler refused");
            errors.respond(StatusCode::INTERNAL_SERVER_ERROR, &format!("{}: {msg}", internal_message()))
        }
        Err(HandlerError::Internal(msg)) => errors.internal(&msg),
    }
}

/// The first header the synapse reads whose value is too long to accept or echo, named only
/// when its name is short.
fn overlong_header(headers: &http::HeaderMap) -> Option<String> {
    headers.iter().find_map(|(k, v)| {
        let key = k.as_str();
        let read = key.starts_with("bt_header_")
            || matches!(key, "name" | "timeout" | "total_size" | "header_size" | "computed_body_hash");
        (read && v.len() > MAX_SYNAPSE_HEADER_BYTES).then(|| {
            if key.len() <= 64 {
                format!("'{key}'")
            } else {
                "(a long name)".to_owned()
            }
        })
    })
}

fn parse_body(body: &Bytes) -> Result<(SynapseHeader, Map<String, Value>), String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("body is not a JSON object".into());
    };
    SynapseHeader::split_body(map).map_err(|e| e.to_string())
}

/// The SDK's `default_verify`, plus an atomic nonce commit.
fn verify(axon: &Axon, head: &SynapseHeader, peer: SocketAddr) -> Result<Caller, String> {
    let d = &head.dendrite;
    let hotkey_text = d.hotkey.as_deref().ok_or("No SS58 formatted address or public key provided.")?;
    let hotkey = AccountId::from_ss58(hotkey_text).map_err(|e| e.to_string())?;
    let uuid = d.uuid.clone().unwrap_or_else(|| "None".to_owned());
    let nonce = d.nonce.ok_or("Missing Nonce")?;
    let now = axon.clock.now_ns();
    axon.nonces.check(&hotkey, &uuid, nonce, head.timeout, now)?;
    let message = format!("{nonce}.{hotkey_text}.{}.{uuid}.{}", axon.ss58, head.computed_body_hash);
    let sig_text = d.signature.as_deref().filter(|s| !s.is_empty()).ok_or("Missing Signature")?;
    let signature = Signature::from_hex(sig_text).map_err(|e| e.to_string())?;
    if !axon.verifying_key(&hotkey).is_some_and(|k| k.verify(message.as_bytes(), &signature)) {
        return Err(format!("Signature mismatch with {message} and {sig_text}"));
    }
    axon.nonces.commit(&hotkey, &uuid, nonce, now)?;
    Ok(Caller { hotkey, uuid, nonce, version: d.version, peer })
}

fn internal_message() -> String {
    format!("Internal Server Error #{}", uuid::Uuid::new_v4())
}

struct ErrorCtx<'a> {
    axon: &'a Axon,
    head: &'a SynapseHeader,
    name: &'a str,
    header_hotkey: Option<&'a str>,
    started: Instant,
}

impl ErrorCtx<'_> {
    fn internal(&self, cause: &str) -> Response {
        let msg = internal_message();
        tracing::warn!(synapse = %self.name, %cause, message = %msg, "axon: request failed");
        self.respond(StatusCode::INTERNAL_SERVER_ERROR, &msg)
    }

    /// An error after header parsing: the header-built synapse with the axon's signature.
    fn respond(&self, status: StatusCode, message: &str) -> Response {
        self.error(status, message, true)
    }

    /// A refusal of an unknown or unverified caller (403, 401): the same answer without the
    /// axon's signature. The SDK signs it, but no dendrite checks it, and signing costs about a
    /// third of a verification: a stranger's flood would make us pay it for every request.
    fn refuse(&self, status: StatusCode, message: &str) -> Response {
        self.error(status, message, false)
    }

    fn error(&self, status: StatusCode, message: &str, sign: bool) -> Response {
        let mut h = self.head.clone();
        h.name = Some(self.name.to_owned());
        h.axon.status_code = Some(i64::from(status.as_u16()));
        h.axon.status_message = Some(message.to_owned());
        h.axon.process_time = Some(self.started.elapsed().as_secs_f64());
        if sign {
            let axon_nonce = h.axon.nonce.unwrap_or(0);
            let dendrite_hotkey = h.dendrite.hotkey.as_deref().unwrap_or("None");
            let axon_hotkey = self.header_hotkey.unwrap_or("None");
            let uuid = h.axon.uuid.as_deref().unwrap_or("None");
            let to_sign = format!("{axon_nonce}.{dendrite_hotkey}.{axon_hotkey}.{uuid}");
            h.axon.signature = Some(self.axon.keypair.sign(to_sign.as_bytes()).to_hex());
        }
        error_response(status, message, &h.to_headers(&h.computed_body_hash.clone()))
    }
}

/// An error before the synapse could be built from headers (404, header parse failure).
fn bare_error(status: StatusCode, message: &str, started: Instant) -> Response {
    let mut h = SynapseHeader { name: Some("Synapse".into()), ..SynapseHeader::default() };
    h.axon.status_code = Some(i64::from(status.as_u16()));
    h.axon.status_message = Some(message.to_owned());
    h.axon.process_time = Some(started.elapsed().as_secs_f64());
    error_response(status, message, &h.to_headers(EMPTY_BODY_HASH))
}

/// An error with no synapse at all (transport-level refusals).
pub(super) fn plain_error(status: StatusCode, message: &str) -> Response {
    let mut h = SynapseHeader { name: Some("Synapse".into()), ..SynapseHeader::default() };
    h.axon.status_code = Some(i64::from(status.as_u16()));
    h.axon.status_message = Some(message.to_owned());
    error_response(status, message, &h.to_headers(EMPTY_BODY_HASH))
}

fn error_response(status: StatusCode, message: &str, headers: &[(String, String)]) -> Response {
    let body = py::to_json(&serde_json::json!({ "message": message }), false, false);
    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    *resp.headers_mut() = header_map(headers);
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// 200: the full synapse (the body's common fields, the handler's fields) as compact JSON.
fn success(
    mut header: SynapseHeader,
    fields: Map<String, Value>,
    echo: &Map<String, Value>,
    hash_fields: &[&str],
    started: Instant,
) -> Response {
    header.axon.status_code = Some(200);
    header.axon.status_message = Some("Success".into());
    header.axon.process_time = Some(started.elapsed().as_secs_f64());
    let mut all = fields;
    for (k, v) in echo {
        all.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let hash = body_hash(&all, hash_fields);
    let body = py::to_json(&header.joined(&all), false, false);
    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
    *resp.headers_mut() = header.to_header_map(&hash);
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
