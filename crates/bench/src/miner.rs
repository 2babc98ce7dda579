//! `nicompute-bench miner`: the real `nicompute miner run` process, driven the way a validator
//! drives it, against an in-process devnet chain.
//!
//! It registers a miner and a staked validator hotkey on netuid 27, starts the release binary
//! (`--runtime docker` by default), waits until its axon answers `Specs`, reads its idle memory
//! from /proc, then runs N allocate → SSH login → deallocate cycles from the validator's
//! dendrite and prints, per run and as p50/p90/max, the time from sending `Allocate` to its
//! response and to the first successful password login over SSH (`ssh … true`). It does so once
//! per `--warm-containers` value (0 then 1 by default): with 1 it waits before each allocation
//! until the miner's warm container is ready, parked where the image allows it (a real miner has
//! minutes between allocations; the bench has none), and says per run what the allocation found.
//!
//! Whatever happens, it stops the miner (SIGTERM), removes the containers of its miner (those
//! labelled with the miner's fresh hotkey, the warm one included: another miner's or test's
//! containers on the same daemon are left alone) and shuts the devnet down.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bittensor::dendrite::{AxonTarget, Dendrite};
use bittensor::devnet::{self, ops, DevnetConfig, DevnetHandle};
use bittensor::subtensor::Subtensor;
use bittensor::wallet::Wallet;
use bittensor::Keypair;
use clap::ValueEnum;
use compute::crypto::AllocationKey;
use compute::protocol::{Allocate, Specs};
use compute::runtime::docker::{DockerConfig, DockerRuntime};
use compute::runtime::ContainerRuntime;
use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};

/// The miner's `--runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Runtime {
    Docker,
    Local,
}

impl Runtime {
    fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Local => "local",
        }
    }
}

const NETUID: u16 = 27;
const WALLET: &str = "bench";
const HOTKEY: &str = "miner";
/// How long a synapse call may take (the Docker runtime waits up to 30 s for sshd).
const CALL_TIMEOUT: Duration = Duration::from_secs(90);
/// How long SSH login (after the allocate request) and port closing may take.
const SSH_DEADLINE: Duration = Duration::from_secs(30);

pub fn run(allocations: usize, runtime: Runtime, warm_containers: &[u8]) -> Result<()> {
    let mut results = Vec::new();
    for &warm in warm_containers {
        ensure!(warm <= 1, "--warm-containers takes 0 or 1, not {warm}");
        println!("== miner --runtime {} --warm-containers {warm} ==", runtime.as_str());
        results.push((warm, run_one(allocations, runtime, warm)?));
    }
    if results.len() > 1 {
        for (warm, line) in results {
            println!("--warm-containers {warm}: allocate → SSH login ready {line}");
        }
    }
    Ok(())
}

fn run_one(allocations: usize, runtime: Runtime, warm: u8) -> Result<String> {
    let bin = crate::nicompute_bin()?;
    for tool in ["ssh", "sshpass"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ensure!(found, "`{tool}` is not installed (scripts/docker-up.sh installs ssh and sshpass)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::Builder::new().prefix("nicompute-bench-miner-").tempdir()?;
    let owner = Keypair::generate(12)?;
    let cfg = DevnetConfig {
        bind: "127.0.0.1:0".parse()?,
        block_time: Duration::from_secs(1),
        ..DevnetConfig::new(dir.path().join("chain"), owner.account_id())
    };
    let node = rt.block_on(devnet::spawn(cfg))?;
    let mut bench =
        Bench { rt, dir: dir.path().to_owned(), runtime, node: Some(node), owner, miner: None, scope: None, warm };
    let result = bench.measure(&bin, allocations);
    if result.is_err() {
        bench.show_miner_log();
    }
    bench.cleanup();
    result
}

struct Bench {
    rt: tokio::runtime::Runtime,
    dir: PathBuf,
    runtime: Runtime,
    node: Option<DevnetHandle>,
    /// The devnet's owner (sudo) key: it funds the coldkey.
    owner: Keypair,
    miner: Option<Child>,
    /// The miner's hotkey, which labels its containers: the containers cleanup may remove.
    scope: Option<String>,
    /// The miner's `--warm-containers`.
    warm: u8,
}

impl Bench {
    fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("miner.stderr")
    }

    /// The miner's own containers (labelled with its hotkey).
    async fn containers(&self) -> Result<(DockerRuntime, Vec<compute::runtime::Container>)> {
        let scope = self.scope.clone().context("no miner yet")?;
        let docker = DockerRuntime::connect(DockerConfig { scope: Some(scope), ..DockerConfig::default() }).await?;
        let list = docker.list().await?;
        Ok((docker, list))
    }

    /// With a warm container kept: waits (up to 10 s) until the miner has made one; whether it has.
    /// Waits until the miner's warm container is ready, as it is when an allocation comes long
    /// after the last one: parked (paused) when the image allows it, else created. Says which,
    /// or "cold" when there is none within 10 s.
    fn wait_for_warm(&self) -> Result<&'static str> {
        if self.runtime != Runtime::Docker || self.warm == 0 {
            return Ok("cold");
        }
        let started = Instant::now();
        loop {
            let (_, list) = self.rt.block_on(self.containers())?;
            let warm = list.iter().find(|c| c.allocation_id.starts_with(compute::runtime::WARM_PREFIX));
            match warm.map(|c| c.state) {
                Some(compute::runtime::ContainerState::Paused) => return Ok("parked"),
                // Created and not parked for 5 s: the image does not promise the parked start.
                Some(compute::runtime::ContainerState::Stopped) if started.elapsed() > Duration::from_secs(5) => {
                    return Ok("created")
                }
                _ if started.elapsed() > Duration::from_secs(10) => return Ok("cold"),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn measure(&mut self, bin: &Path, allocations: usize) -> Result<String> {
        let node = self.node.as_ref().context("devnet")?;
        let ws_url = node.ws_url();
        let chain = Subtensor::new(&ws_url)?;
        let miner_key = Keypair::generate(12)?;
        let validator = Keypair::generate(12)?;
        let coldkey = Keypair::generate(12)?;
        let wallet_dir = self.dir.join("wallets");
        Wallet::new(&wallet_dir, WALLET, HOTKEY).write_hotkey(&miner_key)?;
        self.scope = Some(miner_key.ss58());
        self.rt.block_on(async {
            ops::fund(&chain, &self.owner, &[(coldkey.account_id(), 10_000_000_000_000)]).await?;
            ops::register(&chain, &coldkey, &miner_key.account_id(), NETUID).await?;
            ops::register(&chain, &coldkey, &validator.account_id(), NETUID).await?;
            ops::stake_to(&chain, &coldkey, &validator.account_id(), NETUID, 5_000_000_000_000).await?;
            anyhow::Ok(())
        })?;

        let (axon_port, ssh_port) = (free_port()?, free_port()?);
        let mut cmd = Command::new(bin);
        cmd.args(["miner", "run", "--runtime", self.runtime.as_str(), "--subtensor.chain_endpoint", &ws_url])
            .args(["--netuid", &NETUID.to_string(), "--wallet.path"])
            .arg(&wallet_dir)
            .args(["--wallet.name", WALLET, "--wallet.hotkey", HOTKEY, "--axon.ip", "127.0.0.1"])
            .args(["--axon.port", &axon_port.to_string(), "--ssh.port", &ssh_port.to_string()])
            .args(["--ssh.bind_ip", "127.0.0.1", "--state-dir"])
            .arg(self.state_dir())
            .args(["--min-stake", "0", "--simulate-gpu", "NVIDIA H100 80GB HBM3:81559:1"])
            .args(["--warm-containers", &self.warm.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.log_path())?);
        let t_start = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("miner stdout")?;
        let pid = child.id();
        self.miner = Some(child);

        // The miner prints one line once it serves; keep draining so later writes never block.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).context("the miner did not say it is serving")?;
        eprintln!("bench: {}", line.trim());

        let target = AxonTarget::new("127.0.0.1", axon_port, &miner_key.account_id());
        let dendrite = Dendrite::new(validator);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.rt.block_on(dendrite.call(&target, Specs::default(), Duration::from_secs(5)));
            if r.is_success() && !r.synapse.specs_output.is_empty() {
                break;
            }
            ensure!(Instant::now() < deadline, "the miner's axon does not answer Specs: {:?}", r.status_message());
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("bench: miner ({} runtime) answers Specs {:.2} s after exec", self.runtime.as_str(), secs(t_start));

        std::thread::sleep(Duration::from_secs(2));
        let idle = Memory::of(pid)?;
        println!("miner idle RSS: {:.1} MiB (peak {:.1} MiB)", idle.rss_mib(), idle.hwm_mib());
        println!("  {}", idle.detail());

        let requirement = json!({"cpu": {"count": 1}, "gpu": {}, "hard_disk": {"capacity": 1_073_741_824u64},
                                 "ram": {"capacity": 1_073_741_824u64}});
        let requirement = requirement.as_object().cloned().unwrap_or_default();
        let (mut responses, mut logins) = (Vec::new(), Vec::new());
        println!(
            "{:>4} {:>18} {:>26} {:>16} {:>10}",
            "run", "allocate response", "allocate → SSH login ready", "deallocate", "container"
        );
        for i in 1..=allocations {
            let key = AllocationKey::generate()?;
            let public_key = key.public_pem()?;
            let mut alloc = Allocate {
                timeline: 1,
                checking: false,
                public_key: public_key.clone(),
                device_requirement: requirement.clone(),
                ..Allocate::default()
            };
            alloc.docker_requirement.insert("ttl_seconds".into(), json!(600));
            let warm = self.wait_for_warm()?;

            let t0 = Instant::now();
            let r = self.rt.block_on(dendrite.call(&target, alloc, CALL_TIMEOUT));
            let response = t0.elapsed();
            ensure!(r.is_success(), "allocate {i}: {:?} {:?}", r.status_code(), r.status_message());
            ensure!(status(&r.synapse.output), "allocate {i} refused: {:?}", r.synapse.output);
            let info = r.synapse.output.get("info").and_then(Value::as_str).context("no info in the answer")?;
            let creds = key.decrypt_credentials(info)?;
            ensure!(creds.port == ssh_port, "credentials name port {}, expected {ssh_port}", creds.port);
            let attempts = ssh_until_ready(ssh_port, creds.password.expose_secret(), t0)
                .with_context(|| format!("allocation {i}: SSH login"))?;
            let login = t0.elapsed();

            let t1 = Instant::now();
            let dealloc = Allocate { timeline: 0, checking: false, public_key, ..Allocate::default() };
            let r = self.rt.block_on(dendrite.call(&target, dealloc, CALL_TIMEOUT));
            ensure!(r.is_success() && status(&r.synapse.output), "deallocate {i}: {:?}", r.synapse.output);
            wait_ssh_closed(ssh_port).with_context(|| format!("allocation {i}: deallocate"))?;
            let gone = t1.elapsed();

            println!(
                "{i:>4} {:>16.0} ms {:>24.0} ms {:>13.0} ms {:>10}   ({attempts} SSH attempt{})",
                ms(response),
                ms(login),
                ms(gone),
                warm,
                if attempts == 1 { "" } else { "s" }
            );
            responses.push(response);
            logins.push(login);
        }
        let mut line = String::new();
        if allocations > 0 {
            line = summary(&mut logins);
            println!(
                "allocate → SSH login ready ({} runtime, --warm-containers {}, {allocations} runs): {line}",
                self.runtime.as_str(),
                self.warm,
            );
            println!(
                "allocate response ({} runtime, {allocations} runs): {}",
                self.runtime.as_str(),
                summary(&mut responses)
            );
            let after = Memory::of(pid)?;
            println!(
                "miner RSS after {allocations} allocations: {:.1} MiB (peak {:.1} MiB)",
                after.rss_mib(),
                after.hwm_mib()
            );
            println!("  {}", after.detail());
        }
        Ok(line)
    }

    fn show_miner_log(&self) {
        let Ok(log) = std::fs::read_to_string(self.log_path()) else { return };
        let lines: Vec<&str> = log.lines().collect();
        if lines.is_empty() {
            return;
        }
        eprintln!("bench: the miner's stderr (last lines):");
        for l in &lines[lines.len().saturating_sub(30)..] {
            eprintln!("  {l}");
        }
    }

    fn cleanup(&mut self) {
        if let Some(mut child) = self.miner.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                    _ => {
                        eprintln!("bench: the miner did not stop on SIGTERM within 10 s; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        // The warm container, or one of a run that failed mid-allocation, is left for the
        // miner's next start to reconcile; there is none, so remove them here.
        if self.runtime == Runtime::Docker && self.scope.is_some() {
            let removed = self.rt.block_on(async {
                let (docker, list) = self.containers().await?;
                for c in &list {
                    docker.remove(&c.id).await?;
                }
                anyhow::Ok(list.len())
            });
            match removed {
                Ok(0) => {}
                Ok(n) => eprintln!("bench: removed {n} leftover container(s)"),
                Err(e) => eprintln!("bench: could not remove leftover containers: {e}"),
            }
        }
        if let Some(node) = self.node.take() {
            self.rt.block_on(node.shutdown());
        }
    }
}

fn status(output: &Map<String, Value>) -> bool {
    output.get("status").and_then(Value::as_bool).unwrap_or(false)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `ssh … true` with the password every 50 ms until it succeeds; returns the number of attempts.
fn ssh_until_ready(port: u16, password: &str, since: Instant) -> Result<usize> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let out = Command::new("sshpass")
            .arg("-e")
            .args(["ssh", "-p", &port.to_string(), "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "PubkeyAuthentication=no", "-o", "ConnectTimeout=5"])
            .args(["-o", "LogLevel=ERROR", "root@127.0.0.1", "true"])
            .env("SSHPASS", password)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("running sshpass")?;
        if out.status.success() {
            return Ok(attempts);
        }
        if since.elapsed() > SSH_DEADLINE {
            bail!(
                "no login within {} s ({attempts} attempts; last: {})",
                SSH_DEADLINE.as_secs(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether an SSH server answers on the port (a banner, not just an accepted connection: a
/// port proxy may accept and then close).
fn ssh_answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut banner = [0u8; 4];
    s.read_exact(&mut banner).is_ok() && &banner == b"SSH-"
}

fn wait_ssh_closed(port: u16) -> Result<()> {
    let deadline = Instant::now() + SSH_DEADLINE;
    while ssh_answers(port) {
        ensure!(
            Instant::now() < deadline,
            "port {port} still answers SSH {} s after deallocation",
            SSH_DEADLINE.as_secs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Memory figures of a process from /proc/<pid>/status, in KiB.
struct Memory {
    rss: u64,
    hwm: u64,
    anon: u64,
    file: u64,
    threads: u64,
}

impl Memory {
    fn of(pid: u32) -> Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status (did the miner exit?)"))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Ok(Self {
            rss: field("VmRSS"),
            hwm: field("VmHWM"),
            anon: field("RssAnon"),
            file: field("RssFile"),
            threads: field("Threads"),
        })
    }

    fn rss_mib(&self) -> f64 {
        self.rss as f64 / 1024.0
    }

    fn hwm_mib(&self) -> f64 {
        self.hwm as f64 / 1024.0
    }

    fn detail(&self) -> String {
        format!(
            "anonymous {:.1} MiB, file-backed {:.1} MiB, {} threads",
            self.anon as f64 / 1024.0,
            self.file as f64 / 1024.0,
            self.threads
        )
    }
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// p50/p90/max (nearest rank) in milliseconds.
fn summary(times: &mut [Duration]) -> String {
    times.sort();
    let rank = |p: f64| times[((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
    format!("p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms", ms(rank(0.5)), ms(rank(0.9)), ms(times[times.len() - 1]))
}
