//! The RSA envelope SN27 uses to hand allocation credentials back to the requester.
//!
//! The requester generates a fresh RSA-2048 key per allocation and sends the public half
//! (SubjectPublicKeyInfo PEM) in `Allocate.public_key`; the miner answers with
//! `info = base64(RSA-OAEP-SHA256(json.dumps({"username", "password", "port", "version"})))`
//! and keeps `base64(public PEM)` as the allocation key, the capability that later lets the same
//! requester deallocate. This module reproduces that scheme byte for byte as the subnet's
//! `neurons/RSAEncryption.py` (python `cryptography`) does it: OAEP with SHA-256 and MGF1-SHA-256,
//! empty label, standard base64 with padding, PEM with LF line endings and a trailing newline.
//!
//! Two libraries, each where it is strongest:
//! - the requester's private key lives in AWS-LC (`aws-lc-rs`): key generation and OAEP
//!   decryption are constant-time there (the `rsa` crate's private-key operation is not,
//!   RUSTSEC-2023-0071 "Marvin"), and its key generation is three to four times as fast here;
//! - public keys, the miner's encryption and PEM parsing stay with the `rsa` crate, which
//!   handles no secret and reads every PEM form SN27's Python accepts.

use std::fmt;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::der::pem;
use rsa::pkcs8::der::zeroize::Zeroizing;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, LineEnding};
use rsa::rand_core::OsRng;
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

pub mod credentials;
mod reserve;

pub use self::credentials::{Credentials, CredentialsVersion, MAX_PASSWORD};
pub use self::reserve::KeyReserve;

/// Bits of the keys SN27's requesters generate.
pub const KEY_BITS: usize = 2048;
/// Smallest key this module accepts: SN27 uses 2048; anything smaller is refused.
pub const MIN_KEY_BITS: usize = 2048;
/// Largest key this module accepts (bounds the cost of key operations on untrusted input).
pub const MAX_KEY_BITS: usize = 4096;
/// Size of a SHA-256 digest; OAEP spends two of them plus two bytes of each block.
const HASH_LEN: usize = 32;

/// Why an RSA envelope operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("not a valid RSA {kind} key PEM: {reason}")]
    MalformedPem { kind: &'static str, reason: String },
    #[error("the RSA key is {bits} bits; SN27 credentials need a key of {MIN_KEY_BITS} to {MAX_KEY_BITS} bits")]
    WrongKeySize { bits: usize },
    #[error("the encrypted credentials are not valid standard base64: {0}")]
    BadBase64(String),
    #[error("the encrypted credentials are {len} bytes; a {bits}-bit key decrypts blocks of exactly {expected} bytes")]
    WrongCiphertextLength { len: usize, bits: usize, expected: usize },
    #[error("the credentials were not encrypted for this key")]
    NotForThisKey,
    #[error("plaintext too long: {len} bytes, at most {max} fit in RSA-OAEP-SHA256 with a {bits}-bit key")]
    PlaintextTooLong { len: usize, max: usize, bits: usize },
    #[error("the decrypted credentials are not SN27's credentials JSON: {0}")]
    MalformedCredentials(String),
    #[error("RSA key generation failed: {0}")]
    KeyGeneration(String),
    #[error("RSA encryption failed: {0}")]
    Encryption(String),
    #[error("encoding the RSA key as PEM failed: {0}")]
    Encoding(String),
}

/// Largest plaintext RSA-OAEP-SHA256 can carry with a modulus of `modulus_bytes` bytes.
pub fn max_plaintext_len(modulus_bytes: usize) -> usize {
    modulus_bytes.saturating_sub(2 * HASH_LEN + 2)
}

fn check_size(bits: usize) -> Result<(), CryptoError> {
    if (MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(CryptoError::WrongKeySize { bits })
    }
}

fn oaep() -> Oaep {
    // `Oaep::new::<Sha256>()` uses the same digest for MGF1 and an empty label, which is what
    // `padding.OAEP(mgf=MGF1(SHA256()), algorithm=SHA256(), label=None)` means in Python.
    Oaep::new::<Sha256>()
}

/// Parses a public key PEM: SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`, what SN27 sends) or
/// PKCS#1 (`BEGIN RSA PUBLIC KEY`, which Python's `load_pem_public_key` accepts too).
pub fn parse_public_pem(pem: &str) -> Result<RsaPublicKey, CryptoError> {
    let pem = pem.trim();
    let key = if pem.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        RsaPublicKey::from_pkcs1_pem(pem).map_err(|e| malformed("public", e))?
    } else if pem.starts_with("-----BEGIN PUBLIC KEY-----") {
        RsaPublicKey::from_public_key_pem(pem).map_err(|e| malformed("public", e))?
    } else {
        return Err(CryptoError::MalformedPem {
            kind: "public",
            reason: "expected a \"-----BEGIN PUBLIC KEY-----\" block".into(),
        });
    };
    check_size(key.size() * 8)?;
    Ok(key)
}

fn malformed(kind: &'static str, e: impl fmt::Display) -> CryptoError {
    CryptoError::MalformedPem { kind, reason: e.to_string() }
}

/// Encrypts `plaintext` to `public_pem` as SN27 does: RSA-OAEP-SHA256, standard base64.
pub fn encrypt_b64(public_pem: &str, plaintext: &[u8]) -> Result<String, CryptoError> {
    let key = parse_public_pem(public_pem)?;
    let max = max_plaintext_len(key.size());
    if plaintext.len() > max {
        return Err(CryptoError::PlaintextTooLong { len: plaintext.len(), max, bits: key.size() * 8 });
    }
    let ciphertext = key.encrypt(&mut OsRng, oaep(), plaintext).map_err(|e| CryptoError::Encryption(e.to_string()))?;
    Ok(B64.encode(ciphertext))
}

/// The allocation key as the SN27 miner stores it: base64 of the public PEM's bytes.
pub fn allocation_key_b64(public_pem: &str) -> String {
    B64.encode(public_pem.as_bytes())
}

/// A requester's per-allocation RSA private key. Generated fresh for each allocation; its
/// public PEM goes to the miner, which encrypts the credentials to it. The key lives in AWS-LC
/// memory, which is wiped when the last clone is dropped.
#[derive(Clone)]
pub struct AllocationKey {
    key: PrivateDecryptingKey,
}

impl fmt::Debug for AllocationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllocationKey").field("bits", &self.bits()).finish_non_exhaustive()
    }
}

impl AllocationKey {
    /// A fresh RSA-2048 key (e = 65537) made by AWS-LC, in constant time, from the operating
    /// system's random source. It takes tens of milliseconds and varies widely from key to key;
    /// [`KeyReserve`] takes it off an allocation's critical path.
    pub fn generate() -> Result<Self, CryptoError> {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048)
            .map_err(|_| CryptoError::KeyGeneration("AWS-LC could not make an RSA-2048 key".into()))?;
        Ok(Self { key })
    }

    /// Loads a private key PEM: PKCS#8 (`BEGIN PRIVATE KEY`, what SN27 writes) or PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`). Encrypted PEMs are not supported.
    pub fn from_private_pem(pem: &str) -> Result<Self, CryptoError> {
        let pem = pem.trim();
        // `rsa` reads both forms and says what is wrong with a bad one; AWS-LC gets PKCS#8.
        let parsed = if pem.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
            RsaPrivateKey::from_pkcs1_pem(pem).map_err(|e| malformed("private", e))?
        } else if pem.starts_with("-----BEGIN PRIVATE KEY-----") {
            RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| malformed("private", e))?
        } else {
            return Err(CryptoError::MalformedPem {
                kind: "private",
                reason: "expected an unencrypted \"-----BEGIN PRIVATE KEY-----\" block".into(),
            });
        };
        check_size(parsed.size() * 8)?;
        let der = parsed.to_pkcs8_der().map_err(|e| CryptoError::Encoding(e.to_string()))?;
        let key = PrivateDecryptingKey::from_pkcs8(der.as_bytes()).map_err(|e| malformed("private", e))?;
        Ok(Self { key })
    }

    /// Key size in bits.
    pub fn bits(&self) -> usize {
        self.key.key_size_bits()
    }

    /// The public key as SubjectPublicKeyInfo PEM, LF line endings, 64-character lines and a
    /// trailing newline: the bytes Python `cryptography` produces with
    /// `public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)`.
    pub fn public_pem(&self) -> Result<String, CryptoError> {
        let der = self
            .key
            .public_key()
            .as_der()
            .map_err(|_| CryptoError::Encoding("AWS-LC could not encode the public key".into()))?;
        pem::encode_string("PUBLIC KEY", LineEnding::LF, der.as_ref()).map_err(|e| CryptoError::Encoding(e.to_string()))
    }

    /// The private key as unencrypted PKCS#8 PEM (`BEGIN PRIVATE KEY`), wiped from memory on drop.
    pub fn private_pem(&self) -> Result<Zeroizing<String>, CryptoError> {
        let der =
            self.key.as_der().map_err(|_| CryptoError::Encoding("AWS-LC could not encode the private key".into()))?;
        let der = Zeroizing::new(der.as_ref().to_vec());
        pem::encode_string("PRIVATE KEY", LineEnding::LF, &der)
            .map(Zeroizing::new)
            .map_err(|e| CryptoError::Encoding(e.to_string()))
    }

    /// Decrypts a base64 RSA-OAEP-SHA256 ciphertext (a miner's `info`) to its plaintext bytes.
    pub fn decrypt_b64(&self, ciphertext_b64: &str) -> Result<Vec<u8>, CryptoError> {
        let ciphertext = B64.decode(ciphertext_b64.trim()).map_err(|e| CryptoError::BadBase64(e.to_string()))?;
        let expected = self.key.key_size_bytes();
        if ciphertext.len() != expected {
            return Err(CryptoError::WrongCiphertextLength { len: ciphertext.len(), bits: self.bits(), expected });
        }
        let oaep = OaepPrivateDecryptingKey::new(self.key.clone()).map_err(|_| CryptoError::NotForThisKey)?;
        let mut out = Zeroizing::new(vec![0u8; oaep.min_output_size()]);
        let plain = oaep
            .decrypt(&OAEP_SHA256_MGF1SHA256, &ciphertext, &mut out, None)
            .map_err(|_| CryptoError::NotForThisKey)?;
        Ok(plain.to_vec())
    }

    /// Decrypts and parses a miner's `info` field.
    pub fn decrypt_credentials(&self, info_b64: &str) -> Result<Credentials, CryptoError> {
        let plaintext = Zeroizing::new(self.decrypt_b64(info_b64)?);
        Credentials::from_json(&plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
    use rsa::BigUint;
    use secrecy::{ExposeSecret, SecretString};
    use std::path::PathBuf;

    fn fixture(name: &str) -> String {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rsa").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn fixture_key() -> AllocationKey {
        AllocationKey::from_private_pem(&fixture("private.pem")).unwrap()
    }

    #[test]
    fn decrypts_python_ciphertexts_to_the_exact_plaintext() {
        let key = fixture_key();
        let plaintext = fixture("plaintext.json");
        for name in ["ciphertext.b64", "ciphertext2.b64"] {
            let got = key.decrypt_b64(&fixture(name)).unwrap();
            assert_eq!(got, plaintext.as_bytes(), "{name}");
        }
    }

    #[test]
    fn python_credentials_parse_and_render_back_byte_for_byte() {
        let key = fixture_key();
        let creds = key.decrypt_credentials(&fixture("ciphertext.b64")).unwrap();
        assert_eq!(creds.username, "root");
        assert_eq!(creds.password.expose_secret(), "peer-fixed-password");
        assert_eq!(creds.port, 4444);
        assert_eq!(creds.version, CredentialsVersion::Number(183));
        assert_eq!(creds.to_json().as_slice(), fixture("plaintext.json").as_bytes());
    }

    #[test]
    fn our_encryption_to_the_fixture_key_decrypts() {
        let public = fixture("public.pem");
        let key = fixture_key();
        let a = encrypt_b64(&public, b"hello").unwrap();
        let b = encrypt_b64(&public, b"hello").unwrap();
        assert_ne!(a, b, "OAEP is randomized");
        assert_eq!(key.decrypt_b64(&a).unwrap(), b"hello");
        assert_eq!(B64.decode(&a).unwrap().len(), 256);

        let creds = Credentials {
            username: "root".into(),
            password: SecretString::from("pässwörd \"quoted\""),
            port: 4444,
            version: CredentialsVersion::Number(183),
            external_user_ports: None,
        };
        let info = creds.encrypt_for(&public).unwrap();
        assert_eq!(key.decrypt_credentials(&info).unwrap(), creds);
        // ensure_ascii, as json.dumps does by default.
        let json = String::from_utf8(creds.to_json().to_vec()).unwrap();
        assert_eq!(
            json,
            r#"{"username": "root", "password": "p\u00e4ssw\u00f6rd \"quoted\"", "port": 4444, "version": 183}"#
        );
    }

    #[test]
    fn generated_key_pems_have_pythons_shape() {
        let key = AllocationKey::generate().unwrap();
        assert_eq!(key.bits(), 2048);
        let public = key.public_pem().unwrap();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(public.ends_with("\n-----END PUBLIC KEY-----\n"));
        assert!(!public.contains('\r'));
        let body: Vec<&str> = public.lines().filter(|l| !l.starts_with("-----")).collect();
        let (last, full) = body.split_last().unwrap();
        assert!(full.iter().all(|l| l.len() == 64), "{public}");
        assert!(!last.is_empty() && last.len() <= 64);
        // Same layout as the Python fixture: 7 lines of body for a 2048-bit SPKI.
        let fixture_public = fixture("public.pem");
        assert_eq!(public.lines().count(), fixture_public.lines().count());
        let parsed = parse_public_pem(&public).unwrap();
        assert_eq!(parsed.e(), &BigUint::from(65537u32));

        let private = key.private_pem().unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(private.ends_with("-----END PRIVATE KEY-----\n"));
        let reloaded = AllocationKey::from_private_pem(&private).unwrap();
        assert_eq!(reloaded.public_pem().unwrap(), public);

        let ct = encrypt_b64(&public, b"x").unwrap();
        assert_eq!(reloaded.decrypt_b64(&ct).unwrap(), b"x");
    }

    #[test]
    fn fixture_public_pem_round_trips_through_our_encoder() {
        let key = fixture_key();
        assert_eq!(key.public_pem().unwrap(), fixture("public.pem"));
    }

    #[test]
    fn allocation_key_matches_the_miners_file() {
        let got = allocation_key_b64(&fixture("public.pem"));
        assert_eq!(got, fixture("allocation_key.b64").trim());
    }

    #[test]
    fn tampered_or_foreign_ciphertext_fails() {
        let key = fixture_key();
        let mut ct = B64.decode(fixture("ciphertext.b64").trim()).unwrap();
        ct[100] ^= 1;
        assert!(matches!(key.decrypt_b64(&B64.encode(&ct)), Err(CryptoError::NotForThisKey)));

        let other = AllocationKey::generate().unwrap();
        let err = other.decrypt_b64(&fixture("ciphertext.b64")).unwrap_err();
        assert_eq!(err.to_string(), "the credentials were not encrypted for this key");

        assert!(matches!(key.decrypt_b64("not base64!"), Err(CryptoError::BadBase64(_))));
        assert!(matches!(
            key.decrypt_b64(&B64.encode([0u8; 10])),
            Err(CryptoError::WrongCiphertextLength { len: 10, expected: 256, .. })
        ));
        // Valid JSON-free plaintext is rejected as credentials.
        let ct = encrypt_b64(&fixture("public.pem"), b"[1, 2]").unwrap();
        assert!(matches!(key.decrypt_credentials(&ct), Err(CryptoError::MalformedCredentials(_))));
    }

    #[test]
    fn plaintext_limit_is_190_bytes_for_2048_bits() {
        let public = fixture("public.pem");
        assert_eq!(max_plaintext_len(256), 190);
        let ct = encrypt_b64(&public, &[b'a'; 190]).unwrap();
        assert_eq!(fixture_key().decrypt_b64(&ct).unwrap(), vec![b'a'; 190]);
        let err = encrypt_b64(&public, &[b'a'; 191]).unwrap_err();
        assert!(matches!(err, CryptoError::PlaintextTooLong { len: 191, max: 190, bits: 2048 }));
        assert_eq!(
            err.to_string(),
            "plaintext too long: 191 bytes, at most 190 fit in RSA-OAEP-SHA256 with a 2048-bit key"
        );
    }

    #[test]
    fn key_size_and_pem_errors_are_clear() {
        let small = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        let small_pem = small.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
        let err = encrypt_b64(&small_pem, b"x").unwrap_err();
        assert!(matches!(err, CryptoError::WrongKeySize { bits: 1024 }));
        assert!(err.to_string().contains("1024 bits"));
        let small_private = small.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert!(matches!(AllocationKey::from_private_pem(&small_private), Err(CryptoError::WrongKeySize { .. })));

        let err = encrypt_b64("hello", b"x").unwrap_err();
        assert!(matches!(err, CryptoError::MalformedPem { kind: "public", .. }));
        let garbled = fixture("public.pem").replace("MIIB", "MIIC");
        assert!(matches!(encrypt_b64(&garbled, b"x"), Err(CryptoError::MalformedPem { .. })));
        assert!(matches!(
            AllocationKey::from_private_pem(&fixture("public.pem")),
            Err(CryptoError::MalformedPem { .. })
        ));

        // PKCS#1 public keys are accepted, like Python's load_pem_public_key does.
        let key = fixture_key();
        let pkcs1 = rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_pem(
            &parse_public_pem(&key.public_pem().unwrap()).unwrap(),
            LineEnding::LF,
        )
        .unwrap();
        let ct = encrypt_b64(&pkcs1, b"pkcs1").unwrap();
        assert_eq!(key.decrypt_b64(&ct).unwrap(), b"pkcs1");
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let key = fixture_key();
        let dbg = format!("{key:?}");
        assert_eq!(dbg, "AllocationKey { bits: 2048, .. }");
        let creds = Credentials {
            username: "root".into(),
            password: SecretString::from("hunter2"),
            port: 1,
            version: "x".into(),
            external_user_ports: None,
        };
        let dbg = format!("{creds:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("[REDACTED]"));
    }

    #[test]
    fn credentials_parsing_is_tolerant_of_extra_keys_and_string_versions() {
        let c =
            Credentials::from_json(br#"{"username":"u","password":"p","port":"22","version":"1.8.3","x":1}"#).unwrap();
        assert_eq!(c.port, 22);
        assert_eq!(c.version, CredentialsVersion::Text("1.8.3".into()));
        assert_eq!(c.version.to_string(), "1.8.3");
        assert!(Credentials::from_json(br#"{"username":"u","password":"p","port":70000,"version":1}"#).is_err());
        assert!(Credentials::from_json(br#"{"username":"u","port":1,"version":1}"#).is_err());
    }

    /// Interop with Python `cryptography` (the subnet's pinned 43.0.1) when the peer venv exists.
    #[test]
    fn python_peer_decrypts_ours_and_we_decrypt_its() {
        let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/python-peers/bt9.0.0/bin/python");
        if !python.exists() {
            assert!(
                std::env::var("NICOMPUTE_REQUIRE_PEERS").is_err(),
                "Python peer missing at {} (scripts/python-peers.sh)",
                python.display()
            );
            eprintln!("skipped: no Python peer at {}", python.display());
            return;
        }
        let key = AllocationKey::generate().unwrap();
        let public = key.public_pem().unwrap();
        let private = key.private_pem().unwrap();
        let creds = Credentials {
            username: "root".into(),
            password: SecretString::from("Zx9QwErTy1"),
            port: 4444,
            version: CredentialsVersion::Number(183),
            external_user_ports: None,
        };
        let ours = creds.encrypt_for(&public).unwrap();
        let script = r#"
import base64, json, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
private_pem, public_pem, ours = sys.argv[1].encode(), sys.argv[2].encode(), sys.argv[3]
pad = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
priv = serialization.load_pem_private_key(private_pem, password=None)
assert priv.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo) == public_pem
sys.stdout.write(priv.decrypt(base64.b64decode(ours), pad).decode() + "\n")
info = json.dumps({"username": "root", "password": "py-pass", "port": 4444, "version": 183})
pub = serialization.load_pem_public_key(public_pem)
sys.stdout.write(base64.b64encode(pub.encrypt(info.encode(), pad)).decode() + "\n")
"#;
        let out = std::process::Command::new(&python)
            .args(["-c", script, private.as_str(), public.as_str(), ours.as_str()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let mut lines = stdout.lines();
        assert_eq!(lines.next().unwrap().as_bytes(), creds.to_json().as_slice());
        let theirs = key.decrypt_credentials(lines.next().unwrap()).unwrap();
        assert_eq!(theirs.password.expose_secret(), "py-pass");
        assert_eq!(theirs.port, 4444);
    }
}
