//! The devnet's network on its chain, every step a real extrinsic through the same code nicompute
//! uses on finney (`bittensor::devnet::ops` over `subtensor::tx`): the coldkeys funded (the one
//! development shortcut: the owner's sudo call on the embedded chain, chopsticks'
//! `dev_setStorage` on the real runtime), each hotkey registered by its coldkey
//! (`burned_register`), the validator staked until the metagraph gives it SN27's validator stake
//! and a validator permit (`add_stake`), and — once the miners run — each miner's axon on chain
//! (`serve_axon`, sent by the miner itself at start; checked here). Every step reads the chain
//! first, so running it again after a restart sends only what is missing.

use std::time::Instant;

use anyhow::Context;
use bittensor::devnet::ops;
use bittensor::subtensor::calls::RAO_PER_TAO;
use bittensor::subtensor::serve::{Kind, Publication};
use bittensor::subtensor::Subtensor;
use bittensor::wallet::{NoPassword, Wallet};
use bittensor::{AccountId, Keypair};
use futures_util::future::try_join_all;
use serde::Serialize;

use super::net::{ChainKind, Layout, State};

/// The validator's stake weight: SN27 2.x miners serve callers with 10 000 TAO (1.8.x: 1024).
pub const VALIDATOR_STAKE_TAO: u128 = 10_000;
/// What each miner's coldkey gets: the burn and fees, with room to spare.
const MINER_FUNDS_TAO: u128 = 100;
pub const HOTKEY_NAME: &str = "default";
pub const VALIDATOR_WALLET: &str = "validator";

/// How long each step took, in seconds, for `up`'s report.
#[derive(Debug, Default, Serialize)]
pub struct SetupTimes {
    pub fund: f64,
    pub register: f64,
    pub stake: f64,
    pub permit: f64,
    /// Where the validator's stake went (the subnet, or root on a dynamic subnet).
    pub stake_netuid: u16,
}

/// A wallet's coldkey and hotkey (devnet wallets are unencrypted).
#[derive(Debug)]
pub struct Keys {
    pub cold: Keypair,
    pub hot: Keypair,
}

pub fn keys(layout: &Layout, name: &str) -> anyhow::Result<Keys> {
    let w = Wallet::new(layout.wallets(), name, HOTKEY_NAME);
    if !w.hotkey_path().exists() || !w.coldkey_path().exists() {
        w.create(12, None).with_context(|| format!("creating the devnet wallet {name}"))?;
    }
    let cold = w.coldkey(&NoPassword).with_context(|| format!("loading the coldkey of {name}"))?;
    let hot = w.hotkey(&NoPassword).with_context(|| format!("loading the hotkey of {name}"))?;
    Ok(Keys { cold, hot })
}

/// Where the validator stakes and how much: on the subnet itself when it prices alpha 1:1 (the
/// stable mechanism, as the embedded chain's subnets), else on root, whose stake counts on every
/// subnet at `TaoWeight` (the real runtime's dynamic subnets price alpha by a pool that a new
/// chain's genesis leaves nearly empty).
async fn stake_plan(chain: &Subtensor, netuid: u16) -> anyhow::Result<(u16, u128)> {
    let want = VALIDATOR_STAKE_TAO * RAO_PER_TAO;
    if chain.subnet_number("SubnetMechanism", netuid).await?.unwrap_or(0) == 0 {
        return Ok((netuid, want));
    }
    let weight = chain.tao_weight(netuid).await?;
    anyhow::ensure!(weight > 0, "the runtime gives root stake no weight on netuid {netuid} (TaoWeight 0)");
    // A tenth more than exactly enough: the weight is rounded down on chain.
    let root = want.saturating_mul(u128::from(u64::MAX)) / weight * 11 / 10;
    Ok((0, root))
}

/// Funds, registers and stakes; returns how long each part took.
pub async fn chain_part(layout: &Layout, state: &State, chain: &Subtensor) -> anyhow::Result<SetupTimes> {
    let netuid = state.netuid;
    let validator = keys(layout, VALIDATOR_WALLET)?;
    let miners: Vec<Keys> = state.miners.iter().map(|m| keys(layout, &m.name)).collect::<Result<_, _>>()?;
    let mut times = SetupTimes::default();

    let t = Instant::now();
    let (stake_netuid, stake_rao) = stake_plan(chain, netuid).await?;
    times.stake_netuid = stake_netuid;
    let mut funding = vec![(validator.cold.account_id(), stake_rao + MINER_FUNDS_TAO * RAO_PER_TAO)];
    funding.extend(miners.iter().map(|k| (k.cold.account_id(), MINER_FUNDS_TAO * RAO_PER_TAO)));
    let missing = missing_funds(chain, &funding).await?;
    if !missing.is_empty() {
        super::fund::fund(layout, state.chain.kind, chain, &missing).await?;
    }
    times.fund = t.elapsed().as_secs_f64();

    // Registrations in parallel (each coldkey signs its own), in waves no larger than the
    // subnet's per-block limit.
    let t = Instant::now();
    let per_block = chain.subnet_number("MaxRegistrationsPerBlock", netuid).await?.unwrap_or(1).max(1) as usize;
    let all: Vec<&Keys> = std::iter::once(&validator).chain(miners.iter()).collect();
    for wave in all.chunks(per_block) {
        try_join_all(wave.iter().map(|k| async move {
            ops::register(chain, &k.cold, &k.hot.account_id(), netuid)
                .await
                .with_context(|| format!("registering hotkey {} on netuid {netuid}", k.hot.ss58()))
        }))
        .await?;
    }
    times.register = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let stake_u64 = u64::try_from(stake_rao).context("the validator's stake does not fit u64")?;
    ops::stake_to(chain, &validator.cold, &validator.hot.account_id(), stake_netuid, stake_u64)
        .await
        .with_context(|| format!("staking the validator on netuid {stake_netuid}"))?;
    times.stake = t.elapsed().as_secs_f64();

    let t = Instant::now();
    ensure_permit(chain, state.chain.kind, netuid, &validator.hot.account_id()).await?;
    times.permit = t.elapsed().as_secs_f64();
    Ok(times)
}

/// The accounts whose free balance is below what they should get.
async fn missing_funds(chain: &Subtensor, want: &[(AccountId, u128)]) -> anyhow::Result<Vec<(AccountId, u128)>> {
    let mut out = Vec::new();
    for (who, rao) in want {
        if chain.free_balance(who).await? < *rao {
            out.push((*who, *rao));
        }
    }
    Ok(out)
}

/// Waits for the validator's permit and SN27's stake in the metagraph. The embedded chain gives
/// permits at the end of every block; the runtime at each subnet epoch, which the devnet reaches
/// with chopsticks' `dev_newBlock` at the epoch's height (the blocks between pass empty).
async fn ensure_permit(chain: &Subtensor, kind: ChainKind, netuid: u16, hotkey: &AccountId) -> anyhow::Result<()> {
    for attempt in 0..3 {
        let mg = chain.metagraph(netuid).await.context("reading the metagraph")?;
        let me = mg.neurons.iter().find(|n| n.hotkey == hotkey.to_ss58());
        let (permit, stake) = me.map_or((false, 0.0), |n| (n.validator_permit, f64::from(n.stake_tao)));
        if permit && stake >= VALIDATOR_STAKE_TAO as f64 * 0.99 {
            return Ok(());
        }
        anyhow::ensure!(
            kind == ChainKind::Runtime && attempt < 2,
            "the validator has stake {stake:.0} TAO and permit {permit} on netuid {netuid} after staking"
        );
        let tempo = chain.subnet_number("Tempo", netuid).await?.unwrap_or(100) as u64;
        // Subtensor runs a subnet's epoch at the block where (block + netuid + 1) % (tempo + 1) == 0.
        let now = chain.best_number().await?;
        let period = tempo + 1;
        let mut next = now + 1;
        next += (period - (next + u64::from(netuid) + 1) % period) % period;
        bittensor::chopsticks::jump_to(chain, next).await.context("advancing to the subnet's next epoch")?;
    }
    unreachable!("the loop returns or fails")
}

/// Each miner's axon on chain. A miner started by this `up` publishes its own with `serve_axon` at
/// start: its publication is waited for (a second one now would race it). A miner that kept
/// running while the chain restarted and lost its axon gets it published again, with its hotkey,
/// through the same call. Returns the names of the miners published here.
pub async fn axons(
    layout: &Layout,
    state: &State,
    chain: &Subtensor,
    started: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut sent = Vec::new();
    let version = compute::miner::COMPUTE_VERSION_INT as u32;
    for m in &state.miners {
        let k = keys(layout, &m.name)?;
        let ip: std::net::IpAddr = m.ip.parse().with_context(|| format!("{}'s address {}", m.name, m.ip))?;
        let endpoint = bittensor::subtensor::serve::Endpoint { ip, port: m.axon_port, version };
        if started.contains(&m.name) {
            let deadline = Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let now =
                    bittensor::subtensor::serve::current(chain, state.netuid, &k.hot.account_id(), Kind::Axon).await?;
                if now.is_some_and(|c| c.matches(&endpoint)) {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{}'s axon is not on chain 60 s after it started (its publication failed?); the end of its log ({}):\n{}",
                    m.name,
                    layout.miner_log(m).display(),
                    super::net::log_tail(&layout.miner_log(m), 15)
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            continue;
        }
        match ops::serve_axon(chain, &k.hot, state.netuid, ip, m.axon_port, version).await {
            Ok(Publication::Unchanged { .. }) => {}
            Ok(Publication::Published { .. }) => sent.push(m.name.clone()),
            Err(e) => return Err(anyhow::anyhow!("publishing {}'s axon: {e}", m.name)),
        }
    }
    Ok(sent)
}
