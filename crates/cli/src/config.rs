//! `config.toml`: the settings a command would otherwise take as flags (chain, netuid, wallet,
//! database), so a devnet or a long-lived setup is one `--config FILE` (or `NICOMPUTE_CONFIG`)
//! away. Precedence, for every setting: flag > environment variable > config file > default.
//! The chain is one setting: a flag or variable naming the network or the endpoint wins over
//! both of the file's, so `--subtensor.network finney` is never overridden by a file's endpoint.
//!
//! Relative paths in the file are relative to the file's directory, so a devnet directory can be
//! moved or shared whole.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::opts::GlobalOpts;

/// The environment variable naming a config file (`--config` wins over it).
pub const CONFIG_ENV: &str = "NICOMPUTE_CONFIG";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The allocation database (SN27's database.db format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<PathBuf>,
    #[serde(default)]
    pub subtensor: SubtensorSection,
    #[serde(default)]
    pub wallet: WalletSection,
    /// Present in files written by `devnet up`: where that devnet lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devnet: Option<DevnetSection>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubtensorSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netuid: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalletSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotkey: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevnetSection {
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write the config file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl ConfigFile {
    /// Reads `path`; relative paths inside become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut cfg: ConfigFile = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string().trim_end().to_owned() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = cfg.db.as_mut() {
            resolve(p);
        }
        if let Some(p) = cfg.wallet.path.as_mut() {
            resolve(p);
        }
        if let Some(d) = cfg.devnet.as_mut() {
            resolve(&mut d.dir);
        }
        Ok(cfg)
    }

    /// Writes the file (0600: it names wallets) with a header saying what wrote it.
    pub fn save(&self, path: &Path, header: &str) -> Result<(), ConfigError> {
        let body =
            toml::to_string(self).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
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

    /// Fills every setting of `g` that neither a flag nor its environment variable gave.
    pub fn apply(&self, g: &mut GlobalOpts) {
        let env_set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
        let fill = |slot: &mut Option<String>, env: &str, value: Option<String>| {
            if slot.is_none() && !env_set(env) {
                *slot = value;
            }
        };
        let w = &mut g.wallet;
        fill(&mut w.path, "BT_WALLET_PATH", self.wallet.path.as_ref().map(|p| p.display().to_string()));
        fill(&mut w.name, "BT_WALLET_NAME", self.wallet.name.clone());
        fill(&mut w.hotkey, "BT_WALLET_HOTKEY", self.wallet.hotkey.clone());
        let s = &mut g.subtensor;
        let chain_given = s.network.is_some()
            || s.chain_endpoint.is_some()
            || env_set("BT_SUBTENSOR_NETWORK")
            || env_set("BT_SUBTENSOR_CHAIN_ENDPOINT");
        if !chain_given {
            s.network.clone_from(&self.subtensor.network);
            s.chain_endpoint.clone_from(&self.subtensor.chain_endpoint);
        }
        if s.netuid.is_none() {
            s.netuid = self.subtensor.netuid;
        }
        if g.db.is_none() && !env_set("NICOMPUTE_DB") {
            g.db.clone_from(&self.db);
        }
    }
}

/// The config file named by `--config` or `NICOMPUTE_CONFIG`, if any.
pub fn config_path(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf).or_else(|| std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
}

/// Loads the named config file (if any) into `g`.
pub fn apply_to(g: &mut GlobalOpts) -> Result<Option<ConfigFile>, ConfigError> {
    let Some(path) = config_path(g.config.as_deref()) else { return Ok(None) };
    let cfg = ConfigFile::load(&path)?;
    cfg.apply(g);
    Ok(Some(cfg))
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
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn parse(args: &[&str]) -> GlobalOpts {
        let mut v = vec!["nicompute"];
        v.extend_from_slice(args);
        v.push("list_a");
        Cli::try_parse_from(v).expect("parse").global
    }

    fn sample(dir: &Path) -> PathBuf {
        let path = dir.join("config.toml");
        let cfg = ConfigFile {
            db: Some("database.db".into()),
            subtensor: SubtensorSection {
                chain_endpoint: Some("ws://127.0.0.1:9".into()),
                netuid: Some(5),
                ..Default::default()
            },
            wallet: WalletSection { path: Some("wallets".into()), name: Some("validator".into()), hotkey: None },
            devnet: Some(DevnetSection { dir: ".".into() }),
        };
        cfg.save(&path, "written by a test").expect("save");
        path
    }

    #[test]
    fn round_trip_resolves_relative_paths_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = sample(dir.path());
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("# written by a test\n"), "{text}");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        let cfg = ConfigFile::load(&path).expect("load");
        assert_eq!(cfg.db, Some(dir.path().join("database.db")));
        assert_eq!(cfg.wallet.path, Some(dir.path().join("wallets")));
        assert_eq!(cfg.subtensor.netuid, Some(5));
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = sample(dir.path());
        let cfg = ConfigFile::load(&path).expect("load");

        let mut g = parse(&[]);
        cfg.apply(&mut g);
        assert_eq!(g.wallet.name.as_deref(), Some("validator"));
        assert_eq!(g.wallet.hotkey, None, "unset in the file: the default applies later");
        assert_eq!(g.subtensor.netuid(), 5);
        assert_eq!(g.subtensor.chain_endpoint.as_deref(), Some("ws://127.0.0.1:9"));
        assert_eq!(g.db, Some(dir.path().join("database.db")));

        let mut g = parse(&["--wallet.name", "mine", "--netuid", "27", "--subtensor.network", "finney"]);
        cfg.apply(&mut g);
        assert_eq!(g.wallet.name.as_deref(), Some("mine"));
        assert_eq!(g.subtensor.netuid(), 27);
        assert_eq!(g.subtensor.network.as_deref(), Some("finney"));
        assert_eq!(g.subtensor.chain_endpoint, None, "a network flag is not overridden by the file's endpoint");
    }

    #[test]
    fn unknown_keys_and_bad_syntax_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[wallet]\nnmae = \"x\"\n").expect("write");
        let e = ConfigFile::load(&path).expect_err("typo").to_string();
        assert!(e.contains("nmae") && e.contains("c.toml"), "{e}");
        std::fs::write(&path, "db = \n").expect("write");
        assert!(matches!(ConfigFile::load(&path), Err(ConfigError::Parse { .. })));
        let e = ConfigFile::load(&dir.path().join("missing.toml")).expect_err("missing").to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }
}
