//! Any input at all gets a response or a closed connection, never a panic, and the axon keeps
//! serving: replays, stale nonces, oversized bodies, header floods, random bytes.

use std::sync::Arc;
use std::time::Duration;

use bittensor::axon::AxonConfig;
use bittensor::dendrite::{AxonTarget, Dendrite};
use bittensor::synapse::EMPTY_BODY_HASH;
use bittensor::Clock;
use bittensor::Keypair;
use bytes::Bytes;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::{key, peer, test_axon, Behaviour, Specs};

/// A signed Specs request, built by hand the way the SDK builds it.
fn signed(dendrite: &Keypair, axon: &Keypair, nonce: u64, uuid: &str) -> http::Request<Bytes> {
    let msg = format!("{nonce}.{}.{}.{uuid}.{EMPTY_BODY_HASH}", dendrite.ss58(), axon.ss58());
    http::Request::builder()
        .method("POST")
        .uri("/Specs")
        .header("content-type", "application/json")
        .header("timeout", "12.0")
        .header("bt_header_dendrite_hotkey", dendrite.ss58())
        .header("bt_header_dendrite_nonce", nonce.to_string())
        .header("bt_header_dendrite_uuid", uuid)
        .header("bt_header_dendrite_version", "9000000")
        .header("bt_header_dendrite_signature", dendrite.sign(msg.as_bytes()).to_hex())
        .header("computed_body_hash", EMPTY_BODY_HASH)
        .body(Bytes::from_static(br#"{"specs_input": ""}"#))
        .expect("request")
}

#[tokio::test]
async fn replayed_and_stale_requests_are_refused() {
    let now = 1_800_000_000_000_000_000u64;
    let clock = Clock::manual_ns(now);
    let axon_key = key("axon_hotkey");
    let axon = test_axon(axon_key.clone(), Behaviour::default()).clock(clock.clone());
    let d = key("dendrite_hotkey");

    let req = signed(&d, &axon_key, now - 1_000_000, "u1");
    assert_eq!(axon.handle(req.clone(), peer()).await.status(), 200);
    assert_eq!(axon.handle(req, peer()).await.status(), 401, "byte-identical replay");
    assert_eq!(axon.handle(signed(&d, &axon_key, now - 500_000, "u1"), peer()).await.status(), 200, "newer nonce");

    // First contact 17 s old with timeout 12: outside 4 + 12 s.
    let stale = signed(&d, &axon_key, now - 17_000_000_000, "u2");
    assert_eq!(axon.handle(stale, peer()).await.status(), 401);
    // A forged huge timeout does not stretch the window beyond its cap.
    let mut old = signed(&d, &axon_key, now - 3_600_000_000_000, "u3");
    old.headers_mut().insert("timeout", http::HeaderValue::from_static("1e12"));
    assert_eq!(axon.handle(old, peer()).await.status(), 401);

    // A tampered request (nonce changed after signing).
    let mut t = signed(&d, &axon_key, now, "u4");
    t.headers_mut().insert("bt_header_dendrite_nonce", (now + 1).to_string().parse().expect("hv"));
    assert_eq!(axon.handle(t, peer()).await.status(), 401);
}

#[tokio::test]
async fn concurrent_copies_of_one_request_pass_once() {
    let now = 1_800_000_000_000_000_000u64;
    let clock = Clock::manual_ns(now);
    let axon_key = key("axon_hotkey");
    let axon = Arc::new(test_axon(axon_key.clone(), Behaviour::default()).clock(clock));
    let req = signed(&key("dendrite_hotkey"), &axon_key, now, "race");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (axon, req) = (axon.clone(), req.clone());
        set.spawn(async move { axon.handle(req, peer()).await.status().as_u16() });
    }
    let mut ok = 0;
    while let Some(s) = set.join_next().await {
        if s.expect("task") == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn oversized_bodies_header_floods_and_garbage_get_answers() {
    let kp = key("axon_hotkey");
    let kp_for_sig = kp.clone();
    let id = kp.account_id();
    let cfg = AxonConfig { bind: "127.0.0.1:0".parse().expect("addr"), max_body_bytes: 4096, ..AxonConfig::default() };
    let h = test_axon(kp, Behaviour::default()).spawn(cfg).await.expect("spawn");
    let addr = h.local_addr();

    async fn exchange(addr: std::net::SocketAddr, bytes: Vec<u8>) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _ = s.write_all(&bytes).await;
        let _ = s.shutdown().await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    let big = "x".repeat(10_000);
    let req = format!(
        "POST /Specs HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{big}",
        big.len()
    );
    // An unsigned request is refused on its headers; its body is never read.
    assert!(exchange(addr, req.into_bytes()).await.starts_with("HTTP/1.1 401"), "unsigned oversized body");
    // A verified caller's oversized body gets 413.
    let now = Clock::system().now_ns();
    let signed_big = signed(&key("dendrite_hotkey"), &kp_for_sig, now, "big");
    let mut raw = format!("POST /Specs HTTP/1.1\r\nhost: a\r\ncontent-length: {}\r\n", big.len());
    for (k, v) in signed_big.headers() {
        raw.push_str(&format!("{k}: {}\r\n", v.to_str().expect("ascii")));
    }
    raw.push_str("\r\n");
    raw.push_str(&big);
    assert!(exchange(addr, raw.into_bytes()).await.starts_with("HTTP/1.1 413"), "oversized body");

    let mut flood = String::from("POST /Specs HTTP/1.1\r\nhost: a\r\n");
    for i in 0..200 {
        flood.push_str(&format!("x-h{i}: v\r\n"));
    }
    flood.push_str("content-length: 0\r\n\r\n");
    let resp = exchange(addr, flood.into_bytes()).await;
    assert!(resp.is_empty() || resp.starts_with("HTTP/1.1 431"), "header flood: {resp:?}");

    for garbage in [
        &b"\x00\x01\x02\xff\xfe"[..],
        b"GET\r\n\r\n",
        b"POST /Specs HTTP/1.1\r\ncontent-length: -5\r\n\r\n",
        b"\r\n\r\n\r\n",
    ] {
        let resp = exchange(addr, garbage.to_vec()).await;
        assert!(resp.is_empty() || resp.starts_with("HTTP/1.1 4"), "garbage {garbage:?}: {resp:?}");
    }

    // Still serving.
    let target = AxonTarget::new("127.0.0.1", addr.port(), &id);
    assert!(Dendrite::new(key("dendrite_hotkey"))
        .call(&target, Specs::default(), Duration::from_secs(5))
        .await
        .is_success());
}

/// A path, raw header name/value pairs, and a raw body.
type ArbRequest = (String, Vec<(String, Vec<u8>)>, Vec<u8>);

fn arb_request() -> impl Strategy<Value = ArbRequest> {
    let names = prop_oneof![
        Just("bt_header_dendrite_nonce".to_owned()),
        Just("bt_header_dendrite_hotkey".to_owned()),
        Just("bt_header_dendrite_signature".to_owned()),
        Just("bt_header_dendrite_version".to_owned()),
        Just("bt_header_axon_port".to_owned()),
        Just("timeout".to_owned()),
        Just("computed_body_hash".to_owned()),
        Just("content-type".to_owned()),
        "[a-z_]{1,30}",
    ];
    (
        prop_oneof![
            Just("/Specs".to_owned()),
            Just("/Allocate".to_owned()),
            Just("/Synapse".to_owned()),
            "/[ -~]{0,20}"
        ],
        proptest::collection::vec((names, proptest::collection::vec(any::<u8>(), 0..80)), 0..12),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            Just(br#"{"timeline": 90}"#.to_vec()),
            Just(b"[]".to_vec())
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    /// The pipeline answers every request with a valid status and a JSON message, and never
    /// panics, whatever the headers and body hold.
    #[test]
    fn axon_parses_arbitrary_requests_without_panicking((path, headers, body) in arb_request()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let axon = test_axon(key("axon_hotkey"), Behaviour::default());
        let mut b = http::Request::builder().method("POST");
        b = b.uri(path.parse::<http::Uri>().unwrap_or_else(|_| http::Uri::from_static("/")));
        for (k, v) in &headers {
            if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_bytes(v)) {
                b = b.header(n, v);
            }
        }
        let req = b.body(Bytes::from(body)).expect("request");
        let resp = rt.block_on(axon.handle(req, peer()));
        let status = resp.status().as_u16();
        prop_assert!(matches!(status, 200 | 401 | 403 | 404 | 405 | 500), "status {}", status);
        prop_assert_eq!(resp.headers().get("content-type").map(|v| v.as_bytes()), Some(&b"application/json"[..]));
    }
}
