//! Every setting of the command line, declared once: its flag, its environment variable, its
//! default and its help live in one clap declaration here, and nowhere else reads the
//! environment for them. Option groups (wallet, subtensor, wandb, the process's directories) are
//! declared once and flattened into [`GlobalOpts`]; `config.rs` fills from the config file exactly
//! the settings clap says came from a default, and the README's configuration table is checked
//! against these declarations by a test. Dotted names are the bittensor spelling users already
//! type; kebab-case aliases work too.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use bittensor::subtensor::{network, Subtensor};
use bittensor::wallet::{SecretString, Wallet, DEFAULT_HOTKEY, DEFAULT_NAME};
use bittensor::Clock;
use clap::{Args, ValueHint};

use crate::config::ConfigFile;
use crate::output::UsageError;
use crate::shared::WandbMode;

/// The variable naming a config file (`--config` wins over it).
pub const CONFIG_ENV: &str = "NICOMPUTE_CONFIG";
/// The variable naming the allocation database (`--db` wins over it).
pub const DB_ENV: &str = "NICOMPUTE_DB";
/// The variable scripts pass a wallet password in (never a flag: argv is public).
pub const PASSWORD_ENV: &str = "NICOMPUTE_WALLET_PASSWORD";
/// The SDK's default wallet directory.
pub const DEFAULT_WALLET_PATH: &str = "~/.bittensor/wallets";
/// NI Compute's subnet on finney.
pub const DEFAULT_NETUID: u16 = 27;

#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    #[command(flatten)]
    pub wallet: WalletOpts,
    #[command(flatten)]
    pub subtensor: SubtensorOpts,
    #[command(flatten)]
    pub wandb: WandbOpts,
    #[command(flatten)]
    pub dirs: Dirs,
    /// A config.toml with these settings (flags and environment variables win over it)
    #[arg(id = "config", long, global = true, env = CONFIG_ENV, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
    /// The allocation database (SN27's database.db format) [default: <data dir>/database.db]
    #[arg(id = "db", long, global = true, env = DB_ENV, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub db: Option<PathBuf>,
    /// The Docker daemon of the docker runtime (a unix:// socket)
    #[arg(
        id = "docker.host",
        long = "docker-host",
        global = true,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock",
        value_name = "URL"
    )]
    pub docker_host: String,
    /// Print results as JSON on stdout (errors too).
    #[arg(long, global = true)]
    pub json: bool,
    /// Show passwords and mnemonics instead of redacting them.
    #[arg(long = "show-secrets", global = true)]
    pub show_secrets: bool,
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// A log filter (e.g. debug, or nicompute=trace); wins over -v and -q
    #[arg(id = "log", long = "log", global = true, env = "NICOMPUTE_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// How each setting was given (recorded by `Cli::parse_args`, completed by `config::resolve`).
    #[arg(skip)]
    pub given: Given,
    /// What time it is, for expiry and ages (the system's; tests may set another).
    #[arg(skip)]
    pub clock: Clock,
}

impl GlobalOpts {
    /// The Docker runtime's configuration for `image`, its containers labelled with `scope`.
    pub fn docker_config(
        &self,
        image: &str,
        scope: Option<String>,
    ) -> Result<compute::runtime::docker::DockerConfig, UsageError> {
        use compute::runtime::docker::{socket_for_docker_host, DockerConfig};
        let socket = socket_for_docker_host(Some(&self.docker_host)).map_err(|e| UsageError(e.to_string()))?;
        Ok(DockerConfig { socket: Some(socket), image: image.to_owned(), scope, ..DockerConfig::default() })
    }
}

/// Where a setting's value came from, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
}

impl Source {
    /// Given by the user (flag or environment): the config file does not override it.
    pub fn is_explicit(self) -> bool {
        matches!(self, Source::Env | Source::Flag)
    }
}

/// How one invocation's settings were given: its argv (parsed again with the config file's
/// values), each setting's [`Source`], and the config file it loaded.
#[derive(Debug, Clone, Default)]
pub struct Given {
    pub(crate) argv: Vec<OsString>,
    pub(crate) sources: BTreeMap<String, Source>,
    pub(crate) file: Option<ConfigFile>,
    pub(crate) resolved: bool,
    pub(crate) env: crate::cli::EnvPolicy,
}

impl Given {
    pub(crate) fn new(argv: Vec<OsString>, matches: &clap::ArgMatches, env: crate::cli::EnvPolicy) -> Self {
        use clap::parser::ValueSource;
        let sources = matches
            .ids()
            .filter_map(|id| {
                let source = match matches.value_source(id.as_str())? {
                    ValueSource::CommandLine => Source::Flag,
                    ValueSource::EnvVariable => Source::Env,
                    _ => Source::Default,
                };
                Some((id.as_str().to_owned(), source))
            })
            .collect();
        Self { argv, sources, file: None, resolved: false, env }
    }

    /// Where the setting `id` (its clap id, e.g. `wallet.name`) came from.
    pub fn source(&self, id: &str) -> Source {
        self.sources.get(id).copied().unwrap_or(Source::Default)
    }

    /// The config file in use, if any.
    pub fn file(&self) -> Option<&ConfigFile> {
        self.file.as_ref()
    }
}

/// `--wallet.path/--wallet.name/--wallet.hotkey`, with the SDK's environment variables.
#[derive(Debug, Clone, Args)]
pub struct WalletOpts {
    /// Wallet directory
    #[arg(
        id = "wallet.path",
        long = "wallet.path",
        visible_alias = "wallet-path",
        global = true,
        env = "BT_WALLET_PATH",
        default_value = DEFAULT_WALLET_PATH,
        value_name = "DIR",
        value_hint = ValueHint::DirPath
    )]
    pub path: String,
    /// Wallet name
    #[arg(
        id = "wallet.name",
        long = "wallet.name",
        visible_alias = "wallet-name",
        global = true,
        env = "BT_WALLET_NAME",
        default_value = DEFAULT_NAME,
        value_name = "NAME"
    )]
    pub name: String,
    /// Hotkey name
    #[arg(
        id = "wallet.hotkey",
        long = "wallet.hotkey",
        visible_alias = "wallet-hotkey",
        global = true,
        env = "BT_WALLET_HOTKEY",
        default_value = DEFAULT_HOTKEY,
        value_name = "NAME"
    )]
    pub hotkey: String,
    /// The wallet password for scripts: read from the environment only, never from argv.
    #[arg(
        id = "wallet.password",
        long = "wallet.password",
        global = true,
        env = PASSWORD_ENV,
        hide = true,
        hide_env_values = true,
        value_parser = secret
    )]
    pub password: Option<SecretString>,
    /// The home directory `~` expands to (from [`Dirs`], set by `config::resolve`).
    #[arg(skip)]
    pub home: Option<PathBuf>,
}

/// A secret taken from the environment (kept in a redacting type from the start).
fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s.to_owned()))
}

impl WalletOpts {
    pub fn wallet(&self) -> Wallet {
        Wallet::new(Wallet::expand_path(&self.path, self.home.as_deref()), self.name.as_str(), self.hotkey.as_str())
    }

    pub fn wallet_dir(&self) -> PathBuf {
        self.wallet().path
    }

    /// Where passwords come from: the environment's, else a prompt (`confirm`: asked twice).
    pub fn passwords(&self, confirm: bool) -> crate::password::PromptOrEnv {
        crate::password::PromptOrEnv { confirm, env: self.password.clone() }
    }

    /// The wallet's hotkey with its secret (asking for a password only if it is encrypted).
    pub fn hotkey(&self) -> anyhow::Result<bittensor::Keypair> {
        use anyhow::Context;
        let w = self.wallet();
        w.hotkey(&self.passwords(false))
            .with_context(|| format!("loading hotkey '{}' of wallet '{}'", w.hotkey, w.name))
    }
}

/// `--subtensor.network` / `--subtensor.chain_endpoint` and `--netuid`, with the SDK's names.
#[derive(Debug, Clone, Args)]
pub struct SubtensorOpts {
    /// finney, test, archive, local, latent-lite, or a URL
    #[arg(
        id = "subtensor.network",
        long = "subtensor.network",
        visible_alias = "subtensor-network",
        global = true,
        env = "BT_SUBTENSOR_NETWORK",
        default_value = "finney",
        value_name = "NETWORK"
    )]
    pub network: String,
    /// A ws://, wss://, http:// or https:// endpoint; wins over --subtensor.network
    #[arg(
        id = "subtensor.chain_endpoint",
        long = "subtensor.chain_endpoint",
        visible_alias = "subtensor-chain-endpoint",
        global = true,
        env = "BT_SUBTENSOR_CHAIN_ENDPOINT",
        value_name = "URL"
    )]
    pub chain_endpoint: Option<String>,
    /// The subnet (27 is NI Compute)
    #[arg(id = "subtensor.netuid", long = "netuid", global = true, default_value_t = DEFAULT_NETUID, value_name = "NETUID")]
    pub netuid: u16,
}

impl SubtensorOpts {
    pub fn netuid(&self) -> u16 {
        self.netuid
    }

    /// The chain's endpoint: `--subtensor.chain_endpoint` wins over `--subtensor.network`
    /// (which of the two a flag, variable or file gave is settled by `config::resolve`).
    pub fn endpoint(&self) -> Result<String, UsageError> {
        network::resolve(Some(&self.network), self.chain_endpoint.as_deref()).map_err(|e| UsageError(e.to_string()))
    }

    pub fn client(&self) -> anyhow::Result<Subtensor> {
        let endpoint = self.endpoint()?;
        Subtensor::new(&endpoint).map_err(|e| UsageError(e.to_string()).into())
    }
}

/// The subnet's shared state on wandb: whether, where, and with which key.
#[derive(Debug, Clone, Args)]
pub struct WandbOpts {
    /// Share allocations and penalties on the subnet's wandb project (auto: on for finney and
    /// test when an API key is found)
    #[arg(
        id = "wandb.mode",
        long = "wandb",
        global = true,
        env = "NICOMPUTE_WANDB",
        value_enum,
        default_value_t = WandbMode::Auto,
        value_name = "MODE"
    )]
    pub mode: WandbMode,
    /// The wandb API server
    #[arg(
        id = "wandb.base_url",
        long = "wandb-base-url",
        global = true,
        env = "WANDB_BASE_URL",
        default_value = wandb::DEFAULT_BASE_URL,
        value_name = "URL"
    )]
    pub base_url: String,
    /// The netrc file `wandb login` writes the API key to [default: ~/.netrc]
    #[arg(id = "wandb.netrc", long = "netrc", global = true, env = "NETRC", value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub netrc: Option<PathBuf>,
    /// The wandb API key: read from the environment only, never from argv.
    #[arg(
        id = "wandb.api_key",
        long = "wandb-api-key",
        global = true,
        env = "WANDB_API_KEY",
        hide = true,
        hide_env_values = true,
        value_parser = secret
    )]
    pub api_key: Option<SecretString>,
}

/// The process's directories, for the defaults under them (hidden: the environment sets them).
#[derive(Debug, Clone, Default, Args)]
pub struct Dirs {
    /// The home directory (default wallets, data, SSH keys and netrc file live under it)
    #[arg(id = "home", long = "home", global = true, env = "HOME", hide = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// The XDG data directory; nicompute's data goes in its nicompute/ [default: ~/.local/share]
    #[arg(
        id = "xdg_data_home",
        long = "xdg-data-home",
        global = true,
        env = "XDG_DATA_HOME",
        hide = true,
        value_name = "DIR"
    )]
    pub xdg_data_home: Option<PathBuf>,
}

impl Dirs {
    /// Where nicompute keeps its data: `$XDG_DATA_HOME/nicompute` (only an absolute one: the XDG
    /// spec says a relative one must be ignored), else `~/.local/share/nicompute`; `None` with
    /// neither.
    pub fn data_dir(&self) -> Option<PathBuf> {
        let base = match self.xdg_data_home.as_ref().filter(|p| p.is_absolute()) {
            Some(xdg) => xdg.clone(),
            None => self.home.as_ref()?.join(".local").join("share"),
        };
        Some(base.join("nicompute"))
    }

    /// [`Dirs::data_dir`], or `.local/share/nicompute` below the working directory for a process
    /// without a home.
    pub fn data_dir_or_here(&self) -> PathBuf {
        self.data_dir().unwrap_or_else(|| Path::new(".local").join("share").join("nicompute"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_prefers_an_absolute_xdg_data_home() {
        let dirs = |xdg: Option<&str>, home: Option<&str>| Dirs {
            xdg_data_home: xdg.map(PathBuf::from),
            home: home.map(PathBuf::from),
        };
        assert_eq!(dirs(Some("/data"), Some("/home/u")).data_dir(), Some(PathBuf::from("/data/nicompute")));
        assert_eq!(
            dirs(Some("relative"), Some("/home/u")).data_dir(),
            Some(PathBuf::from("/home/u/.local/share/nicompute"))
        );
        assert_eq!(dirs(None, Some("/home/u")).data_dir(), Some(PathBuf::from("/home/u/.local/share/nicompute")));
        assert_eq!(dirs(None, None).data_dir(), None);
        assert_eq!(dirs(None, None).data_dir_or_here(), PathBuf::from(".local/share/nicompute"));
    }

    #[test]
    fn the_wallet_path_expands_the_home() {
        let mut w = WalletOpts {
            path: DEFAULT_WALLET_PATH.into(),
            name: "n".into(),
            hotkey: "h".into(),
            password: None,
            home: Some("/home/u".into()),
        };
        assert_eq!(w.wallet_dir(), PathBuf::from("/home/u/.bittensor/wallets"));
        w.path = "/w".into();
        assert_eq!(w.wallet_dir(), PathBuf::from("/w"));
    }
}
