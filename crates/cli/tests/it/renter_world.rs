//! A devnet with a staked renter wallet, miner hotkeys registered on demand, and the `nicompute`
//! binary run against it: shared by the shell, Ctrl-C, Docker and SN27-database tests.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use crate::common::H100;
pub use crate::harness::{count_rows, docker, json, keygen, python, text, MinerProc};
use crate::harness::{nicompute, PortLease};
use bittensor::dendrite::{AxonTarget, Dendrite};
use bittensor::devnet::{self, ops, DevnetConfig};
use bittensor::subtensor::calls::RAO_PER_TAO;
use bittensor::subtensor::Subtensor;
use bittensor::wallet::Wallet;
use bittensor::Keypair;
use compute::protocol::Specs;

/// A registered miner hotkey (wallet `miner<i>`) and its state directory. Its ports are the
/// process's ([`MinerProc`]); only the Docker runtime, whose daemon publishes the SSH port
/// itself, gets a fixed one, leased here.
pub struct MinerSlot {
    pub key: Keypair,
    pub wallet: String,
    pub state: tempfile::TempDir,
    docker_ssh: OnceLock<PortLease>,
}

pub struct World {
    pub chain: devnet::DevnetHandle,
    pub client: Subtensor,
    pub wallets: tempfile::TempDir,
    pub db_dir: tempfile::TempDir,
    pub home: tempfile::TempDir,
    pub renter: Keypair,
    /// The coldkey that owns (registered and staked) every hotkey of this world.
    cold: Keypair,
    miners: usize,
}

impl World {
    pub async fn new() -> World {
        let chain_dir = tempfile::tempdir().expect("tmp");
        let owner = Keypair::generate(12).expect("k");
        let chain = devnet::spawn(DevnetConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            block_time: Duration::from_secs(1),
            ..DevnetConfig::new(chain_dir.keep(), owner.account_id())
        })
        .await
        .expect("devnet");
        let client = Subtensor::new(&chain.ws_url()).expect("client");
        let cold = Keypair::generate(12).expect("k");
        let renter = Keypair::generate(12).expect("k");
        ops::fund(&client, &owner, &[(cold.account_id(), 1_000_000 * RAO_PER_TAO)]).await.expect("fund");
        ops::register(&client, &cold, &renter.account_id(), 27).await.expect("register renter");
        ops::stake_to(&client, &cold, &renter.account_id(), 27, 5_000_000_000_000).await.expect("stake");
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
        ops::register(&self.client, &self.cold, &key.account_id(), 27).await.expect("register miner");
        let wallet = format!("miner{}", self.miners);
        self.miners += 1;
        Wallet::new(self.wallets.path(), wallet.as_str(), "default").write_hotkey(&key).expect("wallet");
        MinerSlot { key, wallet, state: tempfile::tempdir().expect("tmp"), docker_ssh: OnceLock::new() }
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

    /// The binary with this world's HOME and nothing from the outside environment.
    pub fn command(&self) -> Command {
        nicompute(self.home.path())
    }

    /// `nicompute <global flags> <args>` one-shot, off the async runtime, without a terminal.
    pub async fn cli(&self, args: &[&str]) -> Output {
        let mut c = self.command();
        c.args(self.global_args()).args(args);
        tokio::task::spawn_blocking(move || c.output().expect("run")).await.expect("join")
    }

    /// `nicompute miner run` for `m` with `runtime` and a simulated GPU, on ports it binds itself
    /// (the SSH port is fixed for Docker) and reports.
    pub async fn spawn_miner(&self, m: &MinerSlot, runtime: &str, gpu: &str) -> MinerProc {
        self.spawn_miner_with(m, runtime, gpu, &[]).await
    }

    /// [`World::spawn_miner`] with these variables added to its environment.
    pub async fn spawn_miner_with(&self, m: &MinerSlot, runtime: &str, gpu: &str, env: &[(&str, &str)]) -> MinerProc {
        let ssh_port = match runtime {
            "docker" => m.docker_ssh.get_or_init(PortLease::new).port(),
            _ => 0,
        };
        let mut c = self.command();
        c.args(["miner", "run", "--runtime", runtime, "--netuid", "27", "--min-stake", "0"])
            .args(["--metagraph-refresh", "1s", "--subtensor.chain_endpoint", &self.chain.ws_url()])
            .arg("--wallet.path")
            .arg(self.wallets.path())
            .args(["--wallet.name", &m.wallet])
            .args(["--axon.ip", "127.0.0.1", "--axon.port", "0"])
            .args(["--ssh.port", &ssh_port.to_string(), "--ssh.bind_ip", "127.0.0.1"])
            .arg("--state-dir")
            .arg(m.state.path())
            .args(["--simulate-gpu", gpu])
            .envs(env.iter().copied());
        // Off the async workers: the devnet answering the miner runs on them.
        tokio::task::spawn_blocking(move || MinerProc::spawn(c)).await.expect("join")
    }

    /// Waits until the miner `p` of `m` answers a Specs request from the renter.
    pub async fn wait_ready(&self, m: &MinerSlot, p: &MinerProc) {
        let target = AxonTarget::new("127.0.0.1", p.axon_port, &m.key.account_id());
        let d = Dendrite::new(self.renter.clone());
        let deadline = Instant::now() + Duration::from_secs(90);
        while !d.call(&target, Specs::default(), Duration::from_secs(2)).await.is_success() {
            assert!(Instant::now() < deadline, "the miner {} did not come up", m.key.ss58());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
