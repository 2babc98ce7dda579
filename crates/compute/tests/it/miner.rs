//! The miner end to end with the local runtime: SN27's Allocate semantics as a renter sees them
//! (check, allocate, log in over SSH, manage, deallocate), expiry, one allocation under a burst
//! of concurrent requests, crash reconciliation, and the real Python SDK dendrite as the client.

// Skips say so on stderr, plainly.
#![allow(clippy::print_stderr)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bittensor::dendrite::{AxonTarget, Dendrite};
use bittensor::Keypair;
use compute::crypto::AllocationKey;
use compute::miner::state::{Allocation, Phase, StateStore};
use compute::miner::MinerHandle;
use compute::protocol::{Allocate, Specs as SpecsSynapse};
use compute::runtime::local::LocalRuntime;
use compute::runtime::{ContainerRuntime, ContainerSpec};
use serde_json::{json, Map, Value};

use crate::harness::{
    self, command, fixture_key, fixture_mnemonic, local_miner, root, simulated_specs, ssh, ssh_tools, Login, H100, T,
};

fn kp(name: &str) -> Keypair {
    fixture_key(name)
}

struct Net {
    miner: MinerHandle,
    runtime: Arc<LocalRuntime>,
    target: AxonTarget,
    ssh_port: u16,
    _dir: tempfile::TempDir,
}

async fn start_miner(dir: tempfile::TempDir, runtime: Option<Arc<LocalRuntime>>) -> Net {
    let runtime = runtime.unwrap_or_else(|| Arc::new(LocalRuntime::new(dir.path().join("local")).expect("runtime")));
    let stakes: HashMap<String, f32> =
        [(kp("dendrite_hotkey").ss58(), 5000.0), (kp("denied_hotkey").ss58(), 1.0)].into_iter().collect();
    let specs = simulated_specs(H100).await;
    let (miner, ssh_port) =
        local_miner(kp("axon_hotkey"), specs, stakes, runtime.clone(), dir.path().join("state")).await;
    let target = AxonTarget::new("127.0.0.1", miner.axon_addr().port(), &kp("axon_hotkey").account_id());
    Net { miner, runtime, target, ssh_port, _dir: dir }
}

fn requirement(gpu_gb: u64) -> Map<String, Value> {
    let v = json!({"cpu": {"count": 1}, "gpu": {"count": 1, "capacity": gpu_gb * 1024, "type": "h100"},
                   "hard_disk": {"capacity": 1_073_741_824u64}, "ram": {"capacity": 1_073_741_824u64}});
    v.as_object().cloned().unwrap_or_default()
}

fn check(gpu_gb: u64) -> Allocate {
    Allocate { timeline: 1, checking: true, device_requirement: requirement(gpu_gb), ..Allocate::default() }
}

fn alloc(key: &AllocationKey, ttl_seconds: Option<u64>, ssh_key: &str) -> Allocate {
    let mut a = Allocate {
        timeline: 1,
        checking: false,
        public_key: key.public_pem().expect("pem"),
        device_requirement: requirement(80),
        ..Allocate::default()
    };
    a.docker_requirement.insert("ssh_key".into(), json!(ssh_key));
    if let Some(t) = ttl_seconds {
        a.docker_requirement.insert("ttl_seconds".into(), json!(t));
    }
    a
}

fn dealloc(key: &AllocationKey) -> Allocate {
    Allocate { timeline: 0, checking: false, public_key: key.public_pem().expect("pem"), ..Allocate::default() }
}

fn status(a: &Allocate) -> bool {
    a.output.get("status").and_then(Value::as_bool).unwrap_or(false)
}

fn ssh_password(port: u16, password: &str, cmd: &str) -> std::process::Output {
    ssh(port, Login::Password(password), &[]).arg(cmd).output().expect("ssh")
}

fn ssh_key(port: u16, key: &Path, cmd: &str) -> std::process::Output {
    ssh(port, Login::Key(key), &[]).arg(cmd).output().expect("ssh")
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let k = harness::keygen(dir, name);
    (k.private, k.public)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_log_in_manage_and_deallocate() {
    if !ssh_tools(true) {
        return;
    }
    let net = start_miner(tempfile::tempdir().expect("tmp"), None).await;
    let d = Dendrite::new(kp("dendrite_hotkey"));
    let keydir = tempfile::tempdir().expect("tmp");
    let (user_key, user_pub) = keygen(keydir.path(), "user");
    let (other_key, other_pub) = keygen(keydir.path(), "other");

    // Check: fits (80 GB asked of an 80 GB H100), does not fit (81 GB asked).
    let r = d.call(&net.target, check(80), T).await;
    assert!(r.is_success() && status(&r.synapse), "{:?}", r.synapse.output);
    assert_eq!(r.synapse.output.get("port"), Some(&json!(net.ssh_port)));
    let r = d.call(&net.target, check(81), T).await;
    assert!(!status(&r.synapse));
    assert!(
        r.synapse.output.get("reason").and_then(Value::as_str).is_some_and(|m| m.contains("gpu")),
        "{:?}",
        r.synapse.output
    );

    // Allocate; the credentials decrypt with our key only.
    let key = AllocationKey::generate().expect("rsa");
    let r = d.call(&net.target, alloc(&key, None, &user_pub), T).await;
    assert!(status(&r.synapse), "{:?}", r.synapse.output);
    let info = r.synapse.output.get("info").and_then(Value::as_str).expect("info");
    let creds = key.decrypt_credentials(info).expect("decrypt");
    assert_eq!((creds.username.as_str(), creds.port), ("root", net.ssh_port));
    assert!(AllocationKey::generate().expect("rsa").decrypt_credentials(info).is_err());

    // Log in with the password and with the injected key.
    use secrecy::ExposeSecret;
    let out = ssh_password(net.ssh_port, creds.password.expose_secret(), "echo via-password");
    assert!(String::from_utf8_lossy(&out.stdout).contains("via-password"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = ssh_key(net.ssh_port, &user_key, "echo via-key");
    assert!(String::from_utf8_lossy(&out.stdout).contains("via-key"), "{}", String::from_utf8_lossy(&out.stderr));

    // Busy now; the holder sees it allocated, others do not.
    assert!(!status(&d.call(&net.target, check(80), T).await.synapse));
    let probe = |k: &AllocationKey| Allocate {
        timeline: 0,
        checking: true,
        public_key: k.public_pem().expect("pem"),
        ..Allocate::default()
    };
    assert!(status(&d.call(&net.target, probe(&key), T).await.synapse));
    let stranger = AllocationKey::generate().expect("rsa");
    assert!(!status(&d.call(&net.target, probe(&stranger), T).await.synapse));

    // Management is for the key holder only.
    let action = |k: &AllocationKey, action: &str, ssh_key: &str| {
        let mut a = Allocate {
            checking: false,
            docker_change: true,
            public_key: k.public_pem().expect("pem"),
            ..Allocate::default()
        };
        a.docker_action.insert("action".into(), json!(action));
        a.docker_action.insert("ssh_key".into(), json!(ssh_key));
        a.docker_action.insert("key_type".into(), json!("user"));
        a
    };
    assert!(!status(&d.call(&net.target, action(&stranger, "pause", ""), T).await.synapse));
    assert!(!status(&d.call(&net.target, dealloc(&stranger), T).await.synapse), "wrong key cannot deallocate");
    assert!(status(&d.call(&net.target, action(&key, "exchange_key", &other_pub), T).await.synapse));
    assert!(!ssh_key(net.ssh_port, &user_key, "true").status.success(), "old key refused after exchange");
    assert!(ssh_key(net.ssh_port, &other_key, "true").status.success(), "new key accepted");
    assert!(status(&d.call(&net.target, action(&key, "pause", ""), T).await.synapse));
    assert!(status(&d.call(&net.target, action(&key, "unpause", ""), T).await.synapse));
    assert!(status(&d.call(&net.target, action(&key, "restart", ""), T).await.synapse));
    assert!(!status(&d.call(&net.target, action(&key, "explode", ""), T).await.synapse));

    // Deallocate: gone.
    assert!(status(&d.call(&net.target, dealloc(&key), T).await.synapse));
    assert!(net.runtime.list().await.expect("list").is_empty());
    assert!(!ssh_password(net.ssh_port, creds.password.expose_secret(), "true").status.success());
    assert!(status(&d.call(&net.target, check(80), T).await.synapse), "free again");
    net.miner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_are_checked_and_specs_are_real() {
    let net = start_miner(tempfile::tempdir().expect("tmp"), None).await;
    let r = Dendrite::new(kp("denied_hotkey")).call(&net.target, check(80), T).await;
    assert_eq!(r.status_code(), Some(403));
    assert!(r.status_message().is_some_and(|m| m.contains("Not enough stake!")), "{:?}", r.status_message());
    let r = Dendrite::new(Keypair::generate(12).expect("k")).call(&net.target, check(80), T).await;
    assert_eq!(r.status_code(), Some(403), "an unregistered caller gets a 403, not a dropped connection");
    assert!(r.status_message().is_some_and(|m| m.contains("not registered")));

    let r = Dendrite::new(kp("dendrite_hotkey")).call(&net.target, SpecsSynapse::default(), T).await;
    assert!(r.is_success());
    let specs: Value = serde_json::from_str(&r.synapse.specs_output).expect("specs JSON");
    assert_eq!(specs["gpu"]["count"], 1);
    assert_eq!(specs["gpu"]["details"][0]["name"], "NVIDIA H100 80GB HBM3");
    assert_eq!(specs["simulated"], true);
    assert!(specs["cpu"]["count"].as_u64().is_some_and(|c| c >= 1));
    assert!(specs["ram"]["total"].as_u64().is_some_and(|c| c > 0));
    net.miner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_allocations_make_one_container() {
    let net = start_miner(tempfile::tempdir().expect("tmp"), None).await;
    let d = Dendrite::new(kp("dendrite_hotkey"));
    let keys: Vec<AllocationKey> = (0..50).map(|_| AllocationKey::generate().expect("rsa")).collect();
    let mut set = tokio::task::JoinSet::new();
    for k in &keys {
        let (d, t, a) = (d.clone(), net.target.clone(), alloc(k, None, ""));
        set.spawn(async move { d.call(&t, a, T).await });
    }
    let mut ok = 0;
    while let Some(r) = set.join_next().await {
        let r = r.expect("task");
        assert!(r.is_success(), "every request is answered: {:?}", r.status_message());
        ok += usize::from(status(&r.synapse));
    }
    assert_eq!(ok, 1, "exactly one allocation");
    assert_eq!(net.runtime.list().await.expect("list").len(), 1, "exactly one container");
    net.miner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_expire() {
    let net = start_miner(tempfile::tempdir().expect("tmp"), None).await;
    let d = Dendrite::new(kp("dendrite_hotkey"));
    let key = AllocationKey::generate().expect("rsa");
    assert!(status(&d.call(&net.target, alloc(&key, Some(2), ""), T).await.synapse));
    assert_eq!(net.runtime.list().await.expect("list").len(), 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !net.runtime.list().await.expect("list").is_empty() {
        assert!(Instant::now() < deadline, "not removed at expiry");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(status(&d.call(&net.target, check(80), T).await.synapse), "free after expiry");
    net.miner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reconciles_interrupted_orphaned_and_vanished_allocations() {
    let dir = tempfile::tempdir().expect("tmp");
    let runtime = Arc::new(LocalRuntime::new(dir.path().join("local")).expect("runtime"));
    let state_path = dir.path().join("state/miner.sqlite");
    std::fs::create_dir_all(state_path.parent().expect("dir")).expect("mkdir");
    let spec = |id: &str| ContainerSpec {
        allocation_id: id.into(),
        password: secrecy::SecretString::from("pw".to_owned()),
        authorized_keys: Vec::new(),
        ssh_port: 0,
        bind_ip: "127.0.0.1".parse().expect("ip"),
        cpu_count: None,
        memory_bytes: None,
        gpus: false,
        image: None,
        env: Vec::new(),
        ssh_container_port: 22,
        user_ports: Vec::new(),
        host_key: None,
    };
    let row = |id: &str, container: Option<&str>, phase: Phase, expires_ms: u64| Allocation {
        allocation_id: id.into(),
        key_b64: "k".into(),
        container_id: container.map(str::to_owned),
        requester: "5F".into(),
        started_ms: 1,
        expires_ms,
        phase,
        host_key: None,
    };
    let far = u64::MAX / 2;

    // Killed mid-start: a `starting` row and its half-made container → both gone.
    runtime.start(&spec("mid")).await.expect("start");
    {
        let s = StateStore::open(&state_path).expect("state");
        assert!(s.begin(&row("mid", None, Phase::Starting, far)).expect("begin"));
    }
    // An orphan container nobody recorded → removed.
    runtime.start(&spec("orphan")).await.expect("start");
    let net = start_miner(dir, Some(runtime.clone())).await;
    assert!(runtime.list().await.expect("list").is_empty());
    let state_dir = net._dir.path().join("state/miner.sqlite");
    assert!(StateStore::open(&state_dir).expect("state").current().expect("read").is_none());
    net.miner.shutdown().await;

    // A running allocation survives a restart; one whose container vanished is cleared.
    let dir = net._dir;
    let c = runtime.start(&spec("live")).await.expect("start");
    {
        let s = StateStore::open(&state_dir).expect("state");
        assert!(s.begin(&row("live", None, Phase::Starting, far)).expect("begin"));
        s.running("live", &c.id).expect("running");
    }
    let net = start_miner(dir, Some(runtime.clone())).await;
    assert_eq!(runtime.list().await.expect("list").len(), 1, "kept");
    assert!(StateStore::open(&state_dir).expect("state").current().expect("read").is_some());
    net.miner.shutdown().await;
    runtime.remove(&c.id).await.expect("remove");
    let net = start_miner(net._dir, Some(runtime.clone())).await;
    assert!(
        StateStore::open(&state_dir).expect("state").current().expect("read").is_none(),
        "vanished container clears the state"
    );
    net.miner.shutdown().await;
}

/// The real Python SDK (9.0.0) as the validator: check, allocate with an RSA key (credentials
/// decrypted with Python `cryptography`), Specs, deallocate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_dendrite_allocates_from_our_miner() {
    let py = root().join("target/python-peers/bt9.0.0/bin/python");
    if !py.exists() {
        harness::skip("NICOMPUTE_REQUIRE_PEERS", "no Python peer for bittensor 9.0.0 (run scripts/python-peers.sh)");
        return;
    }
    let net = start_miner(tempfile::tempdir().expect("tmp"), None).await;
    let pem = std::fs::read_to_string(root().join("tests/fixtures/rsa/public.pem")).expect("pem");
    let target = json!({"ip": "127.0.0.1", "port": net.target.port, "hotkey": net.target.hotkey});
    let doc = json!({
        "hotkey_mnemonic": fixture_mnemonic("dendrite_hotkey"),
        "axon": target,
        "calls": [
            {"synapse": "Allocate", "fields": {"timeline": 1, "checking": true, "device_requirement": requirement(80)}},
            {"synapse": "Allocate", "fields": {"timeline": 1, "checking": false, "public_key": pem, "device_requirement": requirement(80)}},
            {"synapse": "Specs", "fields": {}},
            {"synapse": "Allocate", "fields": {"timeline": 0, "checking": false, "public_key": pem}},
        ]
    });
    let script = root().join("tests/peers/dendrite.py");
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = command(py).arg(script).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("python");
        child.stdin.take().expect("stdin").write_all(doc.to_string().as_bytes()).expect("write");
        child.wait_with_output().expect("output")
    })
    .await
    .expect("join");
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let r = v["results"].as_array().expect("results");
    assert_eq!(r[0]["deserialized"]["status"], true, "{}", r[0]);
    assert_eq!(r[1]["deserialized"]["status"], true, "{}", r[1]);
    let info = r[1]["deserialized"]["info"].as_str().expect("info").to_owned();
    // Python `cryptography` (the subnet's RSAEncryption) decrypts what we encrypted.
    let py = root().join("target/python-peers/bt9.0.0/bin/python");
    let private = root().join("tests/fixtures/rsa/private.pem");
    let code = "import sys,base64,json\nfrom cryptography.hazmat.primitives import serialization,hashes\nfrom cryptography.hazmat.primitives.asymmetric import padding\nk=serialization.load_pem_private_key(open(sys.argv[1],'rb').read(),password=None)\np=k.decrypt(base64.b64decode(sys.stdin.read()),padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()),algorithm=hashes.SHA256(),label=None))\nprint(json.dumps(json.loads(p)))";
    let dec = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = command(py)
            .args(["-c", code])
            .arg(private)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python");
        child.stdin.take().expect("stdin").write_all(info.as_bytes()).expect("write");
        child.wait_with_output().expect("output")
    })
    .await
    .expect("join");
    assert!(dec.status.success(), "python could not decrypt");
    let creds: Value = serde_json::from_slice(&dec.stdout).expect("creds json");
    assert_eq!(creds["username"], "root");
    assert_eq!(creds["port"], net.ssh_port);
    assert!(creds["password"].as_str().is_some_and(|p| p.len() >= 10));
    let specs: Value = serde_json::from_str(r[2]["deserialized"].as_str().expect("specs")).expect("json");
    assert_eq!(specs["gpu"]["count"], 1);
    assert_eq!(r[3]["deserialized"]["status"], true, "deallocated with the same key");
    assert!(net.runtime.list().await.expect("list").is_empty());
    net.miner.shutdown().await;
}
