//! One module per command; `dispatch` is a one-line match.

pub mod devnet;
pub mod metagraph;
pub mod miner;
pub mod query;
pub mod wallet;

use crate::cli::{Cli, Command};
use crate::output::Output;

pub async fn dispatch(cli: Cli, out: &mut Output) -> anyhow::Result<()> {
    match cli.command {
        Command::Wallet(c) => c.run(&cli.global, out),
        Command::Query(a) => a.run(&cli.global, out).await,
        Command::Metagraph(a) => a.run(&cli.global, out).await,
        Command::Devnet(c) => c.run(&cli.global, out).await,
        Command::Miner(c) => c.run(&cli.global, out).await,
    }
}
