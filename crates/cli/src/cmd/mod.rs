//! One module per command; `dispatch` is a one-line match.

pub mod alloc;
pub mod api;
pub mod axon;
pub mod balance;
pub mod dealloc;
pub mod devnet;
pub mod lifecycle;
pub mod list;
pub mod metagraph;
pub mod miner;
pub mod miner_publish;
pub mod penalty;
pub mod prometheus;
pub mod query;
pub mod reconcile;
pub mod serve;
pub mod serving;
pub mod ssh;
pub mod stake;
pub mod subnet;
pub mod sync;
pub mod transfer;
pub mod tx;
pub mod wallet;
pub mod wandb;

use anyhow::Context;
use compute::db::ComputeDb;

use crate::cli::{Cli, Command};
use crate::opts::GlobalOpts;
use crate::output::{Output, UsageError};

/// Opens the allocation database: `--db` (or `NICOMPUTE_DB`, or the config file), else
/// `database.db` in the data directory.
pub fn open_db(g: &GlobalOpts) -> anyhow::Result<ComputeDb> {
    let path =
        g.db.clone()
            .or_else(|| g.dirs.data_dir().map(|d| d.join("database.db")))
            .context("no database path: set --db or HOME")?;
    Ok(ComputeDb::open(&path)?.with_clock(g.clock.clone()))
}

/// The renter facade over the allocation database, the chain and the wallet's hotkey (the one
/// implementation behind `a`, `d`, `sync`, `reconcile` and `serve`).
pub fn renter(g: &GlobalOpts) -> anyhow::Result<compute::renter::Renter> {
    let db = std::sync::Arc::new(open_db(g)?);
    let chain = g.subtensor.client()?;
    let keypair = g.wallet.hotkey()?;
    Ok(compute::renter::Renter::new(db, chain, g.subtensor.netuid(), keypair))
}

/// Runs a command parsed by `Cli::parse_args`, its settings completed by the config file.
/// Work a command starts as soon as it is parsed, before the configuration, logging and the
/// async runtime: `a` and `a_hotkey` start their allocation key (tens of milliseconds of CPU
/// that nothing else waits for until the first miner says yes).
pub fn start_early(cli: &Cli) {
    if matches!(cli.command, Some(Command::Allocate(_) | Command::AllocateHotkey(_))) {
        compute::crypto::KeyReserve::global().prepare();
    }
}

/// Whether the command runs on the calling thread alone: the list commands read the database
/// (and at most the shared state over HTTP) and print, and worker threads would only add their
/// start and join to a cold run.
pub fn one_thread(cli: &Cli) -> bool {
    matches!(
        cli.command,
        Some(
            Command::ListAllocations
                | Command::ListAllocatedHotkeys
                | Command::ListResources(_)
                | Command::ListPenalized
        )
    )
}

pub async fn dispatch(cli: Cli, out: &mut Output) -> anyhow::Result<()> {
    let Cli { command, global } = crate::config::resolve(cli).map_err(|e| UsageError(e.to_string()))?;
    let Some(command) = command else {
        return Err(UsageError("no command given (see `nicompute --help`)".into()).into());
    };
    let g = &global;
    match command {
        Command::Allocate(a) => a.run(g, out).await,
        Command::AllocateHotkey(a) => a.run(g, out).await,
        Command::Deallocate(a) => a.run(g, out).await,
        Command::ListAllocations => list::list_a(g, out),
        Command::ListAllocatedHotkeys => list::list_ah(g, out).await,
        Command::ListResources(a) => a.run(g, out).await,
        Command::Penalize(a) => a.penalize(g, out).await,
        Command::Depenalize(a) => a.depenalize(g, out).await,
        Command::ListPenalized => penalty::list(g, out).await,
        Command::Sync(a) => a.run(g, out).await,
        Command::Reconcile(a) => a.run(g, out).await,
        Command::Ssh(a) => a.run(g, out).await,
        Command::Restart(a) => a.restart(g, out).await,
        Command::Pause(a) => a.pause(g, out).await,
        Command::Unpause(a) => a.unpause(g, out).await,
        Command::ExchangeKey(a) => a.run(g, out).await,
        Command::Wallet(c) => c.run(g, out).await,
        Command::Wandb(c) => c.run(g, out).await,
        Command::Query(a) => a.run(g, out).await,
        Command::Metagraph(a) => a.run(g, out).await,
        Command::Devnet(c) => c.run(g, out).await,
        Command::Miner(c) => c.run(g, out).await,
        Command::Subnet(c) => c.run(g, out).await,
        Command::Axon(c) => c.run(g, out).await,
        Command::Prometheus(c) => c.run(g, out).await,
        Command::Stake(c) => c.run(g, out).await,
        Command::Serve(a) => a.run(g, out).await,
        Command::Api(c) => c.run(g, out).await,
    }
}
