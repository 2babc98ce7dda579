//! `nicompute devnet down`: stops every process `up` started (miners first, then the chain;
//! SIGTERM, then SIGKILL after a grace period), removes every container the devnet's miners made
//! (Docker containers carry their miner's hotkey as a label), and keeps the directory — keys,
//! chain state, database, logs — unless `--delete`.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use compute::runtime::docker::{DockerRuntime, DEFAULT_IMAGE};
use compute::runtime::ContainerRuntime;
use serde::Serialize;

use super::net::{Layout, State};
use super::DirArg;
use crate::opts::GlobalOpts;
use crate::output::{Output, UsageError};

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// Delete the directory afterwards (wallets, chain state, database, logs).
    #[arg(long)]
    pub delete: bool,
}

#[derive(Debug, Serialize)]
struct DownDoc {
    dir: String,
    stopped: Vec<String>,
    containers_removed: usize,
    deleted: bool,
}

const GRACE: Duration = Duration::from_secs(10);

impl DownArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let layout = Layout::new(self.dir.resolve(g)?);
        if !layout.dir.exists() {
            let doc = DownDoc {
                dir: layout.dir.display().to_string(),
                stopped: vec![],
                containers_removed: 0,
                deleted: false,
            };
            out.result(&doc, |o| writeln!(o, "no devnet in {}: nothing to stop", doc.dir));
            return Ok(());
        }
        let lock = layout.lock()?;
        let Some(mut state) = State::load(&layout)? else {
            return Err(UsageError(format!(
                "{} has no {}: not a devnet directory, nothing stopped or deleted",
                layout.dir.display(),
                super::net::STATE_FILE
            ))
            .into());
        };
        let mut stopped = Vec::new();
        let mut stuck = Vec::new();
        // Miners in parallel (each may take its grace period), then the chain they talk to.
        let mut stops = Vec::new();
        for m in &state.miners {
            if let Some(p) = m.process.filter(|p| p.alive()) {
                let name = m.name.clone();
                stops.push(tokio::task::spawn_blocking(move || (name, p.terminate(GRACE))));
            }
        }
        for s in stops {
            let (name, gone) = s.await.context("joining a stop task")?;
            if gone {
                stopped.push(name)
            } else {
                stuck.push(name)
            }
        }
        if let Some(p) = state.chain.process.filter(|p| p.alive()) {
            if tokio::task::spawn_blocking(move || p.terminate(GRACE)).await.context("joining")? {
                stopped.push("chain".into());
            } else {
                stuck.push("chain".into());
            }
        }
        anyhow::ensure!(stuck.is_empty(), "could not stop {} (still running after SIGKILL)", stuck.join(", "));
        for m in &mut state.miners {
            m.process = None;
        }
        state.chain.process = None;
        state.save(&layout)?;
        let containers_removed = if state.runtime == "docker" { remove_containers(g, &state).await? } else { 0 };
        if self.delete {
            drop(lock);
            std::fs::remove_dir_all(&layout.dir).with_context(|| format!("deleting {}", layout.dir.display()))?;
        }
        let doc = DownDoc { dir: layout.dir.display().to_string(), stopped, containers_removed, deleted: self.delete };
        out.result(&doc, |o| {
            if doc.stopped.is_empty() {
                writeln!(o, "nothing was running in {}", doc.dir)?;
            } else {
                writeln!(o, "stopped {}", doc.stopped.join(", "))?;
            }
            if doc.containers_removed > 0 {
                writeln!(o, "removed {} container(s)", doc.containers_removed)?;
            }
            if doc.deleted {
                writeln!(o, "deleted {}", doc.dir)
            } else {
                writeln!(o, "kept {} (`nicompute devnet up --dir {0}` starts it again)", doc.dir)
            }
        });
        Ok(())
    }
}

/// Removes every container labelled with one of the devnet's miner hotkeys.
async fn remove_containers(g: &GlobalOpts, state: &State) -> anyhow::Result<usize> {
    let mut removed = 0;
    for m in &state.miners {
        let cfg = g.docker_config(DEFAULT_IMAGE, Some(m.hotkey.clone()))?;
        let docker = DockerRuntime::connect(cfg)
            .await
            .context("connecting to Docker to remove the devnet's containers (they may still run)")?;
        for c in docker.list().await? {
            docker.remove(&c.id).await.with_context(|| format!("removing container {}", c.id))?;
            removed += 1;
        }
    }
    Ok(removed)
}
