//! What can go wrong talking to wandb, each case saying what to do about it.
//!
//! Publishing to wandb is never allowed to block a local operation, so callers need to tell a
//! user fault (no key, a rejected key, no access) from a passing one (server error, network down)
//! that a later retry will fix; [`WandbError::is_transient`] says which. Messages name the
//! endpoint and never contain the API key.

use std::path::PathBuf;

/// An error of the wandb client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WandbError {
    #[error(
        "no wandb API key for {host}: set WANDB_API_KEY, or run `wandb login` (it writes a `machine {host}` entry \
         with the key as password to ~/.netrc)"
    )]
    NoApiKey { host: String },

    #[error("cannot read {path}: {reason} (it should hold the wandb API key; or set WANDB_API_KEY instead)")]
    Netrc { path: PathBuf, reason: String },

    #[error("'{url}' is not a usable wandb base URL: {reason} (expected e.g. https://api.wandb.ai)")]
    BadBaseUrl { url: String, reason: String },

    #[error(
        "{endpoint} rejected the wandb API key (HTTP 401): check WANDB_API_KEY or ~/.netrc; a key is 40 hex \
         characters from https://wandb.ai/authorize"
    )]
    BadApiKey { endpoint: String },

    #[error(
        "{endpoint} refused access (HTTP 403: {message}): the account of this API key may not write to \
         {entity}/{project}; ask the project's owners for access or use another key"
    )]
    Forbidden { endpoint: String, entity: String, project: String, message: String },

    #[error(
        "{endpoint} answered HTTP 404 ({message}): does the project {entity}/{project} exist? Check entity and project"
    )]
    ProjectNotFound { endpoint: String, entity: String, project: String, message: String },

    #[error("run {entity}/{project}/{run_id} does not exist on {endpoint}")]
    RunNotFound { endpoint: String, entity: String, project: String, run_id: String },

    #[error("{endpoint} refused the request (HTTP {status}: {message}); this is a bug in nicompute's wandb client")]
    Rejected { endpoint: String, status: u16, message: String },

    #[error("{endpoint} answered with a GraphQL error: {message}")]
    GraphQl { endpoint: String, message: String },

    #[error(
        "{endpoint} kept failing (HTTP {status}: {message}) after {attempts} attempts; wandb may be down, try \
         again later"
    )]
    Server { endpoint: String, status: u16, message: String, attempts: u32 },

    #[error(
        "cannot reach {endpoint} ({reason}) after {attempts} attempts: check the network, or the base URL \
         (--wandb-base-url / WANDB_BASE_URL)"
    )]
    Unreachable { endpoint: String, reason: String, attempts: u32 },

    #[error(
        "{endpoint} did not answer within {seconds:.1} s ({attempts} attempts): check the network, or try again later"
    )]
    Timeout { endpoint: String, seconds: f64, attempts: u32 },

    #[error("{endpoint} sent an answer nicompute cannot read: {reason}")]
    Protocol { endpoint: String, reason: String },
}

impl WandbError {
    /// Whether retrying later may succeed (the server or the network), as opposed to a fault the
    /// user must fix (key, access, project, base URL).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Server { .. } | Self::Unreachable { .. } | Self::Timeout { .. })
    }
}
