//! Miners that refuse the renter's hotkey itself — SN27 v2.x's version gate and stake floor,
//! answered by the real SDK's axon as SN27 words them — are named by `list_r` after `sync` and by
//! `a_hotkey --explain`, each with the fix (`prometheus set --version 221`, `stake add`).

use bittensor::devnet::ops;

use crate::peers::{python, PyAxon};
use crate::renter_world::{json, text, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miners_refusing_our_hotkey_name_the_fix() {
    let Some(py) = python("9.0.0") else { return };
    let mut net = World::new().await;
    let renter = net.renter.ss58();
    let version_slot = net.add_miner().await;
    let stake_slot = net.add_miner().await;
    let gated = |slot: &crate::renter_world::MinerSlot, reason: &str| {
        PyAxon::start_with(&py, slot.key.mnemonic().expect("mnemonic"), std::slice::from_ref(&renter), reason)
    };
    let version_axon = gated(&version_slot, "Blacklisted a {synapse} request from a non-updated hotkey: {hotkey}");
    let stake_axon = gated(&stake_slot, "Not enough stake!");
    for (slot, axon) in [(&version_slot, &version_axon), (&stake_slot, &stake_axon)] {
        ops::serve_axon(&net.client, &slot.key, 27, "127.0.0.1".parse().expect("ip"), axon.port, 9_000_000)
            .await
            .expect("serve");
    }
    let (version_hk, stake_hk) = (version_slot.key.ss58(), stake_slot.key.ss58());

    let out = net.cli(&["sync", "--json"]).await;
    assert_eq!(json(&out)["answered"], 0, "both refused our hotkey");

    let v = json(&net.cli(&["list_r", "--json"]).await);
    let refused = v["refused_caller"].as_array().expect("list");
    let of = |hk: &str| refused.iter().find(|r| r["hotkey"] == hk).cloned().expect("listed");
    assert_eq!(of(&version_hk)["gate"], "version");
    assert!(of(&version_hk)["fix"].as_str().is_some_and(|f| f.contains("nicompute prometheus set --version 221")));
    assert_eq!(of(&stake_hk)["gate"], "stake");
    assert!(of(&stake_hk)["fix"].as_str().is_some_and(|f| f.contains("nicompute stake add")));
    let human = text(&net.cli(&["list_r"]).await.stdout);
    assert!(human.contains("refused your hotkey at the last sync (version too low)"), "{human}");

    // Allocating from the gated miner: the error leads with the fix, --explain names the gate.
    let out = net.cli(&["a_hotkey", &version_hk, "--no-ssh-key", "--explain", "--json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    let message = v["error"]["message"].as_str().expect("message");
    assert!(message.contains("version too low") && message.contains("prometheus set --version 221"), "{v}");
    let out = net.cli(&["a_hotkey", &stake_hk, "--no-ssh-key", "--explain"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("stake too low") && err.contains("stake add"), "{err}");
    drop((version_axon, stake_axon));
}
