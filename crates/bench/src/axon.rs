//! `nicompute-bench axon`: the clean comparison with the Python axons and the guard (the same
//! load while each attack of [`crate::attack`] runs), with the server's peak RSS, requests per
//! server CPU-second and the verification ceiling on the server's core.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bittensor::Keypair;
use serde_json::{json, Value};

use crate::{attack, cold_start, pinned, run_load_on, start_server, Server, AXON_MNEMONIC};

pub struct AxonOptions {
    pub peers: PathBuf,
    pub duration: f64,
    pub warmup: f64,
    pub concurrency: usize,
    pub no_python: bool,
    pub attacks: Vec<attack::Kind>,
}

/// Resident memory of a process, bytes (0 once it is gone).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The CPUs the attacker runs on: two cores of its own where the machine has them, else the
/// load generator's core (said in the output).
fn attack_cpus() -> &'static str {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 4 {
        "2-3"
    } else {
        "1"
    }
}

/// A running attack; dropping it (stdin closed) ends it.
struct Attacker {
    child: Child,
}

impl Attacker {
    fn start(me: &Path, port: u16, hotkey: &str, kind: attack::Kind) -> Result<Self> {
        let mut c = pinned(attack_cpus(), me);
        c.args(["attack", "--addr", &format!("127.0.0.1:{port}"), "--axon-hotkey", hotkey, "--kind", kind.name()]);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = c.spawn().context("starting the attacker")?;
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().context("stdout")?).read_line(&mut line)?;
        if line.trim() != "ATTACKING" {
            bail!("the attacker did not start (said {line:?})");
        }
        Ok(Self { child })
    }

    /// Ends the attack and returns its counts.
    fn stop(mut self) -> Result<Value> {
        drop(self.child.stdin.take());
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut stdout, &mut out)?;
        }
        let _ = self.child.wait();
        Ok(serde_json::from_str(out.trim()).unwrap_or(Value::Null))
    }
}

/// The load against a server, with its peak RSS sampled every 50 ms.
fn measured(server: &Server, me: &Path, hotkey: &str, o: &AxonOptions, concurrency: usize) -> Result<Value> {
    let pid = server.child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let done = done.clone();
        move || {
            let mut peak = rss(pid);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        }
    });
    let r = run_load_on(server, me, hotkey, concurrency, o.warmup, o.duration);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    let mut r = r?;
    r["server_peak_rss_mib"] = json!(peak as f64 / (1024.0 * 1024.0));
    Ok(r)
}

/// Clean, then under each attack: one row per measurement.
fn under_attacks(
    rows: &mut Vec<(String, String, Value)>,
    name: &str,
    server: &Server,
    me: &Path,
    hotkey: &str,
    o: &AxonOptions,
) -> Result<()> {
    rows.push((name.to_owned(), "none".into(), measured(server, me, hotkey, o, o.concurrency)?));
    for &kind in &o.attacks {
        eprintln!("bench: {name} under attack '{}'", kind.name());
        let attacker = Attacker::start(me, server.port, hotkey, kind)?;
        // Let the attack reach its full strength before the load's warm-up starts.
        std::thread::sleep(Duration::from_secs(2));
        let r = measured(server, me, hotkey, o, o.concurrency);
        let counts = attacker.stop()?;
        let mut r = r?;
        r["attack"] = counts;
        rows.push((name.to_owned(), kind.name().to_owned(), r));
    }
    Ok(())
}

pub fn suite(o: &AxonOptions) -> Result<()> {
    let me = std::env::current_exe()?;
    let hotkey = Keypair::from_mnemonic(AXON_MNEMONIC)?.ss58();
    let mut rows: Vec<(String, String, Value)> = Vec::new();
    eprintln!(
        "bench: {} in flight, {} s warm-up + {} s measured, axon on CPU 0, load on CPU 1, attacks on CPU {}",
        o.concurrency,
        o.warmup,
        o.duration,
        attack_cpus()
    );
    let serve = |bare: bool| -> Result<Server> {
        let mut c = pinned("0", &me);
        c.arg("serve-axon");
        if bare {
            c.arg("--bare");
        }
        start_server(c, None)
    };

    {
        let server = serve(true)?;
        eprintln!("bench: nicompute axon (bare) on port {}", server.port);
        rows.push(("nicompute axon, bare".into(), "none".into(), measured(&server, &me, &hotkey, o, o.concurrency)?));
        eprintln!("bench: single-request round trip (concurrency 1)");
        rows.push((
            "nicompute axon, 1 in flight".into(),
            "none".into(),
            run_load_on(&server, &me, &hotkey, 1, 1.0, 5.0)?,
        ));
    }
    {
        let server = serve(false)?;
        eprintln!("bench: nicompute axon (miner configuration) on port {}", server.port);
        under_attacks(&mut rows, "nicompute axon", &server, &me, &hotkey, o)?;
    }
    if !o.no_python {
        let script = Path::new("tests/peers/axon.py");
        for version in ["9.0.0", "10.5.0"] {
            let python = o.peers.join(format!("bt{version}")).join("bin/python");
            if !python.exists() {
                bail!("no Python peer at {} (run scripts/python-peers.sh)", python.display());
            }
            let mut c = pinned("0", &python);
            c.arg(script);
            let denied = [attack::stranger().ss58()];
            let server =
                start_server(c, Some(json!({"hotkey_mnemonic": AXON_MNEMONIC, "port": 0, "denied_hotkeys": denied})))?;
            let name = format!("python bittensor {version} axon");
            eprintln!("bench: {name} on port {}", server.port);
            if version == "10.5.0" {
                under_attacks(&mut rows, &name, &server, &me, &hotkey, o)?;
            } else {
                rows.push((name, "none".into(), measured(&server, &me, &hotkey, o, o.concurrency)?));
            }
        }
    }

    let (ceiling, ceiling_cpu) = {
        let out = pinned("0", &me).arg("verify-ceiling").output().context("verify-ceiling")?;
        let v = serde_json::from_slice::<Value>(&out.stdout)?;
        (
            v["verifications_per_s"].as_f64().unwrap_or(f64::NAN),
            v["verifications_per_cpu_s"].as_f64().unwrap_or(f64::NAN),
        )
    };
    let clean = |server: &str| {
        rows.iter().find(|(n, a, _)| n == server && a == "none").and_then(|(_, _, r)| r["req_per_s"].as_f64())
    };
    println!(
        "{:<30} {:<13} {:>9} {:>9} {:>10} {:>8} {:>8} {:>7} {:>7} {:>9}",
        "server", "attack", "req/s", "of clean", "req/CPU-s", "p50 ms", "p99 ms", "errors", "CPU", "peak RSS"
    );
    let per_cpu =
        |r: &Value| r["req_per_s"].as_f64().unwrap_or(f64::NAN) / r["server_cpu_busy"].as_f64().unwrap_or(f64::NAN);
    for (name, attack, r) in &rows {
        let rps = r["req_per_s"].as_f64().unwrap_or(f64::NAN);
        let share = clean(name).map_or(String::from("-"), |c| format!("{:.0}%", 100.0 * rps / c));
        println!(
            "{:<30} {:<13} {:>9.1} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>7} {:>6.0}% {:>6.1} MiB",
            name,
            attack,
            rps,
            share,
            per_cpu(r),
            r["p50_ms"].as_f64().unwrap_or(f64::NAN),
            r["p99_ms"].as_f64().unwrap_or(f64::NAN),
            r["errors"],
            r["server_cpu_busy"].as_f64().unwrap_or(f64::NAN) * 100.0,
            r["server_peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!("sr25519 verification ceiling on CPU 0: {ceiling:.0} verifications/s, {ceiling_cpu:.0} per CPU-second");
    for (label, server) in [("miner configuration", "nicompute axon"), ("bare", "nicompute axon, bare")] {
        let Some((_, _, r)) = rows.iter().find(|(n, a, _)| n == server && a == "none") else { continue };
        let rps = r["req_per_s"].as_f64().unwrap_or(f64::NAN);
        println!(
            "nicompute axon ({label}), clean: {:.0}% of the ceiling by wall clock, {:.0}% per CPU-second (target 60%)",
            100.0 * rps / ceiling,
            100.0 * per_cpu(r) / ceiling_cpu
        );
    }
    for server in ["nicompute axon", "python bittensor 10.5.0 axon"] {
        let Some((_, _, clean_row)) = rows.iter().find(|(n, a, _)| n == server && a == "none") else { continue };
        let (c, c_cpu) = (clean_row["req_per_s"].as_f64().unwrap_or(f64::NAN), per_cpu(clean_row));
        let attacked: Vec<_> = rows.iter().filter(|(n, a, _)| n == server && a != "none").collect();
        let worst = |f: &dyn Fn(&Value) -> f64| {
            attacked.iter().map(|(_, a, r)| (a.clone(), f(r))).min_by(|x, y| x.1.total_cmp(&y.1))
        };
        let peak = attacked.iter().filter_map(|(_, _, r)| r["server_peak_rss_mib"].as_f64()).fold(0.0_f64, f64::max);
        let by_wall = worst(&|r: &Value| r["req_per_s"].as_f64().unwrap_or(0.0) / c);
        let by_cpu = worst(&|r: &Value| per_cpu(r) / c_cpu);
        if let (Some((wa, w)), Some((ca, cpu))) = (by_wall, by_cpu) {
            println!(
                "{server}: worst under attack {:.0}% of clean req/s ('{wa}'), {:.0}% of clean req/CPU-s ('{ca}') (target 50%); peak RSS under attack {peak:.1} MiB (target < 100)",
                w * 100.0,
                cpu * 100.0
            );
        }
    }
    for v in ["9.0.0", "10.5.0"] {
        if let (Some(ours), Some(py)) = (clean("nicompute axon"), clean(&format!("python bittensor {v} axon"))) {
            println!("ratio nicompute / python {v} (clean): {:.1}x", ours / py);
        }
    }
    cold_start()?;
    Ok(())
}
