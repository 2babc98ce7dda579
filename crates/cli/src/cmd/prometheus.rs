//! `nicompute prometheus set --version V [--ip IP --port P]`: publishes the wallet hotkey's
//! prometheus endpoint and version (`SubtensorModule.serve_prometheus`, signed by the hotkey).
//!
//! This is the renter's stamp for SN27's version gate: miners of SN27 v2.x admit a validator or
//! renter only when its on-chain prometheus version is at least their minimal validator version
//! (221 for SN27 2.2.1), and refuse it otherwise ("… request from a non-updated hotkey").

use std::net::IpAddr;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::serving::{self, ServeArgs};
use crate::opts::GlobalOpts;
use crate::output::Output;
use bittensor::subtensor::serve::{Endpoint, Kind};

/// bittensor's default prometheus port.
const DEFAULT_PORT: u16 = 7091;

#[derive(Debug, Subcommand)]
pub enum PrometheusCommand {
    /// Stamp the wallet hotkey's version on --netuid (SN27 v2.x miners gate renters on it: --version 221 for 2.2.1).
    #[command(disable_version_flag = true)]
    Set(PrometheusSetArgs),
}

#[derive(Debug, Args)]
pub struct PrometheusSetArgs {
    /// The version to publish. SN27 miners compare it with their minimal validator version
    /// (100·major + 10·minor + patch: 221 for SN27 2.2.1) and refuse allocations from below it.
    #[arg(long)]
    pub version: u32,
    /// The address published [default: the current prometheus address, else the axon's]
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// The port published [default: the current prometheus port, else 7091]
    #[arg(long)]
    pub port: Option<u16>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl PrometheusCommand {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        match self {
            PrometheusCommand::Set(a) => a.run(g, out).await,
        }
    }
}

impl PrometheusSetArgs {
    async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let (version, ip, port) = (self.version, self.ip, self.port);
        serving::run(
            g,
            out,
            Kind::Prometheus,
            move |now| {
                let ip = match ip {
                    Some(ip) => ip,
                    None => match [&now.prometheus, &now.axon].into_iter().find(|c| c.ip != "0.0.0.0") {
                        Some(c) => c.ip.parse()?,
                        None => bail!("this hotkey has no prometheus or axon address on chain yet: give --ip"),
                    },
                };
                let port = port.unwrap_or(if now.prometheus.port != 0 { now.prometheus.port } else { DEFAULT_PORT });
                Ok(Endpoint { ip, port, version })
            },
            &self.serve,
        )
        .await
    }
}
