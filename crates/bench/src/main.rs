//! `nicompute-bench`: measured figures for the issues' targets, run beside the Python reference.
//!
//! `axon` runs the same load generator (our dendrite: 64 requests in flight, each freshly signed)
//! against our axon and against the real Python SDK axons (9.0.0 and 10.5.0), the server pinned
//! to CPU 0 and the load generator to CPU 1, 3 s warm-up then 20 s measured, and prints req/s,
//! p50 and p99 for each and the ratios. Then the guard: the same load while each attack of
//! [`attack`] runs from another process, against our axon (the miner's configuration: caller
//! policy, priority, replay journal) and the Python 10.5.0 axon, with legitimate req/s beside the
//! clean figure and the server's peak RSS. It also measures the sr25519 verification ceiling on
//! the server's core, the single-request round trip and the cold start of `nicompute wallet
//! show`. Never run by the tests: timings are not assertions.

// A benchmark's job is to print its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod api;
mod attack;
mod auth;
mod axon;
mod chain;
mod chainwrite;
mod decode;
mod devnet;
mod keygen;
mod miner;
mod renter;
mod wandb;
mod web;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bittensor::axon::{Axon, AxonConfig, HandlerError, Request};
use bittensor::dendrite::{AxonTarget, Dendrite, DendriteConfig};
use bittensor::{AccountId, Keypair};
use clap::{Parser, Subcommand};
use compute::protocol::Specs;
use serde_json::{json, Value};

/// Test keys shared with the interop tests (public fixture mnemonics, not secrets).
const AXON_MNEMONIC: &str = "square blush toddler orient tomato bike tourist change finger search verb subway";
const DENDRITE_MNEMONIC: &str = "forget enemy fade powder kind culture fee spell elite sock feed crush";

#[derive(Parser)]
#[command(name = "nicompute-bench", about = "Benchmarks of nicompute against the Python reference")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// RSA-2048 allocation-key generation: the candidates side by side, runs interleaved.
    Keygen {
        #[arg(long, default_value_t = 60)]
        iterations: usize,
        /// Also `openssl genrsa 2048`, process start included, where openssl is installed.
        #[arg(long)]
        openssl: bool,
        /// Make one key as a one-shot `a` does (first of two) and exit: the new-process candidate.
        #[arg(long, hide = true)]
        once: bool,
    },
    /// A devnet metagraph of N neurons over a new WebSocket/HTTP connection each time.
    Chain {
        #[arg(long, default_value_t = 256)]
        neurons: usize,
        #[arg(long, default_value_t = 200)]
        iterations: usize,
    },
    /// The whole axon comparison (ours vs Python 9.0.0 and 10.5.0), round trip, cold start.
    Axon {
        /// Directory with the Python peer venvs (bt9.0.0/, bt10.5.0/).
        #[arg(long, default_value = "target/python-peers")]
        peers: PathBuf,
        /// Seconds measured after warm-up.
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
        #[arg(long, default_value_t = 3.0)]
        warmup: f64,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Skip the Python axons (ours only).
        #[arg(long)]
        no_python: bool,
        /// Attacks to run the load under (comma-separated); none: the clean figures only.
        #[arg(long, value_delimiter = ',', default_values_t = attack::Kind::ALL.to_vec())]
        attacks: Vec<attack::Kind>,
        #[arg(long)]
        no_attacks: bool,
    },
    /// Keep one attack on an axon going until stdin closes; prints one JSON line of counts.
    Attack {
        #[arg(long)]
        addr: std::net::SocketAddr,
        #[arg(long)]
        axon_hotkey: String,
        #[arg(long, value_enum)]
        kind: attack::Kind,
    },
    /// sr25519 verifications per second on this core (run it pinned).
    VerifyCeiling,
    /// The cost of nicompute's signed allocations: sign and verify a request and its answer.
    Auth {
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
    },
    /// Time decoding fixture 01 (1024 neurons + subnet state) into a Metagraph.
    Decode {
        #[arg(long, default_value = "tests/fixtures/metagraph")]
        fixtures: PathBuf,
        #[arg(long, default_value_t = 200)]
        iterations: usize,
    },
    /// The real `nicompute miner run` on a devnet: idle RSS, allocate → SSH login → deallocate times.
    Miner {
        #[arg(long, default_value_t = 10)]
        allocations: usize,
        #[arg(long, value_enum, default_value_t = miner::Runtime::Docker)]
        runtime: miner::Runtime,
        /// The miner's `--warm-containers`, one run each in this order (default: 0 then 1, the
        /// cold start beside the warm container on the same machine).
        #[arg(long = "warm-containers", value_delimiter = ',', default_value = "0,1")]
        warm_containers: Vec<u8>,
    },
    /// The renter CLI: cold `a` on a devnet of 32 miners (16 live, 8 black holes, 8 refusing) with
    /// SN27's check phase (Python 9.0.0 dendrite.query) beside it, then cold `list_a` and `list_r`.
    Renter {
        /// `a` runs (each followed by `d`).
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Runs of the Python check phase.
        #[arg(long, default_value_t = 3)]
        check_runs: usize,
        /// Directory with the Python peer venvs (bt9.0.0/).
        #[arg(long, default_value = "target/python-peers")]
        peers: PathBuf,
        /// Skip the Python check phase.
        #[arg(long)]
        no_python: bool,
        /// Only the cold `list_a`/`list_r` timings (no devnet).
        #[arg(long)]
        lists_only: bool,
        /// Keep the list databases in this directory (for profiling the list commands).
        #[arg(long)]
        lists_dir: Option<PathBuf>,
    },
    /// The API: GET /v1/resources over 1,024 miners (one core), an allocation through the API vs
    /// `nicompute a`, webhook latency.
    Api {
        /// Allocations of each kind, and webhook events / 2.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Seconds of load per resources measurement (after 2 s of warm-up).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// The dashboard in chromium over 1,024 miners: first render (cold and on reload), 1,000
    /// rows, the files' size on the wire.
    Web {
        /// Runs of each measurement.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// SN27's shared state from wandb: 100 signed validator runs from a local endpoint (2 pages).
    Wandb {
        #[arg(long, default_value_t = 100)]
        runs: usize,
        #[arg(long, default_value_t = 20)]
        iterations: usize,
        /// UIDs in each run's `stats` (what makes real pages heavy).
        #[arg(long, default_value_t = 256)]
        stats_uids: usize,
    },
    /// Chain writes on the real runtime (chopsticks): `subnet register` and `axon set` end to end
    /// beside the Python SDK 9.0.0's burned_register / serve_axon, and `wallet balance` cold start.
    Chainwrite {
        /// Registrations and serves per side (one fresh wallet each).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// `wallet balance` cold starts.
        #[arg(long, default_value_t = 20)]
        balance_runs: usize,
        /// Directory with the Python peer venvs (bt9.0.0/).
        #[arg(long, default_value = "target/python-peers")]
        peers: PathBuf,
        /// Skip the Python SDK.
        #[arg(long)]
        no_python: bool,
    },
    /// The embedded devnet chain: inclusion latency, and the real SDK's burned_register there
    /// beside the real runtime's.
    Devnet {
        /// Extrinsics timed for inclusion.
        #[arg(long, default_value_t = 200)]
        inclusions: usize,
        /// SDK registrations per chain and SDK version (one fresh wallet each).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Directory with the Python peer venvs (bt9.0.0/, bt10.5.0/).
        #[arg(long, default_value = "target/python-peers")]
        peers: PathBuf,
        /// Skip the Python SDK.
        #[arg(long)]
        no_python: bool,
        /// Skip the real runtime.
        #[arg(long)]
        no_runtime: bool,
    },
    /// Serve our axon with a trivial Specs handler; prints `READY <port>`; stops on stdin EOF.
    /// By default as the miner configures it (caller policy, priority, replay journal).
    ServeAxon {
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// No caller policy, priority or journal: the axon alone.
        #[arg(long)]
        bare: bool,
    },
    /// Drive load at one axon and print one JSON line of results.
    Load {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        hotkey: String,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 3.0)]
        warmup: f64,
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
    },
}

/// The release `nicompute` built beside this benchmark, which the benchmarks run as a user would.
fn nicompute_bin() -> Result<PathBuf> {
    let bin = std::env::current_exe()?.with_file_name("nicompute");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p nicompute -p nicompute-bench`",
        bin.display()
    );
    Ok(bin)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Chain { neurons, iterations } => chain::run(neurons, iterations),
        Cmd::Decode { fixtures, iterations } => decode::run(&fixtures, iterations),
        Cmd::Miner { allocations, runtime, warm_containers } => miner::run(allocations, runtime, &warm_containers),
        Cmd::Renter { runs, check_runs, peers, no_python, lists_only, lists_dir } => {
            renter::run(&renter::Options { runs, check_runs, peers, no_python, lists_only, lists_dir })
        }
        Cmd::Api { runs, seconds } => api::run(&api::Options { runs, seconds }),
        Cmd::Web { runs } => web::run(&web::Options { runs }),
        Cmd::Wandb { runs, iterations, stats_uids } => wandb::run(&wandb::Options { runs, iterations, stats_uids }),
        Cmd::Chainwrite { runs, balance_runs, peers, no_python } => {
            chainwrite::run(&chainwrite::Options { runs, balance_runs, peers, no_python })
        }
        Cmd::Devnet { inclusions, runs, peers, no_python, no_runtime } => {
            devnet::run(&devnet::Options { inclusions, runs, peers, no_python, no_runtime })
        }
        Cmd::ServeAxon { port, bare } => serve_axon(port, bare),
        Cmd::Attack { addr, axon_hotkey, kind } => attack::run(addr, &axon_hotkey, kind),
        Cmd::Auth { iterations } => auth::run(iterations),
        Cmd::Keygen { iterations, openssl, once } => keygen::run(iterations, openssl, once),
        Cmd::VerifyCeiling => {
            let (wall, cpu) = verify_ceiling();
            println!("{}", json!({ "verifications_per_s": wall, "verifications_per_cpu_s": cpu }));
            Ok(())
        }
        Cmd::Load { addr, hotkey, concurrency, warmup, duration } => {
            let r = load(&addr, &hotkey, concurrency, warmup, duration)?;
            println!("{}", r);
            Ok(())
        }
        Cmd::Axon { peers, duration, warmup, concurrency, no_python, attacks, no_attacks } => {
            let attacks = if no_attacks { Vec::new() } else { attacks };
            axon::suite(&axon::AxonOptions { peers, duration, warmup, concurrency, no_python, attacks })
        }
    }
}

fn serve_axon(port: u16, bare: bool) -> Result<()> {
    // One worker thread: the comparison is one core against one core.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async {
        let kp = Keypair::from_mnemonic(AXON_MNEMONIC)?;
        let mut axon = Axon::new(kp).attach(|r: Request<Specs>| async move {
            let mut s = r.synapse;
            s.specs_output = r#"{"gpu": {"count": 0}}"#.to_owned();
            Ok::<_, HandlerError>(s)
        });
        let journal_dir = tempfile::tempdir()?;
        if !bare {
            // As compute::miner::spawn sets it up: only registered callers, served by stake, the
            // replay state in SQLite.
            let admitted = [Keypair::from_mnemonic(DENDRITE_MNEMONIC)?.ss58(), attack::hostile().ss58()];
            let journal = compute::miner::state::SqliteReplayJournal::open(&journal_dir.path().join("miner.sqlite"))?;
            axon = axon
                .replay_journal(Box::new(journal))?
                .blacklist(move |head| {
                    let hk = head.header.dendrite.hotkey.as_deref().unwrap_or("");
                    (!admitted.iter().any(|a| a == hk)).then(|| format!("Unrecognized hotkey: {hk}"))
                })
                .priority(16, |_| 5000.0);
        }
        let cfg = AxonConfig { bind: format!("127.0.0.1:{port}").parse()?, ..AxonConfig::default() };
        let handle = axon.spawn(cfg).await?;
        println!("READY {}", handle.local_addr().port());
        std::io::stdout().flush()?;
        // Stop when the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
        })
        .await?;
        handle.shutdown().await;
        Ok(())
    })
}

fn load(addr: &str, hotkey: &str, concurrency: usize, warmup: f64, duration: f64) -> Result<Value> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async {
        let (ip, port) = addr.rsplit_once(':').context("addr is IP:PORT")?;
        let target = AxonTarget::new(ip, port.parse()?, &AccountId::from_ss58(hotkey)?);
        let cfg = DendriteConfig { max_concurrency: concurrency, ..DendriteConfig::default() };
        let dendrite = Dendrite::with_config(Keypair::from_mnemonic(DENDRITE_MNEMONIC)?, cfg);
        let start = Instant::now();
        let measure_from = start + Duration::from_secs_f64(warmup);
        let end = measure_from + Duration::from_secs_f64(duration);
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (d, t) = (dendrite.clone(), target.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let r = d.call(&t, Specs::default(), Duration::from_secs(30)).await;
                    let t1 = Instant::now();
                    if t0 >= measure_from && t1 <= end {
                        if r.is_success() {
                            lat.push((t1 - t0).as_secs_f64());
                        } else {
                            errors += 1;
                        }
                    }
                }
                (lat, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await?;
            all.extend(l);
            errors += e;
        }
        all.sort_by(f64::total_cmp);
        let pct = |p: f64| if all.is_empty() { f64::NAN } else { all[((all.len() - 1) as f64 * p) as usize] * 1e3 };
        Ok(json!({
            "ok": all.len(),
            "errors": errors,
            "req_per_s": all.len() as f64 / duration,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        }))
    })
}

/// A server process pinned to CPU 0 that announced its port.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(mut cmd: Command, stdin_doc: Option<Value>) -> Result<Server> {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().context("starting server")?;
    if let Some(doc) = stdin_doc {
        let stdin = child.stdin.as_mut().context("stdin")?;
        writeln!(stdin, "{doc}")?;
        stdin.flush()?;
    }
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port = line
        .trim()
        .strip_prefix("READY ")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("server did not announce READY (said {line:?})"))?;
    Ok(Server { child, port })
}

fn pinned(cpu: &str, program: &Path) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(cpu).arg(program);
    c
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after_comm.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn run_load_on(
    server: &Server,
    me: &Path,
    hotkey: &str,
    concurrency: usize,
    warmup: f64,
    duration: f64,
) -> Result<Value> {
    let pid = server.child.id();
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    let mut r = run_load(me, server.port, hotkey, concurrency, warmup, duration)?;
    if let (Some(c0), Some(c1)) = (c0, cpu_seconds(pid)) {
        r["server_cpu_busy"] = json!((c1 - c0) / t0.elapsed().as_secs_f64());
    }
    Ok(r)
}

fn run_load(me: &Path, port: u16, hotkey: &str, concurrency: usize, warmup: f64, duration: f64) -> Result<Value> {
    let out = pinned("1", me)
        .args(["load", "--addr", &format!("127.0.0.1:{port}"), "--hotkey", hotkey])
        .args([
            "--concurrency",
            &concurrency.to_string(),
            "--warmup",
            &warmup.to_string(),
            "--duration",
            &duration.to_string(),
        ])
        .output()
        .context("running the load generator")?;
    if !out.status.success() {
        bail!("load generator failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// How many signature verifications one core does per second: the axon's ceiling. Returns
/// (per wall-clock second, per CPU-second of this process): on a machine shared with other
/// work the second is the one to compare with the server's requests per CPU-second.
fn verify_ceiling() -> (f64, f64) {
    let kp = Keypair::from_mnemonic(DENDRITE_MNEMONIC).expect("fixture mnemonic");
    let id = kp.account_id();
    let msg = b"1795527407825162433.5EhvmCjJL3gB4RbsHxPGhzuqErbw2Dkeq5G4RtbrFckYynVJ.5GjRsEzPyDim3bA7UM7v8ax1Z6DkCUVKj4mbnvHK85gF4aDj.18c8a06e-e80c-11f1-813f-02fc00000001.a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a";
    let sig = kp.sign(msg);
    let n = 60_000;
    let (t, c0) = (Instant::now(), cpu_seconds(std::process::id()).unwrap_or(f64::NAN));
    let mut ok = 0;
    for _ in 0..n {
        ok += usize::from(id.verify(msg, &sig));
    }
    assert_eq!(ok, n);
    let cpu = cpu_seconds(std::process::id()).unwrap_or(f64::NAN) - c0;
    (n as f64 / t.elapsed().as_secs_f64(), n as f64 / cpu)
}

/// `nicompute wallet show` on a plaintext hotkey, new process each time.
fn cold_start() -> Result<()> {
    let bin = std::env::current_exe()?.with_file_name("nicompute");
    if !bin.exists() {
        eprintln!("bench: {} missing; build with `cargo build --release` for the cold-start figure", bin.display());
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("nicompute-bench-{}", std::process::id()));
    let wallet = bittensor::wallet::Wallet::new(&dir, "bench", "default");
    wallet.write_hotkey(&Keypair::generate(12)?)?;
    bittensor::wallet::keyfile::write_public(&wallet.coldkeypub_path(), &Keypair::generate(12)?.account_id())?;
    let run = || -> Result<f64> {
        let t = Instant::now();
        let st = Command::new(&bin)
            .args(["wallet", "show", "--wallet.path"])
            .arg(&dir)
            .args(["--wallet.name", "bench"])
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("wallet show failed");
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..3 {
        run()?;
    }
    let mut times: Vec<f64> = (0..30).map(|_| run()).collect::<Result<_>>()?;
    times.sort_by(f64::total_cmp);
    println!("nicompute wallet show cold start: median {:.1} ms, max {:.1} ms (30 runs)", times[15], times[29]);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
