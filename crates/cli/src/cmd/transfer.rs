//! `nicompute wallet transfer --dest ADDR --amount TAO`: `Balances.transfer_keep_alive` from the
//! wallet's coldkey. The amount, the fee and the balance after are shown before anything is
//! signed; an amount the balance cannot cover (with the fee and the existential deposit the
//! account must keep) is refused before the coldkey is even decrypted.

use anyhow::Context;
use bittensor::subtensor::calls::{parse_tao, transfer_keep_alive};
use bittensor::AccountId;
use clap::Args;
use serde_json::{json, Map};

use super::tx::{self, tao, Report, TxArgs};
use crate::opts::GlobalOpts;
use crate::output::{Output, Reported, UsageError};

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// The receiving address.
    #[arg(long, value_name = "SS58")]
    pub dest: String,
    /// How much, in TAO (e.g. 1.5).
    #[arg(long, value_name = "TAO")]
    pub amount: String,
    #[command(flatten)]
    pub tx: TxArgs,
}

impl TransferArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let dest = AccountId::from_ss58(&self.dest).map_err(|e| UsageError(e.to_string()))?;
        let amount = parse_tao(&self.amount).map_err(|e| UsageError(e.to_string()))?;
        if amount == 0 {
            return Err(UsageError("--amount must be more than 0".into()).into());
        }
        let w = g.wallet.wallet();
        let from = w.coldkeypub().with_context(|| format!("reading the coldkey address of wallet '{}'", w.name))?;
        let chain = tx::chain(g)?;
        let call = transfer_keep_alive(&dest, amount);
        let (prepared, balance, ed) = tokio::try_join!(
            async { chain.prepare(&call, &from, &self.tx.options()).await.map_err(anyhow::Error::from) },
            async { chain.balance(&from).await.map_err(anyhow::Error::from) },
            async { chain.existential_deposit().await.map_err(anyhow::Error::from) },
        )
        .context("preparing the transfer")?;
        let fee = tx::quote_if_asking(&chain, &prepared, &self.tx).await?;
        let fee = tx::fee_for_check(&chain, &prepared, fee, balance.free, amount + ed).await?;
        let needed = amount + fee.unwrap_or(0) + ed;
        if balance.free < needed {
            return Err(Reported(format!(
                "insufficient balance: {from} has {} free; sending {} needs {} with the fee and the {} the account must keep (existential deposit); nothing was signed",
                tao(balance.free),
                tao(amount),
                tao(needed),
                tao(ed)
            ))
            .into());
        }
        tx::confirm(
            out,
            &self.tx,
            &[
                format!("Transfer {} from {from} to {dest} on {}", tao(amount), chain.endpoint()),
                tx::fee_line(fee),
                format!(
                    "  balance          {} → about {}",
                    tao(balance.free),
                    tao(balance.free - amount - fee.unwrap_or(0))
                ),
            ],
        )?;
        let key = tx::coldkey(g)?;
        let (result, fee) = tx::submit(&chain, &prepared, &key, &self.tx, fee).await;
        let fields = Map::from_iter([
            ("dest".to_owned(), json!(dest.to_ss58())),
            ("amount_rao".to_owned(), json!(amount)),
            ("balance_before_rao".to_owned(), json!(balance.free)),
        ]);
        tx::finish(
            out,
            Report { chain: &chain, prepared: &prepared, fee, fields },
            result,
            |inc| format!("Transferred {} to {dest} in block {} ({})", tao(amount), inc.block_number, inc.block_hash),
            |name| match name {
                "InvalidTransaction::Payment" => Some("the coldkey cannot pay the fee: fund it first".into()),
                n if n.contains("FundsUnavailable")
                    || n.contains("InsufficientBalance")
                    || n.contains("Expendability") =>
                {
                    Some("the balance does not cover this amount and what the account must keep".into())
                }
                _ => None,
            },
        )
    }
}
