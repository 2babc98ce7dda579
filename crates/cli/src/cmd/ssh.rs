//! `nicompute ssh HOTKEY [-- COMMAND...]`: log in to an allocation (or run one command there)
//! with the system OpenSSH client. Keys are tried first (the injected key is the default); the
//! stored password is handed to `sshpass` through its environment — never argv — when it is
//! installed, otherwise OpenSSH asks for it.

use std::process::Command;

use anyhow::Context;
use clap::Args;
use secrecy::ExposeSecret;

use crate::cmd::open_db;
use crate::opts::GlobalOpts;
use crate::output::{Output, Reported, UsageError};

#[derive(Debug, Args)]
pub struct SshArgs {
    /// The allocated miner's hotkey.
    #[arg(id = "miner_hotkey", value_name = "HOTKEY")]
    pub hotkey: String,
    /// A command to run instead of a login shell (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
    /// An identity file for the key login (default: OpenSSH's own choice).
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Option<std::path::PathBuf>,
}

fn have(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(bin).is_file()))
}

impl SshArgs {
    pub fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let db = open_db(g)?;
        let rec = db
            .allocation(&self.hotkey)?
            .ok_or_else(|| UsageError(format!("no allocation for {} (see `nicompute list_a`)", self.hotkey)))?;
        let d = rec.details.as_ref().context("the allocation row has no readable connection details")?;
        if !have("ssh") {
            return Err(UsageError("the OpenSSH client `ssh` is not installed".into()).into());
        }
        let password = d.password.expose_secret();
        let mut cmd = if !password.is_empty() && have("sshpass") {
            let mut c = Command::new("sshpass");
            c.arg("-e").arg("ssh").env("SSHPASS", password);
            c
        } else {
            if !password.is_empty() {
                out.note("sshpass is not installed: if the key is refused, type the password (`nicompute list_a --show-secrets`).");
            }
            Command::new("ssh")
        };
        if let Some(id) = &self.identity {
            cmd.arg("-i").arg(id);
        }
        cmd.args(["-p", &d.port.to_string(), "-o", "StrictHostKeyChecking=accept-new"])
            .arg(format!("{}@{}", d.username, d.ip))
            .args(&self.command);
        let status = cmd.status().context("running ssh")?;
        if status.success() {
            Ok(())
        } else {
            Err(Reported(format!("ssh exited with {status}")).into())
        }
    }
}
