//! The real Python SDK on nicompute's embedded devnet chain, used as a user uses it on finney:
//! bittensor 10.5.0 and 9.0.0 each make a wallet, get it funded by the devnet's owner, then
//! `Subtensor(network=<endpoint>)`, `burned_register`, `serve_axon`,
//! `get_neuron_for_pubkey_and_subnet` and `metagraph(netuid)` — and what they read is what
//! nicompute's own client reads, including a validator staked and permitted by nicompute's
//! extrinsics. (The SDK on the real runtime: `real_runtime.rs`.)

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use bittensor::devnet::{self, ops, DevnetConfig};
use bittensor::subtensor::calls::RAO_PER_TAO;
use bittensor::subtensor::Subtensor;
use bittensor::Keypair;
use serde_json::{json, Value};

use crate::peers::{python, script, VERSIONS};

/// Runs `tests/peers/devnet_sdk.py` with `doc` on stdin; its JSON answer.
pub fn devnet_sdk(py: &Path, doc: &Value) -> Value {
    let mut child = Command::new(py)
        .arg(script("devnet_sdk.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    child.stdin.take().expect("stdin").write_all(doc.to_string().as_bytes()).expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "devnet_sdk.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_uses_the_embedded_devnet_as_it_uses_finney() {
    let pys: Vec<_> = VERSIONS.iter().map(|v| (v, python(v))).collect();
    if pys.iter().any(|(_, p)| p.is_none()) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let owner = Keypair::generate(12).expect("key");
    let cfg = DevnetConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        ..DevnetConfig::new(dir.path(), owner.account_id())
    };
    let node = devnet::spawn(cfg).await.expect("devnet");
    let chain = Subtensor::new(&node.ws_url()).expect("client");
    // A validator set up by nicompute's own extrinsics: the SDK must see its stake and permit.
    let (vcold, vhot) = (Keypair::generate(12).expect("key"), Keypair::generate(12).expect("key"));
    ops::fund(&chain, &owner, &[(vcold.account_id(), 20_000 * RAO_PER_TAO)]).await.expect("fund");
    ops::register(&chain, &vcold, &vhot.account_id(), 27).await.expect("register");
    ops::stake_to(&chain, &vcold, &vhot.account_id(), 27, 10_000 * RAO_PER_TAO as u64).await.expect("stake");

    for (i, (version, py)) in pys.iter().enumerate() {
        let py = py.as_ref().expect("checked");
        let wallets = tempfile::tempdir().expect("tmp");
        let base =
            json!({"endpoint": node.ws_url(), "netuid": 27, "wallet_path": wallets.path(), "wallet_name": "user"});
        let with = |extra: Value| {
            let mut d = base.clone();
            d.as_object_mut().expect("obj").extend(extra.as_object().expect("obj").clone());
            d
        };
        let keys = devnet_sdk(py, &with(json!({"steps": ["keys"]})));
        let cold: bittensor::AccountId = keys["coldkey"].as_str().expect("cold").parse().expect("ss58");
        ops::fund(&chain, &owner, &[(cold, 10 * RAO_PER_TAO)]).await.expect("fund the SDK's coldkey");
        let ip = format!("127.0.0.{}", 10 + i);
        let doc =
            with(json!({"steps": ["register", "serve", "neuron", "metagraph"], "axon": {"ip": ip, "port": 8091}}));
        let v = tokio::task::spawn_blocking({
            let py = py.clone();
            move || devnet_sdk(&py, &doc)
        })
        .await
        .expect("join");
        assert_eq!(v["register"]["ok"], true, "{version} burned_register: {v}");
        assert_eq!(v["serve"]["ok"], true, "{version} serve_axon: {v}");
        let hot = v["hotkey"].as_str().expect("hotkey").to_owned();
        let n = &v["neuron"];
        assert_eq!((n["is_null"].as_bool(), n["hotkey"].as_str()), (Some(false), Some(hot.as_str())), "{version}: {v}");
        assert_eq!(n["coldkey"], keys["coldkey"]);
        assert_eq!((n["axon"]["ip"].as_str(), n["axon"]["port"].as_u64()), (Some(ip.as_str()), Some(8091)));
        // The SDK's metagraph is nicompute's: same hotkeys, stake, permits and axons.
        let mg = &v["metagraph"];
        let ours = chain.metagraph(27).await.expect("our metagraph");
        let hotkeys: Vec<String> = ours.neurons.iter().map(|n| n.hotkey.clone()).collect();
        assert_eq!(mg["hotkeys"], json!(hotkeys), "{version}: {mg}");
        assert_eq!(mg["n"], json!(ours.neurons.len()));
        let s: Vec<f64> = ours.neurons.iter().map(|n| f64::from(n.stake_tao)).collect();
        assert_eq!(mg["S"], json!(s), "{version}: S");
        assert_eq!(mg["S"][0], 10_000.0, "the validator's stake");
        let permits: Vec<bool> = ours.neurons.iter().map(|n| n.validator_permit).collect();
        assert_eq!(mg["validator_permit"], json!(permits));
        assert_eq!(mg["validator_permit"][0], true);
        let me = ours.neurons.iter().position(|n| n.hotkey == hot).expect("listed");
        assert_eq!(mg["axons"][me], json!({"ip": ip, "port": 8091, "is_serving": true}));
        // Registration cost the burn and the fee, as the chain reports them.
        let left = chain.free_balance(&cold).await.expect("balance");
        assert!(left < 9 * RAO_PER_TAO && left > 8 * RAO_PER_TAO, "{version}: 10 TAO - 1 TAO burn - fee = {left}");
    }
    node.shutdown().await;
}
