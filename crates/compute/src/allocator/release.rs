//! After an allocation: giving it back (SN27's release, kept pending when the miner cannot be
//! reached), asking whether it still runs — with an answer that is definite or says it is not —
//! and refreshing every miner's specs (`sync`). Every call is signed ([`super::signed`]); an
//! allocation made with signed answers accepts only signed answers about it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bittensor::dendrite::{AxonTarget, Dendrite, Response};
use bittensor::subtensor::metagraph::Metagraph;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::signed::{self, Authenticity};
use super::{failure_text, AllocationStore};
use crate::protocol::refusal::{Code, Refusal};
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

/// SN27's deallocation: `Allocate{timeline: 0, checking: false, public_key}`, classified by the
/// answer's code. `signed_expected`: the answer must be signed (an unsigned or forged "released"
/// would make the renter forget a running machine); such an answer counts as no answer.
pub(super) async fn send_release(
    dendrite: &Dendrite,
    target: &AxonTarget,
    regkey_pem: &str,
    timeout: Duration,
    signed_expected: bool,
) -> DeallocOutcome {
    let synapse = Allocate { timeline: 0, checking: false, public_key: regkey_pem.to_owned(), ..Allocate::default() };
    let (r, auth) = signed::call(dendrite, target, synapse, timeout).await;
    if !r.is_success() {
        return DeallocOutcome::Unreachable(failure_text(&r));
    }
    if let Err(e) = auth.accept(signed_expected) {
        return DeallocOutcome::Unreachable(e);
    }
    let Some(no) = Refusal::read(&r.synapse.output) else { return DeallocOutcome::Released };
    match (no.code, no.reason) {
        (Some(c), reason) if c.is_absence() => {
            DeallocOutcome::NotHolder(reason.unwrap_or_else(|| "the miner holds no allocation for this key".into()))
        }
        (Some(c), reason) => DeallocOutcome::Refused(reason.unwrap_or_else(|| c.as_str().to_owned())),
        // SN27 miners refuse a deallocation without a reason only when the key does not match.
        (None, None) => DeallocOutcome::NotHolder("the miner holds no allocation for this key".into()),
        (None, Some(reason)) => DeallocOutcome::Refused(reason),
    }
}

/// Releases the allocation of `hotkey` made with `regkey_pem`. On [`DeallocOutcome::Released`]
/// the record is finished; when the miner cannot be reached it is marked pending (kept, unlike
/// SN27, which forgets it first and leaves the machine allocated); otherwise it is left as is
/// for the caller to decide.
#[allow(clippy::too_many_arguments)]
pub async fn deallocate(
    dendrite: &Dendrite,
    target: &AxonTarget,
    hotkey: &str,
    regkey_pem: &str,
    store: &dyn AllocationStore,
    timeout: Duration,
    signed_expected: bool,
) -> DeallocOutcome {
    let outcome = send_release(dendrite, target, regkey_pem, timeout, signed_expected).await;
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
    #[error("not asked: the sync's deadline passed before its turn (raise --concurrency or --timeout)")]
    NotSent,
}

/// What a miner says of an allocation (SN27's check with `timeline: 0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// It runs; the host key the miner signed, if it signs.
    Running { host_key: Option<String> },
    /// Definitely not here: the miner said so with a code (`no_allocation`, `not_holder`), or an
    /// SN27 peer gave its bare no. Only this lets a renter forget an allocation.
    Gone(String),
}

/// Whether the miner still runs the allocation made with `regkey_pem`: a definite answer, or
/// [`NoAnswer`] (unreachable, an answer that is not definite — `cannot_tell`, a fault, a reason
/// without a code — or, with `signed_expected`, one that is not signed).
pub async fn liveness(
    dendrite: &Dendrite,
    target: &AxonTarget,
    regkey_pem: &str,
    timeout: Duration,
    signed_expected: bool,
) -> Result<Liveness, NoAnswer> {
    let synapse = Allocate { timeline: 0, checking: true, public_key: regkey_pem.to_owned(), ..Allocate::default() };
    let (r, auth) = signed::call(dendrite, target, synapse, timeout).await;
    if !r.is_success() {
        return Err(NoAnswer(failure_text(&r)));
    }
    auth.accept(signed_expected).map_err(NoAnswer)?;
    let Some(no) = Refusal::read(&r.synapse.output) else {
        return Ok(Liveness::Running { host_key: auth.host_key().map(str::to_owned) });
    };
    match (no.code, no.reason) {
        (Some(c), reason) if c.is_absence() => Ok(Liveness::Gone(reason.unwrap_or_else(|| c.as_str().to_owned()))),
        (None, None) => Ok(Liveness::Gone("the miner holds no allocation for this key".into())),
        (Some(Code::CannotTell), reason) => {
            Err(NoAnswer(format!("the miner cannot tell: {}", reason.unwrap_or_default())))
        }
        (code, reason) => Err(NoAnswer(format!(
            "the miner answered no without saying the allocation is gone ({}): {}",
            code.map_or("no code", Code::as_str),
            reason.unwrap_or_default()
        ))),
    }
}

/// Whether the miner still runs the allocation made with `regkey_pem`: `Ok(false)` only on a
/// definite "not here" ([`Liveness::Gone`]); a forged answer is no answer.
pub async fn still_allocated(
    dendrite: &Dendrite,
    target: &AxonTarget,
    regkey_pem: &str,
    timeout: Duration,
) -> Result<bool, NoAnswer> {
    liveness(dendrite, target, regkey_pem, timeout, false).await.map(|l| matches!(l, Liveness::Running { .. }))
}

/// Specs as a miner sent them, and whether its answer was signed (a nicompute miner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedSpecs {
    /// The `specs_output` JSON text.
    pub json: String,
    pub signed: bool,
}

/// Asks every serving axon of `metagraph` for its specs, `concurrency` at a time, all answers
/// due by `deadline` (a miner whose turn comes after it is not asked: [`SpecsError::NotSent`]);
/// `progress` gets (done, total) after each answer. Results in uid order: the `specs_output`
/// JSON text when it parses as specs, else why not. `signers` are the miners whose answers must
/// be signed.
pub async fn sync_specs(
    dendrite: &Dendrite,
    metagraph: &Metagraph,
    deadline: Instant,
    concurrency: usize,
    signers: &std::collections::HashSet<String>,
    progress: &(dyn Fn(usize, usize) + Send + Sync),
) -> Vec<(String, Result<SyncedSpecs, SpecsError>)> {
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
        let expected = signers.contains(&target.hotkey);
        set.spawn(async move {
            let Ok(_permit) = limit.acquire_owned().await else {
                return (i, Err(SpecsError::NotSent));
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (i, Err(SpecsError::NotSent));
            }
            let (r, auth) = signed::call(&dendrite, &target, SpecsSynapse::default(), left).await;
            (i, specs_result(&r, &auth, expected))
        });
    }
    let mut results: Vec<Option<Result<SyncedSpecs, SpecsError>>> = vec![None; total];
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

fn specs_result(r: &Response<SpecsSynapse>, auth: &Authenticity, expected: bool) -> Result<SyncedSpecs, SpecsError> {
    if !r.is_success() {
        return Err(NoAnswer(failure_text(r)).into());
    }
    let signed = auth.accept(expected).map_err(|e| SpecsError::NoAnswer(NoAnswer(e)))?;
    let text = r.synapse.specs_output.trim();
    if text.is_empty() {
        return Err(SpecsError::Empty);
    }
    match Specs::from_json(text) {
        Ok(_) => Ok(SyncedSpecs { json: text.to_owned(), signed }),
        Err(e) => Err(SpecsError::Unreadable(e.to_string())),
    }
}
