//! `nicompute miner run`: the miner daemon in the foreground, SN27 miner flags and defaults.
//!
//! It loads the hotkey, connects to the chain (the metagraph decides who may call), detects the
//! hardware, reconciles leftovers of a previous run, serves `Allocate`/`Specs` on the axon and
//! stops cleanly on SIGTERM or Ctrl-C. The `local` runtime and simulated GPUs are refused unless
//! the chain is a devnet: neither belongs on the real network.
//!
//! `nicompute miner group --members FILE` (hidden, for `devnet up --miners-per-process`) runs
//! several such miners in one process, each from its own `miner run` command line: its own
//! hotkey, axon, SSH port, state directory and runtime, the same code as `miner run`. Only the
//! process is shared, to fit a subnet-sized devnet in less memory.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bittensor::axon::AxonConfig;
use clap::{Args, Subcommand, ValueEnum};
use compute::miner::offer::Offer;
use compute::miner::policy::PolicyConfig;
use compute::miner::{self, MetagraphSource, MinerConfig};
use compute::runtime::ContainerRuntime;
use compute::specs::{DetectOptions, SimulatedGpu};
use serde_json::json;

use crate::duration::parse_duration;
use crate::opts::GlobalOpts;
use crate::output::{Output, UsageError};

#[derive(Debug, Subcommand)]
pub enum MinerCommand {
    /// Run the miner daemon in the foreground until Ctrl-C or SIGTERM.
    Run(Box<RunArgs>),
    /// Run several devnet miners in one process (`devnet up --miners-per-process`).
    #[command(hide = true)]
    Group(GroupArgs),
}

#[derive(Debug, Args)]
pub struct GroupArgs {
    /// A JSON file: an array of command lines, each a `miner run` as `nicompute` takes it
    /// (without the program name), all of them on a development chain.
    #[arg(long, value_name = "FILE")]
    pub members: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// Docker Engine containers with sshd (production).
    Docker,
    /// An embedded SSH server per allocation; isolates nothing (devnet only).
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RenterEnv {
    Allow,
    Deny,
}

/// `--external.ports`: host ports, at most four (what the credentials carry), all distinct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalPorts(pub Vec<u16>);

fn parse_ports(s: &str) -> Result<ExternalPorts, String> {
    if s.trim() == "none" {
        return Ok(ExternalPorts(Vec::new()));
    }
    let mut ports = Vec::new();
    for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n: u16 = p.parse().ok().filter(|n| *n != 0).ok_or_else(|| format!("'{p}' is not a port"))?;
        if ports.contains(&n) {
            return Err(format!("port {n} is listed twice"));
        }
        ports.push(n);
    }
    if ports.len() > compute::protocol::docker::MAX_USER_PORTS {
        return Err(format!(
            "at most {} ports (the credentials carry no more)",
            compute::protocol::docker::MAX_USER_PORTS
        ));
    }
    Ok(ExternalPorts(ports))
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Port of the axon (the miner's synapse server; 0: any free port, reported at start).
    #[arg(long = "axon.port", visible_alias = "axon-port", default_value_t = 8091)]
    pub axon_port: u16,
    /// Address the axon listens on.
    #[arg(long = "axon.ip", visible_alias = "axon-ip", default_value = "0.0.0.0")]
    pub axon_ip: IpAddr,
    /// The address validators reach this machine at, published on chain (required unless --axon.ip is loopback).
    #[arg(long = "axon.external_ip", visible_alias = "axon-external-ip")]
    pub external_ip: Option<IpAddr>,
    /// The version published with the axon [default: the SN27 protocol version nicompute speaks]
    #[arg(long = "axon.version", visible_alias = "axon-version")]
    pub axon_version: Option<u32>,
    /// Host port renters' SSH reaches (published to the allocation's port 22; 0 with --runtime
    /// local: any free port, reported at start).
    #[arg(long = "ssh.port", visible_alias = "ssh-port", default_value_t = 4444)]
    pub ssh_port: u16,
    /// Address the SSH port is published on.
    #[arg(long = "ssh.bind_ip", visible_alias = "ssh-bind-ip", default_value = "0.0.0.0")]
    pub ssh_bind_ip: IpAddr,
    #[arg(long, value_enum, default_value_t = RuntimeKind::Docker)]
    pub runtime: RuntimeKind,
    /// The container image (needs sshd and the nicompute entrypoint; see images/sshd/README.md).
    #[arg(long, default_value = "nicompute/sshd:bookworm")]
    pub image: String,
    /// Containers kept ready for the next allocation (docker runtime): 1 (one warm container,
    /// parked where the image allows it, so an allocation only sets the credentials and
    /// unpauses or starts it) or 0 (each allocation creates its own).
    #[arg(long = "warm-containers", env = "NICOMPUTE_WARM_CONTAINERS", value_name = "0|1", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub warm_containers: u8,
    /// Only these hotkeys may call (comma-separated); empty: anyone registered with stake.
    #[arg(long = "whitelist-hotkeys", value_delimiter = ',')]
    pub whitelist: Vec<String>,
    /// These hotkeys are always refused (comma-separated).
    #[arg(long = "blacklist-hotkeys", value_delimiter = ',')]
    pub blacklist: Vec<String>,
    /// Minimum caller stake in TAO (SN27's validator threshold: 1024 in 1.8.x, 10000 in 2.x).
    #[arg(long = "min-stake", default_value_t = 1024.0)]
    pub min_stake: f64,
    /// SN27 2.x's version gate: admit only callers whose on-chain prometheus version is at least
    /// this (221 for 2.2.1), once more than --version-gate-threshold percent of validators have it.
    #[arg(long = "min-caller-version", value_name = "VERSION")]
    pub min_caller_version: Option<u32>,
    /// Percent of validators that must be updated before the version gate closes (SN27: 90).
    #[arg(long = "version-gate-threshold", value_name = "PERCENT", default_value_t = compute::miner::policy::SN27_VERSION_THRESHOLD_PCT)]
    pub version_threshold: f64,
    /// Refuse requests without nicompute's signed extension: only nicompute renters may allocate.
    #[arg(long = "require-signed-requests")]
    pub require_signed: bool,
    /// Host ports renters' extra container ports are mapped to, in order (SN27 v2.x), or `none`.
    #[arg(long = "external.ports", visible_alias = "external-ports", value_name = "PORT,…|none", default_value = "27015,27016,27017,27018", value_parser = parse_ports)]
    pub external_ports: ExternalPorts,
    /// An image renters may ask for (SN27 v2.4 `docker_requirement.image`); repeatable. Without
    /// one, every allocation runs --image.
    #[arg(long = "offer-image", value_name = "IMAGE")]
    pub offer_images: Vec<String>,
    /// Whether renters may set environment variables in their container (SN27 v2.4 `env`).
    #[arg(long = "renter-env", value_enum, default_value_t = RenterEnv::Allow)]
    pub renter_env: RenterEnv,
    /// Where the allocation state lives [default: <data dir>/miner]
    #[arg(long = "state-dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Advertise simulated GPUs "NAME:MEM_MIB[:COUNT]", or "none" (devnet and tests only).
    #[arg(long = "simulate-gpu", value_name = "NAME:MEM_MIB[:COUNT]|none")]
    pub simulate_gpu: Option<SimulatedGpu>,
    /// How often the metagraph (who may call) is refreshed.
    #[arg(long = "metagraph-refresh", value_parser = parse_duration, default_value = "2m")]
    pub metagraph_refresh: Duration,
    /// Largest request body, for every synapse (BYTES) or one (SYNAPSE=BYTES, e.g.
    /// Allocate=32KiB); repeatable [default: 16KiB]
    #[arg(long = "axon.max_body", visible_alias = "axon-max-body", value_name = "[SYNAPSE=]BYTES", value_parser = parse_body_limit)]
    pub max_body: Vec<(Option<String>, usize)>,
    /// Connections one address (an IPv6 /64) may hold open at once.
    #[arg(long = "axon.max_connections_per_ip", visible_alias = "axon-max-connections-per-ip", default_value_t = 128)]
    pub max_connections_per_ip: usize,
}

/// Lifts the soft open-file limit to the hard one: the axon admits up to `max_connections`
/// (1,024) connections, and the common soft default of 1,024 would make accept() fail first.
fn raise_open_file_limit(wanted: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    if now.is_some_and(|n| n < wanted as u64) {
        tracing::warn!(
            limit = now,
            wanted,
            "the open-file limit is below what the axon's connection cap needs; raise it (ulimit -n, LimitNOFILE=)"
        );
    }
}

/// `BYTES` or `SYNAPSE=BYTES`, bytes as a number with an optional `KiB`/`MiB` suffix.
fn parse_body_limit(s: &str) -> Result<(Option<String>, usize), String> {
    let (name, size) = match s.split_once('=') {
        Some((n, v)) if !n.trim().is_empty() => (Some(n.trim().to_owned()), v.trim()),
        Some(_) => return Err(format!("'{s}': the synapse name before '=' is empty")),
        None => (None, s.trim()),
    };
    let lower = size.to_ascii_lowercase();
    let (digits, unit) = if let Some(d) = lower.strip_suffix("kib").or_else(|| lower.strip_suffix('k')) {
        (d, 1024)
    } else if let Some(d) = lower.strip_suffix("mib").or_else(|| lower.strip_suffix('m')) {
        (d, 1024 * 1024)
    } else {
        (lower.as_str(), 1)
    };
    let n: usize =
        digits.trim().parse().map_err(|_| format!("'{size}' is not a size in bytes (e.g. 16384 or 16KiB)"))?;
    match n.checked_mul(unit) {
        Some(0) | None => Err(format!("'{size}': a body limit must be between 1 byte and what the machine can hold")),
        Some(b) => Ok((name, b)),
    }
}

impl MinerCommand {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        match self {
            MinerCommand::Run(a) => a.run(g, out).await,
            MinerCommand::Group(a) => a.run(out).await,
        }
    }
}

impl GroupArgs {
    async fn run(&self, out: &mut Output) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(&self.members)
            .with_context(|| format!("reading the members file {}", self.members.display()))?;
        let members: Vec<Vec<String>> = serde_json::from_str(&text)
            .map_err(|e| UsageError(format!("{}: not a JSON array of command lines: {e}", self.members.display())))?;
        let mut handles = Vec::with_capacity(members.len());
        for argv in members {
            let line = argv.join(" ");
            let cli = crate::cli::Cli::parse_args(std::iter::once("nicompute".to_owned()).chain(argv))
                .map_err(|e| UsageError(format!("member `{line}`: {e}")))?;
            let cli = crate::config::resolve(cli).map_err(|e| UsageError(format!("member `{line}`: {e}")))?;
            let Some(crate::cli::Command::Miner(MinerCommand::Run(args))) = &cli.command else {
                return Err(UsageError(format!("member `{line}` is not a `miner run` command line")).into());
            };
            let chain = cli.global.subtensor.client()?;
            if !bittensor::devnet::ops::is_devnet(&chain).await.unwrap_or(false)
                && !super::miner_publish::is_dev_chain(&chain).await
            {
                return Err(UsageError(format!(
                    "miner group runs devnet miners only; {} is not a development chain",
                    chain.endpoint()
                ))
                .into());
            }
            handles.push(args.start(&cli.global, out).await.with_context(|| format!("member `{line}`"))?);
        }
        bittensor::axon::wait_for_signal().await;
        tracing::info!(miners = handles.len(), "miner group: shutting down");
        futures_util::future::join_all(handles.into_iter().map(miner::MinerHandle::shutdown)).await;
        Ok(())
    }
}

impl RunArgs {
    fn axon_config(&self) -> AxonConfig {
        let mut cfg = AxonConfig {
            bind: (self.axon_ip, self.axon_port).into(),
            max_connections_per_ip: self.max_connections_per_ip,
            ..AxonConfig::default()
        };
        for (name, bytes) in &self.max_body {
            match name {
                Some(n) => {
                    cfg.body_limits.insert(n.clone(), *bytes);
                }
                None => cfg.max_body_bytes = *bytes,
            }
        }
        cfg
    }

    async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let handle = self.start(g, out).await?;
        bittensor::axon::wait_for_signal().await;
        tracing::info!("miner: shutting down (allocations keep running; the next start reconciles them)");
        handle.shutdown().await;
        Ok(())
    }

    /// Checks the flags, starts the miner, publishes its axon and says so: everything of `run`
    /// but the wait for a signal.
    async fn start(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<miner::MinerHandle> {
        let netuid = g.subtensor.netuid();
        let chain = g.subtensor.client()?;
        let keypair = g.wallet.hotkey()?;
        let devnet = bittensor::devnet::ops::is_devnet(&chain).await.unwrap_or(false);
        let dev = devnet || super::miner_publish::is_dev_chain(&chain).await;
        let external = super::miner_publish::external_ip(devnet, self.external_ip, self.axon_ip)?;
        if !dev && self.runtime == RuntimeKind::Local {
            return Err(UsageError(format!(
                "--runtime local isolates nothing and runs only against a development chain (a nicompute devnet or chopsticks); {} is not one",
                chain.endpoint()
            ))
            .into());
        }
        if !dev && self.simulate_gpu.is_some() {
            return Err(UsageError("--simulate-gpu is for devnets and tests only".into()).into());
        }
        if !dev && self.min_stake < 1024.0 {
            tracing::warn!(
                min_stake = self.min_stake,
                "callers below SN27's validator threshold (1024 TAO) will be served"
            );
        }
        if let Some(bad) = self.offer_images.iter().find(|i| !compute::protocol::docker::valid_image(i)) {
            return Err(UsageError(format!("--offer-image {bad}: not a Docker image reference")).into());
        }
        if self.external_ports.0.contains(&self.ssh_port) {
            return Err(UsageError(format!("--external.ports includes the SSH port {}", self.ssh_port)).into());
        }
        let axon = self.axon_config();
        raise_open_file_limit(axon.max_connections + 256);
        let state_dir = self.state_dir.clone().unwrap_or_else(|| g.dirs.data_dir_or_here().join("miner"));
        std::fs::create_dir_all(&state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
        // The local runtime holds the SSH port from the start (0: any free one, reported below).
        let mut ssh_port = self.ssh_port;
        let runtime: Arc<dyn ContainerRuntime> = match self.runtime {
            RuntimeKind::Local => {
                let local = compute::runtime::local::LocalRuntime::new(state_dir.join("local"))
                    .context("starting the local runtime")?;
                ssh_port = local.reserve(self.ssh_bind_ip, self.ssh_port).await.context("binding --ssh.port")?;
                Arc::new(local)
            }
            RuntimeKind::Docker if self.ssh_port == 0 => {
                return Err(UsageError(
                    "the docker runtime publishes a fixed --ssh.port; 0 is for --runtime local".into(),
                )
                .into())
            }
            RuntimeKind::Docker => {
                let cfg = g.docker_config(&self.image, Some(keypair.ss58()))?;
                let docker =
                    compute::runtime::docker::DockerRuntime::connect(cfg).await.context("connecting to Docker")?;
                docker.ensure_image().await.context("checking the container image")?;
                Arc::new(docker)
            }
        };
        let specs = compute::specs::detect(&DetectOptions {
            disk_path: state_dir.clone(),
            simulate_gpu: self.simulate_gpu.clone(),
            ..Default::default()
        })
        .await;
        let cfg = MinerConfig {
            keypair: keypair.clone(),
            netuid,
            axon,
            ssh_port,
            ssh_bind_ip: self.ssh_bind_ip,
            runtime,
            state_dir: state_dir.clone(),
            specs,
            policy: PolicyConfig {
                whitelist: self.whitelist.iter().cloned().collect(),
                blacklist: self.blacklist.iter().cloned().collect(),
                min_stake_tao: self.min_stake,
                min_caller_version: self.min_caller_version,
                version_threshold_pct: self.version_threshold,
            },
            metagraph: MetagraphSource::Chain { client: chain.clone(), interval: self.metagraph_refresh },
            offer: Offer {
                require_signed: self.require_signed,
                external_ports: self.external_ports.0.clone(),
                images: self.offer_images.clone(),
                renter_env: self.renter_env == RenterEnv::Allow,
            },
            warm_containers: self.warm_containers == 1,
        };
        let handle = miner::spawn(cfg).await.context("starting the miner")?;
        let axon_port = handle.axon_addr().port();
        let version = self.axon_version.unwrap_or(miner::COMPUTE_VERSION_INT as u32);
        let endpoint = bittensor::subtensor::serve::Endpoint { ip: external, port: axon_port, version };
        let publication = super::miner_publish::publish(&chain, &keypair, netuid, endpoint, out).await;
        let doc = json!({
            "hotkey": keypair.ss58(),
            "netuid": netuid,
            "axon": format!("{}:{}", self.axon_ip, axon_port),
            "ssh_port": ssh_port,
            "runtime": format!("{:?}", self.runtime).to_lowercase(),
            "external_ports": self.external_ports.0,
            "require_signed_requests": self.require_signed,
            "state_dir": state_dir.display().to_string(),
            "chain": chain.endpoint(),
            "pid": std::process::id(),
            "publication": publication,
        });
        out.result(&doc, |o| {
            writeln!(
                o,
                "miner {} serving netuid {netuid} on {}:{axon_port}, SSH port {}, runtime {:?}, chain {}",
                keypair.ss58(),
                self.axon_ip,
                ssh_port,
                self.runtime,
                chain.endpoint()
            )
        });
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ports() {
        assert_eq!(parse_ports("27015,27016,27017,27018"), Ok(ExternalPorts(vec![27015, 27016, 27017, 27018])));
        assert_eq!(parse_ports("none"), Ok(ExternalPorts(vec![])));
        assert!(parse_ports("1,1").is_err());
        assert!(parse_ports("0").is_err());
        assert!(parse_ports("1,2,3,4,5").is_err());
    }

    #[test]
    fn body_limits_for_all_or_one_synapse() {
        assert_eq!(parse_body_limit("16384"), Ok((None, 16384)));
        assert_eq!(parse_body_limit("Allocate=32KiB"), Ok((Some("Allocate".into()), 32 * 1024)));
        assert_eq!(parse_body_limit("2m"), Ok((None, 2 << 20)));
        assert!(parse_body_limit("=5").is_err());
        assert!(parse_body_limit("0").is_err());
        assert!(parse_body_limit("lots").is_err());
    }
}
