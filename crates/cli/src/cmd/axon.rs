//! `nicompute axon set --ip IP --port P [--version V]`: publishes where the wallet's hotkey serves
//! its axon (`SubtensorModule.serve_axon`, signed by the hotkey; it costs no fee). Sends nothing
//! when the chain already has that endpoint, as the SDK does; the runtime's refusals
//! (`InvalidIpAddress`, `ServingRateLimitExceeded`) come back by name with what to do.

use std::net::IpAddr;

use clap::{Args, Subcommand};

use super::serving::{self, ServeArgs};
use crate::opts::GlobalOpts;
use crate::output::Output;
use bittensor::subtensor::serve::{Endpoint, Kind};

#[derive(Debug, Subcommand)]
pub enum AxonCommand {
    /// Publish the wallet hotkey's axon (ip, port, version) on --netuid.
    #[command(disable_version_flag = true)]
    Set(AxonSetArgs),
}

#[derive(Debug, Args)]
pub struct AxonSetArgs {
    /// The address validators reach the axon at.
    #[arg(long)]
    pub ip: IpAddr,
    /// The axon's port.
    #[arg(long)]
    pub port: u16,
    /// The version published with it [default: the SN27 protocol version nicompute speaks]
    #[arg(long)]
    pub version: Option<u32>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl AxonCommand {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        match self {
            AxonCommand::Set(a) => a.run(g, out).await,
        }
    }
}

impl AxonSetArgs {
    async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let version = self.version.unwrap_or(compute::miner::COMPUTE_VERSION_INT as u32);
        let endpoint = Endpoint { ip: self.ip, port: self.port, version };
        serving::run(g, out, Kind::Axon, |_| Ok(endpoint), &self.serve).await
    }
}
