//! `nicompute ssh HOTKEY [-- COMMAND...]`: log in to an allocation (or run one command there).
//!
//! A login uses the system OpenSSH client: keys first (the injected key is the default), then
//! the stored password, handed to `sshpass` through its environment — never argv — when it is
//! installed, otherwise OpenSSH asks for it. A command runs with OpenSSH too, or with the
//! built-in client (`--builtin`, or when OpenSSH is not installed), which leaves nothing in
//! `~/.ssh/known_hosts` — right for throw-away devnet machines.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use compute::db::AllocationDetails;
use compute::sshexec::{self, Login};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

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
    /// An identity file for the key login (default: OpenSSH's own choice; for the built-in
    /// client ~/.ssh/id_ed25519 or ~/.ssh/id_rsa).
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Run the command with the built-in SSH client instead of OpenSSH.
    #[arg(long, requires = "command")]
    pub builtin: bool,
}

/// The renter's default OpenSSH key: the first of `~/.ssh/id_ed25519{suffix}` and
/// `~/.ssh/id_rsa{suffix}` that exists (`.pub` for the key `a` injects, `""` for the private key
/// `--builtin` logs in with).
pub fn default_ssh_key(home: Option<&Path>, suffix: &str) -> Option<PathBuf> {
    let ssh = home?.join(".ssh");
    ["id_ed25519", "id_rsa"].iter().map(|f| ssh.join(format!("{f}{suffix}"))).find(|p| p.is_file())
}

fn have(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(bin).is_file()))
}

impl SshArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let db = open_db(g)?;
        let rec = db
            .allocation(&self.hotkey)?
            .ok_or_else(|| UsageError(format!("no allocation for {} (see `nicompute list_a`)", self.hotkey)))?;
        let d = rec.details.context("the allocation row has no readable connection details")?;
        let builtin = self.builtin || (!self.command.is_empty() && !have("ssh"));
        if builtin {
            return self.builtin_exec(&d, g, out).await;
        }
        if !have("ssh") {
            return Err(UsageError(
                "the OpenSSH client `ssh` is not installed (a command after `--` can run with --builtin)".into(),
            )
            .into());
        }
        self.openssh(&d, out)
    }

    fn openssh(&self, d: &AllocationDetails, out: &mut Output) -> anyhow::Result<()> {
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

    async fn builtin_exec(&self, d: &AllocationDetails, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let identity = self.identity.clone().or_else(|| default_ssh_key(g.dirs.home.as_deref(), ""));
        let password = d.password.expose_secret();
        let login = Login {
            host: d.ip.clone(),
            port: d.port,
            user: d.username.clone(),
            identity,
            password: (!password.is_empty()).then(|| SecretString::from(password.to_owned())),
            connect_timeout: Duration::from_secs(20),
        };
        let line = shell_words::join(&self.command);
        let r = sshexec::exec(&login, &line).await?;
        if out.json {
            let doc = json!({
                "hotkey": self.hotkey,
                "command": line,
                "stdout": String::from_utf8_lossy(&r.stdout),
                "stderr": String::from_utf8_lossy(&r.stderr),
                "exit_status": r.exit_status,
            });
            out.result(&doc, |_| Ok(()));
        } else {
            out.passthrough(&r.stdout, &r.stderr);
        }
        match r.exit_status {
            Some(0) => Ok(()),
            Some(n) => Err(Reported(format!("the command exited with status {n}")).into()),
            None => Err(Reported("the command ended without an exit status (killed?)".into()).into()),
        }
    }
}
