//! Allocations: SN27's `allocation` rows (the credentials and the deallocation key, as JSON) and
//! our `nc_allocation_meta` row beside each, which carries the allocation through its states.
//!
//! SN27's `register.py` writes the `allocation` row only after the miner answered, and `d`
//! deletes it before asking the miner to release, so an interrupted CLI or an unreachable miner
//! leaves a container nobody can find again. Here the intent is written first
//! ([`ComputeDb::begin_allocation`], state `allocating`, with the key), the row and state
//! `active` are committed together, and a deallocation the miner did not confirm stays
//! `pending_deallocation` with its error until [`ComputeDb::finish_deallocation`].

use std::fmt;

use rusqlite::types::{Type, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row};
use secrecy::{ExposeSecret, SecretString};
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{sql_ms, value_int, value_str, value_text, value_u64, ComputeDb, DbError};

/// Where an allocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllocationState {
    /// The intent is recorded and the miner is being asked; no credentials yet. Left in this
    /// state, it is an interrupted allocation to release ([`ComputeDb::interrupted`]).
    Allocating,
    /// The miner allocated and the credentials are stored. Also every `allocation` row SN27's
    /// `register.py` wrote (it has no state of its own).
    Active,
    /// Deallocation was asked for and not confirmed by the miner; to retry.
    PendingDeallocation,
}

impl AllocationState {
    /// The value stored in `nc_allocation_meta.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allocating => "allocating",
            Self::Active => "active",
            Self::PendingDeallocation => "pending_deallocation",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "allocating" => Some(Self::Allocating),
            "active" => Some(Self::Active),
            "pending_deallocation" => Some(Self::PendingDeallocation),
            _ => None,
        }
    }
}

impl fmt::Display for AllocationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allocating => "being made or interrupted",
            Self::Active => "active",
            Self::PendingDeallocation => "pending deallocation",
        })
    }
}

/// The JSON in `allocation.details`, as SN27 writes it: the miner's decrypted
/// `{"username", "password", "port", "version"}` plus the requester's `ip`, `resource` (GPU name)
/// and `regkey` (the public PEM the allocation was made with: the capability to release it).
#[derive(Clone)]
pub struct AllocationDetails {
    pub username: String,
    pub password: SecretString,
    pub port: u16,
    pub ip: String,
    pub resource: String,
    pub regkey: String,
    /// The miner's `__version_as_int__`, kept as it came.
    pub version: Value,
    /// The SSH public key given to the miner, as SN27's `register_api.py` records it (`None`:
    /// not recorded, as `register.py` does).
    pub ssh_key: Option<String>,
    /// `register_api.py`'s `uuid`: the allocation's id, which its deallocate, lifecycle routes
    /// and webhooks carry (`None` for allocations made by `register.py` or the CLI).
    pub uuid: Option<String>,
    /// SN27 v2.x's `external_user_ports` from the credentials: (container port, host port).
    pub external_user_ports: Option<Vec<(u16, u16)>>,
    /// The SSH host key the miner signed for this allocation (nicompute miners): the pin.
    pub host_key: Option<String>,
    /// The miner's answer was signed by its hotkey (`nicompute_auth`); `false` for SN27 peers.
    pub authenticated: bool,
}

impl fmt::Debug for AllocationDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllocationDetails")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("port", &self.port)
            .field("ip", &self.ip)
            .field("resource", &self.resource)
            .field("regkey", &self.regkey)
            .field("version", &self.version)
            .field("ssh_key", &self.ssh_key)
            .field("uuid", &self.uuid)
            .field("external_user_ports", &self.external_user_ports)
            .field("host_key", &self.host_key)
            .field("authenticated", &self.authenticated)
            .finish()
    }
}

/// Why an `allocation.details` text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allocation details: {0}")]
pub struct AllocationDetailsError(String);

impl AllocationDetails {
    /// Reads SN27's JSON tolerantly: `port` as an integer, an integral float or a numeric string;
    /// strings given as numbers; `ip`, `resource` and `regkey` empty and `version` null when
    /// absent. `username`, `password` and `port` are required (without them there is nothing to
    /// log in with). Unknown keys are ignored.
    pub fn from_json(text: &str) -> Result<Self, AllocationDetailsError> {
        // Straight into the known keys (no map of every key: this runs once per row of a list).
        // A document serde's derive refuses (a key twice, say) takes the general path.
        match serde_json::from_str::<KnownKeys<Value>>(text) {
            Ok(k) => Self::from_fields(|key| k.get(key)),
            Err(_) => {
                let value: Value = serde_json::from_str(text).map_err(|e| AllocationDetailsError(e.to_string()))?;
                Self::from_value(&value)
            }
        }
    }

    /// As [`Self::from_json`], without the key material and the bookkeeping a listing does not
    /// print: `regkey` stays empty, `version` null, `ssh_key` and `uuid` absent. Those keys are
    /// skipped unparsed (the PEM is most of the text), so a cold `list_a` does not unescape a
    /// thousand keys it never shows.
    pub fn from_json_listing(text: &str) -> Result<Self, AllocationDetailsError> {
        match serde_json::from_str::<KnownKeys<IgnoredAny>>(text) {
            Ok(k) => Self::from_fields(|key| k.get(key)),
            Err(_) => {
                let value: Value = serde_json::from_str(text).map_err(|e| AllocationDetailsError(e.to_string()))?;
                let mut listed = Self::from_value(&value)?;
                listed.regkey.clear();
                listed.version = Value::Null;
                listed.ssh_key = None;
                listed.uuid = None;
                Ok(listed)
            }
        }
    }

    /// As [`Self::from_json`], from parsed JSON.
    pub fn from_value(value: &Value) -> Result<Self, AllocationDetailsError> {
        let obj = value.as_object().ok_or_else(|| AllocationDetailsError("not a JSON object".into()))?;
        Self::from_fields(|key| obj.get(key))
    }

    fn from_fields<'v>(get: impl Fn(&str) -> Option<&'v Value>) -> Result<Self, AllocationDetailsError> {
        let text = |key: &str| get(key).and_then(text_of);
        let required = |key: &str| text(key).ok_or_else(|| AllocationDetailsError(format!("no `{key}`")));
        let port = get("port").and_then(port_field).ok_or_else(|| {
            AllocationDetailsError(format!("`port` is not a port number: {}", get("port").unwrap_or(&Value::Null)))
        })?;
        Ok(Self {
            username: required("username")?,
            password: SecretString::from(required("password")?),
            port,
            ip: text("ip").unwrap_or_default(),
            resource: text("resource").unwrap_or_default(),
            regkey: text("regkey").unwrap_or_default(),
            version: get("version").cloned().unwrap_or(Value::Null),
            ssh_key: text("ssh_key"),
            uuid: text("uuid"),
            external_user_ports: get("external_user_ports")
                .filter(|v| !v.is_null())
                .and_then(|v| crate::crypto::credentials::user_ports_from(v).ok()),
            host_key: text("host_key"),
            authenticated: get("authenticated").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// The JSON object, keys in the order SN27's `register.py` leaves them (the miner's four —
    /// five with v2.x's `external_user_ports` — then `ip`, `resource`, `regkey`), then
    /// `register_api.py`'s `ssh_key` and `uuid` when recorded, then ours: `host_key` and
    /// `authenticated` for signed allocations. Holds the password in clear.
    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("username".into(), self.username.clone().into());
        obj.insert("password".into(), self.password.expose_secret().into());
        obj.insert("port".into(), self.port.into());
        if let Some(ports) = &self.external_user_ports {
            obj.insert("external_user_ports".into(), crate::crypto::credentials::user_ports_value(ports));
        }
        obj.insert("version".into(), self.version.clone());
        obj.insert("ip".into(), self.ip.clone().into());
        obj.insert("resource".into(), self.resource.clone().into());
        obj.insert("regkey".into(), self.regkey.clone().into());
        if let Some(k) = &self.ssh_key {
            obj.insert("ssh_key".into(), k.clone().into());
        }
        if let Some(u) = &self.uuid {
            obj.insert("uuid".into(), u.clone().into());
        }
        if let Some(k) = &self.host_key {
            obj.insert("host_key".into(), k.clone().into());
        }
        if self.authenticated {
            obj.insert("authenticated".into(), true.into());
        }
        Value::Object(obj)
    }

    /// The text for `allocation.details`, byte for byte what Python's `json.dumps` writes.
    pub fn to_json(&self) -> String {
        let bytes = bittensor::synapse::py::to_json(&self.to_value(), true, true);
        // ensure_ascii output is ASCII, so this never replaces anything.
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// `ssh <username>@<ip> -p <port>`, as SN27 prints it, every part checked and shell-quoted
    /// ([`crate::protocol::login`]); for a row whose login does not pass the checks, why not.
    pub fn ssh_command(&self) -> String {
        match self.login() {
            Ok(l) => l.command_line(),
            Err(e) => format!("(no ssh command: {e})"),
        }
    }

    /// The row's login, checked: a row another tool wrote may hold anything a miner sent.
    pub fn login(&self) -> Result<crate::protocol::login::Login, crate::protocol::login::LoginError> {
        crate::protocol::login::Login::new(&self.username, &self.ip, self.port)
    }
}

/// The keys [`AllocationDetails`] reads, each as stored (a JSON null reads as absent, as before).
/// `K` is how the key material and bookkeeping are read: [`Value`] for the whole record,
/// [`IgnoredAny`] for a listing, which skips them unparsed.
#[derive(serde::Deserialize)]
struct KnownKeys<K> {
    username: Option<Value>,
    password: Option<Value>,
    port: Option<Value>,
    ip: Option<Value>,
    resource: Option<Value>,
    regkey: Option<K>,
    version: Option<K>,
    ssh_key: Option<K>,
    uuid: Option<K>,
    external_user_ports: Option<Value>,
    host_key: Option<Value>,
    authenticated: Option<Value>,
}

/// A key read as a value, or skipped.
trait Kept {
    fn kept(&self) -> Option<&Value>;
}

impl Kept for Value {
    fn kept(&self) -> Option<&Value> {
        Some(self)
    }
}

impl Kept for IgnoredAny {
    fn kept(&self) -> Option<&Value> {
        None
    }
}

impl<K: Kept> KnownKeys<K> {
    fn get(&self, key: &str) -> Option<&Value> {
        match key {
            "username" => self.username.as_ref(),
            "password" => self.password.as_ref(),
            "port" => self.port.as_ref(),
            "ip" => self.ip.as_ref(),
            "resource" => self.resource.as_ref(),
            "regkey" => self.regkey.as_ref().and_then(K::kept),
            "version" => self.version.as_ref().and_then(K::kept),
            "ssh_key" => self.ssh_key.as_ref().and_then(K::kept),
            "uuid" => self.uuid.as_ref().and_then(K::kept),
            "external_user_ports" => self.external_user_ports.as_ref(),
            "host_key" => self.host_key.as_ref(),
            "authenticated" => self.authenticated.as_ref(),
            _ => None,
        }
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn port_field(v: &Value) -> Option<u16> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(i) => u16::try_from(i).ok(),
            // Integral floats only (Python may have written 4444.0).
            None => n.as_f64().filter(|f| f.fract() == 0.0 && (0.0..=65535.0).contains(f)).map(|f| f as u16),
        },
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The fingerprint we store for a key: the SHA-256 of the PEM text, lower-case hex.
pub fn key_fingerprint(pem: &str) -> String {
    Sha256::digest(pem.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// One `allocation` row with its state.
#[derive(Clone)]
pub struct AllocationRecord {
    /// `allocation.id`.
    pub id: i64,
    pub hotkey: String,
    /// The parsed details; `None` when the row's JSON is unreadable (see `details_raw`).
    pub details: Option<AllocationDetails>,
    /// The row's text as stored (holds the password in clear; never printed by `Debug`).
    pub details_raw: Option<String>,
    /// [`AllocationState::Active`] for a row without our state (written by SN27).
    pub state: AllocationState,
    /// The deallocation key: ours if we made the allocation, else the row's `regkey`.
    pub regkey: Option<String>,
    /// [`key_fingerprint`] of `regkey`.
    pub key_fingerprint: Option<String>,
    /// Whether the renter's SSH public key was given to the miner (unknown for SN27's rows).
    pub ssh_key_injected: Option<bool>,
    pub created_ms: Option<u64>,
    pub expires_ms: Option<u64>,
    /// Why the last deallocation attempt failed.
    pub last_error: Option<String>,
    pub updated_ms: Option<u64>,
}

impl fmt::Debug for AllocationRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllocationRecord")
            .field("id", &self.id)
            .field("hotkey", &self.hotkey)
            .field("details", &self.details)
            .field("details_raw", &self.details_raw.as_ref().map(|raw| format!("[REDACTED, {} bytes]", raw.len())))
            .field("state", &self.state)
            .field("regkey", &self.regkey)
            .field("key_fingerprint", &self.key_fingerprint)
            .field("ssh_key_injected", &self.ssh_key_injected)
            .field("created_ms", &self.created_ms)
            .field("expires_ms", &self.expires_ms)
            .field("last_error", &self.last_error)
            .field("updated_ms", &self.updated_ms)
            .finish()
    }
}

/// One allocation as the list commands print it: [`AllocationRecord`] without the key material
/// (the regkey PEM and its fingerprint), the raw text and the history. Its `details` come from
/// [`AllocationDetails::from_json_listing`]: their `regkey` is empty. Releasing an allocation
/// takes an [`AllocationRecord`].
#[derive(Debug)]
pub struct AllocationListing {
    /// `allocation.id`.
    pub id: i64,
    pub hotkey: String,
    /// `None` when the row's JSON is unreadable.
    pub details: Option<AllocationDetails>,
    /// [`AllocationState::Active`] for a row without our state (written by SN27).
    pub state: AllocationState,
    pub expires_ms: Option<u64>,
}

const LISTING_SELECT: &str = "SELECT a.id, a.hotkey, a.details, m.state, m.expires_ms \
     FROM allocation a LEFT JOIN nc_allocation_meta m ON m.hotkey = a.hotkey \
     WHERE a.hotkey IS NOT NULL ORDER BY a.id";

fn listing(r: &Row<'_>) -> rusqlite::Result<AllocationListing> {
    let details = value_str(r.get_ref(2)?).and_then(|t| AllocationDetails::from_json_listing(&t).ok());
    Ok(AllocationListing {
        id: r.get(0)?,
        hotkey: value_text(r.get_ref(1)?).unwrap_or_default(),
        details,
        state: state_of(r.get_ref(3)?)?,
        expires_ms: value_u64(r.get_ref(4)?),
    })
}

/// Our state column: [`AllocationState::Active`] where the row has none (written by SN27).
fn state_of(v: ValueRef<'_>) -> rusqlite::Result<AllocationState> {
    match value_text(v) {
        None => Ok(AllocationState::Active),
        // The CHECK constraint admits only the three states.
        Some(s) => AllocationState::parse(&s).ok_or(rusqlite::Error::InvalidColumnType(3, "state".into(), Type::Text)),
    }
}

const RECORD_SELECT: &str = "SELECT a.id, a.hotkey, a.details, m.state, m.regkey, m.key_fingerprint, \
     m.ssh_key_injected, m.created_ms, m.expires_ms, m.last_error, m.updated_ms \
     FROM allocation a LEFT JOIN nc_allocation_meta m ON m.hotkey = a.hotkey";

fn record(r: &Row<'_>) -> rusqlite::Result<AllocationRecord> {
    let details_raw = value_text(r.get_ref(2)?);
    let details = details_raw.as_deref().and_then(|t| AllocationDetails::from_json(t).ok());
    let state = state_of(r.get_ref(3)?)?;
    let regkey =
        value_text(r.get_ref(4)?).or_else(|| details.as_ref().map(|d| d.regkey.clone())).filter(|k| !k.is_empty());
    let key_fingerprint = value_text(r.get_ref(5)?).or_else(|| regkey.as_deref().map(key_fingerprint));
    Ok(AllocationRecord {
        id: r.get(0)?,
        hotkey: value_text(r.get_ref(1)?).unwrap_or_default(),
        details,
        details_raw,
        state,
        regkey,
        key_fingerprint,
        ssh_key_injected: value_int(r.get_ref(6)?).map(|i| i != 0),
        created_ms: value_u64(r.get_ref(7)?),
        expires_ms: value_u64(r.get_ref(8)?),
        last_error: value_text(r.get_ref(9)?),
        updated_ms: value_u64(r.get_ref(10)?),
    })
}

/// Our state row for `hotkey`: its state and key.
fn meta(conn: &Connection, hotkey: &str) -> rusqlite::Result<Option<(AllocationState, Option<String>)>> {
    conn.query_row("SELECT state, regkey FROM nc_allocation_meta WHERE hotkey = ?1", [hotkey], |r| {
        let state = value_text(r.get_ref(0)?).as_deref().and_then(AllocationState::parse);
        Ok((state.ok_or(rusqlite::Error::InvalidColumnType(0, "state".into(), Type::Text))?, value_text(r.get_ref(1)?)))
    })
    .optional()
}

/// The `allocation` row's details text for `hotkey`: `None` if there is no row.
fn allocation_row(conn: &Connection, hotkey: &str) -> rusqlite::Result<Option<Option<String>>> {
    conn.query_row("SELECT details FROM allocation WHERE hotkey = ?1", [hotkey], |r| Ok(value_text(r.get_ref(0)?)))
        .optional()
}

/// Drops the claim on `hotkey`: the allocation is no longer being made.
fn unclaim(conn: &Connection, hotkey: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM nc_allocation_claim WHERE hotkey = ?1", [hotkey])?;
    Ok(())
}

/// Whether process `pid` of this machine exists (signal 0; "permission denied" exists too).
fn process_alive(pid: i64) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else { return false };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

fn regkey_of(details: Option<&str>) -> Option<String> {
    details.and_then(|t| AllocationDetails::from_json(t).ok()).map(|d| d.regkey).filter(|k| !k.is_empty())
}

impl ComputeDb {
    /// Records the intent to allocate `hotkey` with the key `regkey_pem` (state `allocating`),
    /// before the miner is asked, so that an interrupted run can release what the miner may have
    /// started ([`Self::interrupted`]). Refused if `hotkey` already has an allocation row or a
    /// state row of ours.
    pub fn begin_allocation(
        &self,
        hotkey: &str,
        regkey_pem: &str,
        expires_ms: u64,
        ssh_key_injected: bool,
    ) -> Result<(), DbError> {
        let now = sql_ms(self.clock.now_ms());
        self.write(|tx| {
            let existing = match meta(tx, hotkey)? {
                Some((state, _)) => Some(state),
                None => allocation_row(tx, hotkey)?.map(|_| AllocationState::Active),
            };
            if let Some(state) = existing {
                return Err(self.already(hotkey, state).into());
            }
            tx.execute(
                "INSERT INTO nc_allocation_meta (hotkey, state, regkey, key_fingerprint, ssh_key_injected, \
                 created_ms, expires_ms, last_error, updated_ms) VALUES (?1, 'allocating', ?2, ?3, ?4, ?5, ?6, NULL, ?5)",
                params![hotkey, regkey_pem, key_fingerprint(regkey_pem), ssh_key_injected, now, sql_ms(expires_ms)],
            )?;
            let until = sql_ms(self.clock.now_ms().saturating_add(super::CLAIM_TTL.as_millis() as u64));
            tx.execute(
                "INSERT OR REPLACE INTO nc_allocation_claim (hotkey, holder, pid, until_ms) VALUES (?1, ?2, ?3, ?4)",
                params![hotkey, self.holder, std::process::id(), until],
            )?;
            Ok(())
        })
    }

    /// Stores the miner's answer: in one transaction, SN27's `allocation` row (`details` as
    /// SN27 writes it) and state `active`. Requires a [`Self::begin_allocation`] with the same
    /// key (`details.regkey`).
    pub fn commit_allocation(&self, hotkey: &str, details: &AllocationDetails) -> Result<(), DbError> {
        let now = sql_ms(self.clock.now_ms());
        self.write(|tx| {
            let Some((state, regkey)) = meta(tx, hotkey)? else {
                return Err(DbError::NotAllocating { path: self.path.clone(), hotkey: hotkey.into() }.into());
            };
            if state != AllocationState::Allocating {
                return Err(self.already(hotkey, state).into());
            }
            if allocation_row(tx, hotkey)?.is_some() {
                // Written meanwhile by another tool (SN27's register.py upserts); not ours to replace.
                return Err(self.already(hotkey, AllocationState::Active).into());
            }
            if regkey.as_deref() != Some(details.regkey.as_str()) {
                return Err(DbError::KeyMismatch { hotkey: hotkey.into() }.into());
            }
            tx.execute("INSERT INTO allocation (hotkey, details) VALUES (?1, ?2)", params![hotkey, details.to_json()])?;
            tx.execute(
                "UPDATE nc_allocation_meta SET state = 'active', last_error = NULL, updated_ms = ?2 WHERE hotkey = ?1",
                params![hotkey, now],
            )?;
            unclaim(tx, hotkey)?;
            Ok(())
        })
    }

    /// Forgets an allocation that was begun and not committed (the miner refused, or released
    /// it): deletes our state row, and an `allocation` row for `hotkey` if it carries the same
    /// key (one carrying another key is someone else's and stays). `false` if there was nothing
    /// to forget; refused for an allocation that is active or being deallocated, which only a
    /// confirmed deallocation may forget ([`Self::finish_deallocation`]).
    pub fn abort_allocation(&self, hotkey: &str) -> Result<bool, DbError> {
        self.write(|tx| {
            let row = allocation_row(tx, hotkey)?;
            let regkey = match meta(tx, hotkey)? {
                Some((AllocationState::Allocating, regkey)) => regkey,
                Some((state, _)) => return Err(DbError::CannotAbort { hotkey: hotkey.into(), state }.into()),
                None if row.is_some() => {
                    return Err(DbError::CannotAbort { hotkey: hotkey.into(), state: AllocationState::Active }.into())
                }
                None => return Ok(false),
            };
            tx.execute("DELETE FROM nc_allocation_meta WHERE hotkey = ?1", [hotkey])?;
            unclaim(tx, hotkey)?;
            if let Some(details) = row {
                if regkey.is_some() && regkey_of(details.as_deref()) == regkey {
                    tx.execute("DELETE FROM allocation WHERE hotkey = ?1", [hotkey])?;
                }
            }
            Ok(true)
        })
    }

    /// Records that deallocating `hotkey` failed with `error` and must be retried. The
    /// `allocation` row stays (SN27's `d` deletes it first and so loses the container). An
    /// allocation SN27 wrote gets a state row, keyed by the row's `regkey`; an interrupted one
    /// stays listed by [`Self::interrupted`].
    pub fn mark_pending_deallocation(&self, hotkey: &str, error: &str) -> Result<(), DbError> {
        let now = sql_ms(self.clock.now_ms());
        self.write(|tx| {
            if meta(tx, hotkey)?.is_some() {
                tx.execute(
                    "UPDATE nc_allocation_meta SET state = 'pending_deallocation', last_error = ?2, updated_ms = ?3 \
                     WHERE hotkey = ?1",
                    params![hotkey, error, now],
                )?;
                unclaim(tx, hotkey)?;
                return Ok(());
            }
            let Some(details) = allocation_row(tx, hotkey)? else {
                return Err(DbError::NoAllocation { path: self.path.clone(), hotkey: hotkey.into() }.into());
            };
            let regkey = regkey_of(details.as_deref());
            tx.execute(
                "INSERT INTO nc_allocation_meta (hotkey, state, regkey, key_fingerprint, last_error, updated_ms) \
                 VALUES (?1, 'pending_deallocation', ?2, ?3, ?4, ?5)",
                params![hotkey, regkey, regkey.as_deref().map(key_fingerprint), error, now],
            )?;
            Ok(())
        })
    }

    /// The miner confirmed the release (or the allocation is known gone): deletes the
    /// `allocation` row and our state row in one transaction. `false` if neither existed.
    pub fn finish_deallocation(&self, hotkey: &str) -> Result<bool, DbError> {
        self.write(|tx| {
            let rows = tx.execute("DELETE FROM allocation WHERE hotkey = ?1", [hotkey])?
                + tx.execute("DELETE FROM nc_allocation_meta WHERE hotkey = ?1", [hotkey])?;
            unclaim(tx, hotkey)?;
            Ok(rows > 0)
        })
    }

    /// Every `allocation` row, by id, with its state ([`AllocationState::Active`] for rows SN27
    /// wrote). Rows whose hotkey is NULL are skipped.
    pub fn allocations(&self) -> Result<Vec<AllocationRecord>, DbError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!("{RECORD_SELECT} WHERE a.hotkey IS NOT NULL ORDER BY a.id"))?;
            let rows = stmt.query_map([], record)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Every allocation as the list commands print it, in `id` order: [`Self::allocations`]
    /// without reading what a listing does not show.
    pub fn allocation_listing(&self) -> Result<Vec<AllocationListing>, DbError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(LISTING_SELECT)?;
            let rows = stmt.query_map([], listing)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// The hotkeys of every allocation, in `id` order, without reading the rows' details.
    pub fn allocated_hotkeys(&self) -> Result<Vec<String>, DbError> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT hotkey FROM allocation WHERE hotkey IS NOT NULL ORDER BY id")?;
            let rows = stmt
                .query_map([], |r| Ok(value_text(r.get_ref(0)?).unwrap_or_default()))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// The `allocation` row of `hotkey`, if any.
    pub fn allocation(&self, hotkey: &str) -> Result<Option<AllocationRecord>, DbError> {
        self.read(|conn| {
            let row = conn.query_row(&format!("{RECORD_SELECT} WHERE a.hotkey = ?1"), [hotkey], record).optional()?;
            Ok(row)
        })
    }

    /// Allocations begun and never committed, oldest first, as `(hotkey, regkey)`: the miner may
    /// have started a container for them, which the key can release. Includes those whose release
    /// already failed once (state `pending_deallocation` without an `allocation` row). An
    /// allocation another process is making right now is listed too.
    pub fn interrupted(&self) -> Result<Vec<(String, String)>, DbError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT m.hotkey, m.regkey FROM nc_allocation_meta m WHERE m.regkey IS NOT NULL AND \
                 (m.state = 'allocating' OR (m.state = 'pending_deallocation' AND \
                  NOT EXISTS (SELECT 1 FROM allocation a WHERE a.hotkey = m.hotkey))) \
                 ORDER BY m.created_ms, m.hotkey",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// [`Self::interrupted`] less the allocations another live handle is making right now: those
    /// it claimed ([`super::CLAIM_TTL`]) from a process that still runs. What a renter may
    /// release as interrupted while a server and CLIs share the file.
    pub fn interrupted_unclaimed(&self) -> Result<Vec<(String, String)>, DbError> {
        let all = self.interrupted()?;
        let now = sql_ms(self.clock.now_ms());
        let claims: Vec<(String, String, Option<i64>, i64)> = self.read(|conn| {
            let mut stmt = conn.prepare("SELECT hotkey, holder, pid, until_ms FROM nc_allocation_claim")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        let held_elsewhere = |hotkey: &str| {
            claims.iter().any(|(h, holder, pid, until)| {
                h == hotkey && *holder != self.holder && *until > now && pid.is_some_and(process_alive)
            })
        };
        Ok(all.into_iter().filter(|(h, _)| !held_elsewhere(h)).collect())
    }

    fn already(&self, hotkey: &str, state: AllocationState) -> DbError {
        DbError::AlreadyAllocated { path: self.path.clone(), hotkey: hotkey.into(), state }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details() -> AllocationDetails {
        AllocationDetails {
            username: "root".into(),
            password: SecretString::from("aB3dE5gH7j"),
            port: 4444,
            ip: "203.0.113.7".into(),
            resource: "nvidia h100 80gb hbm3".into(),
            regkey: "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n".into(),
            version: Value::from(183),
            ssh_key: None,
            uuid: None,
            external_user_ports: None,
            host_key: None,
            authenticated: false,
        }
    }

    #[test]
    fn details_are_written_as_register_py_writes_them() {
        assert_eq!(
            details().to_json(),
            r#"{"username": "root", "password": "aB3dE5gH7j", "port": 4444, "version": 183, "ip": "203.0.113.7", "resource": "nvidia h100 80gb hbm3", "regkey": "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n"}"#
        );
        let back = AllocationDetails::from_json(&details().to_json()).unwrap();
        assert_eq!(back.to_json(), details().to_json());
        assert_eq!(back.ssh_command(), "ssh root@203.0.113.7 -p 4444");
    }

    #[test]
    fn v2_ports_and_the_pin_round_trip_after_sn27s_keys() {
        let d = AllocationDetails {
            external_user_ports: Some(vec![(27015, 40001)]),
            host_key: Some("ssh-ed25519 AAAA".into()),
            authenticated: true,
            ..details()
        };
        let text = d.to_json();
        assert!(
            text.starts_with(r#"{"username": "root", "password": "aB3dE5gH7j", "port": 4444, "external_user_ports": {"27015": 40001}, "version": 183"#),
            "{text}"
        );
        assert!(text.ends_with(r#""host_key": "ssh-ed25519 AAAA", "authenticated": true}"#), "{text}");
        let back = AllocationDetails::from_json(&text).unwrap();
        assert_eq!(
            (back.external_user_ports, back.host_key, back.authenticated),
            (d.external_user_ports, d.host_key, true)
        );
        let hostile = AllocationDetails { username: "-oProxyCommand=x".into(), ..details() };
        assert!(hostile.ssh_command().starts_with("(no ssh command: the username"), "{}", hostile.ssh_command());
    }

    #[test]
    fn details_are_read_tolerantly() {
        let d =
            AllocationDetails::from_json(r#"{"username": "root", "password": 1234567890, "port": "4444"}"#).unwrap();
        assert_eq!((d.port, d.password.expose_secret(), d.ip.as_str()), (4444, "1234567890", ""));
        assert_eq!(d.version, Value::Null);
        let d =
            AllocationDetails::from_json(r#"{"username": "u", "password": "p", "port": 22.0, "extra": [1]}"#).unwrap();
        assert_eq!(d.port, 22);
        for bad in
            [r#"[]"#, r#"{"password": "p", "port": 1}"#, r#"{"username": "u", "password": "p", "port": 70000}"#, "{"]
        {
            assert!(AllocationDetails::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_listing_reads_what_a_record_reads_but_the_key_material() {
        let full = AllocationDetails {
            ssh_key: Some("ssh-ed25519 AAAA me".into()),
            uuid: Some("0b1c".into()),
            external_user_ports: Some(vec![(27015, 40001)]),
            host_key: Some("ssh-ed25519 BBBB".into()),
            authenticated: true,
            ..details()
        };
        // The strict pass, and a key twice (serde's derive refuses it: the general path).
        let text = full.to_json();
        let twice = text.replacen("{\"username\": \"root\"", "{\"username\": \"x\", \"username\": \"root\"", 1);
        for text in [text, twice] {
            let listed = AllocationDetails::from_json_listing(&text).unwrap();
            let expected = AllocationDetails {
                regkey: String::new(),
                version: Value::Null,
                ssh_key: None,
                uuid: None,
                ..AllocationDetails::from_json(&text).unwrap()
            };
            assert_eq!(listed.to_json(), expected.to_json(), "{text}");
            assert_eq!(listed.ssh_command(), "ssh root@203.0.113.7 -p 4444");
        }
        // The same tolerance, and the same refusals.
        let d = AllocationDetails::from_json_listing(r#"{"username": "root", "password": 1234567890, "port": "4444"}"#)
            .unwrap();
        assert_eq!((d.port, d.password.expose_secret()), (4444, "1234567890"));
        for bad in [r#"{"password": "p", "port": 1}"#, r#"{"username": "u", "password": "p", "port": 70000}"#, "{"] {
            assert!(AllocationDetails::from_json_listing(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        let shown = format!("{:?}", details());
        assert!(!shown.contains("aB3dE5gH7j"), "{shown}");
        let record = AllocationRecord {
            id: 1,
            hotkey: "5F".into(),
            details: Some(details()),
            details_raw: Some(details().to_json()),
            state: AllocationState::Active,
            regkey: None,
            key_fingerprint: None,
            ssh_key_injected: None,
            created_ms: None,
            expires_ms: None,
            last_error: None,
            updated_ms: None,
        };
        let shown = format!("{record:?}");
        assert!(!shown.contains("aB3dE5gH7j"), "{shown}");
    }

    #[test]
    fn fingerprint_is_sha256_hex_of_the_pem() {
        assert_eq!(key_fingerprint(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
