//! Where wallet passwords come from: `NICOMPUTE_WALLET_PASSWORD` for scripts, otherwise a
//! prompt on the terminal that does not echo. Without a terminal and without the variable,
//! the command fails instead of waiting for input. Passwords never travel in argv.

use std::io::IsTerminal;
use std::path::Path;

use bittensor::wallet::SecretString;
use bittensor::wallet::{PasswordSource, WalletError};

use crate::opts::PASSWORD_ENV;

/// Made by `WalletOpts::passwords`, which holds the variable's value as clap read it.
#[derive(Debug, Clone)]
pub struct PromptOrEnv {
    /// Ask twice (creating a key) rather than once (unlocking one).
    pub confirm: bool,
    /// `NICOMPUTE_WALLET_PASSWORD`, when set: used instead of asking.
    pub env: Option<SecretString>,
}

impl PasswordSource for PromptOrEnv {
    fn password(&self, keyfile: &Path) -> Result<SecretString, WalletError> {
        if let Some(p) = &self.env {
            return Ok(p.clone());
        }
        if !std::io::stdin().is_terminal() {
            return Err(WalletError::NoPassword {
                path: keyfile.to_owned(),
                reason: format!("no terminal to ask on; set {PASSWORD_ENV} for scripts"),
            });
        }
        let prompt = format!("Password for {}: ", keyfile.display());
        let first = rpassword::prompt_password(prompt)
            .map_err(|e| WalletError::NoPassword { path: keyfile.to_owned(), reason: e.to_string() })?;
        if self.confirm {
            let again = rpassword::prompt_password("Repeat the password: ")
                .map_err(|e| WalletError::NoPassword { path: keyfile.to_owned(), reason: e.to_string() })?;
            if again != first {
                return Err(WalletError::NoPassword {
                    path: keyfile.to_owned(),
                    reason: "the passwords differ".into(),
                });
            }
            if first.len() < 6 {
                return Err(WalletError::NoPassword {
                    path: keyfile.to_owned(),
                    reason: "a coldkey password needs at least 6 characters".into(),
                });
            }
        }
        Ok(SecretString::from(first))
    }
}
