//! The schema: SN27's tables exactly as `compute/utils/db.py` (v1.8.3) creates them, its
//! `miner_details` migration, and our `nc_` tables beside them.
//!
//! Opening never rewrites what is already right. [`inspect`] reads what the file holds and checks
//! that the tables we query have the columns and unique keys our SQL relies on (a table of the
//! same name but another shape is refused, not "fixed"); [`apply`] runs only when something is
//! missing, in one `BEGIN IMMEDIATE` transaction, so a concurrent opener or a crash never sees a
//! half-made schema.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::{classify, DbError, Fail};

/// SN27's tables and indexes, in the order `db.py` creates them. The statements are ours; the
/// tables they make are SN27's, column for column.
const SN27_DDL: &[(&str, &str)] = &[
    ("miner", "CREATE TABLE IF NOT EXISTS miner (uid INTEGER PRIMARY KEY, ss58_address TEXT UNIQUE)"),
    (
        "miner_details",
        "CREATE TABLE IF NOT EXISTS miner_details (id INTEGER PRIMARY KEY, hotkey TEXT UNIQUE, details TEXT, \
         no_specs_count INTEGER DEFAULT 0)",
    ),
    ("tb", "CREATE TABLE IF NOT EXISTS tb (id INTEGER PRIMARY KEY, hotkey TEXT, details TEXT)"),
    (
        "challenge_details",
        "CREATE TABLE IF NOT EXISTS challenge_details (uid INTEGER, ss58_address TEXT, success BOOLEAN, \
         elapsed_time REAL, difficulty INTEGER, created_at TIMESTAMP, \
         FOREIGN KEY (uid) REFERENCES miner(uid) ON DELETE CASCADE, \
         FOREIGN KEY (ss58_address) REFERENCES miner(ss58_address) ON DELETE CASCADE)",
    ),
    ("blacklist", "CREATE TABLE IF NOT EXISTS blacklist (id INTEGER PRIMARY KEY, hotkey TEXT UNIQUE, details TEXT)"),
    ("allocation", "CREATE TABLE IF NOT EXISTS allocation (id INTEGER PRIMARY KEY, hotkey TEXT UNIQUE, details TEXT)"),
    ("idx_uid", "CREATE INDEX IF NOT EXISTS idx_uid ON challenge_details (uid)"),
    ("idx_ss58_address", "CREATE INDEX IF NOT EXISTS idx_ss58_address ON challenge_details (ss58_address)"),
    ("wandb_runs", "CREATE TABLE IF NOT EXISTS wandb_runs (hotkey TEXT PRIMARY KEY, run_id TEXT NOT NULL)"),
    (
        "pog_stats",
        "CREATE TABLE IF NOT EXISTS pog_stats (id INTEGER PRIMARY KEY AUTOINCREMENT, hotkey TEXT, gpu_name TEXT, \
         num_gpus INTEGER, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, \
         FOREIGN KEY (hotkey) REFERENCES miner_details (hotkey) ON DELETE CASCADE)",
    ),
    (
        "stats",
        "CREATE TABLE IF NOT EXISTS stats (uid INTEGER PRIMARY KEY, hotkey TEXT NOT NULL, gpu_specs TEXT, score REAL, \
         allocated BOOLEAN, own_score BOOLEAN, reliability_score REAL, \
         created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, \
         FOREIGN KEY (hotkey) REFERENCES miner_details (hotkey) ON DELETE CASCADE)",
    ),
];

/// Our tables. `nc_allocation_meta` holds one row per allocation we are making, hold, or are
/// releasing; an `allocation` row without one was written by SN27's `register.py` and is active.
const NC_DDL: &[(&str, &str)] = &[
    (
        "nc_allocation_meta",
        "CREATE TABLE IF NOT EXISTS nc_allocation_meta (
            hotkey TEXT PRIMARY KEY,
            state TEXT NOT NULL CHECK (state IN ('allocating', 'active', 'pending_deallocation')),
            regkey TEXT,
            key_fingerprint TEXT,
            ssh_key_injected INTEGER,
            created_ms INTEGER,
            expires_ms INTEGER,
            last_error TEXT,
            updated_ms INTEGER
        )",
    ),
    (
        "nc_miner_seen",
        "CREATE TABLE IF NOT EXISTS nc_miner_seen (
            hotkey TEXT PRIMARY KEY,
            last_seen_ms INTEGER,
            specs_updated_ms INTEGER,
            last_error TEXT,
            last_failure_ms INTEGER,
            failures INTEGER NOT NULL DEFAULT 0
        )",
    ),
    (
        "nc_allocation_claim",
        "CREATE TABLE IF NOT EXISTS nc_allocation_claim (
            hotkey TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            pid INTEGER,
            until_ms INTEGER NOT NULL
        )",
    ),
    (
        "nc_api_token",
        "CREATE TABLE IF NOT EXISTS nc_api_token (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            scope TEXT NOT NULL,
            secret_sha256 TEXT NOT NULL UNIQUE,
            created_ms INTEGER NOT NULL,
            revoked_ms INTEGER
        )",
    ),
    (
        "nc_api_allocation",
        "CREATE TABLE IF NOT EXISTS nc_api_allocation (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            hotkey TEXT,
            state TEXT NOT NULL CHECK (state IN ('allocating', 'active', 'failed', 'releasing', 'released')),
            request TEXT NOT NULL,
            error TEXT,
            credentials_shown INTEGER NOT NULL DEFAULT 0,
            created_ms INTEGER NOT NULL,
            updated_ms INTEGER NOT NULL
        )",
    ),
    (
        "idx_nc_api_allocation_owner",
        "CREATE INDEX IF NOT EXISTS idx_nc_api_allocation_owner ON nc_api_allocation (owner)",
    ),
    (
        "nc_allocation_health",
        "CREATE TABLE IF NOT EXISTS nc_allocation_health (
            hotkey TEXT PRIMARY KEY,
            status TEXT NOT NULL CHECK (status IN ('ONLINE', 'OFFLINE')),
            failures INTEGER NOT NULL DEFAULT 0,
            last_check_ms INTEGER,
            changed_ms INTEGER,
            expiring_sent_for INTEGER
        )",
    ),
    (
        "nc_webhook_outbox",
        "CREATE TABLE IF NOT EXISTS nc_webhook_outbox (
            id INTEGER PRIMARY KEY,
            event_id TEXT NOT NULL,
            event TEXT NOT NULL,
            url TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_ms INTEGER NOT NULL,
            last_error TEXT,
            created_ms INTEGER NOT NULL,
            delivered_ms INTEGER
        )",
    ),
    (
        "idx_nc_webhook_outbox_due",
        "CREATE INDEX IF NOT EXISTS idx_nc_webhook_outbox_due ON nc_webhook_outbox (state, next_ms)",
    ),
    (
        "nc_miner_auth",
        "CREATE TABLE IF NOT EXISTS nc_miner_auth (
            hotkey TEXT PRIMARY KEY,
            first_signed_ms INTEGER NOT NULL,
            last_signed_ms INTEGER NOT NULL
        )",
    ),
    (
        "nc_wandb_publication",
        "CREATE TABLE IF NOT EXISTS nc_wandb_publication (
            list TEXT PRIMARY KEY CHECK (list IN ('allocated', 'penalized')),
            pending INTEGER NOT NULL DEFAULT 0,
            last_attempt_ms INTEGER,
            last_success_ms INTEGER,
            last_error TEXT
        )",
    ),
];

/// The columns our SQL reads or writes in each table, and whether `hotkey` must be unique (our
/// upserts say `ON CONFLICT(hotkey)`). `miner_details.no_specs_count` is absent on purpose: its
/// absence is what the migration repairs.
const SHAPES: &[(&str, &[&str], bool)] = &[
    ("miner_details", &["id", "hotkey", "details"], false),
    ("allocation", &["id", "hotkey", "details"], true),
    ("blacklist", &["id", "hotkey"], true),
    (
        "nc_allocation_meta",
        &[
            "hotkey",
            "state",
            "regkey",
            "key_fingerprint",
            "ssh_key_injected",
            "created_ms",
            "expires_ms",
            "last_error",
            "updated_ms",
        ],
        true,
    ),
    (
        "nc_miner_seen",
        &["hotkey", "last_seen_ms", "specs_updated_ms", "last_error", "last_failure_ms", "failures"],
        true,
    ),
];

/// What the file holds compared with what we need.
#[derive(Debug)]
pub(super) struct Plan {
    /// The file already has tables of its own (it is not a new database).
    pub has_tables: bool,
    /// Names from [`SN27_DDL`] and [`NC_DDL`] that are absent.
    pub missing: Vec<&'static str>,
    /// `miner_details` lacks `no_specs_count` or a unique index on `hotkey` (SN27's rule).
    pub migrate_miner_details: bool,
    /// `miner_details` already has `no_specs_count` (then the migration keeps its values).
    pub miner_details_has_count: bool,
}

impl Plan {
    pub fn needs_change(&self) -> bool {
        !self.missing.is_empty() || self.migrate_miner_details
    }
}

/// Reads the schema (nothing is written) and checks the shape of the tables we use.
pub(super) fn inspect(conn: &Connection, path: &Path) -> Result<Plan, DbError> {
    // One read transaction for the twenty-odd statements: one snapshot, and one round of WAL
    // read locks instead of one per statement (every cold command opens the database).
    let read = || -> Result<Plan, Fail> {
        if !conn.is_autocommit() {
            // Already inside the caller's transaction (the migration re-reads the schema).
            return inspect_inner(conn, path);
        }
        let tx = conn.unchecked_transaction()?;
        let plan = inspect_inner(&tx, path)?;
        tx.commit()?;
        Ok(plan)
    };
    read().map_err(|f| match f {
        Fail::Sql(e) => classify(path, e),
        Fail::Db(e) => e,
    })
}

fn inspect_inner(conn: &Connection, path: &Path) -> Result<Plan, Fail> {
    let mut stmt = conn.prepare("SELECT lower(name) FROM sqlite_master WHERE type IN ('table', 'index')")?;
    let names: HashSet<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let has_tables = !names.is_empty();
    let missing: Vec<&'static str> =
        SN27_DDL.iter().chain(NC_DDL).map(|(name, _)| *name).filter(|name| !names.contains(*name)).collect();

    for (table, required, unique_hotkey) in SHAPES {
        if !names.contains(*table) {
            continue;
        }
        let columns = columns(conn, table)?;
        let absent: Vec<&str> = required.iter().copied().filter(|c| !columns.contains(*c)).collect();
        if !absent.is_empty() {
            return Err(incompatible(path, table, format!("no column {}", absent.join(", "))).into());
        }
        if *unique_hotkey && !unique_on_hotkey(conn, table)? {
            return Err(incompatible(path, table, "`hotkey` is not unique".into()).into());
        }
    }

    let (migrate_miner_details, miner_details_has_count) = if names.contains("miner_details") {
        let has_count = columns(conn, "miner_details")?.contains("no_specs_count");
        (!has_count || !unique_on_hotkey(conn, "miner_details")?, has_count)
    } else {
        (false, false)
    };
    Ok(Plan { has_tables, missing, migrate_miner_details, miner_details_has_count })
}

fn incompatible(path: &Path, table: &str, detail: String) -> DbError {
    DbError::Incompatible { path: path.to_path_buf(), table: table.to_string(), detail }
}

fn columns(conn: &Connection, table: &str) -> rusqlite::Result<HashSet<String>> {
    let mut stmt = conn.prepare("SELECT lower(name) FROM pragma_table_info(?1)")?;
    let names = stmt.query_map([table], |r| r.get(0))?.collect::<rusqlite::Result<HashSet<String>>>()?;
    Ok(names)
}

/// Whether a unique, non-partial index covers exactly the `hotkey` column (a `UNIQUE` or
/// `PRIMARY KEY` constraint creates one). SN27's own check compares `PRAGMA index_list`'s
/// `origin` column with 0, which is never true, so SN27 rebuilds `miner_details` on every specs
/// update; we check the `unique` flag it meant.
fn unique_on_hotkey(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    let mut list = conn.prepare("SELECT name FROM pragma_index_list(?1) WHERE \"unique\" = 1 AND partial = 0")?;
    let indexes: Vec<String> = list.query_map([table], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let mut info = conn.prepare("SELECT lower(name) FROM pragma_index_info(?1)")?;
    for index in indexes {
        let cols: Vec<Option<String>> = info.query_map([&index], |r| r.get(0))?.collect::<Result<_, _>>()?;
        if cols == [Some("hotkey".to_string())] {
            return Ok(true);
        }
    }
    Ok(false)
}

/// SQLite's quick integrity check: run before we add tables to a file we did not create, so a
/// corrupt database is refused rather than written to.
pub(super) fn quick_check(conn: &Connection, path: &Path) -> Result<(), DbError> {
    let verdict: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0)).map_err(|e| classify(path, e))?;
    if verdict == "ok" {
        Ok(())
    } else {
        tracing::warn!(path = %path.display(), verdict = %verdict, "database: integrity check failed");
        Err(DbError::NotADatabase { path: path.to_path_buf() })
    }
}

/// Creates what is missing and migrates `miner_details`, in one transaction. The plan is made
/// again under the write lock: another process may have done the work meanwhile.
pub(super) fn apply(conn: &mut Connection, path: &Path) -> Result<(), DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| classify(path, e))?;
    let plan = inspect(&tx, path)?;
    let run = || -> rusqlite::Result<()> {
        if plan.migrate_miner_details {
            migrate_miner_details(&tx, plan.miner_details_has_count)?;
        }
        for (_, ddl) in SN27_DDL.iter().chain(NC_DDL) {
            tx.execute_batch(ddl)?;
        }
        Ok(())
    };
    run().map_err(|e| classify(path, e))?;
    tx.commit().map_err(|e| classify(path, e))?;
    if plan.migrate_miner_details {
        tracing::info!(path = %path.display(), "database: migrated miner_details to SN27's current shape");
    }
    Ok(())
}

/// SN27's migration (`update_miner_details` in `neurons/Validator/database/allocate.py`): a new
/// table with `hotkey UNIQUE` and `no_specs_count`, the rows copied, the old table dropped, the
/// new one renamed. Differences, on purpose: it is one transaction (SN27's DDL autocommits), an
/// existing `no_specs_count` is kept rather than reset, and where an old table without the
/// unique index holds one hotkey twice the row with the highest id wins (SN27's copy would fail
/// and leave the table unmigrated). Our scratch table has a name of our own so that a
/// `new_miner_details` left by an interrupted SN27 migration is not touched.
fn migrate_miner_details(tx: &Connection, has_count: bool) -> rusqlite::Result<()> {
    tx.execute_batch(
        "DROP TABLE IF EXISTS nc_miner_details_migration;
         CREATE TABLE nc_miner_details_migration (id INTEGER PRIMARY KEY, hotkey TEXT UNIQUE, details TEXT, \
         no_specs_count INTEGER DEFAULT 0);",
    )?;
    tx.execute_batch(if has_count {
        "INSERT OR REPLACE INTO nc_miner_details_migration (id, hotkey, details, no_specs_count)
         SELECT id, hotkey, details, COALESCE(no_specs_count, 0) FROM miner_details ORDER BY id;"
    } else {
        "INSERT OR REPLACE INTO nc_miner_details_migration (id, hotkey, details)
         SELECT id, hotkey, details FROM miner_details ORDER BY id;"
    })?;
    tx.execute_batch(
        "DROP TABLE miner_details;
         ALTER TABLE nc_miner_details_migration RENAME TO miner_details;",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn_with(sql: &str) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(sql).unwrap();
        conn
    }

    #[test]
    fn a_new_database_needs_every_table() {
        let conn = conn_with("");
        let plan = inspect(&conn, Path::new("x.db")).unwrap();
        assert!(!plan.has_tables);
        assert_eq!(plan.missing.len(), SN27_DDL.len() + NC_DDL.len());
        assert!(!plan.migrate_miner_details);
    }

    #[test]
    fn the_unique_hotkey_check_reads_the_unique_flag() {
        let conn = conn_with(
            "CREATE TABLE a (id INTEGER PRIMARY KEY, hotkey TEXT UNIQUE);
             CREATE TABLE b (id INTEGER PRIMARY KEY, hotkey TEXT);
             CREATE INDEX b_hotkey ON b (hotkey);
             CREATE TABLE c (id INTEGER PRIMARY KEY, hotkey TEXT, x TEXT, UNIQUE (hotkey, x));
             CREATE TABLE d (hotkey TEXT PRIMARY KEY);",
        );
        assert!(unique_on_hotkey(&conn, "a").unwrap());
        assert!(!unique_on_hotkey(&conn, "b").unwrap(), "a plain index is not unique");
        assert!(!unique_on_hotkey(&conn, "c").unwrap(), "unique over two columns does not make hotkey unique");
        assert!(unique_on_hotkey(&conn, "d").unwrap());
    }

    #[test]
    fn a_table_of_another_shape_is_refused() {
        let conn = conn_with("CREATE TABLE allocation (id INTEGER PRIMARY KEY, hotkey TEXT UNIQUE)");
        let err = inspect(&conn, Path::new("v.db")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "v.db: table `allocation` is not shaped like SN27's (no column details); nothing was changed"
        );
        let conn = conn_with("CREATE TABLE blacklist (id INTEGER PRIMARY KEY, hotkey TEXT, details TEXT)");
        assert!(matches!(inspect(&conn, Path::new("v.db")), Err(DbError::Incompatible { .. })));
    }

    #[test]
    fn the_current_miner_details_is_not_migrated() {
        let conn = conn_with(SN27_DDL[1].1);
        let plan = inspect(&conn, Path::new("x.db")).unwrap();
        assert!(!plan.migrate_miner_details);
        assert!(plan.has_tables);
    }
}
