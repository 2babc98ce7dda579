//! The typed metagraph: the decoded runtime-API structs turned into the values Python exposes.
//!
//! bittensor 10.x builds `Subtensor.metagraph(netuid)` from two calls at one pinned block
//! (spec §3): `get_neurons_lite` gives keys, axons, flags and the u16-normalised scores, and
//! `get_subnet_state` gives the stake weights behind `metagraph.S`. The numbers here are computed
//! exactly as Python computes them (spec §7), so a Rust validator picks the same validators, the
//! same thresholds and the same axons as the Python one: `S` is `f32(total_stake / 1e9)`, not the
//! lite stake (spec §8, §13.2), and IP strings follow the integer, not `ip_type` (spec §11).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use parity_scale_codec::Compact;
use serde::Serialize;

use crate::keys::AccountId;
use crate::subtensor::decode::{decode_result, DecodeError};
use crate::subtensor::types::{AxonInfo, NeuronInfo, NeuronInfoLite, PrometheusInfo, SubnetState};

/// Rao per TAO (and per alpha).
const RAO_PER_TAO: f64 = 1e9;
/// bittensor's `ROOT_TAO_STAKE_WEIGHT`: Python's `TS` is the root TAO stake times this.
const ROOT_TAO_STAKE_WEIGHT: f64 = 0.18;
/// u16 fixed-point scores are normalised by `u16::MAX`, as Python does (`x / 65535`).
const U16_MAX: f64 = 65535.0;

/// Formats an on-chain IP integer the way Python's `str(netaddr.IPAddress(ip))` does (spec §11).
///
/// Values below 2³² are IPv4 dotted quads whatever `ip_type` says; everything else is IPv6 with
/// RFC 5952 compression (`::ffff:1.2.3.4` for mapped addresses). std's formatting matches
/// netaddr for every vector in `ip_vectors.json`.
pub fn ip_to_string(ip: u128) -> String {
    match u32::try_from(ip) {
        Ok(v4) => Ipv4Addr::from(v4).to_string(),
        Err(_) => Ipv6Addr::from(ip).to_string(),
    }
}

/// A neuron's axon endpoint, as the client needs it to dial the neuron.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Axon {
    /// The IP as Python prints it (`0.0.0.0` when never served).
    pub ip: String,
    pub port: u16,
    /// 4 or 6 as the neuron declared it; 0 when never served. Not used to format `ip`.
    pub ip_type: u8,
    /// The serving SDK's `version_as_int`.
    pub version: u32,
    pub protocol: u8,
    /// Block at which the axon was last served.
    pub block: u64,
    /// Python's `is_serving`: the IP is not 0.
    pub serving: bool,
}

impl Axon {
    pub fn from_info(info: &AxonInfo) -> Self {
        Self {
            ip: ip_to_string(info.ip),
            port: info.port,
            ip_type: info.ip_type,
            version: info.version,
            protocol: info.protocol,
            block: info.block,
            serving: info.ip != 0,
        }
    }

    /// `ip:port` to connect to (IPv6 in brackets), or `None` when the neuron never served.
    pub fn addr(&self) -> Option<String> {
        if !self.serving {
            return None;
        }
        // `ip` came from `ip_to_string`, so a colon means IPv6.
        Some(if self.ip.contains(':') {
            format!("[{}]:{}", self.ip, self.port)
        } else {
            format!("{}:{}", self.ip, self.port)
        })
    }
}

/// A neuron's Prometheus endpoint; kept for completeness (nothing in SN27 dials it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Prometheus {
    pub ip: String,
    pub port: u16,
    pub ip_type: u8,
    pub version: u32,
    pub block: u64,
}

impl Prometheus {
    pub fn from_info(info: &PrometheusInfo) -> Self {
        Self {
            ip: ip_to_string(info.ip),
            port: info.port,
            ip_type: info.ip_type,
            version: info.version,
            block: info.block,
        }
    }
}

/// One uid of the metagraph, with the values Python's `Metagraph` holds for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Neuron {
    pub uid: u16,
    /// SS58 (prefix 42).
    pub hotkey: String,
    pub coldkey: String,
    pub active: bool,
    pub validator_permit: bool,
    /// Python's `metagraph.S[uid]`: `f32(total_stake / 1e9)` from the subnet state (spec §7).
    pub stake_tao: f32,
    /// Python's `AS[uid]`: `f32(alpha_stake / 1e9)`.
    pub alpha_stake_tao: f32,
    /// Python's `TS[uid]`: `f32(tao_stake / 1e9 × 0.18)`.
    pub tao_stake_tao: f32,
    /// Sum of `NeuronInfoLite.stake` (the hotkey's own alpha; not `S`, see spec §8).
    pub lite_stake_rao: u64,
    /// From the subnet state; 0 when it was not available.
    pub total_stake_rao: u64,
    pub alpha_stake_rao: u64,
    pub tao_stake_rao: u64,
    pub last_update: u64,
    /// `emission / 1e9`.
    pub emission: f64,
    /// `x / 65535` for the four scores.
    pub incentive: f64,
    pub consensus: f64,
    pub dividends: f64,
    pub validator_trust: f64,
    /// Raw u16 values (deprecated on chain since 2026-04: rank and trust read 0).
    pub rank: u16,
    pub trust: u16,
    pub pruning_score: u16,
    pub axon: Axon,
    pub prometheus: Prometheus,
}

impl Neuron {
    /// The neuron as `get_neuron_lite` alone describes it. The stake fields come from the lite
    /// stake, the only stake known without the subnet state: it is the alpha stake after dTAO
    /// (the whole stake before), so `S` = `AS` = lite stake, `TS` = 0 and the state's rao
    /// fields are 0. `Metagraph::from_parts` overwrites them when it has the state.
    pub fn from_lite(lite: &NeuronInfoLite) -> Self {
        Self::from_lite_with_keys(lite, lite.hotkey.to_ss58(), lite.coldkey.to_ss58())
    }

    /// `from_lite` with the SS58 strings already made (the metagraph reuses coldkey strings).
    fn from_lite_with_keys(lite: &NeuronInfoLite, hotkey: String, coldkey: String) -> Self {
        let lite_stake_rao = lite.stake.iter().fold(0u64, |acc, (_, c)| acc.saturating_add(c.0));
        let stake = tao_of(lite_stake_rao);
        Self {
            uid: lite.uid,
            hotkey,
            coldkey,
            active: lite.active,
            validator_permit: lite.validator_permit,
            stake_tao: stake,
            alpha_stake_tao: stake,
            tao_stake_tao: 0.0,
            lite_stake_rao,
            total_stake_rao: 0,
            alpha_stake_rao: 0,
            tao_stake_rao: 0,
            last_update: lite.last_update,
            emission: lite.emission as f64 / RAO_PER_TAO,
            incentive: f64::from(lite.incentive) / U16_MAX,
            consensus: f64::from(lite.consensus) / U16_MAX,
            dividends: f64::from(lite.dividends) / U16_MAX,
            validator_trust: f64::from(lite.validator_trust) / U16_MAX,
            rank: lite.rank,
            trust: lite.trust,
            pruning_score: lite.pruning_score,
            axon: Axon::from_info(&lite.axon_info),
            prometheus: Prometheus::from_info(&lite.prometheus_info),
        }
    }

    /// The same from a full `NeuronInfo` (`get_neuron`); weights and bonds are not kept.
    pub fn from_full(info: &NeuronInfo) -> Self {
        Self::from_lite(&NeuronInfoLite {
            hotkey: info.hotkey,
            coldkey: info.coldkey,
            uid: info.uid,
            netuid: info.netuid,
            active: info.active,
            axon_info: info.axon_info,
            prometheus_info: info.prometheus_info,
            stake: info.stake.clone(),
            rank: info.rank,
            emission: info.emission,
            incentive: info.incentive,
            consensus: info.consensus,
            trust: info.trust,
            validator_trust: info.validator_trust,
            dividends: info.dividends,
            last_update: info.last_update,
            validator_permit: info.validator_permit,
            pruning_score: info.pruning_score,
        })
    }
}

/// Where the metagraph's `S` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StakeSource {
    /// `get_subnet_state` answered: `S` is the chain's stake weight, as Python has it.
    SubnetState,
    /// No subnet state (unknown netuid, or a runtime without the call): `S` is the lite stake.
    NeuronLite,
}

/// The metagraph of one subnet at one block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metagraph {
    pub netuid: u16,
    pub block: u64,
    /// `0x`-prefixed hash of `block`, the block every call was pinned to.
    pub block_hash: String,
    pub stake_source: StakeSource,
    /// Index = uid.
    pub neurons: Vec<Neuron>,
}

/// Why the decoded parts do not make a metagraph.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetagraphError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The neuron list and the subnet state disagree, or either contradicts itself. They are
    /// read at the same block hash, so this means a bug or a broken node, never a race.
    #[error("netuid {netuid}: inconsistent chain data: {detail}")]
    Inconsistent { netuid: u16, detail: String },
}

impl Metagraph {
    /// Assembles the metagraph from `get_neurons_lite` and `get_subnet_state` at one block.
    pub fn from_parts(
        netuid: u16,
        block: u64,
        block_hash: String,
        mut neurons: Vec<NeuronInfoLite>,
        state: Option<SubnetState>,
    ) -> Result<Self, MetagraphError> {
        let inconsistent = |detail: String| MetagraphError::Inconsistent { netuid, detail };
        // The runtime already returns uid order; sorting costs nothing then and makes a reordered
        // list from another source still index by uid.
        neurons.sort_by_key(|n| n.uid);
        let n = neurons.len();
        for (index, neuron) in neurons.iter().enumerate() {
            if usize::from(neuron.uid) != index {
                return Err(inconsistent(format!(
                    "the neuron list is not uids 0..{n}: position {index} holds uid {} (a duplicate or a gap)",
                    neuron.uid
                )));
            }
            if neuron.netuid != netuid {
                return Err(inconsistent(format!("uid {} says it is on netuid {}", neuron.uid, neuron.netuid)));
            }
        }
        if let Some(state) = &state {
            check_state(netuid, state, &neurons).map_err(inconsistent)?;
        }

        let stake_source = if state.is_some() { StakeSource::SubnetState } else { StakeSource::NeuronLite };
        // Only the stake vectors are read from the state: everything else comes from the lite
        // list, as in Python (and pruning_score/trust/rank may be empty there, spec §6).
        // SS58 encoding is most of the assembly time (base58 is quadratic), and a subnet has
        // far fewer coldkeys than uids (75 for 1024 uids on netuid 1): encode each coldkey once.
        let mut coldkeys: HashMap<AccountId, String> = HashMap::new();
        let neurons = neurons
            .iter()
            .enumerate()
            .map(|(i, lite)| {
                let coldkey = coldkeys.entry(lite.coldkey).or_insert_with(|| lite.coldkey.to_ss58()).clone();
                let mut neuron = Neuron::from_lite_with_keys(lite, lite.hotkey.to_ss58(), coldkey);
                if let Some(s) = &state {
                    // check_state proved the three vectors have an entry for every uid.
                    let at = |v: &[Compact<u64>]| v.get(i).map_or(0, |c| c.0);
                    let (total, alpha, tao) = (at(&s.total_stake), at(&s.alpha_stake), at(&s.tao_stake));
                    (neuron.total_stake_rao, neuron.alpha_stake_rao, neuron.tao_stake_rao) = (total, alpha, tao);
                    (neuron.stake_tao, neuron.alpha_stake_tao, neuron.tao_stake_tao) = if netuid == 0 {
                        // Root: Python sets S = AS = TS = the TAO stake (spec §7).
                        let t = tao_of(tao);
                        (t, t, t)
                    } else {
                        (tao_of(total), tao_of(alpha), ((tao as f64 / RAO_PER_TAO) * ROOT_TAO_STAKE_WEIGHT) as f32)
                    };
                }
                neuron
            })
            .collect();
        Ok(Self { netuid, block, block_hash, stake_source, neurons })
    }

    /// Decodes the two `state_call` results (typed or legacy-wrapped) and assembles them.
    pub fn decode(
        netuid: u16,
        block: u64,
        block_hash: String,
        neurons_lite: &[u8],
        subnet_state: &[u8],
    ) -> Result<Self, MetagraphError> {
        let neurons = decode_result::<Vec<NeuronInfoLite>>(neurons_lite, "get_neurons_lite")?;
        let state = crate::subtensor::decode::decode_subnet_state(subnet_state)?;
        Self::from_parts(netuid, block, block_hash, neurons, state)
    }

    pub fn len(&self) -> usize {
        self.neurons.len()
    }

    pub fn is_empty(&self) -> bool {
        self.neurons.is_empty()
    }

    /// SS58 hotkeys in uid order.
    pub fn hotkeys(&self) -> Vec<&str> {
        self.neurons.iter().map(|n| n.hotkey.as_str()).collect()
    }

    pub fn by_hotkey(&self, ss58: &str) -> Option<&Neuron> {
        self.neurons.iter().find(|n| n.hotkey == ss58)
    }
}

/// `f32(rao / 1e9)`: the division in f64, then the cast, as numpy does for `Balance.tao`.
fn tao_of(rao: u64) -> f32 {
    (rao as f64 / RAO_PER_TAO) as f32
}

/// The state must describe the same neurons: same netuid, same hotkey at every uid, and a stake
/// for every uid. Vectors we do not read are not checked (some are empty on newer runtimes).
fn check_state(netuid: u16, state: &SubnetState, neurons: &[NeuronInfoLite]) -> Result<(), String> {
    let n = neurons.len();
    if state.netuid != netuid {
        return Err(format!("the subnet state is for netuid {}", state.netuid));
    }
    if state.hotkeys.len() != n {
        return Err(format!("the subnet state lists {} hotkeys, the neuron list {n} neurons", state.hotkeys.len()));
    }
    for (uid, (lite, hotkey)) in neurons.iter().zip(&state.hotkeys).enumerate() {
        if lite.hotkey != *hotkey {
            return Err(format!(
                "uid {uid} is hotkey {} in the neuron list but {} in the subnet state",
                lite.hotkey.to_ss58(),
                hotkey.to_ss58()
            ));
        }
    }
    for (name, v) in
        [("total_stake", &state.total_stake), ("alpha_stake", &state.alpha_stake), ("tao_stake", &state.tao_stake)]
    {
        if v.len() != n {
            return Err(format!("the subnet state has {} {name} entries for {n} neurons", v.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_strings_follow_the_integer() {
        assert_eq!(ip_to_string(0), "0.0.0.0");
        assert_eq!(ip_to_string(0xc0de_3b6d), "192.222.59.109");
        assert_eq!(ip_to_string(u128::from(u32::MAX)), "255.255.255.255");
        // IPv6 `::1` stored as 1 prints as IPv4, as netaddr does.
        assert_eq!(ip_to_string(1), "0.0.0.1");
        assert_eq!(ip_to_string(1 << 32), "::1:0:0");
        assert_eq!(ip_to_string(0xffff_0102_0304), "::ffff:1.2.3.4");
        assert_eq!(ip_to_string(0x2001_0db8_0000_0000_0000_0000_0000_0001), "2001:db8::1");
    }

    #[test]
    fn axon_addr() {
        let mut info = AxonInfo { ip: 0x0102_0304, port: 8091, ip_type: 4, ..AxonInfo::default() };
        assert_eq!(Axon::from_info(&info).addr().as_deref(), Some("1.2.3.4:8091"));
        info.ip = 0x2001_0db8_0000_0000_0000_0000_0000_0001;
        assert_eq!(Axon::from_info(&info).addr().as_deref(), Some("[2001:db8::1]:8091"));
        let never = Axon::from_info(&AxonInfo::default());
        assert!(!never.serving);
        assert_eq!(never.addr(), None);
    }

    fn key(b: u8) -> AccountId {
        AccountId([b; 32])
    }

    fn lite(uid: u16, hotkey: u8, stake: u64) -> NeuronInfoLite {
        NeuronInfoLite {
            hotkey: key(hotkey),
            coldkey: key(0xcc),
            uid,
            netuid: 27,
            active: true,
            axon_info: AxonInfo { ip: 0x0102_0304, port: 8091, ip_type: 4, protocol: 4, ..AxonInfo::default() },
            prometheus_info: PrometheusInfo::default(),
            stake: vec![(key(0xcc), Compact(stake)), (key(0xdd), Compact(1))],
            rank: 0,
            emission: 1_500_000_000,
            incentive: 65535,
            consensus: 0,
            trust: 0,
            validator_trust: 32768,
            dividends: 1,
            last_update: 100 + u64::from(uid),
            validator_permit: uid == 1,
            pruning_score: 65535,
        }
    }

    fn state() -> SubnetState {
        SubnetState {
            netuid: 27,
            hotkeys: vec![key(1), key(2)],
            alpha_stake: vec![Compact(11_468_722_629_709), Compact(2_000_000_000)],
            tao_stake: vec![Compact(258_711_584_460_575), Compact(0)],
            total_stake: vec![Compact(58_036_807_815_746), Compact(2_000_000_000)],
            ..SubnetState::default()
        }
    }

    #[test]
    fn two_neurons_with_state() {
        // Given out of order: the metagraph indexes by uid.
        let mg = Metagraph::from_parts(27, 7, "0xab".into(), vec![lite(1, 2, 5), lite(0, 1, 9)], Some(state()))
            .expect("consistent");
        assert_eq!(mg.stake_source, StakeSource::SubnetState);
        assert_eq!(mg.len(), 2);
        let n0 = &mg.neurons[0];
        assert_eq!(n0.uid, 0);
        // uid 24 of fixture 01 (spec §8); the exact f32 values, written widened to f64.
        assert_eq!(f64::from(n0.stake_tao), 58036.80859375);
        assert_eq!(f64::from(n0.alpha_stake_tao), 11468.72265625);
        assert_eq!(f64::from(n0.tao_stake_tao), 46568.0859375);
        assert_eq!(n0.lite_stake_rao, 10);
        assert_eq!(n0.total_stake_rao, 58_036_807_815_746);
        assert_eq!(n0.emission, 1.5);
        assert_eq!(n0.incentive, 1.0);
        assert_eq!(n0.validator_trust, 32768.0 / 65535.0);
        assert_eq!(n0.axon.addr().as_deref(), Some("1.2.3.4:8091"));
        assert_eq!(n0.hotkey, key(1).to_ss58());
        assert_eq!(mg.neurons[1].stake_tao, 2.0);
        assert!(mg.neurons[1].validator_permit);
        assert_eq!(mg.hotkeys(), vec![key(1).to_ss58(), key(2).to_ss58()]);
        assert_eq!(mg.by_hotkey(&key(2).to_ss58()).map(|n| n.uid), Some(1));
        assert!(mg.by_hotkey(&key(3).to_ss58()).is_none());
    }

    #[test]
    fn without_state_the_lite_stake_is_used() {
        let mg = Metagraph::from_parts(27, 7, "0xab".into(), vec![lite(0, 1, 2_999_999_999)], None).expect("ok");
        assert_eq!(mg.stake_source, StakeSource::NeuronLite);
        assert_eq!(mg.neurons[0].stake_tao, 3.0);
        assert_eq!(mg.neurons[0].tao_stake_tao, 0.0);
        assert_eq!(mg.neurons[0].total_stake_rao, 0);
    }

    #[test]
    fn root_uses_tao_stake() {
        let mut s = state();
        s.netuid = 0;
        let mut neurons = vec![lite(0, 1, 1), lite(1, 2, 1)];
        neurons.iter_mut().for_each(|n| n.netuid = 0);
        let mg = Metagraph::from_parts(0, 7, "0xab".into(), neurons, Some(s)).expect("ok");
        let n0 = &mg.neurons[0];
        assert_eq!((n0.stake_tao, n0.alpha_stake_tao, n0.tao_stake_tao), (258711.58f32, 258711.58f32, 258711.58f32));
    }

    #[test]
    fn inconsistent_parts_are_errors() {
        let err =
            |neurons, state| Metagraph::from_parts(27, 7, "0xab".into(), neurons, state).expect_err("inconsistent");
        // Hotkeys disagree at uid 1.
        let mut s = state();
        s.hotkeys[1] = key(9);
        assert!(err(vec![lite(0, 1, 1), lite(1, 2, 1)], Some(s)).to_string().contains("uid 1 is hotkey"));
        // A stake vector too short.
        let mut s = state();
        s.total_stake.pop();
        assert!(err(vec![lite(0, 1, 1), lite(1, 2, 1)], Some(s)).to_string().contains("total_stake"));
        // Gap, duplicate, wrong netuid.
        assert!(matches!(err(vec![lite(0, 1, 1), lite(2, 2, 1)], None), MetagraphError::Inconsistent { .. }));
        assert!(matches!(err(vec![lite(0, 1, 1), lite(0, 2, 1)], None), MetagraphError::Inconsistent { .. }));
        let mut other = lite(0, 1, 1);
        other.netuid = 3;
        assert!(err(vec![other], None).to_string().contains("netuid 3"));
        let mut s = state();
        s.netuid = 4;
        assert!(err(vec![lite(0, 1, 1), lite(1, 2, 1)], Some(s)).to_string().contains("netuid 4"));
        // Empty pruning_score/trust/rank in the state are fine (spec §6).
        let ok = Metagraph::from_parts(27, 7, "0xab".into(), vec![lite(0, 1, 1), lite(1, 2, 1)], Some(state()));
        assert!(ok.is_ok());
    }
}
