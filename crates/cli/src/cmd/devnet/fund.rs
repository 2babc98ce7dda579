//! `nicompute devnet fund`: gives an account TAO on a development chain — the one development
//! shortcut a devnet keeps. On the embedded chain it is an extrinsic,
//! `Sudo.sudo(Balances.force_set_balance)`, signed by the devnet's owner key (its genesis sudo
//! key, the `owner` wallet in the devnet's directory: only the user who can read that directory
//! can fund); on the real runtime (`devnet up --chain runtime`) it is chopsticks'
//! `dev_setStorage`, which exists only on chopsticks.

use anyhow::Context;
use bittensor::devnet::ops;
use bittensor::subtensor::calls::{format_tao, parse_tao};
use bittensor::subtensor::Subtensor;
use bittensor::wallet::NoPassword;
use bittensor::AccountId;
use clap::Args;
use serde::Serialize;

use super::net::{ChainKind, Layout, State};
use super::DirArg;
use crate::opts::GlobalOpts;
use crate::output::{Output, UsageError};

#[derive(Debug, Args)]
pub struct FundArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// The account to fund (a coldkey's SS58 address).
    #[arg(long, value_name = "SS58")]
    pub ss58: AccountId,
    /// Its free balance afterwards, in TAO (set, not added).
    #[arg(long, default_value = "1000")]
    pub amount: String,
}

#[derive(Debug, Serialize)]
struct FundDoc {
    account: String,
    free_rao: u128,
    chain: String,
    /// How: `sudo` (the owner key's extrinsic) or `dev_setStorage` (chopsticks).
    via: &'static str,
}

impl FundArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let rao = parse_tao(&self.amount).map_err(|e| UsageError(e.to_string()))?;
        let layout = Layout::new(self.dir.resolve(g)?);
        // A directory made by `devnet up` names its chain; a bare `devnet chain` directory holds
        // only the owner wallet, and the chain is the one the global options name.
        let (endpoint, kind) = match State::load(&layout)? {
            Some(s) => (s.ws_url(), s.chain.kind),
            None if layout.wallets().join(super::chain::OWNER_WALLET).is_dir() => {
                (g.subtensor.endpoint()?, ChainKind::Embedded)
            }
            None => {
                return Err(UsageError(format!(
                    "{} is not a devnet directory (no {} and no owner wallet): give the devnet's --dir",
                    layout.dir.display(),
                    super::net::STATE_FILE
                ))
                .into())
            }
        };
        let chain = Subtensor::new(&endpoint)?;
        let via = fund(&layout, kind, &chain, &[(self.ss58, rao)]).await?;
        let free_rao = chain.free_balance(&self.ss58).await?;
        let doc = FundDoc { account: self.ss58.to_ss58(), free_rao, chain: endpoint, via };
        out.result(&doc, |o| {
            writeln!(o, "{} now holds {} TAO on {} (via {})", doc.account, format_tao(doc.free_rao), doc.chain, doc.via)
        });
        Ok(())
    }
}

/// Funds accounts the development way the chain offers: the owner's sudo extrinsic on the
/// embedded chain, `dev_setStorage` on chopsticks. Returns which.
pub async fn fund(
    layout: &Layout,
    kind: ChainKind,
    chain: &Subtensor,
    accounts: &[(AccountId, u128)],
) -> anyhow::Result<&'static str> {
    match kind {
        ChainKind::Embedded => {
            let owner = super::chain::owner_wallet(&layout.wallets())?
                .coldkey(&NoPassword)
                .context("loading the devnet's owner key")?;
            ops::fund(chain, &owner, accounts).await.context("funding with the owner's sudo call")?;
            Ok("sudo")
        }
        ChainKind::Runtime => {
            bittensor::chopsticks::fund(chain, accounts).await.context("funding with chopsticks' dev_setStorage")?;
            Ok("dev_setStorage")
        }
    }
}
