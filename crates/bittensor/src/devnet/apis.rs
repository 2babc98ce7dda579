//! The runtime APIs the embedded chain answers through `state_call`, computed from its storage
//! at the block asked for: the metadata, nonces, fee quotes, neurons, the subnet state and the
//! metagraph (whole, selective, and per mechanism) — what the SDK's `metagraph()`,
//! `get_neuron_for_pubkey_and_subnet` and extrinsic submission ask.
//!
//! Neurons and the subnet state are encoded with the structs of `subtensor::types` (their layouts
//! are fixed and proven against finney's bytes); the 70-odd field metagraph is built from the
//! V15 metadata's own description of its return type, known fields filled by name and the rest
//! zero (no emission, no weights on a devnet).

use parity_scale_codec::{Compact, Decode, Encode};
use scale_info::TypeDef;
use scale_value::Value;

use super::pallets::{alpha_of, hotkeys, stake_weight, SUBNET_NAME};
use super::runtime::{fee_of, weight_of, Account};
use super::spec;
use super::state::{as_bool, default_value, items, none, set_field, some, State, StateError};
use crate::extrinsic::call::{account, decode_call, field, value_account, value_u128};
use crate::extrinsic::signed;
use crate::keys::AccountId;
use crate::subtensor::types::{AxonInfo, NeuronInfo, NeuronInfoLite, PrometheusInfo, SubnetState};

/// Why a runtime call was not answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The arguments do not decode as the API's inputs.
    #[error("cannot decode the arguments of {0}")]
    Args(String),
    /// The devnet does not implement this API.
    #[error("the nicompute devnet does not implement the runtime API {0} (the real runtime does: devnet up --chain runtime)")]
    Unknown(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Answers `state_call(name, args)` over `state`.
pub fn call(state: &State<'_>, name: &str, args: &[u8]) -> Result<Vec<u8>, ApiError> {
    let bad = || ApiError::Args(name.to_owned());
    let mut input = args;
    macro_rules! take {
        ($t:ty) => {
            <$t>::decode(&mut input).map_err(|_| bad())?
        };
    }
    let out = match name {
        "Metadata_metadata" => spec::metadata_v14_bytes().to_vec().encode(),
        "Metadata_metadata_at_version" => match take!(u32) {
            14 => Some(spec::metadata_v14_bytes().to_vec()).encode(),
            15 => Some(spec::metadata_v15_bytes().to_vec()).encode(),
            _ => None::<Vec<u8>>.encode(),
        },
        "Metadata_metadata_versions" => vec![14u32, 15].encode(),
        "AccountNonceApi_account_nonce" => {
            let who = AccountId(take!([u8; 32]));
            (Account::read(state, &who)?.nonce as u32).encode()
        }
        "TransactionPaymentApi_query_info" | "TransactionPaymentApi_query_fee_details" => {
            let xt = take!(Vec<u8>);
            let len = take!(u32);
            let mut framed = Compact(xt.len() as u32).encode();
            framed.extend_from_slice(&xt);
            let decoded = signed::decode(&state.md, &framed).map_err(|_| bad())?;
            let call = decode_call(&state.md, &decoded.call).map_err(|_| bad())?;
            let fee = fee_of(&call, len as usize);
            if name.ends_with("query_info") {
                // RuntimeDispatchInfo { weight: { ref_time, proof_size }, class, partial_fee }.
                let mut out = Vec::new();
                Compact(weight_of(&call).0).encode_to(&mut out);
                Compact(0u64).encode_to(&mut out);
                0u8.encode_to(&mut out);
                (fee as u64).encode_to(&mut out);
                out
            } else {
                fee_details(state, name, fee)?
            }
        }
        "NeuronInfoRuntimeApi_get_neurons_lite" => {
            let netuid = take!(u16);
            neurons(state, netuid)?.into_iter().map(|n| n.lite).collect::<Vec<_>>().encode()
        }
        "NeuronInfoRuntimeApi_get_neurons" => {
            let netuid = take!(u16);
            neurons(state, netuid)?.into_iter().map(|n| n.full()).collect::<Vec<_>>().encode()
        }
        "NeuronInfoRuntimeApi_get_neuron_lite" | "NeuronInfoRuntimeApi_get_neuron" => {
            let (netuid, uid) = (take!(u16), take!(u16));
            let one = neurons(state, netuid)?.into_iter().find(|n| n.lite.uid == uid);
            if name.ends_with("lite") {
                one.map(|n| n.lite).encode()
            } else {
                one.map(|n| n.full()).encode()
            }
        }
        "SubnetInfoRuntimeApi_get_subnet_state" => {
            let netuid = take!(u16);
            subnet_state(state, netuid)?.encode()
        }
        "SubnetInfoRuntimeApi_get_metagraph" => {
            let netuid = take!(u16);
            metagraph(state, name, netuid, None)?
        }
        "SubnetInfoRuntimeApi_get_selective_metagraph" => {
            let netuid = take!(u16);
            let indexes = take!(Vec<u16>);
            metagraph(state, name, netuid, Some(&indexes))?
        }
        "SubnetInfoRuntimeApi_get_selective_mechagraph" => {
            let netuid = take!(u16);
            let mechanism = take!(u8);
            let indexes = take!(Vec<u16>);
            if mechanism != 0 {
                None::<()>.encode()
            } else {
                metagraph(state, name, netuid, Some(&indexes))?
            }
        }
        other => return Err(ApiError::Unknown(other.to_owned())),
    };
    if !input.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// `FeeDetails { inclusion_fee: Some({ base_fee, len_fee, adjusted_weight_fee }), tip }`.
fn fee_details(state: &State<'_>, api: &str, fee: u128) -> Result<Vec<u8>, ApiError> {
    let md = &state.md;
    let ty = md.runtime_api(api).map(|m| m.output).ok_or_else(|| ApiError::Unknown(api.to_owned()))?;
    let mut v = default_value(md, ty);
    if fee > 0 {
        set_field(
            &mut v,
            "inclusion_fee",
            some(Value::named_composite([
                ("base_fee", Value::u128(0)),
                ("len_fee", Value::u128(0)),
                ("adjusted_weight_fee", Value::u128(fee)),
            ])),
        );
    }
    encode(md, &v, ty)
}

fn encode(md: &crate::extrinsic::Metadata, v: &Value, ty: u32) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    scale_value::scale::encode_as_type(v, ty, &md.types, &mut out)
        .map_err(|e| StateError::Codec(crate::extrinsic::ExtrinsicError::Arg(format!("runtime API answer: {e}"))))?;
    Ok(out)
}

/// One neuron as the runtime reports it.
struct NeuronView {
    lite: NeuronInfoLite,
    registered_at: u64,
    alpha: u64,
    tao: u64,
    weight: u64,
}

impl NeuronView {
    fn full(self) -> NeuronInfo {
        let l = self.lite;
        NeuronInfo {
            hotkey: l.hotkey,
            coldkey: l.coldkey,
            uid: l.uid,
            netuid: l.netuid,
            active: l.active,
            axon_info: l.axon_info,
            prometheus_info: l.prometheus_info,
            stake: l.stake,
            rank: l.rank,
            emission: l.emission,
            incentive: l.incentive,
            consensus: l.consensus,
            trust: l.trust,
            validator_trust: l.validator_trust,
            dividends: l.dividends,
            last_update: l.last_update,
            validator_permit: l.validator_permit,
            weights: Vec::new(),
            bonds: Vec::new(),
            pruning_score: l.pruning_score,
        }
    }
}

fn num_field(v: Option<&Value<u32>>, name: &str) -> u128 {
    v.and_then(|v| field(v, name)).and_then(value_u128).unwrap_or(0)
}

/// A subnet's neurons in uid order, from `Keys`, `Owner`, `Axons`, `Prometheus`, the stake and
/// the per-uid vectors.
fn neurons(state: &State<'_>, netuid: u16) -> Result<Vec<NeuronView>, StateError> {
    let m = "SubtensorModule";
    let k = [Value::u128(netuid.into())];
    let vector = |item: &str| -> Result<Vec<Value<u32>>, StateError> {
        Ok(state.get(m, item, &k)?.map(|v| items(&v).into_iter().cloned().collect()).unwrap_or_default())
    };
    let (active, permits, last_update) = (vector("Active")?, vector("ValidatorPermit")?, vector("LastUpdate")?);
    let mut out = Vec::new();
    for (uid, hotkey) in hotkeys(state, netuid)?.into_iter().enumerate() {
        let key = [Value::u128(netuid.into()), account(&hotkey)];
        let coldkey = state.get(m, "Owner", &[account(&hotkey)])?.as_ref().and_then(value_account).unwrap_or(hotkey);
        let axon = state.get(m, "Axons", &key)?;
        let prom = state.get(m, "Prometheus", &key)?;
        let a = axon.as_ref();
        let p = prom.as_ref();
        let alpha = alpha_of(state, &hotkey, netuid)? as u64;
        let tao = alpha_of(state, &hotkey, 0)? as u64;
        let weight = stake_weight(state, &hotkey, netuid)? as u64;
        let registered_at =
            state.num(m, "BlockAtRegistration", &[Value::u128(netuid.into()), Value::u128(uid as u128)])?;
        let lite = NeuronInfoLite {
            hotkey,
            coldkey,
            uid: uid as u16,
            netuid,
            active: active.get(uid).and_then(as_bool).unwrap_or(true),
            axon_info: AxonInfo {
                block: num_field(a, "block") as u64,
                version: num_field(a, "version") as u32,
                ip: num_field(a, "ip"),
                port: num_field(a, "port") as u16,
                ip_type: num_field(a, "ip_type") as u8,
                protocol: num_field(a, "protocol") as u8,
                placeholder1: num_field(a, "placeholder1") as u8,
                placeholder2: num_field(a, "placeholder2") as u8,
            },
            prometheus_info: PrometheusInfo {
                block: num_field(p, "block") as u64,
                version: num_field(p, "version") as u32,
                ip: num_field(p, "ip"),
                port: num_field(p, "port") as u16,
                ip_type: num_field(p, "ip_type") as u8,
            },
            stake: vec![(coldkey, Compact(alpha))],
            rank: 0,
            emission: 0,
            incentive: 0,
            consensus: 0,
            trust: 0,
            validator_trust: 0,
            dividends: 0,
            last_update: last_update.get(uid).and_then(value_u128).unwrap_or(0) as u64,
            validator_permit: permits.get(uid).and_then(as_bool).unwrap_or(false),
            pruning_score: u16::MAX,
        };
        out.push(NeuronView { lite, registered_at: registered_at as u64, alpha, tao, weight });
    }
    Ok(out)
}

fn subnet_state(state: &State<'_>, netuid: u16) -> Result<Option<SubnetState>, StateError> {
    let exists =
        state.get("SubtensorModule", "NetworksAdded", &[Value::u128(netuid.into())])?.as_ref().and_then(as_bool);
    if exists != Some(true) {
        return Ok(None);
    }
    let ns = neurons(state, netuid)?;
    let zeros16 = || ns.iter().map(|_| Compact(0u16)).collect::<Vec<_>>();
    Ok(Some(SubnetState {
        netuid,
        hotkeys: ns.iter().map(|n| n.lite.hotkey).collect(),
        coldkeys: ns.iter().map(|n| n.lite.coldkey).collect(),
        active: ns.iter().map(|n| n.lite.active).collect(),
        validator_permit: ns.iter().map(|n| n.lite.validator_permit).collect(),
        pruning_score: Vec::new(),
        last_update: ns.iter().map(|n| Compact(n.lite.last_update)).collect(),
        emission: ns.iter().map(|_| Compact(0u64)).collect(),
        dividends: zeros16(),
        incentives: zeros16(),
        consensus: zeros16(),
        trust: Vec::new(),
        rank: Vec::new(),
        block_at_registration: ns.iter().map(|n| Compact(n.registered_at)).collect(),
        alpha_stake: ns.iter().map(|n| Compact(n.alpha)).collect(),
        tao_stake: ns.iter().map(|n| Compact(n.tao)).collect(),
        total_stake: ns.iter().map(|n| Compact(n.weight)).collect(),
        emission_history: Vec::new(),
    }))
}

fn list(values: impl IntoIterator<Item = Value>) -> Value {
    Value::unnamed_composite(values)
}

fn bytes_as_compacts(s: &str) -> Value {
    list(s.bytes().map(|b| Value::u128(b.into())))
}

/// The fields of `Metagraph` the devnet knows, by name.
fn metagraph_fields(state: &State<'_>, netuid: u16) -> Result<Vec<(&'static str, Value)>, StateError> {
    let m = "SubtensorModule";
    let k = [Value::u128(netuid.into())];
    let num = |item: &str| state.num(m, item, &k);
    let ns = neurons(state, netuid)?;
    let owner = state.get(m, "SubnetOwner", &k)?.as_ref().and_then(value_account).unwrap_or(AccountId([0; 32]));
    let zeros = |_: &NeuronView| Value::u128(0);
    let axon = |a: &AxonInfo| {
        Value::named_composite([
            ("block", Value::u128(a.block.into())),
            ("version", Value::u128(a.version.into())),
            ("ip", Value::u128(a.ip)),
            ("port", Value::u128(a.port.into())),
            ("ip_type", Value::u128(a.ip_type.into())),
            ("protocol", Value::u128(a.protocol.into())),
            ("placeholder1", Value::u128(a.placeholder1.into())),
            ("placeholder2", Value::u128(a.placeholder2.into())),
        ])
    };
    Ok(vec![
        ("netuid", Value::u128(netuid.into())),
        ("name", bytes_as_compacts(SUBNET_NAME)),
        ("symbol", bytes_as_compacts(if netuid == 0 { "\u{3c4}" } else { "\u{3b1}" })),
        ("network_registered_at", Value::u128(num("NetworkRegisteredAt")?)),
        ("owner_hotkey", account(&owner)),
        ("owner_coldkey", account(&owner)),
        ("block", Value::u128(state.at.into())),
        ("tempo", Value::u128(num("Tempo")?)),
        ("alpha_out", Value::u128(num("SubnetAlphaOut")?)),
        ("tao_in", Value::u128(num("SubnetTAO")?)),
        ("max_validators", Value::u128(num("MaxAllowedValidators")?)),
        ("num_uids", Value::u128(ns.len() as u128)),
        ("max_uids", Value::u128(num("MaxAllowedUids")?)),
        ("burn", Value::u128(num("Burn")?)),
        (
            "registration_allowed",
            Value::bool(state.get(m, "NetworkRegistrationAllowed", &k)?.as_ref().and_then(as_bool).unwrap_or(false)),
        ),
        ("immunity_period", Value::u128(num("ImmunityPeriod")?)),
        ("min_burn", Value::u128(num("MinBurn")?)),
        ("max_burn", Value::u128(num("MaxBurn")?)),
        ("adjustment_interval", Value::u128(num("AdjustmentInterval")?)),
        ("target_regs_per_interval", Value::u128(num("TargetRegistrationsPerInterval")?)),
        ("max_regs_per_block", Value::u128(num("MaxRegistrationsPerBlock")?)),
        ("serving_rate_limit", Value::u128(num("ServingRateLimit")?)),
        ("hotkeys", list(ns.iter().map(|n| account(&n.lite.hotkey)))),
        ("coldkeys", list(ns.iter().map(|n| account(&n.lite.coldkey)))),
        ("identities", list(ns.iter().map(|_| none()))),
        ("axons", list(ns.iter().map(|n| axon(&n.lite.axon_info)))),
        ("active", list(ns.iter().map(|n| Value::bool(n.lite.active)))),
        ("validator_permit", list(ns.iter().map(|n| Value::bool(n.lite.validator_permit)))),
        ("pruning_score", list(ns.iter().map(|_| Value::u128(u16::MAX.into())))),
        ("last_update", list(ns.iter().map(|n| Value::u128(n.lite.last_update.into())))),
        ("emission", list(ns.iter().map(zeros))),
        ("dividends", list(ns.iter().map(zeros))),
        ("incentives", list(ns.iter().map(zeros))),
        ("consensus", list(ns.iter().map(zeros))),
        ("trust", list(ns.iter().map(zeros))),
        ("rank", list(ns.iter().map(zeros))),
        ("block_at_registration", list(ns.iter().map(|n| Value::u128(n.registered_at.into())))),
        ("alpha_stake", list(ns.iter().map(|n| Value::u128(n.alpha.into())))),
        ("tao_stake", list(ns.iter().map(|n| Value::u128(n.tao.into())))),
        ("total_stake", list(ns.iter().map(|n| Value::u128(n.weight.into())))),
        ("tao_dividends_per_hotkey", list(ns.iter().map(|n| list([account(&n.lite.hotkey), Value::u128(0)])))),
        ("alpha_dividends_per_hotkey", list(ns.iter().map(|n| list([account(&n.lite.hotkey), Value::u128(0)])))),
        ("validators", list(ns.iter().filter(|n| n.lite.validator_permit).map(|n| Value::u128(n.lite.uid.into())))),
        ("commitments", list([])),
    ])
}

/// `get_metagraph` (`indexes: None`) or a selective one: the V15 return type filled with what
/// the devnet knows. A subnet that does not exist answers `None`.
fn metagraph(state: &State<'_>, api: &str, netuid: u16, indexes: Option<&[u16]>) -> Result<Vec<u8>, ApiError> {
    let md = state.md.clone();
    let out_ty = md.runtime_api(api).map(|m| m.output).ok_or_else(|| ApiError::Unknown(api.to_owned()))?;
    let exists =
        state.get("SubtensorModule", "NetworksAdded", &[Value::u128(netuid.into())])?.as_ref().and_then(as_bool);
    if exists != Some(true) {
        return Ok(vec![0]);
    }
    // The return type is `Option<Metagraph>`: the struct is the `Some` variant's field.
    let inner_ty = option_inner(&md, out_ty).ok_or_else(|| ApiError::Unknown(format!("{api} (not an Option)")))?;
    let known = metagraph_fields(state, netuid)?;
    let Some(TypeDef::Composite(c)) = md.types.resolve(inner_ty).map(|t| t.type_def.clone()) else {
        return Err(ApiError::Unknown(format!("{api} (not a struct)")));
    };
    let mut fields = Vec::with_capacity(c.fields.len());
    for (i, f) in c.fields.iter().enumerate() {
        let name = f.name.clone().unwrap_or_default();
        let value = |ty: u32| {
            known.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()).unwrap_or_else(|| default_value(&md, ty))
        };
        let v = match indexes {
            None => value(f.ty.id),
            // netuid is always there; every other field only when asked for.
            Some(_) if i == 0 => value(f.ty.id),
            Some(ix) if ix.contains(&(i as u16)) => match option_inner(&md, f.ty.id) {
                Some(t) => some(value(t)),
                None => value(f.ty.id),
            },
            Some(_) => none(),
        };
        fields.push((name, v));
    }
    let v = some(Value::named_composite(fields));
    encode(&md, &v, out_ty)
}

/// `T` of an `Option<T>` type.
fn option_inner(md: &crate::extrinsic::Metadata, ty: u32) -> Option<u32> {
    match md.types.resolve(ty).map(|t| &t.type_def) {
        Some(TypeDef::Variant(v)) => {
            v.variants.iter().find(|v| v.name == "Some").and_then(|s| s.fields.first()).map(|f| f.ty.id)
        }
        _ => None,
    }
}
