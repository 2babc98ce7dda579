//! `nicompute-bench devnet`: the embedded devnet chain as the Python SDK and nicompute use it,
//! beside the real runtime (chopsticks, the block mode `devnet up` uses).
//!
//! - Inclusion on the embedded chain: a signed transfer submitted with
//!   `author_submitAndWatchExtrinsic`, timed from submission to its `inBlock` notification
//!   (`Included.seconds`), sequentially, with a 12 s block time (target: within 100 ms).
//! - The real SDK's `burned_register` (`tests/peers/devnet_sdk.py`, the call alone, in a process
//!   already connected), one fresh wallet per run: 10.5.0 and 9.0.0 on the embedded chain, 9.0.0
//!   on the real runtime (10.5.0 cannot sign there: chopsticks lists no `account_nextIndex`)
//!   (target: no slower on the embedded chain than on the real runtime).
//!
//! Never run by the tests: timings are not assertions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bittensor::chopsticks::{self, Chopsticks, ChopsticksConfig};
use bittensor::devnet::{self, ops, DevnetConfig};
use bittensor::subtensor::calls::{self, RAO_PER_TAO};
use bittensor::subtensor::tx::TxOptions;
use bittensor::subtensor::Subtensor;
use bittensor::{AccountId, Keypair};
use serde_json::{json, Value};

/// Benchmark options.
#[derive(Debug)]
pub struct Options {
    /// Extrinsics timed for inclusion.
    pub inclusions: usize,
    /// SDK registrations per chain and version.
    pub runs: usize,
    pub peers: PathBuf,
    pub no_python: bool,
    pub no_runtime: bool,
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// One run of the SDK script; its JSON.
fn sdk(py: &Path, doc: &Value) -> Result<Value> {
    let mut child = Command::new(py)
        .arg("tests/peers/devnet_sdk.py")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", py.display()))?;
    child.stdin.take().context("stdin")?.write_all(doc.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "devnet_sdk.py: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `runs` SDK registrations on `endpoint`, each with a fresh wallet funded by `fund`; seconds each.
fn sdk_registrations(
    py: &Path,
    endpoint: &str,
    netuid: u16,
    runs: usize,
    chopsticks_quirk: bool,
    fund: &dyn Fn(AccountId) -> Result<()>,
) -> Result<Vec<f64>> {
    let mut secs = Vec::with_capacity(runs);
    for _ in 0..runs {
        let wallets = tempfile::tempdir()?;
        let base = json!({"endpoint": endpoint, "netuid": netuid, "wallet_path": wallets.path(), "wallet_name": "bench",
                          "state_call_0x": chopsticks_quirk});
        let mut keys = base.clone();
        keys["steps"] = json!(["keys"]);
        let cold: AccountId = sdk(py, &keys)?["coldkey"].as_str().context("coldkey")?.parse()?;
        fund(cold)?;
        let mut reg = base;
        reg["steps"] = json!(["register"]);
        let v = sdk(py, &reg)?;
        ensure!(v["register"]["ok"] == true, "burned_register failed: {v}");
        secs.push(v["register"]["seconds"].as_f64().context("seconds")?);
    }
    Ok(secs)
}

pub fn run(opts: &Options) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let owner = Keypair::generate(12)?;
    let cfg = DevnetConfig { bind: "127.0.0.1:0".parse()?, ..DevnetConfig::new(dir.path(), owner.account_id()) };
    let node = rt.block_on(devnet::spawn(cfg))?;
    let chain = Subtensor::new(&node.ws_url())?;

    // Inclusion latency.
    let (cold, dest) = (Keypair::generate(12)?, Keypair::generate(12)?.account_id());
    let mut inclusion = rt.block_on(async {
        ops::fund(&chain, &owner, &[(cold.account_id(), 1_000_000 * RAO_PER_TAO)]).await?;
        let opts_tx = TxOptions::default();
        let mut secs = Vec::with_capacity(opts.inclusions);
        for _ in 0..opts.inclusions {
            let p =
                chain.prepare(&calls::transfer_keep_alive(&dest, RAO_PER_TAO), &cold.account_id(), &opts_tx).await?;
            secs.push(chain.submit(&p, &cold, &opts_tx).await?.seconds);
        }
        anyhow::Ok(secs)
    })?;
    let n = inclusion.len();
    println!(
        "embedded chain, submission to inBlock ({n} transfers, 12 s block time): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        quantile(&mut inclusion, 0.5) * 1e3,
        quantile(&mut inclusion, 0.99) * 1e3,
        quantile(&mut inclusion, 1.0) * 1e3
    );
    if opts.no_python {
        return Ok(());
    }

    // The SDK's burned_register on the embedded chain.
    let embedded_fund =
        |who: AccountId| rt.block_on(ops::fund(&chain, &owner, &[(who, 10 * RAO_PER_TAO)])).map_err(Into::into);
    for version in ["10.5.0", "9.0.0"] {
        let py = opts.peers.join(format!("bt{version}/bin/python"));
        ensure!(py.exists(), "{} is missing (scripts/python-peers.sh)", py.display());
        let mut s = sdk_registrations(&py, &node.ws_url(), 27, opts.runs, false, &embedded_fund)?;
        println!(
            "bittensor {version} burned_register on the embedded chain: median {:.0} ms, max {:.0} ms ({} runs)",
            quantile(&mut s, 0.5) * 1e3,
            quantile(&mut s, 1.0) * 1e3,
            s.len()
        );
    }
    if opts.no_runtime {
        return Ok(());
    }

    // The same on the real runtime, in the block mode `devnet up --chain runtime` uses.
    let mut cs = ChopsticksConfig::in_project(Path::new("."));
    cs.block_mode = "Batch".into();
    let sticks = Chopsticks::start(&cs).context("starting the real runtime")?;
    let runtime = Subtensor::with_timeout(&sticks.ws_url(), Duration::from_secs(60))?;
    let runtime_fund =
        |who: AccountId| rt.block_on(chopsticks::fund(&runtime, &[(who, 10 * RAO_PER_TAO)])).map_err(Into::into);
    let py = opts.peers.join("bt9.0.0/bin/python");
    let mut s = sdk_registrations(&py, &sticks.ws_url(), 1, opts.runs, true, &runtime_fund)?;
    println!(
        "bittensor 9.0.0 burned_register on the real runtime (chopsticks, Batch blocks): median {:.0} ms, max {:.0} ms ({} runs)",
        quantile(&mut s, 0.5) * 1e3,
        quantile(&mut s, 1.0) * 1e3,
        s.len()
    );
    drop(sticks);
    rt.block_on(node.shutdown());
    Ok(())
}
