//! What the API tests share: the API served in this process over a devnet [`World`]'s database,
//! chain and renter hotkey (`api::serve` on a port-0 listener), tokens made in that database, a
//! small HTTP client, and a webhook receiver that records what it gets (and can be told to fail).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use compute::db::ComputeDb;
use compute::renter::Renter;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;

pub use crate::renter_world::World;

pub const SECRET: &str = "whsec-test-0123456789";

/// The API in this process over `net`'s database, with `cfg` (its listener bound to port 0).
pub async fn serve(net: &World, cfg: api::ApiConfig) -> api::ServerHandle {
    let db = Arc::new(ComputeDb::open(net.db()).expect("db"));
    let chain = bittensor::subtensor::Subtensor::new(&net.chain.ws_url()).expect("chain");
    let renter = Renter::new(db, chain, 27, net.renter.clone());
    let state = api::AppState::new(Arc::new(renter), cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    api::serve(state, listener).await.expect("serve")
}

/// Settings for tests: quick checks and metagraph refreshes, webhooks to `urls` signed with
/// [`SECRET`], fast retries.
pub fn config(urls: &[String]) -> api::ApiConfig {
    let mut webhooks = api::WebhookConfig::new();
    webhooks.urls = urls.to_vec();
    webhooks.secret = Some(secrecy::SecretString::from(SECRET));
    webhooks.backoff = Duration::from_millis(200);
    webhooks.max_backoff = Duration::from_secs(1);
    webhooks.timeout = Duration::from_secs(5);
    api::ApiConfig {
        metagraph_max_age: Duration::from_millis(300),
        check_interval: Duration::from_secs(3600),
        webhooks,
        ..api::ApiConfig::default()
    }
}

/// A token with `scope` named `name` in `db`; its secret.
pub fn token(db: &std::path::Path, name: &str, scope: &str) -> String {
    let db = ComputeDb::open(db).expect("db");
    let (secret, hash) = api::new_token();
    db.create_token(name, scope, &hash).expect("token");
    secret
}

/// One HTTP/1.1 request to `addr`: status, headers, body as JSON (`Null` when empty or not JSON;
/// the text is under `"_text"` then).
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, http::HeaderMap, Value) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder().method(method).uri(path).header("host", addr.to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let bytes = match &body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(b).expect("json"))
        }
        None => Bytes::new(),
    };
    let resp = send.send_request(req.body(Full::new(bytes)).expect("request")).await.expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let json =
        serde_json::from_slice(&body).unwrap_or_else(|_| serde_json::json!({"_text": String::from_utf8_lossy(&body)}));
    (status, headers, json)
}

/// A webhook received: its headers and exact body.
#[derive(Debug, Clone)]
pub struct Hook {
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Hook {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    /// Checks both signatures as a receiver would, the SN27 one with Python's `hmac` (what an
    /// SN27 receiver runs), and returns the body.
    pub fn verified(&self) -> Value {
        let sig = self.headers.get("x-webhook-signature").and_then(|v| v.to_str().ok()).expect("x-webhook-signature");
        let code = "import hmac, hashlib, sys\n\
                    body = open(sys.argv[2], 'rb').read()\n\
                    print(hmac.new(sys.argv[1].encode(), body, hashlib.sha256).hexdigest())";
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("body");
        std::fs::write(&file, &self.body).expect("write");
        let expected = crate::harness::python(code, &[SECRET, file.to_str().expect("utf8")]);
        assert_eq!(sig, expected.trim(), "SN27's signature: hex HMAC-SHA256 of the exact body");
        let ts = self.headers.get("x-nicompute-timestamp").and_then(|v| v.to_str().ok()).expect("timestamp");
        let stamped = [ts.as_bytes(), b".", &self.body].concat();
        let ours = self.headers.get("x-nicompute-signature").and_then(|v| v.to_str().ok()).expect("signature");
        assert!(api::verify(SECRET.as_bytes(), &stamped, ours.trim_start_matches("v1=")), "timestamped signature");
        self.json()
    }
}

/// An HTTP server that records every POST and answers `status` (settable: 500 to fail).
pub struct Receiver {
    pub addr: SocketAddr,
    pub rx: mpsc::UnboundedReceiver<Hook>,
    pub status: Arc<AtomicU16>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(AtomicU16::new(200));
        let st = status.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (tx, st) = (tx.clone(), st.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (tx, st) = (tx.clone(), st.clone());
                        async move {
                            let headers = req.headers().clone();
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let code = st.load(Ordering::SeqCst);
                            if code < 300 {
                                let _ = tx.send(Hook { headers, body });
                            }
                            let resp = http::Response::builder().status(code).body(Full::new(Bytes::from("{}")));
                            Ok::<_, std::convert::Infallible>(resp.expect("response"))
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Receiver { addr, rx, status }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The next delivered webhook whose status is `status`, within `limit` (others are skipped).
    pub async fn next(&mut self, status: &str, limit: Duration) -> Hook {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let hook = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {status} webhook within {limit:?}"))
                .expect("receiver open");
            if hook.json()["status"] == status {
                return hook;
            }
        }
    }
}
