//! `nicompute wallet balance [--ss58 ADDR]`: an account's TAO on the chain (free, reserved,
//! frozen), read from `System.Account` as the SDK's `get_balance` reads it. Without `--ss58` it is
//! the wallet's coldkey, from its public file: no password.

use anyhow::Context;
use bittensor::AccountId;
use clap::Args;
use serde::Serialize;

use super::tx::tao;
use crate::opts::GlobalOpts;
use crate::output::{Output, UsageError};

#[derive(Debug, Args)]
pub struct BalanceArgs {
    /// The address to read [default: the wallet's coldkey]
    #[arg(long, value_name = "SS58")]
    pub ss58: Option<String>,
}

#[derive(Debug, Serialize)]
struct Doc {
    address: String,
    endpoint: String,
    free_rao: u128,
    reserved_rao: u128,
    frozen_rao: u128,
    free_tao: String,
}

impl BalanceArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let address = match &self.ss58 {
            Some(s) => AccountId::from_ss58(s).map_err(|e| UsageError(e.to_string()))?,
            None => {
                let w = g.wallet.wallet();
                w.coldkeypub().with_context(|| format!("reading the coldkey address of wallet '{}'", w.name))?
            }
        };
        let chain = g.subtensor.client()?.with_metadata_dir(super::tx::metadata_dir(g));
        let b = chain.balance(&address).await.with_context(|| format!("reading the balance of {address}"))?;
        let doc = Doc {
            address: address.to_ss58(),
            endpoint: chain.endpoint().to_owned(),
            free_rao: b.free,
            reserved_rao: b.reserved,
            frozen_rao: b.frozen,
            free_tao: bittensor::subtensor::calls::format_tao(b.free),
        };
        out.result(&doc, |o| {
            writeln!(o, "{}  {}", doc.address, tao(b.free))?;
            if b.reserved > 0 || b.frozen > 0 {
                writeln!(o, "  reserved {}, frozen {}", tao(b.reserved), tao(b.frozen))?;
            }
            Ok(())
        });
        Ok(())
    }
}
