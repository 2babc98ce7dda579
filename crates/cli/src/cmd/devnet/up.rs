//! `nicompute devnet up`: makes the devnet in a directory real — a chain (nicompute's embedded
//! chain, or the real Subtensor runtime under chopsticks), the validator and miner wallets, the
//! network set up on chain with real extrinsics (`setup.rs`), one miner process per simulated
//! machine, each on its own loopback address, `config.toml`, and a first `sync` — and completes it
//! when run again: what runs is left alone, what died is restarted on the same ports with the
//! same keys, and what the chain lost is sent again. Two `up`s never start two networks: the
//! directory is locked and its state file says what exists.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use bittensor::chopsticks::{slot_aligned_now_ms, ChopsticksConfig};
use bittensor::subtensor::Subtensor;
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::gpus::plan_gpus;
use super::net::{self, ChainKind, Layout, MinerState, Proc, State, ValidatorState};
use super::setup::{self, SetupTimes, HOTKEY_NAME, VALIDATOR_WALLET};
use super::status::{self, StatusDoc};
use super::DirArg;
use crate::cmd::sync::{sync_specs, SyncReport};
use crate::config::ConfigFile;
use crate::duration::parse_duration;
use crate::opts::GlobalOpts;
use crate::output::{Output, UsageError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeChoice {
    /// Docker when a daemon answers and the image is present, the local runtime otherwise.
    Auto,
    /// Docker containers with sshd (needs the image from scripts/build-ssh-image.sh).
    Docker,
    /// An embedded SSH server per allocation on this machine; isolates nothing.
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChainChoice {
    /// nicompute's embedded chain: finney's metadata, real extrinsics, starts in milliseconds.
    Embedded,
    /// The real Subtensor runtime (spec 218) under chopsticks (needs Node.js and
    /// scripts/chain-runtime.sh install).
    Runtime,
    /// The runtime when Node.js and the installed chopsticks are present, else embedded.
    Auto,
}

/// How chopsticks builds blocks on the runtime chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BlockMode {
    /// A block per extrinsic, as soon as it arrives.
    Instant,
    /// The extrinsics that arrive together share a block.
    Batch,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// How many miners [default: 4, or one per --gpus entry]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub miners: Option<u16>,
    /// Miners per process: 1 (each its own process, as on the real network) or more (one
    /// `miner group` process runs that many, each still with its own hotkey, ports, state and
    /// runtime; a subnet-sized devnet in less memory) [default: 1 up to 128 miners, 16 above]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub miners_per_process: Option<u16>,
    /// Where allocations run [default: auto]
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeChoice>,
    /// The chain [default: embedded]
    #[arg(long, value_enum)]
    pub chain: Option<ChainChoice>,
    /// Simulated GPUs per miner, comma-separated and cycled: presets h100, a100, 4090, cpu
    /// (with xN for N cards, e.g. h100x8) or NAME:MEM_MIB[:COUNT] [default: h100,a100,4090,cpu]
    #[arg(long, value_name = "SPEC")]
    pub gpus: Option<String>,
    /// Time between empty blocks of the embedded chain (a transaction is included at once).
    #[arg(long = "block-time", value_parser = parse_duration, default_value = "1s")]
    pub block_time: Duration,
    /// How chopsticks builds blocks (--chain runtime).
    #[arg(long = "block-mode", value_enum, default_value_t = BlockMode::Batch)]
    pub block_mode: BlockMode,
    /// The directory holding tools/chain-runtime (chopsticks) and tests/fixtures/chain
    /// [default: the nicompute checkout this binary was built in, or the current directory's]
    #[arg(long = "runtime-root", value_name = "DIR")]
    pub runtime_root: Option<PathBuf>,
}

/// What `up` did, with the network's status.
#[derive(Debug, Serialize)]
pub struct UpDoc {
    #[serde(flatten)]
    pub status: StatusDoc,
    /// Why this runtime (for `--runtime auto`).
    pub runtime_reason: String,
    /// Why this chain (for `--chain auto`).
    pub chain_reason: String,
    pub started: Vec<String>,
    /// Seconds per set-up step (all real extrinsics but the funding).
    pub setup: SetupTimes,
    /// Miners whose axon `up` had to publish again (the chain lost it).
    pub republished: Vec<String>,
    pub seconds: f64,
    pub sync: SyncOutcome,
}

/// The first `sync`'s report, or why it failed (`up` still reports the network).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum SyncOutcome {
    Done(SyncReport),
    Failed(String),
}

/// chopsticks' installation: under `--runtime-root`, else above this binary or the current
/// directory.
pub fn find_chopsticks(root: Option<&Path>) -> Result<ChopsticksConfig, String> {
    let root = match root {
        Some(r) => r.to_path_buf(),
        None => {
            let starts = [std::env::current_exe().ok(), std::env::current_dir().ok()];
            starts.iter().flatten().find_map(|s| ChopsticksConfig::find_root(s)).ok_or_else(|| {
                "chopsticks is not installed in a nicompute checkout above this binary or the current directory \
                 (scripts/chain-runtime.sh install; or give --runtime-root)"
                    .to_owned()
            })?
        }
    };
    let cfg = ChopsticksConfig::in_project(&root);
    cfg.installed().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// `--chain`: embedded unless asked; `auto` takes the runtime when Node.js and chopsticks are there.
pub fn choose_chain(choice: ChainChoice, root: Option<&Path>) -> Result<(ChainKind, String), UsageError> {
    match choice {
        ChainChoice::Embedded => Ok((ChainKind::Embedded, "embedded (asked for)".into())),
        ChainChoice::Runtime => match find_chopsticks(root) {
            Ok(_) => Ok((ChainKind::Runtime, "the real runtime (asked for)".into())),
            Err(e) => Err(UsageError(format!("--chain runtime: {e}"))),
        },
        ChainChoice::Auto => Ok(match find_chopsticks(root) {
            Ok(_) => (ChainKind::Runtime, "the real runtime, because Node.js and chopsticks are installed".into()),
            Err(e) => (ChainKind::Embedded, format!("embedded, because the real runtime is not usable: {e}")),
        }),
    }
}

impl UpArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let dir = self.dir.resolve(g)?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
        restrict(&dir);
        let layout = Layout::new(dir);
        let _lock = layout.lock()?;
        let existing = State::load(&layout)?;
        let (mut state, runtime_reason, chain_reason) = match existing {
            Some(s) => {
                self.check_compatible(&s, &layout)?;
                let (r, c) = (format!("{} (chosen when this devnet was made)", s.runtime), s.chain.kind.to_string());
                (s, r, format!("{c} (chosen when this devnet was made)"))
            }
            None => self.new_state(g, &layout).await?,
        };
        let mut started = Vec::new();
        // The miners (not processes) started by this `up`: each publishes its own axon.
        let mut started_miners = Vec::new();
        let t0 = Instant::now();

        // The chain.
        let ws = state.ws_url();
        if !state.chain.process.is_some_and(|p| p.alive()) {
            let p = self.start_chain(&layout, &state)?;
            state.chain.process = Some(p);
            state.save(&layout)?;
            started.push("chain".to_owned());
            out.note(&format!("chain: started {} on {ws} (pid {})", state.chain_label(), p.pid));
        }
        let kind = state.chain.kind;
        let limit = Duration::from_secs(if kind == ChainKind::Runtime { 90 } else { 20 });
        wait_until("the chain", &layout.log("chain"), state.chain.process, limit, || net::chain_healthy(&ws, kind))
            .await?;
        let client = Subtensor::new(&ws)?;

        // The network on chain: funding, registrations, the validator's stake and permit.
        let times = setup::chain_part(&layout, &state, &client).await.context("setting up the network on the chain")?;
        let validator = setup::keys(&layout, VALIDATOR_WALLET)?.hot;

        // The miners, each on its own loopback address; a group's members in one process.
        let mut i = 0;
        while i < state.miners.len() {
            let members: Vec<usize> = match state.miners[i].group {
                None => vec![i],
                Some(g) => (i..state.miners.len()).take_while(|&j| state.miners[j].group == Some(g)).collect(),
            };
            i += members.len();
            // A group lives and dies as one process.
            if members.iter().all(|&j| state.miners[j].process.is_some_and(|p| p.alive())) {
                continue;
            }
            for &j in &members {
                std::fs::create_dir_all(layout.miner_dir(&state.miners[j].name))?;
            }
            let first = &state.miners[members[0]];
            let log = layout.miner_log(first);
            let (args, name) = match first.group {
                None => (miner_args(&layout, &state, first), first.name.clone()),
                Some(g) => {
                    let lines: Vec<Vec<String>> =
                        members.iter().map(|&j| miner_args(&layout, &state, &state.miners[j])).collect();
                    let file = layout.dir.join(format!("miners-{g}.json"));
                    std::fs::write(&file, serde_json::to_vec(&lines)?)
                        .with_context(|| format!("writing {}", file.display()))?;
                    let args = vec![
                        "-v".into(),
                        "miner".into(),
                        "group".into(),
                        "--members".into(),
                        file.display().to_string(),
                    ];
                    (args, format!("miners-{g}"))
                }
            };
            let p = net::spawn_detached(&args, &log)?;
            for &j in &members {
                state.miners[j].process = Some(p);
                started_miners.push(state.miners[j].name.clone());
            }
            state.save(&layout)?;
            started.push(name.clone());
            let m = &state.miners[members[0]];
            let (rt, pid) = (&state.runtime, p.pid);
            out.note(&match members.len() {
                1 => {
                    format!("{}: started on {} ({}, {rt} runtime, pid {pid})", m.name, m.ip, status::gpu_label(&m.gpu))
                }
                n => format!(
                    "{name}: {} to {} ({n} miners) started in one process ({rt} runtime, pid {pid})",
                    m.name,
                    state.miners[members[n - 1]].name
                ),
            });
        }
        let waits = state.miners.iter().map(|m| {
            let (key, hotkey, ip, port) = (validator.clone(), m.hotkey.clone(), m.ip.clone(), m.axon_port);
            let log = layout.miner_log(m);
            let what = format!("miner {}", m.name);
            async move {
                wait_until(&what, &log, m.process, Duration::from_secs(60), || {
                    let (key, hotkey, ip) = (key.clone(), hotkey.clone(), ip.clone());
                    async move { net::miner_healthy(&key, &hotkey, &ip, port).await }
                })
                .await
            }
        });
        for r in futures_util::future::join_all(waits).await {
            r?;
        }
        let republished = setup::axons(&layout, &state, &client, &started_miners).await?;
        write_config(&layout, &state)?;
        let seconds = t0.elapsed().as_secs_f64();
        if !started.is_empty() {
            out.note(&format!("{} process(es) up and the network set up in {seconds:.1} s", started.len()));
        }

        let sync = match first_sync(&layout, &state, &client, validator.clone()).await {
            Ok(report) => SyncOutcome::Done(report),
            Err(e) => SyncOutcome::Failed(format!("{e:#}")),
        };
        let status = status::collect(&layout, &state, &validator).await;
        let doc = UpDoc { status, runtime_reason, chain_reason, started, setup: times, republished, seconds, sync };
        out.result(&doc, |o| {
            status::render(&doc.status, o)?;
            writeln!(o, "chain: {}", doc.chain_reason)?;
            writeln!(o, "runtime: {}", doc.runtime_reason)?;
            let s = &doc.setup;
            writeln!(
                o,
                "set-up by extrinsics: funded in {:.2} s ({}), registered in {:.2} s, staked on netuid {} in {:.2} s, permit in {:.2} s",
                s.fund,
                if doc.status.chain_kind == ChainKind::Runtime { "chopsticks' dev_setStorage" } else { "the owner's sudo call" },
                s.register,
                s.stake_netuid,
                s.stake,
                s.permit
            )?;
            match &doc.sync {
                SyncOutcome::Done(r) => writeln!(o, "sync: {} of {} miners answered", r.answered, r.asked)?,
                SyncOutcome::Failed(e) => writeln!(o, "sync failed: {e}")?,
            }
            writeln!(o)?;
            writeln!(o, "Every command works on this devnet with its config file:")?;
            writeln!(o, "  export NICOMPUTE_CONFIG={}", doc.status.config)?;
            writeln!(o, "or")?;
            writeln!(o, "  nicompute --config {} list_r", doc.status.config)?;
            writeln!(o, "Any Substrate client (the Python SDK too) works on {}", doc.status.chain)?;
            writeln!(o, "Stop it with: nicompute devnet down --dir {}", doc.status.dir)
        });
        Ok(())
    }

    /// Starts the chain process: `nicompute devnet chain`, or chopsticks.
    fn start_chain(&self, layout: &Layout, state: &State) -> anyhow::Result<Proc> {
        let log = layout.log("chain");
        match state.chain.kind {
            ChainKind::Embedded => {
                let owner = super::chain::owner_wallet(&layout.wallets())?.coldkeypub()?;
                let args = vec![
                    "devnet".into(),
                    "chain".into(),
                    "--port".into(),
                    state.chain.port.to_string(),
                    "--dir".into(),
                    layout.chain_dir().display().to_string(),
                    "--block-time".into(),
                    format!("{}ms", state.chain.block_time_ms),
                    "--owner".into(),
                    owner.to_ss58(),
                    "--netuids".into(),
                    state.netuid.to_string(),
                ];
                net::spawn_detached(&args, &log)
            }
            ChainKind::Runtime => {
                let mut cfg = find_chopsticks(self.runtime_root.as_deref()).map_err(UsageError)?;
                cfg.block_mode = state.chain.block_mode.clone().unwrap_or_else(|| "Batch".into());
                let node = which(&cfg.node).unwrap_or_else(|| cfg.node.clone());
                net::spawn_program(&node, &cfg.args(state.chain.port, slot_aligned_now_ms()), &log)
            }
        }
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
        if let Some(n) = self.miners_per_process {
            let has = match s.miners.first().and_then(|m| m.group) {
                None => 1,
                Some(g) => s.miners.iter().filter(|m| m.group == Some(g)).count(),
            };
            if usize::from(n).min(s.miners.len().max(1)) != has {
                return differs("miners per process", n.to_string(), has.to_string());
            }
        }
        if let Some(r) = self.runtime {
            let asked = format!("{r:?}").to_lowercase();
            if r != RuntimeChoice::Auto && asked != s.runtime {
                return differs("runtime", asked, s.runtime.clone());
            }
        }
        if let Some(c) = self.chain {
            let asked = match c {
                ChainChoice::Embedded => Some(ChainKind::Embedded),
                ChainChoice::Runtime => Some(ChainKind::Runtime),
                ChainChoice::Auto => None,
            };
            if let Some(asked) = asked.filter(|a| *a != s.chain.kind) {
                return differs("chain", asked.to_string(), s.chain.kind.to_string());
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

    /// A new devnet: chain, runtime, ports, wallets.
    async fn new_state(&self, g: &GlobalOpts, layout: &Layout) -> anyhow::Result<(State, String, String)> {
        let gpus = plan_gpus(self.gpus.as_deref(), self.miners).map_err(|e| UsageError(e.to_string()))?;
        let (chain, chain_reason) =
            choose_chain(self.chain.unwrap_or(ChainChoice::Embedded), self.runtime_root.as_deref())?;
        let (runtime, reason) = choose_runtime(g, self.runtime.unwrap_or(RuntimeChoice::Auto)).await?;
        // The real runtime's genesis has netuid 1 open for registration; the embedded chain makes
        // the subnet `--netuid` names (27 by default, SN27's own).
        let netuid = match chain {
            ChainKind::Runtime => 1,
            ChainKind::Embedded => g.subtensor.netuid(),
        };
        std::fs::create_dir_all(layout.wallets())?;
        super::chain::owner_wallet(&layout.wallets())?;
        let validator = setup::keys(layout, VALIDATOR_WALLET)?.hot;
        let vstate = ValidatorState {
            wallet_name: VALIDATOR_WALLET.into(),
            wallet_hotkey: HOTKEY_NAME.into(),
            hotkey: validator.ss58(),
        };
        let mut state = State::new(netuid, runtime, chain, net::free_port()?, self.block_time, vstate);
        if chain == ChainKind::Runtime {
            state.chain.block_mode = Some(format!("{:?}", self.block_mode));
        }
        // One process per miner sums to ≈ 19 MB of RSS each (4.9 GB at 256): above 128 miners,
        // groups of 16 keep a subnet-sized devnet within 4 GB.
        let per = usize::from(self.miners_per_process.unwrap_or(if gpus.len() > AUTO_GROUP_ABOVE {
            AUTO_GROUP_SIZE
        } else {
            1
        }));
        for (i, gpu) in gpus.iter().enumerate() {
            let name = format!("miner-{i}");
            let key = setup::keys(layout, &name)?.hot;
            // 127.0.0.2, 127.0.0.3, …: the runtime refuses 127.0.0.1 as an axon address.
            let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 0, 0, 2)) + i as u32);
            state.miners.push(MinerState {
                name,
                hotkey: key.ss58(),
                ip: ip.to_string(),
                axon_port: net::free_port()?,
                ssh_port: net::free_port()?,
                gpu: gpu.to_string(),
                process: None,
                group: (per > 1).then(|| (i / per) as u16),
            });
        }
        state.save(layout)?;
        Ok((state, reason, chain_reason))
    }
}

/// `program` found on `PATH` (chopsticks' `node`), for a clear error when it is not.
fn which(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return Some(program.to_path_buf());
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(program)).find(|p| p.is_file()))
}

/// Above this many miners, `up` runs them in groups of [`AUTO_GROUP_SIZE`] per process unless
/// `--miners-per-process` says otherwise.
const AUTO_GROUP_ABOVE: usize = 128;
const AUTO_GROUP_SIZE: u16 = 16;

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
    kv("--axon.ip", m.ip.clone());
    kv("--axon.port", m.axon_port.to_string());
    kv("--ssh.port", m.ssh_port.to_string());
    kv("--ssh.bind_ip", m.ip.clone());
    kv("--state-dir", layout.miner_dir(&m.name).display().to_string());
    kv("--simulate-gpu", m.gpu.clone());
    // Every miner reads the whole metagraph at each refresh: 5 s up to 32 miners, then longer,
    // so that the chain serves at most ~6 metagraphs a second (at 256 miners every 5 s it spent
    // 70-90% of a core on them, which slowed every check and allocation on the network).
    let refresh_ms = (state.miners.len() as u64 * 160).max(5_000);
    kv("--metagraph-refresh", format!("{refresh_ms}ms"));
    a
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

/// Whether Docker answers and has the allocation image (within a few seconds).
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
    validator: bittensor::Keypair,
) -> anyhow::Result<SyncReport> {
    let db = std::sync::Arc::new(compute::db::ComputeDb::open(layout.db())?);
    let quiet = |_: usize, _: usize| {};
    sync_specs(db, chain, validator, state.netuid, Duration::from_secs(5), 256, &quiet).await
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
    fn chain_auto_says_which_it_chose_and_why_and_runtime_without_chopsticks_is_a_usage_error() {
        // A directory with no chopsticks: auto falls back to the embedded chain and says why;
        // asking for the runtime is the user's fault, with what to do.
        let empty = tempfile::tempdir().expect("tmp");
        let (kind, why) = choose_chain(ChainChoice::Auto, Some(empty.path())).expect("auto");
        assert_eq!(kind, ChainKind::Embedded);
        assert!(why.starts_with("embedded, because") && why.contains("scripts/chain-runtime.sh install"), "{why}");
        let e = choose_chain(ChainChoice::Runtime, Some(empty.path())).expect_err("no chopsticks");
        assert!(e.0.starts_with("--chain runtime: ") && e.0.contains("scripts/chain-runtime.sh install"), "{}", e.0);
        assert_eq!(choose_chain(ChainChoice::Embedded, Some(empty.path())).expect("embedded").0, ChainKind::Embedded);
        // This checkout: where chopsticks and Node.js are installed, auto takes the real runtime.
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let (kind, why) = choose_chain(ChainChoice::Auto, Some(&checkout)).expect("auto");
        match ChopsticksConfig::in_project(&checkout).installed() {
            Ok(()) => assert_eq!(
                (kind, why.as_str()),
                (ChainKind::Runtime, "the real runtime, because Node.js and chopsticks are installed")
            ),
            Err(missing) => assert!(kind == ChainKind::Embedded && why.contains(&missing.to_string()), "{why}"),
        }
    }
}
