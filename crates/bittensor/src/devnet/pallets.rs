//! The calls the embedded chain implements, with Subtensor's rules where a user meets them, its
//! storage items and events, and its errors by the runtime's own names (so a refusal reads as
//! finney's would: `InvalidIpAddress`, `ServingRateLimitExceeded`, `NotEnoughBalanceToStake`):
//!
//! | call | origin | what it does here |
//! |---|---|---|
//! | `SubtensorModule.burned_register` | coldkey | burns `Burn`, gives the hotkey the next uid; registration limits per block and interval |
//! | `SubtensorModule.serve_axon` / `serve_prometheus` | hotkey | IP and type checks, `ServingRateLimit`, writes `Axons` / `Prometheus` |
//! | `SubtensorModule.add_stake` | coldkey | moves TAO from the balance into the hotkey's stake (1:1: devnet subnets use the stable mechanism) |
//! | `Balances.transfer_keep_alive` / `transfer_allow_death` / `transfer_all` | sender | the existential deposit rules |
//! | `Sudo.sudo(Balances.force_set_balance)` | the sudo key | funding: the devnet owner's key is the sudo key |
//!
//! Validator permits are given at the end of every block (the real runtime does it once per
//! tempo): the `MaxAllowedValidators` neurons with the most stake weight, counting only stake at
//! or above `StakeThreshold`.

use scale_value::{Value, ValueDef};

use super::runtime::{Account, Block, Rules};
use super::state::{as_bool, items, State, StateError};
use crate::extrinsic::call::{account, value_account, value_u128, DecodedCall};
use crate::keys::AccountId;

/// The root subnet.
const ROOT: u16 = 0;
/// The least stake `add_stake` takes (`DefaultMinStake`), in rao.
const MIN_STAKE: u128 = 2_000_000;
/// The name devnet subnets show (`get_metagraph`'s `name`).
pub const SUBNET_NAME: &str = "nicompute devnet";

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// A pallet's own error, by the runtime's name.
    #[error("{pallet}.{error}")]
    Module { pallet: &'static str, error: &'static str },
    /// `DispatchError::Token(..)`: `FundsUnavailable`, `BelowMinimum`, `NotExpendable`.
    #[error("Token::{0}")]
    Token(&'static str),
    #[error("BadOrigin")]
    BadOrigin,
    /// The chain's own fault (database, encoding): not the caller's.
    #[error(transparent)]
    Fault(#[from] StateError),
}

impl DispatchError {
    fn module(pallet: &'static str, error: &'static str) -> Self {
        DispatchError::Module { pallet, error }
    }
    fn subtensor(error: &'static str) -> Self {
        Self::module("SubtensorModule", error)
    }

    /// The runtime's `DispatchError` value.
    pub fn to_value(&self, state: &State<'_>) -> Result<Value, StateError> {
        Ok(match self {
            DispatchError::Module { pallet, error } => {
                let md = &state.md;
                let p = md.pallet(pallet)?;
                let index = p.error_ty.and_then(|t| md.variant(t, error)).map(|v| v.index).ok_or_else(|| {
                    crate::extrinsic::ExtrinsicError::Unknown(format!("the runtime has no error {pallet}.{error}"))
                })?;
                Value::unnamed_variant(
                    "Module",
                    [Value::named_composite([
                        ("index", Value::u128(p.index.into())),
                        ("error", Value::from_bytes([index, 0, 0, 0])),
                    ])],
                )
            }
            DispatchError::Token(kind) => Value::unnamed_variant("Token", [Value::unnamed_variant(*kind, [])]),
            DispatchError::BadOrigin => Value::unnamed_variant("BadOrigin", []),
            DispatchError::Fault(_) => Value::unnamed_variant("Other", []),
        })
    }
}

type Dispatch = Result<(), DispatchError>;

fn n(x: impl Into<u128>) -> Value {
    Value::u128(x.into())
}

/// Whether the devnet implements `call` (others are refused at the pool, by name).
pub fn supported(call: &DecodedCall) -> bool {
    matches!(
        (call.pallet.as_str(), call.name.as_str()),
        ("SubtensorModule", "burned_register" | "serve_axon" | "serve_prometheus" | "add_stake")
            | ("Balances", "transfer_keep_alive" | "transfer_allow_death" | "transfer_all")
            | ("Sudo", "sudo")
    )
}

/// The subnets that exist (`NetworksAdded`), from their storage keys.
pub fn subnets(state: &State<'_>) -> Result<Vec<u16>, StateError> {
    let prefix = crate::extrinsic::storage::prefix(&state.md, "SubtensorModule", "NetworksAdded")?;
    let mut out = Vec::new();
    for key in state.keys(&prefix)? {
        // Identity hasher: the key ends with the netuid's two bytes.
        if let Some(b) = key.get(prefix.len()..prefix.len() + 2) {
            let netuid = u16::from_le_bytes([b[0], b[1]]);
            if state.get("SubtensorModule", "NetworksAdded", &[n(netuid)])?.as_ref().and_then(as_bool) == Some(true) {
                out.push(netuid);
            }
        }
    }
    Ok(out)
}

/// The genesis state of the Subtensor pallet: the root subnet and `netuids`, with the rules.
pub fn genesis(state: &mut State<'_>, netuids: &[u16], owner: &AccountId, rules: &Rules) -> Result<(), StateError> {
    let mut all: Vec<u16> = std::iter::once(ROOT).chain(netuids.iter().copied()).collect();
    all.sort_unstable();
    all.dedup();
    let m = "SubtensorModule";
    for &netuid in &all {
        let k = [n(netuid)];
        state.put(m, "NetworksAdded", &k, &Value::bool(true))?;
        state.put_num(m, "SubnetworkN", &k, 0)?;
        state.put(m, "SubnetOwner", &k, &account(owner))?;
        state.put_num(m, "Burn", &k, rules.burn.into())?;
        state.put_num(m, "MinBurn", &k, rules.burn.into())?;
        state.put_num(m, "ServingRateLimit", &k, rules.serving_rate_limit.into())?;
        state.put_num(m, "MaxRegistrationsPerBlock", &k, rules.max_registrations_per_block.into())?;
        state.put_num(m, "TargetRegistrationsPerInterval", &k, rules.target_registrations_per_interval.into())?;
        state.put_num(m, "MaxAllowedValidators", &k, 64)?;
        state.put(m, "NetworkRegistrationAllowed", &k, &Value::bool(true))?;
    }
    state.put_num(m, "TotalNetworks", &[], all.len() as u128)?;
    Ok(())
}

/// Start of a block: the per-block registration count starts again.
pub fn on_initialize(b: &mut Block<'_>) -> Result<(), StateError> {
    for netuid in subnets(&b.state)? {
        let k = [n(netuid)];
        if b.state.num("SubtensorModule", "RegistrationsThisBlock", &k)? != 0 {
            b.state.put_num("SubtensorModule", "RegistrationsThisBlock", &k, 0)?;
        }
        let interval = b.state.num("SubtensorModule", "AdjustmentInterval", &k)?.max(1);
        if u128::from(b.number) % interval == 0 && b.state.num("SubtensorModule", "RegistrationsThisInterval", &k)? != 0
        {
            b.state.put_num("SubtensorModule", "RegistrationsThisInterval", &k, 0)?;
            b.state.put_num("SubtensorModule", "BurnRegistrationsThisInterval", &k, 0)?;
        }
    }
    Ok(())
}

/// End of a block: validator permits by stake weight.
pub fn on_finalize(b: &mut Block<'_>) -> Result<(), StateError> {
    for netuid in subnets(&b.state)? {
        let k = [n(netuid)];
        let weights: Vec<u128> =
            hotkeys(&b.state, netuid)?.iter().map(|h| stake_weight(&b.state, h, netuid)).collect::<Result<_, _>>()?;
        let max = b.state.num("SubtensorModule", "MaxAllowedValidators", &k)? as usize;
        let threshold = b.state.num("SubtensorModule", "StakeThreshold", &[])?;
        let mut order: Vec<usize> =
            (0..weights.len()).filter(|i| weights[*i] > 0 && weights[*i] >= threshold).collect();
        order.sort_by(|a, b| weights[*b].cmp(&weights[*a]).then(a.cmp(b)));
        let mut permits = vec![false; weights.len()];
        for i in order.into_iter().take(max) {
            permits[i] = true;
        }
        let now: Vec<bool> = b
            .state
            .get("SubtensorModule", "ValidatorPermit", &k)?
            .map(|v| items(&v).into_iter().filter_map(as_bool).collect())
            .unwrap_or_default();
        if now != permits {
            let v = Value::unnamed_composite(permits.into_iter().map(Value::bool));
            b.state.put("SubtensorModule", "ValidatorPermit", &k, &v)?;
        }
    }
    Ok(())
}

/// The hotkeys of a subnet in uid order (`Keys`).
pub fn hotkeys(state: &State<'_>, netuid: u16) -> Result<Vec<AccountId>, StateError> {
    let count = state.num("SubtensorModule", "SubnetworkN", &[n(netuid)])?;
    (0..count)
        .map(|uid| {
            let v = state.get("SubtensorModule", "Keys", &[n(netuid), n(uid)])?;
            Ok(v.as_ref().and_then(value_account).unwrap_or(AccountId([0; 32])))
        })
        .collect()
}

/// A hotkey's alpha on a subnet (`TotalHotkeyAlpha`), in rao.
pub fn alpha_of(state: &State<'_>, hotkey: &AccountId, netuid: u16) -> Result<u128, StateError> {
    state.num("SubtensorModule", "TotalHotkeyAlpha", &[account(hotkey), n(netuid)])
}

/// `TaoWeight` as a fraction of `u64::MAX`: how much root stake counts on a subnet.
pub fn tao_weight(state: &State<'_>) -> Result<(u128, u128), StateError> {
    Ok((state.num("SubtensorModule", "TaoWeight", &[])?, u128::from(u64::MAX)))
}

/// Stake weight on a subnet: its alpha plus `TaoWeight` × its root stake (what `total_stake`
/// and validator permits use).
pub fn stake_weight(state: &State<'_>, hotkey: &AccountId, netuid: u16) -> Result<u128, StateError> {
    let alpha = alpha_of(state, hotkey, netuid)?;
    if netuid == ROOT {
        return Ok(alpha);
    }
    let tao = alpha_of(state, hotkey, ROOT)?;
    let (num, den) = tao_weight(state)?;
    Ok(alpha + tao.saturating_mul(num) / den)
}

/// Dispatches a signed call.
pub fn dispatch(b: &mut Block<'_>, origin: &AccountId, call: &DecodedCall) -> Dispatch {
    let arg = |name: &str| call.arg(name);
    let num = |name: &str| arg(name).and_then(value_u128).unwrap_or(0);
    let acc = |name: &str| arg(name).and_then(value_account);
    match (call.pallet.as_str(), call.name.as_str()) {
        ("SubtensorModule", "burned_register") => {
            let hotkey = acc("hotkey").ok_or(DispatchError::BadOrigin)?;
            burned_register(b, origin, num("netuid") as u16, &hotkey)
        }
        ("SubtensorModule", "serve_axon") => serve(b, origin, call, true),
        ("SubtensorModule", "serve_prometheus") => serve(b, origin, call, false),
        ("SubtensorModule", "add_stake") => {
            let hotkey = acc("hotkey").ok_or(DispatchError::BadOrigin)?;
            add_stake(b, origin, &hotkey, num("netuid") as u16, num("amount_staked"))
        }
        ("Balances", "transfer_keep_alive" | "transfer_allow_death") => {
            let dest = arg("dest").and_then(lookup).ok_or(DispatchError::Token("CannotCreate"))?;
            transfer(b, origin, &dest, num("value"), call.name == "transfer_keep_alive")
        }
        ("Balances", "transfer_all") => {
            let dest = arg("dest").and_then(lookup).ok_or(DispatchError::Token("CannotCreate"))?;
            let keep_alive = arg("keep_alive").and_then(as_bool).unwrap_or(true);
            let free = Account::read(&b.state, origin)?.free;
            let ed = existential_deposit(&b.state)?;
            let amount = if keep_alive { free.saturating_sub(ed) } else { free };
            transfer(b, origin, &dest, amount, keep_alive)
        }
        ("Sudo", "sudo") => sudo(b, origin, arg("call")),
        _ => Err(DispatchError::module("System", "CallFiltered")),
    }
}

/// `MultiAddress::Id(account)` → the account.
fn lookup(v: &Value<u32>) -> Option<AccountId> {
    match &v.value {
        ValueDef::Variant(var) if var.name == "Id" => var.values.values().next().and_then(value_account),
        _ => value_account(v),
    }
}

fn existential_deposit(state: &State<'_>) -> Result<u128, StateError> {
    let v = crate::extrinsic::storage::constant(&state.md, "Balances", "ExistentialDeposit")?;
    Ok(value_u128(&v).unwrap_or(0))
}

fn burned_register(b: &mut Block<'_>, coldkey: &AccountId, netuid: u16, hotkey: &AccountId) -> Dispatch {
    let m = "SubtensorModule";
    let k = [n(netuid)];
    let st = &b.state;
    if netuid == ROOT {
        return Err(DispatchError::subtensor("RegistrationNotPermittedOnRootSubnet"));
    }
    if st.get(m, "NetworksAdded", &k)?.as_ref().and_then(as_bool) != Some(true) {
        return Err(DispatchError::subtensor("SubnetNotExists"));
    }
    if st.get(m, "NetworkRegistrationAllowed", &k)?.as_ref().and_then(as_bool) != Some(true) {
        return Err(DispatchError::subtensor("SubNetRegistrationDisabled"));
    }
    if st.num(m, "RegistrationsThisBlock", &k)? >= st.num(m, "MaxRegistrationsPerBlock", &k)? {
        return Err(DispatchError::subtensor("TooManyRegistrationsThisBlock"));
    }
    if st.num(m, "RegistrationsThisInterval", &k)? >= st.num(m, "TargetRegistrationsPerInterval", &k)? * 3 {
        return Err(DispatchError::subtensor("TooManyRegistrationsThisInterval"));
    }
    if st.exists(m, "Uids", &[n(netuid), account(hotkey)])? {
        return Err(DispatchError::subtensor("HotKeyAlreadyRegisteredInSubNet"));
    }
    let burn = st.num(m, "Burn", &k)?;
    let mut cold = Account::read(st, coldkey)?;
    if cold.free < burn {
        return Err(DispatchError::subtensor("NotEnoughBalanceToStake"));
    }
    let owner = st.get(m, "Owner", &[account(hotkey)])?.as_ref().and_then(value_account);
    let owned = owner.is_some_and(|o| o.0 != [0; 32]);
    if owned && owner != Some(*coldkey) {
        return Err(DispatchError::subtensor("NonAssociatedColdKey"));
    }
    let uid = st.num(m, "SubnetworkN", &k)?;
    if uid >= st.num(m, "MaxAllowedUids", &k)? {
        return Err(DispatchError::subtensor("NoNeuronIdAvailable"));
    }
    // The burn.
    cold.free -= burn;
    cold.write(&mut b.state, coldkey)?;
    b.deposit("Balances", "Withdraw", vec![account(coldkey), n(burn)])?;
    let issuance = b.state.num("Balances", "TotalIssuance", &[])?;
    b.state.put_num("Balances", "TotalIssuance", &[], issuance.saturating_sub(burn))?;
    let recycled = b.state.num(m, "RAORecycledForRegistration", &k)?;
    b.state.put_num(m, "RAORecycledForRegistration", &k, recycled + burn)?;
    // The hotkey's account.
    if !owned {
        b.state.put(m, "Owner", &[account(hotkey)], &account(coldkey))?;
        push_account(&mut b.state, "OwnedHotkeys", coldkey, hotkey)?;
        push_account(&mut b.state, "StakingHotkeys", coldkey, hotkey)?;
    }
    // The neuron.
    let block = b.number;
    let st = &mut b.state;
    st.put_num(m, "Uids", &[n(netuid), account(hotkey)], uid)?;
    st.put(m, "Keys", &[n(netuid), n(uid)], &account(hotkey))?;
    st.put_num(m, "SubnetworkN", &k, uid + 1)?;
    st.put(m, "IsNetworkMember", &[account(hotkey), n(netuid)], &Value::bool(true))?;
    st.put_num(m, "BlockAtRegistration", &[n(netuid), n(uid)], block.into())?;
    push_vec(st, "Active", netuid, Value::bool(true))?;
    push_vec(st, "LastUpdate", netuid, n(block))?;
    push_vec(st, "ValidatorPermit", netuid, Value::bool(false))?;
    for item in ["RegistrationsThisBlock", "RegistrationsThisInterval", "BurnRegistrationsThisInterval"] {
        let c = st.num(m, item, &k)?;
        st.put_num(m, item, &k, c + 1)?;
    }
    b.deposit(m, "NeuronRegistered", vec![n(netuid), n(uid), account(hotkey)])?;
    Ok(())
}

/// Appends to a per-subnet vector item (`Active`, `LastUpdate`, `ValidatorPermit`).
fn push_vec(state: &mut State<'_>, item: &str, netuid: u16, v: Value) -> Result<(), StateError> {
    let k = [n(netuid)];
    let mut all: Vec<Value> = state
        .get("SubtensorModule", item, &k)?
        .map(|x| items(&x).into_iter().cloned().map(super::state::strip).collect())
        .unwrap_or_default();
    all.push(v);
    state.put("SubtensorModule", item, &k, &Value::unnamed_composite(all))
}

/// Adds `who` to the account list at `item(key)` unless it is there.
fn push_account(state: &mut State<'_>, item: &str, key: &AccountId, who: &AccountId) -> Result<(), StateError> {
    let mut list: Vec<AccountId> = state
        .get("SubtensorModule", item, &[account(key)])?
        .map(|x| items(&x).into_iter().filter_map(value_account).collect())
        .unwrap_or_default();
    if !list.contains(who) {
        list.push(*who);
    }
    let v = Value::unnamed_composite(list.iter().map(account));
    state.put("SubtensorModule", item, &[account(key)], &v)
}

/// What the runtime accepts as an address of `ip_type` (Subtensor's `is_valid_ip_address`,
/// 0.0.0.0 allowed: it un-serves), with 127.0.0.1 allowed when the devnet's rules say so.
pub fn valid_ip(ip_type: u8, ip: u128, allow_localhost: bool) -> bool {
    match ip_type {
        4 => ip < u128::from(u32::MAX) && (allow_localhost || ip != 0x7f00_0001),
        6 => ip != 0 && ip != u128::MAX && ip != 1,
        _ => false,
    }
}

fn serve(b: &mut Block<'_>, hotkey: &AccountId, call: &DecodedCall, axon: bool) -> Dispatch {
    let m = "SubtensorModule";
    let num = |name: &str| call.arg(name).and_then(value_u128).unwrap_or(0);
    let netuid = num("netuid") as u16;
    let registered_somewhere = subnets(&b.state)?
        .into_iter()
        .map(|s| b.state.exists(m, "Uids", &[n(s), account(hotkey)]))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .any(|x| x);
    if !registered_somewhere {
        return Err(DispatchError::subtensor("HotKeyNotRegisteredInNetwork"));
    }
    let ip_type = num("ip_type") as u8;
    if ip_type != 4 && ip_type != 6 {
        return Err(DispatchError::subtensor("InvalidIpType"));
    }
    let ip = num("ip");
    if !valid_ip(ip_type, ip, b.rules.allow_localhost_axon) {
        return Err(DispatchError::subtensor("InvalidIpAddress"));
    }
    let item = if axon { "Axons" } else { "Prometheus" };
    let key = [n(netuid), account(hotkey)];
    let last = b.state.get(m, item, &key)?;
    let last_block = last.as_ref().and_then(|v| crate::extrinsic::call::field(v, "block")).and_then(value_u128);
    let limit = b.state.num(m, "ServingRateLimit", &[n(netuid)])?;
    if let Some(last) = last_block.filter(|l| *l != 0) {
        if limit != 0 && u128::from(b.number).saturating_sub(last) < limit {
            return Err(DispatchError::subtensor("ServingRateLimitExceeded"));
        }
    }
    let mut fields = vec![
        ("block", n(b.number)),
        ("version", n(num("version"))),
        ("ip", n(ip)),
        ("port", n(num("port"))),
        ("ip_type", n(ip_type)),
    ];
    if axon {
        fields.push(("protocol", n(num("protocol"))));
        fields.push(("placeholder1", n(num("placeholder1"))));
        fields.push(("placeholder2", n(num("placeholder2"))));
    }
    b.state.put(m, item, &key, &Value::named_composite(fields))?;
    b.deposit(m, if axon { "AxonServed" } else { "PrometheusServed" }, vec![n(netuid), account(hotkey)])?;
    Ok(())
}

fn add_stake(b: &mut Block<'_>, coldkey: &AccountId, hotkey: &AccountId, netuid: u16, tao: u128) -> Dispatch {
    let m = "SubtensorModule";
    if b.state.get(m, "NetworksAdded", &[n(netuid)])?.as_ref().and_then(as_bool) != Some(true) {
        return Err(DispatchError::subtensor("SubnetNotExists"));
    }
    let owner = b.state.get(m, "Owner", &[account(hotkey)])?.as_ref().and_then(value_account);
    if owner.is_none_or(|o| o.0 == [0; 32]) {
        return Err(DispatchError::subtensor("HotKeyAccountNotExists"));
    }
    if tao < MIN_STAKE {
        return Err(DispatchError::subtensor("AmountTooLow"));
    }
    let mut cold = Account::read(&b.state, coldkey)?;
    if cold.free < tao {
        return Err(DispatchError::subtensor("NotEnoughBalanceToStake"));
    }
    cold.free -= tao;
    cold.write(&mut b.state, coldkey)?;
    // The stable mechanism: one alpha per TAO.
    let alpha = tao;
    let hk = [account(hotkey), n(netuid)];
    let total_alpha = b.state.num(m, "TotalHotkeyAlpha", &hk)?;
    let total_shares = b.state.num(m, "TotalHotkeyShares", &hk)?;
    // Shares are U64F64 (`bits` = value × 2^64).
    let new_shares = if total_shares == 0 || total_alpha == 0 {
        alpha << 64
    } else {
        alpha.saturating_mul(total_shares) / total_alpha
    };
    let ak = [account(hotkey), account(coldkey), n(netuid)];
    let mine = b.state.num(m, "Alpha", &ak)?;
    b.state.put_num(m, "Alpha", &ak, mine + new_shares)?;
    b.state.put_num(m, "TotalHotkeyShares", &hk, total_shares + new_shares)?;
    b.state.put_num(m, "TotalHotkeyAlpha", &hk, total_alpha + alpha)?;
    for (item, add) in [("SubnetTAO", tao), ("SubnetAlphaOut", alpha)] {
        let v = b.state.num(m, item, &[n(netuid)])?;
        b.state.put_num(m, item, &[n(netuid)], v + add)?;
    }
    let total = b.state.num(m, "TotalStake", &[])?;
    b.state.put_num(m, "TotalStake", &[], total + tao)?;
    push_account(&mut b.state, "StakingHotkeys", coldkey, hotkey)?;
    b.deposit(m, "StakeAdded", vec![account(coldkey), account(hotkey), n(tao), n(alpha), n(netuid), n(0u8)])?;
    Ok(())
}

/// Credits `amount` to `who`, creating the account (`NewAccount`, `Endowed`) when new.
fn credit(b: &mut Block<'_>, who: &AccountId, amount: u128) -> Dispatch {
    let mut acc = Account::read(&b.state, who)?;
    let new = acc.providers == 0 && acc.free == 0;
    if new && amount < existential_deposit(&b.state)? {
        return Err(DispatchError::Token("BelowMinimum"));
    }
    acc.free += amount;
    if new {
        acc.providers = 1;
    }
    acc.write(&mut b.state, who)?;
    if new {
        b.deposit("System", "NewAccount", vec![account(who)])?;
        b.deposit("Balances", "Endowed", vec![account(who), n(amount)])?;
    }
    Ok(())
}

fn transfer(b: &mut Block<'_>, from: &AccountId, to: &AccountId, amount: u128, keep_alive: bool) -> Dispatch {
    let mut src = Account::read(&b.state, from)?;
    if src.free < amount {
        return Err(DispatchError::Token("FundsUnavailable"));
    }
    if keep_alive && src.free - amount < existential_deposit(&b.state)? {
        return Err(DispatchError::Token("NotExpendable"));
    }
    if from == to {
        b.deposit("Balances", "Transfer", vec![account(from), account(to), n(amount)])?;
        return Ok(());
    }
    src.free -= amount;
    src.write(&mut b.state, from)?;
    credit(b, to, amount)?;
    b.deposit("Balances", "Transfer", vec![account(from), account(to), n(amount)])?;
    Ok(())
}

/// `Sudo.sudo(call)`: the sudo key dispatches `call` as root. The devnet's root calls:
/// `Balances.force_set_balance` (funding).
fn sudo(b: &mut Block<'_>, origin: &AccountId, call: Option<&Value<u32>>) -> Dispatch {
    let key = b.state.get("Sudo", "Key", &[])?.as_ref().and_then(value_account);
    if key != Some(*origin) {
        return Err(DispatchError::module("Sudo", "RequireSudo"));
    }
    let inner = call.and_then(runtime_call);
    let result = match inner {
        Some((pallet, name, args)) if pallet == "Balances" && name == "force_set_balance" => {
            let who = args.iter().find(|(n, _)| n == "who").and_then(|(_, v)| lookup(v));
            let free = args.iter().find(|(n, _)| n == "new_free").and_then(|(_, v)| value_u128(v));
            match (who, free) {
                (Some(who), Some(free)) => force_set_balance(b, &who, free),
                _ => Err(DispatchError::BadOrigin),
            }
        }
        _ => Err(DispatchError::module("System", "CallFiltered")),
    };
    let sudo_result = match &result {
        Ok(()) => Value::unnamed_variant("Ok", [Value::unnamed_composite([])]),
        Err(DispatchError::Fault(_)) => return result,
        Err(e) => Value::unnamed_variant("Err", [e.to_value(&b.state)?]),
    };
    b.deposit("Sudo", "Sudid", vec![sudo_result])?;
    Ok(())
}

fn force_set_balance(b: &mut Block<'_>, who: &AccountId, free: u128) -> Dispatch {
    let mut acc = Account::read(&b.state, who)?;
    let new = acc.providers == 0 && acc.free == 0;
    let issuance = b.state.num("Balances", "TotalIssuance", &[])?;
    b.state.put_num("Balances", "TotalIssuance", &[], issuance.saturating_sub(acc.free).saturating_add(free))?;
    acc.free = free;
    if new {
        acc.providers = 1;
    }
    acc.write(&mut b.state, who)?;
    if new {
        b.deposit("System", "NewAccount", vec![account(who)])?;
        b.deposit("Balances", "Endowed", vec![account(who), n(free)])?;
    }
    b.deposit("Balances", "BalanceSet", vec![account(who), n(free)])?;
    Ok(())
}

/// Named arguments of a call, as decoded.
type Args = Vec<(String, Value<u32>)>;

/// A `RuntimeCall` value taken apart: pallet, call and named arguments.
fn runtime_call(v: &Value<u32>) -> Option<(String, String, Args)> {
    let ValueDef::Variant(outer) = &v.value else { return None };
    let inner = outer.values.values().next()?;
    let ValueDef::Variant(call) = &inner.value else { return None };
    let args = match &call.values {
        scale_value::Composite::Named(f) => f.clone(),
        scale_value::Composite::Unnamed(f) => f.iter().enumerate().map(|(i, v)| (i.to_string(), v.clone())).collect(),
    };
    Some((outer.name.clone(), call.name.clone(), args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_rules_are_the_runtimes_with_localhost_optional() {
        let v4 = |a: u8, b: u8, c: u8, d: u8| u128::from(u32::from_be_bytes([a, b, c, d]));
        assert!(!valid_ip(4, v4(127, 0, 0, 1), false), "the runtime refuses 127.0.0.1");
        assert!(valid_ip(4, v4(127, 0, 0, 1), true), "a devnet may allow it");
        assert!(valid_ip(4, v4(127, 0, 0, 2), false), "other loopback addresses pass");
        assert!(valid_ip(4, 0, false), "0.0.0.0 un-serves");
        assert!(!valid_ip(4, u128::from(u32::MAX), false));
        assert!(!valid_ip(6, 1, true), "::1");
        assert!(!valid_ip(5, 1, true), "bad type");
    }
}
