//! `nicompute-bench web`: the dashboard against the targets, in Debian's chromium
//! (headless, driven by `tests/browser/bench.mjs` through playwright-core).
//!
//! A database of 1,024 miners over eight GPU models (specs reported over the last 17 hours),
//! `nicompute serve` (release build) on it, and a token. Then, measured in the browser with
//! performance marks (`machines:first-render`: the rows painted, the frame after the one that
//! drew them), from the navigation's start:
//! 1. first render of the Machines page, cold: a new browser context each run (empty HTTP
//!    cache), the token already in the tab's session (target: under 300 ms);
//! 2. the same on reload (the files revalidated with 304);
//! 3. all 1,000 rows of a page: from choosing "1000 per page" to the rows painted;
//! 4. the page's files as they crossed the wire (gzip), from the cold run's resource timings
//!    (target: under 200 KB).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};
use bittensor::wallet::Wallet;
use bittensor::{Clock, Keypair};
use compute::db::ComputeDb;
use compute::specs::DetectOptions;
use serde_json::Value;

const MINERS: usize = 1024;
const MODELS: [&str; 8] = [
    "NVIDIA H100 80GB HBM3:81559:8",
    "NVIDIA H100 80GB HBM3:81559:1",
    "NVIDIA A100-SXM4-80GB:81920:8",
    "NVIDIA A100-SXM4-40GB:40960:4",
    "NVIDIA GeForce RTX 4090:24564:2",
    "NVIDIA GeForce RTX 3090:24576:1",
    "NVIDIA L40S:46068:4",
    "NVIDIA RTX A6000:49140:2",
];

pub struct Options {
    pub runs: usize,
}

pub fn run(opts: &Options) -> Result<()> {
    let bin = crate::nicompute_bin()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("tests/browser/bench.mjs");
    ensure!(
        root.join("tests/browser/node_modules/playwright-core/package.json").is_file(),
        "playwright-core is not installed: run scripts/browser-up.sh"
    );
    let dir = tempfile::Builder::new().prefix("nicompute-bench-web-").tempdir()?;
    let wallets = dir.path().join("wallets");
    Wallet::new(&wallets, "bench", "default").write_hotkey(&Keypair::generate(12)?)?;
    let db_path = dir.path().join("web.db");
    let db = ComputeDb::open(&db_path)?;
    let specs = MODELS
        .iter()
        .map(|m| {
            let gpu: compute::specs::SimulatedGpu = m.parse()?;
            let o =
                DetectOptions { disk_path: dir.path().to_owned(), simulate_gpu: Some(gpu), ..DetectOptions::default() };
            Ok(compute::specs::detect_blocking(&o).to_json_string())
        })
        .collect::<Result<Vec<String>>>()?;
    let now = Clock::system().now_ms();
    for i in 0..MINERS {
        // Reported over the last 17 hours, a minute apart.
        db.upsert_specs(&crate::renter::hotkey(i as u32)?, &specs[i % specs.len()], now - i as u64 * 60_000)?;
    }
    let (token, hash) = api::new_token();
    db.create_token("bench", "read", &hash)?;
    drop(db);
    let serve =
        crate::api::spawn_serve(&bin, None, &crate::api::base_args(&db_path, &wallets, "ws://127.0.0.1:9"), &[])?;
    let out = Command::new("node")
        .arg(&script)
        .current_dir(script.parent().context("script dir")?)
        .env("NICOMPUTE_URL", format!("http://{}/", serve.addr))
        .env("NICOMPUTE_TOKEN", &token)
        .env("NICOMPUTE_RUNS", opts.runs.to_string())
        .stderr(Stdio::inherit())
        .output()
        .context("running node (scripts/browser-up.sh installs what it needs)")?;
    ensure!(out.status.success(), "tests/browser/bench.mjs failed: {}", String::from_utf8_lossy(&out.stdout));
    let r: Value = serde_json::from_slice(&out.stdout).context("the script's report")?;
    let f = |k: &str, p: &str| r[k][p].as_f64().unwrap_or(f64::NAN);
    println!(
        "web/machines: first render over {MINERS} miners (the first page of 50 rows, the chart, the filters), cold cache, {} runs: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms (target: < 300 ms)",
        opts.runs,
        f("cold", "p50"),
        f("cold", "p90"),
        f("cold", "max")
    );
    let ph = |k: &str| r["phases"][k].as_f64().unwrap_or(f64::NAN);
    println!(
        "web/machines: where a cold first render's time goes (p50 of each step's end, from the navigation's start): HTML {:.0} ms, scripts run {:.0} ms, /v1/me {:.0} ms, the lists {:.0} ms, view shown {:.0} ms, DOM built {:.0} ms, painted {:.0} ms",
        ph("html"),
        ph("scripts"),
        ph("me"),
        ph("lists"),
        ph("view"),
        ph("rendered"),
        ph("painted")
    );
    println!(
        "web/machines: the same on reload (files revalidated, 304): p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        f("warm", "p50"),
        f("warm", "p90"),
        f("warm", "max")
    );
    println!(
        "web/machines: 1,000 rows per page, from choosing it to the rows painted: p50 {:.0} ms, max {:.0} ms",
        f("thousand", "p50"),
        f("thousand", "max")
    );
    println!(
        "web/assets: {} files, {:.1} KB on the wire (gzip), {:.1} KB uncompressed (target: < 200 KB compressed)",
        r["assets"]["files"],
        r["assets"]["transfer_bytes"].as_f64().unwrap_or(f64::NAN) / 1024.0,
        r["assets"]["decoded_bytes"].as_f64().unwrap_or(f64::NAN) / 1024.0
    );
    println!("web/browser: {}", r["browser"].as_str().unwrap_or("?"));
    Ok(())
}
