//! The allocator's journal: where allocations are recorded, step by step, so a crash or a
//! failure never leaves a machine allocated with no local trace. [`AllocationStore`] is the
//! protocol; the allocation database implements it for the CLI, and [`MemoryStore`] is the
//! in-memory double for tests and dry runs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use super::Allocated;
use crate::crypto::CredentialsVersion;
use crate::db::{AllocationDetails, ComputeDb, DbError};

/// Where allocations are recorded. The allocator calls it in this order: [`begin`] before the
/// miner is asked to allocate (so a crash leaves an intent to reconcile, never an untracked
/// machine), then [`commit`] once the credentials are in hand, or [`abort`] when the miner
/// refused or was released again. [`mark_pending`] records a release the miner did not confirm;
/// [`finish`] removes an allocation the miner released.
///
/// `mark_pending` and `finish` cannot fail from the allocator's point of view: there is nothing
/// else it could do. Implementations log their own failures.
///
/// [`begin`]: AllocationStore::begin
/// [`commit`]: AllocationStore::commit
/// [`abort`]: AllocationStore::abort
/// [`mark_pending`]: AllocationStore::mark_pending
/// [`finish`]: AllocationStore::finish
pub trait AllocationStore: Send + Sync {
    /// Records the intent to allocate `hotkey` with the public key `regkey_pem`, expiring around
    /// `expires_ms` (Unix ms). Fails if the store cannot record it (the miner is then not asked).
    fn begin(&self, hotkey: &str, regkey_pem: &str, expires_ms: u64, ssh_key_injected: bool) -> Result<(), StoreError>;
    /// Completes the allocation begun for `hotkey`. `record.ssh_ready` is `false` here: the SSH
    /// wait happens after the commit, so the record is durable first.
    fn commit(&self, hotkey: &str, record: &Allocated) -> Result<(), StoreError>;
    /// Drops the intent begun for `hotkey`: nothing is allocated there.
    fn abort(&self, hotkey: &str) -> Result<(), StoreError>;
    /// The miner may still hold an allocation for `hotkey` that could not be released: keep it,
    /// marked pending with `error`, for a later retry.
    fn mark_pending(&self, hotkey: &str, error: &str);
    /// The miner released the allocation of `hotkey`: forget it.
    fn finish(&self, hotkey: &str);
}

/// Why a step could not be recorded. The allocator does not ask the miner when `begin` fails,
/// and releases the machine again when `commit` fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `begin` for a miner that already has a record (allocated, being allocated, or a release
    /// pending).
    #[error("an allocation of {hotkey} is already recorded ({state}); deallocate it first")]
    AlreadyRecorded { hotkey: String, state: RowState },
    /// `commit` or `abort` of a record that is not being made.
    #[error("the allocation of {hotkey} is {state}, not being made")]
    NotBegun { hotkey: String, state: RowState },
    /// `commit` without a `begin`.
    #[error("no allocation of {hotkey} was begun")]
    NeverBegun { hotkey: String },
    /// The database refused or failed (locked, read-only, out of order); it says what to do.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Where a [`MemoryStore`] row stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowState {
    /// `begin` was called; no `commit` yet.
    Begun,
    /// Committed: the renter holds the allocation.
    Committed,
    /// A release the miner did not confirm, with the error.
    Pending(String),
}

impl fmt::Display for RowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Begun => f.write_str("being made"),
            Self::Committed => f.write_str("allocated"),
            Self::Pending(e) => write!(f, "a pending release ({e})"),
        }
    }
}

/// One allocation in a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryRow {
    pub regkey_pem: String,
    pub expires_ms: u64,
    pub ssh_key_injected: bool,
    pub state: RowState,
    /// The committed record, once committed.
    pub record: Option<Allocated>,
}

/// An in-memory [`AllocationStore`] (tests, dry runs). One row per hotkey.
#[derive(Debug, Default)]
pub struct MemoryStore {
    rows: Mutex<BTreeMap<String, MemoryRow>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The row of `hotkey`, if any.
    pub fn get(&self, hotkey: &str) -> Option<MemoryRow> {
        self.lock().get(hotkey).cloned()
    }

    /// Every row, by hotkey.
    pub fn rows(&self) -> Vec<(String, MemoryRow)> {
        self.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, MemoryRow>> {
        // A panic while holding the lock leaves a consistent map (every change is one statement).
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AllocationStore for MemoryStore {
    fn begin(&self, hotkey: &str, regkey_pem: &str, expires_ms: u64, ssh_key_injected: bool) -> Result<(), StoreError> {
        let mut rows = self.lock();
        if let Some(row) = rows.get(hotkey) {
            return Err(StoreError::AlreadyRecorded { hotkey: hotkey.to_owned(), state: row.state.clone() });
        }
        rows.insert(
            hotkey.to_owned(),
            MemoryRow {
                regkey_pem: regkey_pem.to_owned(),
                expires_ms,
                ssh_key_injected,
                state: RowState::Begun,
                record: None,
            },
        );
        Ok(())
    }

    fn commit(&self, hotkey: &str, record: &Allocated) -> Result<(), StoreError> {
        match self.lock().get_mut(hotkey) {
            Some(row) if row.state == RowState::Begun => {
                row.state = RowState::Committed;
                row.expires_ms = record.expires_ms;
                row.record = Some(record.clone());
                Ok(())
            }
            Some(row) => Err(StoreError::NotBegun { hotkey: hotkey.to_owned(), state: row.state.clone() }),
            None => Err(StoreError::NeverBegun { hotkey: hotkey.to_owned() }),
        }
    }

    fn abort(&self, hotkey: &str) -> Result<(), StoreError> {
        let mut rows = self.lock();
        match rows.get(hotkey) {
            Some(row) if row.state == RowState::Begun => {
                rows.remove(hotkey);
                Ok(())
            }
            Some(row) => Err(StoreError::NotBegun { hotkey: hotkey.to_owned(), state: row.state.clone() }),
            None => Ok(()),
        }
    }

    fn mark_pending(&self, hotkey: &str, error: &str) {
        if let Some(row) = self.lock().get_mut(hotkey) {
            row.state = RowState::Pending(error.to_owned());
        }
    }

    fn finish(&self, hotkey: &str) {
        self.lock().remove(hotkey);
    }
}

/// The allocation database is the renter's journal: `begin_allocation` before the miner is
/// asked, `commit_allocation` with SN27's row, `abort_allocation`, and the pending and finished
/// releases. Its refusals (a second allocation of one miner, steps out of order) and failures
/// (locked, read-only) keep their type.
impl AllocationStore for ComputeDb {
    fn begin(&self, hotkey: &str, regkey_pem: &str, expires_ms: u64, ssh_key_injected: bool) -> Result<(), StoreError> {
        Ok(self.begin_allocation(hotkey, regkey_pem, expires_ms, ssh_key_injected)?)
    }

    fn commit(&self, hotkey: &str, a: &Allocated) -> Result<(), StoreError> {
        let details = AllocationDetails {
            username: a.username.clone(),
            password: a.password.clone(),
            port: a.port,
            ip: a.ip.clone(),
            resource: a.resource.clone(),
            regkey: a.regkey_pem.clone(),
            version: match &a.version {
                CredentialsVersion::Number(n) => serde_json::Value::from(*n),
                CredentialsVersion::Text(t) => serde_json::Value::from(t.clone()),
            },
            // register_api.py's two keys, for allocations that carry its uuid.
            ssh_key: a.uuid.as_ref().map(|_| a.ssh_key.clone().unwrap_or_default()),
            uuid: a.uuid.clone(),
            external_user_ports: a.external_user_ports.clone(),
            host_key: a.host_key.clone(),
            authenticated: a.authenticated,
        };
        Ok(self.commit_allocation(hotkey, &details)?)
    }

    fn abort(&self, hotkey: &str) -> Result<(), StoreError> {
        self.abort_allocation(hotkey)?;
        Ok(())
    }

    fn mark_pending(&self, hotkey: &str, error: &str) {
        if let Err(e) = self.mark_pending_deallocation(hotkey, error) {
            tracing::error!(hotkey, error = %e, "could not mark the allocation pending");
        }
    }

    fn finish(&self, hotkey: &str) {
        if let Err(e) = self.finish_deallocation(hotkey) {
            tracing::error!(hotkey, error = %e, "could not remove the allocation row");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_follows_the_protocol() {
        let s = MemoryStore::new();
        s.begin("h", "pem", 5, true).expect("begin");
        let again = s.begin("h", "pem", 5, true).expect_err("one row per hotkey");
        assert!(matches!(again, StoreError::AlreadyRecorded { ref state, .. } if *state == RowState::Begun), "{again}");
        assert_eq!(s.get("h").map(|r| r.state), Some(RowState::Begun));
        s.abort("h").expect("abort");
        assert!(s.get("h").is_none());
        s.begin("h", "pem", 5, false).expect("begin");
        s.mark_pending("h", "boom");
        assert_eq!(s.get("h").map(|r| r.state), Some(RowState::Pending("boom".into())));
        let e = s.abort("h").expect_err("a pending row is not dropped by abort");
        assert_eq!(e.to_string(), "the allocation of h is a pending release (boom), not being made");
        s.finish("h");
        assert!(s.rows().is_empty());
        assert!(matches!(s.abort("h"), Ok(())), "nothing to abort");
    }
}
