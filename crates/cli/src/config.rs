//! `config.toml` and precedence: the settings a command would otherwise take as flags (chain,
//! netuid, wallet, database, …), so a devnet or a long-lived setup is one `--config FILE` (or
//! `NICOMPUTE_CONFIG`) away. Precedence, for every setting: flag > environment variable > config
//! file > default.
//!
//! There is no second list of settings here: a key of the file is the clap id of a global setting
//! that takes a value (`wallet.name`, `subtensor.chain_endpoint`, `db`, …; see `opts.rs`), and
//! [`resolve`] fills exactly the settings whose value clap says came from a default or is absent,
//! by parsing the command line again with the file's values in front. The chain is one setting:
//! a flag or variable naming the network or the endpoint wins over both of the file's, so
//! `--subtensor.network finney` is never overridden by a file's endpoint.
//!
//! Relative paths in the file are relative to the file's directory, so a devnet directory can be
//! moved or shared whole.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, ValueHint};

use crate::cli::Cli;
use crate::opts::{GlobalOpts, Source};

/// The network and endpoint settings: one chain, whichever the strongest source names.
const NETWORK: &str = "subtensor.network";
const ENDPOINT: &str = "subtensor.chain_endpoint";
/// The one file key that is not a flag: where `devnet up` made the devnet the file belongs to.
pub const DEVNET_DIR: &str = "devnet.dir";

/// A config file's values by dotted key (`wallet.name`), relative paths resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigFile {
    values: BTreeMap<String, toml::Value>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write the config file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// A setting the file may hold: a global setting that takes a value (not the config file
/// itself, and not the hidden ones: secrets and the process's directories).
#[derive(Debug, Clone)]
pub struct FileSetting {
    /// The clap id, which is the file's key.
    pub key: String,
    /// The long flag the value is given to clap as.
    pub long: String,
    /// Relative values are relative to the file.
    pub is_path: bool,
}

/// Every key a config file may hold, from the clap declaration.
pub fn file_settings() -> Vec<FileSetting> {
    let cmd = Cli::command();
    cmd.get_arguments()
        .filter(|a| a.is_global_set() && !a.is_hide_set() && a.get_id() != "config")
        .filter(|a| a.get_action().takes_values())
        .filter_map(|a| {
            Some(FileSetting {
                key: a.get_id().to_string(),
                long: a.get_long()?.to_owned(),
                is_path: matches!(a.get_value_hint(), ValueHint::FilePath | ValueHint::DirPath | ValueHint::AnyPath),
            })
        })
        .collect()
}

impl ConfigFile {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (a key [`file_settings`] lists, or [`DEVNET_DIR`]).
    pub fn set(&mut self, key: &str, value: impl Into<toml::Value>) -> &mut Self {
        self.values.insert(key.to_owned(), value.into());
        self
    }

    pub fn get(&self, key: &str) -> Option<&toml::Value> {
        self.values.get(key)
    }

    /// The `[devnet] dir` of a file written by `devnet up`.
    pub fn devnet_dir(&self) -> Option<PathBuf> {
        self.get(DEVNET_DIR).and_then(toml::Value::as_str).map(PathBuf::from)
    }

    /// Reads `path`: every key must be a setting (an unknown one is named); relative paths
    /// become relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let bad = |message: String| ConfigError::Parse { path: path.into(), message };
        let table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string().trim_end().to_owned()))?;
        let mut flat = BTreeMap::new();
        flatten("", table, &mut flat);
        let settings = file_settings();
        let base = path.parent().unwrap_or(Path::new("."));
        let mut values = BTreeMap::new();
        for (key, value) in flat {
            let is_path = match settings.iter().find(|s| s.key == key) {
                Some(s) => s.is_path,
                None if key == DEVNET_DIR => true,
                None => {
                    let known: Vec<&str> = settings.iter().map(|s| s.key.as_str()).chain([DEVNET_DIR]).collect();
                    return Err(bad(format!("unknown field `{key}`; the settings are {}", known.join(", "))));
                }
            };
            let value = match value {
                toml::Value::String(s) if is_path && Path::new(&s).is_relative() && !s.starts_with('~') => {
                    toml::Value::String(base.join(s).display().to_string())
                }
                v @ (toml::Value::String(_)
                | toml::Value::Integer(_)
                | toml::Value::Float(_)
                | toml::Value::Boolean(_)) => v,
                other => return Err(bad(format!("`{key}` must be a single value, not {}", other.type_str()))),
            };
            values.insert(key, value);
        }
        Ok(Self { values })
    }

    /// Writes the file (0600: it names wallets) with a header saying what wrote it.
    pub fn save(&self, path: &Path, header: &str) -> Result<(), ConfigError> {
        let mut root = toml::Table::new();
        for (key, value) in &self.values {
            let mut table = &mut root;
            let mut parts: Vec<&str> = key.split('.').collect();
            let last = parts.pop().unwrap_or_default();
            for part in parts {
                let entry = table.entry(part).or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(t) = entry else {
                    return Err(ConfigError::Parse { path: path.into(), message: format!("`{key}` clashes") });
                };
                table = t;
            }
            table.insert(last.to_owned(), value.clone());
        }
        let body =
            toml::to_string(&root).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        let mut text = String::new();
        for line in header.lines() {
            text.push_str("# ");
            text.push_str(line);
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&body);
        write_private(path, text.as_bytes()).map_err(|source| ConfigError::Write { path: path.into(), source })
    }
}

fn flatten(prefix: &str, table: toml::Table, out: &mut BTreeMap<String, toml::Value>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            v => {
                out.insert(key, v);
            }
        }
    }
}

fn text_of(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Completes a parsed command line (`Cli::parse_args`): the config file named by `--config` or
/// `NICOMPUTE_CONFIG` fills every setting that neither a flag nor a variable gave, the chain is
/// settled as one setting, and `~` gets its home. Runs once per command (one-shot and shell
/// alike); a second call changes nothing.
pub fn resolve(mut cli: Cli) -> Result<Cli, ConfigError> {
    if cli.global.given.resolved {
        return Ok(cli);
    }
    let mut given = std::mem::take(&mut cli.global.given);
    if let Some(path) = cli.global.config.clone() {
        let file = ConfigFile::load(&path)?;
        let chain_given = given.source(NETWORK).is_explicit() || given.source(ENDPOINT).is_explicit();
        let mut extra: Vec<OsString> = Vec::new();
        for s in file_settings() {
            let Some(value) = file.get(&s.key) else { continue };
            if given.source(&s.key).is_explicit() || (chain_given && (s.key == NETWORK || s.key == ENDPOINT)) {
                continue;
            }
            extra.push(format!("--{}={}", s.long, text_of(value)).into());
            given.sources.insert(s.key.clone(), Source::File);
        }
        if !extra.is_empty() {
            // The file's values go first: the user's arguments stay where they were.
            let mut argv: Vec<OsString> = given.argv.iter().take(1).cloned().collect();
            argv.extend(extra);
            argv.extend(given.argv.iter().skip(1).cloned());
            let again = Cli::parse_args_with(argv, given.env).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string().lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned(),
            })?;
            cli.global = again.global;
        }
        given.file = Some(file);
    }
    settle_chain(&mut cli.global, &given);
    cli.global.wallet.home.clone_from(&cli.global.dirs.home);
    given.resolved = true;
    cli.global.given = given;
    Ok(cli)
}

/// The chain is one setting: the strongest source among the network and the endpoint decides,
/// and a network it names is not overridden by a weaker endpoint. (The SDK's one exception: the
/// `local` network is wherever `BT_SUBTENSOR_CHAIN_ENDPOINT` says.)
fn settle_chain(g: &mut GlobalOpts, given: &crate::opts::Given) {
    let (network, endpoint) = (given.source(NETWORK), given.source(ENDPOINT));
    let local_from_env = g.subtensor.network == "local" && endpoint == Source::Env;
    if network > endpoint && !local_from_env {
        g.subtensor.chain_endpoint = None;
    }
}

/// Writes `bytes` to `path` readable by the owner only, replacing it atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests;
