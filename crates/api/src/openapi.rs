//! The OpenAPI 3.1 document (`GET /openapi.json`) and the docs page (`GET /docs`), both from
//! this file: [`ROUTES`] is the table of every route with its scope and summary, the document
//! is generated from it, and a test sends a request to every row through [`crate::app`] so the
//! table cannot list a route the router lacks. The docs page is one HTML file compiled into the
//! binary (no CDN: it works offline) that renders the document in the browser.

use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::state::AppState;

/// One route: method, path (axum syntax), the scope it needs (`none`, `read`, `allocate`,
/// `admin`), tag, summary, request body schema and success response schema (names in
/// `components.schemas`, or empty).
pub type Route = (&'static str, &'static str, &'static str, &'static str, &'static str, &'static str, &'static str);

pub const ROUTES: &[Route] = &[
    ("get", "/v1/me", "read", "v1", "Who the token is and what it may do", "", "Me"),
    ("get", "/v1/resources", "read", "v1", "Miners' resources: filters (gpu, gpu_size_min/max, gpu_count_min/max, cpu_min/max, ram_min/max, disk_min/max, available, max_age_seconds), sort (hotkey, gpu, gpu_size, gpu_count, cpu, ram, disk, age), page/per_page", "", "ResourcePage"),
    ("get", "/v1/resources/counts", "read", "v1", "GPUs and machines by GPU model (same filters)", "", "Counts"),
    ("get", "/v1/allocations", "read", "v1", "The caller's allocations (admin: all); state, hotkey, page/per_page", "", "AllocationPage"),
    ("post", "/v1/allocations", "allocate", "v1", "Allocate by requirement or hotkey: 202 allocating (Location), ?wait=SECONDS for 201 active or 200 failed", "NewAllocation", "Allocation"),
    ("get", "/v1/allocations/{id}", "read", "v1", "One allocation (?wait=SECONDS while allocating); the password once, or with the secrets scope", "", "Allocation"),
    ("delete", "/v1/allocations/{id}", "allocate", "v1", "Release: 200 released, 202 releasing (the miner did not confirm; retried)", "", "Allocation"),
    ("post", "/v1/allocations/{id}/{action}", "allocate", "v1", "restart, pause, unpause, exchange-key ({ssh_key, key_type}): done only when the miner confirmed and the machine shows it", "Action", "ActionDone"),
    ("get", "/v1/penalties", "read", "v1", "Penalized miners (never allocated)", "", "Penalties"),
    ("put", "/v1/penalties/{hotkey}", "admin", "v1", "Penalize a miner", "", "Penalty"),
    ("delete", "/v1/penalties/{hotkey}", "admin", "v1", "Lift a penalty", "", "Penalty"),
    ("post", "/v1/miners/status", "read", "v1", "Miners' status: in the metagraph, serving, available or allocated, health", "Hotkeys", "MinerStatusList"),
    ("get", "/v1/miners/{hotkey}/status", "read", "v1", "One miner's status", "", "MinerStatus"),
    ("post", "/v1/sync", "admin", "v1", "Ask every serving miner for its specs", "Sync", "SyncReport"),
    ("get", "/v1/webhooks/deliveries", "admin", "v1", "The webhook outbox (?state=pending|delivered|dead, limit)", "", "Deliveries"),
    ("post", "/v1/webhooks/deliveries/{id}/retry", "admin", "v1", "Requeue a dead letter", "", "Delivery"),
    ("get", "/v1/events", "read", "v1", "Server-sent events: allocation, health and delivery changes, and the progress of allocations being made, as they happen", "", ""),
    ("get", "/", "none", "sn27", "register_api's welcome (JSON); a browser (Accept: text/html) gets the dashboard", "", ""),
    ("post", "/service/allocate_spec", "allocate", "sn27", "register_api: allocate by DeviceRequirement + DockerRequirement", "AllocateSpec", "Envelope"),
    ("post", "/service/allocate_hotkey", "allocate", "sn27", "register_api: allocate ?hotkey=&ssh_key= (body: optional DockerRequirement)", "DockerRequirement", "Envelope"),
    ("post", "/service/deallocate", "allocate", "sn27", "register_api: ?hotkey=&uuid_key=&notify_flag=", "", "Envelope"),
    ("post", "/service/check_miner_status", "read", "sn27", "register_api: body a list of hotkeys; ?query_version=", "Hotkeys", "Envelope"),
    ("post", "/service/restart_docker", "allocate", "sn27", "register_api: ?hotkey=&uuid_key=", "", "Envelope"),
    ("post", "/service/pause_docker", "allocate", "sn27", "register_api: ?hotkey=&uuid_key=", "", "Envelope"),
    ("post", "/service/unpause_docker", "allocate", "sn27", "register_api: ?hotkey=&uuid_key=", "", "Envelope"),
    ("post", "/service/exchange_docker_key", "allocate", "sn27", "register_api: ?hotkey=&uuid_key=&ssh_key=&key_type=", "", "Envelope"),
    ("post", "/list/allocations_sql", "read", "sn27", "register_api: allocations (the caller's; admin: all)", "", "Envelope"),
    ("post", "/list/resources_sql", "read", "sn27", "register_api: resources, body ResourceQuery; ?stats=&page_size=&page_number=", "ResourceQuery", "Envelope"),
    ("post", "/list/resources_wandb", "read", "sn27", "register_api's wandb variant, answered from this database", "ResourceQuery", "Envelope"),
    ("post", "/list/count_all_gpus", "read", "sn27", "register_api: {count}", "", "Count"),
    ("post", "/list/count_all_by_model", "read", "sn27", "register_api: ?model=&cpu_count=&ram_size= → {count}", "", "Count"),
    ("post", "/list/available", "read", "sn27", "register_api: miners not allocated (?rent_status=true: allocated)", "", "Envelope"),
    ("post", "/list/allocated_hotkeys", "read", "sn27", "register_api: allocated hotkeys", "", "Envelope"),
    ("post", "/test/notify", "admin", "sn27", "register_api: queue a test webhook ?hotkey=&uuid_key=&event=", "", "Envelope"),
    ("get", "/openapi.json", "none", "ops", "This document", "", ""),
    ("get", "/docs", "none", "ops", "The API's docs page", "", ""),
    ("get", "/ui/{file}", "none", "ops", "The dashboard's files (gzip when accepted, ETag, revalidated with 304)", "", ""),
    ("get", "/metrics", "read", "ops", "Prometheus metrics", "", ""),
    ("get", "/healthz", "none", "ops", "Liveness", "", ""),
];

fn schemas() -> Value {
    let s = |props: Value| json!({"type": "object", "properties": props});
    json!({
        "Problem": s(json!({"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}})),
        "Me": s(json!({"name": {"type": "string"}, "owner": {"type": "string"}, "scope": {"type": "string"}, "level": {"enum": ["read", "allocate", "admin"]}})),
        "Resource": s(json!({"hotkey": {"type": "string"}, "gpu_name": {"type": "string"}, "gpu_size_gb": {"type": "number"}, "gpu_count": {"type": "integer"}, "vcpus": {"type": "integer"}, "ram_gb": {"type": "number"}, "disk_gb": {"type": "number"}, "allocated": {"type": "boolean"}, "simulated": {"type": "boolean"}, "specs_updated_ms": {"type": ["integer", "null"]}, "stale": {"type": "boolean"}, "last_error": {"type": ["string", "null"]}})),
        "ResourcePage": s(json!({"items": {"type": "array", "items": {"$ref": "#/components/schemas/Resource"}}, "page": {"type": "integer"}, "per_page": {"type": "integer"}, "total": {"type": "integer"}, "next_page": {"type": ["integer", "null"]}})),
        "Counts": s(json!({"models": {"type": "array", "items": s(json!({"model": {"type": "string"}, "gpus": {"type": "integer"}, "machines": {"type": "integer"}, "available_machines": {"type": "integer"}, "available_gpus": {"type": "integer"}}))}, "total_gpus": {"type": "integer"}, "total_machines": {"type": "integer"}})),
        "Requirement": s(json!({"gpu_type": {"type": "string"}, "gpu_size_gb": {"type": "number"}, "gpu_count": {"type": "integer"}, "cpu_count": {"type": "integer"}, "ram_gb": {"type": "number"}, "disk_gb": {"type": "number"}})),
        "NewAllocation": s(json!({"hotkey": {"type": "string"}, "requirement": {"$ref": "#/components/schemas/Requirement"}, "ttl_seconds": {"type": "integer"}, "timeline_days": {"type": "integer"}, "ssh_key": {"type": "string"}, "deadline_seconds": {"type": "integer"}})),
        "Allocation": s(json!({"id": {"type": "string"}, "state": {"enum": ["allocating", "active", "failed", "releasing", "released"]}, "hotkey": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]}, "request": {"type": "object"}, "machine": s(json!({"ip": {"type": "string"}, "port": {"type": "integer"}, "username": {"type": "string"}, "password": {"type": ["string", "null"]}, "ssh_command": {"type": "string"}, "resource": {"type": "string"}, "expires_at_ms": {"type": ["integer", "null"]}, "ssh_key_injected": {"type": "boolean"}, "host_key_fingerprint": {"type": "string", "description": "The SSH host key the miner signed for this machine and the renter pinned (OpenSSH SHA256:… form); absent while the miner signs none"}})), "health": s(json!({"status": {"enum": ["ONLINE", "OFFLINE"]}, "failures": {"type": "integer"}}))})),
        "AllocationPage": s(json!({"items": {"type": "array", "items": {"$ref": "#/components/schemas/Allocation"}}, "page": {"type": "integer"}, "total": {"type": "integer"}})),
        "Action": s(json!({"ssh_key": {"type": "string"}, "key_type": {"enum": ["user", "terminal"]}})),
        "ActionDone": s(json!({"id": {"type": "string"}, "hotkey": {"type": "string"}, "action": {"type": "string"}, "done": {"type": "boolean"}})),
        "Penalties": s(json!({"penalized": {"type": "array", "items": {"type": "string"}}, "count": {"type": "integer"}})),
        "Penalty": s(json!({"hotkey": {"type": "string"}, "penalized": {"type": "boolean"}, "changed": {"type": "boolean"}})),
        "Hotkeys": {"oneOf": [s(json!({"hotkeys": {"type": "array", "items": {"type": "string"}}})), {"type": "array", "items": {"type": "string"}}]},
        "MinerStatus": s(json!({"hotkey": {"type": "string"}, "status": {"enum": ["not_found", "not_serving", "available", "allocated", "no_response"]}, "axon_version": {"type": ["integer", "null"]}})),
        "MinerStatusList": s(json!({"items": {"type": "array", "items": {"$ref": "#/components/schemas/MinerStatus"}}})),
        "Sync": s(json!({"timeout_seconds": {"type": "integer"}, "concurrency": {"type": "integer"}})),
        "SyncReport": s(json!({"asked": {"type": "integer"}, "answered": {"type": "integer"}, "failed": {"type": "array"}})),
        "Delivery": s(json!({"id": {"type": "integer"}, "event_id": {"type": "string"}, "event": {"type": "string"}, "url": {"type": "string"}, "state": {"enum": ["pending", "delivered", "dead"]}, "attempts": {"type": "integer"}, "last_error": {"type": ["string", "null"]}})),
        "Deliveries": s(json!({"items": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}}})),
        "Envelope": s(json!({"success": {"type": "boolean"}, "message": {"type": "string"}, "data": {}, "err_detail": {}})),
        "Count": s(json!({"count": {"type": "integer"}})),
        "DeviceRequirement": s(json!({"cpu_count": {"type": "integer", "default": 1}, "gpu_type": {"type": "string", "default": "gpu"}, "gpu_size": {"type": "integer", "default": 3}, "ram": {"type": "integer", "default": 1}, "hard_disk": {"type": "integer", "default": 1}, "timeline": {"type": "integer", "default": 90}})),
        "DockerRequirement": s(json!({"base_image": {"type": "string", "default": "ubuntu"}, "ssh_key": {"type": "string", "default": ""}, "volume_path": {"type": "string", "default": "/tmp"}, "dockerfile": {"type": "string", "default": ""}})),
        "AllocateSpec": s(json!({"requirements": {"$ref": "#/components/schemas/DeviceRequirement"}, "docker_requirement": {"$ref": "#/components/schemas/DockerRequirement"}})),
        "ResourceQuery": s(json!({"gpu_name": {"type": "string"}, "cpu_count_min": {"type": "integer"}, "cpu_count_max": {"type": "integer"}, "gpu_capacity_min": {"type": "number"}, "gpu_capacity_max": {"type": "number"}, "hard_disk_total_min": {"type": "number"}, "hard_disk_total_max": {"type": "number"}, "ram_total_min": {"type": "number"}, "ram_total_max": {"type": "number"}})),
    })
}

/// The OpenAPI document of [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for (method, path, scope, tag, summary, request, response) in ROUTES {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let ok = if response.is_empty() {
            json!({"description": "OK"})
        } else {
            json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{response}")}}}})
        };
        let problem = json!({"description": "A problem (RFC 9457) on /v1, the envelope on SN27 routes",
                             "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}});
        let mut op = json!({
            "summary": summary,
            "tags": [tag],
            "operationId": format!("{method}{}", path.replace(['/', '{', '}', '-'], "_")),
            "parameters": params,
            "responses": {"200": ok, "400": problem.clone(), "401": problem.clone(), "403": problem},
            "x-scope": scope,
        });
        if *scope == "none" {
            op["security"] = json!([]);
        }
        if !request.is_empty() {
            op["requestBody"] = json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{request}")}}}});
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "nicompute Resource Allocation API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Allocate GPU machines on SN27: /v1 (tokens, scopes, RFC 9457 problems) and register_api's routes."},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}, "mtls": {"type": "mutualTLS"}},
        },
        "security": [{"bearer": []}, {"mtls": []}],
    })
}

const DOCS: &str = include_str!("docs.html");

async fn docs() -> Response {
    let mut r = Html(DOCS).into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'"),
    );
    r
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(|| async { Json(openapi()) })).route("/docs", get(docs))
}
