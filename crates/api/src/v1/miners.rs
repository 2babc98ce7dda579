//! `/v1/miners/…/status`: whether miners are in the metagraph, serving, and what they answer to
//! SN27's availability check (`Allocate{timeline: 1, checking: true}`, as register_api's
//! `check_miner_status`), with our health record for the ones allocated here.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use bittensor::subtensor::metagraph::Metagraph;
use compute::allocator::Candidate;
use compute::protocol::Allocate;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body;
use crate::auth::{Caller, Level};
use crate::jobs::renter_problem;
use crate::problem::Problem;
use crate::state::AppState;

/// One miner's status: `not_found` (not in the metagraph), `not_serving`, `available` (says
/// yes to a check), `allocated` (says no: a container runs), `no_response`.
pub async fn status_of(state: &AppState, mg: &Metagraph, hotkey: &str) -> Value {
    let status = match Candidate::from_metagraph(hotkey, mg, None) {
        Err(compute::allocator::Verdict::NotInMetagraph) => "not_found",
        Err(_) => "not_serving",
        Ok(c) => {
            let synapse = Allocate { timeline: 1, checking: true, ..Allocate::default() };
            let r = state.renter().dendrite().call(&c.target, synapse, Duration::from_secs(10)).await;
            if !r.is_success() {
                "no_response"
            } else if r.synapse.output.get("status").and_then(Value::as_bool) == Some(true) {
                "available"
            } else {
                "allocated"
            }
        }
    };
    let version = mg.by_hotkey(hotkey).map(|n| n.axon.version);
    let mut v = json!({"hotkey": hotkey, "status": status, "axon_version": version});
    if let Ok(Some(h)) = state.db().health(hotkey) {
        v["health"] = json!({"status": if h.online { "ONLINE" } else { "OFFLINE" }, "failures": h.failures, "last_check_ms": h.last_check_ms});
    }
    v
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    pub hotkeys: Vec<String>,
}

pub async fn status_many(
    State(state): State<AppState>,
    caller: Caller,
    b: Result<Json<StatusBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, Problem> {
    caller.require(Level::Read)?;
    let b = body(b)?;
    if b.hotkeys.len() > 256 {
        return Err(Problem::bad_request("at most 256 hotkeys per request"));
    }
    let mg = state.renter().metagraph_within(state.config().metagraph_max_age).await.map_err(renter_problem)?;
    let futures = b.hotkeys.iter().map(|h| status_of(&state, &mg, h));
    let items = futures_util::future::join_all(futures).await;
    Ok(Json(json!({"items": items})))
}

pub async fn status_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(hotkey): Path<String>,
) -> Result<Json<Value>, Problem> {
    caller.require(Level::Read)?;
    let mg = state.renter().metagraph_within(state.config().metagraph_max_age).await.map_err(renter_problem)?;
    Ok(Json(status_of(&state, &mg, &hotkey).await))
}
