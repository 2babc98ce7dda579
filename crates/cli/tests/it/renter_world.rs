//! A devnet with a staked renter wallet, miner hotkeys registered on demand, and the `nicompute`
//! binary run against it: shared by the shell, Ctrl-C, Docker and SN27-database tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bittensor::dendrite::{AxonTarget, Dendrite};
use bittensor::devnet::{self, ops, DevnetConfig};
use bittensor::subtensor::Subtensor;
use bittensor::wallet::Wallet;
use bittensor::{AccountId, Keypair};
use compute::protocol::Specs;
use serde_json::Value;

pub const H100: &str = "NVIDIA H100 80GB HBM3:81559:1";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A registered miner hotkey (wallet `miner<i>`), its axon and SSH ports, its state directory.
pub struct MinerSlot {
    pub key: Keypair,
    pub wallet: String,
    pub axon_port: u16,
    pub ssh_port: u16,
    pub state: tempfile::TempDir,
}

pub struct World {
    pub chain: devnet::DevnetHandle,
    pub client: Subtensor,
    pub wallets: tempfile::TempDir,
    pub db_dir: tempfile::TempDir,
    pub home: tempfile::TempDir,
    pub renter: Keypair,
    cold: AccountId,
    miners: usize,
}

impl World {
    pub async fn new() -> World {
        let chain_dir = tempfile::tempdir().expect("tmp");
        let chain = devnet::spawn(DevnetConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            block_time: Duration::from_secs(1),
            ..DevnetConfig::new(chain_dir.keep())
        })
        .await
        .expect("devnet");
        let client = Subtensor::new(&chain.ws_url()).expect("client");
        let cold = Keypair::generate(12).expect("k").account_id();
        let renter = Keypair::generate(12).expect("k");
        ops::register(&client, &renter, &cold, 27).await.expect("register renter");
        ops::set_stake(&client, &renter, 27, 5_000_000_000_000, 0).await.expect("stake");
        let wallets = tempfile::tempdir().expect("tmp");
        Wallet::new(wallets.path(), "renter", "default").write_hotkey(&renter).expect("wallet");
        World {
            chain,
            client,
            wallets,
            db_dir: tempfile::tempdir().expect("tmp"),
            home: tempfile::tempdir().expect("tmp"),
            renter,
            cold,
            miners: 0,
        }
    }

    /// Registers a new miner hotkey on netuid 27 and writes it to a wallet of its own.
    pub async fn add_miner(&mut self) -> MinerSlot {
        let key = Keypair::generate(12).expect("k");
        ops::register(&self.client, &key, &self.cold, 27).await.expect("register miner");
        let wallet = format!("miner{}", self.miners);
        self.miners += 1;
        Wallet::new(self.wallets.path(), wallet.as_str(), "default").write_hotkey(&key).expect("wallet");
        MinerSlot {
            key,
            wallet,
            axon_port: free_port(),
            ssh_port: free_port(),
            state: tempfile::tempdir().expect("tmp"),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.db_dir.path().join("database.db")
    }

    /// The start-up flags of every renter command: chain, netuid, wallet, database.
    pub fn global_args(&self) -> Vec<String> {
        vec![
            "--subtensor.chain_endpoint".into(),
            self.chain.ws_url(),
            "--netuid".into(),
            "27".into(),
            "--wallet.path".into(),
            self.wallets.path().display().to_string(),
            "--wallet.name".into(),
            "renter".into(),
            "--db".into(),
            self.db().display().to_string(),
        ]
    }

    /// The binary with HOME set to this world's and no outside database or data directory.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nicompute"));
        c.env("HOME", self.home.path()).env_remove("NICOMPUTE_DB").env_remove("XDG_DATA_HOME");
        c
    }

    /// `nicompute <global flags> <args>` one-shot, off the async runtime, without a terminal.
    pub async fn cli(&self, args: &[&str]) -> Output {
        let mut c = self.command();
        c.args(self.global_args()).args(args).stdin(Stdio::null());
        tokio::task::spawn_blocking(move || c.output().expect("run")).await.expect("join")
    }

    /// `nicompute miner run` for `m` with `runtime` and a simulated GPU.
    pub fn spawn_miner(&self, m: &MinerSlot, runtime: &str, gpu: &str) -> Child {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nicompute"));
        c.args(["miner", "run", "--runtime", runtime, "--netuid", "27", "--min-stake", "0"])
            .args(["--metagraph-refresh", "1s", "--subtensor.chain_endpoint", &self.chain.ws_url()])
            .arg("--wallet.path")
            .arg(self.wallets.path())
            .args(["--wallet.name", &m.wallet])
            .args(["--axon.ip", "127.0.0.1", "--axon.port", &m.axon_port.to_string()])
            .args(["--ssh.port", &m.ssh_port.to_string(), "--ssh.bind_ip", "127.0.0.1"])
            .arg("--state-dir")
            .arg(m.state.path())
            .args(["--simulate-gpu", gpu])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn miner")
    }

    /// Waits until `m`'s axon answers a Specs request from the renter.
    pub async fn wait_ready(&self, m: &MinerSlot) {
        let target = AxonTarget::new("127.0.0.1", m.axon_port, &m.key.account_id());
        let d = Dendrite::new(self.renter.clone());
        let deadline = Instant::now() + Duration::from_secs(90);
        while !d.call(&target, Specs::default(), Duration::from_secs(2)).await.is_success() {
            assert!(Instant::now() < deadline, "the miner {} did not come up", m.key.ss58());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", text(&out.stdout), text(&out.stderr)))
}

/// SIGTERM, then up to 15 s for it to end, then SIGKILL.
pub fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A new passphrase-less ed25519 key pair in `dir`; returns the private key's path.
pub fn keygen(dir: &Path) -> PathBuf {
    let path = dir.join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    path
}

/// Runs a Python 3 snippet with `args` (as `sys.argv[1:]`); its stdout, failing on error.
pub fn python(code: &str, args: &[&str]) -> String {
    let out = Command::new("python3").arg("-c").arg(code).args(args).stdin(Stdio::null()).output().expect("python3");
    assert!(out.status.success(), "python3 failed: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Counts the rows of `table` in the SQLite file `db`, read with Python's sqlite3.
pub fn count_rows(db: &Path, table: &str) -> u64 {
    let code = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n\
                print(c.execute('SELECT count(*) FROM ' + sys.argv[2]).fetchone()[0])";
    python(code, &[db.to_str().expect("utf8"), table]).trim().parse().expect("count")
}

/// The Docker runtime, or `None` (after saying so) where no daemon answers — unless
/// `NICOMPUTE_REQUIRE_DOCKER=1` (CI), where that is a failure.
pub async fn docker() -> Option<compute::runtime::docker::DockerRuntime> {
    use compute::runtime::docker::{DockerConfig, DockerRuntime};
    let required = std::env::var("NICOMPUTE_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    match DockerRuntime::connect(DockerConfig::default()).await {
        Ok(d) if d.ensure_image().await.is_ok() => Some(d),
        other => {
            let why = match other {
                Ok(_) => "the nicompute/sshd image is missing (scripts/build-ssh-image.sh)".to_owned(),
                Err(e) => e.to_string(),
            };
            assert!(!required, "Docker is required here: {why}");
            #[allow(clippy::print_stderr)]
            {
                eprintln!("skipped: no Docker daemon ({why})");
            }
            None
        }
    }
}
