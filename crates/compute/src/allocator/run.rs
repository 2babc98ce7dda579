//! One [`allocate`] call: every candidate checked in parallel under one deadline, the first
//! "yes" allocated (the next "yes" if that fails, at most [`MAX_ALLOCATE_ATTEMPTS`]), each
//! attempt journaled in the [`AllocationStore`] before the miner is asked, an unusable
//! allocation released again, then the wait for the machine's SSH server.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bittensor::dendrite::{Dendrite, Response, StatusKind};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::release::send_release;
use super::signed::{self, Authenticity};
use super::{
    failure_text, failure_verdict, refusal, status_of, AllocateError, AllocateFailure, AllocateOptions, Allocated,
    AllocationStore, Candidate, DeallocOutcome, Explain, Stage, StoreError, Timings, Verdict,
};
use crate::crypto::{AllocationKey, KeyReserve};
use crate::db::DbError;
use crate::protocol::Allocate;
use crate::specs::Requirement;
use crate::ssh_banner::wait_for_ssh;

/// At most this many allocate requests per [`allocate`] call (one per "yes", in answer order).
pub const MAX_ALLOCATE_ATTEMPTS: usize = 3;

/// Allocates one of `candidates` (see the module docs): checks them all in parallel under
/// `opts.deadline`, allocates the first that says yes, falls back on the next yes (at most
/// [`MAX_ALLOCATE_ATTEMPTS`] allocate requests), then waits for its SSH server. `excluded` are
/// the verdicts of the miners [`candidates`] left out; they end up in the explain list.
pub async fn allocate(
    dendrite: &Dendrite,
    candidates: Vec<Candidate>,
    excluded: Vec<Explain>,
    req: &Requirement,
    opts: &AllocateOptions,
    store: &dyn AllocationStore,
    progress: &(dyn Fn(Stage) + Send + Sync),
) -> Result<Allocated, AllocateError> {
    let started = Instant::now();
    if let Err(e) = opts.validate() {
        let explain =
            excluded.into_iter().chain(candidates.iter().map(|c| Explain::new(&c.hotkey, Verdict::Unanswered)));
        return Err(AllocateError { failure: AllocateFailure::InvalidOptions(e), explain: explain.collect() });
    }
    if candidates.is_empty() {
        return Err(AllocateError {
            failure: AllocateFailure::NoCandidate { considered: excluded.len() },
            explain: excluded,
        });
    }
    let requirement = match req.to_json() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let mut run = Run::new(&candidates, started + opts.deadline);
    progress(Stage::Checking { candidates: candidates.len() });
    // The key was started before (`KeyReserve::prepare` when `a` starts, or kept ready by a
    // long-lived process); if not, it is started now, in parallel with the checks.
    KeyReserve::global().prepare();
    let (mut checks, mut answers) = spawn_checks(dendrite, &candidates, &requirement, opts, started, run.deadline);

    let mut last_failure = None;
    while let Some(i) = run.next_yes(&mut answers).await {
        if run.attempts == MAX_ALLOCATE_ATTEMPTS {
            // Not tried: it stays `Available`.
            break;
        }
        run.attempts += 1;
        let cand = &candidates[i];
        progress(Stage::Allocating { hotkey: cand.hotkey.clone(), attempt: run.attempts });
        let key_started = Instant::now();
        let key = match KeyReserve::global().take().await {
            Ok(k) => k,
            Err(e) => return Err(run.fail(&candidates, excluded, AllocateFailure::KeyGeneration(e.to_string()))),
        };
        let key_wait = key_started.elapsed();
        let ctx = Attempt { dendrite, cand, key: &key, requirement: &requirement, opts, store };
        match ctx.run().await {
            Ok((mut record, allocate_time)) => {
                // Answers that came in while allocating belong in the explain list.
                while let Ok(a) = answers.try_recv() {
                    run.record(a);
                }
                checks.abort_all();
                run.verdicts[i] = Some(Verdict::Allocated);
                record.timings = Timings {
                    check: run.answered_at[i].unwrap_or_default(),
                    key: key_wait,
                    allocate: allocate_time,
                    ssh: Duration::ZERO,
                    total: Duration::ZERO,
                    attempts: run.attempts,
                };
                progress(Stage::WaitingForSsh { ip: record.ip.clone(), port: record.port });
                let ssh_started = Instant::now();
                record.ssh_ready = wait_for_ssh(&record.ip, record.port, opts.ssh_wait).await;
                record.timings.ssh = ssh_started.elapsed();
                record.timings.total = started.elapsed();
                record.explain = run.explain(&candidates, excluded);
                tracing::info!(
                    hotkey = %record.hotkey, attempts = run.attempts, ssh_ready = record.ssh_ready,
                    total_ms = record.timings.total.as_millis() as u64, "allocated"
                );
                progress(Stage::Done);
                return Ok(record);
            }
            Err(Failed::NotAsked(verdict)) => {
                // Another allocation (a concurrent request, another process on the same
                // database) holds this miner: not an attempt; on to the next yes.
                run.attempts -= 1;
                run.verdicts[i] = Some(verdict);
            }
            Err(Failed::Asked(verdict)) => {
                tracing::info!(hotkey = %cand.hotkey, %verdict, "allocation attempt failed");
                last_failure = Some(format!("{}: {verdict}", cand.hotkey));
                run.verdicts[i] = Some(verdict);
            }
        }
    }
    checks.abort_all();
    let failure = match last_failure {
        Some(last) => AllocateFailure::AttemptsFailed { attempts: run.attempts, last },
        None => {
            let explain = run.explain(&candidates, Vec::new());
            AllocateFailure::NoneAvailable {
                asked: candidates.len(),
                deadline: opts.deadline,
                summary: summarize(&explain),
            }
        }
    };
    Err(run.fail(&candidates, excluded, failure))
}

/// [`allocate`] for one named miner: check it, then allocate it.
pub async fn allocate_hotkey(
    dendrite: &Dendrite,
    candidate: Candidate,
    req: &Requirement,
    opts: &AllocateOptions,
    store: &dyn AllocationStore,
    progress: &(dyn Fn(Stage) + Send + Sync),
) -> Result<Allocated, AllocateError> {
    allocate(dendrite, vec![candidate], Vec::new(), req, opts, store, progress).await
}

/// "3 timed out, 2 refused, ..." over the verdicts of `explain`.
fn summarize(explain: &[Explain]) -> String {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for e in explain {
        let label = e.verdict.label();
        match counts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => counts.push((label, 1)),
        }
    }
    counts.iter().map(|(l, n)| format!("{n} {l}")).collect::<Vec<_>>().join(", ")
}

/// The state of one [`allocate`] call's check phase.
struct Run {
    deadline: Instant,
    verdicts: Vec<Option<Verdict>>,
    /// Time from the start to each answer.
    answered_at: Vec<Option<Duration>>,
    /// Duration of each check request.
    answer_ms: Vec<Option<u64>>,
    /// Indexes that said yes and are not tried yet, in answer order.
    yes: VecDeque<usize>,
    answered: usize,
    attempts: usize,
}

/// One check answer: candidate index, yes or the verdict, request time, time since the start.
type CheckAnswer = (usize, Result<(), Verdict>, Duration, Duration);

impl Run {
    fn new(candidates: &[Candidate], deadline: Instant) -> Self {
        let n = candidates.len();
        Self {
            deadline,
            verdicts: vec![None; n],
            answered_at: vec![None; n],
            answer_ms: vec![None; n],
            yes: VecDeque::new(),
            answered: 0,
            attempts: 0,
        }
    }

    fn record(&mut self, (i, outcome, took, at): CheckAnswer) {
        self.answered += 1;
        self.answered_at[i] = Some(at);
        self.answer_ms[i] = Some(took.as_millis() as u64);
        match outcome {
            Ok(()) => {
                self.verdicts[i] = Some(Verdict::Available);
                self.yes.push_back(i);
            }
            Err(v) => self.verdicts[i] = Some(v),
        }
    }

    /// The next "yes" to try: one already received, else the next to arrive before the deadline.
    async fn next_yes(&mut self, answers: &mut mpsc::UnboundedReceiver<CheckAnswer>) -> Option<usize> {
        while let Ok(a) = answers.try_recv() {
            self.record(a);
        }
        loop {
            if let Some(i) = self.yes.pop_front() {
                return Some(i);
            }
            if self.answered == self.verdicts.len() {
                return None;
            }
            match tokio::time::timeout_at(self.deadline, answers.recv()).await {
                Ok(Some(a)) => self.record(a),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Every candidate's verdict, then the excluded ones'. Unanswered checks count as timed out
    /// once the deadline has passed.
    fn explain(&self, candidates: &[Candidate], excluded: Vec<Explain>) -> Vec<Explain> {
        let expired = Instant::now() >= self.deadline;
        let mut out: Vec<Explain> = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| Explain {
                hotkey: c.hotkey.clone(),
                verdict: self.verdicts[i].clone().unwrap_or(if expired {
                    Verdict::TimedOut
                } else {
                    Verdict::Unanswered
                }),
                answer_ms: self.answer_ms[i],
            })
            .collect();
        out.extend(excluded);
        out
    }

    fn fail(&self, candidates: &[Candidate], excluded: Vec<Explain>, failure: AllocateFailure) -> AllocateError {
        AllocateError { failure, explain: self.explain(candidates, excluded) }
    }
}

/// Sends the check to every candidate, at most `opts.concurrency` at a time, each bounded by
/// what is left of the deadline; answers arrive on the channel as they come.
fn spawn_checks(
    dendrite: &Dendrite,
    candidates: &[Candidate],
    requirement: &Map<String, Value>,
    opts: &AllocateOptions,
    started: Instant,
    deadline: Instant,
) -> (JoinSet<()>, mpsc::UnboundedReceiver<CheckAnswer>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let limit = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let per_request = opts.check_timeout.min(opts.deadline);
    let mut synapse = Allocate {
        timeline: opts.timeline_days,
        checking: true,
        device_requirement: requirement.clone(),
        ..Allocate::default()
    };
    // What the allocation will ask for, so a miner that does not offer it says so at the check.
    extend_docker(&mut synapse, opts, false);
    let mut set = JoinSet::new();
    for (i, c) in candidates.iter().enumerate() {
        let (dendrite, target, synapse, limit, tx, signs) =
            (dendrite.clone(), c.target.clone(), synapse.clone(), limit.clone(), tx.clone(), c.signs);
        set.spawn(async move {
            let Ok(_permit) = limit.acquire_owned().await else { return };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Never asked: counts as timed out (see `Run::explain`).
                return;
            }
            let (r, auth) = signed::call(&dendrite, &target, synapse, per_request.min(left)).await;
            let outcome = check_outcome(&r, &auth, signs);
            // The receiver is gone once the allocation is decided.
            let _ = tx.send((i, outcome, r.elapsed, started.elapsed()));
        });
    }
    (set, rx)
}

fn check_outcome(r: &Response<Allocate>, auth: &Authenticity, signs: bool) -> Result<(), Verdict> {
    if r.kind == StatusKind::Timeout {
        return Err(Verdict::TimedOut);
    }
    if !r.is_success() {
        return Err(failure_verdict(r));
    }
    auth.accept(signs).map_err(Verdict::Error)?;
    if status_of(&r.synapse.output) {
        return Ok(());
    }
    Err(refusal(&r.synapse.output))
}

/// `docker_requirement`'s additions: the renter's SSH key (allocation only), our TTL, and SN27
/// v2.x's user ports and image when asked for.
fn extend_docker(synapse: &mut Allocate, opts: &AllocateOptions, allocating: bool) {
    let d = &mut synapse.docker_requirement;
    if allocating {
        d.insert("ssh_key".into(), json!(opts.ssh_key().unwrap_or("")));
        if let Some(ttl) = opts.ttl {
            d.insert("ttl_seconds".into(), json!(ttl.as_secs()));
        }
    }
    if !opts.user_ports.is_empty() {
        let ports: Map<String, Value> = opts.user_ports.iter().map(|p| (p.to_string(), json!(0))).collect();
        d.insert("external_user_ports".into(), Value::Object(ports));
    }
    if let Some(image) = &opts.image {
        d.insert("image".into(), json!(image));
    }
}

/// One allocate request to one miner, with its bookkeeping.
struct Attempt<'a> {
    dendrite: &'a Dendrite,
    cand: &'a Candidate,
    key: &'a AllocationKey,
    requirement: &'a Map<String, Value>,
    opts: &'a AllocateOptions,
    store: &'a dyn AllocationStore,
}

/// Why an [`Attempt`] allocated nothing.
enum Failed {
    /// The miner was not asked: another allocation holds it in the store.
    NotAsked(Verdict),
    /// The miner was asked (or the attempt failed after the store let it through).
    Asked(Verdict),
}

impl From<Verdict> for Failed {
    fn from(v: Verdict) -> Self {
        Self::Asked(v)
    }
}

impl Attempt<'_> {
    async fn run(&self) -> Result<(Allocated, Duration), Failed> {
        let (cand, store, opts) = (self.cand, self.store, self.opts);
        let pem =
            self.key.public_pem().map_err(|e| Verdict::Error(format!("cannot encode the allocation key: {e}")))?;
        let expires_ms = opts.clock.now_ms().saturating_add(opts.lease_ms());
        let ssh_key = opts.ssh_key();
        store.begin(&cand.hotkey, &pem, expires_ms, ssh_key.is_some()).map_err(|e| match e {
            StoreError::AlreadyRecorded { .. } | StoreError::Db(DbError::AlreadyAllocated { .. }) => {
                Failed::NotAsked(Verdict::Taken)
            }
            e => Failed::Asked(Verdict::Error(format!(
                "cannot record the allocation locally, so it was not requested: {e}"
            ))),
        })?;

        let mut synapse = Allocate {
            timeline: opts.timeline_days,
            checking: false,
            public_key: pem.clone(),
            device_requirement: self.requirement.clone(),
            ..Allocate::default()
        };
        extend_docker(&mut synapse, opts, true);
        let started = Instant::now();
        let (r, auth) = signed::call(self.dendrite, &cand.target, synapse, opts.allocate_timeout).await;
        let took = started.elapsed();

        if !r.is_success() {
            // The miner may have allocated before the answer was lost: release with the same key.
            let what = failure_text(&r);
            let note = self.release(&pem, &format!("the allocate request failed: {what}"), false).await;
            return Err(Failed::Asked(Verdict::Error(format!("the allocate request failed: {what}; {note}"))));
        }
        let authenticated = match auth.accept(cand.signs) {
            Ok(signed) => signed,
            Err(e) => {
                // Whatever the real miner did, our key can release it.
                let note = self.release(&pem, &e, cand.signs).await;
                return Err(Failed::Asked(Verdict::Error(format!("{e}; {note}"))));
            }
        };
        let output = &r.synapse.output;
        if !status_of(output) {
            if let Err(e) = store.abort(&cand.hotkey) {
                tracing::warn!(hotkey = %cand.hotkey, error = %e, "cannot drop the refused allocation's record");
            }
            return Err(refusal(output).into());
        }
        let info = output.get("info").and_then(Value::as_str).unwrap_or("");
        let creds = match self.key.decrypt_credentials(info) {
            Ok(c) => c,
            Err(e) => {
                let note = self.release(&pem, &format!("unusable credentials: {e}"), authenticated).await;
                return Err(Failed::Asked(Verdict::Error(format!(
                    "the miner allocated but its credentials are unusable ({e}); {note}"
                ))));
            }
        };
        let record = Allocated {
            hotkey: cand.hotkey.clone(),
            ip: cand.target.ip.clone(),
            port: creds.port,
            username: creds.username,
            password: creds.password,
            resource: cand.resource(),
            regkey_pem: pem.clone(),
            version: creds.version,
            expires_ms,
            ssh_key_injected: ssh_key.is_some(),
            ssh_ready: false,
            ssh_key: ssh_key.map(str::to_owned),
            uuid: opts.uuid.clone(),
            external_user_ports: creds.external_user_ports,
            authenticated,
            host_key: auth.host_key().map(str::to_owned),
            explain: Vec::new(),
            timings: Timings::default(),
        };
        if let Err(e) = store.commit(&cand.hotkey, &record) {
            let note = self.release(&pem, &format!("recording it locally failed: {e}"), authenticated).await;
            return Err(Failed::Asked(Verdict::Error(format!(
                "the miner allocated but recording it locally failed ({e}); {note}"
            ))));
        }
        Ok((record, took))
    }

    /// Releases an allocation that cannot be used, so the miner is not left allocated; aborts
    /// the record when the miner holds nothing for this key any more, else keeps it pending.
    async fn release(&self, pem: &str, why: &str, signed_expected: bool) -> String {
        let (cand, store) = (self.cand, self.store);
        let outcome = send_release(self.dendrite, &cand.target, pem, self.opts.allocate_timeout, signed_expected).await;
        tracing::info!(hotkey = %cand.hotkey, why, ?outcome, "released an unusable allocation");
        match outcome {
            DeallocOutcome::Released | DeallocOutcome::NotHolder(_) => {
                if let Err(e) = store.abort(&cand.hotkey) {
                    tracing::warn!(hotkey = %cand.hotkey, error = %e, "cannot drop the released allocation's record");
                }
                if outcome == DeallocOutcome::Released {
                    "released it again".to_owned()
                } else {
                    "the miner holds nothing for this key".to_owned()
                }
            }
            DeallocOutcome::Refused(e) | DeallocOutcome::Unreachable(e) => {
                store.mark_pending(&cand.hotkey, &format!("{why}; the release failed: {e}"));
                format!("could not release it ({e}): kept as a pending deallocation")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_summarized() {
        let summary = summarize(&[
            Explain::new("a", Verdict::TimedOut),
            Explain::new("b", Verdict::Taken),
            Explain::new("c", Verdict::TimedOut),
        ]);
        assert_eq!(summary, "2 timed out, 1 taken");
        let e = AllocateFailure::NoneAvailable { asked: 16, deadline: Duration::from_secs(10), summary };
        assert_eq!(e.to_string(), "all 16 candidates refused or did not answer within 10 s (2 timed out, 1 taken)");
    }
}
