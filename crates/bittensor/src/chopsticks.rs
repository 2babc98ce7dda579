//! The real Subtensor runtime on this machine: chopsticks (`@acala-network/chopsticks`) executing
//! the runtime in a chain spec's genesis, serving the standard JSON-RPC on loopback.
//!
//! [`Chopsticks::start`] runs it on a port it chooses itself (`--port 0`; the port is read from its
//! log), with a slot-aligned `--timestamp` (the runtime panics on block 1 otherwise), in `Instant`
//! block mode (one block per extrinsic) by default; [`fund`] gives accounts a balance with
//! chopsticks' own `dev_setStorage` — a development shortcut that exists only there. Installation
//! is `scripts/chain-runtime.sh install` (npm ci from the project's lockfile); this module only
//! needs the paths. The process is killed when the handle drops.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::keys::AccountId;
use crate::subtensor::Subtensor;

/// The runtime's slot: block timestamps must be multiples of it.
pub const SLOT_MS: u64 = 12_000;
/// How long start-up may take (it is 3–5 s on a quiet machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where chopsticks and its chain spec are.
#[derive(Debug, Clone)]
pub struct ChopsticksConfig {
    /// The `node` executable.
    pub node: PathBuf,
    /// chopsticks' entry script (`node_modules/@acala-network/chopsticks/chopsticks.cjs`).
    pub script: PathBuf,
    /// The raw chain spec whose genesis holds the runtime.
    pub genesis: PathBuf,
    /// 0: chopsticks picks a free port.
    pub port: u16,
    /// `Instant` (a block per extrinsic), `Batch` or `Manual`.
    pub block_mode: String,
    /// Where chopsticks' log goes (appended).
    pub log: Option<PathBuf>,
}

impl ChopsticksConfig {
    /// The layout `scripts/chain-runtime.sh install` creates under the project root.
    pub fn in_project(root: &Path) -> Self {
        let dir = root.join("tools/chain-runtime");
        Self {
            node: PathBuf::from("node"),
            script: dir.join("node_modules/@acala-network/chopsticks/chopsticks.cjs"),
            genesis: root.join("tests/fixtures/chain/raonet.json"),
            port: 0,
            block_mode: "Instant".into(),
            log: None,
        }
    }

    /// The project root above `start` (or `start` itself) that holds chopsticks' installation and
    /// the chain spec: where `scripts/chain-runtime.sh install` put them.
    pub fn find_root(start: &Path) -> Option<PathBuf> {
        start
            .ancestors()
            .find(|dir| Self::in_project(dir).script.is_file() && Self::in_project(dir).genesis.is_file())
            .map(Path::to_path_buf)
    }

    /// chopsticks' command line (after the `node` executable) for `port` and a slot-aligned
    /// `timestamp_ms`.
    pub fn args(&self, port: u16, timestamp_ms: u64) -> Vec<String> {
        vec![
            self.script.display().to_string(),
            "--genesis".into(),
            self.genesis.display().to_string(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--build-block-mode".into(),
            self.block_mode.clone(),
            "--timestamp".into(),
            timestamp_ms.to_string(),
        ]
    }

    /// Whether the installation is there (the script exists and `node` runs).
    pub fn installed(&self) -> Result<(), ChopsticksError> {
        if !self.script.is_file() {
            return Err(ChopsticksError::NotInstalled(format!(
                "chopsticks is not installed ({} is missing): run scripts/chain-runtime.sh install",
                self.script.display()
            )));
        }
        if !self.genesis.is_file() {
            return Err(ChopsticksError::NotInstalled(format!("the chain spec {} is missing", self.genesis.display())));
        }
        match Command::new(&self.node).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
            Ok(s) if s.success() => Ok(()),
            _ => Err(ChopsticksError::NotInstalled(format!(
                "Node.js ('{}') does not run; chopsticks needs Node 20 or later",
                self.node.display()
            ))),
        }
    }
}

/// Why the runtime did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChopsticksError {
    #[error("{0}")]
    NotInstalled(String),
    #[error("cannot start chopsticks: {0}")]
    Spawn(std::io::Error),
    #[error("chopsticks did not start within {seconds:.0} s; the end of its log:\n{log}")]
    Start { seconds: f64, log: String },
    #[error("funding accounts with dev_setStorage: {0}")]
    Fund(String),
    #[error("chopsticks' dev_newBlock: {0}")]
    NewBlock(String),
}

/// A running chopsticks; killed on drop.
#[derive(Debug)]
pub struct Chopsticks {
    child: Child,
    port: u16,
    /// Seconds from spawn to a listening RPC with block #1 built.
    pub startup_seconds: f64,
}

/// A timestamp that is a multiple of the slot, close to now.
pub fn slot_aligned_now_ms() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    now / SLOT_MS * SLOT_MS
}

impl Chopsticks {
    /// Starts chopsticks and waits until its RPC listens.
    pub fn start(cfg: &ChopsticksConfig) -> Result<Self, ChopsticksError> {
        cfg.installed()?;
        let started = Instant::now();
        let mut child = Command::new(&cfg.node)
            .args(cfg.args(cfg.port, slot_aligned_now_ms()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(ChopsticksError::Spawn)?;
        let (tx, rx) = mpsc::channel::<Result<u16, String>>();
        let mut log_file =
            cfg.log.as_ref().and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        // Keeps reading for as long as chopsticks runs (a full pipe would stall it), keeping the
        // last lines for the error message and forwarding everything to the log file.
        std::thread::spawn(move || {
            let mut tail: Vec<String> = Vec::new();
            let mut reported = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(f) = log_file.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if !reported {
                    if let Some(port) = listening_port(&line) {
                        reported = true;
                        let _ = tx.send(Ok(port));
                    } else {
                        tail.push(line);
                        if tail.len() > 40 {
                            tail.remove(0);
                        }
                    }
                }
            }
            if !reported {
                let _ = tx.send(Err(tail.join("\n")));
            }
        });
        let (etx, erx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let lines: Vec<String> = BufReader::new(stderr).lines().map_while(Result::ok).collect();
            let _ = etx.send(lines.iter().rev().take(20).rev().cloned().collect::<Vec<_>>().join("\n"));
        });
        let fail = |child: &mut Child, log: String| {
            let _ = child.kill();
            let _ = child.wait();
            let err = erx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
            ChopsticksError::Start { seconds: started.elapsed().as_secs_f64(), log: format!("{log}\n{err}") }
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(port)) => Ok(Self { child, port, startup_seconds: started.elapsed().as_secs_f64() }),
            Ok(Err(log)) => Err(fail(&mut child, log)),
            Err(_) => Err(fail(&mut child, "(no 'RPC listening' line)".into())),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Chopsticks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port in chopsticks' "RPC listening on http://127.0.0.1:PORT and ws://…" line.
fn listening_port(line: &str) -> Option<u16> {
    let at = line.find("RPC listening on ")?;
    let rest = &line[at..];
    let url_end = rest.find(" and ").unwrap_or(rest.len());
    rest[..url_end].rsplit(':').next()?.trim().parse().ok()
}

/// Sets the free balance of each account (rao) with `dev_setStorage`, raises
/// `Balances.TotalIssuance` by as much (the runtime refuses to withdraw — stake, burn — more than
/// the issuance it knows of), then builds a block so the change is visible at the best block.
pub async fn fund(chain: &Subtensor, accounts: &[(AccountId, u128)]) -> Result<(), ChopsticksError> {
    let fail = |e: crate::subtensor::ChainError| ChopsticksError::Fund(e.to_string());
    let issuance = chain.storage_value("Balances", "TotalIssuance", &[], None).await.map_err(fail)?;
    let issuance = issuance.as_ref().and_then(crate::extrinsic::call::value_u128).unwrap_or(0);
    let added: u128 = accounts.iter().map(|(_, rao)| *rao).sum();
    let entries: Vec<Value> = accounts
        .iter()
        .map(|(a, rao)| json!([[a.to_ss58()], {"providers": 1, "data": {"free": rao.to_string()}}]))
        .collect();
    let storage = json!({
        "System": {"Account": entries},
        "Balances": {"TotalIssuance": issuance.saturating_add(added).to_string()},
    });
    chain.request("dev_setStorage", json!([storage])).await.map_err(fail)?;
    chain.request("dev_newBlock", json!([])).await.map_err(fail)?;
    Ok(())
}

/// Builds one block at height `number` (chopsticks' `unsafeBlockHeight`): the chain skips the
/// blocks between, as if they had passed empty — how a devnet reaches a subnet's next epoch
/// without building a hundred blocks at half a second each.
pub async fn jump_to(chain: &Subtensor, number: u64) -> Result<(), ChopsticksError> {
    chain
        .request("dev_newBlock", json!([{"unsafeBlockHeight": number}]))
        .await
        .map_err(|e| ChopsticksError::NewBlock(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_from_the_log_line() {
        assert_eq!(
            listening_port(
                "[11:24:53.940] INFO: bittensor RPC listening on http://127.0.0.1:40521 and ws://127.0.0.1:40521"
            ),
            Some(40521)
        );
        assert_eq!(listening_port("RPC listening on http://[::]:9944 and ws://[::]:9944"), Some(9944));
        assert_eq!(listening_port("bittensor building #1"), None);
    }

    #[test]
    fn timestamps_are_slot_aligned() {
        assert_eq!(slot_aligned_now_ms() % SLOT_MS, 0);
    }
}
