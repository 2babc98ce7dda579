//! What happens, as it happens: every allocation state change, health change and delivery
//! outcome is published on one broadcast channel, which `GET /v1/events` streams as
//! server-sent events (the web page's live view) and `?wait=` listens to.

use serde::Serialize;

/// One event of the live stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// `allocation`, `health`, `delivery` or `progress` (an allocation being made).
    pub kind: &'static str,
    /// The API allocation's id, when the event concerns one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hotkey: Option<String>,
    /// The new state: an allocation state, `ONLINE`/`OFFLINE`/`EXPIRING`/`DEALLOCATION`, a
    /// delivery's `delivered`/`retry`/`dead`, or an allocation's progress (`checking`,
    /// `asking`, `waiting_for_ssh`).
    pub state: String,
    /// What a `progress` event says in words (how many candidates, which attempt, which port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Who may see it: the owning principal (`None`: admins only, or everyone for non-private
    /// events such as deliveries, which are admin-only anyway).
    #[serde(skip)]
    pub owner: Option<String>,
    pub at_ms: u64,
}
