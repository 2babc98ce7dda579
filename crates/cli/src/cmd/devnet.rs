//! `nicompute devnet`: the whole network on one machine. `chain` runs the devnet chain in the
//! foreground: the Subtensor JSON-RPC subset over WebSocket and HTTP on one port, state in
//! SQLite under `--dir`, blocks every `--block-time`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bittensor::devnet::{self, DevnetConfig};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::opts::{data_dir, parse_duration, GlobalOpts};
use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum DevnetCommand {
    /// Run the devnet chain in the foreground until Ctrl-C or SIGTERM.
    Chain(ChainArgs),
}

#[derive(Debug, Args)]
pub struct ChainArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 9944)]
    pub port: u16,
    /// Where the chain keeps its state [default: <data dir>/devnet]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Time per block.
    #[arg(long = "block-time", value_parser = parse_duration, default_value = "12s")]
    pub block_time: Duration,
}

impl DevnetCommand {
    pub async fn run(&self, _g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        match self {
            DevnetCommand::Chain(a) => a.run(out).await,
        }
    }
}

impl ChainArgs {
    async fn run(&self, out: &mut Output) -> anyhow::Result<()> {
        let dir = self.dir.clone().unwrap_or_else(|| data_dir().join("devnet"));
        let cfg =
            DevnetConfig { bind: ([127, 0, 0, 1], self.port).into(), dir: dir.clone(), block_time: self.block_time };
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
