//! `reconcile`: make the database and the miners agree. Releases allocations this CLI started
//! but never recorded, retries pending deallocations, and asks every allocated miner whether the
//! allocation still exists (reporting rows whose machine is gone).

use std::time::Duration;

use anyhow::Context;
use bittensor::dendrite::Dendrite;
use clap::Args;
use compute::allocator::{self, Candidate, DeallocOutcome};
use compute::db::AllocationState;
use serde::Serialize;

use crate::cmd::open_db;
use crate::opts::GlobalOpts;
use crate::output::{table, Output};

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Also delete rows whose machine is gone.
    #[arg(long)]
    pub prune: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    hotkey: String,
    state: String,
    result: String,
}

impl ReconcileArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let db = open_db(g)?;
        let chain = g.subtensor.client()?;
        let keypair = g.wallet.hotkey()?;
        let dendrite = Dendrite::new(keypair);
        let mg = chain.metagraph(g.subtensor.netuid()).await.context("reading the metagraph")?;
        let before = db.allocations()?.len();
        let released = crate::cmd::alloc::release_interrupted(&db, &dendrite, &mg).await;
        let mut rows = Vec::new();
        for rec in db.allocations()? {
            let hk = rec.hotkey.clone();
            let state = rec.state.as_str().to_owned();
            let Some(regkey) = rec.details.as_ref().map(|d| d.regkey.clone()).filter(|r| !r.is_empty()) else {
                rows.push(Row { hotkey: hk, state, result: "no regkey: cannot be managed".into() });
                continue;
            };
            let target = match Candidate::from_metagraph(&hk, &mg, None) {
                Ok(c) => c.target,
                Err(v) => {
                    rows.push(Row { hotkey: hk, state, result: format!("unreachable: {v}") });
                    continue;
                }
            };
            let result = if rec.state == AllocationState::PendingDeallocation {
                match allocator::deallocate(&dendrite, &target, &hk, &regkey, &db, Duration::from_secs(30)).await {
                    DeallocOutcome::Released => "released (pending deallocation completed)".to_owned(),
                    DeallocOutcome::NotHolder(_) => {
                        db.finish_deallocation(&hk)?;
                        "already gone on the miner; row removed".to_owned()
                    }
                    DeallocOutcome::Refused(r) => format!("refused: {r}"),
                    DeallocOutcome::Unreachable(e) => format!("still unreachable: {e}"),
                }
            } else {
                match allocator::still_allocated(&dendrite, &target, &regkey, Duration::from_secs(12)).await {
                    Ok(true) => "ok: the machine is allocated to you".to_owned(),
                    Ok(false) if self.prune => {
                        db.finish_deallocation(&hk)?;
                        "gone on the miner; row removed".to_owned()
                    }
                    Ok(false) => {
                        "gone on the miner (expired or removed); `reconcile --prune` removes the row".to_owned()
                    }
                    Err(e) => format!("no answer: {e}"),
                }
            };
            rows.push(Row { hotkey: hk, state, result });
        }
        #[derive(Serialize)]
        struct Doc<'a> {
            interrupted_released: usize,
            allocations: &'a [Row],
        }
        let doc = Doc { interrupted_released: released, allocations: &rows };
        out.result(&doc, |o| {
            if released > 0 {
                writeln!(o, "released {released} interrupted allocation(s)")?;
            }
            let t = rows.iter().map(|r| vec![r.hotkey.clone(), r.state.clone(), r.result.clone()]).collect();
            writeln!(o, "{}", table(&["Hotkey", "State", "Result"], t))
        });
        // Publish what changed here, and retry anything an earlier command could not publish.
        let changed = db.allocations()?.len() != before;
        let lists: &[crate::shared::List] = if changed { &[crate::shared::List::Allocated] } else { &[] };
        crate::shared::publish(g, &db, lists, out).await;
        Ok(())
    }
}
