//! The embedded chain's runtime: what a Subtensor node's runtime does with a signed extrinsic,
//! for the calls the devnet implements, written against finney's own metadata.
//!
//! - **Validation** (the transaction pool's checks, [`validate`]): the extrinsic decodes with the
//!   metadata, its signature verifies over the real signing payload (call, era, nonce, tip,
//!   metadata-hash mode; spec and transaction versions, genesis hash, the era's birth block hash),
//!   its nonce is the account's, and the signer can pay the fee. Refusals are the runtime's
//!   `InvalidTransaction` variants, worded as a node words them.
//! - **Application** ([`Block::apply`]): the nonce is bumped, the fee withdrawn
//!   (`Balances.Withdraw`, `TransactionPayment.TransactionFeePaid`), the call dispatched in a
//!   storage layer of its own (thrown away when it fails), and `System.ExtrinsicSuccess` or
//!   `System.ExtrinsicFailed` with the runtime's `DispatchError` recorded — the very SCALE of
//!   finney's event types.
//! - **Blocks** ([`Block`]): a timestamp inherent first (as on a real chain), the extrinsics,
//!   then end-of-block work (validator permits), `System.Events`, and a header whose hash is the
//!   blake2-256 of its SCALE encoding.
//!
//! The calls themselves are in `pallets.rs`; the runtime APIs in `apis.rs`.

use parity_scale_codec::{Compact, Encode};
use scale_value::Value;

use super::pallets::{self, DispatchError};
use super::spec::{SPEC_VERSION, TRANSACTION_VERSION};
use super::state::{default_value, field_type, set_field, State, StateError};
use super::store::{BlockRow, Store};
use crate::extrinsic::call::{account, decode_call, field, value_u128, DecodedCall};
use crate::extrinsic::signed::{self, DecodedExtrinsic};
use crate::extrinsic::{Era, ExtensionParams};
use crate::keys::AccountId;

/// The chain's rules a devnet owner may choose (written at genesis into the storage items the
/// real runtime keeps them in, so clients read them as on finney).
#[derive(Debug, Clone)]
pub struct Rules {
    /// `SubtensorModule.Burn`: what `burned_register` costs, in rao.
    pub burn: u64,
    /// `SubtensorModule.ServingRateLimit`: blocks between two serves of one hotkey (0: none).
    pub serving_rate_limit: u64,
    /// `SubtensorModule.MaxRegistrationsPerBlock`.
    pub max_registrations_per_block: u16,
    /// `SubtensorModule.TargetRegistrationsPerInterval` (three times it per interval at most).
    pub target_registrations_per_interval: u16,
    /// Accept 127.0.0.1 as an axon address (the runtime refuses it; a devnet on one machine may
    /// want it). Other loopback addresses are accepted either way, as by the runtime.
    pub allow_localhost_axon: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            burn: 1_000_000_000,
            serving_rate_limit: 0,
            max_registrations_per_block: 64,
            target_registrations_per_interval: 1024,
            allow_localhost_axon: true,
        }
    }
}

/// A transaction pool refusal: the runtime's `TransactionValidityError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Does not decode (`author_submitExtrinsic` error 1001).
    BadFormat(String),
    BadProof,
    Stale,
    Future,
    Payment,
    AncientBirthBlock,
    /// Another transaction with this nonce waits in the pool (error 1014).
    TooLowPriority,
    /// A call the devnet does not implement (`Pallet.call`).
    Unsupported(String),
}

impl Invalid {
    /// The JSON-RPC error code, message and data a Substrate node answers with.
    pub fn rpc(&self) -> (i64, &'static str, String) {
        let invalid = |d: &str| (1010, "Invalid Transaction", d.to_owned());
        match self {
            Invalid::BadFormat(why) => (1001, "Extrinsic has invalid format", why.clone()),
            Invalid::BadProof => invalid("Transaction has a bad signature"),
            Invalid::Stale => invalid("Transaction is outdated"),
            Invalid::Future => invalid("Transaction will be valid in the future"),
            Invalid::Payment => invalid("Inability to pay some fees (e.g. account balance too low)"),
            Invalid::AncientBirthBlock => invalid("Transaction has an ancient birth block"),
            Invalid::Unsupported(call) => invalid(&format!(
                "Transaction call is not expected: the nicompute devnet does not implement {call} \
                 (the real runtime does: devnet up --chain runtime)"
            )),
            Invalid::TooLowPriority => {
                (1014, "Priority is too low", "a transaction with the same nonce is already in the pool".to_owned())
            }
        }
    }
}

/// A signed extrinsic that passed the pool's checks.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The extrinsic as submitted (length prefix included).
    pub bytes: Vec<u8>,
    /// blake2-256 of the bytes (the transaction hash clients see).
    pub hash: [u8; 32],
    pub signer: AccountId,
    pub nonce: u64,
    pub call: DecodedCall,
    pub fee: u128,
}

/// What a call weighs and whether it pays a fee: (ref_time, pays).
pub fn weight_of(call: &DecodedCall) -> (u64, bool) {
    match (call.pallet.as_str(), call.name.as_str()) {
        ("SubtensorModule", "serve_axon" | "serve_prometheus") => (46_000_000, false),
        ("SubtensorModule", "burned_register") => (354_200_000, true),
        ("SubtensorModule", "add_stake") => (345_500_000, true),
        ("Sudo", _) => (10_000_000, false),
        _ => (190_000_000, true),
    }
}

/// The devnet's fee, in rao: 1 rao per 1 000 units of weight plus 1 000 rao per byte, for calls
/// that pay one (serving and sudo calls do not, as in Subtensor).
pub fn fee_of(call: &DecodedCall, len: usize) -> u128 {
    let (weight, pays) = weight_of(call);
    if pays {
        u128::from(weight / 1_000) + 1_000 * len as u128
    } else {
        0
    }
}

/// A `System.Account` entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Account {
    pub nonce: u64,
    pub consumers: u64,
    pub providers: u64,
    pub sufficients: u64,
    pub free: u128,
    pub reserved: u128,
    pub frozen: u128,
    pub flags: u128,
}

impl Account {
    pub fn read(state: &State<'_>, who: &AccountId) -> Result<Self, StateError> {
        let v = state.get("System", "Account", &[account(who)])?;
        let Some(v) = v else { return Ok(Self::default()) };
        let n = |v: Option<&Value<u32>>| v.and_then(value_u128).unwrap_or(0);
        let data = field(&v, "data");
        let d = |name: &str| n(data.and_then(|d| field(d, name)));
        Ok(Self {
            nonce: n(field(&v, "nonce")) as u64,
            consumers: n(field(&v, "consumers")) as u64,
            providers: n(field(&v, "providers")) as u64,
            sufficients: n(field(&v, "sufficients")) as u64,
            free: d("free"),
            reserved: d("reserved"),
            frozen: d("frozen"),
            flags: d("flags"),
        })
    }

    pub fn write(&self, state: &mut State<'_>, who: &AccountId) -> Result<(), StateError> {
        let v = Value::named_composite([
            ("nonce", Value::u128(self.nonce.into())),
            ("consumers", Value::u128(self.consumers.into())),
            ("providers", Value::u128(self.providers.into())),
            ("sufficients", Value::u128(self.sufficients.into())),
            (
                "data",
                Value::named_composite([
                    ("free", Value::u128(self.free)),
                    ("reserved", Value::u128(self.reserved)),
                    ("frozen", Value::u128(self.frozen)),
                    // `ExtraFlags(u128)`: a newtype with one unnamed field.
                    ("flags", Value::unnamed_composite([Value::u128(self.flags)])),
                ]),
            ),
        ]);
        state.put("System", "Account", &[account(who)], &v)
    }
}

/// The hash of block `n`, if the chain still knows it.
fn block_hash(store: &Store, n: u64) -> Result<Option<[u8; 32]>, StateError> {
    Ok(store.block_by_number(n)?.map(|b| b.hash))
}

/// The pool's checks against the state after `best` (the next block is `best + 1`). `pending`
/// is how many transactions of each signer wait in the pool ahead of this one.
pub fn validate(
    state: &State<'_>,
    store: &Store,
    genesis: [u8; 32],
    best: u64,
    bytes: &[u8],
    pending_of: impl Fn(&AccountId) -> u64,
) -> Result<Result<Checked, Invalid>, StateError> {
    let md = state.md.clone();
    let xt: DecodedExtrinsic = match signed::decode(&md, bytes) {
        Ok(x) => x,
        Err(e) => return Ok(Err(Invalid::BadFormat(e.to_string()))),
    };
    let call = match decode_call(&md, &xt.call) {
        Ok(c) => c,
        Err(e) => return Ok(Err(Invalid::BadFormat(e.to_string()))),
    };
    let (Some(era), Some(nonce)) = (xt.values.era, xt.values.nonce) else {
        return Ok(Err(Invalid::BadFormat("the extrinsic carries no era or nonce".into())));
    };
    let current = best + 1;
    let birth_hash = match era {
        Era::Immortal => Some(genesis),
        Era::Mortal { .. } => block_hash(store, era.birth(current))?,
    };
    let Some(birth_hash) = birth_hash else { return Ok(Err(Invalid::AncientBirthBlock)) };
    let implicit = ExtensionParams {
        spec_version: SPEC_VERSION,
        transaction_version: TRANSACTION_VERSION,
        genesis_hash: genesis,
        era,
        era_birth_hash: birth_hash,
        nonce,
        tip: xt.values.tip.unwrap_or(0),
    };
    if xt.verify(&md, &implicit).is_err() {
        return Ok(Err(Invalid::BadProof));
    }
    let acc = Account::read(state, &xt.signer)?;
    let expected = acc.nonce + pending_of(&xt.signer);
    if nonce < acc.nonce {
        return Ok(Err(Invalid::Stale));
    }
    if nonce < expected {
        return Ok(Err(Invalid::TooLowPriority));
    }
    if nonce > expected {
        return Ok(Err(Invalid::Future));
    }
    let fee = fee_of(&call, bytes.len()) + xt.values.tip.unwrap_or(0);
    if fee > 0 && acc.free < fee {
        return Ok(Err(Invalid::Payment));
    }
    Ok(Ok(Checked {
        bytes: bytes.to_vec(),
        hash: sp_crypto_hashing::blake2_256(bytes),
        signer: xt.signer,
        nonce,
        call,
        fee,
    }))
}

/// One event for `System.Events`: `pallet.name` with its fields in the metadata's order.
pub fn event(state: &State<'_>, pallet: &str, name: &str, values: Vec<Value>) -> Result<Value, StateError> {
    let md = &state.md;
    let p = md.pallet(pallet)?;
    let variant = p.event_ty.and_then(|t| md.variant(t, name)).ok_or_else(|| {
        crate::extrinsic::ExtrinsicError::Unknown(format!("the runtime has no event {pallet}.{name}"))
    })?;
    let inner = if variant.fields.first().is_some_and(|f| f.name.is_some()) {
        Value::named_variant(
            name,
            variant.fields.iter().zip(values).map(|(f, v)| (f.name.clone().unwrap_or_default(), v)),
        )
    } else {
        Value::unnamed_variant(name, values)
    };
    Ok(Value::unnamed_variant(pallet, [inner]))
}

/// A `DispatchEventInfo` value (`weight`, `class`, `pays_fee`) shaped by the metadata.
fn dispatch_info(state: &State<'_>, weight: u64, mandatory: bool, pays: bool) -> Result<Value, StateError> {
    let md = &state.md;
    let sys = md.pallet("System")?;
    let ty = sys
        .event_ty
        .and_then(|t| md.variant(t, "ExtrinsicSuccess"))
        .and_then(|v| v.fields.first())
        .map(|f| f.ty.id)
        .ok_or_else(|| crate::extrinsic::ExtrinsicError::Unknown("System.ExtrinsicSuccess".into()))?;
    let mut info = default_value(md, ty);
    if let Some(wty) = field_type(md, ty, "weight") {
        let mut w = default_value(md, wty);
        set_field(&mut w, "ref_time", Value::u128(weight.into()));
        set_field(&mut w, "proof_size", Value::u128(0));
        set_field(&mut info, "weight", w);
    }
    set_field(&mut info, "class", Value::unnamed_variant(if mandatory { "Mandatory" } else { "Normal" }, []));
    set_field(&mut info, "pays_fee", Value::unnamed_variant(if pays { "Yes" } else { "No" }, []));
    Ok(info)
}

/// What happened to one extrinsic of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Success,
    Failed(String),
    /// No longer valid when the block was built (a watcher hears `invalid`).
    Dropped(Invalid),
}

/// A block being built over the best block's state.
pub struct Block<'a> {
    pub state: State<'a>,
    pub number: u64,
    pub parent: BlockRow,
    pub timestamp_ms: u64,
    extrinsics: Vec<Vec<u8>>,
    events: Vec<Value>,
    pub rules: &'a Rules,
}

impl std::fmt::Debug for Block<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("number", &self.number)
            .field("extrinsics", &self.extrinsics.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Block<'a> {
    /// Starts block `parent + 1` at `timestamp_ms`, with its timestamp inherent applied.
    pub fn start(state: State<'a>, parent: BlockRow, timestamp_ms: u64, rules: &'a Rules) -> Result<Self, StateError> {
        let number = parent.number + 1;
        let mut b = Block { state, number, parent, timestamp_ms, extrinsics: Vec::new(), events: Vec::new(), rules };
        b.state.put_num("System", "Number", &[], number.into())?;
        b.state.put("System", "ParentHash", &[], &Value::from_bytes(b.parent.hash))?;
        let parent_number = b.parent.number;
        b.state.put("System", "BlockHash", &[Value::u128(parent_number.into())], &Value::from_bytes(b.parent.hash))?;
        pallets::on_initialize(&mut b)?;
        // The timestamp inherent: an unsigned `Timestamp.set { now }`, extrinsic 0 of every block.
        let call = crate::extrinsic::Call::new("Timestamp", "set")
            .arg("now", Value::u128(timestamp_ms.into()))
            .encode(&b.state.md)
            .map_err(StateError::Codec)?;
        let mut body = vec![0x04];
        body.extend_from_slice(&call);
        b.extrinsics.push(body.encode());
        b.state.put_num("Timestamp", "Now", &[], timestamp_ms.into())?;
        let info = dispatch_info(&b.state, 5_000_000, true, true)?;
        let ev = event(&b.state, "System", "ExtrinsicSuccess", vec![info])?;
        b.record(ev);
        Ok(b)
    }

    fn record(&mut self, event: Value) {
        let index = self.extrinsics.len().saturating_sub(1) as u32;
        self.events.push(Value::named_composite([
            ("phase", Value::unnamed_variant("ApplyExtrinsic", [Value::u128(index.into())])),
            ("event", event),
            ("topics", Value::unnamed_composite([])),
        ]));
    }

    /// Records an event of the extrinsic being applied.
    pub fn deposit(&mut self, pallet: &str, name: &str, values: Vec<Value>) -> Result<(), StateError> {
        let ev = event(&self.state, pallet, name, values)?;
        self.record(ev);
        Ok(())
    }

    /// Applies a checked extrinsic: re-checks its nonce and fee against this block's state, bumps
    /// the nonce, takes the fee, dispatches the call in its own layer.
    pub fn apply(&mut self, tx: &Checked) -> Result<Applied, StateError> {
        let mut acc = Account::read(&self.state, &tx.signer)?;
        if tx.nonce != acc.nonce {
            return Ok(Applied::Dropped(if tx.nonce < acc.nonce { Invalid::Stale } else { Invalid::Future }));
        }
        if tx.fee > 0 && acc.free < tx.fee {
            return Ok(Applied::Dropped(Invalid::Payment));
        }
        self.extrinsics.push(tx.bytes.clone());
        acc.nonce += 1;
        acc.free -= tx.fee;
        if acc.providers == 0 {
            acc.providers = 1;
        }
        acc.write(&mut self.state, &tx.signer)?;
        if tx.fee > 0 {
            self.deposit("Balances", "Withdraw", vec![account(&tx.signer), Value::u128(tx.fee)])?;
            let issuance = self.state.num("Balances", "TotalIssuance", &[])?;
            self.state.put_num("Balances", "TotalIssuance", &[], issuance.saturating_sub(tx.fee))?;
        }
        let (weight, pays) = weight_of(&tx.call);
        self.state.begin();
        let before = self.events.len();
        let result = pallets::dispatch(self, &tx.signer, &tx.call);
        let failure = match result {
            Ok(()) => {
                self.state.commit();
                None
            }
            Err(DispatchError::Fault(e)) => return Err(e),
            Err(err) => {
                self.state.rollback();
                self.events.truncate(before);
                Some(err)
            }
        };
        if tx.fee > 0 || pays {
            self.deposit(
                "TransactionPayment",
                "TransactionFeePaid",
                vec![account(&tx.signer), Value::u128(tx.fee), Value::u128(0)],
            )?;
        }
        let info = dispatch_info(&self.state, weight, false, pays)?;
        Ok(match failure {
            None => {
                self.deposit("System", "ExtrinsicSuccess", vec![info])?;
                Applied::Success
            }
            Some(err) => {
                let value = err.to_value(&self.state)?;
                self.deposit("System", "ExtrinsicFailed", vec![value, info])?;
                Applied::Failed(err.to_string())
            }
        })
    }

    /// Ends the block: end-of-block work, `System.Events`, the header and its hash.
    pub fn finish(mut self) -> Result<(BlockRow, super::store::Changes), StateError> {
        pallets::on_finalize(&mut self)?;
        let events = Value::unnamed_composite(self.events.clone());
        self.state.put("System", "Events", &[], &events)?;
        self.state.put_num("System", "EventCount", &[], self.events.len() as u128)?;
        let changes = self.state.into_changes();
        let extrinsics_root = sp_crypto_hashing::blake2_256(&self.extrinsics.encode());
        let mut root_input = self.parent.state_root.to_vec();
        root_input.extend(changes.encode());
        let state_root = sp_crypto_hashing::blake2_256(&root_input);
        let mut row = BlockRow {
            number: self.number,
            hash: [0; 32],
            parent: self.parent.hash,
            state_root,
            extrinsics_root,
            extrinsics: self.extrinsics,
        };
        row.hash = sp_crypto_hashing::blake2_256(&row.header_bytes());
        Ok((row, changes))
    }
}

/// Writes the genesis state and returns block 0.
pub fn genesis(
    store: &Store,
    md: std::sync::Arc<crate::extrinsic::Metadata>,
    sudo: &AccountId,
    netuids: &[u16],
    rules: &Rules,
    salt: &[u8],
    timestamp_ms: u64,
) -> Result<BlockRow, StateError> {
    let mut state = State::new(store, md, 0);
    state.put("Sudo", "Key", &[], &account(sudo))?;
    state.put_num("Timestamp", "Now", &[], timestamp_ms.into())?;
    state.put_num("System", "Number", &[], 0)?;
    pallets::genesis(&mut state, netuids, sudo, rules)?;
    let changes = state.into_changes();
    let mut root_input = salt.to_vec();
    root_input.extend(changes.encode());
    let mut row = BlockRow {
        number: 0,
        hash: [0; 32],
        parent: [0; 32],
        state_root: sp_crypto_hashing::blake2_256(&root_input),
        extrinsics_root: sp_crypto_hashing::blake2_256(&Vec::<Vec<u8>>::new().encode()),
        extrinsics: Vec::new(),
    };
    row.hash = sp_crypto_hashing::blake2_256(&row.header_bytes());
    store.commit_block(&row, &changes)?;
    Ok(row)
}

/// `Compact<u32>`-length-prefixed bytes, as `Vec<u8>` encodes.
pub fn with_len(bytes: &[u8]) -> Vec<u8> {
    let mut out = Compact(bytes.len() as u32).encode();
    out.extend_from_slice(bytes);
    out
}
