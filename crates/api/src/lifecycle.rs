//! The lifecycle actions of `/v1/allocations/{id}/{action}` and SN27's `*_docker` routes, over
//! [`Renter::container_action`](compute::renter::Renter::container_action): done means the miner
//! confirmed and the machine shows it.

use std::time::Duration;

use axum::http::StatusCode;
use compute::renter::{ActionError, ContainerAction, RenterError};
use serde_json::Value;

use crate::jobs::renter_problem;
use crate::problem::Problem;
use crate::state::AppState;

/// How long the machine has to show the action's effect.
const OBSERVE: Duration = Duration::from_secs(60);

/// Runs `action` (`restart`, `pause`, `unpause`, `exchange-key` with `ssh_key` and `key_type` in
/// `params`) on the allocation of `hotkey`. `Ok(true)`: done and observed.
pub async fn run(state: &AppState, hotkey: &str, action: &str, params: &Value) -> Result<bool, Problem> {
    let text = |k: &str| params.get(k).and_then(Value::as_str);
    let action = ContainerAction::parse(action, text("ssh_key"), text("key_type")).map_err(|e| match e {
        ActionError::Invalid(m) => Problem::bad_request(m),
        other => Problem::bad_request(other.to_string()),
    })?;
    let mg = state.renter().metagraph_within(state.config().metagraph_max_age).await.map_err(renter_problem)?;
    match state.renter().container_action(&mg, hotkey, &action, OBSERVE).await {
        Ok(()) => Ok(true),
        Err(RenterError::Action(e)) => Err(action_problem(e)),
        Err(e) => Err(renter_problem(e)),
    }
}

pub fn action_problem(e: ActionError) -> Problem {
    match e {
        ActionError::Invalid(m) => Problem::bad_request(m),
        ActionError::NoAnswer(_) => {
            Problem::new(StatusCode::GATEWAY_TIMEOUT, "miner-no-answer", "The miner did not answer", e.to_string())
        }
        ActionError::Refused(_) => {
            Problem::new(StatusCode::BAD_GATEWAY, "miner-refused", "The miner refused", e.to_string())
        }
        ActionError::NotObserved(_) | _ => {
            Problem::new(StatusCode::BAD_GATEWAY, "not-observed", "The machine does not show the action", e.to_string())
        }
    }
}
