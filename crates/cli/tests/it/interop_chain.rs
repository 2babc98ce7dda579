//! Our extrinsic signing payload against the real SDK's, byte for byte, offline: bittensor 9.0.0's
//! substrate layer (`compose_call` + `generate_signature_payload`) and ours are given the same
//! runtime metadata (finney's spec 343 and the RAO runtime's spec 218), call, nonce, era, tip,
//! genesis and birth hashes. Our sr25519 signature over our payload is random, so the SDK's Keypair
//! verifies it over the SDK's payload instead of comparing bytes.

use std::io::Write;
use std::process::Stdio;

use bittensor::extrinsic::{extensions, signed, Call, Era, ExtensionParams, Metadata, SigningPayload};
use bittensor::subtensor::calls;
use bittensor::{AccountId, Keypair};
use serde_json::{json, Value};

use crate::peers::{python, root, script};

fn metadata(file: &str) -> Metadata {
    let text = std::fs::read_to_string(root().join("tests/fixtures/chain").join(file)).expect("metadata");
    Metadata::from_bytes(&hex::decode(text.trim().trim_start_matches("0x")).expect("hex")).expect("decodes")
}

fn sdk_payload(py: &std::path::Path, doc: &Value) -> Value {
    let mut child = crate::harness::command(py)
        .arg(script("signing_payload.py"))
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start signing_payload.py");
    child.stdin.take().expect("stdin").write_all(doc.to_string().as_bytes()).expect("write");
    let out = child.wait_with_output().expect("signing_payload.py");
    assert!(out.status.success(), "signing_payload.py failed");
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn hex0x(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

#[test]
fn signing_payload_equals_the_sdks_and_our_signature_verifies_there() {
    let Some(py) = python("9.0.0") else { return };
    let signer = Keypair::from_seed(&[42; 32]).expect("key");
    let dest = AccountId::from_ss58("5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty").expect("ss58");
    let ip: std::net::IpAddr = "1.2.3.4".parse().expect("ip");
    // (our call, the SDK's call)
    let cases: Vec<(Call, Value)> = vec![
        (
            calls::serve_axon(27, 10_002_000, ip, 8091),
            json!({"module": "SubtensorModule", "function": "serve_axon", "args": {"netuid": 27, "version": 10002000,
                "ip": 16909060, "port": 8091, "ip_type": 4, "protocol": 4, "placeholder1": 0, "placeholder2": 0}}),
        ),
        (
            calls::serve_prometheus(27, 221, ip, 7091),
            json!({"module": "SubtensorModule", "function": "serve_prometheus", "args": {"netuid": 27, "version": 221,
                "ip": 16909060, "port": 7091, "ip_type": 4}}),
        ),
        (
            calls::burned_register(1, &dest),
            json!({"module": "SubtensorModule", "function": "burned_register", "args": {"netuid": 1, "hotkey": dest.to_ss58()}}),
        ),
        (
            calls::add_stake(&dest, 1, 5_000_000_000),
            json!({"module": "SubtensorModule", "function": "add_stake", "args": {"hotkey": dest.to_ss58(), "netuid": 1,
                "amount_staked": 5_000_000_000u64}}),
        ),
        (
            calls::transfer_keep_alive(&dest, 123_456_789_000),
            json!({"module": "Balances", "function": "transfer_keep_alive", "args": {"dest": dest.to_ss58(),
                "value": 123_456_789_000u64}}),
        ),
        (
            // Over 256 bytes: both sides sign the blake2-256 hash.
            Call::new("System", "remark").arg("remark", scale_value::Value::from_bytes(vec![0x5a; 300])),
            json!({"module": "System", "function": "remark", "args": {"remark": format!("0x{}", "5a".repeat(300))}}),
        ),
    ];
    // (spec, metadata, era as (period, current block), nonce, tip)
    type Run = (u32, &'static str, Option<(u64, u64)>, u64, u128);
    let runs: [Run; 4] = [
        (343, "metadata_v14_spec343.hex", Some((64, 6_852_690)), 5, 0),
        (343, "metadata_v14_spec343.hex", None, 0, 1_000),
        (218, "metadata_v14_spec218.hex", Some((128, 77)), 12, 0),
        (218, "metadata_v14_spec218.hex", Some((64, 3)), 300, 7),
    ];
    let genesis = [0x4e; 32];
    let birth = [0xb1; 32];
    let mut ours_all = Vec::new();
    let mut docs = Vec::new();
    for (spec, file, era, nonce, tip) in runs {
        let md = metadata(file);
        for (ours, theirs) in &cases {
            let era_value = era.map(|(period, current)| Era::mortal(period, current)).unwrap_or(Era::Immortal);
            let params = ExtensionParams {
                spec_version: spec,
                transaction_version: 1,
                genesis_hash: genesis,
                era: era_value,
                era_birth_hash: if era.is_some() { birth } else { genesis },
                nonce,
                tip,
            };
            let call = ours.encode(&md).expect("call");
            let ext = extensions::encode(&md, &params).expect("extensions");
            let payload = SigningPayload::new(&call, &ext);
            let signature = signer.sign(&payload.0);
            let doc = json!({
                "metadata_hex": format!("tests/fixtures/chain/{file}"),
                "spec_version": spec, "transaction_version": 1,
                "genesis_hash": hex0x(&genesis), "block_hash": hex0x(if era.is_some() { &birth } else { &genesis }),
                "era": era.map(|(period, current)| json!({"period": period, "current": current})),
                "nonce": nonce, "tip": tip as u64, "call": theirs,
                "verify": {"ss58": signer.ss58(), "signature": signature.to_hex()},
            });
            docs.push(doc);
            // And the signed extrinsic carries what was signed.
            let xt = signed::assemble(&md, &signer.account_id(), &signature, &call, &ext).expect("assemble");
            signed::decode(&md, &xt.bytes).expect("decodes").verify(&md, &params).expect("verifies");
            let label = format!("spec {spec}, {} era {era:?} nonce {nonce} tip {tip}", ours.label());
            ours_all.push((label, call, era_value, payload));
        }
    }
    let sdk = sdk_payload(&py, &Value::from(docs));
    let sdk = sdk.as_array().expect("a list");
    assert_eq!(sdk.len(), 24);
    for ((label, call, era, payload), sdk) in ours_all.iter().zip(sdk) {
        assert_eq!(sdk["call_data"], hex0x(call), "{label}: call data");
        assert_eq!(sdk["era"], hex0x(&era.encode()), "{label}: era");
        assert_eq!(sdk["payload"], hex0x(&payload.0), "{label}: signing payload");
        assert_eq!(sdk["signature_valid"], true, "{label}: the SDK verifies our signature");
    }
}
