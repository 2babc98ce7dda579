//! The runtime-API structs the metagraph is built from, with their SCALE layouts (spec §6).
//!
//! These layouts have been stable from spec 208 to today; the devnet chain encodes the same
//! types the client decodes, so both sides of the devnet cannot disagree about the bytes.

use parity_scale_codec::{Compact, Decode, Encode};

use crate::keys::AccountId;

/// Where a neuron serves its axon (34 bytes, fixed width).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
pub struct AxonInfo {
    /// Block at which it was last served.
    pub block: u64,
    /// The serving SDK's `version_as_int`.
    pub version: u32,
    /// IPv4 as `a<<24|b<<16|c<<8|d`, IPv6 as its 128-bit value; 0 = never served.
    pub ip: u128,
    pub port: u16,
    pub ip_type: u8,
    pub protocol: u8,
    pub placeholder1: u8,
    pub placeholder2: u8,
}

/// Where a neuron serves Prometheus metrics (31 bytes, fixed width).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
pub struct PrometheusInfo {
    pub block: u64,
    pub version: u32,
    pub ip: u128,
    pub port: u16,
    pub ip_type: u8,
}

/// `NeuronInfoLite<AccountId32>` from `NeuronInfoRuntimeApi_get_neurons_lite`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct NeuronInfoLite {
    pub hotkey: AccountId,
    pub coldkey: AccountId,
    #[codec(compact)]
    pub uid: u16,
    #[codec(compact)]
    pub netuid: u16,
    pub active: bool,
    pub axon_info: AxonInfo,
    pub prometheus_info: PrometheusInfo,
    /// (owner coldkey, stake in rao of the subnet's alpha); sum the entries.
    pub stake: Vec<(AccountId, Compact<u64>)>,
    #[codec(compact)]
    pub rank: u16,
    #[codec(compact)]
    pub emission: u64,
    #[codec(compact)]
    pub incentive: u16,
    #[codec(compact)]
    pub consensus: u16,
    #[codec(compact)]
    pub trust: u16,
    #[codec(compact)]
    pub validator_trust: u16,
    #[codec(compact)]
    pub dividends: u16,
    #[codec(compact)]
    pub last_update: u64,
    pub validator_permit: bool,
    #[codec(compact)]
    pub pruning_score: u16,
}

/// `NeuronInfo<AccountId32>` (full: weights and bonds) from `NeuronInfoRuntimeApi_get_neuron(s)`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct NeuronInfo {
    pub hotkey: AccountId,
    pub coldkey: AccountId,
    #[codec(compact)]
    pub uid: u16,
    #[codec(compact)]
    pub netuid: u16,
    pub active: bool,
    pub axon_info: AxonInfo,
    pub prometheus_info: PrometheusInfo,
    pub stake: Vec<(AccountId, Compact<u64>)>,
    #[codec(compact)]
    pub rank: u16,
    #[codec(compact)]
    pub emission: u64,
    #[codec(compact)]
    pub incentive: u16,
    #[codec(compact)]
    pub consensus: u16,
    #[codec(compact)]
    pub trust: u16,
    #[codec(compact)]
    pub validator_trust: u16,
    #[codec(compact)]
    pub dividends: u16,
    #[codec(compact)]
    pub last_update: u64,
    pub validator_permit: bool,
    /// (uid, weight).
    pub weights: Vec<(Compact<u16>, Compact<u16>)>,
    /// (uid, bond).
    pub bonds: Vec<(Compact<u16>, Compact<u16>)>,
    #[codec(compact)]
    pub pruning_score: u16,
}

/// `SubnetState<AccountId32>` from `SubnetInfoRuntimeApi_get_subnet_state` (inside an `Option`).
/// Since 2026-04 `pruning_score`, `trust` and `rank` may be empty: never assume length n.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct SubnetState {
    #[codec(compact)]
    pub netuid: u16,
    pub hotkeys: Vec<AccountId>,
    pub coldkeys: Vec<AccountId>,
    pub active: Vec<bool>,
    pub validator_permit: Vec<bool>,
    pub pruning_score: Vec<Compact<u16>>,
    pub last_update: Vec<Compact<u64>>,
    pub emission: Vec<Compact<u64>>,
    pub dividends: Vec<Compact<u16>>,
    pub incentives: Vec<Compact<u16>>,
    pub consensus: Vec<Compact<u16>>,
    pub trust: Vec<Compact<u16>>,
    pub rank: Vec<Compact<u16>>,
    pub block_at_registration: Vec<Compact<u64>>,
    /// Alpha stake in rao.
    pub alpha_stake: Vec<Compact<u64>>,
    /// Root TAO stake in rao.
    pub tao_stake: Vec<Compact<u64>>,
    /// alpha + TaoWeight × tao, in rao: the metagraph's `S`.
    pub total_stake: Vec<Compact<u64>>,
    pub emission_history: Vec<Vec<Compact<u64>>>,
}
