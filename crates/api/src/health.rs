//! The periodic checks of every allocation in the database (the API's and the CLI's alike), as
//! register_api's `_check_allocation` does them, with its numbers as defaults: every
//! `check_interval` each allocated miner gets a `checking` Allocate with the allocation key
//! (SN27's `check_if_allocated`: yes only while that key's container runs). A change of state
//! sends ONLINE or OFFLINE; `offline_limit` failures in a row release the allocation and send
//! DEALLOCATION; an allocation past its end that the miner no longer holds is released as
//! expired; EXPIRING goes out once, `expiring_before` its end. Every round also retries pending
//! releases and releases allocations interrupted by a crash.

use std::sync::Arc;

use compute::allocator::{still_allocated, Candidate};
use compute::db::{AllocationRecord, AllocationState, HealthRecord};
use tokio::sync::Semaphore;

use crate::events::Event;
use crate::jobs::{self, Cause};
use crate::metrics::labels;
use crate::state::AppState;
use crate::webhook;

/// Checks at once.
const CONCURRENCY: usize = 32;

/// The loop: one round at once, then one every `check_interval`, until the server stops.
pub async fn run(state: AppState) {
    let mut stop = state.stopping();
    let mut tick = tokio::time::interval(state.config().check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if let Err(e) = round(&state).await {
            tracing::warn!(error = %e, "health check round failed");
        }
    }
}

/// Why a round of checks did not start: the metagraph or the database could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoundError {
    #[error("cannot read the metagraph: {0}")]
    Metagraph(#[from] compute::renter::RenterError),
    #[error("cannot read the allocations: {0}")]
    Db(#[from] compute::db::DbError),
}

/// One round over every allocation.
pub async fn round(state: &AppState) -> Result<(), RoundError> {
    let renter = state.renter();
    let mg = renter.metagraph_within(state.config().metagraph_max_age).await?;
    // Half-made allocations (a crash, another process's Ctrl-C) are released only while this
    // server is making none: its own in-flight ones look the same in the database.
    if let Ok(_alone) = state.allocating().try_write() {
        renter.release_interrupted(&mg).await;
    }
    let rows = state.db().allocations()?;
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let mut set = tokio::task::JoinSet::new();
    for rec in rows {
        let (st, mg, limit) = (state.clone(), mg.clone(), limit.clone());
        set.spawn(async move {
            let Ok(_permit) = limit.acquire_owned().await else { return };
            check_one(&st, &mg, rec).await;
        });
    }
    while set.join_next().await.is_some() {}
    Ok(())
}

async fn check_one(state: &AppState, mg: &bittensor::subtensor::metagraph::Metagraph, rec: AllocationRecord) {
    let hotkey = rec.hotkey.clone();
    let api = state.db().api_allocation_of(&hotkey).ok().flatten();
    if rec.state == AllocationState::PendingDeallocation {
        // A release the miner did not confirm: try again.
        if let Ok(r) = jobs::release(state, &hotkey, api.as_ref(), Cause::Requested, false).await {
            tracing::info!(%hotkey, result = r.label(), "retried a pending release");
        }
        return;
    }
    if rec.state != AllocationState::Active {
        return;
    }
    let Some(regkey) = rec.regkey.clone() else { return };
    let now = state.now_ms();
    let uuid = jobs::uuid_of(state, &hotkey, api.as_ref());
    let answer = match Candidate::from_metagraph(&hotkey, mg, None) {
        Ok(c) => still_allocated(state.renter().dendrite(), &c.target, &regkey, state.config().check_timeout)
            .await
            .map_err(|e| e.to_string()),
        Err(v) => Err(v.to_string()),
    };
    let expired = rec.expires_ms.is_some_and(|e| e <= now);
    if expired && answer == Ok(false) {
        // The lease ended on the miner: over.
        let _ = jobs::release(state, &hotkey, api.as_ref(), Cause::Expired, true).await;
        return;
    }
    let ok = answer == Ok(true);
    state.metrics().inc("nicompute_api_checks_total", labels(&[("result", if ok { "online" } else { "offline" })]));
    let prior = state.db().health(&hotkey).ok().flatten();
    let was_online = prior.as_ref().is_none_or(|h| h.online);
    let failures = if ok { 0 } else { prior.as_ref().map_or(0, |h| h.failures) + 1 };
    let mut events = Vec::new();
    let mut changed_ms = prior.as_ref().and_then(|h| h.changed_ms);
    if ok != was_online {
        let kind = if ok { "ONLINE" } else { "OFFLINE" };
        events.extend(webhook::event(state, kind, &hotkey, &uuid, now, None));
        changed_ms = Some(now);
        tracing::info!(%hotkey, status = kind, error = ?answer.as_ref().err(), "allocation status changed");
        state.publish(Event {
            kind: "health",
            id: api.as_ref().map(|a| a.id.clone()),
            hotkey: Some(hotkey.clone()),
            state: kind.to_owned(),
            detail: None,
            owner: api.as_ref().map(|a| a.owner.clone()),
            at_ms: now,
        });
    }
    let mut expiring_sent_for = prior.as_ref().and_then(|h| h.expiring_sent_for);
    if let Some(end) = rec.expires_ms {
        let soon = end.saturating_sub(state.config().expiring_before.as_millis() as u64) <= now;
        if soon && !expired && expiring_sent_for != Some(end) {
            events.extend(webhook::event(state, "EXPIRING", &hotkey, &uuid, end, None));
            expiring_sent_for = Some(end);
            state.publish(Event {
                kind: "health",
                id: api.as_ref().map(|a| a.id.clone()),
                hotkey: Some(hotkey.clone()),
                state: "EXPIRING".into(),
                detail: None,
                owner: api.as_ref().map(|a| a.owner.clone()),
                at_ms: now,
            });
        }
    }
    let h = HealthRecord {
        hotkey: hotkey.clone(),
        online: ok,
        failures,
        last_check_ms: Some(now),
        changed_ms,
        expiring_sent_for,
    };
    if let Err(e) = state.db().record_health(&h, &events) {
        tracing::error!(%hotkey, error = %e, "cannot record a health check");
        return;
    }
    if !events.is_empty() {
        state.wake_outbox();
    }
    if failures >= state.config().offline_limit {
        tracing::warn!(%hotkey, failures, "allocation offline too long: releasing it");
        if let Err(e) = jobs::release(state, &hotkey, api.as_ref(), Cause::Offline, true).await {
            tracing::error!(%hotkey, error = %e.detail, "automatic release failed");
        }
    }
}
