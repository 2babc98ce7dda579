//! One module per command; `dispatch` is a one-line match.

pub mod alloc;
pub mod axon;
pub mod balance;
pub mod dealloc;
pub mod devnet;
pub mod list;
pub mod metagraph;
pub mod miner;
pub mod miner_publish;
pub mod penalty;
pub mod prometheus;
pub mod query;
pub mod reconcile;
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
use compute::allocator::{Allocated, AllocationStore};
use compute::db::{AllocationDetails, ComputeDb};

use crate::cli::{Cli, Command};
use crate::opts::GlobalOpts;
use crate::output::{Output, UsageError};

/// Opens the allocation database: `--db`, then `NICOMPUTE_DB`, then the data directory.
pub fn open_db(g: &GlobalOpts) -> anyhow::Result<ComputeDb> {
    let path =
        g.db.clone()
            .or_else(|| std::env::var_os("NICOMPUTE_DB").filter(|v| !v.is_empty()).map(Into::into))
            .or_else(compute::db::default_path)
            .context("no database path: set --db or HOME")?;
    Ok(ComputeDb::open(&path)?)
}

/// The allocator's journal, kept in the allocation database.
#[derive(Debug)]
pub struct DbStore<'a>(pub &'a ComputeDb);

impl AllocationStore for DbStore<'_> {
    fn begin(&self, hotkey: &str, regkey_pem: &str, expires_ms: u64, ssh_key_injected: bool) -> Result<(), String> {
        self.0.begin_allocation(hotkey, regkey_pem, expires_ms, ssh_key_injected).map_err(|e| e.to_string())
    }
    fn commit(&self, hotkey: &str, a: &Allocated) -> Result<(), String> {
        let details = AllocationDetails {
            username: a.username.clone(),
            password: a.password.clone(),
            port: a.port,
            ip: a.ip.clone(),
            resource: a.resource.clone(),
            regkey: a.regkey_pem.clone(),
            version: match &a.version {
                compute::crypto::CredentialsVersion::Number(n) => serde_json::Value::from(*n),
                compute::crypto::CredentialsVersion::Text(t) => serde_json::Value::from(t.clone()),
            },
        };
        self.0.commit_allocation(hotkey, &details).map_err(|e| e.to_string())
    }
    fn abort(&self, hotkey: &str) -> Result<(), String> {
        self.0.abort_allocation(hotkey).map(|_| ()).map_err(|e| e.to_string())
    }
    fn mark_pending(&self, hotkey: &str, error: &str) {
        if let Err(e) = self.0.mark_pending_deallocation(hotkey, error) {
            tracing::error!(hotkey, error = %e, "could not mark the allocation pending");
        }
    }
    fn finish(&self, hotkey: &str) {
        if let Err(e) = self.0.finish_deallocation(hotkey) {
            tracing::error!(hotkey, error = %e, "could not remove the allocation row");
        }
    }
}

pub async fn dispatch(cli: Cli, out: &mut Output) -> anyhow::Result<()> {
    let Some(command) = cli.command else {
        return Err(UsageError("no command given (see `nicompute --help`)".into()).into());
    };
    let mut global = cli.global;
    crate::config::apply_to(&mut global).map_err(|e| UsageError(e.to_string()))?;
    let g = &global;
    match command {
        Command::A(a) => a.run(g, out).await,
        Command::AHotkey(a) => a.run(g, out).await,
        Command::D(a) => a.run(g, out).await,
        Command::ListA => list::list_a(g, out),
        Command::ListAh => list::list_ah(g, out).await,
        Command::ListR(a) => a.run(g, out).await,
        Command::PHotkey(a) => a.penalize(g, out).await,
        Command::DpHotkey(a) => a.depenalize(g, out).await,
        Command::ListP => penalty::list(g, out).await,
        Command::Sync(a) => a.run(g, out).await,
        Command::Reconcile(a) => a.run(g, out).await,
        Command::Ssh(a) => a.run(g, out).await,
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
    }
}
