//! Real Subtensor bytes (`tests/fixtures/metagraph/`) decoded by us and compared, value for value,
//! with what the Python reference (bittensor 10.2.0 + bt-decode) made of the same bytes.
//!
//! Floats are compared exactly: Python's are `x / 65535` and `rao / 1e9` in f64, which Rust
//! computes bit for bit the same; the metagraph's float32 tensors are compared after casting the
//! widened float64 back to f32. Malformed bytes must give an error, never a different value.

use std::path::PathBuf;

use bittensor::subtensor::decode::{decode_exact, decode_result, from_hex, DecodeError};
use bittensor::subtensor::metagraph::{ip_to_string, Metagraph, MetagraphError, Neuron, StakeSource};
use bittensor::subtensor::types::{AxonInfo, NeuronInfo, NeuronInfoLite, PrometheusInfo, SubnetState};
use bittensor::AccountId;
use parity_scale_codec::{Compact, Encode};
use serde_json::{json, Map, Value};

use crate::util::fixtures;

const FIXTURE_01: &str = "01_sn1_block6852690_spec343";
const FIXTURE_02: &str = "02_sn1_first3_sliced_from_01";
const FIXTURE_03: &str = "03_netuid23_block3264156_spec208_legacy_vec_u8";
const FIXTURE_04: &str = "04_get_neuron_netuid14_uid29_spec315";
const BLOCK_01: u64 = 6_852_690;
const HASH_01: &str = "0xdb13c066e2c63969f140164fb3bfe7a0aaa7b71407fc0fe525d68e57329ef9d0";

fn dir(name: &str) -> PathBuf {
    fixtures().join("metagraph").join(name)
}

fn json_file(fixture: &str, file: &str) -> Value {
    let path = dir(fixture).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture json")
}

fn hex_file(fixture: &str, file: &str) -> Vec<u8> {
    let path = dir(fixture).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    from_hex(text.trim()).expect("fixture hex")
}

fn neurons_01() -> Vec<NeuronInfoLite> {
    decode_result(&hex_file(FIXTURE_01, "neurons_lite.result.hex"), "get_neurons_lite").expect("01 neurons decode")
}

fn state_01() -> SubnetState {
    decode_result::<Option<SubnetState>>(&hex_file(FIXTURE_01, "subnet_state.result.hex"), "get_subnet_state")
        .expect("01 state decode")
        .expect("netuid 1 has a subnet state")
}

fn metagraph_01() -> Metagraph {
    Metagraph::from_parts(1, BLOCK_01, HASH_01.to_owned(), neurons_01(), Some(state_01())).expect("01 assembles")
}

/// bittensor's `AxonInfo` serialised as the fixtures do, from our `Axon`.
fn python_axon(n: &Neuron, info: &AxonInfo) -> Value {
    let a = &n.axon;
    json!({
        "ip": a.ip, "port": a.port, "ip_type": a.ip_type, "version": a.version, "protocol": a.protocol,
        "placeholder1": info.placeholder1, "placeholder2": info.placeholder2,
        "hotkey": n.hotkey, "coldkey": n.coldkey, "is_serving": a.serving,
        "ip_str": format!("/ipv{}/{}:{}", a.ip_type, a.ip, a.port),
    })
}

/// bittensor's `NeuronInfoLite` object serialised as `expected_neurons_lite.json` does, made from
/// our `Neuron` (everything it carries) and the raw struct (netuid, stake dict, placeholders).
fn python_neuron(n: &Neuron, netuid: u16, stake: &[(AccountId, Compact<u64>)], axon: &AxonInfo) -> Value {
    let mut stake_dict = Map::new();
    for (coldkey, rao) in stake {
        stake_dict.insert(coldkey.to_ss58(), json!(rao.0));
    }
    let p = &n.prometheus;
    json!({
        "uid": n.uid, "netuid": netuid, "hotkey": n.hotkey, "coldkey": n.coldkey,
        "active": n.active, "validator_permit": n.validator_permit,
        "stake_rao": n.lite_stake_rao, "stake_tao": n.lite_stake_rao as f64 / 1e9,
        "stake_dict_rao": stake_dict, "total_stake_rao": n.lite_stake_rao,
        "emission": n.emission, "incentive": n.incentive, "consensus": n.consensus,
        "validator_trust": n.validator_trust, "dividends": n.dividends, "last_update": n.last_update,
        "axon_info": python_axon(n, axon),
        "prometheus_info": {"block": p.block, "version": p.version, "ip": p.ip, "port": p.port, "ip_type": p.ip_type},
    })
}

fn raw_ip(ip: u128) -> u64 {
    u64::try_from(ip).expect("the fixtures hold IPv4 integers only")
}

fn raw_axon(a: &AxonInfo) -> Value {
    json!({
        "block": a.block, "version": a.version, "ip": raw_ip(a.ip), "port": a.port, "ip_type": a.ip_type,
        "protocol": a.protocol, "placeholder1": a.placeholder1, "placeholder2": a.placeholder2,
    })
}

fn raw_prometheus(p: &PrometheusInfo) -> Value {
    json!({"block": p.block, "version": p.version, "ip": raw_ip(p.ip), "port": p.port, "ip_type": p.ip_type})
}

fn raw_stake(stake: &[(AccountId, Compact<u64>)]) -> Value {
    stake.iter().map(|(k, v)| json!([k.to_hex(), v.0])).collect()
}

/// The raw dict bt-decode gives (`query_runtime_api(...).value`): integers, keys as 0x-hex.
fn raw_lite(l: &NeuronInfoLite) -> Value {
    json!({
        "hotkey": l.hotkey.to_hex(), "coldkey": l.coldkey.to_hex(), "uid": l.uid, "netuid": l.netuid,
        "active": l.active, "axon_info": raw_axon(&l.axon_info), "prometheus_info": raw_prometheus(&l.prometheus_info),
        "stake": raw_stake(&l.stake), "rank": l.rank, "emission": l.emission, "incentive": l.incentive,
        "consensus": l.consensus, "trust": l.trust, "validator_trust": l.validator_trust, "dividends": l.dividends,
        "last_update": l.last_update, "validator_permit": l.validator_permit, "pruning_score": l.pruning_score,
    })
}

fn expected_list<'a>(doc: &'a Value, key: &str) -> &'a Vec<Value> {
    doc[key].as_array().unwrap_or_else(|| panic!("`{key}` is a list"))
}

/// Decoded neurons (and the metagraph made from them) against a Python `neurons_lite` file.
fn assert_neurons_match(lites: &[NeuronInfoLite], neurons: &[Neuron], expected: &Value) {
    let list = expected_list(expected, "neurons");
    assert_eq!(expected["n"].as_u64(), Some(list.len() as u64));
    assert_eq!(lites.len(), list.len());
    assert_eq!(neurons.len(), list.len());
    for ((lite, n), want) in lites.iter().zip(neurons).zip(list) {
        let ours = python_neuron(n, lite.netuid, &lite.stake, &lite.axon_info);
        assert_eq!(&ours, want, "uid {}", lite.uid);
    }
}

fn assert_raw_match(lites: &[NeuronInfoLite], expected: &Value) {
    let list = expected_list(expected, "neurons");
    assert_eq!(lites.len(), list.len());
    for (lite, want) in lites.iter().zip(list) {
        assert_eq!(&raw_lite(lite), want, "uid {}", lite.uid);
    }
}

#[test]
fn sliced_three_neurons_match_python() {
    let bytes = hex_file(FIXTURE_02, "neurons_lite.result.hex");
    let lites: Vec<NeuronInfoLite> = decode_result(&bytes, "get_neurons_lite").expect("decode");
    assert_eq!(lites.len(), 3);
    // The element boundaries the independent decoder found: re-encoding each neuron gives its length.
    let offsets: Vec<u64> = expected_list(&json_file(FIXTURE_02, "element_boundaries.json"), "offsets")
        .iter()
        .map(|v| v.as_u64().expect("offset"))
        .collect();
    for (i, lite) in lites.iter().enumerate() {
        assert_eq!(lite.encoded_size() as u64, offsets[i + 1] - offsets[i], "uid {i}");
    }
    // No subnet state: the metagraph falls back to the lite stake.
    let mg = Metagraph::from_parts(1, BLOCK_01, HASH_01.to_owned(), lites.clone(), None).expect("assemble");
    assert_eq!(mg.stake_source, StakeSource::NeuronLite);
    assert_eq!(mg.neurons[0].stake_tao, (2_557_172_316f64 / 1e9) as f32);
    assert_neurons_match(&lites, &mg.neurons, &json_file(FIXTURE_02, "expected_neurons_lite.json"));
    // The slice is the first 3 neurons of fixture 01.
    assert_eq!(lites[..], neurons_01()[..3]);
}

#[test]
fn sn1_neurons_lite_match_python() {
    let lites = neurons_01();
    let mg = metagraph_01();
    let expected = json_file(FIXTURE_01, "expected_neurons_lite.json");
    assert_eq!(expected["block"].as_u64(), Some(BLOCK_01));
    assert_eq!(expected["block_hash"].as_str(), Some(HASH_01));
    assert_eq!(lites.len(), 1024);
    assert_neurons_match(&lites, &mg.neurons, &expected);
}

#[test]
fn sn1_neurons_lite_raw_decode_matches_bt_decode() {
    assert_raw_match(&neurons_01(), &json_file(FIXTURE_01, "expected_neurons_lite_raw_decode.json"));
}

#[test]
fn sn1_subnet_state_raw_decode_matches_bt_decode() {
    let s = state_01();
    let hex_keys = |v: &[AccountId]| v.iter().map(AccountId::to_hex).collect::<Vec<_>>();
    let ints16 = |v: &[Compact<u16>]| v.iter().map(|c| c.0).collect::<Vec<_>>();
    let ints64 = |v: &[Compact<u64>]| v.iter().map(|c| c.0).collect::<Vec<_>>();
    let ours = json!({
        "netuid": s.netuid,
        "hotkeys": hex_keys(&s.hotkeys), "coldkeys": hex_keys(&s.coldkeys),
        "active": s.active, "validator_permit": s.validator_permit,
        "pruning_score": ints16(&s.pruning_score), "last_update": ints64(&s.last_update),
        "emission": ints64(&s.emission), "dividends": ints16(&s.dividends), "incentives": ints16(&s.incentives),
        "consensus": ints16(&s.consensus), "trust": ints16(&s.trust), "rank": ints16(&s.rank),
        "block_at_registration": ints64(&s.block_at_registration),
        "alpha_stake": ints64(&s.alpha_stake), "tao_stake": ints64(&s.tao_stake), "total_stake": ints64(&s.total_stake),
        "emission_history": s.emission_history.iter().map(|v| ints64(v)).collect::<Vec<_>>(),
    });
    let expected = json_file(FIXTURE_01, "expected_subnet_state_raw_decode.json");
    let expected = &expected["subnet_state"];
    // Field by field first, for a readable failure; then the whole object (no field missed).
    for (key, want) in expected.as_object().expect("object") {
        assert_eq!(&ours[key], want, "subnet_state.{key}");
    }
    assert_eq!(&ours, expected);
    assert_eq!(s.hotkeys.len(), 1024);
    assert_eq!(s.emission_history.len(), 129);
}

/// Python's float32 tensor value, widened to f64 by `.tolist()`, back as the f32 it was.
fn f32_of(v: &Value) -> f32 {
    let wide = v.as_f64().expect("number");
    let narrow = wide as f32;
    assert_eq!(f64::from(narrow), wide, "{wide} is not a widened f32");
    narrow
}

#[test]
fn sn1_metagraph_matches_python() {
    let lites = neurons_01();
    let mg = metagraph_01();
    let e = json_file(FIXTURE_01, "expected_metagraph.json");
    assert_eq!(e["netuid"].as_u64(), Some(1));
    assert_eq!(e["block"].as_u64(), Some(mg.block));
    assert_eq!(mg.block_hash, HASH_01);
    assert_eq!(mg.stake_source, StakeSource::SubnetState);
    assert_eq!(e["n"].as_u64(), Some(mg.len() as u64));
    assert_eq!(mg.len(), 1024);

    let col = |key: &str| {
        let list = expected_list(&e, key);
        assert_eq!(list.len(), mg.len(), "{key}");
        list
    };
    let (uids, hotkeys, coldkeys, active, permits) =
        (col("uids"), col("hotkeys"), col("coldkeys"), col("active"), col("validator_permit"));
    let (s, alpha, tao, last_update) =
        (col("S"), col("AS_alpha_stake"), col("TS_tao_stake_times_0.18"), col("last_update"));
    let (emission, incentive, consensus, dividends, vtrust) =
        (col("emission"), col("incentive"), col("consensus"), col("dividends"), col("validator_trust"));
    let axons = col("axons");
    for (i, n) in mg.neurons.iter().enumerate() {
        let at = format!("uid {i}");
        assert_eq!(uids[i].as_u64(), Some(u64::from(n.uid)), "{at}");
        assert_eq!(hotkeys[i].as_str(), Some(n.hotkey.as_str()), "{at}");
        assert_eq!(coldkeys[i].as_str(), Some(n.coldkey.as_str()), "{at}");
        assert_eq!(active[i].as_u64(), Some(u64::from(n.active)), "{at}");
        assert_eq!(permits[i].as_bool(), Some(n.validator_permit), "{at}");
        assert_eq!(f32_of(&s[i]).to_bits(), n.stake_tao.to_bits(), "S {at}");
        assert_eq!(f32_of(&alpha[i]).to_bits(), n.alpha_stake_tao.to_bits(), "AS {at}");
        assert_eq!(f32_of(&tao[i]).to_bits(), n.tao_stake_tao.to_bits(), "TS {at}");
        assert_eq!(last_update[i].as_u64(), Some(n.last_update), "{at}");
        // These are float32 tensors in Python too: our f64 narrowed the same way.
        assert_eq!(f32_of(&emission[i]), n.emission as f32, "emission {at}");
        assert_eq!(f32_of(&incentive[i]), n.incentive as f32, "incentive {at}");
        assert_eq!(f32_of(&consensus[i]), n.consensus as f32, "consensus {at}");
        assert_eq!(f32_of(&dividends[i]), n.dividends as f32, "dividends {at}");
        assert_eq!(f32_of(&vtrust[i]), n.validator_trust as f32, "validator_trust {at}");
        assert_eq!(python_axon(n, &lites[i].axon_info), axons[i], "axon {at}");
    }

    // The figures the spec quotes (§8, §10).
    let n24 = &mg.neurons[24];
    // Exactly this f32 (written widened: the f32 literal would be rounded by clippy's taste).
    assert_eq!(f64::from(n24.stake_tao), 58036.80859375);
    assert_eq!(n24.lite_stake_rao, 959_873_144_507);
    assert_eq!((n24.alpha_stake_rao, n24.tao_stake_rao), (11_468_722_629_709, 258_711_584_460_575));
    assert_eq!(n24.total_stake_rao, 58_036_807_815_746);
    assert_eq!(mg.neurons.iter().filter(|n| n.validator_permit).count(), 12);
    assert_eq!(mg.neurons.iter().filter(|n| n.axon.serving).count(), 827);
    assert!(mg.neurons.iter().filter(|n| n.axon.serving).all(|n| n.axon.ip_type == 4 && !n.axon.ip.contains(':')));
    let differ: Vec<&Neuron> = mg.neurons.iter().filter(|n| n.lite_stake_rao != n.alpha_stake_rao).collect();
    assert_eq!(differ.len(), 11);
    let unpermitted: Vec<u16> = differ.iter().filter(|n| !n.validator_permit).map(|n| n.uid).collect();
    assert_eq!(unpermitted, vec![633]);

    // Accessors.
    assert_eq!(mg.hotkeys().len(), 1024);
    assert_eq!(mg.hotkeys()[24], n24.hotkey);
    assert_eq!(mg.by_hotkey(&n24.hotkey).map(|n| n.uid), Some(24));
    let first = &mg.neurons[0];
    assert_eq!(first.axon.addr().as_deref(), Some("192.222.59.109:6028"));
    assert_eq!(n24.axon.addr(), None);
}

#[test]
fn legacy_vec_u8_wrapper_decodes_like_the_inner_bytes() {
    let wrapped = hex_file(FIXTURE_03, "neurons_lite.result.hex");
    let inner = hex_file(FIXTURE_03, "neurons_lite.inner.hex");
    // The wrapper is exactly one compact length in front of the inner bytes.
    assert_eq!(Compact(inner.len() as u32).encode().len() + inner.len(), wrapped.len());
    assert_eq!(&wrapped[wrapped.len() - inner.len()..], &inner[..]);
    // The typed decode alone rejects the wrapped form: the fallback is what reads it.
    assert!(decode_exact::<Vec<NeuronInfoLite>>(&wrapped, "get_neurons_lite").is_err());
    let from_wrapped: Vec<NeuronInfoLite> = decode_result(&wrapped, "get_neurons_lite").expect("legacy decode");
    let from_inner: Vec<NeuronInfoLite> = decode_exact(&inner, "get_neurons_lite").expect("inner decode");
    assert_eq!(from_wrapped, from_inner);
    assert_eq!(from_wrapped.len(), 19);

    assert_raw_match(&from_wrapped, &json_file(FIXTURE_03, "expected_neurons_lite_raw_decode.json"));
    let mg = Metagraph::from_parts(23, 3_264_156, "0x00".to_owned(), from_wrapped.clone(), None).expect("assemble");
    assert_neurons_match(&from_wrapped, &mg.neurons, &json_file(FIXTURE_03, "expected_neurons_lite.json"));
}

#[test]
fn full_neuron_with_weights_and_bonds_matches_python() {
    let bytes = hex_file(FIXTURE_04, "get_neuron.result.hex");
    let info = decode_result::<Option<NeuronInfo>>(&bytes, "get_neuron").expect("decode").expect("uid 29 exists");
    let pairs = |v: &[(Compact<u16>, Compact<u16>)]| v.iter().map(|(a, b)| json!([a.0, b.0])).collect::<Vec<_>>();

    let raw = json_file(FIXTURE_04, "expected_neuron_raw_decode.json");
    let ours_raw = json!({
        "hotkey": info.hotkey.to_hex(), "coldkey": info.coldkey.to_hex(), "uid": info.uid, "netuid": info.netuid,
        "active": info.active, "axon_info": raw_axon(&info.axon_info),
        "prometheus_info": raw_prometheus(&info.prometheus_info), "stake": raw_stake(&info.stake),
        "rank": info.rank, "emission": info.emission, "incentive": info.incentive, "consensus": info.consensus,
        "trust": info.trust, "validator_trust": info.validator_trust, "dividends": info.dividends,
        "last_update": info.last_update, "validator_permit": info.validator_permit,
        "weights": pairs(&info.weights), "bonds": pairs(&info.bonds), "pruning_score": info.pruning_score,
    });
    assert_eq!(ours_raw, raw["neuron"]);

    let n = Neuron::from_full(&info);
    let mut ours = python_neuron(&n, info.netuid, &info.stake, &info.axon_info);
    ours["weights"] = json!(pairs(&info.weights));
    ours["bonds"] = json!(pairs(&info.bonds));
    assert_eq!(ours, json_file(FIXTURE_04, "expected_neuron.json")["neuron"]);
    assert_eq!((n.uid, n.hotkey.as_str()), (29, "5Cf4LPRv6tiyuFsfLRQaFYEEn3zJRGi4bAE9DwbbKmbCSHpV"));
    assert_eq!((info.weights.len(), info.bonds.len()), (5, 32));

    // `None` (no such uid) is a single zero byte.
    assert_eq!(decode_result::<Option<NeuronInfo>>(&[0], "get_neuron").expect("none"), None);
}

#[test]
fn ip_vectors_format_like_netaddr() {
    let doc = json_file(".", "ip_vectors.json");
    let vectors = expected_list(&doc, "int_to_str");
    assert_eq!(vectors.len(), 10);
    for v in vectors {
        let ip: u128 = v["ip_u128"].as_str().expect("ip_u128").parse().expect("u128");
        let hex = v["ip_u128_hex"].as_str().expect("hex");
        assert_eq!(u128::from_str_radix(hex.trim_start_matches("0x"), 16).expect("hex u128"), ip);
        assert_eq!(ip_to_string(ip), v["ip_str"].as_str().expect("ip_str"), "{ip}");
    }
}

#[test]
fn serve_axon_call_data_matches_scalecodec() {
    let doc = json_file(".", "serve_axon_call.json");
    assert_eq!(doc["subtensor_module_pallet_index"].as_u64(), Some(7));
    let a = &doc["call_args"];
    let int = |key: &str| a[key].as_u64().unwrap_or_else(|| panic!("{key}"));
    let narrow = |key: &str| u8::try_from(int(key)).expect("u8");
    // Pallet 7, call 4 (`serve_axon`), then the arguments in declaration order, all fixed width.
    let mut call = vec![7u8, 4u8];
    u16::try_from(int("netuid")).expect("u16").encode_to(&mut call);
    u32::try_from(int("version")).expect("u32").encode_to(&mut call);
    u128::from(int("ip")).encode_to(&mut call);
    u16::try_from(int("port")).expect("u16").encode_to(&mut call);
    for key in ["ip_type", "protocol", "placeholder1", "placeholder2"] {
        narrow(key).encode_to(&mut call);
    }
    assert_eq!(format!("0x{}", hex::encode(&call)), doc["call_data_hex"].as_str().expect("call_data_hex"));
    assert_eq!(ip_to_string(u128::from(int("ip"))), "1.2.3.4");
}

#[test]
fn malformed_chain_bytes_are_errors_never_values() {
    let bytes = hex_file(FIXTURE_01, "neurons_lite.result.hex");
    // Cut in the middle of uid 500.
    let cut = &bytes[..bytes.len() / 2 + 50];
    assert!(matches!(decode_result::<Vec<NeuronInfoLite>>(cut, "get_neurons_lite"), Err(DecodeError::Invalid { .. })));
    // One byte too many: trailing bytes (the legacy fallback does not rescue it either).
    let mut long = bytes.clone();
    long.push(0);
    let err = decode_result::<Vec<NeuronInfoLite>>(&long, "get_neurons_lite").expect_err("trailing byte");
    assert!(matches!(err, DecodeError::TrailingBytes { extra: 1, .. } | DecodeError::Invalid { .. }), "{err}");

    // Every strict prefix of fixture 02 is an error: no truncation decodes to fewer neurons.
    let small = hex_file(FIXTURE_02, "neurons_lite.result.hex");
    for len in 0..small.len() {
        assert!(decode_result::<Vec<NeuronInfoLite>>(&small[..len], "get_neurons_lite").is_err(), "prefix {len}");
    }

    // The subnet state, truncated, through the metagraph's own decode.
    let state = hex_file(FIXTURE_01, "subnet_state.result.hex");
    let err = Metagraph::decode(1, BLOCK_01, HASH_01.to_owned(), &bytes, &state[..state.len() - 1])
        .expect_err("truncated state");
    assert!(matches!(err, MetagraphError::Decode(DecodeError::Invalid { what: "get_subnet_state", .. })), "{err}");
    // And whole, it gives the same metagraph as decoding the parts.
    let whole = Metagraph::decode(1, BLOCK_01, HASH_01.to_owned(), &bytes, &state).expect("decode");
    assert_eq!(whole, metagraph_01());

    // Neurons from one list and a state from another block or subnet do not assemble.
    let three: Vec<NeuronInfoLite> = decode_result(&small, "get_neurons_lite").expect("02");
    let err = Metagraph::from_parts(1, BLOCK_01, HASH_01.to_owned(), three, Some(state_01())).expect_err("mismatch");
    assert!(matches!(err, MetagraphError::Inconsistent { netuid: 1, .. }), "{err}");
    let mut swapped = state_01();
    swapped.hotkeys.swap(3, 4);
    let err = Metagraph::from_parts(1, BLOCK_01, HASH_01.to_owned(), neurons_01(), Some(swapped)).expect_err("swap");
    assert!(err.to_string().contains("uid 3 is hotkey"), "{err}");

    // Not hex at all.
    assert!(matches!(from_hex("0x01zz"), Err(DecodeError::NotHex(_))));
    assert!(matches!(from_hex("0x011"), Err(DecodeError::NotHex(_))));
}
