//! The wandb side of NI Compute (Bittensor subnet 27).
//!
//! SN27 validators share which miners are allocated and which are penalized through wandb run
//! configs in the public project `neuralinternet/opencompute`, each run signed by its validator's
//! hotkey; Python miners kill containers whose hotkey no valid validator lists. This crate reads
//! and writes that state the way the subnet's code does through `wandb==0.19.0`'s public API —
//! the same GraphQL documents, variables and JSON bytes — so a renter using nicompute keeps its
//! allocations alive on the real network.
//!
//! - [`WandbClient`]: the generic calls (list runs with a filter, read, create, update a run).
//! - [`sn27`]: the subnet's meaning on top: [`sign_run`], [`verify_run`], [`WandbClient::publish`],
//!   [`WandbClient::shared_state`].
//! - [`ApiKey`]: the key the caller read from `WANDB_API_KEY`, else its netrc file; never printed.
//!   The crate reads no environment: the CLI declares those settings and passes them in.

mod auth;
mod client;
mod error;
pub mod pyjson;
pub mod sn27;
mod transport;

pub use auth::{ApiKey, KeySource};
pub use client::{
    new_run_id, RetryPolicy, Run, RunNodeError, WandbClient, WandbConfig, CREATE_RUN_MUTATION, DEFAULT_BASE_URL,
    DEFAULT_PER_PAGE, RUNS_QUERY, RUN_QUERY, SN27_ENTITY, SN27_PROJECT, UPDATE_RUN_MUTATION, USER_AGENT,
};
pub use error::WandbError;
pub use sn27::{
    check_run, sign_run, validator_run_name, verify_run, Lists, Publication, Published, Rejection, SharedState,
    ValidatorRunConfig,
};
