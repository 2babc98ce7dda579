//! `sync`: ask every serving miner of the subnet for its specs (`Specs` synapse), concurrently,
//! and store them in `miner_details` with SN27's `no_specs_count` rule and our last-seen time.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use bittensor::dendrite::Dendrite;
use clap::Args;
use serde::Serialize;

use crate::cmd::open_db;
use crate::opts::{parse_duration, GlobalOpts};
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

impl SyncArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let db = open_db(g)?;
        let chain = g.subtensor.client()?;
        let keypair = g.wallet.hotkey()?;
        let mg = chain.metagraph(g.subtensor.netuid()).await.context("reading the metagraph")?;
        let dendrite = Dendrite::new(keypair);
        let tty = std::io::stderr().is_terminal();
        let progress = move |done: usize, total: usize| {
            if tty {
                let _ = write!(std::io::stderr(), "\rsync: {done}/{total} miners answered or failed");
            }
        };
        let results = compute::allocator::sync_specs(&dendrite, &mg, self.timeout, self.concurrency, &progress).await;
        if tty {
            let _ = writeln!(std::io::stderr());
        }
        let now = crate::opts::now_ms();
        let mut failed = Vec::new();
        for (hotkey, r) in &results {
            match r {
                Ok(specs) => db.upsert_specs(hotkey, specs, now)?,
                Err(e) => {
                    db.record_no_specs(hotkey, e, now)?;
                    failed.push((hotkey.clone(), e.clone()));
                }
            }
        }
        #[derive(Serialize)]
        struct Doc {
            asked: usize,
            answered: usize,
            failed: Vec<(String, String)>,
        }
        let doc = Doc { asked: results.len(), answered: results.len() - failed.len(), failed };
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
