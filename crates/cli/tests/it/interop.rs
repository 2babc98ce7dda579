//! Live interop with the real Python SDK, both SDK versions, both directions: our dendrite
//! against a Python axon, and a Python dendrite against our axon — success for `Allocate` and
//! `Specs`, a denied hotkey (403), a replay (401), a wrong axon hotkey (401), a handler slower
//! than the timeout (408 on the client) and an unknown synapse (404). And our renter's signed
//! allocation against a Python axon answering like SN27 v2.2.1: the extension is invisible to it.

use std::io::{Read, Write};
use std::time::Duration;

use bittensor::axon::{Axon, AxonConfig, HandlerError, Request};
use bittensor::dendrite::{AxonTarget, Dendrite, StatusKind};
use bittensor::synapse::EMPTY_BODY_HASH;
use bittensor::{Keypair, RawSynapse};
use compute::protocol::{Allocate, Specs};
use serde_json::{json, Value};

use crate::peers::{keys, mnemonic, py_dendrite, python, PyAxon};

fn kp(name: &str) -> Keypair {
    Keypair::from_mnemonic(&mnemonic(name)).expect("fixture mnemonic")
}

fn denied_ss58() -> String {
    keys()["denied_hotkey"]["ss58"].as_str().expect("ss58").to_owned()
}

const T: Duration = Duration::from_secs(10);

/// One signed Specs request, sent byte-identically twice on fresh connections: (first, second).
fn replay_twice(port: u16, dendrite: &Keypair, axon_ss58: &str) -> (u16, u16, String) {
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_nanos();
    let uuid = "replay-test-uuid";
    let msg = format!("{nonce}.{}.{axon_ss58}.{uuid}.{EMPTY_BODY_HASH}", dendrite.ss58());
    let sig = dendrite.sign(msg.as_bytes()).to_hex();
    let body = r#"{"specs_input": "", "specs_output": ""}"#;
    let req = format!(
        "POST /Specs HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\
         name: Specs\r\ntimeout: 12.0\r\nbt_header_axon_ip: 127.0.0.1\r\nbt_header_axon_port: {port}\r\nbt_header_axon_hotkey: {axon_ss58}\r\n\
         bt_header_dendrite_ip: 192.0.2.10\r\nbt_header_dendrite_version: 9000000\r\nbt_header_dendrite_nonce: {nonce}\r\n\
         bt_header_dendrite_uuid: {uuid}\r\nbt_header_dendrite_hotkey: {}\r\nbt_header_dendrite_signature: {sig}\r\n\
         computed_body_hash: {EMPTY_BODY_HASH}\r\n\r\n{body}",
        body.len(),
        dendrite.ss58()
    );
    let send = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(T)).expect("timeout");
        s.write_all(req.as_bytes()).expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, out)
    };
    let (first, _) = send();
    let (second, text) = send();
    (first, second, text)
}

async fn rust_dendrite_to_python_axon(version: &str) {
    let Some(py) = python(version) else { return };
    let axon = {
        let py = py.clone();
        tokio::task::spawn_blocking(move || PyAxon::start(&py, &[denied_ss58()])).await.expect("start")
    };
    let axon_id = kp("axon_hotkey").account_id();
    let target = AxonTarget::new("127.0.0.1", axon.port, &axon_id);
    let d = Dendrite::new(kp("dendrite_hotkey"));

    let r = d.call(&target, Allocate { timeline: 90, ..Allocate::default() }, T).await;
    assert!(r.is_success(), "{version}: check {:?}", r.status_message());
    assert_eq!(Value::Object(r.synapse.output.clone()), json!({"status": true, "port": 4444}));

    let pem = std::fs::read_to_string(crate::peers::root().join("tests/fixtures/rsa/public.pem")).expect("pem");
    let alloc = Allocate { timeline: 90, checking: false, public_key: pem.clone(), ..Allocate::default() };
    let r = d.call(&target, alloc, T).await;
    assert!(r.is_success(), "{version}: allocate");
    let info = r.synapse.output.get("info").and_then(Value::as_str).expect("encrypted info");
    assert_eq!(info.len(), 344, "{version}: base64 of a 256-byte RSA block");

    let dealloc = Allocate { timeline: 0, checking: false, public_key: pem, ..Allocate::default() };
    let r = d.call(&target, dealloc, T).await;
    assert!(r.is_success() && r.synapse.output.get("status") == Some(&Value::Bool(true)), "{version}: deallocate");

    let r = d.call(&target, Specs::default(), T).await;
    assert!(r.is_success(), "{version}: specs");
    let specs: Value = serde_json::from_str(&r.synapse.specs_output).expect("specs_output JSON");
    assert_eq!(specs["bittensor"], version);

    let denied = Dendrite::new(kp("denied_hotkey"));
    let r = denied.call(&target, Specs::default(), T).await;
    assert_eq!(
        (r.kind, r.status_message()),
        (StatusKind::Forbidden, Some("Forbidden. Key is blacklisted: Blacklisted hotkey."))
    );

    let wrong = AxonTarget { hotkey: denied_ss58(), ..target.clone() };
    let r = d.call(&wrong, Specs::default(), T).await;
    assert_eq!(r.kind, StatusKind::Unauthorized, "{version}: wrong axon hotkey");
    assert!(r.status_message().is_some_and(|m| m.contains("Signature mismatch")));

    let slow = Specs { specs_input: "sleep:3".into(), ..Specs::default() };
    let r = d.call(&target, slow, Duration::from_secs(1)).await;
    assert_eq!((r.kind, r.status_code()), (StatusKind::Timeout, Some(408)), "{version}: timeout");

    let r = d.call_raw(&target, RawSynapse::new("Unknown", Default::default()), T).await;
    assert_eq!(r.kind, StatusKind::NotFound, "{version}: unknown synapse");
    assert!(r.status_message().is_some_and(|m| m.starts_with("Synapse name 'Unknown' not found")));

    let port = axon.port;
    let (first, second, text) =
        tokio::task::spawn_blocking(move || replay_twice(port, &kp("dendrite_hotkey"), &axon_id.to_ss58()))
            .await
            .expect("replay");
    assert_eq!((first, second), (200, 401), "{version}: replay");
    assert!(text.contains("Nonce is too old"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_dendrite_to_python_axon_9_0_0() {
    rust_dendrite_to_python_axon("9.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_dendrite_to_python_axon_10_5_0() {
    rust_dendrite_to_python_axon("10.5.0").await;
}

/// Our axon serving SN27's synapses the way the Python peer axon does.
async fn rust_axon() -> bittensor::axon::AxonHandle {
    let denied = denied_ss58();
    Axon::new(kp("axon_hotkey"))
        .attach(|r: Request<Allocate>| async move {
            let mut s = r.synapse;
            let out = if s.checking { json!({"status": true, "port": 4444}) } else { json!({"status": true}) };
            s.output = out.as_object().cloned().unwrap_or_default();
            Ok::<_, HandlerError>(s)
        })
        .attach(|r: Request<Specs>| async move {
            let mut s = r.synapse;
            if let Some(secs) = s.specs_input.strip_prefix("sleep:").and_then(|x| x.parse::<f64>().ok()) {
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            }
            s.specs_output = json!({"peer": "rust"}).to_string();
            Ok(s)
        })
        .blacklist(move |h| {
            (h.header.dendrite.hotkey.as_deref() == Some(denied.as_str())).then(|| "Blacklisted hotkey".to_owned())
        })
        .spawn(AxonConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..AxonConfig::default() })
        .await
        .expect("spawn axon")
}

async fn python_dendrite_to_rust_axon(version: &str) {
    let Some(py) = python(version) else { return };
    let axon = rust_axon().await;
    let axon_ss58 = kp("axon_hotkey").ss58();
    let target = json!({"ip": "127.0.0.1", "port": axon.local_addr().port(), "hotkey": axon_ss58});
    let pem = std::fs::read_to_string(crate::peers::root().join("tests/fixtures/rsa/public.pem")).expect("pem");
    let doc = json!({
        "hotkey_mnemonic": mnemonic("dendrite_hotkey"),
        "axon": target,
        "calls": [
            {"synapse": "Allocate", "fields": {"timeline": 90, "checking": true}},
            {"synapse": "Allocate", "fields": {"timeline": 90, "checking": false, "public_key": pem}},
            {"synapse": "Allocate", "fields": {"timeline": 0, "checking": false, "public_key": pem}},
            {"synapse": "Specs", "fields": {}},
            {"synapse": "Specs", "fields": {"specs_input": "sleep:3"}, "timeout": 1.0},
            {"synapse": "Unknown", "fields": {}},
            {"synapse": "Specs", "fields": {}, "replay": true},
        ]
    });
    let results = {
        let py = py.clone();
        tokio::task::spawn_blocking(move || py_dendrite(&py, &doc)).await.expect("dendrite")
    };
    assert_eq!(results.len(), 7);
    let ok = |i: usize| {
        assert_eq!(results[i]["status_code"], 200, "{version} call {i}: {}", results[i]);
        assert_eq!(results[i]["is_success"], true, "{version} call {i}");
    };
    ok(0);
    assert_eq!(results[0]["deserialized"], json!({"status": true, "port": 4444}));
    ok(1);
    ok(2);
    assert_eq!(results[2]["deserialized"], json!({"status": true}));
    ok(3);
    let specs: Value = serde_json::from_str(results[3]["deserialized"].as_str().expect("specs string")).expect("json");
    assert_eq!(specs["peer"], "rust");
    assert_eq!(results[3]["synapse"]["axon"]["status_message"], "Success");
    assert_eq!(results[4]["status_code"], 408, "{version}: slow handler");
    assert_eq!(results[5]["status_code"], 404, "{version}: unknown");
    assert!(results[5]["status_message"].as_str().is_some_and(|m| m.starts_with("Synapse name 'Unknown' not found")));
    assert_eq!(
        (results[6]["first_status"].as_i64(), results[6]["second_status"].as_i64()),
        (Some(200), Some(401)),
        "{version}: replay"
    );

    // A denied hotkey, and a dendrite that signs for the wrong axon hotkey.
    let denied = json!({"hotkey_mnemonic": mnemonic("denied_hotkey"), "axon": target, "calls": [{"synapse": "Specs", "fields": {}}]});
    let wrong_target = json!({"ip": "127.0.0.1", "port": axon.local_addr().port(), "hotkey": denied_ss58()});
    let wrong = json!({"hotkey_mnemonic": mnemonic("dendrite_hotkey"), "axon": wrong_target, "calls": [{"synapse": "Allocate", "fields": {"timeline": 90}}]});
    let (r403, r401) = tokio::task::spawn_blocking(move || (py_dendrite(&py, &denied), py_dendrite(&py, &wrong)))
        .await
        .expect("dendrites");
    assert_eq!(r403[0]["status_code"], 403);
    assert_eq!(r403[0]["status_message"], "Forbidden. Key is blacklisted: Blacklisted hotkey.");
    assert_eq!(r401[0]["status_code"], 401);
    assert!(r401[0]["status_message"].as_str().is_some_and(|m| m.contains("Signature mismatch")));
    axon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_dendrite_to_rust_axon_9_0_0() {
    python_dendrite_to_rust_axon("9.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_dendrite_to_rust_axon_10_5_0() {
    python_dendrite_to_rust_axon("10.5.0").await;
}

#[test]
fn bittensor_test_keys_match() {
    assert_eq!(kp("axon_hotkey").ss58(), keys()["axon_hotkey"]["ss58"]);
    assert_eq!(kp("dendrite_hotkey").account_id().to_hex(), keys()["dendrite_hotkey"]["public_key"]);
}

/// Our renter (every call signed with nicompute's extension) allocates from a Python 9.0.0 axon
/// answering like SN27 v2.2.1: the SDK ignores the extension, the answer is unsigned and accepted
/// as an SN27 peer's, and v2.2.1's credentials (user ports, an integer version) are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_renter_allocates_from_a_python_axon_answering_like_sn27_2_2_1() {
    use compute::allocator::{self, AllocateOptions, Candidate, MemoryStore};
    use compute::crypto::CredentialsVersion;
    use compute::specs::{GpuRequirement, Requirement};
    let Some(py) = python("9.0.0") else { return };
    let axon = {
        let (py, doc) =
            (py.clone(), json!({"hotkey_mnemonic": mnemonic("axon_hotkey"), "port": 0, "sn27_version": "2.2.1"}));
        tokio::task::spawn_blocking(move || PyAxon::start_config(&py, &doc)).await.expect("start")
    };
    let hotkey = kp("axon_hotkey").ss58();
    let candidate = Candidate {
        hotkey: hotkey.clone(),
        target: AxonTarget { ip: "127.0.0.1".into(), port: axon.port, hotkey: hotkey.clone() },
        specs: None,
        signs: false,
    };
    let req = Requirement::sn27(Some(GpuRequirement { count: 1, memory_mib: 80 * 1024, kind: "h100".into() }));
    let opts = AllocateOptions { ssh_wait: Duration::from_millis(200), ..AllocateOptions::default() };
    let store = MemoryStore::default();
    let d = Dendrite::new(kp("dendrite_hotkey"));
    let rec = allocator::allocate_hotkey(&d, candidate, &req, &opts, &store, &|_| {}).await.expect("allocated");
    assert!(!rec.authenticated, "a Python peer signs nothing");
    assert_eq!(rec.host_key, None);
    assert_eq!(rec.username, "root");
    assert_eq!(rec.version, CredentialsVersion::Number(221));
    assert_eq!(rec.external_user_ports, Some(vec![(27015, 40001), (27016, 40002), (27017, 40003), (27018, 40004)]));
    let target = AxonTarget { ip: "127.0.0.1".into(), port: axon.port, hotkey: hotkey.clone() };
    let out = allocator::deallocate(&d, &target, &hotkey, &rec.regkey_pem, &store, T, false).await;
    assert_eq!(out, allocator::DeallocOutcome::Released);
}
