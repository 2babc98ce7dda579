//! SN27's `register_api.py` routes, request models and envelope, so a platform written against
//! it switches by changing the URL (and, without mutual TLS, adding a token). Parameters are
//! where FastAPI put them: scalars in the query string, models in the body
//! (`allocate_spec` takes `{"requirements": …, "docker_requirement": …}`, `check_miner_status`
//! a JSON list of hotkeys). Answers are `{"success": true, "message", "data"}` or
//! `{"success": false, "message", "err_detail"}` with register_api's messages and status codes;
//! the two count routes answer `{"count": N}` as it does.
//!
//! Better than the original, on purpose: allocations are the API's (owned by the caller,
//! health-checked, webhooks durable); restart/pause/unpause report success only when the miner
//! confirmed and the machine shows it; passwords appear in the allocating answer and in
//! `/list/allocations_sql` only for tokens with the `secrets` scope; the list routes answer
//! from this validator's database and metagraph. `/list/resources_wandb` is answered like
//! `/list/resources_sql` and `/list/available` and `/list/allocated_hotkeys` from our state;
//! `/list/all_runs`, `/list/run_by_name`, `/list/specs` (wandb runs) and `WS /connect` are
//! dropped (`GET /v1/events` streams events instead); `/test/notify` queues a test webhook.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use compute::db::ApiAllocationState;
use compute::renter::Released;
use compute::specs::Requirement;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::{principal, Level, Principal};
use crate::jobs::{self, Cause, Order};
use crate::state::AppState;

/// An envelope answer.
#[derive(Debug)]
pub struct Envelope(StatusCode, Value);

impl IntoResponse for Envelope {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

fn ok(message: &str, data: Option<Value>) -> Envelope {
    let mut v = json!({"success": true, "message": message});
    if let Some(d) = data {
        v["data"] = d;
    }
    Envelope(StatusCode::OK, v)
}

fn fail(status: StatusCode, message: &str, detail: impl Into<Value>) -> Envelope {
    Envelope(status, json!({"success": false, "message": message, "err_detail": detail.into()}))
}

fn invalid(detail: impl std::fmt::Display) -> Envelope {
    fail(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Validation Error, Please check the request body.",
        json!([{"field": "body", "message": detail.to_string()}]),
    )
}

/// The caller of an SN27 route (401/403 in the envelope).
pub struct Sn27Caller(Principal);

impl<S: Send + Sync> FromRequestParts<S> for Sn27Caller {
    type Rejection = Envelope;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Envelope> {
        principal(parts).map(Sn27Caller).map_err(|why| fail(StatusCode::UNAUTHORIZED, "Missing authorization", why.0))
    }
}

impl Sn27Caller {
    fn require(&self, level: Level) -> Result<(), Envelope> {
        if self.0.scope.level >= level {
            Ok(())
        } else {
            Err(fail(
                StatusCode::FORBIDDEN,
                "Not allowed",
                format!("this needs a token with scope {} (this one has {})", level.as_str(), self.0.scope),
            ))
        }
    }
}

fn q<T: serde::de::DeserializeOwned>(
    r: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, Envelope> {
    r.map(|Query(t)| t).map_err(|e| invalid(e.body_text()))
}

/// register_api's answer at `/` (a browser asking for HTML gets the dashboard instead: see
/// `crate::web`).
pub fn welcome() -> Json<Value> {
    Json(json!({"message": "Welcome to Compute Subnet Allocation API, Please access the API via endpoint."}))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/service/allocate_spec", post(allocate_spec))
        .route("/service/allocate_hotkey", post(allocate_hotkey))
        .route("/service/deallocate", post(deallocate))
        .route("/service/check_miner_status", post(check_miner_status))
        .route("/service/restart_docker", post(restart_docker))
        .route("/service/pause_docker", post(pause_docker))
        .route("/service/unpause_docker", post(unpause_docker))
        .route("/service/exchange_docker_key", post(exchange_docker_key))
        .route("/list/allocations_sql", post(list_allocations))
        .route("/list/resources_sql", post(list_resources))
        .route("/list/resources_wandb", post(list_resources))
        .route("/list/count_all_gpus", post(count_all_gpus))
        .route("/list/count_all_by_model", post(count_all_by_model))
        .route("/list/available", post(list_available))
        .route("/list/allocated_hotkeys", post(list_allocated_hotkeys))
        .route("/test/notify", post(test_notify))
}

// ---- models ----

/// register_api's `DeviceRequirement` (GB, days).
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct DeviceRequirement {
    pub cpu_count: i64,
    pub gpu_type: String,
    pub gpu_size: i64,
    pub ram: i64,
    pub hard_disk: i64,
    pub timeline: i64,
}

impl Default for DeviceRequirement {
    fn default() -> Self {
        Self { cpu_count: 1, gpu_type: "gpu".into(), gpu_size: 3, ram: 1, hard_disk: 1, timeline: 90 }
    }
}

impl DeviceRequirement {
    /// The `device_requirement` register_api sends (`gpu.capacity` = GB × 1000 MB), read as the
    /// miner reads it.
    fn requirement(&self) -> Result<Requirement, Envelope> {
        let gib = 1024f64.powi(3);
        let mut d = json!({
            "cpu": {"count": self.cpu_count},
            "gpu": {},
            "hard_disk": {"capacity": self.hard_disk as f64 * gib},
            "ram": {"capacity": self.ram as f64 * gib},
        });
        if !self.gpu_type.is_empty() && self.gpu_size != 0 {
            d["gpu"] = json!({"count": 1, "capacity": self.gpu_size * 1000, "type": self.gpu_type});
        }
        Requirement::from_json(&d).map_err(invalid)
    }
}

/// register_api's `DockerRequirement`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DockerRequirement {
    pub base_image: Option<String>,
    pub ssh_key: String,
    pub volume_path: Option<String>,
    pub dockerfile: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AllocateSpecBody {
    requirements: DeviceRequirement,
    docker_requirement: DockerRequirement,
}

/// register_api's `Allocation` model for an allocation of ours.
fn allocation_model(state: &AppState, hotkey: &str, uuid: &str, reveal: bool) -> Option<Value> {
    let row = state.db().allocation(hotkey).ok().flatten()?;
    let d = row.details?;
    let version = match &d.version {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    };
    Some(json!({
        "resource": d.resource,
        "hotkey": hotkey,
        "regkey": "",
        "ssh_ip": d.ip,
        "ssh_port": d.port,
        "ssh_username": d.username,
        "ssh_password": if reveal { d.password.expose_secret().to_owned() } else { String::new() },
        "ssh_command": d.ssh_command(),
        "ssh_key": d.ssh_key.clone().unwrap_or_default(),
        "uuid_key": d.uuid.clone().unwrap_or_else(|| uuid.to_owned()),
        "miner_version": version,
    }))
}

async fn allocate(state: &AppState, caller: &Principal, order: Order) -> Envelope {
    let waiter: jobs::Waiter = std::sync::Arc::new(std::sync::Mutex::new(true));
    let rec = match jobs::start(state, caller, order, Some(waiter.clone())) {
        Ok(r) => r,
        Err(p) => return fail(p.status, "Invalid allocation request", p.detail),
    };
    let rec = match jobs::wait(state, &rec.id, state.config().max_wait, Some(&waiter)).await {
        Ok((r, _)) => r,
        Err(p) => return fail(StatusCode::NOT_FOUND, "Fail to allocate resource", p.detail),
    };
    match (rec.state, rec.hotkey.as_deref()) {
        // The allocating answer carries the password, as register_api's does (marked shown by
        // the job while this request waited).
        (ApiAllocationState::Active, Some(hk)) => match allocation_model(state, hk, &rec.id, true) {
            Some(m) => ok("Resource was successfully allocated", Some(m)),
            None => fail(StatusCode::NOT_FOUND, "Fail to allocate resource", "the allocation ended already"),
        },
        (ApiAllocationState::Allocating, _) => fail(
            StatusCode::NOT_FOUND,
            "Fail to allocate resource",
            format!("still allocating after {} s: GET /v1/allocations/{}", state.config().max_wait.as_secs(), rec.id),
        ),
        _ => fail(StatusCode::NOT_FOUND, "Fail to allocate resource", rec.error.unwrap_or_default()),
    }
}

async fn allocate_spec(
    State(state): State<AppState>,
    caller: Sn27Caller,
    b: Result<Json<AllocateSpecBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Envelope, Envelope> {
    caller.require(Level::Allocate)?;
    let Json(b) = b.map_err(|e| invalid(e.body_text()))?;
    if b.requirements.timeline < 1 {
        return Err(fail(StatusCode::BAD_REQUEST, "Invalid allocation request", "the timeline must be at least 1 day"));
    }
    let order = Order {
        hotkey: None,
        requirement: b.requirements.requirement()?,
        timeline_days: b.requirements.timeline,
        ttl_seconds: None,
        ssh_key: Some(b.docker_requirement.ssh_key.trim().to_owned()).filter(|k| !k.is_empty()),
        deadline_seconds: 10,
    };
    Ok(allocate(&state, &caller.0, order).await)
}

#[derive(Debug, Deserialize)]
struct AllocateHotkeyParams {
    hotkey: String,
    ssh_key: Option<String>,
}

async fn allocate_hotkey(
    State(state): State<AppState>,
    caller: Sn27Caller,
    p: Result<Query<AllocateHotkeyParams>, axum::extract::rejection::QueryRejection>,
    b: Option<Json<DockerRequirement>>,
) -> Result<Envelope, Envelope> {
    caller.require(Level::Allocate)?;
    let p = q(p)?;
    if p.hotkey.trim().is_empty() {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "Invalid allocation request",
            "Invalid hotkey, please check the hotkey",
        ));
    }
    let docker = b.map(|Json(d)| d).unwrap_or_default();
    // register_api: no GPU asked, timeline 30; the ssh_key parameter wins over the body's.
    let req = DeviceRequirement { gpu_type: String::new(), gpu_size: 0, timeline: 30, ..DeviceRequirement::default() };
    let ssh_key = p.ssh_key.unwrap_or(docker.ssh_key);
    let order = Order {
        hotkey: Some(p.hotkey.trim().to_owned()),
        requirement: req.requirement()?,
        timeline_days: 30,
        ttl_seconds: None,
        ssh_key: Some(ssh_key.trim().to_owned()).filter(|k| !k.is_empty()),
        deadline_seconds: 10,
    };
    Ok(allocate(&state, &caller.0, order).await)
}

#[derive(Debug, Deserialize)]
struct KeyParams {
    hotkey: String,
    uuid_key: String,
    #[serde(default)]
    notify_flag: bool,
    ssh_key: Option<String>,
    key_type: Option<String>,
}

/// The allocation of `hotkey` if `uuid_key` is its uuid and the caller may act on it.
fn owned(
    state: &AppState,
    caller: &Principal,
    hotkey: &str,
    uuid_key: &str,
) -> Result<Option<compute::db::ApiAllocation>, Envelope> {
    let not_found = || {
        fail(
            StatusCode::NOT_FOUND,
            "No allocation details found for the provided hotkey.",
            "No allocation details found for the provided hotkey.",
        )
    };
    let row =
        state.db().allocation(hotkey).map_err(|e| fail(StatusCode::FORBIDDEN, "An error occurred.", e.to_string()))?;
    let Some(row) = row else { return Err(not_found()) };
    let api = state.db().api_allocation_of(hotkey).ok().flatten();
    let uuid = row.details.as_ref().and_then(|d| d.uuid.clone()).or_else(|| api.as_ref().map(|a| a.id.clone()));
    let mine = match &api {
        Some(a) => caller.may_see(&a.owner),
        None => caller.is_admin(),
    };
    if !mine {
        return Err(not_found());
    }
    if uuid.as_deref() != Some(uuid_key) {
        return Err(fail(StatusCode::BAD_REQUEST, "Operation not successfully, please try again.", "Invalid UUID key"));
    }
    Ok(api)
}

async fn deallocate(
    State(state): State<AppState>,
    caller: Sn27Caller,
    p: Result<Query<KeyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Envelope, Envelope> {
    caller.require(Level::Allocate)?;
    let p = q(p)?;
    let api = owned(&state, &caller.0, &p.hotkey, &p.uuid_key).map_err(|e| {
        if e.0 == StatusCode::BAD_REQUEST {
            fail(StatusCode::BAD_REQUEST, "Deallocation not successfully, please try again.", "Invalid UUID key")
        } else {
            e
        }
    })?;
    let outcome = jobs::release(&state, &p.hotkey, api.as_ref(), Cause::Requested, p.notify_flag)
        .await
        .map_err(|e| fail(StatusCode::FORBIDDEN, "An error occurred during deallocation.", e.detail))?;
    Ok(match outcome {
        Released::Released | Released::NotAllocated | Released::Gone(_) => {
            ok("Resource deallocated successfully.", None)
        }
        Released::Pending(why) => Envelope(
            StatusCode::OK,
            json!({"success": true, "message": "Resource deallocated successfully.",
                   "data": {"confirmed": false, "detail": why}}),
        ),
        Released::Refused(why) | Released::Failed(why) => {
            fail(StatusCode::BAD_REQUEST, "Deallocation not successfully, please try again.", why)
        }
    })
}

#[derive(Debug, Deserialize)]
struct StatusParams {
    #[serde(default)]
    query_version: bool,
}

async fn check_miner_status(
    State(state): State<AppState>,
    caller: Sn27Caller,
    p: Result<Query<StatusParams>, axum::extract::rejection::QueryRejection>,
    b: Result<Json<Vec<String>>, axum::extract::rejection::JsonRejection>,
) -> Result<Envelope, Envelope> {
    caller.require(Level::Read)?;
    let p = q(p)?;
    let Json(hotkeys) = b.map_err(|e| invalid(e.body_text()))?;
    if hotkeys.len() > 256 {
        return Err(invalid("at most 256 hotkeys per request"));
    }
    let mg =
        state.renter().metagraph_within(state.config().metagraph_max_age).await.map_err(|e| {
            fail(StatusCode::FORBIDDEN, "An error occurred while retrieving hotkey status.", e.to_string())
        })?;
    let mut out = Vec::new();
    for hk in &hotkeys {
        if p.query_version {
            match mg.by_hotkey(hk) {
                Some(n) => out.push(json!({"hotkey": hk, "version": n.axon.version})),
                None => out.push(json!({"hotkey": hk, "status": "Not Found"})),
            }
            continue;
        }
        let v = crate::v1::status_of(&state, &mg, hk).await;
        // register_api's words: a miner that says yes to a check has no container running.
        let status = match v["status"].as_str() {
            Some("available") => "Docker OFFLINE",
            Some("allocated") => "Docker ONLINE",
            Some("no_response") => "Miner NO_RESPONSE",
            _ => "Not Found",
        };
        out.push(json!({"hotkey": hk, "status": status}));
    }
    Ok(ok("List hotkey status successfully.", Some(Value::Array(out))))
}

async fn docker_action(
    state: AppState,
    caller: Sn27Caller,
    p: KeyParams,
    action: &str,
    done: &str,
    failed: &str,
) -> Result<Envelope, Envelope> {
    caller.require(Level::Allocate)?;
    owned(&state, &caller.0, &p.hotkey, &p.uuid_key).map_err(|e| {
        if e.0 == StatusCode::BAD_REQUEST {
            fail(StatusCode::BAD_REQUEST, failed, "Invalid UUID key")
        } else {
            e
        }
    })?;
    let params = json!({"ssh_key": p.ssh_key, "key_type": p.key_type});
    match crate::lifecycle::run(&state, &p.hotkey, action, &params).await {
        Ok(_) => Ok(ok(done, None)),
        Err(problem) => Err(fail(StatusCode::BAD_REQUEST, failed, problem.detail)),
    }
}

async fn restart_docker(
    State(state): State<AppState>,
    caller: Sn27Caller,
    p: Result<Query<KeyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Envelope, Envelope> {
    let p = q(p)?;
    docker_action(
        state,
        caller,
        p,
        "restart",
        "Resource restarted successfully.",
        "Restart not successfully, please try again.",
    )
    .await
}

async fn pause_docker(
    State(state): State<AppState>,
    caller: Sn27Caller,
    p: Result<Query<KeyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Envelope, Envelope> {
    let p = q(p)?;
    docker_action(
        state,
        caller,
        p,
        "pause",
        "Resource paused successfully.",
        "Pause not successfully, please try again.",
    )
    .await
}

async fn unpause_docker(
    State(state): State<AppState>,
    caller: Sn27Caller,
    p: Result<Query<KeyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Envelope, Envelope> {
    let p = q(p)?;
    docker_action(
        state,
        caller,
        p,
        "unpause",
        "Resource unpaused successfully.",
        "Unpause not successfully, please try again.",
    )
    .await
}

async fn exchange_docker_key(
    State(state): State<AppState>,
    caller: Sn27Caller,
    p: Result<Query<KeyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Envelope, Envelope> {
    let p = q(p)?;
    if p.ssh_key.as_deref().is_none_or(|k| k.trim().is_empty()) {
        return Err(invalid("ssh_key is required"));
    }
    docker_action(
        state,
        caller,
        p,
        "exchange_key",
        "Resource ssh_key is exchanged successfully.",
        "Exchange ssh_key not successfully, please try again.",
    )
    .await
}

async fn list_allocations(State(state): State<AppState>, caller: Sn27Caller) -> Result<Envelope, Envelope> {
    caller.require(Level::Read)?;
    let c = &caller.0;
    let rows = state.db().allocations().map_err(|e| {
        fail(StatusCode::FORBIDDEN, "An error occurred while retrieving allocation details.", e.to_string())
    })?;
    let mut list = Vec::new();
    for r in rows {
        let api = state.db().api_allocation_of(&r.hotkey).ok().flatten();
        let visible = match &api {
            Some(a) => c.may_see(&a.owner),
            None => c.is_admin(),
        };
        if !visible {
            continue;
        }
        let uuid = api.as_ref().map(|a| a.id.clone()).unwrap_or_default();
        if let Some(m) = allocation_model(&state, &r.hotkey, &uuid, c.scope.secrets) {
            list.push(m);
        }
    }
    if list.is_empty() {
        return Err(Envelope(
            StatusCode::NOT_FOUND,
            json!({"success": false, "message": "No resources found.", "data": "No allocated resources found. Allocate a resource with validator."}),
        ));
    }
    Ok(ok("List allocations successfully.", Some(Value::Array(list))))
}

/// register_api's `ResourceQuery`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResourceQueryBody {
    gpu_name: Option<String>,
    cpu_count_min: Option<i64>,
    cpu_count_max: Option<i64>,
    gpu_capacity_min: Option<f64>,
    gpu_capacity_max: Option<f64>,
    hard_disk_total_min: Option<f64>,
    hard_disk_total_max: Option<f64>,
    ram_total_min: Option<f64>,
    ram_total_max: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct PageParams {
    #[serde(default)]
    stats: bool,
    page_size: Option<usize>,
    page_number: Option<usize>,
    #[serde(default)]
    rent_status: bool,
}

/// register_api's `_paginate_list` (page size 50 when a page is asked without a size).
fn paginate(items: Vec<Value>, page_number: Option<usize>, page_size: Option<usize>) -> Value {
    match page_number {
        Some(n) if n > 0 => {
            let size = page_size.filter(|s| *s > 0).unwrap_or(50);
            let start = (n - 1).saturating_mul(size).min(items.len());
            let end = start.saturating_add(size).min(items.len());
            json!({"page_items": &items[start..end], "page_number": n, "page_size": size,
                   "next_page_number": if end < items.len() { Some(n + 1) } else { None }})
        }
        _ => json!({"page_number": 1, "page_size": items.len(), "next_page_number": null, "page_items": items}),
    }
}

async fn list_resources(
    State(state): State<AppState>,
    caller: Sn27Caller,
    p: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
    b: Option<Json<ResourceQueryBody>>,
) -> Result<Envelope, Envelope> {
    caller.require(Level::Read)?;
    let p = q(p)?;
    let query = b.map(|Json(b)| b).unwrap_or_default();
    let all = state.resources().map_err(|e| fail(StatusCode::NOT_FOUND, "There is no resource available", e.detail))?;
    if all.is_empty() {
        return Err(fail(StatusCode::NOT_FOUND, "There is no resource available", "No resources found."));
    }
    let within = |v: f64, min: Option<f64>, max: Option<f64>| min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m);
    let rows: Vec<Value> = all
        .iter()
        .filter(|r| r.gpu_count > 0)
        .filter(|r| query.gpu_name.as_ref().is_none_or(|g| r.gpu_name.to_lowercase().contains(&g.to_lowercase())))
        .filter(|r| within(r.gpu_size_gb, query.gpu_capacity_min, query.gpu_capacity_max))
        .filter(|r| {
            within(r.vcpus as f64, query.cpu_count_min.map(|v| v as f64), query.cpu_count_max.map(|v| v as f64))
        })
        .filter(|r| within(r.ram_gb, query.ram_total_min, query.ram_total_max))
        .filter(|r| within(r.disk_gb, query.hard_disk_total_min, query.hard_disk_total_max))
        .map(|r| {
            let two = |v: f64| (v * 100.0).round() / 100.0;
            json!({"hotkey": r.hotkey, "cpu_count": r.vcpus, "gpu_name": r.gpu_name.to_lowercase(),
                   "gpu_capacity": two(r.gpu_size_gb), "gpu_count": r.gpu_count, "ram": two(r.ram_gb),
                   "hard_disk": two(r.disk_gb), "allocate_status": if r.allocated { "reserved" } else { "available" }})
        })
        .collect();
    if p.stats {
        let reserved = rows.iter().filter(|r| r["allocate_status"] == "reserved").count();
        let stats = json!({"available": rows.len() - reserved, "reserved": reserved, "total": rows.len()});
        return Ok(ok("List resources successfully", Some(json!({"stats": stats}))));
    }
    Ok(ok("List resources successfully", Some(paginate(rows, p.page_number, p.page_size))))
}

async fn count_all_gpus(State(state): State<AppState>, caller: Sn27Caller) -> Result<Envelope, Envelope> {
    caller.require(Level::Read)?;
    let all = state
        .resources()
        .map_err(|e| fail(StatusCode::FORBIDDEN, "An error occurred while counting GPUs.", e.detail))?;
    Ok(Envelope(StatusCode::OK, json!({"count": all.iter().map(|r| r.gpu_count).sum::<u64>()})))
}

#[derive(Debug, Deserialize)]
struct ModelParams {
    model: String,
    cpu_count: Option<u64>,
    ram_size: Option<f64>,
}

async fn count_all_by_model(
    State(state): State<AppState>,
    caller: Sn27Caller,
    p: Result<Query<ModelParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Envelope, Envelope> {
    caller.require(Level::Read)?;
    let p = q(p)?;
    let all = state
        .resources()
        .map_err(|e| fail(StatusCode::FORBIDDEN, "An error occurred while counting GPUs.", e.detail))?;
    let model = p.model.to_lowercase();
    let count = all
        .iter()
        .filter(|r| r.gpu_name.to_lowercase() == model)
        .filter(|r| match (p.cpu_count, p.ram_size) {
            (Some(c), _) => r.vcpus == c,
            // register_api compares the RAM rounded up to whole GB.
            (None, Some(gb)) => r.ram_gb.ceil() as i64 == gb as i64,
            (None, None) => true,
        })
        .count();
    Ok(Envelope(StatusCode::OK, json!({"count": count})))
}

async fn list_available(
    State(state): State<AppState>,
    caller: Sn27Caller,
    p: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Envelope, Envelope> {
    caller.require(Level::Read)?;
    let p = q(p)?;
    let miners = state
        .db()
        .miner_details()
        .map_err(|e| fail(StatusCode::NOT_FOUND, "Error occurred while fetching available miner", e.to_string()))?;
    let allocated: std::collections::HashSet<String> =
        state.db().allocated_hotkeys().map(|a| a.into_iter().collect()).unwrap_or_default();
    let items: Vec<Value> = miners
        .into_iter()
        .filter(|m| m.specs.is_some() && allocated.contains(&m.hotkey) == p.rent_status)
        .enumerate()
        .map(|(i, m)| {
            let details =
                m.details_raw.as_deref().and_then(|t| serde_json::from_str::<Value>(t).ok()).unwrap_or(Value::Null);
            let mut entry = Map::new();
            entry.insert((i + 1).to_string(), json!({"hotkey": m.hotkey, "details": details}));
            Value::Object(entry)
        })
        .collect();
    if items.is_empty() {
        return Ok(ok("No available miner", Some(json!({}))));
    }
    let message = if p.rent_status { "List rented miners" } else { "List available miners" };
    Ok(ok(message, Some(paginate(items, p.page_number, p.page_size))))
}

async fn list_allocated_hotkeys(State(state): State<AppState>, caller: Sn27Caller) -> Result<Envelope, Envelope> {
    caller.require(Level::Read)?;
    let list: Vec<String> = state
        .db()
        .allocations()
        .map_err(|e| fail(StatusCode::NOT_FOUND, "Error occurred while fetching allocated hotkey", e.to_string()))?
        .into_iter()
        .map(|r| r.hotkey)
        .collect();
    Ok(ok("List allocated hotkeys", Some(json!(list))))
}

#[derive(Debug, Deserialize)]
struct NotifyParams {
    hotkey: Option<String>,
    uuid_key: Option<String>,
    event: Option<String>,
}

async fn test_notify(
    State(state): State<AppState>,
    caller: Sn27Caller,
    p: Result<Query<NotifyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Envelope, Envelope> {
    caller.require(Level::Admin)?;
    let p = q(p)?;
    let event = p.event.unwrap_or_else(|| "DEALLOCATION".into());
    if !matches!(event.as_str(), "DEALLOCATION" | "ONLINE" | "OFFLINE" | "EXPIRING") {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "Notify allocation event testing is failed",
            format!("unknown event {event}"),
        ));
    }
    let hotkey = p.hotkey.unwrap_or_else(|| "test_hotkey".into());
    let uuid = p.uuid_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let deliveries = crate::webhook::event(&state, &event, &hotkey, &uuid, state.now_ms(), Some("test"));
    if deliveries.is_empty() {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "Notify allocation event testing is failed",
            "no webhook URL is configured",
        ));
    }
    state
        .db()
        .enqueue_deliveries(&deliveries)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, "Notify allocation event testing is failed", e.to_string()))?;
    state.wake_outbox();
    // Queued durably: delivered (or dead-lettered) by the sender, visible in /v1/webhooks/deliveries.
    Ok(ok("Notify allocation event testing is success", Some(json!({"event_id": deliveries[0].event_id}))))
}
