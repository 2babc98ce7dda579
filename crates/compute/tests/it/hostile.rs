//! The miner against callers that mean harm: a request captured on the wire and replayed after
//! the miner restarted, a caller who does not hold the allocation key trying to end or manage
//! it while an allocation starts, and the runtime's own error text kept from callers.
//! (The axon's resource attacks are in the bittensor crate's `hostile` tests.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proptest::strategy::Strategy;

use bittensor::dendrite::{AxonTarget, Dendrite};
use bittensor::synapse::EMPTY_BODY_HASH;
use bittensor::Keypair;
use compute::crypto::AllocationKey;
use compute::miner::state::{Phase, StateStore};
use compute::miner::{self, MinerHandle};
use compute::protocol::Allocate;
use compute::runtime::docker::{DockerConfig, DockerRuntime, DEFAULT_IMAGE};
use compute::runtime::local::LocalRuntime;
use compute::runtime::ContainerRuntime;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{allocate_with, docker_config, docker_miner, docker_runtime, fixture_key as kp, PortLease};

/// A miner in this process on `runtime` (with a warm container where the runtime keeps one).
async fn start_miner(state_dir: PathBuf, runtime: Arc<dyn ContainerRuntime>, ssh: &PortLease) -> MinerHandle {
    docker_miner(state_dir, runtime, ssh, true, miner::offer::Offer::default()).await
}

/// A signed `Specs` request as raw HTTP, built the way the SDK builds it: what an attacker on
/// the path would capture.
fn signed_specs(caller: &Keypair, axon: &Keypair, nonce: u64) -> Vec<u8> {
    let uuid = "8b0ed0a4-1f44-11f0-9d56-0242ac120002";
    let msg = format!("{nonce}.{}.{}.{uuid}.{EMPTY_BODY_HASH}", caller.ss58(), axon.ss58());
    let body = r#"{"specs_input": "", "specs_output": ""}"#;
    format!(
        "POST /Specs HTTP/1.1\r\nhost: miner\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         timeout: 12.0\r\nbt_header_dendrite_hotkey: {}\r\nbt_header_dendrite_nonce: {nonce}\r\n\
         bt_header_dendrite_uuid: {uuid}\r\nbt_header_dendrite_version: 9000000\r\n\
         bt_header_dendrite_signature: {}\r\ncomputed_body_hash: {EMPTY_BODY_HASH}\r\nconnection: close\r\n\r\n{body}",
        body.len(),
        caller.ss58(),
        caller.sign(msg.as_bytes()).to_hex()
    )
    .into_bytes()
}

/// Sends raw bytes, returns the status code and the body's message (if any).
async fn send(addr: std::net::SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.expect("answered").expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let message = text.split("\r\n\r\n").nth(1).and_then(|b| serde_json::from_str::<Value>(b).ok());
    let message = message.and_then(|m| m["message"].as_str().map(str::to_owned)).unwrap_or_default();
    (status, message)
}

fn now_ns() -> u64 {
    bittensor::Clock::system().now_ns()
}

#[tokio::test]
async fn a_request_captured_before_a_clean_restart_is_refused_after_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(LocalRuntime::new(dir.path().join("local")).expect("runtime"));
    let ssh = PortLease::new();
    let miner = start_miner(dir.path().join("state"), runtime.clone(), &ssh).await;
    let captured = signed_specs(&kp("dendrite_hotkey"), &kp("axon_hotkey"), now_ns());
    assert_eq!(send(miner.axon_addr(), &captured).await.0, 200, "the original request");
    assert_eq!(send(miner.axon_addr(), &captured).await.0, 401, "its replay, same run");
    miner.shutdown().await;

    // The same miner (same state directory) starts again, on another port.
    let miner = start_miner(dir.path().join("state"), runtime, &ssh).await;
    let (status, message) = send(miner.axon_addr(), &captured).await;
    assert_eq!(status, 401, "the replay after the restart: {message}");
    assert!(message.contains("Nonce is too old"), "{message}");
    // A fresh request of the same caller passes.
    let fresh = signed_specs(&kp("dendrite_hotkey"), &kp("axon_hotkey"), now_ns());
    assert_eq!(send(miner.axon_addr(), &fresh).await.0, 200);
    miner.shutdown().await;
}

/// A Docker runtime whose containers carry a scope of their own (so the miner's start-up
/// reconciliation never touches anyone else's), or None after saying why there is none.
async fn docker(image: &str, scope: &str) -> Option<Arc<DockerRuntime>> {
    let cfg = DockerConfig { image: image.to_owned(), scope: Some(scope.to_owned()), ..docker_config() };
    docker_runtime(cfg, &[]).await.map(Arc::new)
}

/// Removes every container of the scope when dropped, even when the test panics.
struct Cleanup(Arc<DockerRuntime>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let rt = self.0.clone();
        let _ = std::thread::spawn(move || {
            let Ok(tokio) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            tokio.block_on(async {
                for c in rt.list().await.unwrap_or_default() {
                    let _ = rt.remove(&c.id).await;
                }
            });
        })
        .join();
    }
}

fn scope(tag: &str) -> String {
    format!("test-hostile-{tag}-{}", std::process::id())
}

fn reason(a: &Allocate) -> String {
    a.output.get("reason").and_then(Value::as_str).unwrap_or("").to_owned()
}

#[tokio::test]
async fn docker_a_caller_without_the_key_is_refused_while_an_allocation_starts() {
    let scope = scope("lock");
    let Some(rt) = docker(DEFAULT_IMAGE, &scope).await else { return };
    let _cleanup = Cleanup(rt.clone());
    let dir = tempfile::tempdir().expect("tmp");
    let state_dir = dir.path().join("state");
    let ssh = PortLease::new();
    let miner = start_miner(state_dir.clone(), rt, &ssh).await;
    let target = AxonTarget::new("127.0.0.1", miner.axon_addr().port(), &kp("axon_hotkey").account_id());
    let d = Dendrite::new(kp("dendrite_hotkey"));
    let (holder, stranger) = (AllocationKey::generate().expect("key"), AllocationKey::generate().expect("key"));

    let allocating = tokio::spawn({
        let (d, target, req) = (d.clone(), target.clone(), allocate_with(&holder));
        async move { d.call(&target, req, Duration::from_secs(60)).await }
    });
    // Wait until the allocation holds the lock: its row is written, its container starting.
    let state = StateStore::open(&state_dir.join("miner.sqlite")).expect("state");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !state.current().expect("read").is_some_and(|a| a.phase == Phase::Starting) {
        assert!(std::time::Instant::now() < deadline, "the allocation never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let strangers = [
        Allocate {
            timeline: 0,
            checking: false,
            public_key: stranger.public_pem().expect("pem"),
            ..Allocate::default()
        },
        {
            let mut a = Allocate { checking: false, docker_change: true, ..allocate_with(&stranger) };
            a.docker_action.insert("action".into(), json!("restart"));
            a
        },
    ];
    for req in strangers {
        let r = d.call(&target, req, Duration::from_secs(60)).await;
        assert!(r.is_success(), "{:?}", r.status_message());
        assert_eq!(reason(&r.synapse), "not the holder of the allocation key");
        // Answered while the allocation still holds the lock (before, the refusal waited for it).
        let phase = state.current().expect("read").map(|a| a.phase);
        assert_eq!(phase, Some(Phase::Starting), "the refusal waited for the allocation");
    }

    let r = allocating.await.expect("task");
    assert!(r.is_success() && r.synapse.output.get("status") == Some(&json!(true)), "{:?}", r.synapse.output);
    let end =
        Allocate { timeline: 0, checking: false, public_key: holder.public_pem().expect("pem"), ..Allocate::default() };
    assert!(d.call(&target, end, Duration::from_secs(60)).await.synapse.output.get("status") == Some(&json!(true)));
    miner.shutdown().await;
}

#[tokio::test]
async fn docker_runtime_errors_reach_callers_as_plain_messages() {
    let scope = scope("errors");
    let image = "nicompute/absent-image-for-tests:never";
    let Some(rt) = docker(image, &scope).await else { return };
    let _cleanup = Cleanup(rt.clone());
    let dir = tempfile::tempdir().expect("tmp");
    let ssh = PortLease::new();
    let miner = start_miner(dir.path().join("state"), rt, &ssh).await;
    let target = AxonTarget::new("127.0.0.1", miner.axon_addr().port(), &kp("axon_hotkey").account_id());
    let key = AllocationKey::generate().expect("key");
    let r = Dendrite::new(kp("dendrite_hotkey")).call(&target, allocate_with(&key), Duration::from_secs(60)).await;
    assert!(r.is_success(), "{:?}", r.status_message());
    let why = reason(&r.synapse);
    assert_eq!(r.synapse.output.get("status"), Some(&json!(false)));
    assert!(why.starts_with("the machine could not start: "), "{why}");
    for detail in ["absent-image", "No such image", "docker", "Docker", "/var/run"] {
        assert!(!why.contains(detail), "the runtime's detail reached the caller: {why}");
    }
    miner.shutdown().await;
}

fn json_value() -> impl Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[ -~]{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    proptest::sample::select(
                        &["cpu", "gpu", "ram", "hard_disk", "count", "capacity", "type", "ssh_key", "action"][..]
                    )
                    .prop_map(str::to_owned),
                    "[a-z_]{1,10}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, failure_persistence: None, ..Default::default() })]

    /// SN27's synapses and the device requirement from arbitrary JSON: typed errors, no panic
    /// (the fuzz target for the miner's own parsing; the HTTP side is the bittensor crate's).
    #[test]
    fn sn27_synapses_and_requirements_parse_or_fail_cleanly(
        fields in proptest::collection::btree_map(
            proptest::prelude::prop_oneof![
                proptest::sample::select(&["timeline", "device_requirement", "checking", "output", "public_key",
                    "docker_requirement", "docker_change", "docker_action", "specs_input", "specs_output"][..])
                    .prop_map(str::to_owned),
                "[a-z_]{1,12}",
            ],
            json_value(),
            0..10,
        ),
        requirement in json_value(),
    ) {
        use bittensor::Synapse;
        let map: serde_json::Map<String, Value> = fields.into_iter().collect();
        if let Ok(a) = Allocate::from_fields(map.clone()) {
            let _ = a.to_fields();
        }
        let _ = compute::protocol::Specs::from_fields(map);
        let _ = compute::specs::Requirement::from_json(&requirement);
    }
}
