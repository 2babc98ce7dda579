//! The miner's allocation state, durable in SQLite under `--state-dir`.
//!
//! One row at most: SN27 miners serve one allocation at a time. The row is written *before*
//! the container starts (state `starting`) and flipped to `running` before the renter is
//! answered, so a crash at any point leaves something the next start-up can reconcile: a
//! `starting` row means "remove whatever container carries this allocation id"; a `running` row
//! whose container is gone is cleared; containers of ours with no row are orphans and removed.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS allocation (
    slot INTEGER PRIMARY KEY CHECK (slot = 1),
    allocation_id TEXT NOT NULL,
    key_b64 TEXT NOT NULL,
    container_id TEXT,
    requester TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('starting', 'running'))
);
";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("miner state {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("miner state: {0}")]
    Sql(#[from] rusqlite::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Running,
}

/// The current allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub allocation_id: String,
    /// base64 of the requester's public PEM: the capability to manage or end the allocation.
    pub key_b64: String,
    pub container_id: Option<String>,
    /// SS58 of the hotkey that allocated.
    pub requester: String,
    pub started_ms: u64,
    pub expires_ms: u64,
    pub phase: Phase,
}

#[derive(Debug)]
pub struct StateStore {
    conn: Mutex<Connection>,
}

impl StateStore {
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let err = |source| StateError::Open { path: path.display().to_string(), source };
        let conn = Connection::open(path).map_err(err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn current(&self) -> Result<Option<Allocation>, StateError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT allocation_id, key_b64, container_id, requester, started_ms, expires_ms, state FROM allocation",
                [],
                |r| {
                    let state: String = r.get(6)?;
                    Ok(Allocation {
                        allocation_id: r.get(0)?,
                        key_b64: r.get(1)?,
                        container_id: r.get(2)?,
                        requester: r.get(3)?,
                        started_ms: r.get::<_, i64>(4)? as u64,
                        expires_ms: r.get::<_, i64>(5)? as u64,
                        phase: if state == "running" { Phase::Running } else { Phase::Starting },
                    })
                },
            )
            .optional()?)
    }

    /// Claims the slot for a new allocation; `false` if one exists.
    pub fn begin(&self, a: &Allocation) -> Result<bool, StateError> {
        let n = self.lock().execute(
            "INSERT OR IGNORE INTO allocation (slot, allocation_id, key_b64, container_id, requester, started_ms, expires_ms, state) \
             VALUES (1, ?1, ?2, NULL, ?3, ?4, ?5, 'starting')",
            params![a.allocation_id, a.key_b64, a.requester, a.started_ms as i64, a.expires_ms as i64],
        )?;
        Ok(n == 1)
    }

    /// Marks the allocation running in its container.
    pub fn running(&self, allocation_id: &str, container_id: &str) -> Result<(), StateError> {
        self.lock().execute(
            "UPDATE allocation SET container_id = ?2, state = 'running' WHERE allocation_id = ?1",
            params![allocation_id, container_id],
        )?;
        Ok(())
    }

    /// Ends the allocation (no-op if it is not the current one).
    pub fn clear(&self, allocation_id: &str) -> Result<(), StateError> {
        self.lock().execute("DELETE FROM allocation WHERE allocation_id = ?1", [allocation_id])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(id: &str) -> Allocation {
        Allocation {
            allocation_id: id.into(),
            key_b64: "k".into(),
            container_id: None,
            requester: "5F".into(),
            started_ms: 1,
            expires_ms: 2,
            phase: Phase::Starting,
        }
    }

    #[test]
    fn one_slot_survives_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("miner.sqlite");
        let s = StateStore::open(&path).expect("open");
        assert!(s.begin(&alloc("a")).expect("begin"));
        assert!(!s.begin(&alloc("b")).expect("second"), "one allocation at a time");
        s.running("a", "c1").expect("running");
        drop(s);
        let s = StateStore::open(&path).expect("reopen");
        let cur = s.current().expect("read").expect("row");
        assert_eq!((cur.phase, cur.container_id.as_deref()), (Phase::Running, Some("c1")));
        s.clear("b").expect("clear other");
        assert!(s.current().expect("read").is_some());
        s.clear("a").expect("clear");
        assert!(s.current().expect("read").is_none());
    }
}
