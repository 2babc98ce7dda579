//! `nicompute devnet`: the whole network on one machine, for newcomers, demos and end-to-end
//! tests. `up` starts a chain (the embedded one, or the real runtime under chopsticks) and miners
//! as background processes in a directory, sets the network up on chain with real extrinsics and
//! writes a `config.toml` every other command can use; `status` shows them; `down` stops them
//! and removes their containers; `demo` runs the main job from `up` to `down`; `chain` is the
//! embedded chain alone; `fund` gives an account TAO.
//!
//! Where things are: the directory layout, state file and process control in [`net`]; the
//! set-up on chain in [`setup`]; `--gpus` in [`gpus`]; one module per subcommand.

pub mod chain;
pub mod demo;
pub mod down;
pub mod fund;
pub mod gpus;
pub mod net;
pub mod setup;
pub mod status;
pub mod up;

use std::path::{Component, Path, PathBuf};

use clap::{Args, Subcommand};

use crate::opts::GlobalOpts;
use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum DevnetCommand {
    /// Start (or complete) a devnet: chain, wallets, N miners with simulated GPUs, config.toml, sync.
    Up(up::UpArgs),
    /// Show the devnet's chain, validator and miners, with each process's health.
    Status(DirArg),
    /// Stop every devnet process and remove every container its miners made.
    Down(down::DownArgs),
    /// The main job end to end: up → list_r → a → ssh → list_a → d → down.
    Demo(demo::DemoArgs),
    /// Run the embedded devnet chain alone in the foreground until Ctrl-C or SIGTERM.
    Chain(chain::ChainArgs),
    /// Give an account TAO on the devnet's chain (the owner's sudo call; dev_setStorage on the runtime).
    Fund(fund::FundArgs),
}

/// `--dir DIR`: which devnet.
#[derive(Debug, Clone, Args)]
pub struct DirArg {
    /// The devnet's directory [default: the config file's devnet, else <data dir>/devnet]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl DirArg {
    /// `--dir`, else the `[devnet] dir` of the config file in use, else the data directory's.
    /// `.` components are dropped (the config file `up` writes says `dir = "."`, and
    /// `down --delete` cannot remove a path that ends in `.`).
    pub fn resolve(&self, g: &GlobalOpts) -> anyhow::Result<PathBuf> {
        let dir = match (&self.dir, g.given.file().and_then(crate::config::ConfigFile::devnet_dir)) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => d,
            (None, None) => g.dirs.data_dir_or_here().join("devnet"),
        };
        Ok(without_dots(&dir))
    }
}

fn without_dots(p: &Path) -> PathBuf {
    let out: PathBuf = p.components().filter(|c| !matches!(c, Component::CurDir)).collect();
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

impl DevnetCommand {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        match self {
            DevnetCommand::Up(a) => a.run(g, out).await,
            DevnetCommand::Status(a) => status::run(a, g, out).await,
            DevnetCommand::Down(a) => a.run(g, out).await,
            DevnetCommand::Demo(a) => a.run(g, out).await,
            DevnetCommand::Chain(a) => a.run(g, out).await,
            DevnetCommand::Fund(a) => a.run(g, out).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devnet_dirs_lose_their_dot_components() {
        assert_eq!(without_dots(Path::new("/tmp/x/net/.")), PathBuf::from("/tmp/x/net"));
        assert_eq!(without_dots(Path::new("./a/./b")), PathBuf::from("a/b"));
        assert_eq!(without_dots(Path::new(".")), PathBuf::from("."));
        assert_eq!(without_dots(Path::new("../up")), PathBuf::from("../up"));
    }
}
