//! `nicompute subnet register --netuid N`: burned registration of the wallet's hotkey, paid by
//! its coldkey (`SubtensorModule.burned_register`). The burn and the fee are shown before anything
//! is signed; an already registered hotkey is reported and nothing is sent.

use anyhow::Context;
use bittensor::subtensor::calls::burned_register;
use clap::{Args, Subcommand};
use serde_json::{json, Map};

use super::tx::{self, tao, Report, TxArgs};
use crate::opts::GlobalOpts;
use crate::output::{Output, Reported};

#[derive(Debug, Subcommand)]
pub enum SubnetCommand {
    /// Register the wallet's hotkey on --netuid by burning TAO from its coldkey.
    Register(RegisterArgs),
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub tx: TxArgs,
}

impl SubnetCommand {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        match self {
            SubnetCommand::Register(a) => a.run(g, out).await,
        }
    }
}

impl RegisterArgs {
    async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let netuid = g.subtensor.netuid();
        let w = g.wallet.wallet();
        let cold = w.coldkeypub().with_context(|| format!("reading the coldkey address of wallet '{}'", w.name))?;
        let hot = w.hotkey_public().with_context(|| format!("reading hotkey '{}' of wallet '{}'", w.hotkey, w.name))?;
        let chain = tx::chain(g)?;
        let call = burned_register(netuid, &hot);
        let (exists, uid, burn, balance, prepared) = tokio::try_join!(
            async { chain.subnet_exists(netuid).await.map_err(anyhow::Error::from) },
            async { chain.uid_of(netuid, &hot).await.map_err(anyhow::Error::from) },
            async { chain.burn(netuid).await.map_err(anyhow::Error::from) },
            async { chain.balance(&cold).await.map_err(anyhow::Error::from) },
            async { chain.prepare(&call, &cold, &self.tx.options()).await.map_err(anyhow::Error::from) },
        )
        .context("preparing the registration")?;
        if !exists {
            return Err(Reported(format!(
                "netuid {netuid} does not exist on {}; nothing was signed",
                chain.endpoint()
            ))
            .into());
        }
        if let Some(uid) = uid {
            let doc = json!({"ok": true, "already_registered": true, "hotkey": hot.to_ss58(), "netuid": netuid, "uid": uid,
                "endpoint": chain.endpoint()});
            out.result(&doc, |o| {
                writeln!(o, "Hotkey {hot} is already registered on netuid {netuid} as uid {uid}; nothing to do")
            });
            return Ok(());
        }
        let fee = tx::quote_if_asking(&chain, &prepared, &self.tx).await?;
        let fee = tx::fee_for_check(&chain, &prepared, fee, balance.free, burn).await?;
        let needed = burn + fee.unwrap_or(0);
        if balance.free < needed {
            return Err(Reported(format!(
                "insufficient balance: coldkey {cold} has {} free; registering on netuid {netuid} burns {} plus the fee; nothing was signed",
                tao(balance.free),
                tao(burn)
            ))
            .into());
        }
        tx::confirm(
            out,
            &self.tx,
            &[
                format!("Register hotkey {hot} on netuid {netuid} ({}), paid by coldkey {cold}", chain.endpoint()),
                format!("  burn             {}", tao(burn)),
                tx::fee_line(fee),
                format!("  balance          {} → about {}", tao(balance.free), tao(balance.free - needed)),
            ],
        )?;
        let key = tx::coldkey(g)?;
        let (result, fee) = tx::submit(&chain, &prepared, &key, &self.tx, fee).await;
        let uid = match &result {
            Ok(_) => chain.uid_of(netuid, &hot).await.ok().flatten(),
            Err(_) => None,
        };
        let fields = Map::from_iter([
            ("hotkey".to_owned(), json!(hot.to_ss58())),
            ("netuid".to_owned(), json!(netuid)),
            ("burn_rao".to_owned(), json!(burn)),
            ("uid".to_owned(), json!(uid)),
        ]);
        tx::finish(
            out,
            Report { chain: &chain, prepared: &prepared, fee, fields },
            result,
            |inc| {
                let uid = uid.map_or_else(|| "?".to_owned(), |u| u.to_string());
                format!(
                    "Registered hotkey {hot} on netuid {netuid} as uid {uid} in block {} (burned {})",
                    inc.block_number,
                    tao(burn)
                )
            },
            |name| match name {
                "TooManyRegistrationsThisBlock" | "TooManyRegistrationsThisInterval" => {
                    Some("the subnet's registration limit is reached for now: try again in a few blocks".into())
                }
                "HotKeyAlreadyRegisteredInSubNet" => Some("this hotkey is already registered on the subnet".into()),
                "SubNetRegistrationDisabled" => Some("registration is disabled on this subnet".into()),
                "NotEnoughBalanceToStake" | "BalanceWithdrawalError" | "InvalidTransaction::Payment" => {
                    Some("the coldkey's balance does not cover the burn and the fee".into())
                }
                _ => None,
            },
        )
    }
}
