//! The axon under attack from one machine, on loopback: a body trickled one byte at a time,
//! a thousand connections holding partial bodies while a registered caller is served, a flood of
//! uuids and far-future nonces from a registered caller, and a 100 KB header. Each attack is
//! bounded in count and time. The attacker connects from 127.0.0.2, the caller from 127.0.0.1:
//! two machines as far as the axon can tell. These tests run alone (nextest group `attack`).
//! The miner's memory under 1 MB bodies is measured on a real `nicompute miner run` in the CLI
//! crate's `hostile` tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bittensor::axon::AxonConfig;
use bittensor::dendrite::{AxonTarget, Dendrite};
use bittensor::synapse::EMPTY_BODY_HASH;
use bittensor::Clock;
use bittensor::Keypair;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::util::{key, peer, test_axon, Behaviour, Specs};

/// Lifts this process's open-file limit to its hard limit: a thousand connections need two
/// thousand descriptors here (both ends live in this process).
pub fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

/// A connection from the attacker's address.
async fn attacker_connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind("127.0.0.2:0".parse().expect("addr"))?;
    s.connect(addr).await
}

async fn serve() -> (bittensor::axon::AxonHandle, AxonTarget) {
    raise_nofile();
    let kp = key("axon_hotkey");
    let id = kp.account_id();
    let cfg = AxonConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..AxonConfig::default() };
    let h = test_axon(kp, Behaviour::default()).spawn(cfg).await.expect("spawn");
    let target = AxonTarget::new("127.0.0.1", h.local_addr().port(), &id);
    (h, target)
}

/// The head of a signed `Specs` request (as the SDK builds it) for a body of `len` bytes.
fn signed_head(caller: &Keypair, nonce: u64, uuid: &str, len: usize) -> String {
    let axon = key("axon_hotkey").ss58();
    let msg = format!("{nonce}.{}.{axon}.{uuid}.{EMPTY_BODY_HASH}", caller.ss58());
    format!(
        "POST /Specs HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\
         timeout: 12.0\r\nbt_header_dendrite_hotkey: {}\r\nbt_header_dendrite_nonce: {nonce}\r\n\
         bt_header_dendrite_uuid: {uuid}\r\nbt_header_dendrite_signature: {}\r\n\
         computed_body_hash: {EMPTY_BODY_HASH}\r\n\r\n",
        caller.ss58(),
        caller.sign(msg.as_bytes()).to_hex()
    )
}

/// A head with no signature from an unregistered key, announcing `len` body bytes.
fn stranger_head(len: usize) -> String {
    static STRANGER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let stranger = STRANGER.get_or_init(|| Keypair::generate(12).expect("key").ss58());
    format!(
        "POST /Specs HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\
         bt_header_dendrite_hotkey: {stranger}\r\nbt_header_dendrite_nonce: 1\r\ncomputed_body_hash: {EMPTY_BODY_HASH}\r\n\r\n"
    )
}

/// Reads until the server closes or `limit` passes; returns what came and whether it closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

#[tokio::test]
async fn a_trickled_body_is_cut_off_and_a_strangers_body_is_never_waited_for() {
    let (h, _) = serve().await;
    let addr = h.local_addr();

    // A registered, correctly signed caller announces 1,000 bytes and sends one every 500 ms:
    // cut off with 408 after the grace period (2 s), not after 500 s.
    let mut s = attacker_connect(addr).await.expect("connect");
    let now = Clock::system().now_ns();
    s.write_all(signed_head(&key("dendrite_hotkey"), now, "slow-body", 1000).as_bytes()).await.expect("head");
    let started = Instant::now();
    let mut sent = 0;
    let closed = loop {
        if s.write_all(b" ").await.is_err() {
            break true;
        }
        sent += 1;
        let (text, closed) = read_until_closed(&mut s, Duration::from_millis(500)).await;
        if closed || !text.is_empty() {
            assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
            break true;
        }
        if started.elapsed() > Duration::from_secs(8) {
            break false;
        }
    };
    assert!(closed, "a body trickled at 2 bytes/s still held its connection after 8 s ({sent} bytes sent)");

    // A stranger announces a body and sends none: refused on its headers at once.
    let mut s = attacker_connect(addr).await.expect("connect");
    s.write_all(stranger_head(1000).as_bytes()).await.expect("head");
    let (text, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(closed, "the connection closes instead of waiting for the body");
    h.shutdown().await;
}

#[tokio::test]
async fn a_thousand_partial_bodies_do_not_keep_a_registered_caller_out() {
    let (h, target) = serve().await;
    let addr = h.local_addr();
    // 1,100 connections from one address, each with headers and part of a body, held open.
    let mut held = Vec::new();
    for i in 0..1_100 {
        let Ok(mut s) = attacker_connect(addr).await else { continue };
        let head = if i % 2 == 0 {
            stranger_head(1000)
        } else {
            signed_head(&key("dendrite_hotkey"), Clock::system().now_ns(), &format!("partial-{i}"), 1000)
        };
        if s.write_all(head.as_bytes()).await.is_ok() && s.write_all(&[b' '; 10]).await.is_ok() {
            held.push(s);
        }
    }
    // The registered caller is answered within 2 s, again and again, while they are open.
    let d = Dendrite::new(key("dendrite_hotkey"));
    for _ in 0..20 {
        let r = d.call(&target, Specs::default(), Duration::from_secs(2)).await;
        assert!(r.is_success(), "a registered caller was not served: {:?}", r.status_message());
    }
    drop(held);
    h.shutdown().await;
}

#[tokio::test]
async fn a_uuid_flood_and_far_future_nonces_leave_the_replay_store_bounded() {
    let axon = test_axon(key("axon_hotkey"), Behaviour::default());
    let hostile = key("dendrite_hotkey");
    let honest =
        Keypair::from_mnemonic("forget enemy fade powder kind culture fee spell elite sock feed crush").expect("key");
    let request = |caller: &Keypair, nonce: u64, uuid: &str| -> http::Request<Bytes> {
        let raw = signed_head(caller, nonce, uuid, 2);
        let mut b = http::Request::builder().method("POST").uri("/Specs");
        for line in raw.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once(": ").expect("header line");
            b = b.header(k, v);
        }
        b.body(Bytes::from_static(b"{}")).expect("request")
    };

    // A registered caller sends 3,000 requests with distinct 64-character uuids; an honest
    // caller's requests are interleaved.
    let first_nonce = Clock::system().now_ns();
    for i in 0..3_000u64 {
        let uuid = format!("{i:064}");
        let nonce = if i == 0 { first_nonce } else { Clock::system().now_ns() };
        let r = axon.handle(request(&hostile, nonce, &uuid), peer()).await;
        assert_eq!(r.status(), 200, "each flood request is itself valid");
        if i % 100 == 0 {
            let r = axon.handle(request(&honest, Clock::system().now_ns(), "honest-lane"), peer()).await;
            assert_eq!(r.status(), 200, "the honest caller is served during the flood");
        }
    }
    let stats = axon.replay_stats();
    assert!(stats.lanes <= 1_024 + 1, "the store holds {} lanes", stats.lanes);
    assert!(stats.evicted >= 3_000 - 1_024, "{stats:?}");
    // The first lane was forgotten; its request, replayed, is still refused.
    let r = axon.handle(request(&hostile, first_nonce, &format!("{:064}", 0)), peer()).await;
    assert_eq!(r.status(), 401, "a forgotten lane's replay");

    // Uuids past 64 characters and nonces far in the future are refused and stored nowhere.
    let long = "u".repeat(65);
    assert_eq!(axon.handle(request(&hostile, Clock::system().now_ns(), &long), peer()).await.status(), 401);
    for nonce in [Clock::system().now_ns() + 3_600_000_000_000, u64::MAX - 1] {
        let r = axon.handle(request(&hostile, nonce, "future"), peer()).await;
        assert_eq!(r.status(), 401, "nonce {nonce}");
        let msg = r.headers().get("bt_header_axon_status_message").map(|v| v.to_str().unwrap_or("").to_owned());
        assert!(msg.unwrap_or_default().contains("ahead of the axon's clock"));
    }
    // The honest lane still advances normally afterwards.
    let r = axon.handle(request(&honest, Clock::system().now_ns(), "honest-lane"), peer()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(axon.replay_stats().lanes, stats.lanes);
}

#[tokio::test]
async fn a_100kb_header_is_refused_and_never_echoed() {
    let (h, target) = serve().await;
    let addr = h.local_addr();
    let big = "5".repeat(100 * 1024);
    for header in ["bt_header_dendrite_hotkey", "bt_header_dendrite_uuid", "x-anything"] {
        let mut s = attacker_connect(addr).await.expect("connect");
        let req = format!("POST /Specs HTTP/1.1\r\nhost: a\r\n{header}: {big}\r\ncontent-length: 0\r\n\r\n");
        let _ = s.write_all(req.as_bytes()).await;
        let (text, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 431"), "{header}: {}", &text[..text.len().min(200)]);
        assert!(text.len() < 4096, "{header}: a {} byte answer to a 100 KB header", text.len());
    }
    // A value over the synapse header cap (256 bytes) but within the head limit: 431, not echoed.
    let mut s = attacker_connect(addr).await.expect("connect");
    let long = "5".repeat(1000);
    let req = format!(
        "POST /Specs HTTP/1.1\r\nhost: a\r\nbt_header_dendrite_hotkey: {long}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let (text, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{}", &text[..text.len().min(200)]);
    assert!(!text.contains(&long[..300]), "the value is echoed");
    let d = Dendrite::new(key("dendrite_hotkey"));
    assert!(d.call(&target, Specs::default(), Duration::from_secs(5)).await.is_success(), "still serving");
    h.shutdown().await;
}
