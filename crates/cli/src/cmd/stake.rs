//! `nicompute stake add --amount TAO [--hotkey SS58]`: stakes TAO from the wallet's coldkey to a
//! hotkey on --netuid (`SubtensorModule.add_stake`). Amount, fee and balance are shown before
//! anything is signed; the stake before and after is read the way the SDK's `get_stake` reads it.

use anyhow::Context;
use bittensor::subtensor::calls::{add_stake, parse_tao};
use bittensor::AccountId;
use clap::{Args, Subcommand};
use serde_json::{json, Map};

use super::tx::{self, tao, Report, TxArgs};
use crate::opts::GlobalOpts;
use crate::output::{Output, Reported, UsageError};

#[derive(Debug, Subcommand)]
pub enum StakeCommand {
    /// Stake TAO from the wallet's coldkey to a hotkey on --netuid.
    Add(StakeAddArgs),
}

#[derive(Debug, Args)]
pub struct StakeAddArgs {
    /// How much, in TAO.
    #[arg(long, value_name = "TAO")]
    pub amount: String,
    /// The hotkey to stake to [default: the wallet's hotkey]
    #[arg(long, value_name = "SS58")]
    pub hotkey: Option<String>,
    #[command(flatten)]
    pub tx: TxArgs,
}

impl StakeCommand {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        match self {
            StakeCommand::Add(a) => a.run(g, out).await,
        }
    }
}

impl StakeAddArgs {
    async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let netuid = g.subtensor.netuid();
        let amount = parse_tao(&self.amount).map_err(|e| UsageError(e.to_string()))?;
        let amount = u64::try_from(amount).map_err(|_| UsageError("--amount is too large".into()))?;
        if amount == 0 {
            return Err(UsageError("--amount must be more than 0".into()).into());
        }
        let w = g.wallet.wallet();
        let cold = w.coldkeypub().with_context(|| format!("reading the coldkey address of wallet '{}'", w.name))?;
        let hot = match &self.hotkey {
            Some(s) => AccountId::from_ss58(s).map_err(|e| UsageError(e.to_string()))?,
            None => {
                w.hotkey_public().with_context(|| format!("reading hotkey '{}' of wallet '{}'", w.hotkey, w.name))?
            }
        };
        let chain = tx::chain(g)?;
        let call = add_stake(&hot, netuid, amount);
        let (prepared, balance, ed, before, expected) = tokio::try_join!(
            async { chain.prepare(&call, &cold, &self.tx.options()).await.map_err(anyhow::Error::from) },
            async { chain.balance(&cold).await.map_err(anyhow::Error::from) },
            async { chain.existential_deposit().await.map_err(anyhow::Error::from) },
            async { chain.stake(&cold, &hot, netuid).await.map_err(anyhow::Error::from) },
            async { chain.expected_alpha(netuid, amount.into()).await.map_err(anyhow::Error::from) },
        )
        .context("preparing the stake")?;
        if expected == 0 {
            return Err(Reported(format!(
                "staking {} on netuid {netuid} would buy no alpha at the subnet pool's current price (its reserves are \
                 too thin); nothing was signed",
                tao(amount.into())
            ))
            .into());
        }
        let fee = tx::quote_if_asking(&chain, &prepared, &self.tx).await?;
        let fee = tx::fee_for_check(&chain, &prepared, fee, balance.free, u128::from(amount) + ed).await?;
        let needed = u128::from(amount) + fee.unwrap_or(0) + ed;
        if balance.free < needed {
            return Err(Reported(format!(
                "insufficient balance: coldkey {cold} has {} free; staking {} needs {} with the fee and the {} the account must keep; nothing was signed",
                tao(balance.free),
                tao(amount.into()),
                tao(needed),
                tao(ed)
            ))
            .into());
        }
        tx::confirm(
            out,
            &self.tx,
            &[
                format!(
                    "Stake {} from coldkey {cold} to hotkey {hot} on netuid {netuid} ({})",
                    tao(amount.into()),
                    chain.endpoint()
                ),
                tx::fee_line(fee),
                format!("  balance          {} → about {}", tao(balance.free), tao(balance.free - needed + ed)),
                format!(
                    "  stake now        {} (in the subnet's alpha); about {} more",
                    tao(before.into()),
                    tao(expected)
                ),
            ],
        )?;
        let key = tx::coldkey(g)?;
        let (result, fee) = tx::submit(&chain, &prepared, &key, &self.tx, fee).await;
        let after = match &result {
            Ok(_) => chain.stake(&cold, &hot, netuid).await.ok(),
            Err(_) => None,
        };
        let fields = Map::from_iter([
            ("hotkey".to_owned(), json!(hot.to_ss58())),
            ("netuid".to_owned(), json!(netuid)),
            ("amount_rao".to_owned(), json!(amount)),
            ("stake_before_rao".to_owned(), json!(before)),
            ("expected_alpha_rao".to_owned(), json!(expected)),
            ("stake_after_rao".to_owned(), json!(after)),
        ]);
        tx::finish(
            out,
            Report { chain: &chain, prepared: &prepared, fee, fields },
            result,
            |inc| {
                let after = after.map_or_else(|| "?".to_owned(), |a| tao(a.into()));
                format!(
                    "Staked {} to {hot} on netuid {netuid} in block {}; stake now {after} (alpha)",
                    tao(amount.into()),
                    inc.block_number
                )
            },
            |name| match name {
                "HotKeyAccountNotExists" | "HotKeyNotRegisteredInSubNet" | "HotKeyNotRegisteredInNetwork" => {
                    Some(format!("hotkey {hot} is not registered: `nicompute subnet register` it first"))
                }
                "NotEnoughBalanceToStake" | "BalanceWithdrawalError" | "InvalidTransaction::Payment" => {
                    Some("the coldkey's balance does not cover the amount and the fee".into())
                }
                "AmountTooLow" | "StakeTooLowForRoot" => Some("the amount is below the chain's minimum stake".into()),
                "StakingRateLimitExceeded" | "TxRateLimitExceeded" => {
                    Some("the chain limits how often a coldkey stakes: try again in a few blocks".into())
                }
                _ => None,
            },
        )
    }
}
