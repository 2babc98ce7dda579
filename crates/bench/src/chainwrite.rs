//! `nicompute-bench chainwrite`: chain writes on the real Subtensor runtime (chopsticks, Instant
//! blocks), beside the real Python SDK 9.0.0 on the same chain.
//!
//! - `nicompute subnet register -y` and `nicompute axon set -y`, each a whole process (cold start,
//!   connect, metadata, nonce, era, sign, submit, wait for inclusion, events), one fresh wallet per
//!   run; the chain's own part is the command's `included.seconds` (submission to the block
//!   that includes it), so the rest is nicompute's overhead (target: at most 50 ms).
//! - The SDK's `burned_register` and `serve_extrinsic` (`tests/peers/bench_chainwrite.py`), each
//!   call in a warm process (already connected), one fresh wallet per call.
//! - Cold start of `nicompute wallet balance --ss58`: the process, against the same RPC calls
//!   made from a warm process over a new connection (target: under 50 ms more).
//!
//! Never run by the tests: timings are not assertions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bittensor::chopsticks::{self, Chopsticks, ChopsticksConfig};
use bittensor::subtensor::calls::RAO_PER_TAO;
use bittensor::subtensor::rpc::{Transport, WsTransport};
use bittensor::wallet::Wallet;
use bittensor::Keypair;
use serde_json::{json, Value};

/// Benchmark options.
#[derive(Debug)]
pub struct Options {
    /// Registrations and serves per side.
    pub runs: usize,
    /// `wallet balance` cold starts.
    pub balance_runs: usize,
    pub peers: PathBuf,
    pub no_python: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn nicompute_bin() -> PathBuf {
    PathBuf::from("target/release/nicompute")
}

/// Runs `nicompute` with the chain and wallet flags; (wall seconds, JSON).
fn timed(endpoint: &str, wallets: &Path, name: &str, args: &[&str]) -> Result<(f64, Value)> {
    let t = Instant::now();
    let out = Command::new(nicompute_bin())
        .args(["--subtensor.chain_endpoint", endpoint, "--netuid", "1", "--json"])
        .arg("--wallet.path")
        .arg(wallets)
        .args(["--wallet.name", name])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running target/release/nicompute")?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "nicompute {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((secs, serde_json::from_slice(&out.stdout)?))
}

pub fn run(o: &Options) -> Result<()> {
    let root = std::env::current_dir()?;
    let cfg = ChopsticksConfig::in_project(&root);
    cfg.installed()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let node = Chopsticks::start(&cfg)?;
    let endpoint = node.ws_url();
    println!("chopsticks (spec 218, Instant blocks): RPC up with block 1 in {:.2} s", node.startup_seconds);
    let chain = bittensor::subtensor::Subtensor::with_timeout(&endpoint, Duration::from_secs(60))?;

    // Fresh wallets, funded: ours on disk (coldkey unencrypted: throwaway), the SDK's as mnemonics.
    let dir = tempfile::tempdir()?;
    let mut funds = Vec::new();
    for i in 0..o.runs {
        let w = Wallet::new(dir.path(), format!("w{i}"), "default");
        let created = w.create(12, None)?;
        funds.push((created.coldkey.context("coldkey")?.account_id(), 1_000 * RAO_PER_TAO));
    }
    let python: Vec<(Keypair, Keypair)> =
        (0..o.runs).map(|_| Ok((Keypair::generate(12)?, Keypair::generate(12)?))).collect::<Result<_>>()?;
    funds.extend(python.iter().map(|(c, _)| (c.account_id(), 1_000 * RAO_PER_TAO)));
    rt.block_on(chopsticks::fund(&chain, &funds))?;

    // Ours: register then serve, one process each.
    let (mut reg, mut reg_chain, mut serve, mut serve_chain) = (vec![], vec![], vec![], vec![]);
    for i in 0..o.runs {
        let (secs, v) = timed(&endpoint, dir.path(), &format!("w{i}"), &["subnet", "register", "-y"])?;
        ensure!(v["ok"] == true, "register: {v}");
        reg.push(secs);
        reg_chain.push(v["included"]["seconds"].as_f64().unwrap_or(f64::NAN));
    }
    for i in 0..o.runs {
        let port = (9000 + i).to_string();
        let (secs, v) = timed(
            &endpoint,
            dir.path(),
            &format!("w{i}"),
            &["axon", "set", "--ip", "127.0.0.2", "--port", &port, "-y"],
        )?;
        ensure!(v["ok"] == true, "axon set: {v}");
        serve.push(secs);
        serve_chain.push(v["included"]["seconds"].as_f64().unwrap_or(f64::NAN));
    }
    let over = |all: &[f64], chain: &[f64]| median(all.iter().zip(chain).map(|(a, c)| a - c).collect());
    println!(
        "nicompute subnet register (process, end to end): median {:.0} ms; the chain's block {:.0} ms; nicompute's share {:.0} ms  ({} runs)",
        median(reg.clone()) * 1e3,
        median(reg_chain.clone()) * 1e3,
        over(&reg, &reg_chain) * 1e3,
        o.runs
    );
    println!(
        "nicompute axon set        (process, end to end): median {:.0} ms; the chain's block {:.0} ms; nicompute's share {:.0} ms  ({} runs)",
        median(serve.clone()) * 1e3,
        median(serve_chain.clone()) * 1e3,
        over(&serve, &serve_chain) * 1e3,
        o.runs
    );

    if !o.no_python {
        let py = o.peers.join("bt9.0.0/bin/python");
        ensure!(py.exists(), "no Python peer at {} (scripts/python-peers.sh)", py.display());
        let doc = json!({
            "endpoint": endpoint, "netuid": 1, "ip": "127.0.0.2", "port": 9500,
            "wallets": python.iter().map(|(c, h)| json!({
                "coldkey_mnemonic": c.mnemonic(), "hotkey_mnemonic": h.mnemonic()})).collect::<Vec<_>>(),
        });
        let mut child = Command::new(&py)
            .arg("tests/peers/bench_chainwrite.py")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        child.stdin.take().context("stdin")?.write_all(doc.to_string().as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(out.status.success(), "bench_chainwrite.py failed");
        let v: Value = serde_json::from_slice(&out.stdout)?;
        let list = |k: &str| -> Vec<f64> {
            v[k].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
        };
        let all_ok = |k: &str| v[k].as_array().is_some_and(|a| a.iter().all(|x| x == true));
        println!(
            "Python SDK 9.0.0 burned_register (call in a warm process): median {:.0} ms ({} runs, all ok: {}); import {:.2} s, connect {:.2} s",
            median(list("register_s")) * 1e3,
            o.runs,
            all_ok("register_ok"),
            v["import_s"].as_f64().unwrap_or(f64::NAN),
            v["connect_s"].as_f64().unwrap_or(f64::NAN)
        );
        println!(
            "Python SDK 9.0.0 serve_axon      (call in a warm process): median {:.0} ms ({} runs, all ok: {})",
            median(list("serve_s")) * 1e3,
            o.runs,
            all_ok("serve_ok")
        );
    }

    // Cold start of `wallet balance` against the RPC calls it makes.
    let who = funds[0].0.to_ss58();
    let mut wall = Vec::new();
    for _ in 0..o.balance_runs + 2 {
        let t = Instant::now();
        let out = Command::new(nicompute_bin())
            .args(["--subtensor.chain_endpoint", &endpoint, "wallet", "balance", "--ss58", &who, "--json"])
            .stdin(Stdio::null())
            .output()?;
        ensure!(out.status.success(), "wallet balance failed");
        wall.push(t.elapsed().as_secs_f64());
    }
    let wall = wall.split_off(2);
    let key = rt.block_on(async {
        let md = chain.runtime().await?.metadata;
        let key = bittensor::extrinsic::storage::key(
            &md,
            "System",
            "Account",
            &[bittensor::extrinsic::call::account(&funds[0].0)],
        )?;
        Ok::<_, anyhow::Error>(format!("0x{}", hex_of(&key)))
    })?;
    let mut rpc = Vec::new();
    for _ in 0..o.balance_runs {
        let t = Instant::now();
        rt.block_on(async {
            // What the command asks, in its order, over a new connection.
            let ws = WsTransport::new(&endpoint, Duration::from_secs(30));
            let (a, b) = tokio::join!(
                ws.request("state_getRuntimeVersion", json!([null])),
                ws.request("chain_getBlockHash", json!([0]))
            );
            a?;
            b?;
            ws.request("state_getMetadata", json!([])).await?;
            ws.request("state_getStorage", json!([key, null])).await?;
            Ok::<_, anyhow::Error>(())
        })?;
        rpc.push(t.elapsed().as_secs_f64());
    }
    println!(
        "nicompute wallet balance (process, cold): median {:.1} ms; its RPC calls alone (new connection) {:.1} ms; the rest {:.1} ms  ({} runs)",
        median(wall.clone()) * 1e3,
        median(rpc.clone()) * 1e3,
        (median(wall) - median(rpc)) * 1e3,
        o.balance_runs
    );
    drop(node);
    Ok(())
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
