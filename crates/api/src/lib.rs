//! The Resource Allocation API: `nicompute serve`, the HTTP front end of the renter that the
//! CLI is the other front end of. SN27 ships the same service as `neurons/register_api.py`
//! (mutual TLS as its only access control, webhooks lost on restart, false successes, every
//! request blocking on miners, passwords in list responses); this crate keeps its routes and
//! envelope for platforms written against it and adds what it lacks.
//!
//! One state ([`AppState`]: the [`compute::renter::Renter`] over the shared `database.db`, the
//! settings, the metrics, the event stream, the allocation jobs) and one router ([`app`]), so
//! handlers run in tests without a socket (axum's `oneshot`). [`serve`] binds, adds TLS and
//! client certificates when configured, and shuts down gracefully: it stops accepting, lets
//! in-flight requests and allocations finish, then returns.
//!
//! - `v1`: our API, resource-shaped JSON with RFC 9457 problems;
//! - `sn27`: register_api's routes, request models and `{success, message, data}` envelope;
//! - `auth`: bearer tokens (stored hashed, with scopes and owners), client certificates, the IP
//!   allow-list;
//! - `jobs`: allocations run in the background (`202`, then `active` or `failed`);
//! - `health`: the periodic checks (ONLINE/OFFLINE, automatic release, EXPIRING);
//! - `webhook`: the durable outbox, HMAC signatures, backoff and the dead letter;
//! - `web`: the dashboard at `/` (files compiled in, served compressed);
//! - `metrics`, `openapi` (and the docs page), `server`.

mod auth;
mod config;
mod events;
mod health;
mod jobs;
mod lifecycle;
mod metrics;
mod openapi;
mod problem;
mod server;
mod sn27;
mod state;
mod v1;
mod web;
mod webhook;

pub use auth::{hash_token, new_token, Level, Scope, ScopeError};
pub use config::{ApiConfig, TlsConfig, WebhookConfig};
pub use openapi::{openapi, ROUTES};
pub use server::{serve, ServeError, ServerHandle};
pub use state::AppState;
pub use web::{assets, Asset};
pub use webhook::{sign, signature_headers, verify};

use axum::Router;

/// The whole API as one router over `state`: `/v1`, SN27's routes, the dashboard (`/` for a
/// browser, `/ui/…`), `/openapi.json`, `/docs`, `/metrics`, `/healthz`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(v1::routes())
        .merge(sn27::routes())
        .merge(web::routes())
        .merge(openapi::routes())
        .merge(metrics::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}
