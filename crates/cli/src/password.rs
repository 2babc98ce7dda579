//! Where wallet passwords come from: `NICOMPUTE_WALLET_PASSWORD` for scripts, otherwise a
//! prompt on the terminal that does not echo. Without a terminal and without the variable,
//! the command fails instead of waiting for input. Passwords never travel in argv.

use std::io::IsTerminal;
use std::path::Path;

use bittensor::wallet::SecretString;
use bittensor::wallet::{PasswordSource, WalletError};

/// The environment variable scripts use to pass a wallet password.
pub const PASSWORD_ENV: &str = "NICOMPUTE_WALLET_PASSWORD";

#[derive(Debug, Clone, Copy)]
pub struct PromptOrEnv {
    /// Ask twice (creating a key) rather than once (unlocking one).
    pub confirm: bool,
}

impl PasswordSource for PromptOrEnv {
    fn password(&self, keyfile: &Path) -> Result<SecretString, WalletError> {
        if let Ok(p) = std::env::var(PASSWORD_ENV) {
            return Ok(SecretString::from(p));
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
