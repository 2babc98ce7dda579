//! The renter's commands one-shot against a devnet with two miners (local runtime): `sync`,
//! `list_r`, `a`, `list_a`, `list_ah`, `ssh`, `d`, `p_hotkey`/`dp_hotkey`/`list_p`, and
//! `reconcile` completing a deallocation that was pending while its miner was down.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bittensor::dendrite::{AxonTarget, Dendrite};
use bittensor::devnet::{self, ops, DevnetConfig};
use bittensor::subtensor::Subtensor;
use bittensor::wallet::Wallet;
use bittensor::Keypair;
use compute::protocol::Specs;
use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

struct Net {
    chain: devnet::DevnetHandle,
    wallets: tempfile::TempDir,
    db: tempfile::TempDir,
    home: tempfile::TempDir,
    miners: Vec<(Keypair, u16, u16, tempfile::TempDir)>,
    renter: Keypair,
}

impl Net {
    async fn new(gpus: &[&str]) -> Net {
        let chain_dir = tempfile::tempdir().expect("tmp");
        let chain = devnet::spawn(DevnetConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            block_time: Duration::from_secs(1),
            ..DevnetConfig::new(chain_dir.keep())
        })
        .await
        .expect("devnet");
        let client = Subtensor::new(&chain.ws_url()).expect("client");
        let cold = Keypair::generate(12).expect("k").account_id();
        let renter = Keypair::generate(12).expect("k");
        ops::register(&client, &renter, &cold, 27).await.expect("register renter");
        ops::set_stake(&client, &renter, 27, 5_000_000_000_000, 0).await.expect("stake");
        let wallets = tempfile::tempdir().expect("tmp");
        Wallet::new(wallets.path(), "renter", "default").write_hotkey(&renter).expect("wallet");
        let mut miners = Vec::new();
        for (i, _) in gpus.iter().enumerate() {
            let k = Keypair::generate(12).expect("k");
            ops::register(&client, &k, &cold, 27).await.expect("register miner");
            Wallet::new(wallets.path(), format!("miner{i}"), "default").write_hotkey(&k).expect("wallet");
            miners.push((k, free_port(), free_port(), tempfile::tempdir().expect("tmp")));
        }
        Net {
            chain,
            wallets,
            db: tempfile::tempdir().expect("tmp"),
            home: tempfile::tempdir().expect("tmp"),
            miners,
            renter,
        }
    }

    fn spawn_miner(&self, i: usize, gpu: &str) -> Child {
        let (_, axon, ssh, state) = &self.miners[i];
        let mut c = Command::new(env!("CARGO_BIN_EXE_nicompute"));
        c.args(["miner", "run", "--runtime", "local", "--min-stake", "0", "--metagraph-refresh", "1s"])
            .args(["--subtensor.chain_endpoint", &self.chain.ws_url()])
            .arg("--wallet.path")
            .arg(self.wallets.path())
            .args(["--wallet.name", &format!("miner{i}")])
            .args(["--axon.ip", "127.0.0.1", "--axon.port", &axon.to_string()])
            .args(["--ssh.port", &ssh.to_string(), "--ssh.bind_ip", "127.0.0.1"])
            .arg("--state-dir")
            .arg(state.path());
        if !gpu.is_empty() {
            c.args(["--simulate-gpu", gpu]);
        }
        c.stdout(Stdio::null()).stderr(Stdio::null()).stdin(Stdio::null()).spawn().expect("miner")
    }

    async fn wait_ready(&self, i: usize) {
        let (k, axon, _, _) = &self.miners[i];
        let target = AxonTarget::new("127.0.0.1", *axon, &k.account_id());
        let d = Dendrite::new(self.renter.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.call(&target, Specs::default(), Duration::from_secs(2)).await.is_success() {
            assert!(Instant::now() < deadline, "miner {i} did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the CLI one-shot (off the async runtime) with this network's flags.
    async fn cli(&self, args: &[&str]) -> Output {
        let mut full: Vec<String> =
            vec!["--subtensor.chain_endpoint".into(), self.chain.ws_url(), "--netuid".into(), "27".into()];
        full.extend([
            "--wallet.path".into(),
            self.wallets.path().display().to_string(),
            "--wallet.name".into(),
            "renter".into(),
        ]);
        full.extend(["--db".into(), self.db.path().join("database.db").display().to_string()]);
        full.extend(args.iter().map(|s| (*s).to_owned()));
        let home = self.home.path().to_owned();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_nicompute"))
                .args(&full)
                .env("HOME", &home)
                .env_remove("NICOMPUTE_DB")
                .stdin(Stdio::null())
                .output()
                .expect("run")
        })
        .await
        .expect("join")
    }
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stop(mut c: Child) {
    let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
    let _ = c.wait();
}

fn keygen(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renter_commands_end_to_end_on_a_devnet() {
    let gpus = ["NVIDIA H100 80GB HBM3:81559:1", "NVIDIA GeForce RTX 4090:24564:2"];
    let net = Net::new(&gpus).await;
    let mut miners: Vec<Child> = gpus.iter().enumerate().map(|(i, g)| net.spawn_miner(i, g)).collect();
    for i in 0..gpus.len() {
        net.wait_ready(i).await;
    }
    let h100 = net.miners[0].0.ss58();
    let rtx = net.miners[1].0.ss58();

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
    stop(miners.remove(0));
    let out = net.cli(&["d", &h100, "-y", "--json"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)[0]["result"], "pending");
    assert_eq!(json(&net.cli(&["list_a", "--json"]).await)[0]["state"], "pending_deallocation");
    miners.insert(0, net.spawn_miner(0, gpus[0]));
    net.wait_ready(0).await;
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
        stop(m);
    }
    net.chain.shutdown().await;
}
