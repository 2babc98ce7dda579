//! The renter CLI and the subnet's shared state on wandb: `a`/`d` publish the allocated list and
//! `p_hotkey` the penalized list, signed so that Python SN27 miners accept it; a wandb failure
//! never loses a local change and is retried; `list_r` and `list_p` read the validators' union,
//! counting only runs signed by a staked validator. The hosted wandb is stood in for by a local
//! stateful endpoint (`wandb_fake`).

use bittensor::devnet::ops;
use bittensor::subtensor::Subtensor;
use bittensor::Keypair;
use serde_json::{json, Value};
use wandb::{check_run, sign_run, Run};

use crate::devnet::{list_a, Net};
use crate::renter_world::{json, text};
use crate::wandb_fake::{node, FakeWandb};

const KEY: &str = "0123456789abcdef0123456789abcdef01234567";

/// `nicompute --wandb on --wandb-base-url <fake> <args>` on the devnet, with an API key.
fn cli(net: &Net, fake: &FakeWandb, args: &[&str]) -> std::process::Output {
    net.command()
        .env("NICOMPUTE_CONFIG", net.config())
        .env("WANDB_API_KEY", KEY)
        .args(["--wandb", "on", "--wandb-base-url", &fake.url])
        .args(args)
        .output()
        .expect("run")
}

fn our_run(fake: &FakeWandb, validator: &str) -> Run {
    let runs: Vec<_> = fake
        .runs()
        .into_iter()
        .filter(|r| r.display_name.as_deref() == Some(format!("validator-{validator}").as_str()))
        .collect();
    assert_eq!(runs.len(), 1, "exactly one validator run of ours: {runs:?}");
    Run::from_node(&node(&runs[0])).expect("run")
}

fn list(run: &Run, key: &str) -> Vec<String> {
    run.config[key].as_array().expect("list").iter().map(|v| v.as_str().expect("str").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn allocations_and_penalties_are_published_signed_like_sn27() {
    let fake = FakeWandb::start().await;
    let net = Net::new();
    let st = net.up(&["--runtime", "local", "--miners", "2", "--gpus", "h100,cpu"]);
    let validator = st["validator"]["hotkey"].as_str().expect("hk").to_owned();

    let o = cli(&net, &fake, &["--json", "a", "--gpu_type", "h100", "--gpu_size", "80"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let hk = json(&o)["hotkey"].as_str().expect("hotkey").to_owned();

    let run = our_run(&fake, &validator);
    assert_eq!(list(&run, "allocated_hotkeys"), vec![hk.clone()]);
    assert_eq!(run.config["hotkey"], json!(validator));
    assert_eq!(run.config["role"], "validator");
    assert_eq!(run.config["config"]["netuid"], 27);
    assert_eq!(run.config["version"], 183);
    let signer = check_run(&run).expect("the signature verifies as SN27's verify_run checks it");
    assert_eq!(signer.to_ss58(), validator);
    // The run id is kept where SN27 keeps it, so the next publication updates the same run.
    let o = cli(&net, &fake, &["--json", "wandb", "status"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let status = json(&o);
    assert_eq!(status["enabled"], true);
    assert_eq!(status["stored_run_id"], json!(run.id));
    assert_eq!(status["run"]["signature"], "valid");
    assert_eq!(status["run"]["in_sync"], true);
    assert_eq!(status["publications"][0]["pending"], false);
    assert_eq!(status["api_key_from"], "WANDB_API_KEY");
    assert!(!text(&o.stdout).contains(KEY) && !text(&o.stderr).contains(KEY), "the API key is never printed");

    // Penalizing publishes the penalized list into the same run, keeping the allocated one.
    let cpu = net.miner(&st, "miner-1")["hotkey"].as_str().expect("hk").to_owned();
    let o = cli(&net, &fake, &["p_hotkey", &cpu]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("wandb: published the penalized list (1 hotkeys)"), "{}", text(&o.stderr));
    let run = our_run(&fake, &validator);
    assert_eq!(list(&run, "penalized_hotkeys"), vec![cpu.clone()]);
    assert_eq!(list(&run, "allocated_hotkeys"), vec![hk.clone()]);
    assert!(check_run(&run).is_ok());

    let o = cli(&net, &fake, &["d", &hk]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let run = our_run(&fake, &validator);
    assert!(list(&run, "allocated_hotkeys").is_empty(), "after d the run lists nothing");
    assert!(check_run(&run).is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wandb_failure_keeps_the_allocation_and_is_retried_by_reconcile() {
    let fake = FakeWandb::start().await;
    let net = Net::new();
    let st = net.up(&["--runtime", "local", "--miners", "1", "--gpus", "h100"]);
    let validator = st["validator"]["hotkey"].as_str().expect("hk").to_owned();
    fake.refuse.store(true, std::sync::atomic::Ordering::SeqCst);

    let o = cli(&net, &fake, &["--json", "a", "--gpu_type", "h100", "--gpu_size", "80"]);
    assert!(o.status.success(), "the allocation succeeds although wandb refuses: {}", text(&o.stderr));
    let hk = json(&o)["hotkey"].as_str().expect("hk").to_owned();
    assert!(text(&o.stderr).contains("not published yet"), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("rejected the wandb API key"), "{}", text(&o.stderr));
    assert_eq!(list_a(&net).len(), 1, "the local record is intact");
    let status = json(&cli(&net, &fake, &["--json", "wandb", "status"]));
    assert_eq!(status["publications"][0]["list"], "allocated");
    assert_eq!(status["publications"][0]["pending"], true);
    assert!(fake.runs().is_empty());

    fake.refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    let o = cli(&net, &fake, &["reconcile"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("wandb: published the allocated list"), "{}", text(&o.stderr));
    assert_eq!(list(&our_run(&fake, &validator), "allocated_hotkeys"), vec![hk]);
    let status = json(&cli(&net, &fake, &["--json", "wandb", "status"]));
    assert_eq!(status["publications"][0]["pending"], false);

    // Without an API key the change is kept pending, with a warning of what it means.
    let miner = net.miner(&st, "miner-0")["hotkey"].as_str().expect("hk").to_owned();
    let o = net
        .command()
        .env("NICOMPUTE_CONFIG", net.config())
        .args(["--wandb", "on", "--wandb-base-url", &fake.url, "p_hotkey", &miner])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("no wandb API key") && err.contains("Python SN27 miners end allocations"), "{err}");
    let status = json(&cli(&net, &fake, &["--json", "wandb", "status"]));
    assert_eq!(status["publications"][1]["list"], "penalized");
    assert_eq!(status["publications"][1]["pending"], true);
    let o = cli(&net, &fake, &["reconcile"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(list(&our_run(&fake, &validator), "penalized_hotkeys"), vec![miner]);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_r_and_list_p_count_only_runs_signed_by_staked_validators() {
    let fake = FakeWandb::start().await;
    let net = Net::new();
    let st = net.up(&["--runtime", "local", "--miners", "4", "--gpus", "h100,a100,4090,cpu"]);
    let miner = |n: &str| net.miner(&st, n)["hotkey"].as_str().expect("hk").to_owned();
    let (m0, m1, m2, m3) = (miner("miner-0"), miner("miner-1"), miner("miner-2"), miner("miner-3"));

    // Another validator with stake, and a registered hotkey without.
    let chain = Subtensor::new(st["chain"].as_str().expect("ws")).expect("client");
    let staked = Keypair::generate(12).expect("k");
    let unstaked = Keypair::generate(12).expect("k");
    let cold = Keypair::generate(12).expect("k");
    let o = net.run(&["devnet", "fund", "--dir", &net.dir(), "--ss58", &cold.ss58(), "--amount", "5000"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for k in [&staked, &unstaked] {
        ops::register(&chain, &cold, &k.account_id(), 27).await.expect("register");
    }
    ops::stake_to(&chain, &cold, &staked.account_id(), 27, 2_000_000_000_000).await.expect("stake");

    let run_config = |signer: &Keypair, signature: Option<String>, allocated: &[&str], penalized: &[&str]| {
        let mut c = json!({
            "hotkey": signer.ss58(), "role": "validator", "config": {"netuid": 27}, "version": 183,
            "allocated_hotkeys": allocated, "penalized_hotkeys": penalized, "stats": {"0": {"score": 1}},
        });
        if let Some(s) = signature {
            c["signature"] = Value::from(s);
        }
        c
    };
    let name = |k: &Keypair| format!("validator-{}", k.ss58());
    fake.insert("good0001", &name(&staked), run_config(&staked, Some(sign_run("good0001", &staked)), &[&m1], &[&m3]));
    // Forged: a signature of another run id; unsigned; signed by a hotkey without stake.
    fake.insert("forged01", &name(&staked), run_config(&staked, Some(sign_run("good0001", &staked)), &[&m2], &[&m2]));
    fake.insert("unsign01", &name(&staked), run_config(&staked, None, &[&m2], &[&m2]));
    fake.insert(
        "nostake1",
        &name(&unstaked),
        run_config(&unstaked, Some(sign_run("nostake1", &unstaked)), &[&m2], &[&m2]),
    );

    let o = cli(&net, &fake, &["--json", "list_r"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let doc = json(&o);
    assert_eq!(doc["status_from"], "local+wandb (1 validator runs)");
    let status = |hk: &str| -> String {
        doc["resources"].as_array().expect("rows").iter().find(|r| r["hotkey"] == hk).expect("row")["status"]
            .as_str()
            .expect("status")
            .to_owned()
    };
    assert_eq!(status(&m1), "Res.", "allocated by a staked validator's signed run");
    assert_eq!(status(&m2), "Avail.", "forged, unsigned and unstaked runs do not count");
    assert_eq!(status(&m0), "Avail.");

    let o = cli(&net, &fake, &["--json", "list_p"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let doc = json(&o);
    assert_eq!(doc["penalized"], json!([m3]));
    assert_eq!(doc["rows"][0]["source"], "wandb");
    assert_eq!(doc["wandb_runs"], 1);

    // Without wandb (the devnet default), the local database alone.
    let o = net.cli(&["--json", "list_r"]);
    assert_eq!(json(&o)["status_from"], "local");
}
