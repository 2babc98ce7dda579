//! `sync`: ask every serving miner of the subnet for its specs (`Specs` synapse), concurrently,
//! and store them in `miner_details` with SN27's `no_specs_count` rule and our last-seen time.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use bittensor::subtensor::Subtensor;
use bittensor::Keypair;
use clap::Args;
use compute::db::ComputeDb;
use compute::renter::Renter;

use crate::duration::parse_duration;
use crate::opts::GlobalOpts;
use crate::output::{table, Output};

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Time allowed for each miner's answer.
    #[arg(long, value_parser = parse_duration, default_value = "12s")]
    pub timeout: Duration,
    /// Miners asked at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

pub use compute::renter::SyncReport;

/// Asks every serving miner of `netuid` for its specs as `keypair` and records the answers (and
/// the failures, for SN27's `no_specs_count`) in `db`: [`Renter::sync`] for callers holding the
/// parts (`devnet up`). `progress` gets (done, total).
pub async fn sync_specs(
    db: Arc<ComputeDb>,
    chain: &Subtensor,
    keypair: Keypair,
    netuid: u16,
    timeout: Duration,
    concurrency: usize,
    progress: &(dyn Fn(usize, usize) + Send + Sync),
) -> anyhow::Result<SyncReport> {
    let renter = Renter::new(db, chain.clone(), netuid, keypair);
    Ok(renter.sync(timeout, concurrency, progress).await?)
}

impl SyncArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let renter = crate::cmd::renter(g)?;
        let tty = std::io::stderr().is_terminal();
        let progress = move |done: usize, total: usize| {
            if tty {
                let _ = write!(std::io::stderr(), "\rsync: {done}/{total} miners answered or failed");
            }
        };
        let report = renter.sync(self.timeout, self.concurrency, &progress).await;
        if tty {
            let _ = writeln!(std::io::stderr());
        }
        let doc = report?;
        out.result(&doc, |o| {
            if !doc.failed.is_empty() {
                let rows = doc.failed.iter().map(|(h, e)| vec![h.clone(), e.clone()]).collect();
                writeln!(o, "{}", table(&["Hotkey", "No specs because"], rows))?;
            }
            writeln!(o, "sync: {} of {} serving miners answered; {} failed", doc.answered, doc.asked, doc.failed.len())
        });
        Ok(())
    }
}
