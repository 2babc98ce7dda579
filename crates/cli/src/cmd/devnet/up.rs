//! `nicompute devnet up`: makes the devnet in a directory real — chain, validator and miner
//! wallets, registrations and stake, one miner process per simulated machine, `config.toml`,
//! and a first `sync` — and completes it when run again: what runs is left alone, what died is
//! restarted on the same ports with the same keys. Two `up`s never start two networks: the
//! directory is locked and its state file says what exists.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use bittensor::devnet::ops;
use bittensor::subtensor::Subtensor;
use bittensor::wallet::{NoPassword, Wallet};
use bittensor::Keypair;
use clap::{Args, ValueEnum};
use compute::specs::{SimulatedGpu, SimulatedGpuError};
use serde::Serialize;

use super::net::{self, Layout, MinerState, Proc, State, ValidatorState};
use super::status::{self, StatusDoc};
use super::DirArg;
use crate::cmd::sync::{sync_specs, SyncReport};
use crate::config::ConfigFile;
use crate::duration::parse_duration;
use crate::opts::GlobalOpts;
use crate::output::{Output, UsageError};

/// The validator's stake: well above SN27's 1024 TAO validator threshold, so miners serve it.
const VALIDATOR_STAKE_TAO: u64 = 10_000;
const RAO_PER_TAO: u64 = 1_000_000_000;
const VALIDATOR_WALLET: &str = "validator";
const HOTKEY_NAME: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeChoice {
    /// Docker when a daemon answers and the image is present, the local runtime otherwise.
    Auto,
    /// Docker containers with sshd (needs the image from scripts/build-ssh-image.sh).
    Docker,
    /// An embedded SSH server per allocation on this machine; isolates nothing.
    Local,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// How many miners [default: 4, or one per --gpus entry]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub miners: Option<u16>,
    /// Where allocations run [default: auto]
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeChoice>,
    /// Simulated GPUs per miner, comma-separated and cycled: presets h100, a100, 4090, cpu
    /// (with xN for N cards, e.g. h100x8) or NAME:MEM_MIB[:COUNT] [default: h100,a100,4090,cpu]
    #[arg(long, value_name = "SPEC")]
    pub gpus: Option<String>,
    /// Time per block of the devnet chain.
    #[arg(long = "block-time", value_parser = parse_duration, default_value = "1s")]
    pub block_time: Duration,
}

/// The default spread: one of each kind a renter asks for, and a CPU-only machine.
pub const DEFAULT_GPUS: &str = "h100,a100,4090,cpu";

/// A preset's nvidia-smi name and memory; `None` for a CPU-only machine.
fn preset(name: &str) -> Option<Option<(&'static str, u64)>> {
    match name.to_ascii_lowercase().as_str() {
        "h100" => Some(Some(("NVIDIA H100 80GB HBM3", 81559))),
        "a100" => Some(Some(("NVIDIA A100-SXM4-40GB", 40960))),
        "4090" | "rtx4090" => Some(Some(("NVIDIA GeForce RTX 4090", 24564))),
        "cpu" | "none" => Some(None),
        _ => None,
    }
}

/// One `--gpus` entry as a `--simulate-gpu` value: a preset, a preset with `xN`, or a full
/// `NAME:MEM_MIB[:COUNT]`.
pub fn gpu_preset(entry: &str) -> Result<SimulatedGpu, SimulatedGpuError> {
    let entry = entry.trim();
    let with_count = entry.rsplit_once(['x', 'X']).and_then(|(n, c)| {
        let count = c.parse::<u32>().ok().filter(|_| c.bytes().all(|b| b.is_ascii_digit()))?;
        Some((preset(n)?, count))
    });
    let (kind, count) = match (preset(entry), with_count) {
        (Some(kind), _) => (kind, 1),
        (None, Some((kind, count))) => (kind, count),
        (None, None) => return entry.parse::<SimulatedGpu>(),
    };
    match kind {
        None => Ok(SimulatedGpu::none()),
        Some((model, mib)) => format!("{model}:{mib}:{count}").parse::<SimulatedGpu>(),
    }
}

/// A `--gpus` value that names no usable machine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpusError {
    #[error(transparent)]
    Entry(#[from] SimulatedGpuError),
    #[error("--gpus names no machine")]
    Empty,
}

/// `--gpus` and `--miners` to one simulated machine per miner.
pub fn plan_gpus(spec: Option<&str>, miners: Option<u16>) -> Result<Vec<SimulatedGpu>, GpusError> {
    let entries: Vec<SimulatedGpu> = spec
        .unwrap_or(DEFAULT_GPUS)
        .split(',')
        .filter(|e| !e.trim().is_empty())
        .map(gpu_preset)
        .collect::<Result<_, _>>()?;
    if entries.is_empty() {
        return Err(GpusError::Empty);
    }
    let n = miners.map_or(if spec.is_some() { entries.len() } else { 4 }, usize::from);
    Ok((0..n).map(|i| entries[i % entries.len()].clone()).collect())
}

/// What `up` did, with the network's status.
#[derive(Debug, Serialize)]
pub struct UpDoc {
    #[serde(flatten)]
    pub status: StatusDoc,
    /// Why this runtime (for `--runtime auto`).
    pub runtime_reason: String,
    pub started: Vec<String>,
    pub sync: SyncOutcome,
}

/// The first `sync`'s report, or why it failed (`up` still reports the network).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum SyncOutcome {
    Done(SyncReport),
    Failed(String),
}

impl UpArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let dir = self.dir.resolve(g)?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
        restrict(&dir);
        let layout = Layout::new(dir);
        let _lock = layout.lock()?;
        let netuid = g.subtensor.netuid();
        let existing = State::load(&layout)?;
        let (mut state, runtime_reason) = match existing {
            Some(s) => {
                self.check_compatible(&s, &layout)?;
                let reason = format!("{} (chosen when this devnet was made)", s.runtime);
                (s, reason)
            }
            None => self.new_state(g, &layout, netuid).await?,
        };
        let mut started = Vec::new();
        let t0 = Instant::now();

        // The chain.
        let ws = state.ws_url();
        let chain_alive = state.chain.process.is_some_and(|p| p.alive());
        if !chain_alive {
            let args = vec![
                "devnet".into(),
                "chain".into(),
                "--port".into(),
                state.chain.port.to_string(),
                "--dir".into(),
                layout.chain_dir().display().to_string(),
                "--block-time".into(),
                format!("{}ms", state.chain.block_time_ms),
            ];
            let p = net::spawn_detached(&args, &layout.log("chain"))?;
            state.chain.process = Some(p);
            state.save(&layout)?;
            started.push("chain".to_owned());
            out.note(&format!("chain: started on {ws} (pid {})", p.pid));
        }
        wait_until("the devnet chain", &layout.log("chain"), state.chain.process, Duration::from_secs(20), || {
            net::chain_healthy(&ws)
        })
        .await?;
        let client = Subtensor::new(&ws)?;

        // Keys on the chain: the validator with stake, every miner registered (idempotent).
        let validator = load_wallet(&layout, VALIDATOR_WALLET)?;
        let cold = Wallet::new(layout.wallets(), VALIDATOR_WALLET, HOTKEY_NAME).coldkeypub()?;
        ops::register(&client, &validator, &cold, netuid).await.context("registering the validator")?;
        ops::set_stake(&client, &validator, netuid, VALIDATOR_STAKE_TAO * RAO_PER_TAO, 0)
            .await
            .context("staking the validator")?;
        for m in &state.miners {
            let key = load_wallet(&layout, &m.name)?;
            let cold = Wallet::new(layout.wallets(), m.name.as_str(), HOTKEY_NAME).coldkeypub()?;
            ops::register(&client, &key, &cold, netuid).await.with_context(|| format!("registering {}", m.name))?;
        }

        // The miners.
        for i in 0..state.miners.len() {
            if state.miners[i].process.is_some_and(|p| p.alive()) {
                continue;
            }
            let args = miner_args(&layout, &state, &state.miners[i]);
            std::fs::create_dir_all(layout.miner_dir(&state.miners[i].name))?;
            let p = net::spawn_detached(&args, &layout.log(&state.miners[i].name))?;
            state.miners[i].process = Some(p);
            state.save(&layout)?;
            started.push(state.miners[i].name.clone());
            out.note(&format!(
                "{}: started ({}, {} runtime, pid {})",
                state.miners[i].name,
                status::gpu_label(&state.miners[i].gpu),
                state.runtime,
                p.pid
            ));
        }
        let waits = state.miners.iter().map(|m| {
            let (key, hotkey, port) = (validator.clone(), m.hotkey.clone(), m.axon_port);
            let log = layout.log(&m.name);
            let what = format!("miner {}", m.name);
            async move {
                wait_until(&what, &log, m.process, Duration::from_secs(60), || {
                    let (key, hotkey) = (key.clone(), hotkey.clone());
                    async move { net::miner_healthy(&key, &hotkey, port).await }
                })
                .await
            }
        });
        for r in futures_util::future::join_all(waits).await {
            r?;
        }
        write_config(&layout, &state)?;
        if !started.is_empty() {
            out.note(&format!("{} process(es) up in {:.1} s", started.len(), t0.elapsed().as_secs_f64()));
        }

        let sync = match first_sync(&layout, &state, &client, validator.clone()).await {
            Ok(report) => SyncOutcome::Done(report),
            Err(e) => SyncOutcome::Failed(format!("{e:#}")),
        };
        let status = status::collect(&layout, &state, &validator).await;
        let doc = UpDoc { status, runtime_reason, started, sync };
        out.result(&doc, |o| {
            status::render(&doc.status, o)?;
            writeln!(o, "runtime: {}", doc.runtime_reason)?;
            match &doc.sync {
                SyncOutcome::Done(r) => writeln!(o, "sync: {} of {} miners answered", r.answered, r.asked)?,
                SyncOutcome::Failed(e) => writeln!(o, "sync failed: {e}")?,
            }
            writeln!(o)?;
            writeln!(o, "Every command works on this devnet with its config file:")?;
            writeln!(o, "  export NICOMPUTE_CONFIG={}", doc.status.config)?;
            writeln!(o, "or")?;
            writeln!(o, "  nicompute --config {} list_r", doc.status.config)?;
            writeln!(o, "Stop it with: nicompute devnet down --dir {}", doc.status.dir)
        });
        Ok(())
    }

    fn check_compatible(&self, s: &State, layout: &Layout) -> anyhow::Result<()> {
        let differs = |what: &str, asked: String, has: String| -> anyhow::Result<()> {
            Err(UsageError(format!(
                "the devnet in {} has {what} {has}, not {asked}: run `nicompute devnet down --dir {0} --delete` first, or use another --dir",
                layout.dir.display()
            ))
            .into())
        };
        if let Some(n) = self.miners {
            if usize::from(n) != s.miners.len() {
                return differs("miners", n.to_string(), s.miners.len().to_string());
            }
        }
        if let Some(r) = self.runtime {
            let asked = format!("{r:?}").to_lowercase();
            if r != RuntimeChoice::Auto && asked != s.runtime {
                return differs("runtime", asked, s.runtime.clone());
            }
        }
        if let Some(spec) = &self.gpus {
            let asked: Vec<String> = plan_gpus(Some(spec), Some(s.miners.len() as u16))
                .map_err(|e| UsageError(e.to_string()))?
                .iter()
                .map(|g| g.to_string())
                .collect();
            let has: Vec<String> = s.miners.iter().map(|m| m.gpu.clone()).collect();
            if asked != has {
                return differs("GPUs", asked.join(", "), has.join(", "));
            }
        }
        Ok(())
    }

    /// A new devnet: runtime, ports, wallets.
    async fn new_state(&self, g: &GlobalOpts, layout: &Layout, netuid: u16) -> anyhow::Result<(State, String)> {
        let gpus = plan_gpus(self.gpus.as_deref(), self.miners).map_err(|e| UsageError(e.to_string()))?;
        let (runtime, reason) = choose_runtime(g, self.runtime.unwrap_or(RuntimeChoice::Auto)).await?;
        std::fs::create_dir_all(layout.wallets())?;
        let validator = load_wallet(layout, VALIDATOR_WALLET)?;
        let vstate = ValidatorState {
            wallet_name: VALIDATOR_WALLET.into(),
            wallet_hotkey: HOTKEY_NAME.into(),
            hotkey: validator.ss58(),
        };
        let mut state = State::new(netuid, runtime, net::free_port()?, self.block_time, vstate);
        for (i, gpu) in gpus.iter().enumerate() {
            let name = format!("miner-{i}");
            let key = load_wallet(layout, &name)?;
            state.miners.push(MinerState {
                name,
                hotkey: key.ss58(),
                axon_port: net::free_port()?,
                ssh_port: net::free_port()?,
                gpu: gpu.to_string(),
                process: None,
            });
        }
        state.save(layout)?;
        Ok((state, reason))
    }
}

/// The `miner run` command line for one devnet miner.
fn miner_args(layout: &Layout, state: &State, m: &MinerState) -> Vec<String> {
    let mut a: Vec<String> = vec!["-v".into(), "miner".into(), "run".into()];
    let mut kv = |k: &str, v: String| {
        a.push(k.into());
        a.push(v);
    };
    kv("--runtime", state.runtime.clone());
    kv("--subtensor.chain_endpoint", state.ws_url());
    kv("--netuid", state.netuid.to_string());
    kv("--wallet.path", layout.wallets().display().to_string());
    kv("--wallet.name", m.name.clone());
    kv("--wallet.hotkey", HOTKEY_NAME.into());
    kv("--axon.ip", "127.0.0.1".into());
    kv("--axon.port", m.axon_port.to_string());
    kv("--ssh.port", m.ssh_port.to_string());
    kv("--ssh.bind_ip", "127.0.0.1".into());
    kv("--state-dir", layout.miner_dir(&m.name).display().to_string());
    kv("--simulate-gpu", m.gpu.clone());
    kv("--metagraph-refresh", "5s".into());
    a
}

/// The wallet `name` under the devnet's wallets (made on first use, plaintext: devnet keys).
fn load_wallet(layout: &Layout, name: &str) -> anyhow::Result<Keypair> {
    let w = Wallet::new(layout.wallets(), name, HOTKEY_NAME);
    if !w.hotkey_path().exists() || !w.coldkeypub_path().exists() {
        w.create(12, None).with_context(|| format!("creating the devnet wallet {name}"))?;
    }
    w.hotkey(&NoPassword).with_context(|| format!("loading the devnet wallet {name}"))
}

async fn choose_runtime(g: &GlobalOpts, choice: RuntimeChoice) -> anyhow::Result<(&'static str, String)> {
    match choice {
        RuntimeChoice::Local => Ok(("local", "local (asked for)".into())),
        RuntimeChoice::Docker => match docker_usable(g).await {
            Ok(()) => Ok(("docker", "docker (asked for)".into())),
            Err(e) => Err(UsageError(format!("--runtime docker: {e}")).into()),
        },
        RuntimeChoice::Auto => match docker_usable(g).await {
            Ok(()) => Ok(("docker", "docker (a Docker daemon answers and has the image)".into())),
            Err(e) => Ok(("local", format!("local, because Docker is not usable: {e}"))),
        },
    }
}

/// Whether Docker answers and has the allocation image.
async fn docker_usable(g: &GlobalOpts) -> Result<(), String> {
    use compute::runtime::docker::{DockerRuntime, DEFAULT_IMAGE};
    let check = async {
        let config = g.docker_config(DEFAULT_IMAGE, None).map_err(|e| e.to_string())?;
        let d = DockerRuntime::connect(config).await.map_err(|e| e.to_string())?;
        d.ping().await.map_err(|e| e.to_string())?;
        d.ensure_image().await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), check)
        .await
        .unwrap_or_else(|_| Err("the Docker daemon did not answer within 5 s".into()))
}

/// Polls `healthy` until it says yes; fails early, with the log's tail, if the process exits.
async fn wait_until<F, Fut>(
    what: &str,
    log: &Path,
    proc: Option<Proc>,
    limit: Duration,
    healthy: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if healthy().await {
            return Ok(());
        }
        let exited = proc.is_some_and(|p| !p.alive());
        if exited || Instant::now() > deadline {
            let why = if exited { "exited" } else { "did not become healthy in time" };
            anyhow::bail!(
                "{what} {why}; the end of its log ({}):\n{}\n(`nicompute devnet down` stops what did start)",
                log.display(),
                net::log_tail(log, 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_config(layout: &Layout, state: &State) -> anyhow::Result<()> {
    let mut cfg = ConfigFile::new();
    cfg.set("db", "database.db")
        .set("subtensor.chain_endpoint", state.ws_url())
        .set("subtensor.netuid", i64::from(state.netuid))
        .set("wallet.path", "wallets")
        .set("wallet.name", state.validator.wallet_name.clone())
        .set("wallet.hotkey", state.validator.wallet_hotkey.clone())
        .set(crate::config::DEVNET_DIR, ".");
    let header = format!(
        "Written by `nicompute devnet up` for the devnet in this directory.\n\
         Use it with `nicompute --config {0} <command>` or `export NICOMPUTE_CONFIG={0}`.\n\
         Paths are relative to this file; flags and environment variables win over it.",
        layout.config().display()
    );
    cfg.save(&layout.config(), &header)?;
    Ok(())
}

/// The devnet's first `sync`, as the validator the config file names, into its database.
async fn first_sync(
    layout: &Layout,
    state: &State,
    chain: &Subtensor,
    validator: Keypair,
) -> anyhow::Result<SyncReport> {
    let db = std::sync::Arc::new(compute::db::ComputeDb::open(layout.db())?);
    let quiet = |_: usize, _: usize| {};
    sync_specs(db, chain, validator, state.netuid, Duration::from_secs(5), 64, &quiet).await
}

/// Owner-only permissions on the devnet directory (it holds keys).
fn restrict(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spread_and_cycling() {
        let g = plan_gpus(None, None).expect("default");
        let names: Vec<String> = g.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "NVIDIA H100 80GB HBM3:81559:1",
                "NVIDIA A100-SXM4-40GB:40960:1",
                "NVIDIA GeForce RTX 4090:24564:1",
                "none"
            ]
        );
        assert_eq!(plan_gpus(None, Some(6)).expect("six")[4].to_string(), "NVIDIA H100 80GB HBM3:81559:1");
        let custom = plan_gpus(Some("h100x8, Tesla T4:15360:2"), None).expect("custom");
        assert_eq!(custom.len(), 2);
        assert_eq!(custom[0].count, 8);
        assert_eq!(custom[1].name, "Tesla T4");
        assert_eq!(gpu_preset("rtx4090").expect("preset").name, "NVIDIA GeForce RTX 4090");
        assert_eq!(gpu_preset("RTX4090x2").expect("preset").count, 2);
        assert!(gpu_preset("h100x0").is_err(), "zero cards");
        assert!(plan_gpus(Some("h200"), None).is_err(), "not a preset and not NAME:MEM");
        assert!(plan_gpus(Some(","), None).is_err());
    }
}
