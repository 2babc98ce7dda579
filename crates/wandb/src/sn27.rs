//! SN27's shared state on wandb: what a validator publishes and what miners believe.
//!
//! Each SN27 validator keeps one run named `validator-<hotkey ss58>` in `neuralinternet/opencompute`
//! whose config carries `allocated_hotkeys` and `penalized_hotkeys`, signed with the hotkey: the
//! signature is sr25519 over the 32 raw bytes of `sha256(run id)`, stored as 128 hex characters
//! without `0x` (`compute/wandb/wandb.py`, `sign_run` / `verify_run`). A Python miner kills its
//! container when its hotkey is in no valid validator's `allocated_hotkeys`, so a renter that
//! allocates must publish here, and reading the union must reject what SN27 rejects.

use std::collections::BTreeSet;
use std::fmt;

use bittensor::keys::{AccountId, Keypair, Signature};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::client::{new_run_id, Run, WandbClient, DEFAULT_PER_PAGE};
use crate::error::WandbError;

/// SN27 v1.8.3's `__version_as_int__`, written as the run's `version`.
pub const SN27_VERSION: u64 = 183;

/// The display name of a validator's run.
pub fn validator_run_name(hotkey_ss58: &str) -> String {
    format!("validator-{hotkey_ss58}")
}

/// SN27's `get_allocated_hotkeys` filter: validator runs of `netuid` with an allocated list.
pub fn allocated_filter(netuid: u16) -> Value {
    json!({"$and": [
        {"config.role": "validator"},
        {"config.config.netuid": netuid},
        {"config.allocated_hotkeys": {"$exists": true}},
    ]})
}

/// SN27's `get_penalized_hotkeys` filter: validator runs of `netuid` with a penalized list.
pub fn penalized_filter(netuid: u16) -> Value {
    json!({"$and": [
        {"config.role": "validator"},
        {"config.config.netuid": netuid},
        {"config.penalized_hotkeys": {"$exists": true}},
    ]})
}

/// SN27's `get_run_id` filter: a validator's run found by display name.
pub fn run_name_filter(netuid: u16, hotkey_ss58: &str) -> Value {
    json!({"$and": [{"config.config.netuid": netuid}, {"display_name": validator_run_name(hotkey_ss58)}]})
}

/// SN27's run signature: sr25519 by `hotkey` over `sha256(run_id)`, hex without `0x`.
pub fn sign_run(run_id: &str, hotkey: &Keypair) -> String {
    hex::encode(hotkey.sign(&Sha256::digest(run_id.as_bytes())).0)
}

/// Why a run does not count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// No `hotkey` or no `signature` in the config.
    Unsigned,
    /// `hotkey` is not an SS58 address (prefix 42).
    BadHotkey(String),
    /// `signature` is not 128 hex characters.
    MalformedSignature,
    /// The signature does not verify for this run id and hotkey (forged, or copied from a run).
    BadSignature,
    /// Signed, but the caller does not accept the hotkey as a validator (e.g. stake below 1024).
    NotAValidator,
    /// A list that is not a list of strings.
    MalformedList(&'static str),
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsigned => f.write_str("unsigned (no hotkey or no signature)"),
            Self::BadHotkey(h) => write!(f, "hotkey {h:?} is not an SS58 address"),
            Self::MalformedSignature => f.write_str("signature is not 128 hex characters"),
            Self::BadSignature => f.write_str("signature does not verify for this run and hotkey"),
            Self::NotAValidator => f.write_str("hotkey is not a valid validator"),
            Self::MalformedList(key) => write!(f, "{key} is not a list of strings"),
        }
    }
}

/// The signer of `run` when its signature verifies as SN27's `verify_run` checks it.
pub fn check_run(run: &Run) -> Result<AccountId, Rejection> {
    let (Some(hotkey), Some(signature)) = (run.config.get("hotkey"), run.config.get("signature")) else {
        return Err(Rejection::Unsigned);
    };
    let (Some(hotkey), Some(signature)) = (hotkey.as_str(), signature.as_str()) else {
        return Err(Rejection::Unsigned);
    };
    if hotkey.is_empty() || signature.is_empty() {
        return Err(Rejection::Unsigned);
    }
    let account = AccountId::from_ss58(hotkey).map_err(|_| Rejection::BadHotkey(hotkey.chars().take(64).collect()))?;
    // Python's bytes.fromhex: either case, no 0x.
    let bytes: [u8; 64] =
        hex::decode(signature).ok().and_then(|b| b.try_into().ok()).ok_or(Rejection::MalformedSignature)?;
    if account.verify(&Sha256::digest(run.id.as_bytes()), &Signature(bytes)) {
        Ok(account)
    } else {
        Err(Rejection::BadSignature)
    }
}

/// SN27's `verify_run`: the run's signature verifies against its `hotkey`.
pub fn verify_run(run: &Run) -> bool {
    check_run(run).is_ok()
}

/// The SN27 keys of a validator run's config (others, like `stats`, stay untouched in [`Run`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatorRunConfig {
    pub hotkey: Option<String>,
    pub role: Option<String>,
    /// The validator's CLI config (without wallet/logging/axon); holds `netuid`.
    pub config: Option<Value>,
    pub version: Option<u64>,
    pub allocated_hotkeys: Option<Vec<String>>,
    pub penalized_hotkeys: Option<Vec<String>>,
    pub signature: Option<String>,
}

impl ValidatorRunConfig {
    /// Reads the SN27 keys of a run (absent or ill-typed keys read as `None`).
    pub fn from_run(run: &Run) -> Self {
        let c = &run.config;
        let text = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_owned);
        let list = |k: &str| string_list(c.get(k)?).ok();
        Self {
            hotkey: text("hotkey"),
            role: text("role"),
            config: c.get("config").cloned(),
            version: c.get("version").and_then(Value::as_u64),
            allocated_hotkeys: list("allocated_hotkeys"),
            penalized_hotkeys: list("penalized_hotkeys"),
            signature: text("signature"),
        }
    }

    /// `config.netuid`, when present.
    pub fn netuid(&self) -> Option<u64> {
        self.config.as_ref()?.get("netuid")?.as_u64()
    }
}

fn string_list(v: &Value) -> Result<Vec<String>, ()> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.iter().map(|i| i.as_str().map(str::to_owned).ok_or(())).collect(),
        _ => Err(()),
    }
}

/// Which of the validator's lists a publication replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Publication {
    /// `allocated_hotkeys` (SN27's `update_allocated_hotkeys`): every hotkey allocated by us.
    Allocated(Vec<String>),
    /// `penalized_hotkeys` (SN27's `update_penalized_hotkeys`).
    Penalized(Vec<String>),
}

/// The outcome of [`WandbClient::publish`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The run id to store (SN27 keeps it in `wandb_runs(hotkey, run_id)`).
    pub run_id: String,
    /// Whether the run was made now (no stored id, none found by name).
    pub created: bool,
    /// The signature written.
    pub signature: String,
}

/// Which lists [`WandbClient::shared_state`] reads; each is one paginated query, as in SN27.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lists {
    Allocated,
    Penalized,
    Both,
}

/// A list's config key and the filter that finds runs carrying it.
type ListQuery = (&'static str, fn(u16) -> Value);

/// The union of the lists of all validator runs that count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedState {
    pub allocated: BTreeSet<String>,
    pub penalized: BTreeSet<String>,
    /// Runs whose signature verified, whose hotkey the caller accepted and whose lists were well
    /// formed (each counted once).
    pub runs_counted: usize,
    /// Runs left out, by run id, with the reason.
    pub runs_rejected: Vec<(String, Rejection)>,
}

impl WandbClient {
    /// Finds the validator's run as SN27 does: by the stored run id when given and it still
    /// exists; else the first run (oldest; SN27 takes `runs[0]`) named `validator-<ss58>` with
    /// this netuid; `None` when there is neither.
    pub async fn find_validator_run(
        &self,
        hotkey_ss58: &str,
        netuid: u16,
        stored_run_id: Option<&str>,
    ) -> Result<Option<Run>, WandbError> {
        if let Some(id) = stored_run_id {
            if let Some(run) = self.run(id).await? {
                return Ok(Some(run));
            }
            tracing::info!(run_id = id, "stored wandb run no longer exists; looking it up by name");
        }
        let runs = self.first_runs(&run_name_filter(netuid, hotkey_ss58), DEFAULT_PER_PAGE).await?;
        Ok(runs.into_iter().next())
    }

    /// Publishes one of our lists, signed: finds the validator run (stored id, else by name) or
    /// creates it, sets `hotkey`, `role`, `config.netuid` (keeping the rest of `config`),
    /// `version`, the list and `signature`, and writes the whole config back, keeping every key we
    /// do not own (`stats`, `_wandb`, …). Returns the run id to store.
    pub async fn publish(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        stored_run_id: Option<&str>,
        publication: &Publication,
    ) -> Result<Published, WandbError> {
        let ss58 = hotkey.ss58();
        let (mut run, created) = match self.find_validator_run(&ss58, netuid, stored_run_id).await? {
            Some(run) => (run, false),
            None => (self.create_run(&new_run_id()).await?, true),
        };
        run.display_name = Some(validator_run_name(&ss58));
        let c = &mut run.config;
        c.insert("hotkey".into(), json!(ss58));
        c.insert("role".into(), json!("validator"));
        let mut inner = match c.get("config") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        inner.insert("netuid".into(), json!(netuid));
        c.insert("config".into(), Value::Object(inner));
        c.insert("version".into(), json!(SN27_VERSION));
        let (key, list) = match publication {
            Publication::Allocated(l) => ("allocated_hotkeys", l),
            Publication::Penalized(l) => ("penalized_hotkeys", l),
        };
        c.insert(key.into(), json!(list));
        let signature = sign_run(&run.id, hotkey);
        c.insert("signature".into(), json!(signature));
        self.update_run(&run).await?;
        tracing::info!(run_id = %run.id, created, list = key, entries = list.len(), "published to wandb");
        Ok(Published { run_id: run.id, created, signature })
    }

    /// The union of `allocated_hotkeys` / `penalized_hotkeys` over the validator runs of `netuid`
    /// that count: signature verified against the run's `hotkey`, and `validator_ok(hotkey)` (the
    /// miners' rule is stake ≥ 1024 in the metagraph; pass `|_| true` to accept any signer).
    /// Unsigned, forged and malformed runs are left out, with the reason.
    pub async fn shared_state(
        &self,
        netuid: u16,
        lists: Lists,
        validator_ok: impl Fn(&AccountId) -> bool,
    ) -> Result<SharedState, WandbError> {
        let mut state = SharedState::default();
        let mut seen = BTreeSet::new();
        let mut rejected = BTreeSet::new();
        let wanted: &[ListQuery] = match lists {
            Lists::Allocated => &[("allocated_hotkeys", allocated_filter)],
            Lists::Penalized => &[("penalized_hotkeys", penalized_filter)],
            Lists::Both => &[("allocated_hotkeys", allocated_filter), ("penalized_hotkeys", penalized_filter)],
        };
        for (key, filter) in wanted {
            for run in self.runs(&filter(netuid), DEFAULT_PER_PAGE).await? {
                let verdict = check_run(&run).and_then(|account| {
                    if !validator_ok(&account) {
                        return Err(Rejection::NotAValidator);
                    }
                    match run.config.get(*key) {
                        None => Ok(Vec::new()),
                        Some(v) => string_list(v).map_err(|()| Rejection::MalformedList(key)),
                    }
                });
                match verdict {
                    Ok(list) => {
                        let target =
                            if *key == "allocated_hotkeys" { &mut state.allocated } else { &mut state.penalized };
                        target.extend(list);
                        seen.insert(run.id.clone());
                    }
                    Err(why) => {
                        if rejected.insert(run.id.clone()) {
                            tracing::debug!(run_id = %run.id, "wandb run not counted: {why}");
                            state.runs_rejected.push((run.id.clone(), why));
                        }
                    }
                }
            }
        }
        // A run rejected for one list (a malformed list) is not counted even if the other was fine.
        state.runs_counted = seen.difference(&rejected).count();
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(id: &str, config: Value) -> Run {
        let Value::Object(config) = config else { panic!("object") };
        Run {
            id: id.into(),
            storage_id: None,
            display_name: None,
            state: None,
            config,
            wandb_internal: None,
            tags: vec![],
            description: None,
            notes: None,
            group: None,
        }
    }

    #[test]
    fn signed_runs_verify_and_tampering_is_caught() {
        let alice = Keypair::from_seed(&[7; 32]).unwrap();
        let sig = sign_run("abcd1234", &alice);
        assert_eq!(sig.len(), 128);
        assert!(!sig.starts_with("0x"));
        let good = run_with("abcd1234", json!({"hotkey": alice.ss58(), "signature": sig}));
        assert_eq!(check_run(&good), Ok(alice.account_id()));
        // Upper-case hex is accepted (bytes.fromhex), 0x is not.
        let upper = run_with("abcd1234", json!({"hotkey": alice.ss58(), "signature": sig.to_uppercase()}));
        assert!(verify_run(&upper));
        let prefixed = run_with("abcd1234", json!({"hotkey": alice.ss58(), "signature": format!("0x{sig}")}));
        assert_eq!(check_run(&prefixed), Err(Rejection::MalformedSignature));
        // The same signature on another run id (a copied config) does not verify.
        let copied = run_with("abcd1235", json!({"hotkey": alice.ss58(), "signature": sig}));
        assert_eq!(check_run(&copied), Err(Rejection::BadSignature));
        let unsigned = run_with("abcd1234", json!({"hotkey": alice.ss58()}));
        assert_eq!(check_run(&unsigned), Err(Rejection::Unsigned));
        let bad_key = run_with("abcd1234", json!({"hotkey": "nope", "signature": sig}));
        assert!(matches!(check_run(&bad_key), Err(Rejection::BadHotkey(_))));
    }

    #[test]
    fn validator_config_reads_sn27_keys() {
        let run = run_with(
            "r",
            json!({"hotkey": "5X", "role": "validator", "config": {"netuid": 27}, "version": 183,
                   "allocated_hotkeys": ["a", "b"], "penalized_hotkeys": [], "signature": "00", "stats": {}}),
        );
        let c = ValidatorRunConfig::from_run(&run);
        assert_eq!(c.netuid(), Some(27));
        assert_eq!(c.allocated_hotkeys, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(c.penalized_hotkeys, Some(vec![]));
        assert_eq!(c.version, Some(183));
        assert_eq!(c.role.as_deref(), Some("validator"));
    }
}
