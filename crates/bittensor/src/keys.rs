//! sr25519 keys, account ids and SS58 addresses — the identity every Bittensor message carries.
//!
//! A hotkey signs each synapse request; a peer names it by its SS58 address (prefix 42). Keys
//! come from a BIP39 mnemonic through substrate-bip39 (not the BIP39 seed), from a 32-byte mini
//! secret (`secretSeed` in a keyfile) or from a 64-byte expanded secret (`privateKey`), exactly
//! as the Python SDK's `Keypair` does. Signatures use schnorrkel with the `substrate` context.
//! Secret material never appears in `Debug` output.

use std::fmt;
use std::str::FromStr;

use blake2::{Blake2b512, Digest};
use schnorrkel::{ExpansionMode, MiniSecretKey, PublicKey, SecretKey};
use zeroize::Zeroizing;

/// The SS58 network prefix Bittensor uses (the generic Substrate prefix).
pub const SS58_PREFIX: u8 = 42;
/// The schnorrkel signing context of Substrate (`sp-core` `sr25519::Pair::sign`).
const SIGNING_CONTEXT: &[u8] = b"substrate";

/// What went wrong with a key, an address or a signature.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    #[error("'{input}' is not an SS58 address: {reason}")]
    InvalidSs58 { input: String, reason: &'static str },
    #[error("'{input}' uses SS58 network prefix {prefix}; Bittensor addresses use prefix 42 (they start with 5)")]
    WrongSs58Prefix { input: String, prefix: u16 },
    #[error("invalid mnemonic: {0}. Check the words and their order (BIP39 English word list)")]
    InvalidMnemonic(String),
    #[error("invalid {what}: {reason}")]
    InvalidKeyBytes { what: &'static str, reason: String },
    #[error("invalid signature: {0}")]
    InvalidSignature(String),
}

/// A 32-byte public key as used on chain (`AccountId32`, SCALE: 32 raw bytes); displays as its
/// SS58 address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, parity_scale_codec::Encode, parity_scale_codec::Decode)]
pub struct AccountId(pub [u8; 32]);

impl AccountId {
    /// The SS58 address with Bittensor's prefix 42.
    pub fn to_ss58(&self) -> String {
        let mut payload = Vec::with_capacity(35);
        payload.push(SS58_PREFIX);
        payload.extend_from_slice(&self.0);
        let hash = ss58_checksum(&payload);
        payload.extend_from_slice(&hash[..2]);
        base58(&payload)
    }

    /// Decodes and validates (length, checksum, prefix 42) an SS58 address.
    pub fn from_ss58(s: &str) -> Result<Self, KeyError> {
        let invalid = |reason| KeyError::InvalidSs58 { input: truncate_for_error(s), reason };
        let bytes = bs58::decode(s).into_vec().map_err(|_| invalid("not valid base58"))?;
        // Simple (one-byte) prefixes give 35 bytes, two-byte prefixes 36.
        let (prefix, body_start) = match bytes.len() {
            35 => (u16::from(bytes[0]), 1),
            36 if bytes[0] & 0b0100_0000 != 0 => {
                let lower = (bytes[0] << 2) | (bytes[1] >> 6);
                let upper = bytes[1] & 0b0011_1111;
                (u16::from(lower) | (u16::from(upper) << 8), 2)
            }
            _ => return Err(invalid("wrong length for a 32-byte account")),
        };
        let (data, check) = bytes.split_at(body_start + 32);
        if ss58_checksum(data)[..2] != *check {
            return Err(invalid("checksum mismatch (a character is wrong or missing)"));
        }
        if prefix != u16::from(SS58_PREFIX) {
            return Err(KeyError::WrongSs58Prefix { input: s.to_owned(), prefix });
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(&data[body_start..]);
        Ok(Self(out))
    }

    /// `0x`-prefixed lowercase hex of the public key, as keyfiles store it.
    pub fn to_hex(&self) -> String {
        format!("0x{}", hex::encode(self.0))
    }

    /// Parses `0x`-prefixed (or bare) hex of 32 bytes.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let bytes = decode_hex_fixed::<32>(s, "public key")?;
        Ok(Self(bytes))
    }

    /// Verifies an sr25519 signature by this account, accepting also a signature over
    /// `<Bytes>message</Bytes>` as the SDK does (polkadot-js wraps messages that way).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        self.verifying_key().is_some_and(|k| k.verify(message, signature))
    }

    /// The key decoded for verification (a Ristretto point decompression, about a tenth of a
    /// verification): worth keeping for a caller seen often. `None` if the bytes are no key.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        PublicKey::from_bytes(&self.0).ok().map(VerifyingKey)
    }
}

/// A public key decoded once, to verify many signatures ([`AccountId::verifying_key`]).
#[derive(Clone)]
pub struct VerifyingKey(PublicKey);

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", AccountId(self.0.to_bytes()))
    }
}

impl VerifyingKey {
    /// [`AccountId::verify`] without decoding the key again.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        let Ok(sig) = schnorrkel::Signature::from_bytes(&signature.0) else {
            return false;
        };
        if self.0.verify_simple(SIGNING_CONTEXT, message, &sig).is_ok() {
            return true;
        }
        let mut wrapped = Vec::with_capacity(message.len() + 15);
        wrapped.extend_from_slice(b"<Bytes>");
        wrapped.extend_from_slice(message);
        wrapped.extend_from_slice(b"</Bytes>");
        self.0.verify_simple(SIGNING_CONTEXT, &wrapped, &sig).is_ok()
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_ss58())
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({})", self.to_ss58())
    }
}

impl FromStr for AccountId {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_ss58(s)
    }
}

const BASE58_ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
/// 58⁵, the largest power of 58 below 2³².
const BASE58_CHUNK: u64 = 656_356_768;

/// Base58 (Bitcoin alphabet) of up to 40 bytes. A metagraph converts thousands of keys, and the
/// general-purpose encoder's per-digit big-number division dominated that; dividing by 58⁵ over
/// 32-bit limbs does five digits per pass. Checked against `bs58` by a property test.
fn base58(input: &[u8]) -> String {
    debug_assert!(input.len() <= 40);
    let mut padded = [0u8; 40];
    let offset = 40 - input.len();
    padded[offset..].copy_from_slice(input);
    let mut limbs = [0u32; 10];
    for (i, l) in limbs.iter_mut().enumerate() {
        *l = u32::from_be_bytes([padded[4 * i], padded[4 * i + 1], padded[4 * i + 2], padded[4 * i + 3]]);
    }
    let mut digits = [0u8; 60];
    let mut pos = digits.len();
    let mut start = limbs.iter().position(|l| *l != 0).unwrap_or(limbs.len());
    while start < limbs.len() {
        let mut rem = 0u64;
        for l in &mut limbs[start..] {
            let cur = (rem << 32) | u64::from(*l);
            *l = (cur / BASE58_CHUNK) as u32;
            rem = cur % BASE58_CHUNK;
        }
        while start < limbs.len() && limbs[start] == 0 {
            start += 1;
        }
        for _ in 0..5 {
            pos -= 1;
            digits[pos] = BASE58_ALPHABET[(rem % 58) as usize];
            rem /= 58;
        }
    }
    while pos < digits.len() && digits[pos] == b'1' {
        pos += 1;
    }
    let zeros = input.iter().take_while(|b| **b == 0).count();
    let mut out = String::with_capacity(zeros + digits.len() - pos);
    out.extend(std::iter::repeat_n('1', zeros));
    out.extend(digits[pos..].iter().map(|b| char::from(*b)));
    out
}

fn ss58_checksum(data: &[u8]) -> [u8; 64] {
    let mut h = Blake2b512::new();
    h.update(b"SS58PRE");
    h.update(data);
    h.finalize().into()
}

/// A 64-byte sr25519 signature; rendered as `0x` + 128 lowercase hex characters on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    pub fn to_hex(&self) -> String {
        format!("0x{}", hex::encode(self.0))
    }

    /// Parses the wire form. Like the SDK's verifier, the `0x` prefix is required.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        if !s.starts_with("0x") {
            return Err(KeyError::InvalidSignature("a signature must be hex starting with 0x".into()));
        }
        decode_hex_fixed::<64>(s, "signature").map(Self).map_err(|e| KeyError::InvalidSignature(e.to_string()))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

/// An sr25519 keypair with the secret forms it was made from (for writing keyfiles).
pub struct Keypair {
    pair: schnorrkel::Keypair,
    /// The 32-byte mini secret (`secretSeed`), when known.
    seed: Option<Zeroizing<[u8; 32]>>,
    /// The mnemonic (`secretPhrase`), when the key came from one.
    mnemonic: Option<Zeroizing<String>>,
}

impl Keypair {
    /// From a BIP39 English mnemonic (checksum enforced), substrate-bip39 derivation, no password.
    pub fn from_mnemonic(phrase: &str) -> Result<Self, KeyError> {
        let normalized = phrase.split_whitespace().collect::<Vec<_>>().join(" ");
        let mnemonic = bip39::Mnemonic::parse_in(bip39::Language::English, &normalized)
            .map_err(|e| KeyError::InvalidMnemonic(e.to_string()))?;
        let (entropy, len) = mnemonic.to_entropy_array();
        let mini = substrate_bip39::mini_secret_from_entropy(&entropy[..len], "")
            .map_err(|e| KeyError::InvalidMnemonic(format!("{e:?}")))?;
        let mut kp = Self::from_mini(mini);
        kp.mnemonic = Some(Zeroizing::new(normalized));
        Ok(kp)
    }

    /// A new random key with a fresh mnemonic of `words` words (12, 15, 18, 21 or 24).
    pub fn generate(words: usize) -> Result<Self, KeyError> {
        let entropy_len = match words {
            12 => 16,
            15 => 20,
            18 => 24,
            21 => 28,
            24 => 32,
            _ => return Err(KeyError::InvalidMnemonic(format!("{words} words requested; use 12, 15, 18, 21 or 24"))),
        };
        let mut entropy = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut entropy[..entropy_len]);
        let mnemonic = bip39::Mnemonic::from_entropy(&entropy[..entropy_len])
            .map_err(|e| KeyError::InvalidMnemonic(e.to_string()))?;
        Self::from_mnemonic(&mnemonic.to_string())
    }

    /// From a 32-byte mini secret (a keyfile's `secretSeed`).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, KeyError> {
        let mini = MiniSecretKey::from_bytes(seed)
            .map_err(|e| KeyError::InvalidKeyBytes { what: "secret seed", reason: e.to_string() })?;
        Ok(Self::from_mini(mini))
    }

    /// From the 64-byte expanded secret (a keyfile's `privateKey`: scalar ‖ nonce).
    pub fn from_private_key(bytes: &[u8; 64]) -> Result<Self, KeyError> {
        let secret = SecretKey::from_bytes(bytes)
            .map_err(|e| KeyError::InvalidKeyBytes { what: "private key", reason: e.to_string() })?;
        Ok(Self { pair: secret.to_keypair(), seed: None, mnemonic: None })
    }

    fn from_mini(mini: MiniSecretKey) -> Self {
        let pair = mini.expand_to_keypair(ExpansionMode::Ed25519);
        let seed = Zeroizing::new(mini.to_bytes());
        Self { pair, seed: Some(seed), mnemonic: None }
    }

    pub fn account_id(&self) -> AccountId {
        AccountId(self.pair.public.to_bytes())
    }

    pub fn ss58(&self) -> String {
        self.account_id().to_ss58()
    }

    /// Signs raw bytes (the SDK's `Keypair.sign(str)` signs the UTF-8 bytes).
    pub fn sign(&self, message: &[u8]) -> Signature {
        let sig = self.pair.sign_simple(SIGNING_CONTEXT, message);
        Signature(sig.to_bytes())
    }

    /// The 64-byte expanded secret, for writing keyfiles.
    pub fn private_key_bytes(&self) -> Zeroizing<[u8; 64]> {
        Zeroizing::new(self.pair.secret.to_bytes())
    }

    pub fn seed_bytes(&self) -> Option<&[u8; 32]> {
        self.seed.as_deref()
    }

    pub fn mnemonic(&self) -> Option<&str> {
        self.mnemonic.as_deref().map(String::as_str)
    }
}

impl Clone for Keypair {
    fn clone(&self) -> Self {
        Self { pair: self.pair.clone(), seed: self.seed.clone(), mnemonic: self.mnemonic.clone() }
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair").field("ss58", &self.ss58()).field("secret", &"<redacted>").finish()
    }
}

fn decode_hex_fixed<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], KeyError> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out)
        .map_err(|e| KeyError::InvalidKeyBytes { what, reason: format!("expected {N} bytes of hex ({e})") })?;
    Ok(out)
}

fn truncate_for_error(s: &str) -> String {
    if s.chars().count() > 64 {
        format!("{}…", s.chars().take(64).collect::<String>())
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALICE_SS58: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";

    #[test]
    fn ss58_known_address_round_trips() {
        let id = AccountId::from_ss58(ALICE_SS58).expect("valid");
        assert_eq!(id.to_hex(), "0xd43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d");
        assert_eq!(id.to_ss58(), ALICE_SS58);
    }

    #[test]
    fn ss58_rejects_bad_checksum_and_prefix() {
        let mut bad = ALICE_SS58.to_owned();
        bad.replace_range(10..11, "A");
        assert!(matches!(AccountId::from_ss58(&bad), Err(KeyError::InvalidSs58 { .. })));
        // Polkadot (prefix 0) form of Alice.
        let dot = "15oF4uVJwmo4TdGW7VfQxNLavjCXviqxT9S1MgbjMNHr6Sp5";
        assert!(matches!(AccountId::from_ss58(dot), Err(KeyError::WrongSs58Prefix { prefix: 0, .. })));
        assert!(AccountId::from_ss58("").is_err());
        assert!(AccountId::from_ss58("0OIl").is_err());
    }

    #[test]
    fn mnemonic_checksum_enforced() {
        let err =
            Keypair::from_mnemonic("tray obvious love transfer liberty push swallow light random vacant evoke evoke")
                .unwrap_err();
        assert!(matches!(err, KeyError::InvalidMnemonic(_)));
    }

    #[test]
    fn debug_redacts_secret() {
        let kp = Keypair::generate(12).expect("generate");
        let dbg = format!("{kp:?}");
        assert!(dbg.contains("redacted"));
        assert!(!dbg.contains(kp.mnemonic().expect("mnemonic").split(' ').next().expect("word")));
    }

    #[test]
    fn signature_requires_0x() {
        let kp = Keypair::generate(12).expect("generate");
        let sig = kp.sign(b"m");
        let bare = sig.to_hex()[2..].to_owned();
        assert!(Signature::from_hex(&bare).is_err());
        assert_eq!(Signature::from_hex(&sig.to_hex()).expect("parse"), sig);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn ss58_round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
            let id = AccountId(bytes);
            let s = id.to_ss58();
            prop_assert!(s.starts_with('5'));
            prop_assert_eq!(s.len(), 48);
            prop_assert_eq!(AccountId::from_ss58(&s).expect("decode"), id);
        }

        #[test]
        fn sign_verify_round_trip(seed in proptest::array::uniform32(any::<u8>()), msg in proptest::collection::vec(any::<u8>(), 0..256)) {
            let kp = Keypair::from_seed(&seed).expect("seed");
            let sig = kp.sign(&msg);
            prop_assert!(sig.0[63] & 0x80 != 0, "schnorrkel marker bit");
            prop_assert!(kp.account_id().verify(&msg, &sig));
            let mut other = msg.clone();
            other.push(1);
            prop_assert!(!kp.account_id().verify(&other, &sig));
        }

        #[test]
        fn base58_matches_bs58(bytes in proptest::collection::vec(any::<u8>(), 0..=40), zeros in 0usize..4) {
            let mut input = vec![0u8; zeros.min(40 - bytes.len().min(40))];
            input.extend_from_slice(&bytes[..bytes.len().min(40 - input.len())]);
            prop_assert_eq!(base58(&input), bs58::encode(&input).into_string());
        }

        #[test]
        fn ss58_decode_never_panics(s in "\\PC{0,80}") {
            let _ = AccountId::from_ss58(&s);
        }
    }
}
