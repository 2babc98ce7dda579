//! `/v1`: our API. Resource-shaped JSON, filters and paging on lists, RFC 9457 problems.
//!
//! | route | scope |
//! |---|---|
//! | `GET /v1/resources`, `GET /v1/resources/counts` | read |
//! | `GET /v1/allocations`, `GET /v1/allocations/{id}` | read (own; admin: all) |
//! | `POST /v1/allocations` (`?wait=SECONDS`), `DELETE /v1/allocations/{id}` | allocate (own) |
//! | `POST /v1/allocations/{id}/{restart,pause,unpause,exchange-key}` | allocate (own) |
//! | `GET /v1/penalties` / `PUT`, `DELETE /v1/penalties/{hotkey}` | read / admin |
//! | `POST /v1/miners/status`, `GET /v1/miners/{hotkey}/status` | read |
//! | `POST /v1/sync` | admin |
//! | `GET /v1/webhooks/deliveries`, `POST /v1/webhooks/deliveries/{id}/retry` | admin |
//! | `GET /v1/events` (server-sent events), `GET /v1/me` | read |

mod allocations;
mod miners;

pub use miners::status_of;

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use compute::db::DeliveryState;
use compute::renter::{gpu_summary, Resource, ResourceQuery, SortKey};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{Caller, Level};
use crate::problem::Problem;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/me", get(me))
        .route("/v1/resources", get(list_resources))
        .route("/v1/resources/counts", get(counts))
        .route("/v1/allocations", get(allocations::list).post(allocations::create))
        .route("/v1/allocations/{id}", get(allocations::get_one).delete(allocations::delete))
        .route("/v1/allocations/{id}/{action}", post(allocations::action))
        .route("/v1/penalties", get(penalties))
        .route("/v1/penalties/{hotkey}", put(penalize).delete(depenalize))
        .route("/v1/miners/status", post(miners::status_many))
        .route("/v1/miners/{hotkey}/status", get(miners::status_one))
        .route("/v1/sync", post(sync))
        .route("/v1/webhooks/deliveries", get(deliveries))
        .route("/v1/webhooks/deliveries/{id}/retry", post(retry_delivery))
        .route("/v1/events", get(events))
}

/// `page` (from 1) and `per_page` (1..=1000, default 100).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Paging {
    pub page: Option<usize>,
    pub per_page: Option<usize>,
}

/// One page of a list, serialized straight from the items (no intermediate JSON tree).
#[derive(Debug, serde::Serialize)]
pub struct Page<'a, T: serde::Serialize> {
    pub items: &'a [T],
    pub page: usize,
    pub per_page: usize,
    pub total: usize,
    pub next_page: Option<usize>,
}

impl Paging {
    /// One page of `items`.
    pub fn page<'a, T: serde::Serialize>(&self, items: &'a [T]) -> Result<Page<'a, T>, Problem> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(100);
        if page == 0 || per_page == 0 || per_page > 1000 {
            return Err(Problem::bad_request("page starts at 1 and per_page is 1 to 1000"));
        }
        let start = (page - 1).saturating_mul(per_page).min(items.len());
        let end = start.saturating_add(per_page).min(items.len());
        Ok(Page {
            items: &items[start..end],
            page,
            per_page,
            total: items.len(),
            next_page: (end < items.len()).then_some(page + 1),
        })
    }
}

async fn me(caller: Caller) -> Json<Value> {
    let p = caller.0;
    Json(json!({"name": p.name, "owner": p.owner, "scope": p.scope.to_string(), "level": p.scope.level}))
}

#[derive(Debug, Deserialize)]
struct ResourceParams {
    gpu: Option<String>,
    gpu_size_min: Option<f64>,
    gpu_size_max: Option<f64>,
    cpu_min: Option<u64>,
    cpu_max: Option<u64>,
    ram_min: Option<f64>,
    ram_max: Option<f64>,
    disk_min: Option<f64>,
    disk_max: Option<f64>,
    available: Option<bool>,
    gpu_count_min: Option<u64>,
    gpu_count_max: Option<u64>,
    /// Only miners whose specs are at most this old (list_r's "specs age").
    max_age_seconds: Option<u64>,
    sort: Option<SortKey>,
    page: Option<usize>,
    per_page: Option<usize>,
}

impl ResourceParams {
    fn query(&self) -> ResourceQuery {
        ResourceQuery {
            gpu: self.gpu.clone(),
            gpu_size_min: self.gpu_size_min,
            gpu_size_max: self.gpu_size_max,
            cpu_min: self.cpu_min,
            cpu_max: self.cpu_max,
            ram_min: self.ram_min,
            ram_max: self.ram_max,
            disk_min: self.disk_min,
            disk_max: self.disk_max,
            available: self.available,
            sort: self.sort.unwrap_or_default(),
        }
    }

    /// The rows of `all` that match, sorted: [`ResourceQuery`]'s filters, then GPU count and
    /// specs age (a miner without a specs time is as old as can be).
    fn apply<'a>(&self, all: &'a [Resource], now_ms: u64) -> Vec<&'a Resource> {
        let mut rows = self.query().apply(all.iter());
        let oldest = self.max_age_seconds.map(|s| now_ms.saturating_sub(s.saturating_mul(1000)));
        rows.retain(|r| {
            self.gpu_count_min.is_none_or(|m| r.gpu_count >= m)
                && self.gpu_count_max.is_none_or(|m| r.gpu_count <= m)
                && oldest.is_none_or(|o| r.specs_updated_ms.is_some_and(|t| t >= o))
        });
        rows
    }
}

/// Query strings that do not parse are problems, not axum's plain-text rejections.
pub fn query<T: serde::de::DeserializeOwned>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, Problem> {
    q.map(|Query(t)| t).map_err(|e| Problem::bad_request(e.body_text()))
}

pub fn body<T>(b: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> Result<T, Problem> {
    b.map(|Json(t)| t).map_err(|e| Problem::bad_request(e.body_text()))
}

async fn list_resources(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<ResourceParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, Problem> {
    caller.require(Level::Read)?;
    let params = query(q)?;
    let all = state.resources()?;
    let rows = params.apply(&all, state.now_ms());
    Ok(Json(Paging { page: params.page, per_page: params.per_page }.page(&rows)?).into_response())
}

async fn counts(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<ResourceParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Problem> {
    caller.require(Level::Read)?;
    let params = query(q)?;
    let all = state.resources()?;
    let rows = params.apply(&all, state.now_ms());
    let summary = gpu_summary(rows.iter().copied());
    let available = gpu_summary(rows.iter().copied().filter(|r| !r.allocated));
    let models: Vec<Value> = summary
        .gpus
        .iter()
        .map(|(model, gpus)| {
            let machines: u64 = summary.instances.iter().filter(|((n, _), _)| n == model).map(|(_, k)| k).sum();
            let free: u64 = available.instances.iter().filter(|((n, _), _)| n == model).map(|(_, k)| k).sum();
            json!({"model": model, "gpus": gpus, "machines": machines, "available_machines": free,
                   "available_gpus": available.gpus.get(model).copied().unwrap_or(0)})
        })
        .collect();
    Ok(Json(json!({
        "models": models,
        "total_gpus": summary.gpus.values().sum::<u64>(),
        "total_machines": rows.len(),
    })))
}

async fn penalties(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, Problem> {
    caller.require(Level::Read)?;
    let list = state.db().penalized()?;
    Ok(Json(json!({"penalized": list, "count": list.len()})))
}

fn valid_hotkey(hotkey: &str) -> Result<(), Problem> {
    bittensor::AccountId::from_ss58(hotkey)
        .map(|_| ())
        .map_err(|e| Problem::bad_request(format!("'{hotkey}' is not an SS58 hotkey: {e}")))
}

async fn penalize(
    State(state): State<AppState>,
    caller: Caller,
    Path(hotkey): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    caller.require(Level::Admin)?;
    valid_hotkey(&hotkey)?;
    let added = state.db().penalize(&[hotkey.as_str()])?;
    let status = if added.is_empty() { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(json!({"hotkey": hotkey, "penalized": true, "changed": !added.is_empty()}))))
}

async fn depenalize(
    State(state): State<AppState>,
    caller: Caller,
    Path(hotkey): Path<String>,
) -> Result<Json<Value>, Problem> {
    caller.require(Level::Admin)?;
    valid_hotkey(&hotkey)?;
    let removed = state.db().depenalize(&[hotkey.as_str()])?;
    if removed.is_empty() {
        return Err(Problem::not_found(format!("{hotkey} is not penalized")));
    }
    Ok(Json(json!({"hotkey": hotkey, "penalized": false, "changed": true})))
}

#[derive(Debug, Deserialize, Default)]
struct SyncBody {
    timeout_seconds: Option<u64>,
    concurrency: Option<usize>,
}

async fn sync(
    State(state): State<AppState>,
    caller: Caller,
    b: Option<Json<SyncBody>>,
) -> Result<Json<Value>, Problem> {
    caller.require(Level::Admin)?;
    let b = b.map(|Json(b)| b).unwrap_or_default();
    let report = state
        .renter()
        .sync(
            Duration::from_secs(b.timeout_seconds.unwrap_or(12).clamp(1, 120)),
            b.concurrency.unwrap_or(256).clamp(1, 256),
            &|_, _| {},
        )
        .await
        .map_err(crate::jobs::renter_problem)?;
    Ok(Json(json!(report)))
}

#[derive(Debug, Deserialize)]
struct DeliveryParams {
    state: Option<String>,
    limit: Option<usize>,
}

async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<DeliveryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Problem> {
    caller.require(Level::Admin)?;
    let p = query(q)?;
    let filter = match p.state.as_deref() {
        None => None,
        Some("pending") => Some(DeliveryState::Pending),
        Some("delivered") => Some(DeliveryState::Delivered),
        Some("dead") => Some(DeliveryState::Dead),
        Some(other) => return Err(Problem::bad_request(format!("state '{other}': give pending, delivered or dead"))),
    };
    let rows = state.db().deliveries(filter, p.limit.unwrap_or(100).min(1000))?;
    let items: Vec<Value> = rows
        .iter()
        .map(|d| {
            json!({"id": d.id, "event_id": d.event_id, "event": d.event, "url": d.url, "state": d.state,
                   "attempts": d.attempts, "next_at_ms": d.next_ms, "last_error": d.last_error,
                   "created_at_ms": d.created_ms, "delivered_at_ms": d.delivered_ms,
                   "body": serde_json::from_str::<Value>(&d.body).unwrap_or(Value::Null)})
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

async fn retry_delivery(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<Value>, Problem> {
    caller.require(Level::Admin)?;
    if !state.db().retry_delivery(id)? {
        return Err(Problem::not_found(format!("no dead delivery {id}")));
    }
    state.wake_outbox();
    Ok(Json(json!({"id": id, "state": "pending"})))
}

/// Server-sent events: `event: allocation|health|delivery|progress`, data the event as JSON. A non-admin
/// sees only its own allocations' events.
async fn events(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    caller.require(Level::Read)?;
    let who = caller.0;
    let mut rx = state.subscribe();
    let mut stop = state.stopping();
    let stream = async_stream(move |tx| async move {
        loop {
            let e = tokio::select! {
                e = rx.recv() => e,
                _ = stop.changed() => return,
            };
            let e = match e {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            let visible = who.is_admin() || e.owner.as_deref() == Some(who.owner.as_str());
            if !visible {
                continue;
            }
            let data = serde_json::to_string(&e).unwrap_or_default();
            if tx.send(Ok(SseEvent::default().event(e.kind).data(data))).await.is_err() {
                return;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A stream fed by a task through a channel (no extra crate for generators).
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<SseEvent, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}
