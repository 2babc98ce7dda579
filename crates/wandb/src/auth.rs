//! Where the wandb API key comes from, and how it is kept out of sight.
//!
//! The SDK (and so SN27) takes the key from `WANDB_API_KEY`, else from the `~/.netrc` entry that
//! `wandb login` writes for the API host; it is sent as HTTP basic auth with the user `api`. The
//! key is a credential for the user's whole wandb account, so it lives in a [`SecretString`]:
//! `Debug` prints a placeholder, and no error or log line of this crate contains it.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};

use crate::error::WandbError;

/// A wandb API key. Never printed: `Debug` shows where it came from, not what it is.
#[derive(Clone)]
pub struct ApiKey {
    key: SecretString,
    source: KeySource,
}

/// Where an [`ApiKey`] was found; shown in diagnostics instead of the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The `WANDB_API_KEY` environment variable.
    Env,
    /// A `machine` entry of a netrc file.
    Netrc(PathBuf),
    /// Given by the caller.
    Explicit,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env => f.write_str("WANDB_API_KEY"),
            Self::Netrc(path) => write!(f, "{}", path.display()),
            Self::Explicit => f.write_str("the caller"),
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey").field("key", &"<redacted>").field("source", &self.source).finish()
    }
}

impl ApiKey {
    /// A key given directly (tests, or a CLI that read it from elsewhere).
    pub fn new(key: impl Into<String>) -> Self {
        Self { key: SecretString::from(key.into()), source: KeySource::Explicit }
    }

    /// Where the key came from.
    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// Resolves the key as the SDK does: `env_key` (the caller's reading of `WANDB_API_KEY`) when
    /// given and not blank, else the netrc entry for `host` (the API host, `api.wandb.ai` by
    /// default) in `netrc` (the caller's `$NETRC` or `~/.netrc`). This crate reads no environment.
    pub fn resolve_from(env_key: Option<&str>, netrc: Option<&Path>, host: &str) -> Result<Self, WandbError> {
        if let Some(key) = env_key.map(str::trim).filter(|k| !k.is_empty()) {
            return Ok(Self { key: SecretString::from(key.to_owned()), source: KeySource::Env });
        }
        let no_key = || WandbError::NoApiKey { host: host.to_owned() };
        let Some(path) = netrc else { return Err(no_key()) };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(no_key()),
            Err(e) => return Err(WandbError::Netrc { path: path.to_owned(), reason: e.to_string() }),
        };
        match netrc_password(&text, host) {
            Some(key) => Ok(Self { key: SecretString::from(key), source: KeySource::Netrc(path.to_owned()) }),
            None => Err(no_key()),
        }
    }

    /// The `Authorization` header value: `Basic base64("api:" + key)`.
    pub(crate) fn basic_auth(&self) -> SecretString {
        let raw = format!("api:{}", self.key.expose_secret());
        SecretString::from(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)))
    }
}

/// The password of the `machine <host>` entry (or of `default` when no machine matches), as
/// Python's `netrc` module reads it: whitespace-separated tokens, `macdef` bodies skipped.
fn netrc_password(text: &str, host: &str) -> Option<String> {
    let mut tokens = text.split_whitespace();
    let mut current: Option<bool> = None; // Some(true) inside the wanted machine's entry
    let mut found = None;
    let mut default = None;
    let mut in_default = false;
    while let Some(tok) = tokens.next() {
        match tok {
            "machine" => {
                current = Some(tokens.next() == Some(host));
                in_default = false;
            }
            "default" => {
                current = Some(false);
                in_default = true;
            }
            "password" => {
                let value = tokens.next().map(str::to_owned);
                if current == Some(true) && found.is_none() {
                    found = value;
                } else if in_default && default.is_none() {
                    default = value;
                }
            }
            "login" | "account" => {
                tokens.next();
            }
            "macdef" => {
                // A macro body runs to the next blank line; tokens of it must not be read as
                // entries. split_whitespace lost the blank lines, so skip the rest of the entry.
                current = Some(false);
                in_default = false;
            }
            _ => {}
        }
    }
    found.or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn env_wins_over_netrc_and_debug_hides_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let netrc = dir.path().join(".netrc");
        std::fs::write(&netrc, "machine api.wandb.ai\n  login user\n  password fromnetrc\n").unwrap();
        let key = ApiKey::resolve_from(Some(KEY), Some(&netrc), "api.wandb.ai").unwrap();
        assert_eq!(key.source(), &KeySource::Env);
        assert_eq!(key.key.expose_secret(), KEY);
        let debug = format!("{key:?}");
        assert!(!debug.contains(KEY) && debug.contains("redacted"), "{debug}");
        assert!(!format!("{:?}", key.basic_auth()).contains("YXBp"), "the auth header is secret too");
    }

    #[test]
    fn netrc_entry_for_the_host_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let netrc = dir.path().join(".netrc");
        std::fs::write(
            &netrc,
            "machine example.org login x password nope\nmachine api.wandb.ai\n  login user\n  password fromnetrc\n\
             default login d password dflt\n",
        )
        .unwrap();
        let key = ApiKey::resolve_from(Some("  "), Some(&netrc), "api.wandb.ai").unwrap();
        assert_eq!(key.key.expose_secret(), "fromnetrc");
        assert_eq!(key.source(), &KeySource::Netrc(netrc.clone()));
        let other = ApiKey::resolve_from(None, Some(&netrc), "wandb.internal").unwrap();
        assert_eq!(other.key.expose_secret(), "dflt", "default entry when no machine matches");
    }

    #[test]
    fn basic_auth_is_user_api_and_the_key() {
        let header = ApiKey::new(KEY).basic_auth();
        let b64 = header.expose_secret().strip_prefix("Basic ").unwrap().to_owned();
        let decoded = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        assert_eq!(decoded, format!("api:{KEY}").into_bytes());
    }

    #[test]
    fn no_key_anywhere_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = ApiKey::resolve_from(None, Some(&missing), "api.wandb.ai").unwrap_err();
        assert!(matches!(err, WandbError::NoApiKey { .. }));
        let msg = err.to_string();
        assert!(msg.contains("WANDB_API_KEY") && msg.contains(".netrc") && msg.contains("api.wandb.ai"), "{msg}");
        let netrc = dir.path().join(".netrc");
        std::fs::write(&netrc, "machine other.host password x\n").unwrap();
        assert!(matches!(ApiKey::resolve_from(None, Some(&netrc), "api.wandb.ai"), Err(WandbError::NoApiKey { .. })));
    }
}
