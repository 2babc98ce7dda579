//! After an allocation: giving it back (SN27's release, kept pending when the miner cannot be
//! reached), asking whether it still runs, and refreshing every miner's specs (`sync`).

use std::sync::Arc;
use std::time::Duration;

use bittensor::dendrite::{AxonTarget, Dendrite, Response};
use bittensor::subtensor::metagraph::Metagraph;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{failure_text, reason_of, status_of, AllocationStore};
use crate::protocol::{Allocate, Specs as SpecsSynapse};
use crate::specs::Specs;

/// What a deallocation request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeallocOutcome {
    /// The miner confirmed the release.
    Released,
    /// The miner holds no allocation for this key (ended already, or another key's).
    NotHolder(String),
    /// The miner answered no for another reason (it could not remove the machine).
    Refused(String),
    /// No answer: unreachable, timed out, or our request was refused before reaching the handler.
    Unreachable(String),
}

/// SN27's deallocation: `Allocate{timeline: 0, checking: false, public_key}`, classified.
pub(super) async fn send_release(
    dendrite: &Dendrite,
    target: &AxonTarget,
    regkey_pem: &str,
    timeout: Duration,
) -> DeallocOutcome {
    let synapse = Allocate { timeline: 0, checking: false, public_key: regkey_pem.to_owned(), ..Allocate::default() };
    let r = dendrite.call(target, synapse, timeout).await;
    if !r.is_success() {
        return DeallocOutcome::Unreachable(failure_text(&r));
    }
    let output = &r.synapse.output;
    if status_of(output) {
        return DeallocOutcome::Released;
    }
    match reason_of(output) {
        // SN27 miners refuse a deallocation without a reason only when the key does not match.
        None => DeallocOutcome::NotHolder("the miner holds no allocation for this key".into()),
        Some(r) if r.contains("not the holder") || r == "no allocation" => DeallocOutcome::NotHolder(r),
        Some(r) => DeallocOutcome::Refused(r),
    }
}

/// Releases the allocation of `hotkey` made with `regkey_pem`. On [`DeallocOutcome::Released`]
/// the record is finished; when the miner cannot be reached it is marked pending (kept, unlike
/// SN27, which forgets it first and leaves the machine allocated); otherwise it is left as is
/// for the caller to decide.
pub async fn deallocate(
    dendrite: &Dendrite,
    target: &AxonTarget,
    hotkey: &str,
    regkey_pem: &str,
    store: &dyn AllocationStore,
    timeout: Duration,
) -> DeallocOutcome {
    let outcome = send_release(dendrite, target, regkey_pem, timeout).await;
    match &outcome {
        DeallocOutcome::Released => store.finish(hotkey),
        DeallocOutcome::Unreachable(e) => store.mark_pending(hotkey, &format!("deallocation not confirmed: {e}")),
        DeallocOutcome::NotHolder(_) | DeallocOutcome::Refused(_) => {}
    }
    tracing::info!(hotkey, ?outcome, "deallocate");
    outcome
}

/// A request the miner did not answer (unreachable, timed out, or refused before its handler),
/// with what the dendrite saw: the caller decides whether to retry later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoAnswer(pub String);

/// Why a miner has no specs after `sync` (stored as SN27's `no_specs_count` reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecsError {
    #[error(transparent)]
    NoAnswer(#[from] NoAnswer),
    #[error("no specs in the answer")]
    Empty,
    #[error("unreadable specs: {0}")]
    Unreadable(String),
    #[error("the request was not sent (sync was stopped)")]
    NotSent,
}

/// Whether the miner still runs the allocation made with `regkey_pem` (SN27's check with
/// `timeline: 0`).
pub async fn still_allocated(
    dendrite: &Dendrite,
    target: &AxonTarget,
    regkey_pem: &str,
    timeout: Duration,
) -> Result<bool, NoAnswer> {
    let synapse = Allocate { timeline: 0, checking: true, public_key: regkey_pem.to_owned(), ..Allocate::default() };
    let r = dendrite.call(target, synapse, timeout).await;
    if r.is_success() {
        Ok(status_of(&r.synapse.output))
    } else {
        Err(NoAnswer(failure_text(&r)))
    }
}

/// Asks every serving axon of `metagraph` for its specs, `concurrency` at a time; `progress`
/// gets (done, total) after each answer. Results in uid order: the `specs_output` JSON text when
/// it parses as specs, else why not.
pub async fn sync_specs(
    dendrite: &Dendrite,
    metagraph: &Metagraph,
    timeout: Duration,
    concurrency: usize,
    progress: &(dyn Fn(usize, usize) + Send + Sync),
) -> Vec<(String, Result<String, SpecsError>)> {
    let targets: Vec<AxonTarget> = metagraph
        .neurons
        .iter()
        .filter(|n| n.axon.serving)
        .map(|n| AxonTarget { ip: n.axon.ip.clone(), port: n.axon.port, hotkey: n.hotkey.clone() })
        .collect();
    let total = targets.len();
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for (i, target) in targets.iter().enumerate() {
        let (dendrite, target, limit) = (dendrite.clone(), target.clone(), limit.clone());
        set.spawn(async move {
            let Ok(_permit) = limit.acquire_owned().await else {
                return (i, Err(SpecsError::NotSent));
            };
            let r = dendrite.call(&target, SpecsSynapse::default(), timeout).await;
            (i, specs_result(&r))
        });
    }
    let mut results: Vec<Option<Result<String, SpecsError>>> = vec![None; total];
    let mut done = 0;
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined {
            results[i] = Some(r);
        }
        done += 1;
        progress(done, total);
    }
    targets.into_iter().zip(results).map(|(t, r)| (t.hotkey, r.unwrap_or(Err(SpecsError::NotSent)))).collect()
}

fn specs_result(r: &Response<SpecsSynapse>) -> Result<String, SpecsError> {
    if !r.is_success() {
        return Err(NoAnswer(failure_text(r)).into());
    }
    let text = r.synapse.specs_output.trim();
    if text.is_empty() {
        return Err(SpecsError::Empty);
    }
    match Specs::from_json(text) {
        Ok(_) => Ok(text.to_owned()),
        Err(e) => Err(SpecsError::Unreadable(e.to_string())),
    }
}
