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

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bittensor::dendrite::{AxonTarget, Dendrite, Response, StatusKind};
use bittensor::subtensor::metagraph::Metagraph;
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::crypto::{AllocationKey, CredentialsVersion};
use crate::protocol::{Allocate, Specs as SpecsSynapse};
use crate::specs::{check, Requirement, Specs};

/// At most this many allocate requests per [`allocate`] call (one per "yes", in answer order).
pub const MAX_ALLOCATE_ATTEMPTS: usize = 3;

const DAY_MS: u64 = 86_400_000;
/// Pause between two tries to reach a new allocation's SSH server.
const SSH_RETRY: Duration = Duration::from_millis(500);
/// Longest single try to read an SSH banner.
const SSH_TRY_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of a server's greeting is read looking for the `SSH-` line (RFC 4253 §4.2 allows
/// other lines first).
const SSH_BANNER_LIMIT: usize = 8192;

// ---- storage ----

/// Where allocations are recorded. The allocator calls it in this order: [`begin`] before the
/// miner is asked to allocate (so a crash leaves an intent to reconcile, never an untracked
/// machine), then [`commit`] once the credentials are in hand, or [`abort`] when the miner
/// refused or was released again. [`mark_pending`] records a release the miner did not confirm;
/// [`finish`] removes an allocation the miner released.
///
/// `mark_pending` and `finish` cannot fail from the allocator's point of view: there is nothing
/// else it could do. Implementations log their own failures.
///
/// [`begin`]: AllocationStore::begin
/// [`commit`]: AllocationStore::commit
/// [`abort`]: AllocationStore::abort
/// [`mark_pending`]: AllocationStore::mark_pending
/// [`finish`]: AllocationStore::finish
pub trait AllocationStore: Send + Sync {
    /// Records the intent to allocate `hotkey` with the public key `regkey_pem`, expiring around
    /// `expires_ms` (Unix ms). Fails if the store cannot record it (the miner is then not asked).
    fn begin(&self, hotkey: &str, regkey_pem: &str, expires_ms: u64, ssh_key_injected: bool) -> Result<(), String>;
    /// Completes the allocation begun for `hotkey`. `record.ssh_ready` is `false` here: the SSH
    /// wait happens after the commit, so the record is durable first.
    fn commit(&self, hotkey: &str, record: &Allocated) -> Result<(), String>;
    /// Drops the intent begun for `hotkey`: nothing is allocated there.
    fn abort(&self, hotkey: &str) -> Result<(), String>;
    /// The miner may still hold an allocation for `hotkey` that could not be released: keep it,
    /// marked pending with `error`, for a later retry.
    fn mark_pending(&self, hotkey: &str, error: &str);
    /// The miner released the allocation of `hotkey`: forget it.
    fn finish(&self, hotkey: &str);
}

/// Where a [`MemoryStore`] row stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowState {
    /// `begin` was called; no `commit` yet.
    Begun,
    /// Committed: the renter holds the allocation.
    Committed,
    /// A release the miner did not confirm, with the error.
    Pending(String),
}

/// One allocation in a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryRow {
    pub regkey_pem: String,
    pub expires_ms: u64,
    pub ssh_key_injected: bool,
    pub state: RowState,
    /// The committed record, once committed.
    pub record: Option<Allocated>,
}

/// An in-memory [`AllocationStore`] (tests, dry runs). One row per hotkey.
#[derive(Debug, Default)]
pub struct MemoryStore {
    rows: Mutex<BTreeMap<String, MemoryRow>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The row of `hotkey`, if any.
    pub fn get(&self, hotkey: &str) -> Option<MemoryRow> {
        self.lock().get(hotkey).cloned()
    }

    /// Every row, by hotkey.
    pub fn rows(&self) -> Vec<(String, MemoryRow)> {
        self.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, MemoryRow>> {
        // A panic while holding the lock leaves a consistent map (every change is one statement).
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AllocationStore for MemoryStore {
    fn begin(&self, hotkey: &str, regkey_pem: &str, expires_ms: u64, ssh_key_injected: bool) -> Result<(), String> {
        let mut rows = self.lock();
        if let Some(row) = rows.get(hotkey) {
            return Err(format!("an allocation of {hotkey} is already recorded ({:?})", row.state));
        }
        rows.insert(
            hotkey.to_owned(),
            MemoryRow {
                regkey_pem: regkey_pem.to_owned(),
                expires_ms,
                ssh_key_injected,
                state: RowState::Begun,
                record: None,
            },
        );
        Ok(())
    }

    fn commit(&self, hotkey: &str, record: &Allocated) -> Result<(), String> {
        match self.lock().get_mut(hotkey) {
            Some(row) if row.state == RowState::Begun => {
                row.state = RowState::Committed;
                row.expires_ms = record.expires_ms;
                row.record = Some(record.clone());
                Ok(())
            }
            Some(row) => Err(format!("the allocation of {hotkey} is {:?}, not begun", row.state)),
            None => Err(format!("no allocation of {hotkey} was begun")),
        }
    }

    fn abort(&self, hotkey: &str) -> Result<(), String> {
        let mut rows = self.lock();
        match rows.get(hotkey) {
            Some(row) if row.state == RowState::Begun => {
                rows.remove(hotkey);
                Ok(())
            }
            Some(row) => Err(format!("the allocation of {hotkey} is {:?}, not begun", row.state)),
            None => Ok(()),
        }
    }

    fn mark_pending(&self, hotkey: &str, error: &str) {
        if let Some(row) = self.lock().get_mut(hotkey) {
            row.state = RowState::Pending(error.to_owned());
        }
    }

    fn finish(&self, hotkey: &str) {
        self.lock().remove(hotkey);
    }
}

// ---- candidates and verdicts ----

/// A miner that may be asked for an allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub hotkey: String,
    pub target: AxonTarget,
    /// Its last known specs (for the resource name); `None` when unknown.
    pub specs: Option<Specs>,
}

impl Candidate {
    /// The candidate for `hotkey` if the metagraph has it serving an axon, else the verdict why
    /// not. The specs are not checked: callers that name a miner let the miner decide.
    pub fn from_metagraph(hotkey: &str, metagraph: &Metagraph, specs: Option<Specs>) -> Result<Self, Verdict> {
        let neuron = metagraph.by_hotkey(hotkey).ok_or(Verdict::NotInMetagraph)?;
        if !neuron.axon.serving {
            return Err(Verdict::NotServing);
        }
        let target = AxonTarget { ip: neuron.axon.ip.clone(), port: neuron.axon.port, hotkey: neuron.hotkey.clone() };
        Ok(Self { hotkey: hotkey.to_owned(), target, specs })
    }

    /// SN27's `resource`: the first GPU's name, `CPU` for a machine without GPUs, `unknown`
    /// without specs.
    pub fn resource(&self) -> String {
        match &self.specs {
            Some(s) => s.gpu.details.first().map_or_else(|| "CPU".to_owned(), |g| g.name.clone()),
            None => "unknown".to_owned(),
        }
    }
}

/// Why a miner was or was not allocated (`--explain`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "snake_case")]
pub enum Verdict {
    /// This is the miner that was allocated.
    Allocated,
    /// Said yes to the check, but another miner was allocated first.
    Available,
    /// The miner is already allocated (it said so, or refused a check without a reason, which
    /// SN27 miners do only when a container runs).
    Taken,
    /// Its known specs do not meet the requirement (not asked).
    SpecMismatch(String),
    /// No specs known for it (not asked).
    NoSpecs,
    /// On the penalty list (not asked).
    Penalized,
    /// Its hotkey is not in the metagraph (not asked).
    NotInMetagraph,
    /// Registered but not serving an axon (not asked).
    NotServing,
    /// The miner answered no, with its reason.
    Refused(String),
    /// No answer within the check deadline (or the per-request timeout).
    TimedOut,
    /// Not asked yet, or still not answered, when another miner was allocated: not waited for.
    Unanswered,
    /// The request failed (unreachable, refused our hotkey, bad answer, or a failure after the
    /// miner said yes).
    Error(String),
}

impl Verdict {
    /// A short name for tables and summaries.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Allocated => "allocated",
            Self::Available => "available",
            Self::Taken => "taken",
            Self::SpecMismatch(_) => "spec mismatch",
            Self::NoSpecs => "no specs",
            Self::Penalized => "penalized",
            Self::NotInMetagraph => "not in metagraph",
            Self::NotServing => "not serving",
            Self::Refused(_) => "refused",
            Self::TimedOut => "timed out",
            Self::Unanswered => "unanswered",
            Self::Error(_) => "error",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allocated => f.write_str("allocated"),
            Self::Available => f.write_str("available (said yes; another miner was allocated)"),
            Self::Taken => f.write_str("already allocated"),
            Self::SpecMismatch(m) => write!(f, "does not meet the requirement: {m}"),
            Self::NoSpecs => f.write_str("no specs reported"),
            Self::Penalized => f.write_str("penalized"),
            Self::NotInMetagraph => f.write_str("not in the metagraph"),
            Self::NotServing => f.write_str("not serving an axon"),
            Self::Refused(r) => write!(f, "refused: {r}"),
            Self::TimedOut => f.write_str("did not answer in time"),
            Self::Unanswered => f.write_str("not answered before another miner was allocated"),
            Self::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// One candidate's verdict, and how long its check answer took when it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explain {
    pub hotkey: String,
    pub verdict: Verdict,
    /// Milliseconds its check request took, when it was answered (or failed).
    pub answer_ms: Option<u64>,
}

impl Explain {
    fn new(hotkey: &str, verdict: Verdict) -> Self {
        Self { hotkey: hotkey.to_owned(), verdict, answer_ms: None }
    }
}

/// The miners worth asking: every entry of `miner_specs` (hotkey, last known specs) that is not
/// penalized, is in the metagraph serving an axon, and whose specs meet `req`, in input order;
/// and the verdict of every other one. A hotkey listed twice counts once (the first).
pub fn candidates(
    miner_specs: &[(String, Option<Specs>)],
    metagraph: &Metagraph,
    penalized: &HashSet<String>,
    req: &Requirement,
) -> (Vec<Candidate>, Vec<Explain>) {
    let mut seen = HashSet::new();
    let mut chosen = Vec::new();
    let mut excluded = Vec::new();
    for (hotkey, specs) in miner_specs {
        if !seen.insert(hotkey.as_str()) {
            continue;
        }
        if penalized.contains(hotkey) {
            excluded.push(Explain::new(hotkey, Verdict::Penalized));
            continue;
        }
        let candidate = match Candidate::from_metagraph(hotkey, metagraph, specs.clone()) {
            Ok(c) => c,
            Err(v) => {
                excluded.push(Explain::new(hotkey, v));
                continue;
            }
        };
        match specs {
            None => excluded.push(Explain::new(hotkey, Verdict::NoSpecs)),
            Some(s) if s.is_empty() => excluded.push(Explain::new(hotkey, Verdict::NoSpecs)),
            Some(s) => match check(req, s) {
                Ok(()) => chosen.push(candidate),
                Err(m) => excluded.push(Explain::new(hotkey, Verdict::SpecMismatch(m.to_string()))),
            },
        }
    }
    (chosen, excluded)
}

// ---- options, progress, results ----

/// How [`allocate`] goes about it.
#[derive(Debug, Clone)]
pub struct AllocateOptions {
    /// SN27's `timeline`, in days (`a` sends 90, `a_hotkey` 30). Must be at least 1: a timeline
    /// of 0 asks the miner to deallocate. SN27 miners enforce it; ours prefer `ttl`.
    pub timeline_days: i64,
    /// The lease our miners enforce (`docker_requirement.ttl_seconds`); SN27 miners ignore it.
    pub ttl: Option<Duration>,
    /// An OpenSSH public key line to install in the machine's `authorized_keys`.
    pub ssh_key: Option<String>,
    /// Budget of the whole check phase: no check answer is waited for beyond it.
    pub deadline: Duration,
    /// Timeout of one check request (capped by what is left of `deadline`).
    pub check_timeout: Duration,
    /// Timeout of one allocate request (the miner starts the machine before answering; SN27's
    /// requester waits 60 s). Also the timeout of the release sent after a failed attempt.
    pub allocate_timeout: Duration,
    /// Check requests in flight at once.
    pub concurrency: usize,
    /// How long to wait for the machine's SSH server to greet after the allocation.
    pub ssh_wait: Duration,
}

impl Default for AllocateOptions {
    fn default() -> Self {
        Self {
            timeline_days: 90,
            ttl: None,
            ssh_key: None,
            deadline: Duration::from_secs(10),
            check_timeout: Duration::from_secs(10),
            allocate_timeout: Duration::from_secs(60),
            concurrency: 32,
            ssh_wait: Duration::from_secs(60),
        }
    }
}

impl AllocateOptions {
    fn validate(&self) -> Result<(), String> {
        if self.timeline_days < 1 {
            return Err(format!("the timeline must be at least 1 day (got {})", self.timeline_days));
        }
        if self.deadline.is_zero() {
            return Err("the check deadline must be more than 0 s".into());
        }
        if self.ttl.is_some_and(|t| t.as_secs() == 0) {
            return Err("the TTL must be at least 1 s".into());
        }
        if let Some(key) = &self.ssh_key {
            let key = key.trim();
            let known = ["ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-"].iter().any(|p| key.starts_with(p));
            if !known || key.contains(['\n', '\r']) {
                return Err("the SSH key must be one OpenSSH public key line (ssh-ed25519 AAAA..., ssh-rsa ...)".into());
            }
        }
        Ok(())
    }

    fn ssh_key(&self) -> Option<&str> {
        self.ssh_key.as_deref().map(str::trim).filter(|k| !k.is_empty())
    }

    /// The lease as the renter expects it to end: the TTL if given, else the timeline.
    fn lease_ms(&self) -> u64 {
        match self.ttl {
            Some(t) => u64::try_from(t.as_millis()).unwrap_or(u64::MAX),
            None => u64::try_from(self.timeline_days).unwrap_or(0).saturating_mul(DAY_MS),
        }
    }
}

/// Progress reports of [`allocate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Checking this many candidates.
    Checking {
        candidates: usize,
    },
    /// Asking this miner to allocate (attempt 1, 2 or 3).
    Allocating {
        hotkey: String,
        attempt: usize,
    },
    /// Allocated; waiting for its SSH server.
    WaitingForSsh {
        ip: String,
        port: u16,
    },
    Done,
}

/// Where the time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// From the start until the allocated miner said yes to its check.
    pub check: Duration,
    /// The successful allocate request.
    pub allocate: Duration,
    /// Waiting for the SSH banner.
    pub ssh: Duration,
    pub total: Duration,
    /// Allocate requests sent (the successful one included).
    pub attempts: usize,
}

/// A machine allocated to the renter.
#[derive(Clone)]
pub struct Allocated {
    pub hotkey: String,
    /// The miner's axon IP, where its SSH port is published.
    pub ip: String,
    pub port: u16,
    pub username: String,
    pub password: SecretString,
    /// The first GPU's name, `CPU`, or `unknown` when the miner's specs were not known.
    pub resource: String,
    /// The public key PEM the allocation was made with: the capability to release it.
    pub regkey_pem: String,
    pub version: CredentialsVersion,
    /// When the lease should end (Unix ms, by our clock; the miner's clock decides).
    pub expires_ms: u64,
    pub ssh_key_injected: bool,
    /// Whether the SSH server greeted within `ssh_wait`.
    pub ssh_ready: bool,
    pub explain: Vec<Explain>,
    pub timings: Timings,
}

impl fmt::Debug for Allocated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Allocated")
            .field("hotkey", &self.hotkey)
            .field("ip", &self.ip)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("resource", &self.resource)
            .field("version", &self.version)
            .field("expires_ms", &self.expires_ms)
            .field("ssh_key_injected", &self.ssh_key_injected)
            .field("ssh_ready", &self.ssh_ready)
            .field("explain", &self.explain)
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

/// Why nothing was allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocateFailure {
    #[error("invalid allocation options: {0}")]
    InvalidOptions(String),
    #[error("no candidate meets the requirement ({considered} miners considered)")]
    NoCandidate { considered: usize },
    #[error("{}", none_available(*asked, *deadline, summary))]
    NoneAvailable { asked: usize, deadline: Duration, summary: String },
    #[error("{attempts} allocation attempt(s) failed; the last: {last}")]
    AttemptsFailed { attempts: usize, last: String },
    #[error("cannot make the allocation key: {0}")]
    KeyGeneration(String),
}

fn none_available(asked: usize, deadline: Duration, summary: &str) -> String {
    let who = if asked == 1 { "the candidate".to_owned() } else { format!("all {asked} candidates") };
    format!("{who} refused or did not answer within {} s ({summary})", secs(deadline))
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

/// [`AllocateFailure`] with every candidate's verdict.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{failure}")]
pub struct AllocateError {
    pub failure: AllocateFailure,
    pub explain: Vec<Explain>,
}

// ---- allocation ----

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
    // The first key is made while the checks run: RSA-2048 generation takes a noticeable moment.
    let mut first_key = Some(tokio::task::spawn_blocking(AllocationKey::generate));
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
        let key = match first_key.take() {
            Some(task) => task.await,
            None => tokio::task::spawn_blocking(AllocationKey::generate).await,
        };
        let key = match key {
            Ok(Ok(k)) => k,
            Ok(Err(e)) => return Err(run.fail(&candidates, excluded, AllocateFailure::KeyGeneration(e.to_string()))),
            Err(e) => return Err(run.fail(&candidates, excluded, AllocateFailure::KeyGeneration(e.to_string()))),
        };
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
            Err(verdict) => {
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
    let synapse = Allocate {
        timeline: opts.timeline_days,
        checking: true,
        device_requirement: requirement.clone(),
        ..Allocate::default()
    };
    let mut set = JoinSet::new();
    for (i, c) in candidates.iter().enumerate() {
        let (dendrite, target, synapse, limit, tx) =
            (dendrite.clone(), c.target.clone(), synapse.clone(), limit.clone(), tx.clone());
        set.spawn(async move {
            let Ok(_permit) = limit.acquire_owned().await else { return };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Never asked: counts as timed out (see `Run::explain`).
                return;
            }
            let r = dendrite.call(&target, synapse, per_request.min(left)).await;
            let outcome = check_outcome(&r);
            // The receiver is gone once the allocation is decided.
            let _ = tx.send((i, outcome, r.elapsed, started.elapsed()));
        });
    }
    (set, rx)
}

fn status_of(output: &Map<String, Value>) -> bool {
    output.get("status").and_then(Value::as_bool).unwrap_or(false)
}

fn reason_of(output: &Map<String, Value>) -> Option<String> {
    output.get("reason").and_then(Value::as_str).map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned)
}

/// What a failed request says, for verdicts and pending notes.
fn failure_text(r: &Response<Allocate>) -> String {
    let code = r.status_code().map_or_else(|| "no status".to_owned(), |c| c.to_string());
    match r.status_message() {
        Some(m) if !m.is_empty() => format!("{m} ({code})"),
        _ => format!("request failed ({code})"),
    }
}

fn check_outcome(r: &Response<Allocate>) -> Result<(), Verdict> {
    if r.kind == StatusKind::Timeout {
        return Err(Verdict::TimedOut);
    }
    if !r.is_success() {
        return Err(Verdict::Error(failure_text(r)));
    }
    if status_of(&r.synapse.output) {
        return Ok(());
    }
    Err(refusal(&r.synapse.output))
}

/// A "no": `Taken` when the miner is busy (said so, or SN27's reasonless no), else `Refused`.
fn refusal(output: &Map<String, Value>) -> Verdict {
    match reason_of(output) {
        None => Verdict::Taken,
        Some(r) if r.contains("already allocated") || r.contains("another allocation is in progress") => Verdict::Taken,
        Some(r) => Verdict::Refused(r),
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

impl Attempt<'_> {
    async fn run(&self) -> Result<(Allocated, Duration), Verdict> {
        let (cand, store, opts) = (self.cand, self.store, self.opts);
        let pem =
            self.key.public_pem().map_err(|e| Verdict::Error(format!("cannot encode the allocation key: {e}")))?;
        let expires_ms = now_ms().saturating_add(opts.lease_ms());
        let ssh_key = opts.ssh_key();
        store.begin(&cand.hotkey, &pem, expires_ms, ssh_key.is_some()).map_err(|e| {
            Verdict::Error(format!("cannot record the allocation locally, so it was not requested: {e}"))
        })?;

        let mut synapse = Allocate {
            timeline: opts.timeline_days,
            checking: false,
            public_key: pem.clone(),
            device_requirement: self.requirement.clone(),
            ..Allocate::default()
        };
        synapse.docker_requirement.insert("ssh_key".into(), json!(ssh_key.unwrap_or("")));
        if let Some(ttl) = opts.ttl {
            synapse.docker_requirement.insert("ttl_seconds".into(), json!(ttl.as_secs()));
        }
        let started = Instant::now();
        let r = self.dendrite.call(&cand.target, synapse, opts.allocate_timeout).await;
        let took = started.elapsed();

        if !r.is_success() {
            // The miner may have allocated before the answer was lost: release with the same key.
            let what = failure_text(&r);
            let note = self.release(&pem, &format!("the allocate request failed: {what}")).await;
            return Err(Verdict::Error(format!("the allocate request failed: {what}; {note}")));
        }
        let output = &r.synapse.output;
        if !status_of(output) {
            if let Err(e) = store.abort(&cand.hotkey) {
                tracing::warn!(hotkey = %cand.hotkey, error = %e, "cannot drop the refused allocation's record");
            }
            return Err(refusal(output));
        }
        let info = output.get("info").and_then(Value::as_str).unwrap_or("");
        let creds = match self.key.decrypt_credentials(info) {
            Ok(c) => c,
            Err(e) => {
                let note = self.release(&pem, &format!("unusable credentials: {e}")).await;
                return Err(Verdict::Error(format!(
                    "the miner allocated but its credentials are unusable ({e}); {note}"
                )));
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
            explain: Vec::new(),
            timings: Timings::default(),
        };
        if let Err(e) = store.commit(&cand.hotkey, &record) {
            let note = self.release(&pem, &format!("recording it locally failed: {e}")).await;
            return Err(Verdict::Error(format!("the miner allocated but recording it locally failed ({e}); {note}")));
        }
        Ok((record, took))
    }

    /// Releases an allocation that cannot be used, so the miner is not left allocated; aborts
    /// the record when the miner holds nothing for this key any more, else keeps it pending.
    async fn release(&self, pem: &str, why: &str) -> String {
        let (cand, store) = (self.cand, self.store);
        let outcome = send_release(self.dendrite, &cand.target, pem, self.opts.allocate_timeout).await;
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

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Waits until `ip:port` greets with an SSH banner, for up to `wait`. `false` when it did not
/// (or `wait` is zero: nothing is tried).
pub async fn wait_for_ssh(ip: &str, port: u16, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left.min(SSH_TRY_TIMEOUT), ssh_banner(ip, port)).await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => tracing::debug!(ip, port, error = %e, "SSH not ready yet"),
            Err(_) => tracing::debug!(ip, port, "SSH not ready yet: no banner"),
        }
        if Instant::now() + SSH_RETRY >= until {
            return false;
        }
        tokio::time::sleep(SSH_RETRY).await;
    }
}

/// Connects and reads until a line starts with `SSH-`.
async fn ssh_banner(ip: &str, port: u16) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect((ip, port)).await.map_err(|e| e.to_string())?;
    let mut seen = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before an SSH banner".into());
        }
        seen.extend_from_slice(&chunk[..n]);
        if seen.split(|b| *b == b'\n').any(|line| line.starts_with(b"SSH-")) {
            return Ok(());
        }
        if seen.len() > SSH_BANNER_LIMIT {
            return Err(format!("no SSH banner in the first {SSH_BANNER_LIMIT} bytes"));
        }
    }
}

// ---- release, liveness, specs ----

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
async fn send_release(dendrite: &Dendrite, target: &AxonTarget, regkey_pem: &str, timeout: Duration) -> DeallocOutcome {
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

/// Whether the miner still runs the allocation made with `regkey_pem` (SN27's check with
/// `timeline: 0`). `Err` when it did not answer.
pub async fn still_allocated(
    dendrite: &Dendrite,
    target: &AxonTarget,
    regkey_pem: &str,
    timeout: Duration,
) -> Result<bool, String> {
    let synapse = Allocate { timeline: 0, checking: true, public_key: regkey_pem.to_owned(), ..Allocate::default() };
    let r = dendrite.call(target, synapse, timeout).await;
    if r.is_success() {
        Ok(status_of(&r.synapse.output))
    } else {
        Err(failure_text(&r))
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
) -> Vec<(String, Result<String, String>)> {
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
                return (i, Err("cancelled".to_owned()));
            };
            let r = dendrite.call(&target, SpecsSynapse::default(), timeout).await;
            (i, specs_result(&r))
        });
    }
    let mut results: Vec<Option<Result<String, String>>> = vec![None; total];
    let mut done = 0;
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined {
            results[i] = Some(r);
        }
        done += 1;
        progress(done, total);
    }
    targets
        .into_iter()
        .zip(results)
        .map(|(t, r)| (t.hotkey, r.unwrap_or_else(|| Err("the request task failed".to_owned()))))
        .collect()
}

fn specs_result(r: &Response<SpecsSynapse>) -> Result<String, String> {
    if !r.is_success() {
        let code = r.status_code().map_or_else(|| "no status".to_owned(), |c| c.to_string());
        return Err(format!("{} ({code})", r.status_message().unwrap_or("request failed")));
    }
    let text = r.synapse.specs_output.trim();
    if text.is_empty() {
        return Err("no specs in the answer".to_owned());
    }
    match Specs::from_json(text) {
        Ok(_) => Ok(text.to_owned()),
        Err(e) => Err(format!("unreadable specs: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated() {
        assert!(AllocateOptions::default().validate().is_ok());
        let o = AllocateOptions { timeline_days: 0, ..AllocateOptions::default() };
        assert!(o.validate().is_err(), "timeline 0 would deallocate");
        let o = AllocateOptions { ssh_key: Some("ssh-ed25519 AAAA x\nssh-rsa B".into()), ..AllocateOptions::default() };
        assert!(o.validate().is_err());
        let o = AllocateOptions { ssh_key: Some("not a key".into()), ..AllocateOptions::default() };
        assert!(o.validate().is_err());
        let o = AllocateOptions { ssh_key: Some(" ssh-ed25519 AAAA me@x\n".into()), ..AllocateOptions::default() };
        assert_eq!(o.ssh_key(), Some("ssh-ed25519 AAAA me@x"));
        let o = AllocateOptions { ttl: Some(Duration::from_secs(90)), ..AllocateOptions::default() };
        assert_eq!(o.lease_ms(), 90_000);
        assert_eq!(AllocateOptions::default().lease_ms(), 90 * DAY_MS);
    }

    #[test]
    fn refusals_and_releases_are_classified() {
        let out = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(refusal(&out(json!({"status": false}))), Verdict::Taken);
        assert_eq!(refusal(&out(json!({"status": false, "reason": "already allocated"}))), Verdict::Taken);
        assert_eq!(
            refusal(&out(json!({"status": false, "reason": "gpu.count: requires 1 GPUs, has 0"}))),
            Verdict::Refused("gpu.count: requires 1 GPUs, has 0".into())
        );
        let summary = summarize(&[
            Explain::new("a", Verdict::TimedOut),
            Explain::new("b", Verdict::Taken),
            Explain::new("c", Verdict::TimedOut),
        ]);
        assert_eq!(summary, "2 timed out, 1 taken");
        let e = AllocateFailure::NoneAvailable { asked: 16, deadline: Duration::from_secs(10), summary };
        assert_eq!(e.to_string(), "all 16 candidates refused or did not answer within 10 s (2 timed out, 1 taken)");
    }

    #[test]
    fn memory_store_follows_the_protocol() {
        let s = MemoryStore::new();
        s.begin("h", "pem", 5, true).expect("begin");
        assert!(s.begin("h", "pem", 5, true).is_err(), "one row per hotkey");
        assert_eq!(s.get("h").map(|r| r.state), Some(RowState::Begun));
        s.abort("h").expect("abort");
        assert!(s.get("h").is_none());
        s.begin("h", "pem", 5, false).expect("begin");
        s.mark_pending("h", "boom");
        assert_eq!(s.get("h").map(|r| r.state), Some(RowState::Pending("boom".into())));
        assert!(s.abort("h").is_err(), "a pending row is not dropped by abort");
        s.finish("h");
        assert!(s.rows().is_empty());
    }
}
