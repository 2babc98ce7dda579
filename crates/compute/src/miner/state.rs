//! The miner's allocation state, durable in SQLite under `--state-dir`.
//!
//! One row at most: SN27 miners serve one allocation at a time. The row is written *before*
//! the container starts (state `starting`) and flipped to `running` before the renter is
//! answered, so a crash at any point leaves something the next start-up can reconcile: a
//! `starting` row means "remove whatever container carries this allocation id"; a `running` row
//! whose container is gone is cleared; containers of ours with no row are orphans and removed.
//!
//! The same file keeps the axon's replay state ([`SqliteReplayJournal`]): the last nonce per
//! caller lane, so a request captured before a restart is refused after it.

use std::path::Path;
use std::sync::Mutex;

use bittensor::axon::{ReplayBatch, ReplayJournal, ReplaySnapshot, SavedLane};
use bittensor::AccountId;
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
    state TEXT NOT NULL CHECK (state IN ('starting', 'running')),
    host_key TEXT
);
CREATE TABLE IF NOT EXISTS axon_nonces (
    hotkey BLOB NOT NULL,
    lane INTEGER NOT NULL,
    nonce INTEGER NOT NULL,
    PRIMARY KEY (hotkey, lane)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS axon_nonces_by_nonce ON axon_nonces (nonce);
CREATE TABLE IF NOT EXISTS axon_replay_meta (
    slot INTEGER PRIMARY KEY CHECK (slot = 1),
    saved_at_ns INTEGER NOT NULL,
    clean INTEGER NOT NULL
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
    /// The SSH host key (OpenSSH public key line) the allocation's machine presents: signed in
    /// answers to nicompute renters, who pin it.
    pub host_key: Option<String>,
}

#[derive(Debug)]
pub struct StateStore {
    conn: Mutex<Connection>,
}

/// Opens the state file (created 0600) with the schema, `synchronous` as given.
fn open_db(path: &Path, synchronous: &str) -> Result<Connection, StateError> {
    let err = |source| StateError::Open { path: path.display().to_string(), source };
    let conn = Connection::open(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
    conn.pragma_update(None, "synchronous", synchronous).map_err(err)?;
    conn.execute_batch(SCHEMA).map_err(err)?;
    // State files written before host keys were kept have no column for one.
    let has_host_key: bool = conn
        .query_row("SELECT count(*) FROM pragma_table_info('allocation') WHERE name = 'host_key'", [], |r| r.get(0))
        .map_err(err)?;
    if !has_host_key {
        conn.execute_batch("ALTER TABLE allocation ADD COLUMN host_key TEXT").map_err(err)?;
    }
    Ok(conn)
}

impl StateStore {
    pub fn open(path: &Path) -> Result<Self, StateError> {
        Ok(Self { conn: Mutex::new(open_db(path, "FULL")?) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn current(&self) -> Result<Option<Allocation>, StateError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT allocation_id, key_b64, container_id, requester, started_ms, expires_ms, state, host_key \
                 FROM allocation",
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
                        host_key: r.get(7)?,
                    })
                },
            )
            .optional()?)
    }

    /// Claims the slot for a new allocation; `false` if one exists.
    pub fn begin(&self, a: &Allocation) -> Result<bool, StateError> {
        let n = self.lock().execute(
            "INSERT OR IGNORE INTO allocation (slot, allocation_id, key_b64, container_id, requester, started_ms, \
             expires_ms, state, host_key) VALUES (1, ?1, ?2, NULL, ?3, ?4, ?5, 'starting', ?6)",
            params![a.allocation_id, a.key_b64, a.requester, a.started_ms as i64, a.expires_ms as i64, a.host_key],
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

/// The axon's replay state in the miner's state file, on its own connection so a save never
/// waits behind an allocation. Saves run ten times a second, so they are `synchronous=NORMAL`:
/// durable across a crash of the miner (WAL), possibly not across a power loss.
#[derive(Debug)]
pub struct SqliteReplayJournal {
    conn: Mutex<Connection>,
}

impl SqliteReplayJournal {
    pub fn open(path: &Path) -> Result<Self, StateError> {
        Ok(Self { conn: Mutex::new(open_db(path, "NORMAL")?) })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Nonces are at most 30 s ahead of the clock (the axon refuses later ones), far below 2^63.
fn sql_u64(v: u64) -> Result<i64, BoxError> {
    i64::try_from(v).map_err(|_| format!("value {v} does not fit the replay table").into())
}

impl ReplayJournal for SqliteReplayJournal {
    fn load(&self) -> Result<ReplaySnapshot, BoxError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn.prepare("SELECT hotkey, lane, nonce FROM axon_nonces")?;
        let rows = stmt.query_map([], |r| {
            let hotkey: Vec<u8> = r.get(0)?;
            Ok((hotkey, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })?;
        let mut lanes = Vec::new();
        for row in rows {
            let (hotkey, lane, nonce) = row?;
            let (Ok(hotkey), Ok(lane), Ok(nonce)) =
                (<[u8; 32]>::try_from(hotkey), u64::try_from(lane), u64::try_from(nonce))
            else {
                continue;
            };
            lanes.push(SavedLane { hotkey: AccountId(hotkey), lane, nonce });
        }
        let meta = conn
            .query_row("SELECT saved_at_ns, clean FROM axon_replay_meta", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, bool>(1)?))
            })
            .optional()?;
        Ok(ReplaySnapshot {
            lanes,
            saved_at_ns: meta.map(|(at, _)| at.max(0) as u64),
            clean: meta.is_some_and(|(_, clean)| clean),
        })
    }

    fn save(&self, b: &ReplayBatch) -> Result<(), BoxError> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction()?;
        {
            let mut up = tx.prepare_cached(
                "INSERT INTO axon_nonces (hotkey, lane, nonce) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (hotkey, lane) DO UPDATE SET nonce = excluded.nonce",
            )?;
            for l in &b.upserts {
                up.execute(params![&l.hotkey.0[..], sql_u64(l.lane)?, sql_u64(l.nonce)?])?;
            }
            let mut del = tx.prepare_cached("DELETE FROM axon_nonces WHERE hotkey = ?1 AND lane = ?2")?;
            for (hotkey, lane) in &b.deletes {
                del.execute(params![&hotkey.0[..], sql_u64(*lane)?])?;
            }
        }
        tx.execute("DELETE FROM axon_nonces WHERE nonce <= ?1", [sql_u64(b.forget_through_ns)?])?;
        tx.execute(
            "INSERT INTO axon_replay_meta (slot, saved_at_ns, clean) VALUES (1, ?1, ?2) \
             ON CONFLICT (slot) DO UPDATE SET saved_at_ns = excluded.saved_at_ns, clean = excluded.clean",
            params![sql_u64(b.now_ns)?, b.clean],
        )?;
        tx.commit()?;
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
            host_key: Some("ssh-ed25519 AAAA".into()),
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
        assert_eq!(cur.host_key.as_deref(), Some("ssh-ed25519 AAAA"));
        s.clear("b").expect("clear other");
        assert!(s.current().expect("read").is_some());
        s.clear("a").expect("clear");
        assert!(s.current().expect("read").is_none());
    }

    #[test]
    fn a_state_file_from_before_host_keys_opens() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("miner.sqlite");
        let old = Connection::open(&path).expect("old file");
        old.execute_batch(
            "CREATE TABLE allocation (slot INTEGER PRIMARY KEY CHECK (slot = 1), allocation_id TEXT NOT NULL, \
             key_b64 TEXT NOT NULL, container_id TEXT, requester TEXT NOT NULL, started_ms INTEGER NOT NULL, \
             expires_ms INTEGER NOT NULL, state TEXT NOT NULL CHECK (state IN ('starting', 'running'))); \
             INSERT INTO allocation VALUES (1, 'a', 'k', 'c', '5F', 1, 2, 'running');",
        )
        .expect("old schema");
        drop(old);
        let s = StateStore::open(&path).expect("migrated");
        let cur = s.current().expect("read").expect("row kept");
        assert_eq!((cur.allocation_id.as_str(), cur.host_key), ("a", None));
    }

    #[test]
    fn replay_journal_round_trips_and_forgets_old_nonces() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("miner.sqlite");
        let _alloc = StateStore::open(&path).expect("allocation state beside it");
        let j = SqliteReplayJournal::open(&path).expect("open");
        let empty = j.load().expect("load");
        assert!(empty.lanes.is_empty() && empty.saved_at_ns.is_none() && !empty.clean);
        let (a, b) = (AccountId([1; 32]), AccountId([2; 32]));
        let lane = |hotkey, lane, nonce| SavedLane { hotkey, lane, nonce };
        j.save(&ReplayBatch {
            upserts: vec![lane(a, 7, 100), lane(a, 8, 300), lane(b, 7, 200), lane(b, 9, 50)],
            deletes: vec![(b, 9)],
            forget_through_ns: 0,
            now_ns: 1_000,
            clean: false,
        })
        .expect("save");
        j.save(&ReplayBatch {
            upserts: vec![lane(a, 7, 400)],
            deletes: vec![],
            forget_through_ns: 250,
            now_ns: 2_000,
            clean: true,
        })
        .expect("save again");
        drop(j);
        let snap = SqliteReplayJournal::open(&path).expect("reopen").load().expect("load");
        let mut got: Vec<_> = snap.lanes.iter().map(|l| (l.hotkey.0[0], l.lane, l.nonce)).collect();
        got.sort();
        assert_eq!(got, vec![(1, 7, 400), (1, 8, 300)], "updated, deleted, forgotten below 250");
        assert_eq!((snap.saved_at_ns, snap.clean), (Some(2_000), true));
    }
}
