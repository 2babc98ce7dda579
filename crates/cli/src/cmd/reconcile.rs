//! `reconcile`: make the database and the miners agree. Releases allocations this CLI started
//! but never recorded, retries pending deallocations, and asks every allocated miner whether the
//! allocation still exists (reporting rows whose machine is gone).

use clap::Args;
use serde::Serialize;

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
        let renter = crate::cmd::renter(g)?;
        let mg = renter.metagraph().await?;
        let report = renter.reconcile(&mg, self.prune).await?;
        let rows: Vec<Row> = report
            .allocations
            .iter()
            .map(|r| Row { hotkey: r.hotkey.clone(), state: r.state.clone(), result: r.result.to_string() })
            .collect();
        let released = report.interrupted_released;
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
        let lists: &[crate::shared::List] = if report.changed { &[crate::shared::List::Allocated] } else { &[] };
        crate::shared::publish(g, renter.db(), lists, out).await;
        Ok(())
    }
}
