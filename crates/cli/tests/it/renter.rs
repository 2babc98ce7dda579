//! The renter's commands one-shot against a devnet with two miners (local runtime): `sync`,
//! `list_r`, `a`, `list_a`, `list_ah`, `ssh`, `d`, `p_hotkey`/`dp_hotkey`/`list_p`, and
//! `reconcile` completing a deallocation that was pending while its miner was down.

use crate::renter_world::{json, keygen, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renter_commands_end_to_end_on_a_devnet() {
    let gpus = ["NVIDIA H100 80GB HBM3:81559:1", "NVIDIA GeForce RTX 4090:24564:2"];
    let mut net = World::new().await;
    let slots = [net.add_miner().await, net.add_miner().await];
    let mut miners = Vec::new();
    for (m, g) in slots.iter().zip(gpus) {
        let p = net.spawn_miner(m, "local", g).await;
        net.wait_ready(m, &p).await;
        miners.push(p);
    }
    let h100 = slots[0].key.ss58();
    let rtx = slots[1].key.ss58();

    // Before sync, `a` says what to do.
    let out = net.cli(&["a", "--gpu_type", "h100", "--gpu_size", "80", "--no-ssh-key"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nicompute sync"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = net.cli(&["sync", "--json"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json(&out)["answered"], 2);

    let out = net.cli(&["list_r", "--json"]).await;
    let v = json(&out);
    let rows = v["resources"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .any(|r| r["hotkey"] == h100.as_str() && r["gpu_name"] == "NVIDIA H100 80GB HBM3" && r["status"] == "Avail."));
    let out = net.cli(&["list_r"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUMMARY (Instances Count)") && text.contains("(simulated)"), "{text}");

    // Allocate an H100 with an injected key; the 4090 is explained as a mismatch.
    let keys = tempfile::tempdir().expect("tmp");
    let key = keygen(keys.path());
    let pubkey = key.with_extension("pub");
    let out = net
        .cli(&[
            "a",
            "--gpu_type",
            "h100",
            "--gpu_size",
            "80",
            "--ssh-key",
            pubkey.to_str().expect("utf8"),
            "--ttl",
            "1h",
            "--explain",
            "--json",
        ])
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out);
    assert_eq!(v["hotkey"], h100.as_str());
    assert_eq!(v["password"], "********", "redacted unless --show-secrets");
    assert_eq!(v["ssh_ready"], true);
    let explain = v["explain"].as_array().expect("explain");
    assert!(
        explain.iter().any(|e| e["hotkey"] == rtx.as_str() && e["verdict"].to_string().contains("mismatch")),
        "{explain:?}"
    );

    let out = net.cli(&["list_a", "--json"]).await;
    let v = json(&out);
    assert_eq!(v.as_array().map(Vec::len), Some(1));
    assert_eq!(v[0]["state"], "active");
    let out = net.cli(&["list_a", "--json", "--show-secrets"]).await;
    assert_ne!(json(&out)[0]["password"], "********");
    let out = net.cli(&["list_ah", "--json"]).await;
    assert_eq!(json(&out)["count"], 1);
    let out = net.cli(&["list_r", "--json", "--available"]).await;
    assert_eq!(json(&out)["resources"].as_array().map(Vec::len), Some(1), "the H100 is reserved now");

    // Log in and run a command with the injected key.
    let out =
        net.cli(&["ssh", &h100, "-i", key.to_str().expect("utf8"), "--", "echo", "hello-from-the-allocation"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello-from-the-allocation"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Penalties: invalid and unknown hotkeys are reported one by one, valid ones applied.
    let out = net.cli(&["p_hotkey", &format!("{rtx},not-a-hotkey"), "--json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert!(v.as_array().expect("list").iter().any(|o| o["hotkey"] == rtx.as_str() && o["result"] == "penalized"));
    assert_eq!(json(&net.cli(&["list_p", "--json"]).await)["count"], 1);
    let out = net.cli(&["a", "--gpu_type", "4090", "--gpu_size", "24", "--no-ssh-key", "--explain"]).await;
    assert_eq!(out.status.code(), Some(1), "the only 4090 is penalized");
    assert!(net.cli(&["dp_hotkey", &rtx]).await.status.success());
    assert_eq!(json(&net.cli(&["list_p", "--json"]).await)["count"], 0);

    // A miner down during `d`: pending; back up: `reconcile` completes it.
    miners.remove(0).stop();
    let out = net.cli(&["d", &h100, "-y", "--json"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)[0]["result"], "pending");
    assert_eq!(json(&net.cli(&["list_a", "--json"]).await)[0]["state"], "pending_deallocation");
    let again = net.spawn_miner(&slots[0], "local", gpus[0]).await;
    net.wait_ready(&slots[0], &again).await;
    miners.insert(0, again);
    let out = net.cli(&["reconcile", "--json"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The local runtime's machines die with their miner process, so the restarted miner may no
    // longer hold it ("already gone"); with Docker it is released. Either way the row is done.
    let result = json(&out)["allocations"][0]["result"].as_str().unwrap_or("").to_owned();
    assert!(result.starts_with("released") || result.starts_with("already gone"), "{result}");
    assert_eq!(json(&net.cli(&["list_a", "--json"]).await).as_array().map(Vec::len), Some(0));

    // Allocate the other by hotkey, then deallocate it normally.
    let out = net.cli(&["a_hotkey", &rtx, "--gpu_type", "4090", "--gpu_size", "24", "--no-ssh-key", "--json"]).await;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let out = net.cli(&["d", &rtx, "-y", "--json"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json(&out)[0]["result"], "released");

    // Usage errors: bad hotkeys before any network call; no terminal, no prompt.
    assert_eq!(net.cli(&["d", "nonsense", "-y"]).await.status.code(), Some(2));
    assert_eq!(net.cli(&["a_hotkey"]).await.status.code(), Some(2));
    assert_eq!(net.cli(&["a"]).await.status.code(), Some(2), "a missing GPU type with no terminal is a usage error");
    for m in miners {
        m.stop();
    }
    net.chain.shutdown().await;
}
