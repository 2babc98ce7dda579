//! `restart HK`, `pause HK`, `unpause HK` (`resume`) and `exchange-key HK --ssh-key FILE`: an
//! allocation's container lifecycle, on `compute::renter`'s one implementation (the API's too).
//!
//! Each is sent as SN27's `docker_change` Allocate with the allocation key and reported done
//! only when the miner confirmed *and* the machine shows it: after `restart` and `unpause` its
//! SSH server greets again, after `pause` it does not; `exchange-key` has the miner's yes (the
//! new key's private half is not here to try). Anything else is an error saying which: the miner
//! did not answer, refused (and why), or said yes while the machine does not show it. For a
//! signed allocation the answer must be signed too, and a host key the miner signs for a
//! recreated machine moves the pin.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bittensor::AccountId;
use clap::{Args, ValueEnum};
use compute::renter::{ContainerAction, RenterError};
use serde::Serialize;

use crate::duration::parse_duration;
use crate::opts::GlobalOpts;
use crate::output::{Output, UsageError};

#[derive(Debug, Args)]
pub struct LifecycleArgs {
    /// The allocated miner's hotkey.
    #[arg(id = "miner_hotkey", value_name = "HOTKEY")]
    pub hotkey: String,
    /// How long the machine has to show the action's effect.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub wait: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyType {
    /// The renter's login key.
    User,
    /// SN27's web terminal key.
    Terminal,
}

#[derive(Debug, Args)]
pub struct ExchangeKeyArgs {
    #[command(flatten)]
    pub target: LifecycleArgs,
    /// The new SSH public key (a .pub file).
    #[arg(long = "ssh-key", value_name = "PUBKEY_FILE")]
    pub ssh_key: PathBuf,
    #[arg(long = "key-type", value_enum, default_value_t = KeyType::User)]
    pub key_type: KeyType,
}

#[derive(Debug, Serialize)]
struct Done<'a> {
    hotkey: &'a str,
    action: &'static str,
    /// What was checked on the machine.
    observed: &'static str,
    /// The miner signed its answer.
    signed: bool,
    /// The pinned host key moved to the one the miner signed now.
    host_key_changed: bool,
}

impl LifecycleArgs {
    pub async fn restart(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        self.run(ContainerAction::Restart, g, out).await
    }

    pub async fn pause(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        self.run(ContainerAction::Pause, g, out).await
    }

    pub async fn unpause(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        self.run(ContainerAction::Unpause, g, out).await
    }

    async fn run(&self, action: ContainerAction, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let hotkey = self.hotkey.trim();
        AccountId::from_ss58(hotkey).map_err(|e| UsageError(e.to_string()))?;
        let renter = crate::cmd::renter(g)?;
        if renter.db().allocation(hotkey)?.is_none() {
            return Err(UsageError(format!("no allocation for {hotkey} (see `nicompute list_a`)")).into());
        }
        let mg = renter.metagraph().await?;
        let report = renter.container_action_report(&mg, hotkey, &action, self.wait).await.map_err(|e| match e {
            RenterError::Action(a) => anyhow::anyhow!("{} {hotkey}: {a}", action.name()),
            e => anyhow::Error::from(e),
        })?;
        let observed = match action {
            ContainerAction::Restart | ContainerAction::Unpause => "its SSH server answers",
            ContainerAction::Pause => "its SSH server no longer answers",
            ContainerAction::ExchangeKey { .. } => "the miner installed the key",
        };
        let doc = Done {
            hotkey,
            action: action.name(),
            observed,
            signed: report.signed,
            host_key_changed: report.host_key_changed,
        };
        out.result(&doc, |o| {
            writeln!(o, "{}: {} done ({observed})", doc.hotkey, doc.action)?;
            if doc.host_key_changed {
                writeln!(o, "the miner signed a new host key for the machine; `nicompute ssh` now expects it")?;
            }
            Ok(())
        });
        Ok(())
    }
}

impl ExchangeKeyArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(&self.ssh_key)
            .with_context(|| format!("reading the SSH public key {}", self.ssh_key.display()))?;
        let key_type = match self.key_type {
            KeyType::User => "user",
            KeyType::Terminal => "terminal",
        };
        let action = ContainerAction::parse("exchange-key", Some(&text), Some(key_type))
            .map_err(|e| UsageError(format!("{}: {e}", self.ssh_key.display())))?;
        self.target.run(action, g, out).await
    }
}
