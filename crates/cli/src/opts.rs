//! Option groups shared by commands, declared once and flattened: wallet and output.
//! Dotted names are the bittensor spelling users already type; kebab-case aliases work too.

use std::path::PathBuf;

use std::time::Duration;

use bittensor::subtensor::{network, Subtensor};
use bittensor::wallet::{Wallet, DEFAULT_HOTKEY, DEFAULT_NAME};
use clap::Args;

use crate::output::UsageError;

#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    #[command(flatten)]
    pub wallet: WalletOpts,
    #[command(flatten)]
    pub subtensor: SubtensorOpts,
    /// A config.toml with these settings (flags and environment variables win over it) [env: NICOMPUTE_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Share allocations and penalties on the subnet's wandb project [env: NICOMPUTE_WANDB] [default: auto: on for finney and test when an API key is found]
    #[arg(long, global = true, value_enum, value_name = "MODE")]
    pub wandb: Option<crate::shared::WandbMode>,
    /// The wandb API server [env: WANDB_BASE_URL] [default: https://api.wandb.ai]
    #[arg(long = "wandb-base-url", global = true, value_name = "URL")]
    pub wandb_base_url: Option<String>,
    /// Print results as JSON on stdout (errors too).
    #[arg(long, global = true)]
    pub json: bool,
    /// The allocation database (SN27's database.db format) [env: NICOMPUTE_DB] [default: <data dir>/database.db]
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Show passwords and mnemonics instead of redacting them.
    #[arg(long = "show-secrets", global = true)]
    pub show_secrets: bool,
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// `--wallet.path/--wallet.name/--wallet.hotkey`, with the SDK's environment variables.
#[derive(Debug, Clone, Args)]
pub struct WalletOpts {
    /// Wallet directory [env: BT_WALLET_PATH] [default: ~/.bittensor/wallets]
    #[arg(long = "wallet.path", visible_alias = "wallet-path", global = true, value_name = "DIR")]
    pub path: Option<String>,
    /// Wallet name [env: BT_WALLET_NAME] [default: default]
    #[arg(long = "wallet.name", visible_alias = "wallet-name", global = true, value_name = "NAME")]
    pub name: Option<String>,
    /// Hotkey name [env: BT_WALLET_HOTKEY] [default: default]
    #[arg(long = "wallet.hotkey", visible_alias = "wallet-hotkey", global = true, value_name = "NAME")]
    pub hotkey: Option<String>,
}

impl WalletOpts {
    /// Resolves flag > environment > default.
    pub fn wallet(&self) -> Wallet {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let path = self
            .path
            .clone()
            .or_else(|| env("BT_WALLET_PATH"))
            .map(|p| Wallet::expand_path(&p))
            .unwrap_or_else(Wallet::default_path);
        let name = self.name.clone().or_else(|| env("BT_WALLET_NAME")).unwrap_or_else(|| DEFAULT_NAME.into());
        let hotkey = self.hotkey.clone().or_else(|| env("BT_WALLET_HOTKEY")).unwrap_or_else(|| DEFAULT_HOTKEY.into());
        Wallet::new(path, name, hotkey)
    }

    pub fn wallet_dir(&self) -> PathBuf {
        self.wallet().path
    }

    /// The wallet's hotkey with its secret (asking for a password only if it is encrypted).
    pub fn hotkey(&self) -> anyhow::Result<bittensor::Keypair> {
        use anyhow::Context;
        let w = self.wallet();
        w.hotkey(&crate::password::PromptOrEnv { confirm: false })
            .with_context(|| format!("loading hotkey '{}' of wallet '{}'", w.hotkey, w.name))
    }
}

/// `--subtensor.network` / `--subtensor.chain_endpoint` and `--netuid`, with the SDK's names.
#[derive(Debug, Clone, Args)]
pub struct SubtensorOpts {
    /// finney, test, archive, local, latent-lite, or a URL [env: BT_SUBTENSOR_NETWORK] [default: finney]
    #[arg(long = "subtensor.network", visible_alias = "subtensor-network", global = true, value_name = "NETWORK")]
    pub network: Option<String>,
    /// A ws://, wss://, http:// or https:// endpoint; wins over --subtensor.network [env: BT_SUBTENSOR_CHAIN_ENDPOINT]
    #[arg(
        long = "subtensor.chain_endpoint",
        visible_alias = "subtensor-chain-endpoint",
        global = true,
        value_name = "URL"
    )]
    pub chain_endpoint: Option<String>,
    /// The subnet [default: 27, NI Compute]
    #[arg(long, global = true)]
    pub netuid: Option<u16>,
}

/// NI Compute's subnet on finney.
pub const DEFAULT_NETUID: u16 = 27;

impl SubtensorOpts {
    pub fn netuid(&self) -> u16 {
        self.netuid.unwrap_or(DEFAULT_NETUID)
    }

    pub fn endpoint(&self) -> Result<String, UsageError> {
        network::resolve(self.network.as_deref(), self.chain_endpoint.as_deref()).map_err(|e| UsageError(e.to_string()))
    }

    pub fn client(&self) -> anyhow::Result<Subtensor> {
        let endpoint = self.endpoint()?;
        Subtensor::new(&endpoint).map_err(|e| UsageError(e.to_string()).into())
    }
}

/// Wall-clock milliseconds since the Unix epoch (allocation expiry and specs ages are stored so).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The renter's default OpenSSH key: the first of `~/.ssh/id_ed25519{suffix}` and
/// `~/.ssh/id_rsa{suffix}` that exists (`.pub` for the key to inject, `""` for the private key).
pub fn default_ssh_key(suffix: &str) -> Option<PathBuf> {
    let ssh = PathBuf::from(std::env::var_os("HOME")?).join(".ssh");
    ["id_ed25519", "id_rsa"].iter().map(|f| ssh.join(format!("{f}{suffix}"))).find(|p| p.is_file())
}

/// Where nicompute keeps its data: `$XDG_DATA_HOME/nicompute` or `~/.local/share/nicompute`.
pub fn data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("nicompute");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/nicompute")
}

/// Parses `12s`, `250ms`, `2m`, `1h`, `90d` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("'{s}' is not a duration (e.g. 12s, 250ms, 5m, 90d)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "ms" => n / 1e3,
        "m" | "min" | "mins" => n * 60.0,
        "h" | "hour" | "hours" => n * 3600.0,
        "d" | "day" | "days" => n * 86400.0,
        other => return Err(format!("unknown unit '{other}' in '{s}' (use ms, s, m, h or d)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("'{s}' must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("12s"), Ok(Duration::from_secs(12)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86400)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
