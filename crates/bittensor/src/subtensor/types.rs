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

/// A bounds-checked reader over SCALE bytes, for the one struct whose size makes the generic
/// decoder's per-element overhead matter (a subnet state holds ~130k compact integers, most of
/// them in `emission_history`). Enforces the same canonical-compact rules as parity-scale-codec.
struct Reader<'a> {
    b: &'a [u8],
}

type R<T> = Result<T, parity_scale_codec::Error>;

impl Reader<'_> {
    #[inline]
    fn byte(&mut self) -> R<u8> {
        let (&first, rest) = self.b.split_first().ok_or("Not enough data to fill buffer")?;
        self.b = rest;
        Ok(first)
    }

    #[inline]
    fn take(&mut self, n: usize) -> R<&[u8]> {
        if self.b.len() < n {
            return Err("Not enough data to fill buffer".into());
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    #[inline]
    fn compact(&mut self) -> R<u64> {
        let b0 = self.byte()?;
        match b0 & 0b11 {
            0 => Ok(u64::from(b0 >> 2)),
            1 => {
                let v = u64::from(u16::from_le_bytes([b0, self.byte()?]) >> 2);
                if v > 0b0011_1111 {
                    Ok(v)
                } else {
                    Err("out of range decoding Compact<u64>".into())
                }
            }
            2 => {
                let s = self.take(3)?;
                let v = u64::from(u32::from_le_bytes([b0, s[0], s[1], s[2]]) >> 2);
                if v > 0b0011_1111_1111_1111 {
                    Ok(v)
                } else {
                    Err("out of range decoding Compact<u64>".into())
                }
            }
            _ => {
                let n = usize::from(b0 >> 2) + 4;
                if n > 8 {
                    return Err("out of range decoding Compact<u64>".into());
                }
                let s = self.take(n)?;
                let mut buf = [0u8; 8];
                buf[..n].copy_from_slice(s);
                let v = u64::from_le_bytes(buf);
                // Canonical: needs more than 4 bytes' worth, and its top byte is used.
                if v > u64::from(u32::MAX >> 2) && (n == 4 || v >> ((n - 1) * 8) != 0) {
                    Ok(v)
                } else {
                    Err("out of range decoding Compact<u64>".into())
                }
            }
        }
    }

    fn compact_u16(&mut self) -> R<u16> {
        u16::try_from(self.compact()?).map_err(|_| "out of range decoding Compact<u16>".into())
    }

    fn len(&mut self) -> R<usize> {
        let n = self.compact()?;
        u32::try_from(n).map(|n| n as usize).map_err(|_| "out of range decoding Compact<u32>".into())
    }

    fn vec<T>(&mut self, mut item: impl FnMut(&mut Self) -> R<T>) -> R<Vec<T>> {
        let n = self.len()?;
        // Every item takes at least one byte: refuse lengths the input cannot hold.
        if n > self.b.len() {
            return Err("Not enough data to fill buffer".into());
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(item(self)?);
        }
        Ok(v)
    }

    fn account(&mut self) -> R<AccountId> {
        let s = self.take(32)?;
        let mut a = [0u8; 32];
        a.copy_from_slice(s);
        Ok(AccountId(a))
    }

    fn boolean(&mut self) -> R<bool> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err("Invalid boolean representation".into()),
        }
    }
}

impl SubnetState {
    /// Decodes `Option<SubnetState>` like the derived decoder (same result, same refusals),
    /// several times faster; `bytes` must be consumed exactly by the caller's rules.
    pub fn decode_option(bytes: &mut &[u8]) -> Result<Option<SubnetState>, parity_scale_codec::Error> {
        let mut r = Reader { b: bytes };
        let out = match r.byte()? {
            0 => None,
            1 => {
                let c16 = |r: &mut Reader<'_>| r.compact_u16().map(Compact);
                let c64 = |r: &mut Reader<'_>| r.compact().map(Compact);
                Some(SubnetState {
                    netuid: r.compact_u16()?,
                    hotkeys: r.vec(Reader::account)?,
                    coldkeys: r.vec(Reader::account)?,
                    active: r.vec(Reader::boolean)?,
                    validator_permit: r.vec(Reader::boolean)?,
                    pruning_score: r.vec(c16)?,
                    last_update: r.vec(c64)?,
                    emission: r.vec(c64)?,
                    dividends: r.vec(c16)?,
                    incentives: r.vec(c16)?,
                    consensus: r.vec(c16)?,
                    trust: r.vec(c16)?,
                    rank: r.vec(c16)?,
                    block_at_registration: r.vec(c64)?,
                    alpha_stake: r.vec(c64)?,
                    tao_stake: r.vec(c64)?,
                    total_stake: r.vec(c64)?,
                    emission_history: r.vec(|r| r.vec(c64))?,
                })
            }
            _ => return Err("Invalid Option representation".into()),
        };
        *bytes = r.b;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_state() -> impl Strategy<Value = SubnetState> {
        let c64 = || proptest::collection::vec(any::<u64>().prop_map(Compact), 0..6);
        let c16 = || proptest::collection::vec(any::<u16>().prop_map(Compact), 0..6);
        (
            any::<u16>(),
            proptest::collection::vec(proptest::array::uniform32(any::<u8>()).prop_map(AccountId), 0..4),
            proptest::collection::vec(any::<bool>(), 0..6),
            (c16(), c64(), c64(), c16()),
            (c64(), c64(), c64()),
            proptest::collection::vec(c64(), 0..4),
        )
            .prop_map(|(netuid, keys, flags, (p, lu, em, d), (a, t, tot), hist)| SubnetState {
                netuid,
                hotkeys: keys.clone(),
                coldkeys: keys,
                active: flags.clone(),
                validator_permit: flags,
                pruning_score: p.clone(),
                last_update: lu,
                emission: em.clone(),
                dividends: d.clone(),
                incentives: d.clone(),
                consensus: d,
                trust: p.clone(),
                rank: p,
                block_at_registration: em,
                alpha_stake: a,
                tao_stake: t,
                total_stake: tot,
                emission_history: hist,
            })
    }

    proptest! {
        #[test]
        fn fast_decoder_equals_the_derived_one(state in proptest::option::of(arb_state())) {
            let bytes = state.encode();
            let mut input = &bytes[..];
            prop_assert_eq!(SubnetState::decode_option(&mut input).expect("decodes"), state.clone());
            prop_assert!(input.is_empty());
            // Every strict prefix fails in both.
            for cut in [bytes.len().saturating_sub(1), bytes.len() / 2] {
                if cut < bytes.len() {
                    let derived = <Option<SubnetState>>::decode(&mut &bytes[..cut]);
                    let fast = SubnetState::decode_option(&mut &bytes[..cut]);
                    prop_assert_eq!(derived.is_err(), fast.is_err());
                }
            }
        }

        #[test]
        fn fast_compact_accepts_and_refuses_like_the_codec(bytes in proptest::collection::vec(any::<u8>(), 1..10)) {
            let derived = <Compact<u64>>::decode(&mut &bytes[..]).map(|c| c.0);
            let fast = Reader { b: &bytes }.compact();
            prop_assert_eq!(derived.ok(), fast.ok());
        }
    }
}
