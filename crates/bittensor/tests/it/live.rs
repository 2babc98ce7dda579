//! Our dendrite against our axon on loopback: every outcome class a user can meet.

use std::time::Duration;

use bittensor::axon::AxonConfig;
use bittensor::dendrite::{AxonTarget, Dendrite, StatusKind};
use bittensor::{Keypair, RawSynapse};

use crate::util::{key, test_axon, Allocate, Behaviour, HashedEcho, Specs, SPECS_OUTPUT};

fn cfg() -> AxonConfig {
    AxonConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..AxonConfig::default() }
}

async fn started(behaviour: Behaviour) -> (bittensor::axon::AxonHandle, AxonTarget) {
    let kp = key("axon_hotkey");
    let id = kp.account_id();
    let handle = test_axon(kp, behaviour).spawn(cfg()).await.expect("spawn");
    let target = AxonTarget::new("127.0.0.1", handle.local_addr().port(), &id);
    (handle, target)
}

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn success_for_specs_allocate_and_hashed_fields() {
    let (_h, target) = started(Behaviour::default()).await;
    let d = Dendrite::new(key("dendrite_hotkey"));
    let r = d.call(&target, Specs::default(), T).await;
    assert!(r.is_success(), "{:?}", r.header.dendrite);
    assert_eq!(r.synapse.specs_output, SPECS_OUTPUT);
    assert_eq!(r.status_message(), Some("Success"));
    assert!(r.header.axon.process_time.is_some());

    let r = d.call(&target, Allocate { timeline: 90, ..Allocate::default() }, T).await;
    assert!(r.is_success());
    assert_eq!(r.synapse.output.get("status"), Some(&serde_json::Value::Bool(true)));
    assert_eq!(r.synapse.timeline, 90, "request fields echoed back");

    let r = d.call(&target, HashedEcho { text: "hi".into(), numbers: vec![1, 2], reply: String::new() }, T).await;
    assert!(r.is_success(), "{:?}", r.status_message());
    assert_eq!(r.synapse.reply, "hi|3");
}

#[tokio::test]
async fn refusals_are_classified_like_the_sdk() {
    let (_h, target) = started(Behaviour::default()).await;
    let denied = Dendrite::new(key("denied_hotkey"));
    let r = denied.call(&target, Specs::default(), T).await;
    assert_eq!((r.status_code(), r.kind), (Some(403), StatusKind::Forbidden));
    assert_eq!(r.status_message(), Some("Forbidden. Key is blacklisted: Blacklisted hotkey."));

    let d = Dendrite::new(key("dendrite_hotkey"));
    let wrong = AxonTarget { hotkey: key("denied_hotkey").ss58(), ..target.clone() };
    let r = d.call(&wrong, Specs::default(), T).await;
    assert_eq!((r.status_code(), r.kind), (Some(401), StatusKind::Unauthorized));
    assert!(r.status_message().is_some_and(|m| m.starts_with("Not Verified with error: Signature mismatch")));

    let r = d.call_raw(&target, RawSynapse::new("Unknown", Default::default()), T).await;
    assert_eq!((r.status_code(), r.kind), (Some(404), StatusKind::NotFound));
    assert_eq!(
        r.status_message(),
        Some("Synapse name 'Unknown' not found. Available synapses ['Synapse', 'Allocate', 'Specs', 'HashedEcho']")
    );
}

#[tokio::test]
async fn handler_failure_is_500_and_slow_handler_is_408() {
    let (_h, target) = started(Behaviour { fail: true, ..Behaviour::default() }).await;
    let d = Dendrite::new(key("dendrite_hotkey"));
    let r = d.call(&target, Allocate::default(), T).await;
    assert_eq!((r.status_code(), r.kind), (Some(500), StatusKind::ServerError));
    assert!(r.status_message().is_some_and(|m| m.starts_with("Internal Server Error #")));

    let started_at = std::time::Instant::now();
    let slow = Specs { specs_input: "sleep_ms:3000".into(), ..Specs::default() };
    let r = d.call(&target, slow, Duration::from_millis(300)).await;
    assert_eq!((r.status_code(), r.kind), (Some(408), StatusKind::Timeout));
    assert_eq!(r.status_message(), Some("Request timeout after 0.3 seconds"));
    assert!(started_at.elapsed() < Duration::from_secs(2), "did not wait for the handler");
}

#[tokio::test]
async fn unreachable_and_disconnecting_axons() {
    let d = Dendrite::new(key("dendrite_hotkey"));
    // A port nobody listens on.
    let (_closed, free) = crate::util::closed_port();
    let target = AxonTarget::new("127.0.0.1", free, &key("axon_hotkey").account_id());
    let r = d.call(&target, Specs::default(), T).await;
    assert_eq!((r.status_code(), r.kind), (Some(503), StatusKind::Unavailable));
    assert_eq!(r.status_message(), Some(format!("Service unavailable at 127.0.0.1:{free}/Specs").as_str()));

    // A server that accepts, reads, and closes without answering (what SN27 miners do on errors).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 8192];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            drop(s);
        }
    });
    let target = AxonTarget::new("127.0.0.1", port, &key("axon_hotkey").account_id());
    let r = d.call(&target, Specs::default(), T).await;
    assert_eq!((r.status_code(), r.kind), (Some(503), StatusKind::Disconnected), "{:?}", r.status_message());
}

#[tokio::test]
async fn concurrent_queries_share_a_dendrite_without_nonce_races() {
    let (_h, target) = started(Behaviour::default()).await;
    let d = Dendrite::new(key("dendrite_hotkey"));
    let targets = vec![target; 128];
    let results = d.query(&targets, &Specs::default(), T).await;
    assert_eq!(results.len(), 128);
    let failures: Vec<_> = results.iter().filter(|r| !r.is_success()).map(|r| r.status_message()).collect();
    assert!(failures.is_empty(), "{failures:?}");
}

#[tokio::test]
async fn dropping_the_handle_stops_serving() {
    let (h, target) = started(Behaviour::default()).await;
    drop(h);
    // The server stops in the background: wait for that (bounded), not for a fixed time.
    let d = Dendrite::new(key("dendrite_hotkey"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = d.call(&target, Specs::default(), Duration::from_secs(2)).await;
        if r.kind != StatusKind::Success || tokio::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(r.kind, StatusKind::Unavailable);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let (h, target) = started(Behaviour::default()).await;
    let d = Dendrite::new(Keypair::generate(12).expect("gen"));
    assert!(d.call(&target, Specs::default(), T).await.is_success());
    h.shutdown().await;
    let r = Dendrite::new(key("dendrite_hotkey")).call(&target, Specs::default(), T).await;
    assert_eq!(r.kind, StatusKind::Unavailable);
}
