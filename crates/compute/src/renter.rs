//! The renter's operations as one facade over the allocation database, the chain and the
//! renter's hotkey: what `a`, `a_hotkey`, `d`, `list_r`, `sync` and `reconcile` do, with no
//! terminal in sight, so the CLI and the HTTP API (`crates/api`) are two front ends of one
//! implementation.
//!
//! [`Renter`] holds the database (shared, `Arc`), the chain client, the netuid and a dendrite
//! signed with the renter's hotkey. The metagraph is read fresh ([`Renter::metagraph`]) or from a
//! cache no older than a bound ([`Renter::metagraph_within`], for a server answering many
//! requests). Allocating first releases what an interrupted run left behind — but only what no
//! live process is making right now ([`ComputeDb::interrupted_unclaimed`]), so a server and CLIs
//! on one database never release each other's allocations in flight, and two allocations never
//! take one miner: the database's `begin` refuses the second, which the allocator treats as
//! "taken" and moves on to the next candidate.

mod lifecycle;
mod resources;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bittensor::dendrite::Dendrite;
use bittensor::subtensor::metagraph::Metagraph;
use bittensor::subtensor::{ChainError, Subtensor};
use bittensor::Keypair;
use serde::Serialize;

pub use self::lifecycle::{container_action, ActionDone, ActionError, ActionTarget, ContainerAction};
pub use self::resources::{gpu_summary, resources, GpuSummary, Resource, ResourceQuery, SortKey};
use crate::allocator::{
    self, AllocateError, AllocateOptions, Allocated, Candidate, DeallocOutcome, Liveness, Stage, Verdict,
};
use crate::db::{AllocationState, ComputeDb, DbError};
use crate::specs::{Requirement, Specs};

/// Why a renter operation failed. Each says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenterError {
    /// The chain did not give the metagraph (transport).
    #[error("reading the metagraph of netuid {netuid}")]
    Chain {
        netuid: u16,
        #[source]
        source: ChainError,
    },
    /// The allocation database failed or refused.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Allocation by requirement with no miner specs in the database.
    #[error("the database knows no miners yet: run `nicompute sync` first")]
    NoMiners,
    /// The named miner cannot be asked (not in the metagraph, not serving).
    #[error("{hotkey} cannot be allocated: {verdict}")]
    NotAllocatable { hotkey: String, verdict: Verdict },
    /// No miner was allocated; every candidate's verdict is inside.
    #[error(transparent)]
    Allocate(#[from] AllocateError),
    /// The database holds no usable allocation of this miner.
    #[error("no allocation of {hotkey} in the database (or it has no deallocation key)")]
    NotAllocated { hotkey: String },
    /// A lifecycle action is not known to be done.
    #[error(transparent)]
    Action(#[from] ActionError),
}

/// What to allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Any miner whose specs meet the requirement (`a`).
    Requirement,
    /// This miner (`a_hotkey`); the miner judges the requirement.
    Hotkey(String),
}

/// How one deallocation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "snake_case")]
pub enum Released {
    /// The miner confirmed; the row is gone.
    Released,
    /// The database has no allocation of this hotkey.
    NotAllocated,
    /// The miner did not confirm (unreachable, or not in the metagraph): kept as
    /// `pending_deallocation` for `reconcile`.
    Pending(String),
    /// The miner holds nothing for this key (ended already, or never ours): the row stays for the
    /// caller to decide (`d` reports it refused; the API forgets it).
    Gone(String),
    /// The miner answered no (it could not remove the machine).
    Refused(String),
    /// The row cannot be managed (no deallocation key).
    Failed(String),
}

impl Released {
    /// The word the CLI prints (`released`, `pending`, …).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Released => "released",
            Self::NotAllocated => "not allocated",
            Self::Pending(_) => "pending",
            Self::Gone(_) | Self::Refused(_) => "refused",
            Self::Failed(_) => "failed",
        }
    }

    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Released | Self::NotAllocated => None,
            Self::Pending(d) | Self::Gone(d) | Self::Refused(d) | Self::Failed(d) => Some(d),
        }
    }
}

/// What `reconcile` found for one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "snake_case")]
pub enum Reconciled {
    NoRegkey,
    Unreachable(String),
    PendingReleased,
    AlreadyGone,
    ReleaseRefused(String),
    StillUnreachable(String),
    Held,
    GoneRemoved,
    Gone(String),
    NoAnswer(String),
}

impl fmt::Display for Reconciled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRegkey => f.write_str("no regkey: cannot be managed"),
            Self::Unreachable(v) => write!(f, "unreachable: {v}"),
            Self::PendingReleased => f.write_str("released (pending deallocation completed)"),
            Self::AlreadyGone => f.write_str("already gone on the miner; row removed"),
            Self::ReleaseRefused(r) => write!(f, "refused: {r}"),
            Self::StillUnreachable(e) => write!(f, "still unreachable: {e}"),
            Self::Held => f.write_str("ok: the machine is allocated to you"),
            Self::GoneRemoved => f.write_str("gone on the miner; row removed"),
            Self::Gone(why) => {
                write!(f, "gone on the miner ({why}); `reconcile --prune` removes the row")
            }
            Self::NoAnswer(e) => write!(f, "no answer, kept: {e}"),
        }
    }
}

/// One row of a reconcile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileRow {
    pub hotkey: String,
    pub state: String,
    pub result: Reconciled,
}

/// What one reconcile did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    pub interrupted_released: usize,
    pub allocations: Vec<ReconcileRow>,
    /// Whether the set of allocations changed (for publishing the allocated list).
    pub changed: bool,
}

/// What one sync did: how many serving miners were asked, how many answered with specs (how
/// many of them signed: nicompute miners), and why each of the others has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub asked: usize,
    pub answered: usize,
    pub signed: usize,
    pub failed: Vec<(String, String)>,
}

/// What a lifecycle action did, for the CLI's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionReport {
    /// The miner signed its answer.
    pub signed: bool,
    /// The pinned host key changed: the miner signed a new one for a recreated machine.
    pub host_key_changed: bool,
}

/// The renter: one database, one chain, one hotkey. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Renter {
    db: Arc<ComputeDb>,
    chain: Subtensor,
    netuid: u16,
    dendrite: Dendrite,
    cached: Mutex<Option<(Instant, Arc<Metagraph>)>>,
}

impl Renter {
    pub fn new(db: Arc<ComputeDb>, chain: Subtensor, netuid: u16, keypair: Keypair) -> Self {
        Self { db, chain, netuid, dendrite: Dendrite::new(keypair), cached: Mutex::new(None) }
    }

    pub fn db(&self) -> &Arc<ComputeDb> {
        &self.db
    }

    pub fn chain(&self) -> &Subtensor {
        &self.chain
    }

    pub fn netuid(&self) -> u16 {
        self.netuid
    }

    pub fn dendrite(&self) -> &Dendrite {
        &self.dendrite
    }

    /// The metagraph read now (and kept for [`Self::metagraph_within`]).
    pub async fn metagraph(&self) -> Result<Arc<Metagraph>, RenterError> {
        let mg = self
            .chain
            .metagraph(self.netuid)
            .await
            .map_err(|source| RenterError::Chain { netuid: self.netuid, source })?;
        let mg = Arc::new(mg);
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), mg.clone()));
        Ok(mg)
    }

    /// The last metagraph read if it is younger than `max_age`, else a fresh one.
    pub async fn metagraph_within(&self, max_age: Duration) -> Result<Arc<Metagraph>, RenterError> {
        let cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match cached {
            Some((at, mg)) if at.elapsed() <= max_age => Ok(mg),
            _ => self.metagraph().await,
        }
    }

    /// The metagraph last read, however old, if any.
    pub fn cached_metagraph(&self) -> Option<Arc<Metagraph>> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(|(_, mg)| mg.clone())
    }

    /// Releases allocations begun and never recorded (Ctrl-C, a crash) that no live process is
    /// making now. How many were released.
    pub async fn release_interrupted(&self, mg: &Metagraph) -> usize {
        let Ok(rows) = self.db.interrupted_unclaimed() else { return 0 };
        let mut released = 0;
        for (hotkey, regkey) in rows {
            let Ok(c) = Candidate::from_metagraph(&hotkey, mg, None) else { continue };
            let store: &ComputeDb = &self.db;
            let signs = self.db.is_signer(&hotkey).unwrap_or(false);
            let timeout = Duration::from_secs(30);
            match allocator::deallocate(&self.dendrite, &c.target, &hotkey, &regkey, store, timeout, signs).await {
                DeallocOutcome::Released | DeallocOutcome::NotHolder(_) => {
                    let _ = self.db.abort_allocation(&hotkey);
                    tracing::info!(%hotkey, "released an interrupted allocation");
                    released += 1;
                }
                _ => {}
            }
        }
        released
    }

    /// Allocates a machine (see [`Target`]) with `opts`, recording it in the database. With
    /// [`Target::Requirement`] the candidates are the database's miners that meet `req`, are not
    /// penalized and serve an axon in `mg` (a miner another allocation holds is passed over).
    pub async fn allocate(
        &self,
        mg: &Metagraph,
        target: &Target,
        req: &Requirement,
        opts: &AllocateOptions,
        progress: &(dyn Fn(Stage) + Send + Sync),
    ) -> Result<Allocated, RenterError> {
        let specs: Vec<(String, Option<Specs>)> =
            self.db.miner_specs()?.into_iter().map(|m| (m.hotkey, m.specs)).collect();
        let signers = self.db.signers()?;
        let store: &ComputeDb = &self.db;
        let allocated = match target {
            Target::Hotkey(hk) => {
                let specs = specs.iter().find(|(h, _)| h == hk).and_then(|(_, s)| s.clone());
                let mut candidate = Candidate::from_metagraph(hk, mg, specs)
                    .map_err(|verdict| RenterError::NotAllocatable { hotkey: hk.clone(), verdict })?;
                candidate.signs = signers.contains(hk);
                allocator::allocate_hotkey(&self.dendrite, candidate, req, opts, store, progress).await?
            }
            Target::Requirement => {
                if specs.is_empty() {
                    return Err(RenterError::NoMiners);
                }
                let penalized: HashSet<String> = self.db.penalized()?.into_iter().collect();
                let (mut cands, excluded) = allocator::candidates(&specs, mg, &penalized, req);
                for c in &mut cands {
                    c.signs = signers.contains(&c.hotkey);
                }
                allocator::allocate(&self.dendrite, cands, excluded, req, opts, store, progress).await?
            }
        };
        if allocated.authenticated {
            self.db.mark_signer(&allocated.hotkey)?;
        }
        Ok(allocated)
    }

    /// Whether answers about `hotkey`'s allocation must be signed: it was made with signed
    /// answers, or the miner has signed before.
    fn signed_expected(&self, hotkey: &str, authenticated: bool) -> bool {
        authenticated || self.db.is_signer(hotkey).unwrap_or(false)
    }

    /// Forgets that `hotkey` signs its answers (its operator moved to a miner without nicompute's
    /// extension). `false` if it was not remembered.
    pub fn forget_signer(&self, hotkey: &str) -> Result<bool, RenterError> {
        Ok(self.db.forget_signer(hotkey)?)
    }

    /// Releases the allocation of `hotkey`: the row goes when the miner confirms; an
    /// unreachable miner leaves it pending for [`Self::reconcile`].
    pub async fn deallocate(&self, mg: &Metagraph, hotkey: &str, timeout: Duration) -> Result<Released, RenterError> {
        let Some(rec) = self.db.allocation(hotkey)? else { return Ok(Released::NotAllocated) };
        let Some(regkey) = rec.details.as_ref().map(|d| d.regkey.clone()).filter(|r| !r.is_empty()) else {
            return Ok(Released::Failed("the row has no regkey".into()));
        };
        let expected = self.signed_expected(hotkey, rec.details.as_ref().is_some_and(|d| d.authenticated));
        let target = match Candidate::from_metagraph(hotkey, mg, None) {
            Ok(c) => c.target,
            Err(v) => {
                let why = format!("the miner cannot be reached: {v}");
                self.db.mark_pending_deallocation(hotkey, &why)?;
                return Ok(Released::Pending(why));
            }
        };
        let store: &ComputeDb = &self.db;
        Ok(match allocator::deallocate(&self.dendrite, &target, hotkey, &regkey, store, timeout, expected).await {
            DeallocOutcome::Released => Released::Released,
            DeallocOutcome::Unreachable(e) => {
                Released::Pending(format!("{e}; kept as pending_deallocation — `nicompute reconcile` retries"))
            }
            DeallocOutcome::NotHolder(r) => Released::Gone(r),
            DeallocOutcome::Refused(r) => Released::Refused(r),
        })
    }

    /// Restarts, pauses, unpauses or re-keys the container of the allocation on `hotkey`; done
    /// only when the miner confirmed and the machine shows it (within `observe`).
    pub async fn container_action(
        &self,
        mg: &Metagraph,
        hotkey: &str,
        action: &ContainerAction,
        observe: Duration,
    ) -> Result<(), RenterError> {
        self.container_action_report(mg, hotkey, action, observe).await.map(drop)
    }

    /// [`Self::container_action`], saying whether the answer was signed and whether the pinned
    /// host key moved (a machine the miner recreated: the new key came signed, so the pin follows).
    pub async fn container_action_report(
        &self,
        mg: &Metagraph,
        hotkey: &str,
        action: &ContainerAction,
        observe: Duration,
    ) -> Result<ActionReport, RenterError> {
        let not = || RenterError::NotAllocated { hotkey: hotkey.to_owned() };
        let rec = self.db.allocation(hotkey)?.ok_or_else(not)?;
        let details = rec.details.as_ref().filter(|d| !d.regkey.is_empty()).ok_or_else(not)?;
        let target = Candidate::from_metagraph(hotkey, mg, None)
            .map_err(|verdict| RenterError::NotAllocatable { hotkey: hotkey.to_owned(), verdict })?
            .target;
        let ip = if details.ip.is_empty() { target.ip.clone() } else { details.ip.clone() };
        let to = ActionTarget {
            axon: &target,
            regkey_pem: &details.regkey,
            ssh_ip: &ip,
            ssh_port: details.port,
            signed_expected: self.signed_expected(hotkey, details.authenticated),
        };
        let done = container_action(&self.dendrite, to, action, observe).await?;
        let host_key_changed = match &done.host_key {
            Some(k) if details.host_key.as_deref() != Some(k.as_str()) => {
                tracing::warn!(%hotkey, "the miner signed a new host key for the allocation; the pin follows it");
                self.db.set_host_key(hotkey, k)?;
                details.host_key.is_some()
            }
            _ => false,
        };
        Ok(ActionReport { signed: done.signed, host_key_changed })
    }

    /// Makes the database and the miners agree: releases interrupted allocations, retries
    /// pending deallocations, asks every allocated miner whether the allocation still exists
    /// (and with `prune` drops the rows whose machine is gone).
    pub async fn reconcile(&self, mg: &Metagraph, prune: bool) -> Result<ReconcileReport, RenterError> {
        let before = self.db.allocations()?.len();
        let interrupted_released = self.release_interrupted(mg).await;
        let store: &ComputeDb = &self.db;
        let mut rows = Vec::new();
        for rec in self.db.allocations()? {
            let hotkey = rec.hotkey.clone();
            let state = rec.state.as_str().to_owned();
            let Some(regkey) = rec.details.as_ref().map(|d| d.regkey.clone()).filter(|r| !r.is_empty()) else {
                rows.push(ReconcileRow { hotkey, state, result: Reconciled::NoRegkey });
                continue;
            };
            let target = match Candidate::from_metagraph(&hotkey, mg, None) {
                Ok(c) => c.target,
                Err(v) => {
                    rows.push(ReconcileRow { hotkey, state, result: Reconciled::Unreachable(v.to_string()) });
                    continue;
                }
            };
            let expected = self.signed_expected(&hotkey, rec.details.as_ref().is_some_and(|d| d.authenticated));
            let result = if rec.state == AllocationState::PendingDeallocation {
                let timeout = Duration::from_secs(30);
                match allocator::deallocate(&self.dendrite, &target, &hotkey, &regkey, store, timeout, expected).await {
                    DeallocOutcome::Released => Reconciled::PendingReleased,
                    DeallocOutcome::NotHolder(_) => {
                        self.db.finish_deallocation(&hotkey)?;
                        Reconciled::AlreadyGone
                    }
                    DeallocOutcome::Refused(r) => Reconciled::ReleaseRefused(r),
                    DeallocOutcome::Unreachable(e) => Reconciled::StillUnreachable(e),
                }
            } else {
                // Only a definite "not here" lets a row go: an error, an answer that cannot tell,
                // or an unsigned answer about a signed allocation keeps it.
                match allocator::liveness(&self.dendrite, &target, &regkey, Duration::from_secs(12), expected).await {
                    Ok(Liveness::Running { .. }) => Reconciled::Held,
                    Ok(Liveness::Gone(_)) if prune => {
                        self.db.finish_deallocation(&hotkey)?;
                        Reconciled::GoneRemoved
                    }
                    Ok(Liveness::Gone(why)) => Reconciled::Gone(why),
                    Err(e) => Reconciled::NoAnswer(e.to_string()),
                }
            };
            rows.push(ReconcileRow { hotkey, state, result });
        }
        let changed = self.db.allocations()?.len() != before;
        Ok(ReconcileReport { interrupted_released, allocations: rows, changed })
    }

    /// Asks every serving miner for its specs, `concurrency` at a time, and records the answers
    /// (and the failures, for SN27's `no_specs_count`). `timeout` is the whole sync's: it
    /// counts from this call (the metagraph read included), and every answer is due by then.
    /// A miner not asked before it (more miners than `concurrency` allows in the time) is
    /// reported and not counted against. `progress` gets (done, total).
    pub async fn sync(
        &self,
        timeout: Duration,
        concurrency: usize,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<SyncReport, RenterError> {
        let deadline = Instant::now() + timeout;
        let mg = self.metagraph().await?;
        let signers = self.db.signers()?;
        let results = allocator::sync_specs(&self.dendrite, &mg, deadline, concurrency, &signers, progress).await;
        let now = self.db.clock().now_ms();
        let mut failed = Vec::new();
        let mut signed = 0;
        for (hotkey, r) in &results {
            match r {
                Ok(specs) => signed += usize::from(specs.signed),
                Err(e) => failed.push((hotkey.clone(), e.to_string())),
            }
        }
        let mut errors = failed.iter();
        let outcomes: Vec<crate::db::SyncOutcome<'_>> = results
            .iter()
            .filter_map(|(hotkey, r)| match r {
                Ok(specs) => Some(crate::db::SyncOutcome::Specs { hotkey, json: &specs.json, signed: specs.signed }),
                Err(e) => {
                    let why = errors.next().map_or("", |(_, why)| why.as_str());
                    // Not asked is our shortfall, not the miner's.
                    (!matches!(e, allocator::SpecsError::NotSent))
                        .then_some(crate::db::SyncOutcome::NoSpecs { hotkey, error: why })
                }
            })
            .collect();
        // One transaction for the whole sync.
        self.db.record_sync(&outcomes, now)?;
        Ok(SyncReport { asked: results.len(), answered: results.len() - failed.len(), signed, failed })
    }
}
