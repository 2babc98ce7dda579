//! A devnet directory: its layout on disk, its state file (`devnet.json`: ports, keys and the
//! processes `up` started) and the control of those processes. Every other devnet command
//! reads the network through this module, so what "running" and "healthy" mean is decided once.
//!
//! Processes are identified by pid *and* start time (from `/proc`), so a recycled pid is never
//! mistaken for a devnet process, and a zombie counts as exited.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use bittensor::dendrite::{AxonTarget, Dendrite};
use bittensor::devnet::ops;
use bittensor::subtensor::Subtensor;
use bittensor::{AccountId, Keypair};
use compute::protocol::Specs;
use serde::{Deserialize, Serialize};

/// The file `up` keeps the network's state in.
pub const STATE_FILE: &str = "devnet.json";
/// 2: the chain's kind, miners' own loopback addresses, a chain of real extrinsics.
const STATE_VERSION: u32 = 2;

/// Where everything of one devnet lives.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    pub fn wallets(&self) -> PathBuf {
        self.dir.join("wallets")
    }
    pub fn chain_dir(&self) -> PathBuf {
        self.dir.join("chain")
    }
    pub fn db(&self) -> PathBuf {
        self.dir.join("database.db")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }
    /// The log of the process a miner runs in: its own, or its group's.
    pub fn miner_log(&self, m: &MinerState) -> PathBuf {
        match m.group {
            Some(g) => self.log(&format!("miners-{g}")),
            None => self.log(&m.name),
        }
    }
    pub fn miner_dir(&self, name: &str) -> PathBuf {
        self.dir.join("miners").join(name)
    }

    /// Takes the directory's lock (waits for another `up`/`down` on it to finish).
    pub fn lock(&self) -> anyhow::Result<File> {
        use rustix::fs::{flock, FlockOperation};
        let path = self.dir.join(".lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
            tracing::warn!("another devnet command is working on {}; waiting for it", self.dir.display());
            flock(&f, FlockOperation::LockExclusive).with_context(|| format!("locking {}", path.display()))?;
        }
        Ok(f)
    }
}

/// What `up` made and started; written after every change so `down` can always clean up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub netuid: u16,
    /// `docker` or `local`.
    pub runtime: String,
    pub chain: ChainState,
    pub validator: ValidatorState,
    pub miners: Vec<MinerState>,
}

/// Which chain a devnet runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    /// nicompute's embedded chain (`nicompute devnet chain`).
    Embedded,
    /// The real Subtensor runtime under chopsticks.
    Runtime,
}

impl std::fmt::Display for ChainKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChainKind::Embedded => "embedded",
            ChainKind::Runtime => "runtime",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainState {
    pub kind: ChainKind,
    pub port: u16,
    pub block_time_ms: u64,
    /// chopsticks' block mode (`Instant` or `Batch`) on the runtime chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_mode: Option<String>,
    pub process: Option<Proc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidatorState {
    pub wallet_name: String,
    pub wallet_hotkey: String,
    pub hotkey: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinerState {
    /// Also its wallet name and log name.
    pub name: String,
    pub hotkey: String,
    /// The loopback address it binds and publishes (127.0.0.2, 127.0.0.3, …: the runtime
    /// refuses 127.0.0.1).
    pub ip: String,
    pub axon_port: u16,
    pub ssh_port: u16,
    /// The `--simulate-gpu` value (`none` for CPU-only).
    pub gpu: String,
    pub process: Option<Proc>,
    /// With `--miners-per-process` above 1, the `miner group` process it runs in (its members
    /// share `process` and a log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u16>,
}

impl State {
    pub fn new(
        netuid: u16,
        runtime: &str,
        chain: ChainKind,
        chain_port: u16,
        block_time: Duration,
        validator: ValidatorState,
    ) -> Self {
        Self {
            version: STATE_VERSION,
            netuid,
            runtime: runtime.to_owned(),
            chain: ChainState {
                kind: chain,
                port: chain_port,
                block_time_ms: block_time.as_millis() as u64,
                block_mode: None,
                process: None,
            },
            validator,
            miners: Vec::new(),
        }
    }

    pub fn load(layout: &Layout) -> anyhow::Result<Option<Self>> {
        let path = layout.state();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let s: State = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a devnet state file this version understands", path.display()))?;
        anyhow::ensure!(
            s.version == STATE_VERSION,
            "{} has state version {} (this nicompute reads {STATE_VERSION}); remove it with `nicompute devnet down --delete`",
            path.display(),
            s.version
        );
        Ok(Some(s))
    }

    pub fn save(&self, layout: &Layout) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        crate::config::write_private(&layout.state(), &bytes)
            .with_context(|| format!("writing {}", layout.state().display()))
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.chain.port)
    }

    /// Where the chain's state is: the embedded chain's directory, or chopsticks' database.
    pub fn chain_label(&self) -> String {
        match self.chain.kind {
            ChainKind::Embedded => "embedded devnet chain".into(),
            ChainKind::Runtime => "the real Subtensor runtime (chopsticks)".into(),
        }
    }
}

/// A process `up` started: pid plus its start time in clock ticks since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    pub pid: u32,
    pub start_ticks: u64,
}

/// `(state letter, start ticks)` of a pid from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

impl Proc {
    /// Whether this very process still runs (not exited, not a zombie, pid not recycled).
    pub fn alive(&self) -> bool {
        matches!(proc_stat(self.pid), Some((s, t)) if t == self.start_ticks && s != 'Z' && s != 'X')
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL. True if it is gone.
    pub fn terminate(&self, grace: Duration) -> bool {
        use rustix::process::{kill_process, Pid, Signal};
        let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) else { return true };
        if !self.alive() {
            return true;
        }
        let _ = kill_process(pid, Signal::TERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(pid = self.pid, "did not stop within {grace:?} of SIGTERM; killing it");
        let _ = kill_process(pid, Signal::KILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !self.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// Starts this binary with `args` in a process group of its own (so a Ctrl-C at the terminal
/// that ran `up` does not reach it), stdin closed, output appended to `log`.
pub fn spawn_detached(args: &[String], log: &Path) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe().context("finding the nicompute binary")?;
    spawn_program(&exe, args, log)
}

/// Starts `program` with `args` detached like [`spawn_detached`].
pub fn spawn_program(program: &Path, args: &[String], log: &Path) -> anyhow::Result<Proc> {
    use std::os::unix::process::CommandExt;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening the log {}", log.display()))?;
    let err = out.try_clone()?;
    let child = Command::new(program)
        .args(args)
        .env_remove(crate::opts::CONFIG_ENV)
        .env_remove(crate::opts::DB_ENV)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting `{} {}`", program.display(), args.join(" ")))?;
    let pid = child.id();
    // The child is not waited for: it outlives this command (init reaps it).
    drop(child);
    let (_, start_ticks) =
        proc_stat(pid).with_context(|| format!("process {pid} ended at once; see {}", log.display()))?;
    Ok(Proc { pid, start_ticks })
}

/// The last `n` lines of a log (for error messages).
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A port on 127.0.0.1 nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?.local_addr()?.port())
}

/// Whether the chain answers: as a nicompute devnet (embedded), or as chopsticks running the
/// runtime (it offers `dev_setStorage`).
pub async fn chain_healthy(ws_url: &str, kind: ChainKind) -> bool {
    let Ok(client) = Subtensor::new(ws_url) else { return false };
    let check = async {
        match kind {
            ChainKind::Embedded => ops::is_devnet(&client).await.unwrap_or(false),
            ChainKind::Runtime => client.request("rpc_methods", serde_json::json!([])).await.is_ok_and(|v| {
                v.get("methods")
                    .and_then(serde_json::Value::as_array)
                    .is_some_and(|m| m.iter().any(|x| x.as_str() == Some("dev_setStorage")))
            }),
        }
    };
    tokio::time::timeout(Duration::from_secs(2), check).await.unwrap_or(false)
}

/// Whether the miner's axon at `ip:axon_port` answers a signed Specs request from `caller`.
pub async fn miner_healthy(caller: &Keypair, hotkey: &str, ip: &str, axon_port: u16) -> bool {
    let Ok(account) = AccountId::from_ss58(hotkey) else { return false };
    let target = AxonTarget::new(ip, axon_port, &account);
    Dendrite::new(caller.clone()).call(&target, Specs::default(), Duration::from_secs(3)).await.is_success()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let (_, t) = proc_stat(std::process::id()).expect("stat");
        assert!(Proc { pid: std::process::id(), start_ticks: t }.alive());
        assert!(!Proc { pid: std::process::id(), start_ticks: t + 1 }.alive(), "a recycled pid is not ours");
        assert!(!Proc { pid: u32::MAX - 1, start_ticks: t }.alive());
    }

    #[test]
    fn terminate_stops_a_process_and_reports_an_exited_one_as_gone() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
        let (_, t) = proc_stat(child.id()).expect("stat");
        let p = Proc { pid: child.id(), start_ticks: t };
        assert!(p.alive());
        // Reap it from another thread so it does not linger as our zombie.
        let reaper = std::thread::spawn(move || child.wait());
        assert!(p.terminate(Duration::from_secs(5)));
        assert!(!p.alive());
        reaper.join().expect("join").expect("wait");
        assert!(p.terminate(Duration::from_secs(1)), "already gone");
    }
}
