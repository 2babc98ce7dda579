//! btcli-compatible wallets: `{path}/{name}/coldkey`, `coldkeypub.txt`, `hotkeys/{hotkey}`.
//!
//! Users already have wallets made by btcli or the Python SDK; nicompute must read them as they
//! are (plaintext JSON keyfiles, or `$NACL`-encrypted ones) and write wallets that the SDK reads
//! back. The keyfile format and its encryption live in [`keyfile`]; this module knows the layout,
//! the defaults (`~/.bittensor/wallets`, `default`/`default`, the `BT_WALLET_*` variables) and
//! how to create a wallet safely (files 0600, never overwriting a key).

pub mod keyfile;

use std::path::{Path, PathBuf};

use crate::keys::{AccountId, KeyError, Keypair};
pub use keyfile::{Key, KeyDataError, KeyfileError};
pub use secrecy::SecretString;

/// Default wallet directory, relative to the home directory.
pub const DEFAULT_WALLET_DIR: &str = ".bittensor/wallets";
pub const DEFAULT_NAME: &str = "default";
pub const DEFAULT_HOTKEY: &str = "default";

/// Errors of wallet operations; each says which file and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalletError {
    #[error(transparent)]
    Keyfile(#[from] KeyfileError),
    #[error("wallet '{name}' not found under {dir}: {hint}")]
    NotFound { name: String, dir: PathBuf, hint: String },
    #[error("{path} already exists; refusing to overwrite a key (choose another wallet or hotkey name)")]
    Exists { path: PathBuf },
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("no password given for {path}: {reason}")]
    NoPassword { path: PathBuf, reason: String },
}

/// Where a wallet lives: the bittensor `--wallet.path/--wallet.name/--wallet.hotkey` triple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wallet {
    pub path: PathBuf,
    pub name: String,
    pub hotkey: String,
}

/// Supplies the password for an encrypted keyfile (a terminal prompt, an environment variable,
/// or a fixed value in tests). Called only when a file is actually encrypted.
pub trait PasswordSource {
    fn password(&self, keyfile: &Path) -> Result<SecretString, WalletError>;
}

/// Always answers with no password (for contexts that must not prompt).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPassword;

impl PasswordSource for NoPassword {
    fn password(&self, keyfile: &Path) -> Result<SecretString, WalletError> {
        Err(WalletError::NoPassword {
            path: keyfile.to_owned(),
            reason: "this key is encrypted and no password source is available".into(),
        })
    }
}

/// A fixed password (scripts set it from an environment variable; tests use it directly).
#[derive(Clone)]
pub struct FixedPassword(pub SecretString);

impl std::fmt::Debug for FixedPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FixedPassword(<redacted>)")
    }
}

impl PasswordSource for FixedPassword {
    fn password(&self, _keyfile: &Path) -> Result<SecretString, WalletError> {
        Ok(self.0.clone())
    }
}

/// What `create` made.
#[derive(Debug)]
pub struct Created {
    pub coldkey: Option<Keypair>,
    pub hotkey: Option<Keypair>,
}

impl Wallet {
    pub fn new(path: impl Into<PathBuf>, name: impl Into<String>, hotkey: impl Into<String>) -> Self {
        Self { path: path.into(), name: name.into(), hotkey: hotkey.into() }
    }

    /// Expands a leading `~` the way the SDK does for `--wallet.path` (`~/.bittensor/wallets`,
    /// the default, included), with `home` as the caller read it; without a home `~` stays as
    /// it is, so the error names the path the user gave.
    pub fn expand_path(p: &str, home: Option<&Path>) -> PathBuf {
        match (p.strip_prefix("~/"), home) {
            (Some(rest), Some(home)) => home.join(rest),
            (None, Some(home)) if p == "~" => home.to_path_buf(),
            _ => PathBuf::from(p),
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.path.join(&self.name)
    }
    pub fn coldkey_path(&self) -> PathBuf {
        self.dir().join("coldkey")
    }
    pub fn coldkeypub_path(&self) -> PathBuf {
        self.dir().join("coldkeypub.txt")
    }
    pub fn hotkey_path(&self) -> PathBuf {
        self.dir().join("hotkeys").join(&self.hotkey)
    }
    pub fn hotkeypub_path(&self) -> PathBuf {
        self.dir().join("hotkeys").join(format!("{}pub.txt", self.hotkey))
    }

    /// The hotkey with its secret: what signs synapse requests.
    pub fn hotkey(&self, password: &dyn PasswordSource) -> Result<Keypair, WalletError> {
        self.ensure_exists()?;
        keyfile::load_keypair(&self.hotkey_path(), password)
    }

    /// The hotkey's public key, without decrypting anything: from the plaintext hotkey file, or
    /// from `hotkeys/{name}pub.txt` when the hotkey is encrypted.
    pub fn hotkey_public(&self) -> Result<AccountId, WalletError> {
        self.ensure_exists()?;
        let path = self.hotkey_path();
        match keyfile::load(&path, &NoPassword) {
            Ok(key) => Ok(key.account_id()),
            Err(WalletError::NoPassword { .. }) if self.hotkeypub_path().exists() => {
                Ok(keyfile::load(&self.hotkeypub_path(), &NoPassword)?.account_id())
            }
            Err(e) => Err(e),
        }
    }

    pub fn coldkeypub(&self) -> Result<AccountId, WalletError> {
        self.ensure_exists()?;
        Ok(keyfile::load(&self.coldkeypub_path(), &NoPassword)?.account_id())
    }

    pub fn coldkey(&self, password: &dyn PasswordSource) -> Result<Keypair, WalletError> {
        self.ensure_exists()?;
        keyfile::load_keypair(&self.coldkey_path(), password)
    }

    /// Names of the hotkeys in this wallet (files under `hotkeys/`, minus `*pub.txt`), sorted.
    pub fn hotkey_names(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.dir().join("hotkeys")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.ends_with("pub.txt") && !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    /// Wallet names under a wallet directory (folders holding a coldkey, coldkeypub or hotkeys).
    pub fn list(dir: &Path) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| {
                let p = e.path();
                p.join("coldkeypub.txt").exists() || p.join("coldkey").exists() || p.join("hotkeys").is_dir()
            })
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// Creates what is missing: an encrypted coldkey (+ `coldkeypub.txt`) and a plaintext hotkey
    /// (+ `hotkeys/{name}pub.txt`), as btcli does. Refuses to overwrite an existing key; fails if
    /// both already exist.
    pub fn create(&self, words: usize, coldkey_password: Option<&dyn PasswordSource>) -> Result<Created, WalletError> {
        let cold_exists = self.coldkey_path().exists() || self.coldkeypub_path().exists();
        let hot_exists = self.hotkey_path().exists();
        if cold_exists && hot_exists {
            return Err(WalletError::Exists { path: self.hotkey_path() });
        }
        let mut created = Created { coldkey: None, hotkey: None };
        if !cold_exists {
            let pw = match coldkey_password {
                Some(src) => Some(src.password(&self.coldkey_path())?),
                None => None,
            };
            let pair = Keypair::generate(words)?;
            keyfile::write_keypair(&self.coldkey_path(), &pair, pw.as_ref())?;
            keyfile::write_public(&self.coldkeypub_path(), &pair.account_id())?;
            created.coldkey = Some(pair);
        }
        if !hot_exists {
            let pair = Keypair::generate(words)?;
            keyfile::write_keypair(&self.hotkey_path(), &pair, None)?;
            keyfile::write_public(&self.hotkeypub_path(), &pair.account_id())?;
            created.hotkey = Some(pair);
        }
        Ok(created)
    }

    /// Writes a given hotkey (e.g. a devnet key) as a plaintext keyfile, refusing to overwrite.
    pub fn write_hotkey(&self, pair: &Keypair) -> Result<(), WalletError> {
        if self.hotkey_path().exists() {
            return Err(WalletError::Exists { path: self.hotkey_path() });
        }
        keyfile::write_keypair(&self.hotkey_path(), pair, None)?;
        keyfile::write_public(&self.hotkeypub_path(), &pair.account_id())
    }

    fn ensure_exists(&self) -> Result<(), WalletError> {
        if self.dir().is_dir() {
            return Ok(());
        }
        let known = Self::list(&self.path);
        let hint = if known.is_empty() {
            format!(
                "no wallets there; create one with `nicompute wallet create --wallet.name {}` or point --wallet.path at your btcli wallets",
                self.name
            )
        } else {
            format!("wallets there: {}; choose one with --wallet.name", known.join(", "))
        };
        Err(WalletError::NotFound { name: self.name.clone(), dir: self.path.clone(), hint })
    }
}
