//! A built-in SSH client that runs one command in an allocation: for machines without OpenSSH,
//! for the devnet demo (no `known_hosts` entries left behind for throw-away hosts), and for
//! tests. It is real SSH (russh): key exchange, password or public-key authentication, an `exec`
//! channel, the remote exit status.
//!
//! The server's host key is accepted without a `known_hosts` check, as OpenSSH's
//! `StrictHostKeyChecking=accept-new` does for a first connection: an allocation's host key is
//! new by construction. Its fingerprint is logged at debug level.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg};
use russh::ChannelMsg;
use secrecy::{ExposeSecret, SecretString};

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
    /// For connecting and authenticating (the command itself is not limited).
    pub connect_timeout: Duration,
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
}

#[derive(Debug)]
struct AcceptNew;

impl client::Handler for AcceptNew {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &russh::keys::ssh_key::PublicKey) -> Result<bool, Self::Error> {
        tracing::debug!(fingerprint = %key.fingerprint(HashAlg::Sha256), "server host key (accepted: new host)");
        Ok(true)
    }
}

/// Logs in and runs `command` (a shell command line), collecting its output.
pub async fn exec(login: &Login, command: &str) -> Result<ExecOutput, SshError> {
    let addr = format!("{}:{}", login.host, login.port);
    let config = Arc::new(client::Config { inactivity_timeout: None, ..Default::default() });
    let connect = client::connect(config, (login.host.as_str(), login.port), AcceptNew);
    let mut session = match tokio::time::timeout(login.connect_timeout, connect).await {
        Ok(Ok(s)) => s,
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
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, .. } => out.stderr.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => out.exit_status = Some(exit_status),
            ChannelMsg::Failure => {
                return Err(SshError::Session { addr, reason: "the server refused to run the command".into() })
            }
            _ => {}
        }
    }
    let _ = session.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    Ok(out)
}

async fn authenticate(session: &mut client::Handle<AcceptNew>, login: &Login, addr: &str) -> Result<(), SshError> {
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
