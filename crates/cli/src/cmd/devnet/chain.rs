//! `nicompute devnet chain`: the embedded devnet chain in the foreground — Substrate JSON-RPC
//! over WebSocket and HTTP on one port, finney's spec-343 metadata, signed extrinsics, state in
//! SQLite under `--dir`. `devnet up` runs it as a background process; run it alone to build a
//! network by hand with any Substrate client (the Python SDK included).
//!
//! The chain's owner key is its sudo key, the only key that can fund accounts
//! (`nicompute devnet fund`). `--owner` names it; without it the key is the `owner` wallet under
//! `--dir`, created on first start (readable by this user only).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bittensor::devnet::{self, DevnetConfig, Rules};
use bittensor::subtensor::calls::{parse_tao, RAO_PER_TAO};
use bittensor::wallet::{NoPassword, Wallet};
use bittensor::AccountId;
use clap::Args;
use serde_json::json;

use crate::duration::parse_duration;
use crate::opts::GlobalOpts;
use crate::output::{Output, UsageError};

/// The wallet name of a devnet's owner key.
pub const OWNER_WALLET: &str = "owner";

#[derive(Debug, Args)]
pub struct ChainArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 9944)]
    pub port: u16,
    /// Where the chain keeps its state [default: <data dir>/devnet/chain]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Time between empty blocks (a transaction is included at once).
    #[arg(long = "block-time", value_parser = parse_duration, default_value = "12s")]
    pub block_time: Duration,
    /// The owner (sudo) key's SS58 address, written at genesis [default: the `owner` wallet under --dir]
    #[arg(long, value_name = "SS58")]
    pub owner: Option<AccountId>,
    /// Subnets at genesis besides the root subnet, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,27")]
    pub netuids: Vec<u16>,
    /// What `burned_register` costs (TAO), at genesis.
    #[arg(long, default_value = "1")]
    pub burn: String,
    /// Blocks a hotkey waits between two serves (ServingRateLimit; 0 = none), at genesis.
    #[arg(long = "serving-rate-limit", default_value_t = 0)]
    pub serving_rate_limit: u64,
    /// Registrations per block per subnet (MaxRegistrationsPerBlock), at genesis.
    #[arg(long = "max-registrations-per-block", default_value_t = 64)]
    pub max_registrations_per_block: u16,
    /// Refuse 127.0.0.1 as an axon address, as the real runtime does (other loopback addresses
    /// such as 127.0.0.2 are accepted either way).
    #[arg(long = "refuse-localhost-axon")]
    pub refuse_localhost_axon: bool,
}

/// The `owner` wallet of a devnet directory's wallets, created (unencrypted: a devnet key, in a
/// directory only its user can read) when missing.
pub fn owner_wallet(wallets: &std::path::Path) -> anyhow::Result<Wallet> {
    let w = Wallet::new(wallets, OWNER_WALLET, "default");
    if !w.coldkey_path().exists() {
        w.create(12, None).with_context(|| format!("creating the devnet owner wallet in {}", wallets.display()))?;
    }
    Ok(w)
}

impl ChainArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let dir = self.dir.clone().unwrap_or_else(|| g.dirs.data_dir_or_here().join("devnet").join("chain"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (owner, owner_note) = match self.owner {
            Some(o) => (o, format!("owner (sudo) key {o}")),
            None => {
                let wallets = dir.join("wallets");
                let w = owner_wallet(&wallets)?;
                let id = w.coldkey(&NoPassword).context("loading the owner key")?.account_id();
                (id, format!("owner (sudo) key {id}: wallet `{OWNER_WALLET}` in {}", wallets.display()))
            }
        };
        let burn = parse_tao(&self.burn).map_err(|e| UsageError(e.to_string()))?;
        let burn = u64::try_from(burn).map_err(|_| UsageError("--burn is too large".into()))?;
        let rules = Rules {
            burn,
            serving_rate_limit: self.serving_rate_limit,
            max_registrations_per_block: self.max_registrations_per_block,
            allow_localhost_axon: !self.refuse_localhost_axon,
            ..Rules::default()
        };
        let cfg = DevnetConfig {
            bind: ([127, 0, 0, 1], self.port).into(),
            block_time: self.block_time,
            netuids: self.netuids.clone(),
            rules,
            ..DevnetConfig::new(dir.clone(), owner)
        };
        let node = devnet::spawn(cfg).await.context("starting the devnet chain")?;
        let doc = json!({
            "ws": node.ws_url(),
            "http": node.http_url(),
            "dir": dir.display().to_string(),
            "owner": owner.to_ss58(),
            "burn_rao": burn,
        });
        out.result(&doc, |o| {
            writeln!(o, "devnet chain at {} (HTTP: {}), state in {}", node.ws_url(), node.http_url(), dir.display())?;
            writeln!(o, "{owner_note}")?;
            writeln!(o, "burned_register costs {} TAO", burn as f64 / RAO_PER_TAO as f64)?;
            writeln!(o, "use it with: --subtensor.chain_endpoint {}", node.ws_url())
        });
        out.note("Ctrl-C stops it; the state stays for the next start.");
        bittensor::axon::wait_for_signal().await;
        node.shutdown().await;
        Ok(())
    }
}
