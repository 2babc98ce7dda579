//! Subtensor's calls as nicompute uses them (by name, encoded against whatever runtime answers)
//! and the storage reads that go with them — balances, burn cost, uids, stake, rate limits —
//! read as the Python SDK 9.0.0 reads them, so both report the same numbers.

use std::net::IpAddr;

use scale_value::Value;
use serde_json::json;

use super::client::{ChainError, Subtensor};
use super::metagraph::Neuron;
use super::types::{AxonInfo, PrometheusInfo};
use crate::extrinsic::call::{account, field, multi_address, value_u128};
use crate::extrinsic::{storage, Call, ExtrinsicError};
use crate::keys::AccountId;

/// Rao per TAO.
pub const RAO_PER_TAO: u128 = 1_000_000_000;
/// What bittensor sends as `protocol` in `serve_axon`.
pub const AXON_PROTOCOL: u8 = 4;

/// The chain's integer form of an IP address and its `ip_type` (4 or 6), as the SDK computes them.
pub fn ip_to_int(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 4),
        IpAddr::V6(v6) => (u128::from(v6), 6),
    }
}

/// `SubtensorModule.serve_axon`: the hotkey publishes where its axon is.
pub fn serve_axon(netuid: u16, version: u32, ip: IpAddr, port: u16) -> Call {
    let (ip, ip_type) = ip_to_int(ip);
    Call::new("SubtensorModule", "serve_axon")
        .arg("netuid", Value::u128(netuid.into()))
        .arg("version", Value::u128(version.into()))
        .arg("ip", Value::u128(ip))
        .arg("port", Value::u128(port.into()))
        .arg("ip_type", Value::u128(ip_type.into()))
        .arg("protocol", Value::u128(AXON_PROTOCOL.into()))
        .arg("placeholder1", Value::u128(0))
        .arg("placeholder2", Value::u128(0))
}

/// `SubtensorModule.serve_prometheus`: validators stamp their version with it (SN27's gate).
pub fn serve_prometheus(netuid: u16, version: u32, ip: IpAddr, port: u16) -> Call {
    let (ip, ip_type) = ip_to_int(ip);
    Call::new("SubtensorModule", "serve_prometheus")
        .arg("netuid", Value::u128(netuid.into()))
        .arg("version", Value::u128(version.into()))
        .arg("ip", Value::u128(ip))
        .arg("port", Value::u128(port.into()))
        .arg("ip_type", Value::u128(ip_type.into()))
}

/// `SubtensorModule.burned_register`: the coldkey pays the burn to register `hotkey`.
pub fn burned_register(netuid: u16, hotkey: &AccountId) -> Call {
    Call::new("SubtensorModule", "burned_register")
        .arg("netuid", Value::u128(netuid.into()))
        .arg("hotkey", account(hotkey))
}

/// `SubtensorModule.add_stake`: the coldkey stakes `rao` to `hotkey` on `netuid`.
pub fn add_stake(hotkey: &AccountId, netuid: u16, rao: u64) -> Call {
    Call::new("SubtensorModule", "add_stake")
        .arg("hotkey", account(hotkey))
        .arg("netuid", Value::u128(netuid.into()))
        .arg("amount_staked", Value::u128(rao.into()))
}

/// `Balances.transfer_keep_alive`: a transfer that never reaps the sender's account.
pub fn transfer_keep_alive(dest: &AccountId, rao: u128) -> Call {
    Call::new("Balances", "transfer_keep_alive").arg("dest", multi_address(dest)).arg("value", Value::u128(rao))
}

/// A registered hotkey's uid and what it published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub uid: u16,
    pub axon: AxonInfo,
    pub prometheus: PrometheusInfo,
}

/// An account's balances in rao.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Balance {
    pub free: u128,
    pub reserved: u128,
    pub frozen: u128,
}

/// Formats rao as TAO with all nine decimals trimmed of trailing zeros (`1.5`, `0.000125`).
pub fn format_tao(rao: u128) -> String {
    let whole = rao / RAO_PER_TAO;
    let frac = rao % RAO_PER_TAO;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// A TAO amount that does not parse; says what one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an amount of TAO (e.g. 10 or 0.25; at most 9 decimals)")]
pub struct BadTaoAmount(pub String);

/// Parses a TAO amount (`10`, `0.5`, `1.000000001`) into rao, exactly (no float rounding).
pub fn parse_tao(s: &str) -> Result<u128, BadTaoAmount> {
    let s = s.trim();
    let bad = || BadTaoAmount(s.to_owned());
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 9 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
    let frac: u128 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().map_err(|_| bad())? };
    whole.checked_mul(RAO_PER_TAO).and_then(|w| w.checked_add(frac)).ok_or_else(bad)
}

impl Subtensor {
    /// Reads and decodes a storage item at the best block (or `at`).
    pub async fn storage_value(
        &self,
        pallet: &str,
        item: &str,
        keys: &[Value],
        at: Option<&str>,
    ) -> Result<Option<Value<u32>>, ChainError> {
        let md = self.runtime().await?.metadata;
        let key = storage::key(&md, pallet, item, keys)?;
        let raw = self.storage_at(&key, at).await?;
        Ok(storage::decode_value(&md, pallet, item, raw.as_deref())?)
    }

    async fn storage_u128(&self, pallet: &str, item: &str, keys: &[Value]) -> Result<Option<u128>, ChainError> {
        match self.storage_value(pallet, item, keys, None).await? {
            None => Ok(None),
            Some(v) => value_u128(&v)
                .map(Some)
                .ok_or_else(|| ExtrinsicError::Malformed(format!("{pallet}.{item} is not a number")).into()),
        }
    }

    /// A number item of `SubtensorModule` keyed by netuid (`Tempo`, `SubnetMechanism`,
    /// `MaxRegistrationsPerBlock`, …): its value or default, `None` where the runtime has no such item.
    pub async fn subnet_number(&self, item: &str, netuid: u16) -> Result<Option<u128>, ChainError> {
        let md = self.runtime().await?.metadata;
        if md.storage("SubtensorModule", item).is_err() {
            return Ok(None);
        }
        self.storage_u128("SubtensorModule", item, &[Value::u128(netuid.into())]).await
    }

    /// `TaoWeight` (how much root stake counts on a subnet, as a fraction of `u64::MAX`): one
    /// value on later runtimes, a map by netuid on spec 218.
    pub async fn tao_weight(&self, netuid: u16) -> Result<u128, ChainError> {
        let md = self.runtime().await?.metadata;
        let keyed = md.storage("SubtensorModule", "TaoWeight")?.1.hashers.len() == 1;
        let keys = if keyed { vec![Value::u128(netuid.into())] } else { Vec::new() };
        Ok(self.storage_u128("SubtensorModule", "TaoWeight", &keys).await?.unwrap_or(0))
    }

    /// The free balance of `account` in rao (`System.Account.data.free`, what the SDK's
    /// `get_balance` returns).
    pub async fn free_balance(&self, account_id: &AccountId) -> Result<u128, ChainError> {
        Ok(self.balance(account_id).await?.free)
    }

    /// `System.Account.data` of `account`: free, reserved and frozen rao.
    pub async fn balance(&self, account_id: &AccountId) -> Result<Balance, ChainError> {
        let info = self.storage_value("System", "Account", &[account(account_id)], None).await?;
        let data = info.as_ref().and_then(|i| field(i, "data"));
        let get = |name: &str| data.and_then(|d| field(d, name)).and_then(value_u128);
        Ok(Balance {
            free: get("free").ok_or_else(|| ExtrinsicError::Malformed("System.Account has no data.free".into()))?,
            reserved: get("reserved").unwrap_or(0),
            frozen: get("frozen").or_else(|| get("misc_frozen")).unwrap_or(0),
        })
    }

    /// The balance a transfer must leave behind (`Balances.ExistentialDeposit`).
    pub async fn existential_deposit(&self) -> Result<u128, ChainError> {
        let md = self.runtime().await?.metadata;
        let v = storage::constant(&md, "Balances", "ExistentialDeposit")?;
        value_u128(&v).ok_or_else(|| ExtrinsicError::Malformed("ExistentialDeposit is not a number".into()).into())
    }

    /// What `burned_register` costs on `netuid` now (`SubtensorModule.Burn`), in rao.
    pub async fn burn(&self, netuid: u16) -> Result<u128, ChainError> {
        Ok(self.storage_u128("SubtensorModule", "Burn", &[Value::u128(netuid.into())]).await?.unwrap_or(0))
    }

    /// Whether the subnet exists (`SubtensorModule.NetworksAdded`).
    pub async fn subnet_exists(&self, netuid: u16) -> Result<bool, ChainError> {
        let v = self.storage_value("SubtensorModule", "NetworksAdded", &[Value::u128(netuid.into())], None).await?;
        Ok(v.and_then(|v| v.as_bool()).unwrap_or(false))
    }

    /// The hotkey's uid on `netuid` (`SubtensorModule.Uids`), `None` when not registered.
    pub async fn uid_of(&self, netuid: u16, hotkey: &AccountId) -> Result<Option<u16>, ChainError> {
        let uid = self.storage_u128("SubtensorModule", "Uids", &[Value::u128(netuid.into()), account(hotkey)]).await?;
        Ok(uid.and_then(|u| u16::try_from(u).ok()))
    }

    /// The hotkey's uid and published endpoints on `netuid`, from storage (`Uids`, `Axons`,
    /// `Prometheus`): three reads, no runtime call (which costs a runtime execution on the node).
    pub async fn endpoints_of(&self, netuid: u16, hotkey: &AccountId) -> Result<Option<Endpoints>, ChainError> {
        let key = [Value::u128(netuid.into()), account(hotkey)];
        let (uid, axon, prometheus) = tokio::try_join!(
            self.storage_u128("SubtensorModule", "Uids", &key),
            self.storage_value("SubtensorModule", "Axons", &key, None),
            self.storage_value("SubtensorModule", "Prometheus", &key, None),
        )?;
        let Some(uid) = uid.and_then(|u| u16::try_from(u).ok()) else { return Ok(None) };
        let num = |v: &Option<Value<u32>>, name: &str| {
            v.as_ref().and_then(|v| field(v, name)).and_then(value_u128).unwrap_or(0)
        };
        let axon = AxonInfo {
            block: num(&axon, "block") as u64,
            version: num(&axon, "version") as u32,
            ip: num(&axon, "ip"),
            port: num(&axon, "port") as u16,
            ip_type: num(&axon, "ip_type") as u8,
            protocol: num(&axon, "protocol") as u8,
            placeholder1: num(&axon, "placeholder1") as u8,
            placeholder2: num(&axon, "placeholder2") as u8,
        };
        let prometheus = PrometheusInfo {
            block: num(&prometheus, "block") as u64,
            version: num(&prometheus, "version") as u32,
            ip: num(&prometheus, "ip"),
            port: num(&prometheus, "port") as u16,
            ip_type: num(&prometheus, "ip_type") as u8,
        };
        Ok(Some(Endpoints { uid, axon, prometheus }))
    }

    /// The hotkey's neuron on `netuid` (the SDK's `get_neuron_for_pubkey_and_subnet`).
    pub async fn neuron_of(&self, netuid: u16, hotkey: &AccountId) -> Result<Option<Neuron>, ChainError> {
        let Some(uid) = self.uid_of(netuid, hotkey).await? else { return Ok(None) };
        Ok(self.neuron(netuid, uid, None).await?.map(|n| Neuron::from_full(&n)))
    }

    /// Blocks a hotkey must wait between two serves on `netuid` (`ServingRateLimit`).
    pub async fn serving_rate_limit(&self, netuid: u16) -> Result<u64, ChainError> {
        let v = self.storage_u128("SubtensorModule", "ServingRateLimit", &[Value::u128(netuid.into())]).await?;
        Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
    }

    /// About how much alpha `tao` rao staked on `netuid` buys now: 1:1 on the root subnet and
    /// stable subnets, the constant-product swap of the subnet's pool (`SubnetTAO`,
    /// `SubnetAlphaIn`) on dynamic ones. An estimate for the confirmation, not a quote.
    pub async fn expected_alpha(&self, netuid: u16, tao: u128) -> Result<u128, ChainError> {
        let n = [Value::u128(netuid.into())];
        let (mechanism, tao_in, alpha_in) = tokio::try_join!(
            self.storage_u128("SubtensorModule", "SubnetMechanism", &n),
            self.storage_u128("SubtensorModule", "SubnetTAO", &n),
            self.storage_u128("SubtensorModule", "SubnetAlphaIn", &n),
        )?;
        if netuid == 0 || mechanism.unwrap_or(0) == 0 {
            return Ok(tao);
        }
        let (tao_in, alpha_in) = (tao_in.unwrap_or(0), alpha_in.unwrap_or(0));
        Ok(alpha_in.saturating_mul(tao) / tao_in.saturating_add(tao).max(1))
    }

    /// The best block's number.
    pub async fn best_number(&self) -> Result<u64, ChainError> {
        let v = self.request("chain_getHeader", json!([])).await?;
        v.get("number")
            .and_then(serde_json::Value::as_str)
            .and_then(|n| u64::from_str_radix(n.trim_start_matches("0x"), 16).ok())
            .ok_or_else(|| ChainError::BadResponse {
                endpoint: self.endpoint().to_owned(),
                call: "chain_getHeader".into(),
                reason: "no block number".into(),
            })
    }

    /// The stake of `coldkey` on `hotkey` on `netuid` in rao of the subnet's alpha, computed as
    /// the SDK 9.0.0's `get_stake` does: `Alpha` shares over `TotalHotkeyShares`, times
    /// `TotalHotkeyAlpha` (U64F64 shares as floats, the product truncated).
    pub async fn stake(&self, coldkey: &AccountId, hotkey: &AccountId, netuid: u16) -> Result<u64, ChainError> {
        let n = Value::u128(netuid.into());
        let fixed = |v: Option<Value<u32>>| -> f64 {
            let bits = v.as_ref().and_then(|v| field(v, "bits").or(Some(v))).and_then(value_u128).unwrap_or(0);
            (bits >> 64) as f64 + (bits & u128::from(u64::MAX)) as f64 / 2f64.powi(64)
        };
        let alpha_key = [account(hotkey), account(coldkey), n.clone()];
        let hotkey_key = [account(hotkey), n];
        let (shares, total_alpha, total_shares) = tokio::try_join!(
            self.storage_value("SubtensorModule", "Alpha", &alpha_key, None),
            self.storage_u128("SubtensorModule", "TotalHotkeyAlpha", &hotkey_key),
            self.storage_value("SubtensorModule", "TotalHotkeyShares", &hotkey_key, None),
        )?;
        let (shares, total_shares) = (fixed(shares), fixed(total_shares));
        if total_shares == 0.0 {
            return Ok(0);
        }
        Ok((shares / total_shares * total_alpha.unwrap_or(0) as f64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tao_amounts_are_exact() {
        assert_eq!(parse_tao("10"), Ok(10 * RAO_PER_TAO));
        assert_eq!(parse_tao("0.5"), Ok(RAO_PER_TAO / 2));
        assert_eq!(parse_tao(".25"), Ok(RAO_PER_TAO / 4));
        assert_eq!(parse_tao("1.000000001"), Ok(RAO_PER_TAO + 1));
        for bad in ["", ".", "1.0000000001", "-1", "1e3", "ten", "1.2.3"] {
            assert!(parse_tao(bad).is_err(), "{bad}");
        }
        assert_eq!(format_tao(1_500_000_000), "1.5");
        assert_eq!(format_tao(125_000), "0.000125");
        assert_eq!(format_tao(7 * RAO_PER_TAO), "7");
        assert_eq!(format_tao(0), "0");
    }

    #[test]
    fn ips_as_the_sdk_encodes_them() {
        assert_eq!(ip_to_int("1.2.3.4".parse().expect("ip")), (16_909_060, 4));
        assert_eq!(ip_to_int("::1".parse().expect("ip")), (1, 6));
    }
}
