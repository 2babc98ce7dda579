//! `nicompute wallet create|list|show`: btcli-compatible wallets (`balance` and `transfer`, which
//! talk to the chain, live in their own modules).
//!
//! Reads only public files unless a secret is asked for, so `show` never needs a password.
//! Mnemonics are printed only with `--show-secrets`.

use anyhow::Context;
use bittensor::wallet::{keyfile, Key, NoPassword, Wallet, WalletError};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::opts::GlobalOpts;
use crate::output::{table, Output, UsageError};

#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Create a wallet: an encrypted coldkey and a plaintext hotkey (whichever is missing).
    Create(CreateArgs),
    /// List the wallets under the wallet directory with their keys' addresses.
    List,
    /// Show one wallet's addresses and public keys.
    Show,
    /// An account's TAO on the chain [default: the wallet's coldkey].
    Balance(super::balance::BalanceArgs),
    /// Send TAO from the wallet's coldkey (transfer_keep_alive).
    Transfer(super::transfer::TransferArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Mnemonic length in words (12, 15, 18, 21 or 24).
    #[arg(long, default_value_t = 12)]
    pub words: usize,
    /// Store the coldkey unencrypted (for throwaway test wallets only).
    #[arg(long)]
    pub no_password: bool,
}

#[derive(Debug, Serialize)]
pub struct KeyView {
    pub name: String,
    pub ss58: Option<String>,
    pub public_key: Option<String>,
    pub encrypted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mnemonic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct WalletView {
    pub name: String,
    pub path: String,
    pub coldkey: KeyView,
    pub hotkeys: Vec<KeyView>,
}

impl WalletCommand {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        match self {
            WalletCommand::Create(a) => create(a, g, out),
            WalletCommand::List => list(g, out),
            WalletCommand::Show => show(g, out),
            WalletCommand::Balance(a) => a.run(g, out).await,
            WalletCommand::Transfer(a) => a.run(g, out).await,
        }
    }
}

fn create(a: &CreateArgs, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
    let w = g.wallet.wallet();
    let pw = g.wallet.passwords(true);
    let created = match w.create(a.words, if a.no_password { None } else { Some(&pw) }) {
        Ok(c) => c,
        // No terminal and no variable: a usage problem, reported before anything is written.
        Err(e @ WalletError::NoPassword { .. }) => return Err(UsageError(e.to_string()).into()),
        Err(e) => return Err(e).with_context(|| format!("creating wallet '{}' in {}", w.name, w.path.display())),
    };
    let view_of = |name: &str, k: &Option<bittensor::Keypair>, encrypted: bool| {
        k.as_ref().map(|k| KeyView {
            name: name.to_owned(),
            ss58: Some(k.ss58()),
            public_key: Some(k.account_id().to_hex()),
            encrypted: Some(encrypted),
            mnemonic: out.show_secrets.then(|| k.mnemonic().unwrap_or_default().to_owned()),
            error: None,
        })
    };
    let cold = view_of("coldkey", &created.coldkey, !a.no_password);
    let hot = view_of(&w.hotkey, &created.hotkey, false);
    #[derive(Serialize)]
    struct Created<'a> {
        wallet: &'a str,
        path: String,
        coldkey: Option<KeyView>,
        hotkey: Option<KeyView>,
    }
    let doc = Created { wallet: &w.name, path: w.dir().display().to_string(), coldkey: cold, hotkey: hot };
    out.result(&doc, |o| {
        writeln!(o, "Wallet '{}' at {}", doc.wallet, doc.path)?;
        for k in doc.coldkey.iter().chain(doc.hotkey.iter()) {
            writeln!(o, "  created {:<10} {}", k.name, k.ss58.as_deref().unwrap_or(""))?;
            if let Some(m) = &k.mnemonic {
                writeln!(o, "    mnemonic: {m}")?;
            }
        }
        Ok(())
    });
    if !out.show_secrets {
        out.note("Mnemonics are not shown; they are stored in the keyfiles (the coldkey encrypted). Back them up with `nicompute wallet show --show-secrets`.");
    }
    Ok(())
}

fn key_view(name: &str, path: &std::path::Path, pub_path: Option<&std::path::Path>, show: bool) -> KeyView {
    let encrypted = std::fs::read(path).ok().map(|d| keyfile::is_encrypted(&d));
    let loaded = match (encrypted, pub_path) {
        (Some(true), Some(p)) | (None, Some(p)) => keyfile::load(p, &NoPassword),
        _ => keyfile::load(path, &NoPassword),
    };
    match loaded {
        Ok(key) => {
            let id = key.account_id();
            let mnemonic = match (&key, show) {
                (Key::Pair(p), true) => p.mnemonic().map(str::to_owned),
                _ => None,
            };
            KeyView {
                name: name.to_owned(),
                ss58: Some(id.to_ss58()),
                public_key: Some(id.to_hex()),
                encrypted,
                mnemonic,
                error: None,
            }
        }
        Err(e) => KeyView {
            name: name.to_owned(),
            ss58: None,
            public_key: None,
            encrypted,
            mnemonic: None,
            error: Some(e.to_string()),
        },
    }
}

fn wallet_view(w: &Wallet, show: bool) -> WalletView {
    let coldkey = key_view("coldkey", &w.coldkey_path(), Some(&w.coldkeypub_path()), false);
    let hotkeys = w
        .hotkey_names()
        .into_iter()
        .map(|h| {
            let hw = Wallet::new(w.path.clone(), w.name.clone(), h.clone());
            key_view(&h, &hw.hotkey_path(), Some(&hw.hotkeypub_path()), show)
        })
        .collect();
    WalletView { name: w.name.clone(), path: w.dir().display().to_string(), coldkey, hotkeys }
}

fn list(g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
    let dir = g.wallet.wallet_dir();
    let wallets: Vec<WalletView> =
        Wallet::list(&dir).into_iter().map(|name| wallet_view(&Wallet::new(dir.clone(), name, ""), false)).collect();
    if wallets.is_empty() {
        out.note(&format!("No wallets in {}. Create one with `nicompute wallet create`.", dir.display()));
    }
    out.result(&wallets, |o| {
        let mut rows = Vec::new();
        for w in &wallets {
            rows.push(vec![w.name.clone(), "coldkey".into(), addr(&w.coldkey)]);
            for h in &w.hotkeys {
                rows.push(vec![String::new(), format!("hotkey {}", h.name), addr(h)]);
            }
        }
        writeln!(o, "{}", table(&["Wallet", "Key", "SS58 address"], rows))
    });
    Ok(())
}

fn addr(k: &KeyView) -> String {
    match (&k.ss58, &k.error) {
        (Some(s), _) => s.clone(),
        (None, Some(e)) => format!("(unreadable: {e})"),
        (None, None) => "-".into(),
    }
}

fn show(g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
    let w = g.wallet.wallet();
    // Fails with a clear message when the wallet is missing.
    w.coldkeypub().or_else(|_| w.hotkey_public()).with_context(|| format!("reading wallet '{}'", w.name))?;
    let mut view = wallet_view(&w, out.show_secrets);
    view.hotkeys.retain(|h| h.name == w.hotkey);
    if out.show_secrets && w.coldkey_path().exists() {
        // Asked for the secrets: decrypt the coldkey (password prompt or variable).
        let cold =
            w.coldkey(&g.wallet.passwords(false)).with_context(|| format!("decrypting the coldkey of '{}'", w.name))?;
        view.coldkey.mnemonic = cold.mnemonic().map(str::to_owned);
    }
    if view.hotkeys.is_empty() {
        anyhow::bail!(
            "wallet '{}' has no hotkey '{}' (hotkeys: {}); choose one with --wallet.hotkey",
            w.name,
            w.hotkey,
            w.hotkey_names().join(", ")
        );
    }
    out.result(&view, |o| {
        writeln!(o, "Wallet   {}  ({})", view.name, view.path)?;
        for k in std::iter::once(&view.coldkey).chain(view.hotkeys.iter()) {
            let label = if k.name == "coldkey" { "coldkey".to_owned() } else { format!("hotkey {}", k.name) };
            writeln!(o, "{label:<16} {}", addr(k))?;
            if let Some(pk) = &k.public_key {
                writeln!(o, "{:<16} {pk}", "  public key")?;
            }
            if let Some(m) = &k.mnemonic {
                writeln!(o, "{:<16} {m}", "  mnemonic")?;
            }
        }
        Ok(())
    });
    Ok(())
}
