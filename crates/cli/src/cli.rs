//! The clap definition of every command. The interactive shell parses its lines with this same
//! definition, so shell and one-shot cannot drift apart; both parse through [`Cli::parse_args`],
//! which records where each setting came from for the config file (`config::resolve`).

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    Allocate(cmd::alloc::AllocateArgs),
    /// Allocate a machine from a given miner hotkey.
    #[command(name = "a_hotkey", visible_alias = "allocate-hotkey")]
    AllocateHotkey(cmd::alloc::AllocateHotkeyArgs),
    /// Deallocate machines by hotkey (comma-separated).
    #[command(name = "d", visible_alias = "deallocate")]
    Deallocate(cmd::dealloc::DeallocateArgs),
    /// List my allocations.
    #[command(name = "list_a", visible_alias = "list-allocations")]
    ListAllocations,
    /// List my allocated hotkeys still in the metagraph.
    #[command(name = "list_ah", visible_alias = "list-allocated-hotkeys")]
    ListAllocatedHotkeys,
    /// List the network's resources (from `sync`).
    #[command(name = "list_r", visible_alias = "list-resources")]
    ListResources(cmd::list::ListResourcesArgs),
    /// Penalize miners by hotkey (comma-separated): never candidates.
    #[command(name = "p_hotkey", visible_alias = "penalize")]
    Penalize(cmd::penalty::PenalizeArgs),
    /// Lift penalties by hotkey (comma-separated).
    #[command(name = "dp_hotkey", visible_alias = "depenalize")]
    Depenalize(cmd::penalty::DepenalizeArgs),
    /// List penalized hotkeys.
    #[command(name = "list_p", visible_alias = "list-penalized")]
    ListPenalized,
    /// Refresh every serving miner's specs into the database.
    Sync(cmd::sync::SyncArgs),
    /// Retry pending deallocations, release interrupted allocations, find vanished ones.
    Reconcile(cmd::reconcile::ReconcileArgs),
    /// Log in to an allocation (or run a command there after `--`).
    Ssh(cmd::ssh::SshArgs),
    /// Restart an allocation's container (done when its SSH server answers again).
    Restart(cmd::lifecycle::LifecycleArgs),
    /// Pause an allocation's container (done when its SSH server stops answering).
    Pause(cmd::lifecycle::LifecycleArgs),
    /// Unpause an allocation's container (done when its SSH server answers again).
    #[command(visible_alias = "resume")]
    Unpause(cmd::lifecycle::LifecycleArgs),
    /// Replace an allocation's login key with another public key.
    #[command(name = "exchange-key", visible_alias = "exchange_key")]
    ExchangeKey(cmd::lifecycle::ExchangeKeyArgs),
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
    /// The Resource Allocation API over HTTP (/v1, SN27's register_api routes, webhooks).
    Serve(cmd::serve::ServeArgs),
    /// The API's tokens.
    #[command(subcommand)]
    Api(cmd::api::ApiCommand),
}

/// Settings read from the environment only: a secret in argv is visible to every user of the
/// machine (`ps`), so a flag spelling of these is refused.
const ENV_ONLY: [&str; 3] = ["wallet.password", "wandb.api_key", "webhook.secret"];

/// Whether settings are read from the process environment: always, except in unit tests, which
/// must not depend on the developer's environment (the binary's tests set it explicitly).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EnvPolicy {
    #[default]
    Process,
    Ignore,
}

impl Cli {
    /// Parses `args` (the program name first) and records each setting's source; the one entry
    /// of one-shot commands and shell lines. An environment variable that is set but empty
    /// counts as unset, as in the SDK.
    pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        Self::parse_args_with(args, EnvPolicy::Process)
    }

    /// [`Cli::parse_args`], reading the environment or not.
    pub fn parse_args_with<I, T>(args: I, env: EnvPolicy) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let argv: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut cmd = without_env(Cli::command(), env);
        let matches = cmd.try_get_matches_from_mut(argv.clone())?;
        for id in ENV_ONLY {
            if given_on_command_line(&matches, id) {
                // The declared variable, even when this parse ignores the environment.
                let arg = all_arguments(&Cli::command()).into_iter().find(|a| a.get_id() == id);
                let env = arg
                    .as_ref()
                    .and_then(|a| a.get_env())
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Err(cmd.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("this secret is read from {env} only, never from the command line (argv is visible to every user of this machine)"),
                ));
            }
        }
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
        cli.global.given = crate::opts::Given::new(argv, &matches, env);
        Ok(cli)
    }

    /// Prints the usage to stderr (no command and no terminal for the shell).
    pub fn command_help() -> std::io::Result<()> {
        use clap::CommandFactory;
        use std::io::Write;
        let mut err = std::io::stderr();
        writeln!(err, "{}", Cli::command().render_help())?;
        writeln!(err, "error: no command given; the interactive shell needs a terminal")
    }
}

/// Whether the setting `id` came from argv, in the command or any of its subcommands.
fn given_on_command_line(m: &clap::ArgMatches, id: &str) -> bool {
    let here = m.try_get_raw(id).is_ok_and(|v| v.is_some())
        && m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    here || m.subcommand().is_some_and(|(_, sub)| given_on_command_line(sub, id))
}

/// Every argument of `cmd` and its subcommands.
fn all_arguments(cmd: &clap::Command) -> Vec<clap::Arg> {
    let mut out: Vec<clap::Arg> = cmd.get_arguments().cloned().collect();
    for sub in cmd.get_subcommands() {
        out.extend(all_arguments(sub));
    }
    out
}

/// `cmd` without the variables that are set but empty (or without any, for [`EnvPolicy::Ignore`]).
fn without_env(cmd: clap::Command, env: EnvPolicy) -> clap::Command {
    let cmd = cmd.mut_args(|a| match a.get_env() {
        Some(_) if env == EnvPolicy::Ignore => a.env(None),
        Some(name) if std::env::var_os(name).is_some_and(|v| v.is_empty()) => a.env(None),
        _ => a,
    });
    cmd.mut_subcommands(|c| without_env(c, env))
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
        for argv in [
            vec!["nicompute", "a_hotkey", hk],
            vec!["nicompute", "ssh", hk],
            vec!["nicompute", "restart", hk],
            vec!["nicompute", "resume", hk],
            vec!["nicompute", "exchange-key", hk, "--ssh-key", "k.pub"],
        ] {
            let c = Cli::parse_args_with(&argv, EnvPolicy::Ignore).expect("parse");
            assert_eq!(c.global.given.source("wallet.hotkey"), crate::opts::Source::Default, "{argv:?}");
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
        let a = Cli::parse_args_with(
            ["nicompute", "wallet", "show", "--wallet.name", "w", "--wallet-hotkey", "h"],
            EnvPolicy::Ignore,
        )
        .expect("parse");
        assert_eq!(a.global.wallet.name, "w");
        assert_eq!(a.global.wallet.hotkey, "h");
    }

    #[test]
    fn a_global_flag_after_the_command_is_recorded_as_a_flag() {
        let c = Cli::parse_args_with(["nicompute", "list_a", "--db", "x.db", "--netuid", "5"], EnvPolicy::Ignore)
            .expect("parse");
        assert_eq!(c.global.given.source("db"), crate::opts::Source::Flag);
        assert_eq!(c.global.given.source("subtensor.netuid"), crate::opts::Source::Flag);
        assert_eq!(c.global.given.source("wallet.name"), crate::opts::Source::Default);
        assert_eq!(c.global.subtensor.netuid(), 5);
    }

    #[test]
    fn secrets_are_refused_in_argv() {
        for flag in ["--wallet.password", "--wandb-api-key"] {
            let e = Cli::parse_args_with(["nicompute", flag, "s3cret", "list_a"], EnvPolicy::Ignore).expect_err(flag);
            assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict, "{flag}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
        let e = Cli::parse_args_with(["nicompute", "serve", "--webhook-secret", "s3cret"], EnvPolicy::Ignore)
            .expect_err("a subcommand's secret too");
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(e.to_string().contains("NICOMPUTE_WEBHOOK_SECRET") && !e.to_string().contains("s3cret"), "{e}");
    }
}
