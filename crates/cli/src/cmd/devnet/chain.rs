//! `nicompute devnet chain`: the devnet chain in the foreground — the Subtensor JSON-RPC subset
//! over WebSocket and HTTP on one port, state in SQLite under `--dir`, a block every
//! `--block-time`. `devnet up` runs it as a background process; run it alone to build a network
//! by hand.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bittensor::devnet::{self, DevnetConfig};
use clap::Args;
use serde_json::json;

use crate::duration::parse_duration;
use crate::opts::GlobalOpts;
use crate::output::Output;

#[derive(Debug, Args)]
pub struct ChainArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 9944)]
    pub port: u16,
    /// Where the chain keeps its state [default: <data dir>/devnet/chain]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Time per block.
    #[arg(long = "block-time", value_parser = parse_duration, default_value = "12s")]
    pub block_time: Duration,
}

impl ChainArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let dir = self.dir.clone().unwrap_or_else(|| g.dirs.data_dir_or_here().join("devnet").join("chain"));
        let cfg = DevnetConfig {
            bind: ([127, 0, 0, 1], self.port).into(),
            block_time: self.block_time,
            ..DevnetConfig::new(dir.clone())
        };
        let node = devnet::spawn(cfg).await.context("starting the devnet chain")?;
        let doc = json!({"ws": node.ws_url(), "http": node.http_url(), "dir": dir.display().to_string()});
        out.result(&doc, |o| {
            writeln!(o, "devnet chain at {} (HTTP: {}), state in {}", node.ws_url(), node.http_url(), dir.display())?;
            writeln!(o, "use it with: --subtensor.chain_endpoint {}", node.ws_url())
        });
        out.note("Ctrl-C stops it; the state stays for the next start.");
        bittensor::axon::wait_for_signal().await;
        node.shutdown().await;
        Ok(())
    }
}
