//! The clap definition of every command. The interactive shell parses its lines with this same
//! definition, so shell and one-shot cannot drift apart.

use clap::{Parser, Subcommand};

use crate::cmd;
use crate::opts::GlobalOpts;

#[derive(Debug, Parser)]
#[command(
    name = "nicompute",
    version,
    about = "Allocate GPU machines on the NI Compute subnet (Bittensor SN27), run a miner, run a devnet",
    arg_required_else_help = true,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list and show btcli-compatible wallets.
    #[command(subcommand)]
    Wallet(cmd::wallet::WalletCommand),
    /// Send one synapse to an axon and print the response (an operator's curl).
    Query(cmd::query::QueryArgs),
    /// The subnet's neurons and axons at the best block.
    Metagraph(cmd::metagraph::MetagraphArgs),
    /// The miner daemon: answers Allocate and Specs, runs SSH-reachable containers.
    #[command(subcommand)]
    Miner(cmd::miner::MinerCommand),
    /// The whole network on one machine.
    #[command(subcommand)]
    Devnet(cmd::devnet::DevnetCommand),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn dotted_and_kebab_wallet_flags() {
        let a = Cli::try_parse_from(["nicompute", "wallet", "show", "--wallet.name", "w", "--wallet-hotkey", "h"])
            .expect("parse");
        assert_eq!(a.global.wallet.name.as_deref(), Some("w"));
        assert_eq!(a.global.wallet.hotkey.as_deref(), Some("h"));
    }
}
