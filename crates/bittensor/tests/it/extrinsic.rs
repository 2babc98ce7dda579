//! The extrinsic layer against real runtime metadata: finney's spec 343 (V14 and V15, recorded by
//! the bittensor maintainers) and the RAO runtime's spec 218 (as chopsticks serves it). Call data
//! equals scalecodec's byte for byte, the signed extensions of both runtimes are filled by
//! identifier, unknown extensions with data are refused by name, and a signed extrinsic decodes
//! back and verifies (and stops verifying when anything signed changes).

use bittensor::extrinsic::{self, call, events, extensions, signed, storage, Call, Era, ExtensionParams, Metadata};
use bittensor::{AccountId, Keypair};
use scale_value::Value;
use serde_json::Value as Json;

use crate::util::fixtures;

fn hex_file(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(fixtures().join("chain").join(name)).expect("metadata fixture");
    hex::decode(text.trim().trim_start_matches("0x")).expect("hex")
}

pub fn spec343_v14() -> Metadata {
    Metadata::from_bytes(&hex_file("metadata_v14_spec343.hex")).expect("V14 decodes")
}

fn spec343_v15() -> Metadata {
    Metadata::from_versioned_option(&hex_file("metadata_at_version15_spec343.hex")).expect("V15 decodes")
}

pub fn spec218() -> Metadata {
    Metadata::from_bytes(&hex_file("metadata_v14_spec218.hex")).expect("spec 218 decodes")
}

fn golden() -> Json {
    let text = std::fs::read_to_string(fixtures().join("metagraph/serve_axon_call.json")).expect("golden");
    serde_json::from_str(&text).expect("json")
}

fn serve_axon(g: &Json) -> Call {
    let a = &g["call_args"];
    let n = |k: &str| Value::u128(u128::from(a[k].as_u64().expect("number")));
    Call::new("SubtensorModule", "serve_axon")
        .arg("netuid", n("netuid"))
        .arg("version", n("version"))
        .arg("ip", n("ip"))
        .arg("port", n("port"))
        .arg("ip_type", n("ip_type"))
        .arg("protocol", n("protocol"))
        .arg("placeholder1", n("placeholder1"))
        .arg("placeholder2", n("placeholder2"))
}

#[test]
fn serve_axon_call_data_equals_scalecodec_for_spec343() {
    let g = golden();
    let want = hex::decode(g["call_data_hex"].as_str().expect("hex").trim_start_matches("0x")).expect("hex");
    for md in [spec343_v14(), spec343_v15()] {
        assert_eq!(serve_axon(&g).encode(&md).expect("encodes"), want, "V{}", md.version);
    }
    // Argument order does not matter: the metadata's order is used.
    let mut reordered = serve_axon(&g);
    reordered.args.reverse();
    assert_eq!(reordered.encode(&spec343_v14()).expect("encodes"), want);
    // The same call on spec 218 (netuid is a plain u16 there, NetUid in 343): the same bytes.
    assert_eq!(serve_axon(&g).encode(&spec218()).expect("encodes"), want);
    // And it decodes back to the same arguments.
    let decoded = call::decode_call(&spec343_v14(), &want).expect("decodes");
    assert_eq!((decoded.pallet.as_str(), decoded.name.as_str()), ("SubtensorModule", "serve_axon"));
    assert_eq!(decoded.arg("port").and_then(call::value_u128), Some(8091));
    assert_eq!(decoded.arg("ip").and_then(call::value_u128), Some(16_909_060));
}

#[test]
fn call_arguments_are_checked_by_name_and_type() {
    let md = spec343_v14();
    let g = golden();
    let mut missing = serve_axon(&g);
    missing.args.retain(|(n, _)| n != "port");
    assert!(missing.encode(&md).expect_err("missing").to_string().contains("'port' is missing"));
    let extra = serve_axon(&g).arg("certificate", Value::u128(1));
    assert!(extra.encode(&md).expect_err("extra").to_string().contains("no argument 'certificate'"));
    let mut too_big = serve_axon(&g);
    too_big.args.iter_mut().filter(|(n, _)| n == "port").for_each(|(_, v)| *v = Value::u128(70_000));
    assert!(too_big.encode(&md).expect_err("overflow").to_string().contains("'port'"));
    let nope = Call::new("SubtensorModule", "serve_everything");
    assert!(nope.encode(&md).expect_err("unknown").to_string().contains("SubtensorModule.serve_everything"));
}

#[test]
fn other_calls_encode_on_both_runtimes() {
    let alice = AccountId::from_ss58("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY").expect("ss58");
    for md in [spec218(), spec343_v14()] {
        let reg = Call::new("SubtensorModule", "burned_register")
            .arg("netuid", Value::u128(1))
            .arg("hotkey", call::account(&alice))
            .encode(&md)
            .expect("burned_register");
        assert_eq!(&reg[..4], &[7, 7, 1, 0]);
        assert_eq!(&reg[4..], &alice.0);
        let transfer = Call::new("Balances", "transfer_keep_alive")
            .arg("dest", call::multi_address(&alice))
            .arg("value", Value::u128(1_000_000_000))
            .encode(&md)
            .expect("transfer");
        // Balances is pallet 5, transfer_keep_alive call 3, MultiAddress::Id (0), compact value.
        assert_eq!(&transfer[..3], &[5, 3, 0]);
        assert_eq!(&transfer[35..], &[0x02, 0x28, 0x6b, 0xee]);
        let stake = Call::new("SubtensorModule", "add_stake")
            .arg("hotkey", call::account(&alice))
            .arg("netuid", Value::u128(1))
            .arg("amount_staked", Value::u128(5))
            .encode(&md)
            .expect("add_stake");
        assert_eq!(stake.len(), 2 + 32 + 2 + 8);
    }
}

#[test]
fn signed_extension_lists_are_the_runtimes() {
    let ids = |md: &Metadata| md.signed_extensions.iter().map(|e| e.identifier.clone()).collect::<Vec<_>>();
    let g = golden();
    let want: Vec<String> = g["signed_extensions_in_metadata"]
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v.as_str().expect("str").to_owned())
        .collect();
    assert_eq!(ids(&spec343_v14()), want);
    assert_eq!(ids(&spec343_v15()), want);
    assert_eq!(
        ids(&spec218()),
        [
            "CheckNonZeroSender",
            "CheckSpecVersion",
            "CheckTxVersion",
            "CheckGenesis",
            "CheckMortality",
            "CheckNonce",
            "CheckWeight",
            "ChargeTransactionPayment",
            "SubtensorSignedExtension",
            "CommitmentsSignedExtension",
            "CheckMetadataHash"
        ]
    );
}

fn params() -> ExtensionParams {
    ExtensionParams {
        spec_version: 343,
        transaction_version: 1,
        genesis_hash: [0x11; 32],
        era: Era::mortal(64, 1000),
        era_birth_hash: [0x22; 32],
        nonce: 5,
        tip: 0,
    }
}

#[test]
fn extensions_are_filled_by_identifier_on_both_runtimes() {
    let p = params();
    // era ‖ Compact(nonce) ‖ Compact(tip) ‖ CheckMetadataHash mode 0 (disabled).
    let mut explicit = p.era.encode();
    explicit.extend([5 << 2, 0, 0]);
    // spec ‖ tx version ‖ genesis ‖ birth block ‖ metadata hash None.
    let mut implicit = 343u32.to_le_bytes().to_vec();
    implicit.extend(1u32.to_le_bytes());
    implicit.extend([0x11; 32]);
    implicit.extend([0x22; 32]);
    implicit.push(0);
    for md in [spec218(), spec343_v14(), spec343_v15()] {
        let e = extensions::encode(&md, &p).expect("encodes");
        assert_eq!(e.explicit, explicit, "V{}", md.version);
        assert_eq!(e.implicit, implicit, "V{}", md.version);
        let mut input = &e.explicit[..];
        let back = extensions::decode_explicit(&md, &mut input).expect("decodes");
        assert!(input.is_empty());
        assert_eq!((back.era, back.nonce, back.tip, back.metadata_hash_mode), (Some(p.era), Some(5), Some(0), Some(0)));
    }
}

#[test]
fn an_unknown_extension_with_data_is_refused_by_name() {
    let mut md = spec343_v14();
    // DrandPriority gains a u32 payload, as a future runtime might give it.
    let u32_ty = md.signed_extensions.iter().find(|e| e.identifier == "CheckSpecVersion").expect("ext").additional_ty;
    let drand = md.signed_extensions.iter_mut().find(|e| e.identifier == "DrandPriority").expect("ext");
    drand.ty = u32_ty;
    let err = extensions::encode(&md, &params()).expect_err("refused");
    assert!(
        matches!(&err, extrinsic::ExtrinsicError::UnsupportedExtension { identifier, .. } if identifier == "DrandPriority")
    );
    assert!(err.to_string().contains("DrandPriority"), "{err}");
}

#[test]
fn signed_extrinsics_decode_and_verify() {
    let md = spec218();
    let signer = Keypair::from_seed(&[7; 32]).expect("key");
    let mut p = params();
    p.spec_version = 218;
    p.tip = 1_000;
    let call = Call::new("SubtensorModule", "serve_prometheus")
        .arg("netuid", Value::u128(1))
        .arg("version", Value::u128(221))
        .arg("ip", Value::u128(0x7f00_0002))
        .arg("port", Value::u128(7091))
        .arg("ip_type", Value::u128(4))
        .encode(&md)
        .expect("call");
    let xt = signed::sign(&md, &signer, &call, &p).expect("signs");
    assert_eq!(xt.bytes[2], 0x84, "signed, version 4 (after a two-byte length)");
    assert_eq!(xt.hash, sp_crypto_hashing::blake2_256(&xt.bytes));
    let d = signed::decode(&md, &xt.bytes).expect("decodes");
    assert_eq!(d.signer, signer.account_id());
    assert_eq!(d.call, call);
    assert_eq!((d.values.nonce, d.values.tip, d.values.era), (Some(5), Some(1_000), Some(p.era)));
    d.verify(&md, &p).expect("verifies");
    // Anything signed but not sent must match the verifier's view.
    for change in [
        |p: &mut ExtensionParams| p.genesis_hash[0] ^= 1,
        |p: &mut ExtensionParams| p.spec_version += 1,
        |p: &mut ExtensionParams| p.transaction_version += 1,
        |p: &mut ExtensionParams| p.era_birth_hash[31] ^= 1,
    ] {
        let mut other = p.clone();
        change(&mut other);
        assert_eq!(d.verify(&md, &other), Err(extrinsic::ExtrinsicError::BadSignature));
    }
    // And what is sent cannot be altered.
    let mut forged = xt.bytes.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    signed::decode(&md, &forged).expect("still decodes").verify(&md, &p).expect_err("forged call");
    // Truncated or padded bytes do not decode.
    assert!(signed::decode(&md, &xt.bytes[..xt.bytes.len() - 1]).is_err());
}

#[test]
fn long_payloads_are_hashed_before_signing() {
    let md = spec343_v14();
    let remark = |n: usize| {
        Call::new("System", "remark").arg("remark", Value::from_bytes(vec![0xab; n])).encode(&md).expect("call")
    };
    let ext = extensions::encode(&md, &params()).expect("ext");
    let short = remark(10);
    let payload = extrinsic::SigningPayload::new(&short, &ext);
    assert_eq!(payload.0.len(), short.len() + ext.explicit.len() + ext.implicit.len());
    let long = remark(300);
    let payload = extrinsic::SigningPayload::new(&long, &ext);
    let mut raw = long.clone();
    raw.extend(&ext.explicit);
    raw.extend(&ext.implicit);
    assert_eq!(payload.0, sp_crypto_hashing::blake2_256(&raw).to_vec());
    // A long call still signs and verifies.
    let signer = Keypair::from_seed(&[9; 32]).expect("key");
    let xt = signed::sign(&md, &signer, &long, &params()).expect("signs");
    signed::decode(&md, &xt.bytes).expect("decodes").verify(&md, &params()).expect("verifies");
}

#[test]
fn storage_keys_use_the_metadata_hashers() {
    let alice = AccountId::from_ss58("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY").expect("ss58");
    for md in [spec218(), spec343_v14()] {
        let key = storage::key(&md, "System", "Account", &[call::account(&alice)]).expect("key");
        // twox128("System") ‖ twox128("Account") ‖ blake2_128(alice) ‖ alice: the well-known prefix.
        assert_eq!(hex::encode(&key[..32]), "26aa394eea5630e07c48ae0c9558cef7b99d880ec681799c0cf30e8886371da9");
        assert_eq!(&key[32..48], &sp_crypto_hashing::blake2_128(&alice.0));
        assert_eq!(&key[48..], &alice.0);
        // A double map: Uids(netuid, hotkey) = Identity(u16) ‖ Blake2_128Concat(hotkey).
        let uids =
            storage::key(&md, "SubtensorModule", "Uids", &[Value::u128(27), call::account(&alice)]).expect("key");
        assert_eq!(uids.len(), 32 + 2 + 16 + 32);
        assert!(storage::key(&md, "SubtensorModule", "Uids", &[Value::u128(27)]).is_err());
        // An absent AccountInfo reads as its default (all zero), an absent Option item as None.
        let info = storage::decode_value(&md, "System", "Account", None).expect("default").expect("some");
        let free = call::field(&info, "data").and_then(|d| call::field(d, "free")).and_then(call::value_u128);
        assert_eq!(free, Some(0));
        assert_eq!(storage::decode_value(&md, "SubtensorModule", "Uids", None).expect("none"), None);
        let ed = storage::constant(&md, "Balances", "ExistentialDeposit").expect("constant");
        assert!(call::value_u128(&ed).is_some());
    }
}

#[test]
fn module_errors_carry_the_runtimes_docs() {
    for md in [spec218(), spec343_v14()] {
        let pallet = md.pallet("SubtensorModule").expect("pallet");
        let errors = md.types.resolve(pallet.error_ty.expect("errors")).expect("type");
        let scale_info::TypeDef::Variant(v) = &errors.type_def else { panic!("errors are a variant") };
        let ip = v.variants.iter().find(|v| v.name == "InvalidIpAddress").expect("InvalidIpAddress");
        let found = events::module_error_by_index(&md, "SubtensorModule", ip.index).expect("found");
        assert_eq!(found.to_string(), "InvalidIpAddress: An invalid IP address is passed to the serve function.");
    }
}

#[test]
fn a_real_failed_serve_reads_back_by_name() {
    // Recorded from the real runtime (spec 218): our serve_axon to 127.0.0.1 in a block of its own.
    let text = std::fs::read_to_string(fixtures().join("chain/serve_axon_invalid_ip_spec218.json")).expect("fixture");
    let doc: Json = serde_json::from_str(&text).expect("json");
    let md = spec218();
    let raw = hex::decode(doc["system_events"].as_str().expect("hex").trim_start_matches("0x")).expect("hex");
    let evs = events::decode_events(&md, &raw).expect("events decode");
    let labels: Vec<String> = evs.iter().map(|e| e.label()).collect();
    assert!(labels.contains(&"System.ExtrinsicFailed".to_owned()), "{labels:?}");
    // Extrinsic 0 is the timestamp inherent, which succeeded; ours is extrinsic 1.
    assert_eq!(events::outcome(&md, &evs, 0), Some(events::Outcome::Success));
    let Some(events::Outcome::Failed(f)) = events::outcome(&md, &evs, 1) else { panic!("extrinsic 1 failed") };
    assert_eq!(f.to_string(), "InvalidIpAddress: An invalid IP address is passed to the serve function.");
    assert_eq!(f.pallet.as_deref(), Some("SubtensorModule"));
    assert_eq!(events::outcome(&md, &evs, 2), None);
    // And our extrinsic decodes: the hotkey's sr25519 signature over serve_axon(127.0.0.1).
    let xt = hex::decode(doc["extrinsics"][1].as_str().expect("hex").trim_start_matches("0x")).expect("hex");
    let d = signed::decode(&md, &xt).expect("decodes");
    let c = call::decode_call(&md, &d.call).expect("call");
    assert_eq!((c.pallet.as_str(), c.name.as_str()), ("SubtensorModule", "serve_axon"));
    assert_eq!(c.arg("ip").and_then(call::value_u128), Some(0x7f00_0001));
    assert_eq!(d.values.nonce, Some(0));
    assert!(matches!(d.values.era, Some(Era::Mortal { period: 64, .. })));
}
