//! `nicompute devnet status`: the devnet's chain, validator and miners, each process's pid and
//! health — the chain answers as a devnet, a miner's axon answers a signed Specs request from
//! the validator. Exit 1 when anything is not running or not healthy, so scripts can wait on it.

use std::io::Write;

use bittensor::wallet::{NoPassword, Wallet};
use bittensor::Keypair;
use compute::specs::SimulatedGpu;
use serde::Serialize;

use super::net::{self, ChainKind, Layout, State};
use super::DirArg;
use crate::opts::GlobalOpts;
use crate::output::{table, Output, Reported, UsageError};

#[derive(Debug, Serialize)]
pub struct StatusDoc {
    pub dir: String,
    pub config: String,
    /// The chain's endpoint.
    pub chain: String,
    /// `embedded` (nicompute's chain) or `runtime` (the real Subtensor runtime under chopsticks).
    pub chain_kind: ChainKind,
    pub chain_process: ProcDoc,
    pub netuid: u16,
    pub runtime: String,
    pub validator: ValidatorDoc,
    pub miners: Vec<MinerDoc>,
    /// Every process running and healthy.
    pub healthy: bool,
}

#[derive(Debug, Serialize)]
pub struct ProcDoc {
    pub pid: Option<u32>,
    pub running: bool,
    pub healthy: bool,
    pub log: String,
}

#[derive(Debug, Serialize)]
pub struct ValidatorDoc {
    pub wallet_path: String,
    pub wallet_name: String,
    pub wallet_hotkey: String,
    pub hotkey: String,
}

#[derive(Debug, Serialize)]
pub struct MinerDoc {
    pub name: String,
    pub hotkey: String,
    /// "ip:port".
    pub axon: String,
    pub ssh_port: u16,
    pub runtime: String,
    /// The simulated GPUs, as `--simulate-gpu` takes them (`none`: CPU only).
    pub gpu: String,
    pub pid: Option<u32>,
    pub running: bool,
    pub healthy: bool,
    pub log: String,
}

/// "NVIDIA H100 80GB HBM3 ×1 (simulated)" for a `--simulate-gpu` value.
pub fn gpu_label(spec: &str) -> String {
    match spec.parse::<SimulatedGpu>() {
        Ok(g) if g.count == 0 => "CPU only (simulated)".into(),
        Ok(g) => format!("{} ×{} (simulated)", g.name, g.count),
        Err(_) => spec.to_owned(),
    }
}

/// Looks at every process of the devnet (concurrently).
pub async fn collect(layout: &Layout, state: &State, validator: &Keypair) -> StatusDoc {
    let ws = state.ws_url();
    let chain_running = state.chain.process.is_some_and(|p| p.alive());
    let chain_healthy = chain_running && net::chain_healthy(&ws, state.chain.kind).await;
    let checks = state.miners.iter().map(|m| async move {
        let running = m.process.is_some_and(|p| p.alive());
        let healthy = running && net::miner_healthy(validator, &m.hotkey, &m.ip, m.axon_port).await;
        MinerDoc {
            name: m.name.clone(),
            hotkey: m.hotkey.clone(),
            axon: format!("{}:{}", m.ip, m.axon_port),
            ssh_port: m.ssh_port,
            runtime: state.runtime.clone(),
            gpu: m.gpu.clone(),
            pid: m.process.map(|p| p.pid),
            running,
            healthy,
            log: layout.miner_log(m).display().to_string(),
        }
    });
    let miners = futures_util::future::join_all(checks).await;
    let healthy = chain_healthy && miners.iter().all(|m| m.healthy);
    StatusDoc {
        dir: layout.dir.display().to_string(),
        config: layout.config().display().to_string(),
        chain: ws,
        chain_kind: state.chain.kind,
        chain_process: ProcDoc {
            pid: state.chain.process.map(|p| p.pid),
            running: chain_running,
            healthy: chain_healthy,
            log: layout.log("chain").display().to_string(),
        },
        netuid: state.netuid,
        runtime: state.runtime.clone(),
        validator: ValidatorDoc {
            wallet_path: layout.wallets().display().to_string(),
            wallet_name: state.validator.wallet_name.clone(),
            wallet_hotkey: state.validator.wallet_hotkey.clone(),
            hotkey: state.validator.hotkey.clone(),
        },
        miners,
        healthy,
    }
}

fn health(running: bool, healthy: bool) -> &'static str {
    match (running, healthy) {
        (true, true) => "healthy",
        (true, false) => "NOT ANSWERING",
        (false, _) => "STOPPED",
    }
}

pub fn render(doc: &StatusDoc, o: &mut dyn Write) -> std::io::Result<()> {
    writeln!(o, "devnet in {} (netuid {}, runtime {})", doc.dir, doc.netuid, doc.runtime)?;
    let c = &doc.chain_process;
    let pid = |p: Option<u32>| p.map_or_else(|| "-".to_owned(), |p| p.to_string());
    let kind = match doc.chain_kind {
        ChainKind::Embedded => "embedded chain",
        ChainKind::Runtime => "real runtime (chopsticks)",
    };
    writeln!(o, "chain      {}  {kind}  pid {}  {}", doc.chain, pid(c.pid), health(c.running, c.healthy))?;
    writeln!(
        o,
        "validator  {}  (wallet {}/{} in {})",
        doc.validator.hotkey, doc.validator.wallet_name, doc.validator.wallet_hotkey, doc.validator.wallet_path
    )?;
    let rows = doc
        .miners
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.hotkey.clone(),
                gpu_label(&m.gpu),
                m.axon.clone(),
                m.ssh_port.to_string(),
                pid(m.pid),
                health(m.running, m.healthy).to_owned(),
            ]
        })
        .collect();
    writeln!(o, "{}", table(&["Miner", "Hotkey", "GPU", "Axon", "SSH port", "PID", "Health"], rows))?;
    for m in doc.miners.iter().filter(|m| !m.healthy) {
        writeln!(o, "{} is {}: see {}", m.name, health(m.running, m.healthy), m.log)?;
    }
    if !c.healthy {
        writeln!(o, "the chain is {}: see {}", health(c.running, c.healthy), c.log)?;
    }
    Ok(())
}

pub async fn run(arg: &DirArg, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
    let layout = Layout::new(arg.resolve(g)?);
    let Some(state) = State::load(&layout)? else {
        return Err(UsageError(format!(
            "no devnet in {} (start one with `nicompute devnet up --dir {0}`)",
            layout.dir.display()
        ))
        .into());
    };
    let w = Wallet::new(layout.wallets(), state.validator.wallet_name.as_str(), state.validator.wallet_hotkey.as_str());
    let validator = w.hotkey(&NoPassword)?;
    let doc = collect(&layout, &state, &validator).await;
    out.result(&doc, |o| render(&doc, o));
    if doc.healthy {
        Ok(())
    } else {
        Err(Reported(
            "not every devnet process is running and healthy (`nicompute devnet up` restarts what stopped)".into(),
        )
        .into())
    }
}
