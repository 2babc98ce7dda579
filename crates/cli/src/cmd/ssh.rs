//! `nicompute ssh HOTKEY [-- COMMAND...]`: log in to an allocation (or run one command there).
//!
//! A login uses the system OpenSSH client: keys first (the injected key is the default), then
//! the stored password, handed to `sshpass` through its environment — never argv — when it is
//! installed, otherwise OpenSSH asks for it. A command runs with OpenSSH too, or with the
//! built-in client (`--builtin`, or when OpenSSH is not installed).
//!
//! What the miner sent never reaches a place OpenSSH parses as an option: the login is checked
//! (`compute::protocol::login`) and passed as `-l USER -p PORT … -- HOST`. The host key is
//! checked against the allocation's own `known_hosts` file (`compute::known_hosts`): for an
//! allocation a nicompute miner signed, the file holds exactly that key and
//! `StrictHostKeyChecking=yes` refuses any other; for an SN27 peer's, the first key seen is kept
//! (`accept-new`), per allocation, so a recreated machine on the same address is no error and a
//! changed key within one allocation is. `--builtin` makes the same check itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use compute::db::AllocationRecord;
use compute::known_hosts;
use compute::protocol::login::Login;
use compute::sshexec::{self, HostKeyCheck};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::cmd::open_db;
use crate::duration::parse_duration;
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
    /// How long a command may run with the built-in client.
    #[arg(long, value_parser = parse_duration, default_value = "30m")]
    pub timeout: Duration,
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

/// The directory of the allocations' `known_hosts` files.
pub fn known_hosts_dir(g: &GlobalOpts) -> PathBuf {
    g.dirs.data_dir_or_here().join("known_hosts")
}

/// How an allocation's host key is checked: its file, its alias, the pin if a miner signed one.
#[derive(Debug)]
pub struct HostKeys {
    pub file: PathBuf,
    pub alias: String,
    pub pinned: Option<String>,
}

impl HostKeys {
    /// Prepares the allocation's file: written with the pin, or made ready for a first key.
    pub fn for_allocation(g: &GlobalOpts, rec: &AllocationRecord) -> anyhow::Result<Self> {
        let d = rec.details.as_ref().context("the allocation row has no readable connection details")?;
        let fp = rec.key_fingerprint.clone().unwrap_or_default();
        let file = known_hosts::path(&known_hosts_dir(g), &rec.hotkey, &fp);
        let alias = known_hosts::alias(&rec.hotkey);
        match &d.host_key {
            Some(key) => known_hosts::pin(&file, &alias, key),
            None => known_hosts::prepare(&file),
        }
        .with_context(|| format!("writing the allocation's known_hosts file {}", file.display()))?;
        Ok(Self { file, alias, pinned: d.host_key.clone() })
    }

    /// OpenSSH's options for this check (they go before `--`).
    pub fn openssh_options(&self) -> anyhow::Result<Vec<String>> {
        let path = self.file.to_str().filter(|p| !p.contains('"')).ok_or_else(|| {
            UsageError(format!("the known_hosts path {} cannot be given to OpenSSH", self.file.display()))
        })?;
        // OpenSSH expands `%` tokens and splits unquoted values on spaces.
        let quoted = format!("\"{}\"", path.replace('%', "%%"));
        let strict = if self.pinned.is_some() { "yes" } else { "accept-new" };
        let mut o = vec![
            format!("UserKnownHostsFile={quoted}"),
            "GlobalKnownHostsFile=/dev/null".to_owned(),
            format!("HostKeyAlias={}", self.alias),
            format!("StrictHostKeyChecking={strict}"),
            "CheckHostIP=no".to_owned(),
            "HashKnownHosts=no".to_owned(),
        ];
        if let Some(kind) = self.pinned.as_deref().and_then(|k| k.split_whitespace().next()) {
            if kind == "ssh-ed25519" || kind.starts_with("ecdsa-") {
                o.push(format!("HostKeyAlgorithms={kind}"));
            }
        }
        Ok(o.into_iter().flat_map(|v| ["-o".to_owned(), v]).collect())
    }

    fn check(&self) -> HostKeyCheck {
        match &self.pinned {
            Some(k) => HostKeyCheck::Pinned(k.clone()),
            None => HostKeyCheck::FirstUse { file: self.file.clone(), alias: self.alias.clone() },
        }
    }
}

/// The allocation's login, checked: a row may hold anything a miner (or another tool) wrote.
pub fn checked_login(rec: &AllocationRecord) -> anyhow::Result<Login> {
    let d = rec.details.as_ref().context("the allocation row has no readable connection details")?;
    d.login().map_err(|e| {
        anyhow::anyhow!(
            "the allocation of {} holds a login that is not safe to use ({e}); refusing to run ssh with it",
            rec.hotkey
        )
    })
}

impl SshArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let db = open_db(g)?;
        let rec = db
            .allocation(&self.hotkey)?
            .ok_or_else(|| UsageError(format!("no allocation for {} (see `nicompute list_a`)", self.hotkey)))?;
        let login = checked_login(&rec)?;
        let keys = HostKeys::for_allocation(g, &rec)?;
        let password = rec.details.as_ref().map(|d| d.password.expose_secret().to_owned()).unwrap_or_default();
        let builtin = self.builtin || (!self.command.is_empty() && !have("ssh"));
        if builtin {
            return self.builtin_exec(&login, &keys, password, g, out).await;
        }
        if !have("ssh") {
            return Err(UsageError(
                "the OpenSSH client `ssh` is not installed (a command after `--` can run with --builtin)".into(),
            )
            .into());
        }
        self.openssh(&login, &keys, &password, out).await
    }

    async fn openssh(&self, login: &Login, keys: &HostKeys, password: &str, out: &mut Output) -> anyhow::Result<()> {
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
        let mut options = Vec::new();
        if let Some(id) = &self.identity {
            options.push("-i".to_owned());
            options.push(id.to_str().context("the identity path is not UTF-8")?.to_owned());
        }
        options.extend(keys.openssh_options()?);
        cmd.args(login.ssh_args(&options)).args(&self.command);
        let status = cmd.status().context("running ssh")?;
        if status.success() {
            return Ok(());
        }
        // 255 is OpenSSH's own failure: when the machine shows another key than the pinned one,
        // say so, naming the allocation.
        if status.code() == Some(255) {
            if let Some(pinned) = &keys.pinned {
                let shown = sshexec::probe_host_key(&login.host.to_string(), login.port, Duration::from_secs(10)).await;
                if let Ok(shown) = shown {
                    if !known_hosts::matches(&[pinned.split_whitespace().take(2).collect::<Vec<_>>().join(" ")], &shown)
                    {
                        return Err(anyhow::anyhow!(
                            "the machine of the allocation on {} ({}:{}) presents the host key {}, not {} that its miner \
                             signed: refused (a machine in the middle, or the miner replaced it without telling; \
                             `nicompute restart {}` asks the miner for the current key over the signed channel)",
                            self.hotkey,
                            login.host,
                            login.port,
                            sshexec::fingerprint(&shown),
                            sshexec::fingerprint(pinned),
                            self.hotkey
                        ));
                    }
                }
            }
        }
        Err(Reported(format!("ssh exited with {status}")).into())
    }

    async fn builtin_exec(
        &self,
        login: &Login,
        keys: &HostKeys,
        password: String,
        g: &GlobalOpts,
        out: &mut Output,
    ) -> anyhow::Result<()> {
        let identity = self.identity.clone().or_else(|| default_ssh_key(g.dirs.home.as_deref(), ""));
        let session = sshexec::Login {
            host: login.host.to_string(),
            port: login.port,
            user: login.user.clone(),
            identity,
            password: (!password.is_empty()).then(|| SecretString::from(password)),
            connect_timeout: Duration::from_secs(20),
            host_key: keys.check(),
            command_timeout: self.timeout,
            max_output: sshexec::DEFAULT_MAX_OUTPUT,
        };
        let line = shell_words::join(&self.command);
        let r = sshexec::exec(&session, &line).await.map_err(|e| match e {
            e @ sshexec::SshError::HostKeyChanged { .. } => anyhow::anyhow!("the allocation on {}: {e}", self.hotkey),
            e => anyhow::Error::from(e),
        })?;
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
