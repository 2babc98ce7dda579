//! `/v1/allocations`: create (by requirement or by hotkey; `202` + id, `?wait=SECONDS` for the
//! outcome), list, get, release, and the container's lifecycle actions. A token sees and
//! changes only its own allocations; admin sees all.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use compute::db::{ApiAllocation, ApiAllocationState};
use compute::renter::Released;
use compute::specs::{GpuRequirement, Requirement};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{body, query, Paging};
use crate::auth::{Caller, Level, Principal};
use crate::jobs::{self, Cause, Order};
use crate::problem::Problem;
use crate::state::AppState;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The machine asked for; every field optional (1 CPU, 1 GB RAM, 1 GB disk, no GPU by default).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequirementBody {
    /// Matched against the GPU name (`h100`, `4090`).
    pub gpu_type: Option<String>,
    /// Memory per GPU, GB.
    pub gpu_size_gb: Option<f64>,
    pub gpu_count: Option<u64>,
    pub cpu_count: Option<u64>,
    pub ram_gb: Option<f64>,
    pub disk_gb: Option<f64>,
}

impl RequirementBody {
    /// The requirement as `a` builds it from the same flags.
    pub fn requirement(&self) -> Result<Requirement, Problem> {
        for (name, v) in [("gpu_size_gb", self.gpu_size_gb), ("ram_gb", self.ram_gb), ("disk_gb", self.disk_gb)] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err(Problem::bad_request(format!("{name} must be a number of GB, 0 or more")));
            }
        }
        let kind = self.gpu_type.clone().filter(|k| !k.trim().is_empty());
        let gpu = if kind.is_none() && self.gpu_size_gb.is_none() {
            None
        } else {
            Some(GpuRequirement {
                count: self.gpu_count.unwrap_or(1).max(1),
                memory_mib: self.gpu_size_gb.map_or(0, |gb| (gb * 1024.0).round() as u64),
                kind: kind.unwrap_or_default(),
            })
        };
        Ok(Requirement {
            cpu_count: Some(self.cpu_count.unwrap_or(1)),
            gpu,
            hard_disk_bytes: Some((self.disk_gb.unwrap_or(1.0) * GIB) as u64),
            ram_bytes: Some((self.ram_gb.unwrap_or(1.0) * GIB) as u64),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// Allocate this miner (else any miner meeting `requirement`).
    pub hotkey: Option<String>,
    #[serde(default)]
    pub requirement: RequirementBody,
    /// The lease our miners enforce, in seconds (SN27 miners go by `timeline_days`).
    pub ttl_seconds: Option<u64>,
    /// SN27's timeline (default: the TTL rounded up to days, else 90 by requirement, 30 by hotkey).
    pub timeline_days: Option<i64>,
    /// An OpenSSH public key line to log in with.
    pub ssh_key: Option<String>,
    /// Budget for checking candidates (default 10).
    pub deadline_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct WaitParams {
    /// Block until the allocation is active or failed, for at most this many seconds.
    pub wait: Option<u64>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<WaitParams>, axum::extract::rejection::QueryRejection>,
    b: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    caller.require(Level::Allocate)?;
    let wait = query(q)?.wait;
    let b = body(b)?;
    if b.ttl_seconds == Some(0) {
        return Err(Problem::bad_request("ttl_seconds must be at least 1"));
    }
    let timeline_days = b.timeline_days.unwrap_or_else(|| match b.ttl_seconds {
        Some(t) => (t.div_ceil(86_400) as i64).max(1),
        None if b.hotkey.is_some() => 30,
        None => 90,
    });
    let order = Order {
        hotkey: b.hotkey.map(|h| h.trim().to_owned()),
        requirement: b.requirement.requirement()?,
        timeline_days,
        ttl_seconds: b.ttl_seconds,
        ssh_key: b.ssh_key.map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()),
        deadline_seconds: b.deadline_seconds.unwrap_or(10).clamp(1, 120),
    };
    let waiting = wait.filter(|s| *s > 0);
    let waiter: Option<jobs::Waiter> = waiting.map(|_| std::sync::Arc::new(std::sync::Mutex::new(true)));
    let rec = jobs::start(&state, &caller.0, order, waiter.clone())?;
    let (rec, shown_here) = match waiting {
        Some(s) => {
            let limit = Duration::from_secs(s).min(state.config().max_wait);
            jobs::wait(&state, &rec.id, limit, waiter.as_ref()).await?
        }
        None => (rec, false),
    };
    let status = match rec.state {
        ApiAllocationState::Allocating => StatusCode::ACCEPTED,
        ApiAllocationState::Active => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    let reveal = shown_here || jobs::reveal(&state, &rec, &caller.0)?;
    let mut r = (status, Json(jobs::view(&state, &rec, &caller.0, reveal))).into_response();
    if let Ok(loc) = format!("/v1/allocations/{}", rec.id).parse() {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(r)
}

/// The allocation `id` if `who` may see it (404 otherwise: another tenant's ids do not exist).
pub fn visible(state: &AppState, who: &Principal, id: &str) -> Result<ApiAllocation, Problem> {
    match state.db().api_allocation(id)? {
        Some(rec) if who.may_see(&rec.owner) => Ok(rec),
        _ => Err(Problem::not_found(format!("no allocation {id}"))),
    }
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    state: Option<String>,
    hotkey: Option<String>,
    page: Option<usize>,
    per_page: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Problem> {
    caller.require(Level::Read)?;
    let p = query(q)?;
    let owner = (!caller.0.is_admin()).then_some(caller.0.owner.as_str());
    let rows: Vec<Value> = state
        .db()
        .api_allocations(owner)?
        .into_iter()
        .filter(|r| p.state.as_deref().is_none_or(|s| r.state.as_str() == s))
        .filter(|r| p.hotkey.as_deref().is_none_or(|h| r.hotkey.as_deref() == Some(h)))
        .map(|r| {
            let reveal = caller.0.scope.secrets && r.state == ApiAllocationState::Active;
            jobs::view(&state, &r, &caller.0, reveal)
        })
        .collect();
    Ok(Json(json!(Paging { page: p.page, per_page: p.per_page }.page(&rows)?)))
}

pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<WaitParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Problem> {
    caller.require(Level::Read)?;
    let mut rec = visible(&state, &caller.0, &id)?;
    if let Some(s) = query(q)?.wait.filter(|s| *s > 0) {
        rec = jobs::wait(&state, &id, Duration::from_secs(s).min(state.config().max_wait), None).await?.0;
    }
    let reveal = jobs::reveal(&state, &rec, &caller.0)?;
    Ok(Json(jobs::view(&state, &rec, &caller.0, reveal)))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Level::Allocate)?;
    let rec = visible(&state, &caller.0, &id)?;
    let hotkey = match (&rec.state, &rec.hotkey) {
        (ApiAllocationState::Active | ApiAllocationState::Releasing, Some(h)) => h.clone(),
        (ApiAllocationState::Allocating, _) => {
            return Err(Problem::conflict(
                "the allocation is still being made; wait for it (?wait=SECONDS), then delete it",
            ))
        }
        _ => return Err(Problem::conflict(format!("the allocation is {}: nothing to release", rec.state.as_str()))),
    };
    let outcome = jobs::release(&state, &hotkey, Some(&rec), Cause::Requested, true).await?;
    let rec = visible(&state, &caller.0, &id)?;
    let view = jobs::view(&state, &rec, &caller.0, false);
    match outcome {
        Released::Released | Released::NotAllocated | Released::Gone(_) => {
            Ok((StatusCode::OK, Json(view)).into_response())
        }
        Released::Pending(_) => Ok((StatusCode::ACCEPTED, Json(view)).into_response()),
        Released::Refused(r) => Err(Problem::new(StatusCode::BAD_GATEWAY, "miner-refused", "The miner refused", r)),
        Released::Failed(r) => Err(Problem::internal(r)),
    }
}

/// `restart`, `pause`, `unpause`, `exchange-key`.
pub async fn action(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
    b: Option<Json<Value>>,
) -> Result<Json<Value>, Problem> {
    caller.require(Level::Allocate)?;
    let rec = visible(&state, &caller.0, &id)?;
    let hotkey = match (&rec.state, &rec.hotkey) {
        (ApiAllocationState::Active, Some(h)) => h.clone(),
        _ => return Err(Problem::conflict(format!("the allocation is {}, not active", rec.state.as_str()))),
    };
    let params = b.map(|Json(v)| v).unwrap_or_else(|| json!({}));
    let done = crate::lifecycle::run(&state, &hotkey, &action, &params).await?;
    Ok(Json(json!({"id": id, "hotkey": hotkey, "action": action, "done": done})))
}
