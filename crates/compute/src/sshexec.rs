//! A built-in SSH client that runs one command in an allocation: for machines without OpenSSH,
//! for the devnet demo, and for tests. It is real SSH (russh): key exchange, password or
//! public-key authentication, an `exec` channel, the remote exit status.
//!
//! The machine is the miner's, so nothing it sends is trusted further than it must be:
//! - its host key is checked ([`HostKeyCheck`]): the key a nicompute miner signed for the
//!   allocation (pinned), or the one this allocation's `known_hosts` file recorded the first
//!   time (an SN27 peer's machine, which nobody vouches for); any other key is refused before
//!   a password or a key signature is sent;
//! - the command's output is bounded ([`Login::max_output`]) and so is its time
//!   ([`Login::command_timeout`]), so a machine cannot make the renter's process buffer without
//!   end or wait forever.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh::ChannelMsg;
use secrecy::{ExposeSecret, SecretString};

use crate::known_hosts;

/// Default bound on a command's stdout and stderr together.
pub const DEFAULT_MAX_OUTPUT: usize = 64 << 20;

/// Which host key the machine must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// Exactly this key (an OpenSSH public key line): the one the miner signed.
    Pinned(String),
    /// The key recorded for `alias` in `file`; with none recorded, the first one seen is kept.
    FirstUse { file: PathBuf, alias: String },
}

/// How to log in.
#[derive(Debug, Clone)]
pub struct Login {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Tried first when set (an OpenSSH private key file without a passphrase).
    pub identity: Option<PathBuf>,
    /// Tried when there is no key or the key is refused.
    pub password: Option<SecretString>,
    /// For connecting and authenticating.
    pub connect_timeout: Duration,
    /// The host key to accept.
    pub host_key: HostKeyCheck,
    /// How long the command may run (from the moment it starts) before it is abandoned.
    pub command_timeout: Duration,
    /// Most bytes of stdout and stderr together kept from the command.
    pub max_output: usize,
}

/// What the command printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// None when the server closed the channel without an exit status (e.g. killed by a signal).
    pub exit_status: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    #[error("cannot reach {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("{addr} refused the login of {user} ({tried})")]
    Auth { addr: String, user: String, tried: String },
    #[error("cannot read the identity file {path}: {reason}")]
    Identity { path: PathBuf, reason: String },
    #[error("SSH session with {addr} failed: {reason}")]
    Session { addr: String, reason: String },
    #[error("{addr} presented the host key {presented}, not the one {expected}: refused (nothing was sent to it)")]
    HostKeyChanged { addr: String, expected: String, presented: String },
    #[error("cannot use the known_hosts file {path}: {reason}")]
    KnownHosts { path: PathBuf, reason: String },
    #[error("the command printed more than {limit} bytes; stopped (redirect its output to a file there)")]
    OutputTooLarge { limit: usize },
    #[error("the command did not end within {0:?}; stopped (--timeout allows longer)")]
    TimedOut(Duration),
}

/// Checks the server's host key against the [`HostKeyCheck`], remembering what it was shown.
#[derive(Debug)]
struct Checker {
    check: HostKeyCheck,
    seen: Arc<Mutex<Option<PublicKey>>>,
    /// A problem with the known_hosts file itself (not a key mismatch).
    file_error: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKey) -> Result<bool, Self::Error> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(key.clone());
        let presented = key.to_openssh().unwrap_or_default();
        let ok = match &self.check {
            HostKeyCheck::Pinned(line) => known_hosts::matches(&[line_key(line)], &presented),
            HostKeyCheck::FirstUse { file, alias } => match known_hosts::keys_for(file, alias) {
                Ok(known) if known.is_empty() => match known_hosts::add(file, alias, &presented) {
                    Ok(()) => {
                        tracing::info!(fingerprint = %key.fingerprint(HashAlg::Sha256), file = %file.display(), "recorded the allocation's host key (first use)");
                        true
                    }
                    Err(e) => {
                        *self.file_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                        false
                    }
                },
                Ok(known) => known_hosts::matches(&known, &presented),
                Err(e) => {
                    *self.file_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    false
                }
            },
        };
        Ok(ok)
    }
}

/// `TYPE BASE64` of a key line.
fn line_key(line: &str) -> String {
    line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// SHA256 fingerprint of an OpenSSH public key line, as `ssh-keygen -l` shows it.
pub fn fingerprint(line: &str) -> String {
    PublicKey::from_openssh(line)
        .map_or_else(|_| "an unreadable key".into(), |k| k.fingerprint(HashAlg::Sha256).to_string())
}

/// Logs in and runs `command` (a shell command line), collecting its output.
pub async fn exec(login: &Login, command: &str) -> Result<ExecOutput, SshError> {
    let addr = format!("{}:{}", login.host, login.port);
    let mut config = client::Config { inactivity_timeout: None, ..Default::default() };
    // Ask first for the pinned key's algorithm, so a server with several host keys shows that one.
    if let HostKeyCheck::Pinned(line) = &login.host_key {
        if let Ok(k) = PublicKey::from_openssh(line) {
            let mut order = vec![k.algorithm()];
            order.extend(config.preferred.key.iter().filter(|a| **a != k.algorithm()).cloned());
            config.preferred.key = order.into();
        }
    }
    let seen = Arc::new(Mutex::new(None));
    let file_error = Arc::new(Mutex::new(None));
    let checker = Checker { check: login.host_key.clone(), seen: seen.clone(), file_error: file_error.clone() };
    let connect = client::connect(Arc::new(config), (login.host.as_str(), login.port), checker);
    let mut session = match tokio::time::timeout(login.connect_timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(russh::Error::UnknownKey)) => {
            if let Some(reason) = file_error.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let path = match &login.host_key {
                    HostKeyCheck::FirstUse { file, .. } => file.clone(),
                    HostKeyCheck::Pinned(_) => PathBuf::new(),
                };
                return Err(SshError::KnownHosts { path, reason });
            }
            let presented = seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map_or_else(|| "an unreadable key".into(), |k| k.fingerprint(HashAlg::Sha256).to_string());
            let expected = match &login.host_key {
                HostKeyCheck::Pinned(line) => format!("the miner signed ({})", fingerprint(line)),
                HostKeyCheck::FirstUse { file, .. } => format!("recorded in {}", file.display()),
            };
            return Err(SshError::HostKeyChanged { addr, expected, presented });
        }
        Ok(Err(e)) => return Err(SshError::Connect { addr, reason: e.to_string() }),
        Err(_) => {
            return Err(SshError::Connect {
                addr,
                reason: format!("no SSH handshake within {:?}", login.connect_timeout),
            })
        }
    };
    let auth = tokio::time::timeout(login.connect_timeout, authenticate(&mut session, login, &addr));
    match auth.await {
        Ok(r) => r?,
        Err(_) => return Err(SshError::Connect { addr, reason: "authentication timed out".into() }),
    }
    let session_err = |e: russh::Error| SshError::Session { addr: addr.clone(), reason: e.to_string() };
    let mut channel = session.channel_open_session().await.map_err(session_err)?;
    channel.exec(true, command).await.map_err(session_err)?;
    let mut out = ExecOutput::default();
    let collect = async {
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => out.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => out.exit_status = Some(exit_status),
                ChannelMsg::Failure => {
                    return Err(SshError::Session {
                        addr: addr.clone(),
                        reason: "the server refused to run the command".into(),
                    })
                }
                _ => {}
            }
            if out.stdout.len() + out.stderr.len() > login.max_output {
                return Err(SshError::OutputTooLarge { limit: login.max_output });
            }
        }
        Ok(())
    };
    let ended = tokio::time::timeout(login.command_timeout, collect).await;
    let _ = session.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    match ended {
        Ok(Ok(())) => Ok(out),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(SshError::TimedOut(login.command_timeout)),
    }
}

async fn authenticate(session: &mut client::Handle<Checker>, login: &Login, addr: &str) -> Result<(), SshError> {
    let mut tried = Vec::new();
    let session_err = |e: russh::Error| SshError::Session { addr: addr.to_owned(), reason: e.to_string() };
    if let Some(path) = &login.identity {
        let key = russh::keys::load_secret_key(path, None)
            .map_err(|e| SshError::Identity { path: path.clone(), reason: e.to_string() })?;
        let hash = session.best_supported_rsa_hash().await.map_err(session_err)?.flatten();
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
        if session.authenticate_publickey(&login.user, key).await.map_err(session_err)?.success() {
            return Ok(());
        }
        tried.push(format!("key {}", path.display()));
    }
    if let Some(pw) = &login.password {
        if session.authenticate_password(&login.user, pw.expose_secret()).await.map_err(session_err)?.success() {
            return Ok(());
        }
        tried.push("password".to_owned());
    }
    let tried = if tried.is_empty() { "no key and no password to try".to_owned() } else { tried.join(", ") };
    Err(SshError::Auth { addr: addr.to_owned(), user: login.user.clone(), tried })
}

/// Connects to `host:port` only to see its host key (no authentication): the OpenSSH line.
pub async fn probe_host_key(host: &str, port: u16, timeout: Duration) -> Result<String, SshError> {
    let addr = format!("{host}:{port}");
    let seen = Arc::new(Mutex::new(None));
    // A pin no server can match: the handshake stops right after the key is shown.
    let checker = Checker {
        check: HostKeyCheck::Pinned(String::new()),
        seen: seen.clone(),
        file_error: Arc::new(Mutex::new(None)),
    };
    let config = Arc::new(client::Config { inactivity_timeout: None, ..Default::default() });
    let connect = client::connect(config, (host, port), checker);
    match tokio::time::timeout(timeout, connect).await {
        Err(_) => return Err(SshError::Connect { addr, reason: format!("no SSH handshake within {timeout:?}") }),
        Ok(Err(russh::Error::UnknownKey)) | Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(SshError::Connect { addr, reason: e.to_string() }),
    }
    let key = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
    key.and_then(|k| k.to_openssh().ok())
        .ok_or(SshError::Session { addr, reason: "the server showed no host key".into() })
}
