//! `nicompute-bench keygen`: the allocation key's generation, the part of a one-shot `a` that
//! nothing else can overlap. Candidates side by side, runs interleaved so that load hits them
//! alike, RSA-2048 with e = 65537:
//! - `rsa_serial`: the `rsa` crate's `RsaPrivateKey::new` (variable-time), the first reference;
//! - `rsa_pq_threads`: its prime generator for p and q on two threads, what `a` used before;
//! - `aws_lc`: one AWS-LC generation (constant-time);
//! - `aws_lc_first_of_2`: what `a` does now, [`KeyReserve`] racing two AWS-LC generations. Each
//!   run waits for the race's loser to finish before the next starts, so no run pays for the
//!   previous one.
//! - `aws_lc_first_of_2_new_process`: the same in a process of its own, from exec to exit, as a
//!   one-shot `a` pays it: AWS-LC seeds its random generator once per process, and whatever that
//!   seeding costs shows here and not in the in-process figures.
//!
//! With `--openssl`, `openssl genrsa 2048` too (process start included), where it is installed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use compute::crypto::{AllocationKey, KeyReserve};
use num_bigint_dig::{BigUint, RandPrime as _};
use rsa::rand_core::OsRng;
use rsa::RsaPrivateKey;
use serde_json::{json, Map, Value};

/// Enough for the slowest AWS-LC draw seen here (about 200 ms) to end before the next run.
const SETTLE: Duration = Duration::from_millis(400);

pub fn run(iterations: usize, openssl: bool, once: bool) -> Result<()> {
    if once {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        drop(runtime.block_on(KeyReserve::new().take())?);
        return Ok(());
    }
    let mut out = Map::new();
    for (name, f) in measure(iterations, openssl)? {
        out.insert(
            name.into(),
            json!({"p50_ms": round1(f.p50), "p90_ms": round1(f.p90), "max_ms": round1(f.max), "mean_ms": round1(f.mean)}),
        );
    }
    out.insert("iterations".into(), json!(iterations));
    println!("{}", serde_json::to_string_pretty(&Value::Object(out))?);
    Ok(())
}

/// One candidate's times, in milliseconds.
pub struct Figures {
    pub p50: f64,
    pub p90: f64,
    pub max: f64,
    pub mean: f64,
}

/// Each candidate's figures over `iterations` interleaved runs, by name.
pub fn measure(iterations: usize, openssl: bool) -> Result<Vec<(&'static str, Figures)>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let openssl = openssl && Command::new("openssl").arg("version").stdout(Stdio::null()).status().is_ok();
    let mut names =
        vec!["rsa_serial", "rsa_pq_threads", "aws_lc", "aws_lc_first_of_2", "aws_lc_first_of_2_new_process"];
    if openssl {
        names.push("openssl_genrsa");
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(iterations); names.len()];
    for _ in 0..iterations {
        for (i, name) in names.iter().enumerate() {
            let t = Instant::now();
            match *name {
                "rsa_serial" => drop(RsaPrivateKey::new(&mut OsRng, 2048).context("rsa")?),
                "rsa_pq_threads" => drop(rsa_pq_threads()?),
                "aws_lc" => drop(AllocationKey::generate()?),
                "aws_lc_first_of_2" => drop(runtime.block_on(KeyReserve::new().take())?),
                "aws_lc_first_of_2_new_process" => keygen_process()?,
                _ => openssl_genrsa()?,
            }
            samples[i].push(t.elapsed().as_secs_f64() * 1e3);
            if name.starts_with("aws_lc_first_of_2") {
                std::thread::sleep(SETTLE);
            }
        }
    }
    Ok(names
        .into_iter()
        .zip(samples)
        .map(|(name, mut s)| {
            s.sort_by(f64::total_cmp);
            let at = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
            let mean = s.iter().sum::<f64>() / s.len() as f64;
            (name, Figures { p50: at(0.5), p90: at(0.9), max: at(1.0), mean })
        })
        .collect())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The keygen `a` used before AWS-LC: p and q at once, then `rsa` builds and checks the key.
fn rsa_pq_threads() -> Result<RsaPrivateKey> {
    loop {
        let (p, q) = std::thread::scope(|s| {
            let other = s.spawn(|| OsRng.gen_prime(1024));
            (other.join(), OsRng.gen_prime(1024))
        });
        let p = p.map_err(|_| anyhow::anyhow!("prime thread panicked"))?;
        if let Ok(key) = RsaPrivateKey::from_p_q(p, q, BigUint::from(65537u32)) {
            if rsa::traits::PublicKeyParts::n(&key).bits() == 2048 {
                return Ok(key);
            }
        }
    }
}

/// This benchmark's own binary, `keygen --once`: one key as a one-shot `a` makes it, in a new
/// process.
fn keygen_process() -> Result<()> {
    let exe = std::env::current_exe().context("the benchmark's own path")?;
    let status = Command::new(exe).args(["keygen", "--once"]).stdout(Stdio::null()).status()?;
    anyhow::ensure!(status.success(), "nicompute-bench keygen --once failed");
    Ok(())
}

fn openssl_genrsa() -> Result<()> {
    let status =
        Command::new("openssl").args(["genrsa", "2048"]).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    anyhow::ensure!(status.success(), "openssl genrsa failed");
    Ok(())
}
