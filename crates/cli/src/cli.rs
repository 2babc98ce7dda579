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
    propagate_version = true,
    args_override_self = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    /// No command: the interactive shell (on a terminal).
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Allocate a machine by requirement (GPU type and size; prompts in the shell).
    #[command(name = "a", visible_alias = "allocate")]
    A(cmd::alloc::AArgs),
    /// Allocate a machine from a given miner hotkey.
    #[command(name = "a_hotkey", visible_alias = "allocate-hotkey")]
    AHotkey(cmd::alloc::AHotkeyArgs),
    /// Deallocate machines by hotkey (comma-separated).
    #[command(name = "d", visible_alias = "deallocate")]
    D(cmd::dealloc::DArgs),
    /// List my allocations.
    #[command(name = "list_a", visible_alias = "list-allocations")]
    ListA,
    /// List my allocated hotkeys still in the metagraph.
    #[command(name = "list_ah", visible_alias = "list-allocated-hotkeys")]
    ListAh,
    /// List the network's resources (from `sync`).
    #[command(name = "list_r", visible_alias = "list-resources")]
    ListR(cmd::list::ListRArgs),
    /// Penalize miners by hotkey (comma-separated): never candidates.
    #[command(name = "p_hotkey", visible_alias = "penalize")]
    PHotkey(cmd::penalty::HotkeysArg),
    /// Lift penalties by hotkey (comma-separated).
    #[command(name = "dp_hotkey", visible_alias = "depenalize")]
    DpHotkey(cmd::penalty::HotkeysArg),
    /// List penalized hotkeys.
    #[command(name = "list_p", visible_alias = "list-penalized")]
    ListP,
    /// Refresh every serving miner's specs into the database.
    Sync(cmd::sync::SyncArgs),
    /// Retry pending deallocations, release interrupted allocations, find vanished ones.
    Reconcile(cmd::reconcile::ReconcileArgs),
    /// Log in to an allocation (or run a command there after `--`).
    Ssh(cmd::ssh::SshArgs),
    /// btcli-compatible wallets: create, list, show; balance and transfer on the chain.
    #[command(subcommand)]
    Wallet(cmd::wallet::WalletCommand),
    /// The subnet's shared state on wandb: our validator run and its publications.
    #[command(subcommand)]
    Wandb(cmd::wandb::WandbCommand),
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
    /// Register a hotkey on a subnet (burned registration).
    #[command(subcommand)]
    Subnet(cmd::subnet::SubnetCommand),
    /// Publish where the wallet's hotkey serves its axon (serve_axon).
    #[command(subcommand)]
    Axon(cmd::axon::AxonCommand),
    /// Stamp the wallet hotkey's version on chain (serve_prometheus): SN27 miners gate renters on it.
    #[command(subcommand)]
    Prometheus(cmd::prometheus::PrometheusCommand),
    /// Stake TAO to a hotkey.
    #[command(subcommand)]
    Stake(cmd::stake::StakeCommand),
}

impl Cli {
    /// Prints the usage to stderr (no command and no terminal for the shell).
    pub fn command_help() -> std::io::Result<()> {
        use clap::CommandFactory;
        use std::io::Write;
        let mut err = std::io::stderr();
        writeln!(err, "{}", Cli::command().render_help())?;
        writeln!(err, "error: no command given; the interactive shell needs a terminal")
    }
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
    fn positional_hotkeys_do_not_touch_the_wallet_hotkey() {
        let hk = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
        for argv in [vec!["nicompute", "a_hotkey", hk], vec!["nicompute", "ssh", hk]] {
            let c = Cli::try_parse_from(&argv).expect("parse");
            assert_eq!(c.global.wallet.hotkey, None, "{argv:?}");
        }
    }

    #[test]
    fn seed_command_names_and_long_aliases() {
        for (short, long) in [
            ("a", "allocate"),
            ("a_hotkey", "allocate-hotkey"),
            ("d", "deallocate"),
            ("list_a", "list-allocations"),
            ("list_ah", "list-allocated-hotkeys"),
            ("list_r", "list-resources"),
            ("p_hotkey", "penalize"),
            ("dp_hotkey", "depenalize"),
            ("list_p", "list-penalized"),
        ] {
            let extra: &[&str] =
                if short.ends_with("hotkey") { &["5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"] } else { &[] };
            let a =
                Cli::try_parse_from([&["nicompute", short][..], extra].concat()).map(|c| format!("{:?}", c.command));
            let b = Cli::try_parse_from([&["nicompute", long][..], extra].concat()).map(|c| format!("{:?}", c.command));
            assert_eq!(a.expect(short), b.expect(long));
        }
    }

    #[test]
    fn dotted_and_kebab_wallet_flags() {
        let a = Cli::try_parse_from(["nicompute", "wallet", "show", "--wallet.name", "w", "--wallet-hotkey", "h"])
            .expect("parse");
        assert_eq!(a.global.wallet.name.as_deref(), Some("w"));
        assert_eq!(a.global.wallet.hotkey.as_deref(), Some("h"));
    }
}
