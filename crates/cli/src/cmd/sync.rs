//! `sync`: ask every serving miner of the subnet for its specs (`Specs` synapse), concurrently,
//! and store them in `miner_details` with SN27's `no_specs_count` rule and our last-seen time.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use bittensor::dendrite::Dendrite;
use bittensor::subtensor::Subtensor;
use bittensor::Keypair;
use clap::Args;
use compute::db::ComputeDb;
use serde::Serialize;

use crate::cmd::open_db;
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

/// What one sync did: how many serving miners were asked, how many answered with specs, and
/// why each of the others has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub asked: usize,
    pub answered: usize,
    pub failed: Vec<(String, String)>,
}

/// Asks every serving miner of `netuid` for its specs as `keypair` and records the answers (and
/// the failures, for SN27's `no_specs_count`) in `db`. `progress` gets (done, total).
pub async fn sync_specs(
    db: &ComputeDb,
    chain: &Subtensor,
    keypair: Keypair,
    netuid: u16,
    timeout: Duration,
    concurrency: usize,
    progress: &(dyn Fn(usize, usize) + Send + Sync),
) -> anyhow::Result<SyncReport> {
    let mg = chain.metagraph(netuid).await.context("reading the metagraph")?;
    let dendrite = Dendrite::new(keypair);
    let results = compute::allocator::sync_specs(&dendrite, &mg, timeout, concurrency, progress).await;
    let now = db.clock().now_ms();
    let mut failed = Vec::new();
    for (hotkey, r) in &results {
        match r {
            Ok(specs) => db.upsert_specs(hotkey, specs, now)?,
            Err(e) => {
                let why = e.to_string();
                db.record_no_specs(hotkey, &why, now)?;
                failed.push((hotkey.clone(), why));
            }
        }
    }
    Ok(SyncReport { asked: results.len(), answered: results.len() - failed.len(), failed })
}

impl SyncArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let db = open_db(g)?;
        let chain = g.subtensor.client()?;
        let keypair = g.wallet.hotkey()?;
        let tty = std::io::stderr().is_terminal();
        let progress = move |done: usize, total: usize| {
            if tty {
                let _ = write!(std::io::stderr(), "\rsync: {done}/{total} miners answered or failed");
            }
        };
        let report =
            sync_specs(&db, &chain, keypair, g.subtensor.netuid(), self.timeout, self.concurrency, &progress).await;
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
