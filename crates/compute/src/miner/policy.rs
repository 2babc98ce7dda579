//! Who may talk to the miner: the axon's blacklist and priority functions.
//!
//! A caller must be registered on the subnet (present in the metagraph, refreshed periodically)
//! with at least the validator stake threshold, unless the operator lists it explicitly.
//! `--blacklist-hotkeys` always refuses; a non-empty `--whitelist-hotkeys` refuses everyone not
//! on it (SN27 v1.8.3 inverts this check and lets non-whitelisted callers through; we do what the
//! name says). Callers are served by stake when handlers are busy.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use bittensor::subtensor::metagraph::Metagraph;

/// Operator settings.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    pub whitelist: HashSet<String>,
    pub blacklist: HashSet<String>,
    /// The validator stake threshold in TAO (SN27: 1024; 0 on a devnet).
    pub min_stake_tao: f64,
}

/// The policy with the latest known stakes.
#[derive(Debug)]
pub struct CallerPolicy {
    cfg: PolicyConfig,
    netuid: u16,
    /// hotkey → `S` (TAO); `None` until the first metagraph arrives.
    stakes: RwLock<Option<HashMap<String, f32>>>,
}

impl CallerPolicy {
    pub fn new(cfg: PolicyConfig, netuid: u16) -> Self {
        Self { cfg, netuid, stakes: RwLock::new(None) }
    }

    /// Takes the registered hotkeys and their stakes from a fresh metagraph.
    pub fn update(&self, mg: &Metagraph) {
        let map = mg.neurons.iter().map(|n| (n.hotkey.clone(), n.stake_tao)).collect();
        *self.stakes.write().unwrap_or_else(|e| e.into_inner()) = Some(map);
    }

    /// Sets the registered hotkeys by hand (tests, fixed deployments).
    pub fn set_stakes(&self, stakes: HashMap<String, f32>) {
        *self.stakes.write().unwrap_or_else(|e| e.into_inner()) = Some(stakes);
    }

    pub fn is_loaded(&self) -> bool {
        self.stakes.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// `Some(reason)` refuses the caller (HTTP 403 with that reason).
    pub fn refuse(&self, hotkey: Option<&str>) -> Option<String> {
        let Some(hotkey) = hotkey else { return Some("no hotkey in the request".into()) };
        if self.cfg.blacklist.contains(hotkey) {
            return Some("Blacklisted hotkey".into());
        }
        if !self.cfg.whitelist.is_empty() && !self.cfg.whitelist.contains(hotkey) {
            return Some(format!("Hotkey {hotkey} is not whitelisted"));
        }
        if self.cfg.whitelist.contains(hotkey) {
            return None;
        }
        let guard = self.stakes.read().unwrap_or_else(|e| e.into_inner());
        let Some(stakes) = guard.as_ref() else {
            return Some("the miner has not loaded the metagraph yet; try again shortly".into());
        };
        match stakes.get(hotkey) {
            None => Some(format!("Unrecognized hotkey: {hotkey} is not registered on subnet {}", self.netuid)),
            Some(s) if f64::from(*s) < self.cfg.min_stake_tao => Some(format!(
                "Insufficient stake: {s:.3} TAO is below the validator threshold of {} TAO",
                self.cfg.min_stake_tao
            )),
            Some(_) => None,
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
        };
        let p = CallerPolicy::new(cfg, 27);
        p.set_stakes([("rich".to_owned(), 5000.0), ("poor".to_owned(), 10.0)].into_iter().collect());
        p
    }

    #[test]
    fn registration_stake_and_lists() {
        let p = policy(&[], &["banned"]);
        assert_eq!(p.refuse(Some("rich")), None);
        assert!(p.refuse(Some("poor")).is_some_and(|r| r.starts_with("Insufficient stake")));
        assert!(p.refuse(Some("stranger")).is_some_and(|r| r.starts_with("Unrecognized hotkey")));
        assert_eq!(p.refuse(Some("banned")).as_deref(), Some("Blacklisted hotkey"));
        assert!(p.refuse(None).is_some());
        assert!(p.priority(Some("rich")) > p.priority(Some("poor")));
    }

    #[test]
    fn whitelist_means_only_these() {
        let p = policy(&["poor"], &[]);
        assert_eq!(p.refuse(Some("poor")), None, "listed: allowed despite low stake");
        assert!(p.refuse(Some("rich")).is_some_and(|r| r.contains("not whitelisted")), "unlisted: refused");
    }

    #[test]
    fn nothing_passes_before_the_metagraph_loads() {
        let p = CallerPolicy::new(PolicyConfig::default(), 27);
        assert!(p.refuse(Some("anyone")).is_some_and(|r| r.contains("not loaded")));
    }
}
