//! The Resource Allocation API's state, in the same file as SN27's tables so that `nicompute
//! serve` and the CLI share one database: API tokens (only a SHA-256 of each secret is kept),
//! allocations owned by a token (an id, a state, the request, the error), each allocated
//! miner's health (ONLINE/OFFLINE, consecutive failures, whether EXPIRING was sent), and the
//! webhook outbox (every event to every URL, with attempts, the next try and a dead letter).
//!
//! A health change and the events it causes are written in one transaction: a crash can lose
//! neither one without the other, which is what makes delivery at-least-once across restarts.

use rusqlite::{params, OptionalExtension, Row};

use super::{sql_ms, value_int, value_text, value_u64, ComputeDb, DbError};

/// One API token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    /// As stored: `read`, `allocate` or `admin`, optionally followed by `,secrets`.
    pub scope: String,
    pub created_ms: u64,
    pub revoked_ms: Option<u64>,
}

fn token(r: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        name: value_text(r.get_ref(1)?).unwrap_or_default(),
        scope: value_text(r.get_ref(2)?).unwrap_or_default(),
        created_ms: value_u64(r.get_ref(3)?).unwrap_or(0),
        revoked_ms: value_u64(r.get_ref(4)?),
    })
}

/// Where an API allocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiAllocationState {
    /// Accepted; the allocator is asking miners.
    Allocating,
    /// A miner allocated; credentials in the `allocation` row.
    Active,
    /// Nothing was allocated (see the error).
    Failed,
    /// Release asked; the miner has not confirmed (kept pending, retried).
    Releasing,
    /// Released (by the owner, by the health checks, or found gone).
    Released,
}

impl ApiAllocationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allocating => "allocating",
            Self::Active => "active",
            Self::Failed => "failed",
            Self::Releasing => "releasing",
            Self::Released => "released",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "allocating" => Self::Allocating,
            "active" => Self::Active,
            "releasing" => Self::Releasing,
            "released" => Self::Released,
            _ => Self::Failed,
        }
    }

    /// Whether the allocation can still change on its own.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Failed | Self::Released)
    }
}

/// One allocation made through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiAllocation {
    /// A UUID: the API's id and SN27's `uuid_key`.
    pub id: String,
    /// Who made it: `token:<id>`, or `mtls:<certificate fingerprint>`.
    pub owner: String,
    /// The miner, once one was allocated (or the one asked for by hotkey).
    pub hotkey: Option<String>,
    pub state: ApiAllocationState,
    /// The request as JSON (requirement, TTL, SSH key line).
    pub request: String,
    pub error: Option<String>,
    /// Whether the password was already given to the owner once.
    pub credentials_shown: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
}

const API_ALLOCATION_SELECT: &str = "SELECT id, owner, hotkey, state, request, error, credentials_shown, created_ms, \
     updated_ms FROM nc_api_allocation";

fn api_allocation(r: &Row<'_>) -> rusqlite::Result<ApiAllocation> {
    Ok(ApiAllocation {
        id: value_text(r.get_ref(0)?).unwrap_or_default(),
        owner: value_text(r.get_ref(1)?).unwrap_or_default(),
        hotkey: value_text(r.get_ref(2)?),
        state: ApiAllocationState::parse(&value_text(r.get_ref(3)?).unwrap_or_default()),
        request: value_text(r.get_ref(4)?).unwrap_or_default(),
        error: value_text(r.get_ref(5)?),
        credentials_shown: value_int(r.get_ref(6)?).unwrap_or(0) != 0,
        created_ms: value_u64(r.get_ref(7)?).unwrap_or(0),
        updated_ms: value_u64(r.get_ref(8)?).unwrap_or(0),
    })
}

/// One allocated miner's health as the checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRecord {
    pub hotkey: String,
    /// `true`: ONLINE.
    pub online: bool,
    /// Consecutive failed checks.
    pub failures: u32,
    pub last_check_ms: Option<u64>,
    /// When the status last changed.
    pub changed_ms: Option<u64>,
    /// The expiry (`expires_ms`) for which EXPIRING was sent.
    pub expiring_sent_for: Option<u64>,
}

fn health(r: &Row<'_>) -> rusqlite::Result<HealthRecord> {
    Ok(HealthRecord {
        hotkey: value_text(r.get_ref(0)?).unwrap_or_default(),
        online: value_text(r.get_ref(1)?).as_deref() == Some("ONLINE"),
        failures: value_int(r.get_ref(2)?).and_then(|i| u32::try_from(i).ok()).unwrap_or(0),
        last_check_ms: value_u64(r.get_ref(3)?),
        changed_ms: value_u64(r.get_ref(4)?),
        expiring_sent_for: value_u64(r.get_ref(5)?),
    })
}

/// A webhook to send: one event to one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Shared by the deliveries of one event (receivers de-duplicate on it).
    pub event_id: String,
    /// `ONLINE`, `OFFLINE`, `DEALLOCATION`, `EXPIRING`.
    pub event: String,
    pub url: String,
    /// The exact bytes to POST (compact JSON) and sign.
    pub body: String,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Gave up after the last attempt: the dead letter, kept for the operator.
    Dead,
}

/// One row of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub event_id: String,
    pub event: String,
    pub url: String,
    pub body: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_ms: u64,
    pub last_error: Option<String>,
    pub created_ms: u64,
    pub delivered_ms: Option<u64>,
}

const DELIVERY_SELECT: &str = "SELECT id, event_id, event, url, body, state, attempts, next_ms, last_error, \
     created_ms, delivered_ms FROM nc_webhook_outbox";

fn delivery(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    let state = match value_text(r.get_ref(5)?).as_deref() {
        Some("delivered") => DeliveryState::Delivered,
        Some("dead") => DeliveryState::Dead,
        _ => DeliveryState::Pending,
    };
    Ok(Delivery {
        id: r.get(0)?,
        event_id: value_text(r.get_ref(1)?).unwrap_or_default(),
        event: value_text(r.get_ref(2)?).unwrap_or_default(),
        url: value_text(r.get_ref(3)?).unwrap_or_default(),
        body: value_text(r.get_ref(4)?).unwrap_or_default(),
        state,
        attempts: value_int(r.get_ref(6)?).and_then(|i| u32::try_from(i).ok()).unwrap_or(0),
        next_ms: value_u64(r.get_ref(7)?).unwrap_or(0),
        last_error: value_text(r.get_ref(8)?),
        created_ms: value_u64(r.get_ref(9)?).unwrap_or(0),
        delivered_ms: value_u64(r.get_ref(10)?),
    })
}

fn enqueue(tx: &rusqlite::Connection, events: &[NewDelivery], now: i64) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare(
        "INSERT INTO nc_webhook_outbox (event_id, event, url, body, state, attempts, next_ms, created_ms) \
         VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?5)",
    )?;
    for e in events {
        stmt.execute(params![e.event_id, e.event, e.url, e.body, now])?;
    }
    Ok(())
}

impl ComputeDb {
    // ---- tokens ----

    /// Stores a token: its name (unique), scope and the SHA-256 (hex) of its secret.
    pub fn create_token(&self, name: &str, scope: &str, secret_sha256: &str) -> Result<TokenRecord, DbError> {
        let now = sql_ms(self.clock.now_ms());
        self.write(|tx| {
            tx.execute(
                "INSERT INTO nc_api_token (name, scope, secret_sha256, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![name, scope, secret_sha256, now],
            )?;
            let id = tx.last_insert_rowid();
            Ok(tx.query_row(
                "SELECT id, name, scope, created_ms, revoked_ms FROM nc_api_token WHERE id = ?1",
                [id],
                token,
            )?)
        })
    }

    /// The unrevoked token whose secret hashes to `secret_sha256`.
    pub fn token_by_secret(&self, secret_sha256: &str) -> Result<Option<TokenRecord>, DbError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, name, scope, created_ms, revoked_ms FROM nc_api_token \
                     WHERE secret_sha256 = ?1 AND revoked_ms IS NULL",
                )?
                .query_row([secret_sha256], token)
                .optional()?)
        })
    }

    /// Every token, by id.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, DbError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare("SELECT id, name, scope, created_ms, revoked_ms FROM nc_api_token ORDER BY id")?;
            let rows = stmt.query_map([], token)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Revokes the token named `name`; `false` if there is none or it was revoked already.
    pub fn revoke_token(&self, name: &str) -> Result<bool, DbError> {
        let now = sql_ms(self.clock.now_ms());
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE nc_api_token SET revoked_ms = ?2 WHERE name = ?1 AND revoked_ms IS NULL",
                params![name, now],
            )? > 0)
        })
    }

    // ---- allocations made through the API ----

    /// Records a new API allocation in state `allocating`.
    pub fn create_api_allocation(
        &self,
        id: &str,
        owner: &str,
        hotkey: Option<&str>,
        request: &str,
    ) -> Result<ApiAllocation, DbError> {
        let now = sql_ms(self.clock.now_ms());
        self.write(|tx| {
            tx.execute(
                "INSERT INTO nc_api_allocation (id, owner, hotkey, state, request, created_ms, updated_ms) \
                 VALUES (?1, ?2, ?3, 'allocating', ?4, ?5, ?5)",
                params![id, owner, hotkey, request, now],
            )?;
            Ok(tx.query_row(&format!("{API_ALLOCATION_SELECT} WHERE id = ?1"), [id], api_allocation)?)
        })
    }

    /// Moves an API allocation to `state` (with the miner and the error, when known).
    pub fn set_api_allocation(
        &self,
        id: &str,
        state: ApiAllocationState,
        hotkey: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), DbError> {
        let now = sql_ms(self.clock.now_ms());
        self.write(|tx| {
            tx.execute(
                "UPDATE nc_api_allocation SET state = ?2, hotkey = COALESCE(?3, hotkey), error = ?4, updated_ms = ?5 \
                 WHERE id = ?1",
                params![id, state.as_str(), hotkey, error, now],
            )?;
            Ok(())
        })
    }

    /// Ends the making of API allocation `id` in one transaction: its new state (with the miner
    /// and the error), the miner's first health record, and whether its credentials count as
    /// shown already (the request that made it is waiting and will show them).
    pub fn finish_api_allocation(
        &self,
        id: &str,
        state: ApiAllocationState,
        hotkey: Option<&str>,
        error: Option<&str>,
        health: Option<&HealthRecord>,
        credentials_shown: bool,
    ) -> Result<(), DbError> {
        let now = sql_ms(self.clock.now_ms());
        self.write(|tx| {
            tx.execute(
                "UPDATE nc_api_allocation SET state = ?2, hotkey = COALESCE(?3, hotkey), error = ?4, updated_ms = ?5, \
                 credentials_shown = MAX(credentials_shown, ?6) WHERE id = ?1",
                params![id, state.as_str(), hotkey, error, now, credentials_shown],
            )?;
            if let Some(h) = health {
                tx.execute(
                    "INSERT INTO nc_allocation_health (hotkey, status, failures, last_check_ms, changed_ms, \
                     expiring_sent_for) VALUES (?1, ?2, ?3, ?4, ?5, NULL) ON CONFLICT(hotkey) DO UPDATE SET \
                     status = excluded.status, failures = excluded.failures, last_check_ms = excluded.last_check_ms, \
                     changed_ms = excluded.changed_ms, expiring_sent_for = NULL",
                    params![
                        h.hotkey,
                        if h.online { "ONLINE" } else { "OFFLINE" },
                        h.failures,
                        h.last_check_ms.map(sql_ms),
                        h.changed_ms.map(sql_ms)
                    ],
                )?;
            }
            Ok(())
        })
    }

    pub fn api_allocation(&self, id: &str) -> Result<Option<ApiAllocation>, DbError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(&format!("{API_ALLOCATION_SELECT} WHERE id = ?1"))?
                .query_row([id], api_allocation)
                .optional()?)
        })
    }

    /// API allocations, newest first; only `owner`'s when given.
    pub fn api_allocations(&self, owner: Option<&str>) -> Result<Vec<ApiAllocation>, DbError> {
        self.read(|conn| {
            let rows = match owner {
                Some(o) => conn
                    .prepare_cached(&format!("{API_ALLOCATION_SELECT} WHERE owner = ?1 ORDER BY created_ms DESC, id"))?
                    .query_map([o], api_allocation)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
                None => conn
                    .prepare_cached(&format!("{API_ALLOCATION_SELECT} ORDER BY created_ms DESC, id"))?
                    .query_map([], api_allocation)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            };
            Ok(rows)
        })
    }

    /// The API allocation that holds `hotkey` now (active or being released), if any.
    pub fn api_allocation_of(&self, hotkey: &str) -> Result<Option<ApiAllocation>, DbError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "{API_ALLOCATION_SELECT} WHERE hotkey = ?1 AND state IN ('active', 'releasing') \
                     ORDER BY created_ms DESC LIMIT 1"
                ))?
                .query_row([hotkey], api_allocation)
                .optional()?)
        })
    }

    /// Marks the credentials of `id` as given to its owner; `true` the first time only.
    pub fn take_credentials(&self, id: &str) -> Result<bool, DbError> {
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE nc_api_allocation SET credentials_shown = 1 WHERE id = ?1 AND credentials_shown = 0",
                [id],
            )? > 0)
        })
    }

    /// API allocations left `allocating` by a server that stopped: `failed` with `error`. Their
    /// miners, if any allocated, are released as interrupted allocations. How many.
    pub fn fail_unfinished_api_allocations(&self, error: &str) -> Result<usize, DbError> {
        let now = sql_ms(self.clock.now_ms());
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE nc_api_allocation SET state = 'failed', error = ?1, updated_ms = ?2 WHERE state = 'allocating'",
                params![error, now],
            )?)
        })
    }

    // ---- health ----

    pub fn health(&self, hotkey: &str) -> Result<Option<HealthRecord>, DbError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT hotkey, status, failures, last_check_ms, changed_ms, expiring_sent_for \
                     FROM nc_allocation_health WHERE hotkey = ?1",
                )?
                .query_row([hotkey], health)
                .optional()?)
        })
    }

    pub fn healths(&self) -> Result<Vec<HealthRecord>, DbError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT hotkey, status, failures, last_check_ms, changed_ms, expiring_sent_for \
                 FROM nc_allocation_health ORDER BY hotkey",
            )?;
            let rows = stmt.query_map([], health)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Stores a check's outcome for `hotkey` and queues `events`, in one transaction.
    pub fn record_health(&self, h: &HealthRecord, events: &[NewDelivery]) -> Result<(), DbError> {
        let now = sql_ms(self.clock.now_ms());
        self.write(|tx| {
            tx.execute(
                "INSERT INTO nc_allocation_health (hotkey, status, failures, last_check_ms, changed_ms, \
                 expiring_sent_for) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(hotkey) DO UPDATE SET \
                 status = excluded.status, failures = excluded.failures, last_check_ms = excluded.last_check_ms, \
                 changed_ms = excluded.changed_ms, expiring_sent_for = excluded.expiring_sent_for",
                params![
                    h.hotkey,
                    if h.online { "ONLINE" } else { "OFFLINE" },
                    h.failures,
                    h.last_check_ms.map(sql_ms),
                    h.changed_ms.map(sql_ms),
                    h.expiring_sent_for.map(sql_ms),
                ],
            )?;
            enqueue(tx, events, now)?;
            Ok(())
        })
    }

    /// Forgets `hotkey`'s health (its allocation ended) and queues `events`, in one transaction.
    pub fn end_health(&self, hotkey: &str, events: &[NewDelivery]) -> Result<(), DbError> {
        let now = sql_ms(self.clock.now_ms());
        self.write(|tx| {
            tx.execute("DELETE FROM nc_allocation_health WHERE hotkey = ?1", [hotkey])?;
            enqueue(tx, events, now)?;
            Ok(())
        })
    }

    // ---- the webhook outbox ----

    /// Queues `events` for delivery now.
    pub fn enqueue_deliveries(&self, events: &[NewDelivery]) -> Result<(), DbError> {
        let now = sql_ms(self.clock.now_ms());
        self.write(|tx| Ok(enqueue(tx, events, now)?))
    }

    /// Pending deliveries due at `now_ms`, oldest first, at most `limit`.
    pub fn due_deliveries(&self, now_ms: u64, limit: usize) -> Result<Vec<Delivery>, DbError> {
        self.read(|conn| {
            let rows = conn
                .prepare_cached(&format!(
                    "{DELIVERY_SELECT} WHERE state = 'pending' AND next_ms <= ?1 ORDER BY next_ms, id LIMIT ?2"
                ))?
                .query_map(params![sql_ms(now_ms), limit as i64], delivery)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// When the next pending delivery is due, if any is pending.
    pub fn next_delivery_ms(&self) -> Result<Option<u64>, DbError> {
        self.read(|conn| {
            let v: Option<i64> =
                conn.query_row("SELECT MIN(next_ms) FROM nc_webhook_outbox WHERE state = 'pending'", [], |r| r.get(0))?;
            Ok(v.and_then(|v| u64::try_from(v).ok()))
        })
    }

    /// The outbox, newest first, at most `limit` rows; only those in `state` when given.
    pub fn deliveries(&self, state: Option<DeliveryState>, limit: usize) -> Result<Vec<Delivery>, DbError> {
        let state = state.map(|s| match s {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        });
        self.read(|conn| {
            let rows = conn
                .prepare_cached(&format!(
                    "{DELIVERY_SELECT} WHERE (?1 IS NULL OR state = ?1) ORDER BY id DESC LIMIT ?2"
                ))?
                .query_map(params![state, limit as i64], delivery)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// The receiver took delivery `id`.
    pub fn delivered(&self, id: i64, attempts: u32) -> Result<(), DbError> {
        let now = sql_ms(self.clock.now_ms());
        self.write(|tx| {
            tx.execute(
                "UPDATE nc_webhook_outbox SET state = 'delivered', attempts = ?2, delivered_ms = ?3, last_error = NULL \
                 WHERE id = ?1",
                params![id, attempts, now],
            )?;
            Ok(())
        })
    }

    /// Delivery `id` failed: try again at `next_ms`, or (`None`) give up: the dead letter.
    pub fn delivery_failed(&self, id: i64, attempts: u32, next_ms: Option<u64>, error: &str) -> Result<(), DbError> {
        self.write(|tx| {
            match next_ms {
                Some(next) => tx.execute(
                    "UPDATE nc_webhook_outbox SET attempts = ?2, next_ms = ?3, last_error = ?4 WHERE id = ?1",
                    params![id, attempts, sql_ms(next), error],
                )?,
                None => tx.execute(
                    "UPDATE nc_webhook_outbox SET state = 'dead', attempts = ?2, last_error = ?3 WHERE id = ?1",
                    params![id, attempts, error],
                )?,
            };
            Ok(())
        })
    }

    /// Puts a dead delivery back in the queue, due now; `false` if `id` is not dead.
    pub fn retry_delivery(&self, id: i64) -> Result<bool, DbError> {
        let now = sql_ms(self.clock.now_ms());
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE nc_webhook_outbox SET state = 'pending', attempts = 0, next_ms = ?2 WHERE id = ?1 AND state = 'dead'",
                params![id, now],
            )? > 0)
        })
    }

    /// A number that changes whenever this database changed (here or in another process):
    /// caches of derived data compare it before reuse.
    pub fn change_stamp(&self) -> Result<(i64, i64), DbError> {
        self.read(|conn| {
            let version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
            Ok((version, conn.total_changes() as i64))
        })
    }
}
