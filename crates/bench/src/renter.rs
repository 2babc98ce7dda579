//! `nicompute-bench renter`: the renter's commands, timed as a renter runs them (a new process
//! each time), against the targets of the allocation CLI.
//!
//! 1. `nicompute a` on a devnet of 32 miners, all registered and serving: 16 live miners (real
//!    `nicompute miner run --runtime local` processes, a simulated H100 80GB each), 8 black holes
//!    (listeners that accept the connection and never answer) and 8 dead ports (a bound socket
//!    that does not listen: the connection is refused). The database holds matching specs for all
//!    32 (`nicompute sync` for the live ones, `ComputeDb::upsert_specs` for the others), so every
//!    one is a candidate. Each run times `nicompute a --gpu_type h100 --gpu_size 80 --no-ssh-key
//!    --json` from exec to exit (the credentials printed), then releases it with `nicompute d`.
//!    One more, untimed, `a --explain` shows every candidate's verdict by what stands behind it,
//!    and RSA-2048 key generation (the key `a` awaits at the first "yes") is timed in-process.
//! 2. In the same network, SN27 register.py's check phase with the real Python SDK 9.0.0
//!    (`tests/peers/bench_check_phase.py`): `dendrite.query` over the same 32 axons with
//!    `Allocate(checking=True)` and the SDK's default 12 s timeout, signed by the same hotkey.
//! 3. Cold `nicompute list_a` over 1000 allocations and `nicompute list_r` over 1024 miners, each
//!    a new process on its own database file (no chain): median of 30 runs after 3 warm-ups.
//!
//! Whatever happens, the miners are stopped (SIGTERM), the listeners closed and the devnet shut
//! down; everything lives in one temporary directory, removed at the end.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bittensor::dendrite::{AxonTarget, Dendrite};
use bittensor::devnet::{self, ops, DevnetConfig, DevnetHandle};
use bittensor::subtensor::Subtensor;
use bittensor::wallet::Wallet;
use bittensor::{Clock, Keypair};
use compute::crypto::AllocationKey;
use compute::db::{AllocationDetails, ComputeDb};
use compute::protocol::Specs;
use compute::specs::DetectOptions;
use secrecy::SecretString;
use serde_json::{json, Value};

const NETUID: u16 = 27;
const LIVE: usize = 16;
const BLACK_HOLES: usize = 8;
const DEAD: usize = 8;
const GPU: &str = "NVIDIA H100 80GB HBM3:81559:1";
const A_ARGS: [&str; 7] = ["a", "--gpu_type", "h100", "--gpu_size", "80", "--no-ssh-key", "--json"];
const LIST_ALLOCATIONS: usize = 1000;
const LIST_MINERS: usize = 1024;
const LIST_WARMUP: usize = 3;
const LIST_RUNS: usize = 30;
const KEYGEN_RUNS: usize = 20;
/// Targets (milliseconds).
const TARGET_A_P50: f64 = 100.0;
const TARGET_A_P90: f64 = 200.0;
const TARGET_LIST_A: f64 = 12.0;
const TARGET_LIST_R: f64 = 12.0;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// `a` runs.
    pub runs: usize,
    /// Python check-phase runs.
    pub check_runs: usize,
    /// Directory of the Python peer venvs (`bt9.0.0/`).
    pub peers: PathBuf,
    pub no_python: bool,
    /// Skip the devnet part (1 and 2): only the list timings.
    pub lists_only: bool,
    /// Where the list databases are made and kept (a temporary directory otherwise).
    pub lists_dir: Option<PathBuf>,
}

/// One line of the summary table.
struct Row {
    what: String,
    measured: String,
    target: String,
    verdict: &'static str,
}

impl Row {
    fn new(what: impl Into<String>, measured: impl Into<String>, target: &str, met: Option<bool>) -> Self {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "-",
        };
        Self { what: what.into(), measured: measured.into(), target: target.to_owned(), verdict }
    }
}

pub fn run(opts: &Options) -> Result<()> {
    let bin = crate::nicompute_bin()?;
    let dir = tempfile::Builder::new().prefix("nicompute-bench-renter-").tempdir()?;
    let specs_json = h100_specs_json(dir.path());
    let mut rows = Vec::new();
    if !opts.lists_only {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let owner = Keypair::generate(12)?;
        let cfg = DevnetConfig {
            bind: "127.0.0.1:0".parse()?,
            block_time: Duration::from_secs(1),
            ..DevnetConfig::new(dir.path().join("chain"), owner.account_id())
        };
        let node = rt.block_on(devnet::spawn(cfg))?;
        let mut net = Net {
            rt,
            dir: dir.path().to_owned(),
            bin: bin.clone(),
            node: Some(node),
            owner,
            miners: Vec::new(),
            holes: Vec::new(),
            stop_holes: Arc::new(AtomicBool::new(false)),
            dead: Vec::new(),
        };
        let result = net.measure(opts, &specs_json, &mut rows);
        if result.is_err() {
            net.show_miner_logs();
        }
        net.cleanup();
        result?;
    }
    let lists_dir = opts.lists_dir.clone().unwrap_or_else(|| dir.path().join("lists"));
    lists(&bin, &lists_dir, &specs_json, &mut rows)?;

    println!();
    println!("{:<58} {:<46} {:<12} verdict", "measure", "measured", "target");
    for r in &rows {
        println!("{:<58} {:<46} {:<12} {}", r.what, r.measured, r.target, r.verdict);
    }
    Ok(())
}

/// The specs a miner started with `--simulate-gpu` on this machine reports, as stored.
pub(crate) fn h100_specs_json(disk: &Path) -> String {
    let opts = DetectOptions { disk_path: disk.to_owned(), simulate_gpu: GPU.parse().ok(), ..DetectOptions::default() };
    compute::specs::detect_blocking(&opts).to_json_string()
}

/// A miner of the devnet and what stands behind its axon.
struct Miner {
    key: Keypair,
    port: u16,
    /// The live miner's `--ssh.port`.
    ssh_port: u16,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Live,
    BlackHole,
    Dead,
}

struct Net {
    rt: tokio::runtime::Runtime,
    dir: PathBuf,
    bin: PathBuf,
    node: Option<DevnetHandle>,
    /// The devnet's owner (sudo) key: it funds the coldkey.
    owner: Keypair,
    /// The live miners' processes, by index into the miners list.
    miners: Vec<(usize, Child)>,
    holes: Vec<JoinHandle<()>>,
    stop_holes: Arc<AtomicBool>,
    /// Bound, never listening: connections to them are refused, and nothing else can take the port.
    dead: Vec<tokio::net::TcpSocket>,
}

impl Net {
    fn wallets(&self) -> PathBuf {
        self.dir.join("wallets")
    }

    fn db_path(&self) -> PathBuf {
        self.dir.join("renter").join("database.db")
    }

    fn measure(&mut self, opts: &Options, specs_json: &str, rows: &mut Vec<Row>) -> Result<()> {
        let node = self.node.as_ref().context("devnet")?;
        let ws_url = node.ws_url();
        let chain = Subtensor::new(&ws_url)?;
        let renter = Keypair::generate(12)?;
        let coldkey = Keypair::generate(12)?;
        Wallet::new(self.wallets(), "renter", "default").write_hotkey(&renter)?;

        // The renter first, staked, so every miner's first metagraph already knows it.
        let t = Instant::now();
        let mut miners = Vec::new();
        for (kind, n) in [(Kind::BlackHole, BLACK_HOLES), (Kind::Dead, DEAD)] {
            for _ in 0..n {
                let port = if kind == Kind::BlackHole { self.black_hole()? } else { self.dead_port()? };
                miners.push(Miner { key: Keypair::generate(12)?, port, ssh_port: 0, kind });
            }
        }
        // Axon and SSH ports of the live miners, distinct from each other and from the above.
        let ports = free_ports(2 * LIVE)?;
        for p in ports.chunks(2) {
            miners.push(Miner { key: Keypair::generate(12)?, port: p[0], ssh_port: p[1], kind: Kind::Live });
        }
        // The live ones first (the order the database and the Python query see them in).
        miners.rotate_left(BLACK_HOLES + DEAD);
        self.rt.block_on(async {
            ops::fund(&chain, &self.owner, &[(coldkey.account_id(), 100_000_000_000_000)]).await?;
            ops::register(&chain, &coldkey, &renter.account_id(), NETUID).await?;
            ops::stake_to(&chain, &coldkey, &renter.account_id(), NETUID, 5_000_000_000_000).await?;
            for m in &miners {
                ops::register(&chain, &coldkey, &m.key.account_id(), NETUID).await?;
                // Live miners publish their own axon when they start.
                if m.kind != Kind::Live {
                    ops::serve_axon(&chain, &m.key, NETUID, "127.0.0.1".parse()?, m.port, 9_000_000).await?;
                }
            }
            anyhow::Ok(())
        })?;
        for (i, m) in miners.iter().enumerate().filter(|(_, m)| m.kind == Kind::Live) {
            let child = self.spawn_miner(i, m, &ws_url)?;
            self.miners.push((i, child));
        }
        let dendrite = Dendrite::new(renter.clone());
        for (i, m) in miners.iter().enumerate().filter(|(_, m)| m.kind == Kind::Live) {
            self.wait_ready(i, m, &dendrite)?;
        }
        eprintln!(
            "bench: devnet with {LIVE} live miners (nicompute miner run --runtime local processes), {BLACK_HOLES} black \
             holes, {DEAD} dead ports, all serving; set up in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        // The live miners publish their axons themselves; wait until the chain shows all 32.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mg = self.rt.block_on(chain.metagraph(NETUID))?;
            let serving = miners
                .iter()
                .filter(|m| mg.by_hotkey(&m.key.ss58()).is_some_and(|n| n.axon.serving && n.axon.port == m.port))
                .count();
            if serving == miners.len() {
                break;
            }
            ensure!(Instant::now() < deadline, "only {serving} of {} miners serve on the chain", miners.len());
            std::thread::sleep(Duration::from_millis(200));
        }

        // Specs: `sync` for the live ones, then the same specs for the dead ones.
        let out = self.cli(&ws_url, &["sync", "--timeout", "3s", "--json"])?;
        ensure!(out.status.success(), "sync failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout)?;
        ensure!(v["answered"] == LIVE, "sync: {LIVE} miners should have answered: {v}");
        {
            let db = ComputeDb::open(self.db_path())?;
            for m in miners.iter().filter(|m| m.kind != Kind::Live) {
                db.upsert_specs(&m.key.ss58(), specs_json, Clock::system().now_ms())?;
            }
            let with_specs = db.miner_details()?.iter().filter(|r| r.specs.is_some()).count();
            ensure!(with_specs == miners.len(), "{with_specs} miners have specs, expected {}", miners.len());
        }

        // 1. `a`, cold, N times.
        println!("`nicompute a` on 32 candidates ({LIVE} live, {BLACK_HOLES} black holes, {DEAD} refusing):");
        println!(
            "{:>4} {:>13} {:>14} {:>30} {:>10} {:>10}  miner",
            "run", "a (exec→exit)", "a (allocator)", "yes/key wait/allocate/ssh", "ssh ready", "d"
        );
        let mut times = Vec::new();
        for i in 1..=opts.runs {
            let t0 = Instant::now();
            let out = self.cli(&ws_url, &A_ARGS)?;
            let took = t0.elapsed();
            ensure!(
                out.status.success(),
                "a (run {i}) failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&out.stdout).context("a --json")?;
            let hotkey = v["hotkey"].as_str().context("no hotkey in a's answer")?.to_owned();
            let which = miners.iter().find(|m| m.key.ss58() == hotkey).map(|m| m.kind);
            ensure!(which == Some(Kind::Live), "run {i} allocated {hotkey}, not a live miner ({which:?})");
            let t1 = Instant::now();
            let out = self.cli(&ws_url, &["d", &hotkey, "-y", "--json"])?;
            let d_took = t1.elapsed();
            ensure!(out.status.success(), "d (run {i}) failed: {}", String::from_utf8_lossy(&out.stderr));
            let d: Value = serde_json::from_slice(&out.stdout).context("d --json")?;
            ensure!(d[0]["result"] == "released", "d (run {i}): {d}");
            let t = &v["timings_ms"];
            let parts = format!("{}/{}/{}/{} ms", t["check"], t["key"], t["allocate"], t["ssh"]);
            println!(
                "{i:>4} {:>10.0} ms {:>11} ms {parts:>30} {:>10} {:>7.0} ms  {}",
                ms(took),
                v["elapsed_ms"],
                v["ssh_ready"],
                ms(d_took),
                short(&hotkey)
            );
            times.push(took);
        }
        if !times.is_empty() {
            let (p50, p90, max) = pcts(&mut times);
            let text = format!("p50 {p50:.0} ms, p90 {p90:.0} ms, max {max:.0} ms ({} runs)", times.len());
            println!("a: {text}");
            rows.push(Row::new(
                "a, 32 candidates (16 live/8 black holes/8 refused), cold",
                text,
                "p50 < 100 ms, p90 < 200 ms",
                Some(p50 < TARGET_A_P50 && p90 < TARGET_A_P90),
            ));
        }

        // One more, untimed, with --explain: every candidate's verdict, by what stands behind it.
        let mut args = A_ARGS.to_vec();
        args.push("--explain");
        let out = self.cli(&ws_url, &args)?;
        ensure!(out.status.success(), "a --explain failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).context("a --explain --json")?;
        let mut verdicts: Vec<(Kind, String, usize)> = Vec::new();
        for e in v["explain"].as_array().context("no explain list")? {
            let hotkey = e["hotkey"].as_str().unwrap_or_default();
            let Some(kind) = miners.iter().find(|m| m.key.ss58() == hotkey).map(|m| m.kind) else { continue };
            let verdict = match &e["verdict"] {
                Value::String(s) => s.clone(),
                other => other["verdict"].as_str().unwrap_or("?").to_owned(),
            };
            match verdicts.iter_mut().find(|(k, v, _)| *k == kind && *v == verdict) {
                Some((_, _, n)) => *n += 1,
                None => verdicts.push((kind, verdict, 1)),
            }
        }
        verdicts.sort();
        let listed: Vec<String> = verdicts.iter().map(|(k, v, n)| format!("{k:?} {v}: {n}")).collect();
        println!("verdicts of one more (untimed) `a --explain`: {}", listed.join(", "));
        let hotkey = v["hotkey"].as_str().context("no hotkey")?.to_owned();
        let out = self.cli(&ws_url, &["d", &hotkey, "-y", "--json"])?;
        ensure!(out.status.success(), "d after --explain failed: {}", String::from_utf8_lossy(&out.stderr));

        // Where `a`'s time goes: the RSA-2048 key it needs for the miner's answer (started when
        // `a` starts, awaited at the first "yes"): the candidates side by side
        // (`nicompute-bench keygen`), with the system OpenSSL's CLI where it is installed.
        for (name, f) in crate::keygen::measure(KEYGEN_RUNS, true)? {
            let text = format!("p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms ({KEYGEN_RUNS} runs)", f.p50, f.p90, f.max);
            println!("RSA-2048 key generation, {name}: {text}");
            rows.push(Row::new(format!("  RSA-2048 keygen, {name}"), text, "-", None));
        }

        // 2. SN27 register.py's check phase with the real Python SDK.
        if opts.no_python {
            return Ok(());
        }
        let python = opts.peers.join("bt9.0.0").join("bin/python");
        if !python.exists() {
            bail!("no Python peer at {} (run scripts/python-peers.sh, or pass --no-python)", python.display());
        }
        let doc = json!({
            "hotkey_mnemonic": renter.mnemonic().context("the renter key has a mnemonic")?,
            "axons": miners.iter().map(|m| json!({"ip": "127.0.0.1", "port": m.port, "hotkey": m.key.ss58()}))
                .collect::<Vec<_>>(),
        });
        println!("SN27 register.py check phase: Python bittensor 9.0.0 dendrite.query over the same 32 axons:");
        let mut query = Vec::new();
        let mut wall = Vec::new();
        for i in 1..=opts.check_runs {
            let t0 = Instant::now();
            let r = python_check(&python, &doc)?;
            let took = t0.elapsed();
            let elapsed = r["elapsed_s"].as_f64().context("no elapsed_s")?;
            println!(
                "{i:>4} dendrite.query {:>6.2} s (process {:>5.2} s): {} of {} said yes, {} timed out, {} failed {}",
                elapsed,
                took.as_secs_f64(),
                r["yes"],
                r["asked"],
                r["timed_out"],
                r["failed"],
                r["status_codes"]
            );
            ensure!(r["yes"] == LIVE, "the Python check phase should get {LIVE} yes answers: {r}");
            query.push(Duration::from_secs_f64(elapsed));
            wall.push(took);
        }
        if !query.is_empty() {
            let (p50, _, max) = pcts(&mut query);
            let (w50, _, _) = pcts(&mut wall);
            rows.push(Row::new(
                "python 9.0.0 check phase only (dendrite.query, 12 s)",
                format!("median {:.2} s, max {:.2} s ({} runs)", p50 / 1e3, max / 1e3, query.len()),
                "-",
                None,
            ));
            rows.push(Row::new(
                "  same, whole Python process (imports included)",
                format!("median {:.2} s", w50 / 1e3),
                "-",
                None,
            ));
        }
        Ok(())
    }

    /// A listener that accepts every connection and never answers; returns its port.
    fn black_hole(&mut self) -> Result<u16> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = self.stop_holes.clone();
        self.holes.push(std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
        Ok(port)
    }

    /// A port where nothing listens (held bound so that nothing else takes it).
    fn dead_port(&mut self) -> Result<u16> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let port = socket.local_addr()?.port();
        self.dead.push(socket);
        Ok(port)
    }

    fn spawn_miner(&self, i: usize, m: &Miner, ws_url: &str) -> Result<Child> {
        let name = format!("miner{i}");
        Wallet::new(self.wallets(), &name, "default").write_hotkey(&m.key)?;
        let mut c = Command::new(&self.bin);
        c.args(["miner", "run", "--runtime", "local", "--subtensor.chain_endpoint", ws_url])
            .args(["--netuid", &NETUID.to_string(), "--wallet.path"])
            .arg(self.wallets())
            .args(["--wallet.name", &name, "--axon.ip", "127.0.0.1", "--axon.port", &m.port.to_string()])
            .args(["--ssh.port", &m.ssh_port.to_string(), "--ssh.bind_ip", "127.0.0.1", "--state-dir"])
            .arg(self.dir.join(&name))
            .args(["--simulate-gpu", GPU])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join(format!("{name}.stderr")))?);
        c.spawn().with_context(|| format!("starting {}", self.bin.display()))
    }

    fn wait_ready(&self, i: usize, m: &Miner, dendrite: &Dendrite) -> Result<()> {
        let target = AxonTarget::new("127.0.0.1", m.port, &m.key.account_id());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.rt.block_on(dendrite.call(&target, Specs::default(), Duration::from_secs(2)));
            if r.is_success() && !r.synapse.specs_output.is_empty() {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "miner{i} does not answer Specs: {:?}", r.status_message());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The CLI as a renter runs it, with this network's flags.
    fn cli(&self, ws_url: &str, args: &[&str]) -> Result<Output> {
        Command::new(&self.bin)
            .args(["--subtensor.chain_endpoint", ws_url, "--netuid", &NETUID.to_string(), "--wallet.path"])
            .arg(self.wallets())
            .args(["--wallet.name", "renter", "--db"])
            .arg(self.db_path())
            .args(args)
            .env("HOME", &self.dir)
            .env_remove("NICOMPUTE_DB")
            .stdin(Stdio::null())
            .output()
            .context("running nicompute")
    }

    fn show_miner_logs(&self) {
        for (i, _) in self.miners.iter().take(2) {
            let Ok(log) = std::fs::read_to_string(self.dir.join(format!("miner{i}.stderr"))) else { continue };
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("bench: miner{i}'s stderr (last lines):");
            for l in &lines[lines.len().saturating_sub(15)..] {
                eprintln!("  {l}");
            }
        }
    }

    fn cleanup(&mut self) {
        for (_, child) in &self.miners {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (i, mut child) in self.miners.drain(..) {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                    _ => {
                        eprintln!("bench: miner{i} did not stop on SIGTERM within 10 s; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        self.stop_holes.store(true, Ordering::Relaxed);
        for h in self.holes.drain(..) {
            let _ = h.join();
        }
        self.dead.clear();
        if let Some(node) = self.node.take() {
            self.rt.block_on(node.shutdown());
        }
    }
}

/// Runs tests/peers/bench_check_phase.py with `doc` on stdin; its one JSON line.
fn python_check(python: &Path, doc: &Value) -> Result<Value> {
    use std::io::Write;
    let mut child = Command::new(python)
        .arg("tests/peers/bench_check_phase.py")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the Python check phase")?;
    {
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(doc.to_string().as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("bench_check_phase.py failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).context("bench_check_phase.py output")
}

/// 3. Cold `list_a` over 1000 allocations and `list_r` over 1024 miners.
fn lists(bin: &Path, dir: &Path, specs_json: &str, rows: &mut Vec<Row>) -> Result<()> {
    let t = Instant::now();
    std::fs::create_dir_all(dir)?;
    let alloc_db = dir.join("allocations.db");
    remove_db(&alloc_db);
    {
        let db = ComputeDb::open(&alloc_db)?;
        let key = AllocationKey::generate()?;
        let pem = key.public_pem()?;
        let expires = Clock::system().now_ms() + 90 * 86_400_000;
        for i in 0..LIST_ALLOCATIONS {
            let hotkey = hotkey(i as u32)?;
            db.begin_allocation(&hotkey, &pem, expires, i % 2 == 0)?;
            let details = AllocationDetails {
                username: "root".into(),
                password: SecretString::from(format!("{:016x}{:016x}", i * 7919 + 1, i * 104_729 + 3)),
                port: 20_000 + i as u16,
                ip: format!("10.{}.{}.{}", i / 65_536, (i / 256) % 256, i % 256),
                resource: "NVIDIA H100 80GB HBM3".into(),
                regkey: pem.clone(),
                version: json!(183),
                ssh_key: None,
                uuid: None,
                external_user_ports: None,
                host_key: None,
                authenticated: false,
            };
            db.commit_allocation(&hotkey, &details)?;
        }
        ensure!(db.allocations()?.len() == LIST_ALLOCATIONS, "allocation rows missing");
    }
    let miners_db = dir.join("miners.db");
    remove_db(&miners_db);
    {
        let db = ComputeDb::open(&miners_db)?;
        let now = Clock::system().now_ms();
        for i in 0..LIST_MINERS {
            db.upsert_specs(&hotkey(1_000_000 + i as u32)?, specs_json, now - (i as u64) * 60_000)?;
        }
    }
    eprintln!(
        "bench: list databases filled in {:.1} s ({LIST_ALLOCATIONS} allocations, {LIST_MINERS} miners)",
        t.elapsed().as_secs_f64()
    );

    println!("cold list commands ({LIST_WARMUP} warm-ups, then {LIST_RUNS} runs, each a new process):");
    let with_db = |db: &Path, args: &[&str]| -> Vec<OsString> {
        let mut v: Vec<OsString> = vec!["--db".into(), db.into()];
        v.extend(args.iter().map(OsString::from));
        v
    };
    let cases: [(&str, Vec<OsString>, Option<f64>); 5] = [
        ("nicompute --version (exec floor)", vec!["--version".into()], None),
        ("list_a, 1000 allocations", with_db(&alloc_db, &["list_a"]), Some(TARGET_LIST_A)),
        ("list_a --json, 1000 allocations", with_db(&alloc_db, &["list_a", "--json"]), Some(TARGET_LIST_A)),
        ("list_r, 1024 miners", with_db(&miners_db, &["list_r"]), Some(TARGET_LIST_R)),
        ("list_r --json, 1024 miners", with_db(&miners_db, &["list_r", "--json"]), Some(TARGET_LIST_R)),
    ];
    for (name, args, target) in cases {
        let run = || -> Result<(Duration, usize)> {
            let t = Instant::now();
            let out = Command::new(bin)
                .args(&args)
                .env("HOME", dir)
                .env_remove("NICOMPUTE_DB")
                .stdin(Stdio::null())
                .output()?;
            let took = t.elapsed();
            ensure!(out.status.success(), "{name} failed: {}", String::from_utf8_lossy(&out.stderr));
            Ok((took, out.stdout.len()))
        };
        let mut bytes = 0;
        for _ in 0..LIST_WARMUP {
            bytes = run()?.1;
        }
        let mut times = (0..LIST_RUNS).map(|_| run().map(|r| r.0)).collect::<Result<Vec<_>>>()?;
        let (p50, p90, max) = pcts(&mut times);
        let text = format!("median {p50:.1} ms, p90 {p90:.1} ms, max {max:.1} ms");
        println!("  {name:<34} {text} ({bytes} bytes of output)");
        let target_text = target.map_or("-".to_owned(), |t| format!("< {t:.0} ms"));
        rows.push(Row::new(format!("{name}, cold"), text, &target_text, target.map(|t| p50 < t)));
    }
    Ok(())
}

/// Removes a database left by an earlier `--lists-dir` run, with its WAL files.
fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// A valid, distinct SS58 hotkey for row `i` (from a seed: no mnemonic work).
pub(crate) fn hotkey(i: u32) -> Result<String> {
    let mut seed = [0x5a_u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    Ok(Keypair::from_seed(&seed)?.ss58())
}

/// `n` distinct free ports (all held at once while they are picked).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let held = (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn short(hotkey: &str) -> String {
    format!("{}…", &hotkey[..hotkey.len().min(10)])
}

/// p50, p90 (nearest rank) and max, in milliseconds.
fn pcts(times: &mut [Duration]) -> (f64, f64, f64) {
    times.sort();
    let rank = |p: f64| times[((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
    (ms(rank(0.5)), ms(rank(0.9)), ms(times[times.len() - 1]))
}
