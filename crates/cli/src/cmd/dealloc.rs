//! `d HOTKEY[,HOTKEY...]`: release allocations. The row is deleted only when the miner confirms;
//! an unreachable miner leaves it `pending_deallocation` for `reconcile` (SN27 forgets it first
//! and leaves the machine running for up to 90 days).

use std::io::IsTerminal;
use std::time::Duration;

use bittensor::AccountId;
use clap::Args;
use serde::Serialize;

use crate::cmd::alloc::prompt;
use crate::duration::parse_duration;
use crate::opts::GlobalOpts;
use crate::output::{Output, Reported, UsageError};

#[derive(Debug, Args)]
pub struct DeallocateArgs {
    /// Hotkeys to release, comma-separated (asked for in the shell when missing).
    #[arg(value_name = "HOTKEY[,HOTKEY...]", value_delimiter = ',')]
    pub hotkeys: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    /// Time allowed for each miner's answer (no answer: the allocation stays pending).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
}

#[derive(Debug, Serialize)]
pub struct DOutcome {
    pub hotkey: String,
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl DeallocateArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let mut hotkeys: Vec<String> =
            self.hotkeys.iter().map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect();
        if hotkeys.is_empty() {
            hotkeys = prompt("Enter hotkeys to deallocate (comma-separated):", "HOTKEY")?
                .split(',')
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .collect();
        }
        for h in &hotkeys {
            AccountId::from_ss58(h).map_err(|e| UsageError(e.to_string()))?;
        }
        if hotkeys.is_empty() {
            return Err(UsageError("give at least one hotkey".into()).into());
        }
        if !self.yes && std::io::stdin().is_terminal() {
            let answer = prompt(&format!("Deallocate {}? [y/N]", hotkeys.join(", ")), "-y")?;
            if !matches!(answer.as_str(), "y" | "Y" | "yes") {
                return Err(Reported("cancelled".into()).into());
            }
        }
        let renter = crate::cmd::renter(g)?;
        let mg = renter.metagraph().await?;
        let mut outcomes = Vec::new();
        for hk in hotkeys {
            let r = renter.deallocate(&mg, &hk, self.timeout).await?;
            outcomes.push(DOutcome { result: r.label(), detail: r.detail().map(str::to_owned), hotkey: hk });
        }
        let failed = outcomes.iter().filter(|o| o.result != "released").count();
        let released = outcomes.len() - failed;
        out.result(&outcomes, |o| {
            for x in &outcomes {
                match &x.detail {
                    Some(d) => writeln!(o, "{}: {} ({d})", x.hotkey, x.result)?,
                    None => writeln!(o, "{}: {}", x.hotkey, x.result)?,
                }
            }
            Ok(())
        });
        if released > 0 {
            crate::shared::publish(g, renter.db(), &[crate::shared::List::Allocated], out).await;
        }
        if failed > 0 {
            return Err(Reported(format!("{failed} hotkey(s) not released")).into());
        }
        Ok(())
    }
}
