//! `sync`: ask every serving miner of the subnet for its specs (`Specs` synapse), concurrently,
//! and store them in `miner_details` with SN27's `no_specs_count` rule and our last-seen time.
//! Requests carry nicompute's signed extension: a nicompute miner signs its specs, and is then
//! remembered as one that signs (its unsigned answers are refused from then on);
//! `--forget-signer HOTKEY` forgets that for a miner that really moved to SN27's software.

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
    /// The sync's deadline, from its start: every miner's answer is due by then (all are asked
    /// at once, up to --concurrency).
    #[arg(long, value_parser = parse_duration, default_value = "12s")]
    pub timeout: Duration,
    /// Miners asked at once (256 asks a whole subnet together).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Forget that these miners sign their answers (comma-separated), then sync.
    #[arg(long = "forget-signer", value_name = "HOTKEY", value_delimiter = ',')]
    pub forget_signer: Vec<String>,
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
        for hk in &self.forget_signer {
            if !renter.forget_signer(hk.trim())? {
                out.note(&format!("{hk} was not remembered as a miner that signs"));
            }
        }
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
            writeln!(
                o,
                "sync: {} of {} serving miners answered ({} signed: nicompute miners); {} failed",
                doc.answered,
                doc.asked,
                doc.signed,
                doc.failed.len()
            )
        });
        Ok(())
    }
}
