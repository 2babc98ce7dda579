//! Allocations through the API: accepted at once (`allocating`, an id), made in the background
//! by the same [`Renter::allocate`](compute::renter::Renter::allocate) the CLI's `a` calls, then
//! `active` or `failed`; waited for with `?wait=`; released by their owner, by the health
//! checks, or found gone. The password is given once — in the first answer that shows the
//! allocation active to its owner — and afterwards only to tokens with the `secrets` scope.

use std::time::{Duration, Instant};

use compute::allocator::{AllocateOptions, Stage};
use compute::db::{ApiAllocation, ApiAllocationState};
use compute::renter::{Released, RenterError, Target};
use compute::specs::Requirement;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::Principal;
use crate::events::Event;
use crate::metrics::labels;
use crate::problem::Problem;
use crate::state::AppState;
use crate::webhook;

/// What an allocation request asks for (stored with the allocation as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    /// `None`: any miner meeting the requirement.
    pub hotkey: Option<String>,
    pub requirement: Requirement,
    /// SN27's `timeline` in days.
    pub timeline_days: i64,
    /// The lease our miners enforce.
    pub ttl_seconds: Option<u64>,
    /// An OpenSSH public key line for the machine's `authorized_keys`.
    pub ssh_key: Option<String>,
    /// Budget of the check phase.
    pub deadline_seconds: u64,
}

/// Whether the request that made an allocation is still waiting for it: the job and the waiting
/// handler agree through it on who shows the password first, without another write.
pub type Waiter = std::sync::Arc<std::sync::Mutex<bool>>;

/// Records the allocation (`allocating`) and starts making it; returns at once. With `waiter`
/// set, the request is waiting: if it still is when the allocation becomes active, the
/// credentials are marked shown in the same transaction, for that request to show them.
pub fn start(
    state: &AppState,
    owner: &Principal,
    order: Order,
    waiter: Option<Waiter>,
) -> Result<ApiAllocation, Problem> {
    if order.timeline_days < 1 {
        return Err(Problem::bad_request("the timeline must be at least 1 day"));
    }
    if let Some(hk) = &order.hotkey {
        bittensor::AccountId::from_ss58(hk)
            .map_err(|e| Problem::bad_request(format!("hotkey '{hk}' is not an SS58 address: {e}")))?;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let request = serde_json::to_string(&order).map_err(|e| Problem::internal(e.to_string()))?;
    let rec = state.db().create_api_allocation(&id, &owner.owner, order.hotkey.as_deref(), &request)?;
    state.publish(event(state, &rec));
    let (st, who) = (state.clone(), owner.owner.clone());
    state.spawn_job(async move { run(st, id, who, order, waiter).await });
    Ok(rec)
}

fn event(state: &AppState, rec: &ApiAllocation) -> Event {
    Event {
        kind: "allocation",
        id: Some(rec.id.clone()),
        hotkey: rec.hotkey.clone(),
        state: rec.state.as_str().to_owned(),
        detail: None,
        owner: Some(rec.owner.clone()),
        at_ms: state.now_ms(),
    }
}

async fn run(state: AppState, id: String, owner: String, order: Order, waiter: Option<Waiter>) {
    let started = Instant::now();
    let renter = state.renter().clone();
    let making = state.allocating().read().await;
    let outcome = async {
        let mg = renter.metagraph_within(state.config().metagraph_max_age).await?;
        let target = match &order.hotkey {
            Some(h) => Target::Hotkey(h.clone()),
            None => Target::Requirement,
        };
        let deadline = Duration::from_secs(order.deadline_seconds.max(1));
        let opts = AllocateOptions {
            timeline_days: order.timeline_days,
            ttl: order.ttl_seconds.map(Duration::from_secs),
            ssh_key: order.ssh_key.clone(),
            deadline,
            check_timeout: deadline,
            clock: state.db().clock().clone(),
            uuid: Some(id.clone()),
            ..AllocateOptions::default()
        };
        let progress = |stage: Stage| {
            if let Some(e) = progress_event(&state, &id, &owner, stage) {
                state.publish(e);
            }
        };
        renter.allocate(&mg, &target, &order.requirement, &opts, &progress).await
    }
    .await;
    drop(making);
    let now = state.now_ms();
    let (new, hotkey, error, health) = match outcome {
        Ok(a) => {
            let health = compute::db::HealthRecord {
                hotkey: a.hotkey.clone(),
                online: true,
                failures: 0,
                last_check_ms: Some(now),
                changed_ms: Some(now),
                expiring_sent_for: None,
            };
            (ApiAllocationState::Active, Some(a.hotkey), None, Some(health))
        }
        Err(e) => (ApiAllocationState::Failed, None, Some(failure_text(&e)), None),
    };
    {
        // Held while writing: a waiter that gives up meanwhile sees the outcome afterwards.
        let guard = waiter.as_ref().map(|w| w.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let shown = new == ApiAllocationState::Active && guard.as_deref() == Some(&true);
        if let Err(e) =
            state.db().finish_api_allocation(&id, new, hotkey.as_deref(), error.as_deref(), health.as_ref(), shown)
        {
            tracing::error!(%id, error = %e, "cannot record the allocation's outcome");
        }
    }
    let m = state.metrics();
    m.inc("nicompute_api_allocations_total", labels(&[("result", new.as_str())]));
    m.observe("nicompute_api_allocation_duration_seconds", String::new(), started.elapsed());
    tracing::info!(%id, state = new.as_str(), hotkey = ?hotkey, error = ?error, "allocation finished");
    if let Ok(Some(rec)) = state.db().api_allocation(&id) {
        state.publish(event(&state, &rec));
    }
}

/// A stage of an allocation being made, as a `progress` event for its owner (the page shows
/// it while the miners are asked).
fn progress_event(state: &AppState, id: &str, owner: &str, stage: Stage) -> Option<Event> {
    let (name, hotkey, detail) = match stage {
        Stage::Checking { candidates } => {
            let s = if candidates == 1 { "" } else { "s" };
            ("checking", None, format!("checking {candidates} matching miner{s}"))
        }
        Stage::Allocating { hotkey, attempt } => {
            let d = format!("asking miner {hotkey} to allocate (attempt {attempt})");
            ("asking", Some(hotkey), d)
        }
        Stage::WaitingForSsh { ip, port } => {
            ("waiting_for_ssh", None, format!("allocated; waiting for its SSH server at {ip}:{port}"))
        }
        _ => return None,
    };
    Some(Event {
        kind: "progress",
        id: Some(id.to_owned()),
        hotkey,
        state: name.to_owned(),
        detail: Some(detail),
        owner: Some(owner.to_owned()),
        at_ms: state.now_ms(),
    })
}

fn failure_text(e: &RenterError) -> String {
    use std::error::Error;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Waits until allocation `id` is no longer `allocating`, for at most `limit`. With the
/// creating request's `waiter`: `(record, true)` when this request is the one to show the
/// password (it was waiting when the allocation became active).
pub async fn wait(
    state: &AppState,
    id: &str,
    limit: Duration,
    waiter: Option<&Waiter>,
) -> Result<(ApiAllocation, bool), Problem> {
    let mut events = state.subscribe();
    let deadline = tokio::time::Instant::now() + limit;
    let mut timed_out = false;
    loop {
        if timed_out {
            if let Some(w) = waiter {
                *w.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = false;
            }
        }
        let rec = state.db().api_allocation(id)?.ok_or_else(|| Problem::not_found(format!("no allocation {id}")))?;
        if rec.state != ApiAllocationState::Allocating || timed_out {
            // Marked shown by the job while this request was waiting: this answer shows it.
            let mine = waiter.is_some() && rec.state == ApiAllocationState::Active && rec.credentials_shown;
            return Ok((rec, mine));
        }
        // An event (any, lagged or closed) means: look again; the deadline means: done.
        if tokio::time::timeout_at(deadline, events.recv()).await.is_err() {
            timed_out = true;
        }
    }
}

/// What caused a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The owner asked.
    Requested,
    /// The health checks gave up on it.
    Offline,
    /// Its lease ended on the miner.
    Expired,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Offline => "offline",
            Self::Expired => "expired",
        }
    }
}

/// Releases the allocation on `hotkey` (the API's `rec` when it has one): asks the miner; on
/// success or when the miner holds nothing, the allocation is `released`; unreachable, it is
/// `releasing` (the database keeps it pending; the checks retry). Sends DEALLOCATION when
/// `notify` and the allocation ended.
pub async fn release(
    state: &AppState,
    hotkey: &str,
    rec: Option<&ApiAllocation>,
    cause: Cause,
    notify: bool,
) -> Result<Released, Problem> {
    let mg = state.renter().metagraph_within(state.config().metagraph_max_age).await.map_err(renter_problem)?;
    let uuid = uuid_of(state, hotkey, rec);
    let outcome = state.renter().deallocate(&mg, hotkey, Duration::from_secs(30)).await.map_err(renter_problem)?;
    if let Released::Gone(_) = &outcome {
        // The miner holds nothing for our key: there is nothing left to release.
        state.db().finish_deallocation(hotkey)?;
    }
    if cause != Cause::Requested {
        if let Released::Refused(why) = &outcome {
            // Offline or expired and the miner will not release it: kept pending, retried.
            state.db().mark_pending_deallocation(hotkey, why)?;
        }
    }
    // Offline and expired allocations are over whatever the miner says: the renter stops paying.
    let ended = matches!(outcome, Released::Released | Released::NotAllocated | Released::Gone(_))
        || (cause != Cause::Requested && matches!(outcome, Released::Pending(_) | Released::Refused(_)));
    let new = match &outcome {
        Released::Released | Released::NotAllocated | Released::Gone(_) => Some(ApiAllocationState::Released),
        Released::Pending(_) => Some(ApiAllocationState::Releasing),
        Released::Refused(_) if cause != Cause::Requested => Some(ApiAllocationState::Releasing),
        Released::Refused(_) | Released::Failed(_) => None,
    };
    state
        .metrics()
        .inc("nicompute_api_releases_total", labels(&[("cause", cause.as_str()), ("result", outcome.label())]));
    if let (Some(rec), Some(new)) = (rec, new) {
        state.db().set_api_allocation(&rec.id, new, None, outcome.detail())?;
        if let Ok(Some(r)) = state.db().api_allocation(&rec.id) {
            state.publish(event(state, &r));
        }
    }
    if ended {
        let events = if notify {
            webhook::event(state, "DEALLOCATION", hotkey, &uuid, state.now_ms(), Some(cause.as_str()))
        } else {
            Vec::new()
        };
        state.db().end_health(hotkey, &events)?;
        state.wake_outbox();
        state.publish(Event {
            kind: "health",
            id: rec.map(|r| r.id.clone()),
            hotkey: Some(hotkey.to_owned()),
            state: "DEALLOCATION".into(),
            detail: None,
            owner: rec.map(|r| r.owner.clone()),
            at_ms: state.now_ms(),
        });
    }
    Ok(outcome)
}

/// The allocation's `uuid` as register_api knows it: recorded in the row, else the API's id.
pub fn uuid_of(state: &AppState, hotkey: &str, rec: Option<&ApiAllocation>) -> String {
    let from_row = state.db().allocation(hotkey).ok().flatten().and_then(|r| r.details.and_then(|d| d.uuid));
    from_row.or_else(|| rec.map(|r| r.id.clone())).unwrap_or_default()
}

pub fn renter_problem(e: RenterError) -> Problem {
    match e {
        RenterError::Chain { .. } => Problem::unavailable(failure_text(&e)),
        RenterError::Db(db) => db.into(),
        other => Problem::new(
            http::StatusCode::UNPROCESSABLE_ENTITY,
            "not-allocated",
            "Nothing was allocated",
            failure_text(&other),
        ),
    }
}

/// An allocation as `/v1` shows it to `who`: its state and request, the machine (login and
/// expiry) while it is held, its health. The password only with `reveal`.
pub fn view(state: &AppState, rec: &ApiAllocation, who: &Principal, reveal: bool) -> Value {
    let request: Value = serde_json::from_str(&rec.request).unwrap_or(Value::Null);
    let mut v = json!({
        "id": rec.id,
        "state": rec.state,
        "hotkey": rec.hotkey,
        "created_at_ms": rec.created_ms,
        "updated_at_ms": rec.updated_ms,
        "error": rec.error,
        "request": request,
    });
    if who.is_admin() {
        v["owner"] = json!(rec.owner);
    }
    if matches!(rec.state, ApiAllocationState::Active | ApiAllocationState::Releasing) {
        if let Some(hk) = &rec.hotkey {
            if let Ok(Some(row)) = state.db().allocation(hk) {
                if let Some(d) = &row.details {
                    v["machine"] = json!({
                        "ip": d.ip,
                        "port": d.port,
                        "username": d.username,
                        "password": if reveal { Value::from(d.password.expose_secret()) } else { Value::Null },
                        "ssh_command": d.ssh_command(),
                        "resource": d.resource,
                        "expires_at_ms": row.expires_ms,
                        "ssh_key_injected": row.ssh_key_injected,
                    });
                    // The key the miner signed and the renter pinned (nicompute miners only).
                    if let Some(key) = &d.host_key {
                        v["machine"]["host_key_fingerprint"] = json!(compute::sshexec::fingerprint(key));
                    }
                }
            }
            if let Ok(Some(h)) = state.db().health(hk) {
                v["health"] = json!({
                    "status": if h.online { "ONLINE" } else { "OFFLINE" },
                    "failures": h.failures,
                    "last_check_ms": h.last_check_ms,
                    "changed_ms": h.changed_ms,
                });
            }
        }
    }
    v
}

/// Whether `who` gets the password of `rec` in this answer: with the `secrets` scope always;
/// its owner once, the first time it is shown active.
pub fn reveal(state: &AppState, rec: &ApiAllocation, who: &Principal) -> Result<bool, Problem> {
    if rec.state != ApiAllocationState::Active {
        return Ok(false);
    }
    if who.scope.secrets {
        return Ok(true);
    }
    Ok(who.owner == rec.owner && state.db().take_credentials(&rec.id)?)
}
