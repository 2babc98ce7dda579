//! Who may talk to the miner: the axon's blacklist and priority functions.
//!
//! A caller must be registered on the subnet (present in the metagraph, refreshed periodically)
//! with at least the validator stake threshold, unless the operator lists it explicitly.
//! `--blacklist-hotkeys` always refuses; a non-empty `--whitelist-hotkeys` refuses everyone not
//! on it (SN27 v1.8.3 inverts this check and lets non-whitelisted callers through; we do what the
//! name says). Callers are served by stake when handlers are busy.
//!
//! SN27 v2.x's version gate, optional (`--min-caller-version`): the validators are the neurons
//! with the stake threshold; once more than `--version-gate-threshold` percent of them (SN27: 90)
//! publish an on-chain prometheus version of at least the minimum, only those pass, and everyone
//! else is refused with SN27's words. Below that share everyone passes, as in SN27. The reasons
//! are the contract's ([`crate::protocol::refusal::reason`]), which renters read back.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use bittensor::subtensor::metagraph::Metagraph;

use crate::protocol::refusal::reason;

/// SN27's `--miner.whitelist.updated.threshold` default (percent).
pub const SN27_VERSION_THRESHOLD_PCT: f64 = 90.0;

/// Operator settings.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub whitelist: HashSet<String>,
    pub blacklist: HashSet<String>,
    /// The validator stake threshold in TAO (SN27: 1024 in 1.8.x, 10 000 in 2.x; 0 on a devnet).
    pub min_stake_tao: f64,
    /// The version gate's minimum caller version (prometheus version, e.g. 221); `None`: off.
    pub min_caller_version: Option<u32>,
    /// Percent of validators that must be updated before the gate closes (SN27: 90).
    pub version_threshold_pct: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            whitelist: HashSet::new(),
            blacklist: HashSet::new(),
            min_stake_tao: 0.0,
            min_caller_version: None,
            version_threshold_pct: SN27_VERSION_THRESHOLD_PCT,
        }
    }
}

/// One neuron as the policy sees it: hotkey, stake (TAO), on-chain prometheus version.
pub type NeuronView = (String, f32, u32);

/// The policy with the latest known stakes.
#[derive(Debug)]
pub struct CallerPolicy {
    cfg: PolicyConfig,
    netuid: u16,
    /// hotkey → `S` (TAO); `None` until the first metagraph arrives.
    stakes: RwLock<Option<HashMap<String, f32>>>,
    /// While the version gate is closed: the validators whose version is recent enough.
    updated: RwLock<Option<HashSet<String>>>,
}

impl CallerPolicy {
    pub fn new(cfg: PolicyConfig, netuid: u16) -> Self {
        Self { cfg, netuid, stakes: RwLock::new(None), updated: RwLock::new(None) }
    }

    /// Takes the registered hotkeys, their stakes and versions from a fresh metagraph.
    pub fn update(&self, mg: &Metagraph) {
        self.update_from(mg.neurons.iter().map(|n| (n.hotkey.clone(), n.stake_tao, n.prometheus.version)));
    }

    /// [`Self::update`] from plain views of the neurons.
    pub fn update_from(&self, neurons: impl IntoIterator<Item = NeuronView>) {
        let neurons: Vec<NeuronView> = neurons.into_iter().collect();
        let gate = self.cfg.min_caller_version.and_then(|min| {
            let validators: Vec<&NeuronView> =
                neurons.iter().filter(|(_, s, _)| f64::from(*s) >= self.cfg.min_stake_tao).collect();
            let updated: HashSet<String> =
                validators.iter().filter(|(_, _, v)| *v >= min).map(|(h, _, _)| h.clone()).collect();
            let share =
                if validators.is_empty() { 0.0 } else { 100.0 * updated.len() as f64 / validators.len() as f64 };
            // SN27: at or below the threshold, everyone passes.
            (share > self.cfg.version_threshold_pct).then_some(updated)
        });
        let map = neurons.into_iter().map(|(h, s, _)| (h, s)).collect();
        *self.stakes.write().unwrap_or_else(|e| e.into_inner()) = Some(map);
        *self.updated.write().unwrap_or_else(|e| e.into_inner()) = gate;
    }

    /// Whether the version gate is closed (only updated validators pass).
    pub fn version_gate_closed(&self) -> bool {
        self.updated.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Sets the registered hotkeys by hand (tests, fixed deployments).
    pub fn set_stakes(&self, stakes: HashMap<String, f32>) {
        *self.stakes.write().unwrap_or_else(|e| e.into_inner()) = Some(stakes);
    }

    pub fn is_loaded(&self) -> bool {
        self.stakes.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// `Some(reason)` refuses the caller of `synapse` (HTTP 403 with that reason).
    pub fn refuse(&self, hotkey: Option<&str>, synapse: &str) -> Option<String> {
        let Some(hotkey) = hotkey else { return Some(reason::NO_HOTKEY.into()) };
        if self.cfg.blacklist.contains(hotkey) {
            return Some(reason::blacklisted());
        }
        if !self.cfg.whitelist.is_empty() && !self.cfg.whitelist.contains(hotkey) {
            return Some(reason::not_whitelisted(hotkey));
        }
        if self.cfg.whitelist.contains(hotkey) {
            return None;
        }
        let guard = self.stakes.read().unwrap_or_else(|e| e.into_inner());
        let Some(stakes) = guard.as_ref() else {
            return Some(reason::NOT_READY.into());
        };
        match stakes.get(hotkey) {
            None => return Some(reason::unregistered(hotkey, self.netuid)),
            Some(s) if f64::from(*s) < self.cfg.min_stake_tao => {
                return Some(reason::stake(*s, self.cfg.min_stake_tao))
            }
            Some(_) => {}
        }
        let updated = self.updated.read().unwrap_or_else(|e| e.into_inner());
        match updated.as_ref() {
            Some(set) if !set.contains(hotkey) => Some(reason::version(synapse, hotkey)),
            _ => None,
        }
    }

    /// The caller's stake: more stake, served first.
    pub fn priority(&self, hotkey: Option<&str>) -> f64 {
        let guard = self.stakes.read().unwrap_or_else(|e| e.into_inner());
        hotkey.and_then(|h| guard.as_ref()?.get(h).copied()).map_or(0.0, f64::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(white: &[&str], black: &[&str]) -> CallerPolicy {
        let cfg = PolicyConfig {
            whitelist: white.iter().map(|s| (*s).to_owned()).collect(),
            blacklist: black.iter().map(|s| (*s).to_owned()).collect(),
            min_stake_tao: 1024.0,
            ..PolicyConfig::default()
        };
        let p = CallerPolicy::new(cfg, 27);
        p.set_stakes([("rich".to_owned(), 5000.0), ("poor".to_owned(), 10.0)].into_iter().collect());
        p
    }

    #[test]
    fn registration_stake_and_lists() {
        let p = policy(&[], &["banned"]);
        assert_eq!(p.refuse(Some("rich"), "Allocate"), None);
        assert!(p.refuse(Some("poor"), "Allocate").is_some_and(|r| r.starts_with("Not enough stake!")));
        assert!(p.refuse(Some("stranger"), "Allocate").is_some_and(|r| r.starts_with("Unrecognized hotkey")));
        assert_eq!(p.refuse(Some("banned"), "Allocate").as_deref(), Some("Blacklisted hotkey"));
        assert!(p.refuse(None, "Allocate").is_some());
        assert!(p.priority(Some("rich")) > p.priority(Some("poor")));
    }

    #[test]
    fn whitelist_means_only_these() {
        let p = policy(&["poor"], &[]);
        assert_eq!(p.refuse(Some("poor"), "Specs"), None, "listed: allowed despite low stake");
        assert!(p.refuse(Some("rich"), "Specs").is_some_and(|r| r.starts_with("Not whitelisted")), "unlisted: refused");
    }

    #[test]
    fn nothing_passes_before_the_metagraph_loads() {
        let p = CallerPolicy::new(PolicyConfig::default(), 27);
        assert_eq!(p.refuse(Some("anyone"), "Specs").as_deref(), Some(reason::NOT_READY));
    }

    #[test]
    fn the_version_gate_closes_past_the_share_of_updated_validators() {
        let cfg = PolicyConfig { min_stake_tao: 1000.0, min_caller_version: Some(221), ..PolicyConfig::default() };
        let p = CallerPolicy::new(cfg, 27);
        let v = |name: &str, version| (name.to_owned(), 5000.0, version);
        // 9 of 10 validators updated: 90 %, not more than 90 → everyone passes (SN27's rule).
        let mut neurons: Vec<NeuronView> = (0..9).map(|i| v(&format!("new{i}"), 221)).collect();
        neurons.push(v("old", 183));
        neurons.push(("small".to_owned(), 1.0, 0)); // not a validator: not counted
        p.update_from(neurons.clone());
        assert!(!p.version_gate_closed());
        assert_eq!(p.refuse(Some("old"), "Allocate"), None);
        // 10 of 11: the gate closes; the old one gets SN27's words, which renters read back.
        neurons.push(v("new9", 230));
        p.update_from(neurons);
        assert!(p.version_gate_closed());
        assert_eq!(p.refuse(Some("new9"), "Allocate"), None);
        let r = p.refuse(Some("old"), "Allocate").expect("refused");
        assert_eq!(r, "Blacklisted a Allocate request from a non-updated hotkey: old");
        let back = crate::protocol::refusal::classify(Some(403), &format!("Forbidden. Key is blacklisted: {r}."));
        assert_eq!(back.map(|c| c.gate), Some(crate::protocol::refusal::Gate::Version));
    }
}
