//! A real btcli wallet (bittensor-wallet 3.0.3) loads with its password and yields the
//! recorded addresses and keys; keys agree with an independent implementation (subxt-signer);
//! SS58 agrees with the SDK's vectors; bad input gives errors that name the file.

use bittensor::keys::{AccountId, Keypair, Signature};
use bittensor::wallet::{keyfile, FixedPassword, KeyfileError, NoPassword, SecretString, Wallet, WalletError};
use serde_json::Value;

use crate::util::fixtures;

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("wallet/expected.json")).expect("expected"))
        .expect("json")
}

fn fixture_wallet() -> Wallet {
    Wallet::new(fixtures().join("wallet"), "testwallet", "testhotkey")
}

fn password() -> FixedPassword {
    FixedPassword(SecretString::from(expected()["password"].as_str().expect("pw").to_owned()))
}

#[test]
fn real_btcli_wallet_loads() {
    let exp = expected();
    let w = fixture_wallet();
    let hot = w.hotkey(&NoPassword).expect("plaintext hotkey needs no password");
    assert_eq!(hot.ss58(), exp["hotkey"]["ss58"]);
    assert_eq!(hot.account_id().to_hex(), exp["hotkey"]["public_key"]);
    assert_eq!(w.hotkey_public().expect("pub").to_ss58(), exp["hotkey"]["ss58"]);
    assert_eq!(w.coldkeypub().expect("coldkeypub").to_ss58(), exp["coldkey"]["ss58"]);

    let cold = w.coldkey(&password()).expect("decrypts with the fixture password");
    assert_eq!(cold.ss58(), exp["coldkey"]["ss58"]);
    let dec = &exp["coldkey"]["decrypted_keyfile_json"];
    assert_eq!(format!("0x{}", hex::encode(cold.private_key_bytes().as_slice())), dec["privateKey"]);
    assert_eq!(format!("0x{}", hex::encode(cold.seed_bytes().expect("seed"))), dec["secretSeed"]);

    let sample = &exp["sample_signature"];
    let sig = Signature::from_hex(sample["signature_hex"].as_str().expect("sig")).expect("hex");
    assert!(hot.account_id().verify(sample["message_utf8"].as_str().expect("msg").as_bytes(), &sig));
    assert!(!hot.account_id().verify(b"another message", &sig));
}

#[test]
fn wrong_password_names_the_file() {
    let w = fixture_wallet();
    let err = w.coldkey(&FixedPassword(SecretString::from("not-the-password".to_owned()))).unwrap_err();
    match err {
        WalletError::Keyfile(KeyfileError::WrongPassword { path }) => assert!(path.ends_with("testwallet/coldkey")),
        other => panic!("expected WrongPassword, got {other}"),
    }
    assert!(w.coldkey(&NoPassword).is_err(), "no password source, no decryption");
}

#[test]
fn missing_and_corrupt_files_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let w = Wallet::new(dir.path(), "nope", "default");
    let msg = w.hotkey(&NoPassword).unwrap_err().to_string();
    assert!(msg.contains("wallet 'nope' not found") && msg.contains("nicompute wallet create"), "{msg}");

    let w = Wallet::new(dir.path(), "broken", "default");
    std::fs::create_dir_all(w.hotkey_path().parent().expect("dir")).expect("mkdir");
    std::fs::write(w.hotkey_path(), b"{not json").expect("write");
    let msg = w.hotkey(&NoPassword).unwrap_err().to_string();
    assert!(msg.contains("is corrupt") && msg.contains("hotkeys/default"), "{msg}");

    std::fs::write(w.hotkey_path(), br#"{"secretPhrase": "one two three"}"#).expect("write");
    let msg = w.hotkey(&NoPassword).unwrap_err().to_string();
    assert!(msg.contains("invalid mnemonic"), "{msg}");

    let missing = Wallet::new(dir.path(), "broken", "other").hotkey(&NoPassword).unwrap_err().to_string();
    assert!(missing.contains("does not exist"), "{missing}");
}

#[test]
fn created_wallet_round_trips_with_files_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let w = Wallet::new(dir.path(), "mine", "hk");
    let pw = FixedPassword(SecretString::from("correct horse".to_owned()));
    let created = w.create(12, Some(&pw)).expect("create");
    let cold = created.coldkey.expect("coldkey made");
    let hot = created.hotkey.expect("hotkey made");
    for p in [w.coldkey_path(), w.coldkeypub_path(), w.hotkey_path(), w.hotkeypub_path()] {
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    assert!(keyfile::is_encrypted(&std::fs::read(w.coldkey_path()).expect("read")));
    assert_eq!(w.coldkey(&pw).expect("decrypt").ss58(), cold.ss58());
    assert_eq!(w.hotkey(&NoPassword).expect("hotkey").ss58(), hot.ss58());
    // Never overwrites.
    assert!(matches!(w.create(12, Some(&pw)), Err(WalletError::Exists { .. })));
}

#[test]
fn keys_agree_with_subxt_signer() {
    for name in ["axon_hotkey", "dendrite_hotkey", "denied_hotkey", "axon_coldkey"] {
        let phrase = crate::util::keys()[name]["mnemonic"].as_str().expect("m").to_owned();
        let ours = Keypair::from_mnemonic(&phrase).expect("ours");
        let mnemonic = bip39::Mnemonic::parse(&phrase).expect("bip39");
        let theirs = subxt_signer::sr25519::Keypair::from_phrase(&mnemonic, None).expect("theirs");
        assert_eq!(ours.account_id().0, theirs.public_key().0, "{name}: public key");
        assert_eq!(ours.ss58(), crate::util::keys()[name]["ss58"], "{name}: ss58");
        let msg = b"1795527407825162433.5Ehv.5GjR.uuid.a7ff";
        let their_sig = theirs.sign(msg);
        assert!(ours.account_id().verify(msg, &Signature(their_sig.0)), "{name}: we verify theirs");
        let our_sig = ours.sign(msg);
        assert!(
            subxt_signer::sr25519::verify(&subxt_signer::sr25519::Signature(our_sig.0), msg, &theirs.public_key()),
            "{name}: they verify ours"
        );
    }
}

#[test]
fn bytes_wrapped_signatures_verify() {
    let k = Keypair::generate(12).expect("gen");
    let sig = k.sign(b"<Bytes>payload</Bytes>");
    assert!(k.account_id().verify(b"payload", &sig));
}

#[test]
fn ss58_matches_the_sdk_vectors() {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("keys/ss58_vectors.json")).expect("vectors"))
            .expect("json");
    let vectors = doc["vectors"].as_array().expect("vectors");
    assert!(vectors.len() >= 10);
    for v in vectors {
        let id = AccountId::from_hex(v["account_id_hex"].as_str().expect("hex")).expect("id");
        assert_eq!(id.to_ss58(), v["ss58"].as_str().expect("ss58"));
        assert_eq!(AccountId::from_ss58(v["ss58"].as_str().expect("ss58")).expect("decode"), id);
    }
}
