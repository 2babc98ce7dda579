//! When a miner refuses the caller itself — not the request — and what the caller can do.
//!
//! SN27 miners refuse with the SDK's blacklist answer, HTTP 403 `Forbidden. Key is blacklisted:
//! {reason}.`, and three reasons matter to a renter (SN27 `neurons/miner.py`, `base_blacklist`):
//! - `Unrecognized hotkey`: the caller is not registered on the subnet;
//! - `Not enough stake!`: below the validator stake (1024 TAO in 1.8.x, 10 000 from 2.x);
//! - `Blacklisted a {Synapse} request from a non-updated hotkey: {hotkey}`: the version gate of
//!   v2.x — the caller's on-chain `prometheus_info.version` is below the miner's minimal
//!   validator version (221 for SN27 2.2.1).
//!
//! nicompute's own miner words them "Unrecognized hotkey: …" and "Insufficient stake: …". The
//! match is on the 403 shape first and keywords of the reason second, in this one place, so
//! `a --explain`, the allocation error and `list_r` name the same fix.

use serde::Serialize;

/// The prefix the SDK's axon puts before a blacklist reason.
const BLACKLISTED: &str = "Key is blacklisted:";
/// SN27 2.2.1's minimal validator version, as `prometheus set` should stamp it.
pub const SN27_MINIMAL_VALIDATOR_VERSION: u32 = 221;

/// Which of the miner's admission checks the caller failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Not registered on the subnet.
    Registration,
    /// Not enough stake.
    Stake,
    /// Its on-chain (prometheus) version is below the miner's minimum.
    Version,
    /// On the miner's own blacklist: nothing the caller can do.
    Blacklist,
}

/// A miner's refusal of the caller, with the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallerRefusal {
    pub gate: Gate,
    /// The miner's reason as it sent it.
    pub reason: String,
    /// What the caller can do, as a command where there is one.
    pub fix: String,
}

impl Gate {
    pub fn fix(self) -> String {
        match self {
            Gate::Registration => {
                "register your hotkey on the subnet: `nicompute subnet register` (the miner admits registered callers only)"
                    .into()
            }
            Gate::Stake => "the miner admits callers with a validator's stake only (SN27: 1024 TAO in 1.8.x, 10000 from 2.x): \
                 stake to your hotkey with `nicompute stake add --amount TAO`"
                .into(),
            Gate::Version => format!(
                "the miner admits callers whose on-chain version is at least its minimal validator version (SN27 2.2.1: \
                 {SN27_MINIMAL_VALIDATOR_VERSION}): stamp yours with `nicompute prometheus set --version \
                 {SN27_MINIMAL_VALIDATOR_VERSION}`"
            ),
            Gate::Blacklist => "the miner blacklisted your hotkey; choose another miner".into(),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Gate::Registration => "not registered",
            Gate::Stake => "stake too low",
            Gate::Version => "version too low",
            Gate::Blacklist => "blacklisted",
        }
    }
}

/// Classifies a failed request by its status and message (`Forbidden. Key is blacklisted: Not
/// enough stake!.`). Only 403 blacklist answers are refusals of the caller.
pub fn classify(status: Option<u16>, message: &str) -> Option<CallerRefusal> {
    if status.is_some_and(|s| s != 403) {
        return None;
    }
    let at = message.find(BLACKLISTED)?;
    let reason = message[at + BLACKLISTED.len()..].trim().trim_end_matches('.').trim().to_owned();
    let lower = reason.to_ascii_lowercase();
    let gate = if lower.contains("non-updated") || lower.contains("version") || lower.contains("outdated") {
        Gate::Version
    } else if lower.contains("stake") {
        Gate::Stake
    } else if lower.contains("unrecognized") || lower.contains("not registered") || lower.contains("metagraph") {
        Gate::Registration
    } else {
        Gate::Blacklist
    };
    Some(CallerRefusal { gate, fix: gate.fix(), reason })
}

/// The same from the text nicompute keeps of a failure (`… (403)` at its end, as the allocator
/// and `sync` write it).
pub fn classify_text(text: &str) -> Option<CallerRefusal> {
    let status =
        text.trim_end().strip_suffix(')').and_then(|t| t.rsplit_once('(')).and_then(|(_, code)| code.parse().ok());
    classify(status, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sn27_reasons() {
        let version = classify(
            Some(403),
            "Forbidden. Key is blacklisted: Blacklisted a Allocate request from a non-updated hotkey: 5Fxyz.",
        )
        .expect("refusal");
        assert_eq!(version.gate, Gate::Version);
        assert!(version.fix.contains("prometheus set --version 221"), "{}", version.fix);
        assert_eq!(version.reason, "Blacklisted a Allocate request from a non-updated hotkey: 5Fxyz");
        let stake = classify(Some(403), "Forbidden. Key is blacklisted: Not enough stake!.").expect("refusal");
        assert_eq!(stake.gate, Gate::Stake);
        assert!(stake.fix.contains("stake add"));
        assert_eq!(
            classify(Some(403), "Forbidden. Key is blacklisted: Unrecognized hotkey.").map(|r| r.gate),
            Some(Gate::Registration)
        );
        assert_eq!(
            classify(Some(403), "Forbidden. Key is blacklisted: Blacklisted hotkey.").map(|r| r.gate),
            Some(Gate::Blacklist)
        );
    }

    #[test]
    fn nicompute_miner_reasons_and_stored_texts() {
        let t = "Forbidden. Key is blacklisted: Insufficient stake: 0.000 TAO is below the validator threshold of 1024 TAO. (403)";
        assert_eq!(classify_text(t).map(|r| r.gate), Some(Gate::Stake));
        let t = "Forbidden. Key is blacklisted: Unrecognized hotkey: 5F is not registered on subnet 27. (403)";
        assert_eq!(classify_text(t).map(|r| r.gate), Some(Gate::Registration));
    }

    #[test]
    fn other_failures_are_not_refusals_of_the_caller() {
        assert_eq!(classify(Some(401), "Not Verified with error: Signature mismatch"), None);
        assert_eq!(classify(Some(500), "Forbidden. Key is blacklisted: x"), None);
        assert_eq!(classify_text("Service disconnected: Server disconnected (503)"), None);
        assert_eq!(classify_text("request failed (408)"), None);
    }
}
