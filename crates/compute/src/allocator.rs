//! The renter's side of SN27: choosing a miner, allocating it, and giving it back.
//!
//! SN27's `register.py` checks candidates all at once but then allocates them one by one with a
//! 60 s timeout each, forgets an allocation locally before the miner confirms its release, and
//! never says why a miner was passed over. This module keeps SN27's wire format and fixes those:
//! every candidate is checked in parallel under one deadline and the first "yes" is allocated
//! at once (later "yes" answers are the fallbacks); the allocation is recorded as an intent
//! *before* the miner is asked, so a crash can never leave a machine allocated with no local
//! trace; a miner that allocated but whose answer cannot be used is released again; a release
//! the miner did not confirm stays pending instead of being forgotten; and every candidate gets
//! a [`Verdict`] for `--explain`. Storage is behind [`AllocationStore`] so the CLI's database
//! and tests' [`MemoryStore`] plug in alike.
//!
//! One job per file: [`store`](AllocationStore) (the journal and its test double),
//! `candidates` (who is worth asking, and every miner's [`Verdict`]), `options` (what
//! [`allocate`] is asked and gives back), `run` (one [`allocate`] call) and `release`
//! (deallocation, liveness and [`sync_specs`]). The SSH banner check lives in
//! [`crate::ssh_banner`], shared with the Docker runtime.

mod candidates;
mod options;
mod release;
mod run;
pub mod signed;
mod store;

use bittensor::dendrite::Response;
use serde_json::{Map, Value};

use crate::protocol::refusal::{self, Refusal};

pub use self::candidates::{candidates, Candidate, Explain, Verdict};
pub use self::options::{AllocateError, AllocateFailure, AllocateOptions, Allocated, Stage, Timings};
pub use self::release::{
    deallocate, liveness, still_allocated, sync_specs, DeallocOutcome, Liveness, NoAnswer, SpecsError, SyncedSpecs,
};
pub use self::run::{allocate, allocate_hotkey, MAX_ALLOCATE_ATTEMPTS};
pub use self::store::{AllocationStore, MemoryRow, MemoryStore, RowState, StoreError};
pub use crate::ssh_banner::wait_for_ssh;

// How a miner's `Allocate` answer reads, for checks, allocations and releases alike.

fn status_of(output: &Map<String, Value>) -> bool {
    output.get("status").and_then(Value::as_bool).unwrap_or(false)
}

/// What a failed request says, for verdicts and pending notes.
pub fn failure_text_of<S>(r: &Response<S>) -> String {
    failure_text(r)
}

fn failure_text<S>(r: &Response<S>) -> String {
    let code = r.status_code().map_or_else(|| "no status".to_owned(), |c| c.to_string());
    match r.status_message() {
        Some(m) if !m.is_empty() => format!("{m} ({code})"),
        _ => format!("request failed ({code})"),
    }
}

/// The verdict of a failed request: the miner's refusal of our hotkey (its 403), or the failure.
fn failure_verdict<S>(r: &Response<S>) -> Verdict {
    let status = r.status_code().and_then(|c| u16::try_from(c).ok());
    match refusal::classify(status, r.status_message().unwrap_or("")) {
        Some(c) => Verdict::CallerRefused(c),
        None => Verdict::Error(failure_text(r)),
    }
}

/// A "no", by its code: `Taken` when the machine is allocated or busy (or SN27's bare no, which
/// its miners give only when a container runs), else `Refused` with the reason.
fn refusal(output: &Map<String, Value>) -> Verdict {
    let Some(r) = Refusal::read(output) else { return Verdict::Available };
    match (r.code, r.reason) {
        (Some(c), _) if c.is_taken() => Verdict::Taken,
        (None, None) => Verdict::Taken,
        (_, Some(reason)) => Verdict::Refused(reason),
        (Some(c), None) => Verdict::Refused(c.as_str().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refusals_are_classified() {
        let out = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(refusal(&out(json!({"status": false}))), Verdict::Taken);
        assert_eq!(
            refusal(&out(json!({"status": false, "reason": "already allocated", "code": "already_allocated"}))),
            Verdict::Taken
        );
        assert_eq!(refusal(&out(json!({"status": false, "reason": "another one", "code": "busy"}))), Verdict::Taken);
        // The text alone decides nothing: a reason without a code is a refusal with that reason.
        assert_eq!(
            refusal(&out(json!({"status": false, "reason": "already allocated"}))),
            Verdict::Refused("already allocated".into())
        );
        assert_eq!(
            refusal(&out(
                json!({"status": false, "reason": "gpu.count: requires 1 GPUs, has 0", "code": "requirement_mismatch"})
            )),
            Verdict::Refused("gpu.count: requires 1 GPUs, has 0".into())
        );
        assert!(status_of(&out(json!({"status": true}))));
        assert!(!status_of(&out(json!({"status": "yes"}))));
    }
}
