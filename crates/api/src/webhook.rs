//! Webhooks: events in SN27's shape, signed as SN27 signs them, delivered from a durable outbox.
//!
//! An event becomes one outbox row per URL, written in the same transaction as the state change
//! that caused it (`compute::db`), so a crash loses neither. The sender takes due rows, POSTs
//! each body exactly as stored, and marks it delivered on any 2xx; otherwise it retries with
//! exponential backoff, and after the last attempt the row becomes a dead letter that the API
//! lists and an admin can requeue. At-least-once: a crash between the receiver's 2xx and our
//! write sends the event again; receivers de-duplicate on `event_id`.
//!
//! Headers: `x-webhook-signature` is the lower-case hex HMAC-SHA256 of exactly the body with the
//! shared secret (SN27's `WEBHOOKS_SECRET`, so SN27 receivers verify unchanged);
//! `x-nicompute-timestamp` (Unix seconds) and `x-nicompute-signature: v1=<hex HMAC of
//! "{timestamp}.{body}">` let a receiver refuse replays; `x-nicompute-event-id` repeats the id.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use compute::db::{Delivery, NewDelivery};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::events::Event;
use crate::metrics::labels;
use crate::state::AppState;

type HmacSha256 = Hmac<Sha256>;

/// Hex HMAC-SHA256 of `message` with `secret`.
pub fn sign(secret: &[u8], message: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("any key length"));
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `signature_hex` is the HMAC of `message` (compared in constant time).
pub fn verify(secret: &[u8], message: &[u8], signature_hex: &str) -> bool {
    let Ok(sig) = hex::decode(signature_hex.trim()) else { return false };
    let Ok(mut mac) = <HmacSha256 as Mac>::new_from_slice(secret) else { return false };
    mac.update(message);
    mac.verify_slice(&sig).is_ok()
}

/// The signature headers for `body` sent at `unix_secs`: SN27's, then ours over the timestamp.
pub fn signature_headers(secret: &[u8], body: &[u8], unix_secs: u64) -> Vec<(&'static str, String)> {
    let mut stamped = unix_secs.to_string().into_bytes();
    stamped.push(b'.');
    stamped.extend_from_slice(body);
    vec![
        ("x-webhook-signature", sign(secret, body)),
        ("x-nicompute-timestamp", unix_secs.to_string()),
        ("x-nicompute-signature", format!("v1={}", sign(secret, &stamped))),
    ]
}

/// `%Y-%m-%dT%H:%M:%S.%fZ` of a Unix time in ms (Python's `strftime` as register_api uses it).
pub fn sn27_time(ms: u64) -> String {
    let secs = ms / 1000;
    let micros = (ms % 1000) * 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z", rem / 3600, (rem / 60) % 60, rem % 60)
}

/// The deliveries of one event: SN27's body (`time`, `deallocated_at` or `status_change_at` —
/// `expires_at` for EXPIRING —, `hotkey`, `status`, `uuid`) plus `event_id` and, when known,
/// `cause`; one per URL the event goes to.
pub fn event(
    state: &AppState,
    kind: &str,
    hotkey: &str,
    uuid: &str,
    at_ms: u64,
    cause: Option<&str>,
) -> Vec<NewDelivery> {
    let urls = state.config().webhooks.urls_for(kind);
    if urls.is_empty() {
        return Vec::new();
    }
    let event_id = uuid::Uuid::new_v4().to_string();
    let mut body = Map::new();
    body.insert("time".into(), sn27_time(state.now_ms()).into());
    let at_key = match kind {
        "DEALLOCATION" => "deallocated_at",
        "EXPIRING" => "expires_at",
        _ => "status_change_at",
    };
    body.insert(at_key.into(), sn27_time(at_ms).into());
    body.insert("hotkey".into(), hotkey.into());
    body.insert("status".into(), kind.into());
    body.insert("uuid".into(), uuid.into());
    body.insert("event_id".into(), event_id.clone().into());
    if let Some(c) = cause {
        body.insert("cause".into(), c.into());
    }
    // Compact, as register_api's json.dumps(separators=(',', ':')); the stored bytes are signed.
    let body = Value::Object(body).to_string();
    urls.into_iter()
        .map(|url| NewDelivery { event_id: event_id.clone(), event: kind.to_owned(), url, body: body.clone() })
        .collect()
}

/// Why one POST failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostError {
    #[error("bad webhook URL {0}")]
    Url(String),
    #[error("{0}")]
    Transport(String),
    #[error("the receiver answered {0}")]
    Status(u16),
}

/// POSTs `body` to `url` (http or https) with `headers`; `Ok` on a 2xx answer.
pub async fn post(url: &str, body: &str, headers: &[(&str, String)], timeout: Duration) -> Result<u16, PostError> {
    let uri: http::Uri = url.parse().map_err(|_| PostError::Url(url.to_owned()))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(PostError::Url(format!("{url} (http:// or https:// only)"))),
    };
    let host = uri.host().ok_or_else(|| PostError::Url(url.to_owned()))?.trim_matches(['[', ']']).to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    let mut req = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "*/*")
        .header(http::header::USER_AGENT, concat!("nicompute/", env!("CARGO_PKG_VERSION")));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).map_err(|e| PostError::Transport(e.to_string()))?;
    let send = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| PostError::Transport(format!("cannot connect to {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let status = if tls {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| PostError::Url(format!("{host} is not a TLS server name")))?;
            let stream = tls_connector().connect(name, tcp).await.map_err(|e| PostError::Transport(e.to_string()))?;
            send_on(TokioIo::new(stream), req).await?
        } else {
            send_on(TokioIo::new(tcp), req).await?
        };
        if (200..300).contains(&status) {
            Ok(status)
        } else {
            Err(PostError::Status(status))
        }
    };
    tokio::time::timeout(timeout, send)
        .await
        .map_err(|_| PostError::Transport(format!("no answer within {} s", timeout.as_secs_f64())))?
}

async fn send_on<I>(io: I, req: http::Request<Full<Bytes>>) -> Result<u16, PostError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| PostError::Transport(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| PostError::Transport(e.to_string()))?;
    let status = resp.status().as_u16();
    // Read (and drop) a bounded answer so the receiver sees a clean exchange.
    let _ = http_body_util::Limited::new(resp.into_body(), 64 << 10).collect().await;
    Ok(status)
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"));
        Arc::new(cfg)
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

/// The delay before attempt `attempts + 1` after `attempts` failures.
pub fn backoff(base: Duration, max: Duration, attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

async fn deliver(state: &AppState, d: Delivery) {
    let cfg = &state.config().webhooks;
    let headers = {
        let mut h = vec![("x-nicompute-event-id", d.event_id.clone())];
        if let Some(secret) = &cfg.secret {
            let now_s = state.now_ms() / 1000;
            h.extend(signature_headers(secret.expose_secret().as_bytes(), d.body.as_bytes(), now_s));
        }
        h
    };
    let attempts = d.attempts + 1;
    let result = post(&d.url, &d.body, &headers, cfg.timeout).await;
    let m = state.metrics();
    let (outcome, db_result) = match &result {
        Ok(_) => {
            let latency = Duration::from_millis(state.now_ms().saturating_sub(d.created_ms));
            m.observe("nicompute_api_delivery_latency_seconds", String::new(), latency);
            ("delivered", state.db().delivered(d.id, attempts))
        }
        Err(e) if attempts >= cfg.max_attempts => {
            ("dead", state.db().delivery_failed(d.id, attempts, None, &e.to_string()))
        }
        Err(e) => {
            let next = state.now_ms() + backoff(cfg.backoff, cfg.max_backoff, attempts).as_millis() as u64;
            ("retry", state.db().delivery_failed(d.id, attempts, Some(next), &e.to_string()))
        }
    };
    m.inc("nicompute_api_deliveries_total", labels(&[("event", &d.event), ("result", outcome)]));
    tracing::info!(id = d.id, event = %d.event, url = %d.url, attempts, outcome, error = ?result.err().map(|e| e.to_string()), "webhook");
    if let Err(e) = db_result {
        tracing::error!(error = %e, "cannot record a webhook delivery");
    }
    state.publish(Event {
        kind: "delivery",
        id: None,
        hotkey: None,
        state: outcome.to_owned(),
        detail: None,
        owner: None,
        at_ms: state.now_ms(),
    });
}

/// The sender: delivers what is due, sleeps until the next row is due, a new row is queued, or
/// the server stops. Rows left by a previous run are due at once.
pub async fn run(state: AppState) {
    let mut stop = state.stopping();
    loop {
        let now = state.now_ms();
        let due = state.db().due_deliveries(now, 64).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the webhook outbox");
            Vec::new()
        });
        let busy = !due.is_empty();
        let mut set = tokio::task::JoinSet::new();
        for d in due {
            let st = state.clone();
            set.spawn(async move { deliver(&st, d).await });
        }
        while set.join_next().await.is_some() {}
        if busy {
            continue;
        }
        let wait = match state.db().next_delivery_ms() {
            Ok(Some(next)) => Duration::from_millis(next.saturating_sub(state.now_ms())).min(Duration::from_secs(60)),
            _ => Duration::from_secs(60),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.outbox_notified() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &sign(b"Jefe", b"what do ya want for nothing?")));
        assert!(!verify(b"Jefe", b"what do ya want for something?", &sign(b"Jefe", b"what do ya want for nothing?")));
        let h = signature_headers(b"k", b"{}", 1_700_000_000);
        assert_eq!(h[0].1, sign(b"k", b"{}"));
        assert_eq!(h[2].1, format!("v1={}", sign(b"k", b"1700000000.{}")));
    }

    #[test]
    fn times_are_formatted_as_register_api_formats_them() {
        assert_eq!(sn27_time(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(sn27_time(1_700_000_000_123), "2023-11-14T22:13:20.123000Z");
        assert_eq!(sn27_time(951_782_400_000), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = |n| backoff(Duration::from_secs(5), Duration::from_secs(60), n).as_secs();
        assert_eq!([b(1), b(2), b(3), b(4), b(5), b(40)], [5, 10, 20, 40, 60, 60]);
    }
}
