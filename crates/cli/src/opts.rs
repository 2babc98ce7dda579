//! Option groups shared by commands, declared once and flattened: wallet and output.
//! Dotted names are the bittensor spelling users already type; kebab-case aliases work too.

use std::path::PathBuf;

use bittensor::wallet::{Wallet, DEFAULT_HOTKEY, DEFAULT_NAME};
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    #[command(flatten)]
    pub wallet: WalletOpts,
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
}
