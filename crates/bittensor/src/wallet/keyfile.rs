//! One keyfile: the JSON the SDK writes, optionally `$NACL`-encrypted.
//!
//! Format (bittensor-wallet 3.x/4.x): a JSON object with `secretPhrase`, `secretSeed`,
//! `privateKey`, `publicKey`, `accountId`, `ss58Address` (4.x adds an integer `cryptoType`), any of
//! which may be absent. Encrypted files are `$NACL` ‖ 24-byte nonce ‖ XSalsa20-Poly1305 box (tag
//! first), keyed by Argon2i (v0x13, 8 passes, 512 MiB, one lane) of the password with the SDK's
//! fixed salt. Unknown keys and non-string values are tolerated so newer SDK files load.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::{PasswordSource, WalletError};
use crate::keys::{AccountId, KeyError, Keypair};

const NACL_PREFIX: &[u8] = b"$NACL";
/// The salt bittensor-wallet hard-codes for the Argon2i key derivation.
const NACL_SALT: [u8; 16] =
    [0x13, 0x71, 0x83, 0xdf, 0xf1, 0x5a, 0x09, 0xbc, 0x9c, 0x90, 0xb5, 0x51, 0x87, 0x39, 0xe9, 0xb1];
/// libsodium `MEMLIMIT_SENSITIVE` in KiB and `OPSLIMIT_SENSITIVE`.
const ARGON2_M_COST_KIB: u32 = 524_288;
const ARGON2_T_COST: u32 = 8;

/// Problems with one keyfile; each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyfileError {
    #[error("keyfile {path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot read keyfile {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write keyfile {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("wrong password for {path} (decryption failed); try again, or check you chose the right wallet")]
    WrongPassword { path: PathBuf },
    #[error("keyfile {path} is corrupt: {reason}. Restore it from backup or regenerate it from its mnemonic")]
    Corrupt { path: PathBuf, reason: KeyDataError },
    #[error("keyfile {path} uses the legacy {format} encryption, which nicompute does not read; re-encrypt it with a current btcli (`btcli wallet regen-coldkey`)")]
    LegacyFormat { path: PathBuf, format: &'static str },
    #[error("keyfile {path} holds only a public key; the secret key is needed here")]
    PublicOnly { path: PathBuf },
}

/// Why a keyfile's (decrypted) content holds no usable key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyDataError {
    #[error("not JSON ({0})")]
    NotJson(String),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("secretSeed is not 32 bytes of hex")]
    BadSeed,
    #[error("privateKey is not 64 bytes of hex")]
    BadPrivateKey,
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("no key material (none of secretPhrase, secretSeed, privateKey, ss58Address, publicKey)")]
    NoKeyMaterial,
    /// The encrypted envelope itself is damaged.
    #[error("{0}")]
    Envelope(&'static str),
}

/// The content of a keyfile: a full keypair, or only a public key (`*pub.txt`).
#[derive(Debug, Clone)]
pub enum Key {
    Pair(Box<Keypair>),
    Public(AccountId),
}

impl Key {
    pub fn account_id(&self) -> AccountId {
        match self {
            Key::Pair(p) => p.account_id(),
            Key::Public(a) => *a,
        }
    }
}

/// Whether the bytes are an encrypted keyfile (any format the SDK knows).
pub fn is_encrypted(data: &[u8]) -> bool {
    data.starts_with(NACL_PREFIX) || data.starts_with(b"$ANSIBLE_VAULT") || data.starts_with(b"gAAAAA")
}

/// Reads and, if needed, decrypts a keyfile.
pub fn load(path: &Path, password: &dyn PasswordSource) -> Result<Key, WalletError> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyfileError::Missing { path: path.to_owned() }.into())
        }
        Err(source) => return Err(KeyfileError::Read { path: path.to_owned(), source }.into()),
    };
    let plain = if data.starts_with(NACL_PREFIX) {
        let pw = password.password(path)?;
        decrypt_nacl(&data, &pw).map_err(|e| e.with_path(path))?
    } else if data.starts_with(b"$ANSIBLE_VAULT") {
        return Err(KeyfileError::LegacyFormat { path: path.to_owned(), format: "ansible-vault" }.into());
    } else if data.starts_with(b"gAAAAA") {
        return Err(KeyfileError::LegacyFormat { path: path.to_owned(), format: "Fernet" }.into());
    } else {
        Zeroizing::new(data)
    };
    parse(&plain).map_err(|reason| KeyfileError::Corrupt { path: path.to_owned(), reason }.into())
}

/// Loads a keyfile that must hold a secret key.
pub fn load_keypair(path: &Path, password: &dyn PasswordSource) -> Result<Keypair, WalletError> {
    match load(path, password)? {
        Key::Pair(p) => Ok(*p),
        Key::Public(_) => Err(KeyfileError::PublicOnly { path: path.to_owned() }.into()),
    }
}

/// Parses keyfile JSON with the SDK's precedence: phrase, seed, private key, then public forms.
pub fn parse(data: &[u8]) -> Result<Key, KeyDataError> {
    let value: Value = serde_json::from_slice(data).map_err(|e| KeyDataError::NotJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(KeyDataError::NotAnObject);
    };
    let text = |k: &str| map.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let pair = |k: Keypair| Key::Pair(Box::new(k));
    if let Some(phrase) = text("secretPhrase") {
        return Ok(Keypair::from_mnemonic(phrase).map(pair)?);
    }
    if let Some(seed) = text("secretSeed") {
        let bytes = hex_fixed::<32>(seed).ok_or(KeyDataError::BadSeed)?;
        return Ok(Keypair::from_seed(&bytes).map(pair)?);
    }
    if let Some(private) = text("privateKey") {
        let bytes = hex_fixed::<64>(private).ok_or(KeyDataError::BadPrivateKey)?;
        return Ok(Keypair::from_private_key(&bytes).map(pair)?);
    }
    if let Some(ss58) = text("ss58Address") {
        return Ok(AccountId::from_ss58(ss58).map(Key::Public)?);
    }
    for k in ["publicKey", "accountId"] {
        if let Some(h) = text(k) {
            return Ok(AccountId::from_hex(h).map(Key::Public)?);
        }
    }
    Err(KeyDataError::NoKeyMaterial)
}

/// The JSON the SDK writes for a keypair (no `cryptoType`: bittensor-wallet 3.x rejects it).
pub fn keypair_json(pair: &Keypair) -> Zeroizing<String> {
    let mut m = Map::new();
    let id = pair.account_id();
    if let Some(phrase) = pair.mnemonic() {
        m.insert("secretPhrase".into(), Value::String(phrase.to_owned()));
    }
    m.insert("accountId".into(), Value::String(id.to_hex()));
    m.insert("publicKey".into(), Value::String(id.to_hex()));
    if let Some(seed) = pair.seed_bytes() {
        m.insert("secretSeed".into(), Value::String(format!("0x{}", hex::encode(seed))));
    }
    m.insert("ss58Address".into(), Value::String(id.to_ss58()));
    m.insert("privateKey".into(), Value::String(format!("0x{}", hex::encode(pair.private_key_bytes().as_slice()))));
    Zeroizing::new(Value::Object(m).to_string())
}

fn public_json(id: &AccountId) -> String {
    let mut m = Map::new();
    m.insert("accountId".into(), Value::String(id.to_hex()));
    m.insert("publicKey".into(), Value::String(id.to_hex()));
    m.insert("ss58Address".into(), Value::String(id.to_ss58()));
    Value::Object(m).to_string()
}

/// Writes a keypair keyfile, encrypted when a password is given. Never overwrites.
pub fn write_keypair(path: &Path, pair: &Keypair, password: Option<&SecretString>) -> Result<(), WalletError> {
    let json = keypair_json(pair);
    let bytes: Zeroizing<Vec<u8>> = match password {
        Some(pw) => encrypt_nacl(json.as_bytes(), pw),
        None => Zeroizing::new(json.as_bytes().to_vec()),
    };
    write_new(path, &bytes)
}

pub fn write_public(path: &Path, id: &AccountId) -> Result<(), WalletError> {
    write_new(path, public_json(id).as_bytes())
}

/// Creates the file with mode 0600 (directories 0700), failing if it exists.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), WalletError> {
    if let Some(dir) = path.parent() {
        let existed = dir.exists();
        fs::create_dir_all(dir).map_err(|source| WalletError::Create { path: dir.to_owned(), source })?;
        if !existed {
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        }
    }
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            WalletError::Exists { path: path.to_owned() }
        } else {
            KeyfileError::Write { path: path.to_owned(), source }.into()
        }
    })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|source| KeyfileError::Write { path: path.to_owned(), source }.into())
}

/// Decryption failures before the path is known.
#[derive(Debug)]
#[non_exhaustive]
pub enum DecryptError {
    WrongPassword,
    Corrupt(&'static str),
}

impl DecryptError {
    fn with_path(self, path: &Path) -> WalletError {
        match self {
            DecryptError::WrongPassword => KeyfileError::WrongPassword { path: path.to_owned() }.into(),
            DecryptError::Corrupt(r) => {
                KeyfileError::Corrupt { path: path.to_owned(), reason: KeyDataError::Envelope(r) }.into()
            }
        }
    }
}

fn derive_key(password: &SecretString) -> Zeroizing<[u8; 32]> {
    let params = argon2::Params::new(ARGON2_M_COST_KIB, ARGON2_T_COST, 1, Some(32))
        .expect("constant Argon2 parameters are valid");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2i, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password.expose_secret().as_bytes(), &NACL_SALT, key.as_mut_slice())
        .expect("output length and salt are valid for Argon2");
    key
}

/// Decrypts a `$NACL` keyfile.
pub fn decrypt_nacl(data: &[u8], password: &SecretString) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    let rest = data.strip_prefix(NACL_PREFIX).ok_or(DecryptError::Corrupt("not a $NACL file"))?;
    if rest.len() < 24 + 16 {
        return Err(DecryptError::Corrupt("encrypted keyfile is truncated"));
    }
    let (nonce, boxed) = rest.split_at(24);
    let key = derive_key(password);
    let cipher = XSalsa20Poly1305::new(key.as_ref().into());
    cipher.decrypt(nonce.into(), boxed).map(Zeroizing::new).map_err(|_| DecryptError::WrongPassword)
}

/// Encrypts keyfile JSON the way bittensor-wallet does.
pub fn encrypt_nacl(plain: &[u8], password: &SecretString) -> Zeroizing<Vec<u8>> {
    let key = derive_key(password);
    let cipher = XSalsa20Poly1305::new(key.as_ref().into());
    let mut nonce = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let boxed = cipher.encrypt((&nonce).into(), plain).expect("XSalsa20Poly1305 encryption cannot fail");
    let mut out = Vec::with_capacity(5 + 24 + boxed.len());
    out.extend_from_slice(NACL_PREFIX);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&boxed);
    Zeroizing::new(out)
}

fn hex_fixed<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s.strip_prefix("0x").unwrap_or(s), &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerates_unknown_keys_and_non_string_values() {
        let kp = Keypair::generate(12).expect("gen");
        let mut v: Value = serde_json::from_str(&keypair_json(&kp)).expect("json");
        v["cryptoType"] = Value::from(1);
        v["somethingNew"] = serde_json::json!({"nested": [1, 2]});
        let key = parse(v.to_string().as_bytes()).expect("parse");
        assert_eq!(key.account_id(), kp.account_id());
    }

    #[test]
    fn precedence_seed_over_private_key() {
        let a = Keypair::generate(12).expect("gen");
        let b = Keypair::generate(12).expect("gen");
        let json = serde_json::json!({
            "secretSeed": format!("0x{}", hex::encode(a.seed_bytes().expect("seed"))),
            "privateKey": format!("0x{}", hex::encode(b.private_key_bytes().as_slice())),
        });
        assert_eq!(parse(json.to_string().as_bytes()).expect("parse").account_id(), a.account_id());
    }

    #[test]
    fn corrupt_inputs_are_errors() {
        assert!(parse(b"").is_err());
        assert!(parse(b"[1]").is_err());
        assert!(parse(b"{\"secretSeed\": \"0x1234\"}").is_err());
        assert!(parse(b"{}").is_err());
        assert!(decrypt_nacl(b"$NACLshort", &SecretString::from("x")).is_err());
    }
}
