//! `compute::db::ComputeDb` against SN27's own `database.db`: files made with the subnet's DDL and
//! rows as its Python writes them are read correctly and left byte-identical; the old
//! `miner_details` is migrated; allocation states, the specs failure rule and the blacklist behave;
//! two processes' worth of connections share the file; bad files are refused untouched.

// Helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use compute::db::{
    key_fingerprint, AllocationDetails, AllocationState, ComputeDb, DbError, SyncOutcome, NO_SPECS_LIMIT,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::Connection;
use secrecy::{ExposeSecret, SecretString};

/// `compute/utils/db.py` `ComputeDb.init()` at neuralinternet/compute-subnet v1.8.3, statement
/// for statement, whitespace included (Python hands these strings to SQLite as they are).
const SN27_INIT: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS miner (uid INTEGER PRIMARY KEY, ss58_address TEXT UNIQUE)",
    "CREATE TABLE IF NOT EXISTS miner_details (id INTEGER PRIMARY KEY, hotkey TEXT UNIQUE, details TEXT, no_specs_count INTEGER DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS tb (id INTEGER PRIMARY KEY, hotkey TEXT, details TEXT)",
    "
                CREATE TABLE IF NOT EXISTS challenge_details (
                    uid INTEGER,
                    ss58_address TEXT,
                    success BOOLEAN,
                    elapsed_time REAL,
                    difficulty INTEGER,
                    created_at TIMESTAMP,
                    FOREIGN KEY (uid) REFERENCES miner(uid) ON DELETE CASCADE,
                    FOREIGN KEY (ss58_address) REFERENCES miner(ss58_address) ON DELETE CASCADE
                )
            ",
    "CREATE TABLE IF NOT EXISTS blacklist (id INTEGER PRIMARY KEY, hotkey TEXT UNIQUE, details TEXT)",
    "CREATE TABLE IF NOT EXISTS allocation (id INTEGER PRIMARY KEY, hotkey TEXT UNIQUE, details TEXT)",
    "CREATE INDEX IF NOT EXISTS idx_uid ON challenge_details (uid)",
    "CREATE INDEX IF NOT EXISTS idx_ss58_address ON challenge_details (ss58_address)",
    "CREATE TABLE IF NOT EXISTS wandb_runs (hotkey TEXT PRIMARY KEY, run_id TEXT NOT NULL)",
    "
                CREATE TABLE IF NOT EXISTS pog_stats (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    hotkey TEXT,
                    gpu_name TEXT,
                    num_gpus INTEGER,
                    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                    FOREIGN KEY (hotkey) REFERENCES miner_details (hotkey) ON DELETE CASCADE
                )
            ",
    "
                CREATE TABLE IF NOT EXISTS stats (
                    uid INTEGER PRIMARY KEY,
                    hotkey TEXT NOT NULL,
                    gpu_specs TEXT,
                    score REAL,
                    allocated BOOLEAN,
                    own_score BOOLEAN,
                    reliability_score REAL,  -- Optional reliability score
                    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                    FOREIGN KEY (hotkey) REFERENCES miner_details (hotkey) ON DELETE CASCADE
                )
                ",
];

/// `compute/utils/db.py` before v1.3.11 (commit 51d3dca^): `miner_details` without
/// `no_specs_count` and without a unique hotkey; no allocation or blacklist tables yet.
const SN27_INIT_OLD: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS miner (uid INTEGER PRIMARY KEY, ss58_address TEXT UNIQUE)",
    "CREATE TABLE IF NOT EXISTS miner_details (id INTEGER PRIMARY KEY, hotkey TEXT, details TEXT)",
    "CREATE TABLE IF NOT EXISTS tb (id INTEGER PRIMARY KEY, hotkey TEXT, details TEXT)",
    SN27_INIT[3],
    "CREATE INDEX IF NOT EXISTS idx_uid ON challenge_details (uid)",
    "CREATE INDEX IF NOT EXISTS idx_ss58_address ON challenge_details (ss58_address)",
];

/// SN27's tables, whose rows we must never change by opening a file.
const SN27_TABLES: &[&str] = &[
    "miner",
    "miner_details",
    "tb",
    "challenge_details",
    "blacklist",
    "allocation",
    "wandb_runs",
    "pog_stats",
    "stats",
];

/// SN27 v1.8.3's specs upsert (`update_miner_details`, a miner that answered).
const SN27_SPECS_UPSERT: &str = "
                    INSERT INTO miner_details (hotkey, details, no_specs_count)
                    VALUES (?, ?, 0)
                    ON CONFLICT(hotkey) DO UPDATE SET
                        details = excluded.details,
                        no_specs_count = 0;
                ";

/// SN27 v1.8.3's `update_allocation_db(hotkey, info, True)`.
const SN27_ALLOCATION_UPSERT: &str = "
                INSERT INTO allocation (hotkey, details)
                VALUES (?, ?) ON CONFLICT(hotkey) DO UPDATE SET
                details=excluded.details
            ";

/// SN27 v1.8.3's `update_blacklist_db(hotkeys, True)`.
const SN27_BLACKLIST_INSERT: &str = "
                INSERT INTO blacklist (hotkey)
                VALUES (?) ON CONFLICT(hotkey) DO NOTHING
            ";

/// The public key of `tests/fixtures/rsa` (made by the subnet's `RSAEncryption.py`).
const REGKEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtLZnVp9WYUSJAs+KpkE2
j8ahJRLgM2/80RcECqpCNo3CxTmkF7XAmpv5lW5KuO229Gc33nK4FY8OXPjKe1+6
jH/K72m5u5Kn2d09Guf0WEG1Se23QIz++DC8XC2RsaTuJE6uqUetchTQTNWDnsrp
GezSbZyBDigtDp9Ukyp0rEa1ZgGBSpTOjo7mzeBxkuJhwkSUx3DkF95uSBs7Ik0Y
t8gGc038MS4Ecj8zs9GN2rNEQ3uxJRvrEca4d9z+JgWWPYRBqiZ3t3P4nX7YHh6U
EXbTdPQLSzrkFEPc3v8L1mod4Y9mMC2p7A+pvho8RVYDFSTHZz/CwllE9H4NBh2N
GwIDAQAB
-----END PUBLIC KEY-----
";

/// Specs as the Python miner's `get_perf_info()` builds them and `json.dumps` writes them
/// (GPUtil reports memory as floats; psutil sizes are ints; speeds are measured floats).
const H100_SPECS: &str = r#"{"cpu": {"count": 52, "frequency": 2000.0}, "gpu": {"count": 1, "capacity": 81559.0, "details": [{"name": "NVIDIA H100 80GB HBM3", "capacity": 81559.0}], "graphics_speed": 1980, "memory_speed": 2619}, "hard_disk": {"total": 1967317618688, "free": 1650237771776, "used": 217047355392, "write_speed": 1612.9032258064517, "read_speed": 7142.857142857143}, "ram": {"total": 2163764801536, "available": 2088145506304, "used": 62379982848, "free": 1473012482048, "swap_total": 0, "swap_used": 0, "swap_free": 0, "read_speed": 33333.333333333336, "write_speed": 2564.102564102564}, "has_docker": true}"#;

const MINER_HOTKEY: &str = "5DAAnrj7VHTznn2AWBemMuyBwZWs6FNFjdyVXUeYum3PTXFy";
const MINER2_HOTKEY: &str = "5HGjWAeFDfFCWPsjFQdVV2Msvz2XtMktvgocEZcCj68kUMaw";
const PENALIZED_HOTKEY: &str = "5FLSigC9HGRKVhB9FiEo4Y3koPsNmBmLJbpXg2mp1hXcS59Y";

/// The JSON `register.py` stores: the miner's `{"username","password","port","version"}` with
/// `ip`, `resource` and `regkey` added, through `json.dumps`.
fn sn27_allocation_json(password: &str, regkey: &str) -> String {
    format!(
        r#"{{"username": "root", "password": "{password}", "port": 4444, "version": 183, "ip": "203.0.113.7", "resource": "nvidia h100 80gb hbm3", "regkey": "{}"}}"#,
        regkey.replace('\n', "\\n")
    )
}

fn sn27_database(path: &Path) {
    let conn = Connection::open(path).unwrap();
    for ddl in SN27_INIT {
        conn.execute(ddl, []).unwrap();
    }
    conn.execute(SN27_SPECS_UPSERT, [MINER_HOTKEY, H100_SPECS]).unwrap();
    conn.execute(SN27_SPECS_UPSERT, [MINER2_HOTKEY, "{}"]).unwrap();
    conn.execute(SN27_ALLOCATION_UPSERT, [MINER_HOTKEY, &sn27_allocation_json("Xk29fLq0Zp", REGKEY)]).unwrap();
    conn.execute(SN27_BLACKLIST_INSERT, [PENALIZED_HOTKEY]).unwrap();
    // Rows of the validator's own tables, which we never touch.
    conn.execute("INSERT INTO miner (uid, ss58_address) VALUES (?, ?)", rusqlite::params![12, MINER_HOTKEY]).unwrap();
    conn.execute(
        "INSERT INTO challenge_details (uid, ss58_address, success, elapsed_time, difficulty, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
        rusqlite::params![12, MINER_HOTKEY, true, 1.25, 6, "2025-03-01 10:00:00"],
    )
    .unwrap();
    conn.execute("INSERT INTO wandb_runs (hotkey, run_id) VALUES (?, ?)", ["5Grwva", "vali0001"]).unwrap();
    conn.execute(
        "INSERT INTO pog_stats (hotkey, gpu_name, num_gpus) VALUES (?, ?, ?)",
        rusqlite::params![MINER_HOTKEY, "NVIDIA H100 80GB HBM3", 1],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO stats (uid, hotkey, gpu_specs, score, allocated, own_score, reliability_score) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        rusqlite::params![
            12,
            MINER_HOTKEY,
            "{\"gpu_name\": \"NVIDIA H100 80GB HBM3\", \"num_gpus\": 1}",
            0.5,
            true,
            true,
            0.98
        ],
    )
    .unwrap();
    conn.execute("INSERT INTO tb (hotkey, details) VALUES (?, ?)", [MINER_HOTKEY, "x"]).unwrap();
}

type Dump = BTreeMap<String, (Option<String>, Vec<Vec<String>>)>;

/// Every SN27 table's DDL as stored and its rows, each value with its SQLite type.
fn dump(path: &Path, tables: &[&str]) -> Dump {
    let conn = Connection::open(path).unwrap();
    let mut out = Dump::new();
    for table in tables {
        let sql: Option<String> =
            conn.query_row("SELECT sql FROM sqlite_master WHERE name = ?", [table], |r| r.get(0)).unwrap_or(None);
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY rowid")).unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| (0..n).map(|i| r.get::<_, SqlValue>(i).map(|v| format!("{v:?}"))).collect())
            .unwrap()
            .collect::<Result<Vec<Vec<String>>, _>>()
            .unwrap();
        out.insert(table.to_string(), (sql, rows));
    }
    out
}

fn details(regkey: &str, password: &str) -> AllocationDetails {
    AllocationDetails {
        username: "root".into(),
        password: SecretString::from(password),
        port: 4444,
        ip: "198.51.100.9".into(),
        resource: "nvidia rtx 4090".into(),
        regkey: regkey.into(),
        version: serde_json::json!(183),
        ssh_key: None,
        uuid: None,
        external_user_ports: None,
        host_key: None,
        authenticated: false,
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn side(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

#[test]
fn sn27_database_is_read_correctly_and_its_rows_stay_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database.db");
    sn27_database(&path);
    let before = dump(&path, SN27_TABLES);

    let db = ComputeDb::open(&path).unwrap();
    let miners = db.miner_details().unwrap();
    assert_eq!(miners.len(), 2);
    let h100 = &miners[0];
    assert_eq!((h100.id, h100.hotkey.as_str(), h100.no_specs_count), (1, MINER_HOTKEY, 0));
    assert_eq!(h100.details_raw.as_deref(), Some(H100_SPECS));
    let specs = h100.specs.as_ref().expect("SN27's specs JSON parses");
    assert_eq!((specs.cpu.count, specs.gpu.count, specs.gpu.capacity), (52, 1, 81559));
    assert_eq!(specs.gpu.details[0].name, "NVIDIA H100 80GB HBM3");
    assert_eq!(specs.ram.available, 2088145506304);
    assert!(specs.has_docker);
    assert_eq!((h100.last_seen_ms, h100.specs_updated_ms), (None, None), "SN27 rows carry no liveness");
    assert_eq!(miners[1].specs, None, "`{{}}` means no specs");

    let allocations = db.allocations().unwrap();
    assert_eq!(allocations.len(), 1);
    let a = &allocations[0];
    assert_eq!((a.id, a.hotkey.as_str(), a.state), (1, MINER_HOTKEY, AllocationState::Active));
    let d = a.details.as_ref().expect("SN27's allocation JSON parses");
    assert_eq!((d.username.as_str(), d.password.expose_secret(), d.port), ("root", "Xk29fLq0Zp", 4444));
    assert_eq!(
        (d.ip.as_str(), d.resource.as_str(), d.regkey.as_str()),
        ("203.0.113.7", "nvidia h100 80gb hbm3", REGKEY)
    );
    assert_eq!(d.version, serde_json::json!(183));
    assert_eq!(d.to_json(), sn27_allocation_json("Xk29fLq0Zp", REGKEY), "we would write the same bytes");
    assert_eq!(a.regkey.as_deref(), Some(REGKEY));
    assert_eq!(a.key_fingerprint, Some(key_fingerprint(REGKEY)));
    assert_eq!((a.created_ms, a.expires_ms), (None, None));
    assert_eq!(db.allocation(MINER_HOTKEY).unwrap().map(|r| r.id), Some(1));
    assert_eq!(db.penalized().unwrap(), [PENALIZED_HOTKEY]);
    assert!(db.interrupted().unwrap().is_empty());
    drop(db);

    assert_eq!(dump(&path, SN27_TABLES), before, "opening must not change SN27's schema or rows");
    // Opening again (schema complete: nothing to do) changes nothing either.
    drop(ComputeDb::open(&path).unwrap());
    assert_eq!(dump(&path, SN27_TABLES), before);

    // SN27's validator still works on the file: its init is a no-op and its writes succeed.
    let conn = Connection::open(&path).unwrap();
    for ddl in SN27_INIT {
        conn.execute(ddl, []).unwrap();
    }
    conn.execute(SN27_SPECS_UPSERT, [MINER2_HOTKEY, H100_SPECS]).unwrap();
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
}

#[test]
fn a_new_database_has_sn27s_schema() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("new").join("database.db");
    drop(ComputeDb::open(&ours).unwrap());
    let theirs = dir.path().join("sn27.db");
    let conn = Connection::open(&theirs).unwrap();
    for ddl in SN27_INIT {
        conn.execute(ddl, []).unwrap();
    }
    // Same columns (name, type, not-null, default, pk) and the same indexes per SN27 table.
    let shape = |path: &Path| {
        let conn = Connection::open(path).unwrap();
        let mut out = Vec::new();
        for table in SN27_TABLES {
            let mut stmt =
                conn.prepare("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?)").unwrap();
            let cols: Vec<String> = stmt
                .query_map([table], |r| {
                    Ok(format!(
                        "{}:{}:{}:{:?}:{}",
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, i64>(4)?
                    ))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let mut stmt =
                conn.prepare("SELECT name, \"unique\", origin FROM pragma_index_list(?) ORDER BY name").unwrap();
            let idx: Vec<String> = stmt
                .query_map([table], |r| {
                    Ok(format!("{}:{}:{}", r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let mut stmt =
                conn.prepare("SELECT \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list(?)").unwrap();
            let fks: Vec<String> = stmt
                .query_map([table], |r| {
                    Ok(format!(
                        "{}:{}:{}:{}",
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?
                    ))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            out.push((table.to_string(), cols, idx, fks));
        }
        out
    };
    assert_eq!(shape(&ours), shape(&theirs));
    let journal: String = Connection::open(&ours).unwrap().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(journal, "wal");
}

#[test]
fn old_three_column_miner_details_is_migrated_keeping_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database.db");
    let conn = Connection::open(&path).unwrap();
    for ddl in SN27_INIT_OLD {
        conn.execute(ddl, []).unwrap();
    }
    // SN27 before 1.3.11 stored the uid as the id.
    let insert = "INSERT INTO miner_details (id, hotkey, details) VALUES (?, ?, ?)";
    conn.execute(insert, rusqlite::params![7, MINER_HOTKEY, H100_SPECS]).unwrap();
    conn.execute(insert, rusqlite::params![3, MINER2_HOTKEY, "{}"]).unwrap();
    conn.execute("INSERT INTO miner (uid, ss58_address) VALUES (7, ?)", [MINER_HOTKEY]).unwrap();
    drop(conn);
    let others = ["miner", "tb", "challenge_details"];
    let before = dump(&path, &others);

    let db = ComputeDb::open(&path).unwrap();
    let miners = db.miner_details().unwrap();
    let rows: Vec<(i64, &str, Option<&str>, u32)> =
        miners.iter().map(|m| (m.id, m.hotkey.as_str(), m.details_raw.as_deref(), m.no_specs_count)).collect();
    assert_eq!(rows, [(3, MINER2_HOTKEY, Some("{}"), 0), (7, MINER_HOTKEY, Some(H100_SPECS), 0)]);
    assert!(miners[1].specs.is_some());
    // The migrated table takes SN27's upsert, which needs the unique hotkey.
    db.upsert_specs(MINER2_HOTKEY, H100_SPECS, 1).unwrap();
    drop(db);

    let conn = Connection::open(&path).unwrap();
    let cols: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('miner_details')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(cols, ["id", "hotkey", "details", "no_specs_count"]);
    let leftovers: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE '%migration%' OR name = 'new_miner_details'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(leftovers, 0);
    conn.execute(SN27_SPECS_UPSERT, [MINER_HOTKEY, "{}"]).unwrap();
    drop(conn);
    assert_eq!(dump(&path, &others), before, "other tables untouched");
}

#[test]
fn miner_details_without_a_unique_hotkey_is_migrated_keeping_counts_and_the_latest_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE miner_details (id INTEGER PRIMARY KEY, hotkey TEXT, details TEXT, no_specs_count INTEGER DEFAULT 0);
         INSERT INTO miner_details VALUES (1, 'a', '{\"old\": 1}', 2);
         INSERT INTO miner_details VALUES (2, 'b', '{}', 4);
         INSERT INTO miner_details VALUES (3, 'a', '{\"new\": 1}', 1);",
    )
    .unwrap();
    drop(conn);
    let db = ComputeDb::open(&path).unwrap();
    let rows: Vec<(i64, String, Option<String>, u32)> =
        db.miner_details().unwrap().into_iter().map(|m| (m.id, m.hotkey, m.details_raw, m.no_specs_count)).collect();
    assert_eq!(rows, [(2, "b".into(), Some("{}".into()), 4), (3, "a".into(), Some("{\"new\": 1}".into()), 1)]);
}

#[test]
fn allocation_lifecycle_begin_commit_list_pending_finish() {
    let dir = tempfile::tempdir().unwrap();
    // The database's clock says when each step happened: exact stamps, no waiting.
    let t0 = 1_700_000_000_000;
    let clock = bittensor::Clock::manual(t0);
    let db = ComputeDb::open(dir.path().join("database.db")).unwrap().with_clock(clock.clone());
    db.begin_allocation(MINER_HOTKEY, REGKEY, t0 + 3_600_000, true).unwrap();
    clock.advance(Duration::from_secs(2));
    assert!(db.allocations().unwrap().is_empty(), "an intent is not an allocation yet");
    assert_eq!(db.interrupted().unwrap(), [(MINER_HOTKEY.to_string(), REGKEY.to_string())]);

    db.commit_allocation(MINER_HOTKEY, &details(REGKEY, "s3cret")).unwrap();
    assert!(db.interrupted().unwrap().is_empty());
    let all = db.allocations().unwrap();
    assert_eq!(all.len(), 1);
    let a = &all[0];
    assert_eq!((a.hotkey.as_str(), a.state), (MINER_HOTKEY, AllocationState::Active));
    assert_eq!(a.details.as_ref().map(|d| d.password.expose_secret()), Some("s3cret"));
    assert_eq!(a.details_raw.as_deref(), Some(details(REGKEY, "s3cret").to_json().as_str()));
    assert_eq!(a.key_fingerprint, Some(key_fingerprint(REGKEY)));
    assert_eq!(a.ssh_key_injected, Some(true));
    assert_eq!(a.expires_ms, Some(t0 + 3_600_000));
    assert_eq!(a.created_ms, Some(t0), "stamped when begun");
    assert!(!format!("{a:?}").contains("s3cret"), "Debug redacts the password");

    clock.advance(Duration::from_secs(5));
    db.mark_pending_deallocation(MINER_HOTKEY, "miner did not answer").unwrap();
    let a = db.allocation(MINER_HOTKEY).unwrap().unwrap();
    assert_eq!(a.updated_ms, Some(t0 + 7_000), "stamped when the release failed");
    assert_eq!(a.state, AllocationState::PendingDeallocation);
    assert_eq!(a.last_error.as_deref(), Some("miner did not answer"));
    assert!(a.details.is_some(), "the row (and its key) stays until the miner confirms");

    assert!(db.finish_deallocation(MINER_HOTKEY).unwrap());
    assert!(db.allocations().unwrap().is_empty());
    assert!(db.allocation(MINER_HOTKEY).unwrap().is_none());
    assert!(!db.finish_deallocation(MINER_HOTKEY).unwrap());
    // The hotkey can be allocated again.
    db.begin_allocation(MINER_HOTKEY, REGKEY, t0, false).unwrap();
}

#[test]
fn begun_allocation_can_be_aborted_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = ComputeDb::open(dir.path().join("database.db")).unwrap();
    db.begin_allocation(MINER_HOTKEY, REGKEY, 1, false).unwrap();
    assert!(db.abort_allocation(MINER_HOTKEY).unwrap());
    assert!(db.interrupted().unwrap().is_empty());
    assert!(db.allocations().unwrap().is_empty());
    assert!(!db.abort_allocation(MINER_HOTKEY).unwrap(), "nothing left to abort");

    db.begin_allocation(MINER_HOTKEY, REGKEY, 1, false).unwrap();
    db.commit_allocation(MINER_HOTKEY, &details(REGKEY, "p")).unwrap();
    let err = db.abort_allocation(MINER_HOTKEY).unwrap_err();
    assert!(matches!(err, DbError::CannotAbort { state: AllocationState::Active, .. }), "{err}");
    assert_eq!(db.allocations().unwrap().len(), 1, "an active allocation is not forgotten by abort");
}

#[test]
fn interrupted_allocations_survive_a_restart_and_failed_releases_stay_listed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database.db");
    let db = ComputeDb::open(&path).unwrap();
    db.begin_allocation(MINER_HOTKEY, REGKEY, 1, false).unwrap();
    db.begin_allocation(MINER2_HOTKEY, "other-key", 1, false).unwrap();
    db.commit_allocation(MINER2_HOTKEY, &details("other-key", "p")).unwrap();
    drop(db); // the CLI was killed while asking MINER_HOTKEY

    let db = ComputeDb::open(&path).unwrap();
    assert_eq!(db.interrupted().unwrap(), [(MINER_HOTKEY.to_string(), REGKEY.to_string())]);
    db.mark_pending_deallocation(MINER_HOTKEY, "connection refused").unwrap();
    assert_eq!(db.interrupted().unwrap().len(), 1, "a failed release is retried later");
    assert!(db.finish_deallocation(MINER_HOTKEY).unwrap());
    assert!(db.interrupted().unwrap().is_empty());
    assert_eq!(db.allocations().unwrap().len(), 1);
}

#[test]
fn duplicate_and_out_of_order_allocation_steps_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database.db");
    sn27_database(&path); // MINER_HOTKEY has an allocation row written by SN27
    let db = ComputeDb::open(&path).unwrap();

    let err = db.begin_allocation(MINER_HOTKEY, REGKEY, 1, false).unwrap_err();
    assert!(matches!(err, DbError::AlreadyAllocated { state: AllocationState::Active, .. }), "{err}");
    assert!(err.to_string().contains(MINER_HOTKEY) && err.to_string().contains("deallocate it first"), "{err}");

    db.begin_allocation(MINER2_HOTKEY, REGKEY, 1, false).unwrap();
    let err = db.begin_allocation(MINER2_HOTKEY, REGKEY, 1, false).unwrap_err();
    assert!(matches!(err, DbError::AlreadyAllocated { state: AllocationState::Allocating, .. }), "{err}");

    let err = db.commit_allocation(MINER2_HOTKEY, &details("another key", "p")).unwrap_err();
    assert!(matches!(err, DbError::KeyMismatch { .. }), "{err}");
    let err = db.commit_allocation("5Unknown", &details(REGKEY, "p")).unwrap_err();
    assert!(matches!(err, DbError::NotAllocating { .. }), "{err}");
    db.commit_allocation(MINER2_HOTKEY, &details(REGKEY, "p")).unwrap();
    let err = db.commit_allocation(MINER2_HOTKEY, &details(REGKEY, "p")).unwrap_err();
    assert!(matches!(err, DbError::AlreadyAllocated { state: AllocationState::Active, .. }), "{err}");

    let err = db.mark_pending_deallocation("5Unknown", "x").unwrap_err();
    assert!(matches!(err, DbError::NoAllocation { .. }), "{err}");
    assert_eq!(db.allocations().unwrap().len(), 2);
}

#[test]
fn an_allocation_sn27_wrote_can_be_deallocated_with_its_regkey() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database.db");
    sn27_database(&path);
    let db = ComputeDb::open(&path).unwrap();
    db.mark_pending_deallocation(MINER_HOTKEY, "timeout").unwrap();
    let a = db.allocation(MINER_HOTKEY).unwrap().unwrap();
    assert_eq!(a.state, AllocationState::PendingDeallocation);
    assert_eq!(a.regkey.as_deref(), Some(REGKEY));
    assert_eq!(a.key_fingerprint, Some(key_fingerprint(REGKEY)));
    assert_eq!(a.details_raw, Some(sn27_allocation_json("Xk29fLq0Zp", REGKEY)), "SN27's row is not rewritten");
    assert!(db.interrupted().unwrap().is_empty(), "it has its allocation row: listed by allocations()");
    assert!(db.finish_deallocation(MINER_HOTKEY).unwrap());
    assert!(db.allocations().unwrap().is_empty());
}

#[test]
fn unreadable_allocation_json_is_kept_raw() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database.db");
    sn27_database(&path);
    let conn = Connection::open(&path).unwrap();
    conn.execute(SN27_ALLOCATION_UPSERT, ["5Broken", "not json"]).unwrap();
    conn.execute(SN27_ALLOCATION_UPSERT, ["5Strport", r#"{"username": "root", "password": "pw", "port": "2222"}"#])
        .unwrap();
    drop(conn);
    let db = ComputeDb::open(&path).unwrap();
    let all = db.allocations().unwrap();
    assert_eq!(all.len(), 3);
    assert!(all[1].details.is_none());
    assert_eq!(all[1].details_raw.as_deref(), Some("not json"));
    assert_eq!(all[1].regkey, None);
    assert_eq!(all[2].details.as_ref().map(|d| d.port), Some(2222));
}

/// A whole sync in one transaction leaves the rows one call per miner leaves.
#[test]
fn a_sync_recorded_at_once_equals_one_write_per_miner() {
    let dir = tempfile::tempdir().unwrap();
    let (one, batch) =
        (ComputeDb::open(dir.path().join("one.db")).unwrap(), ComputeDb::open(dir.path().join("batch.db")).unwrap());
    for db in [&one, &batch] {
        db.upsert_specs(MINER2_HOTKEY, H100_SPECS, 500).unwrap();
    }
    one.upsert_specs(MINER_HOTKEY, H100_SPECS, 1_000).unwrap();
    one.mark_signer(MINER_HOTKEY).unwrap();
    one.record_no_specs(MINER2_HOTKEY, "timed out", 1_000).unwrap();
    one.upsert_specs("5Empty", "{}", 1_000).unwrap();
    batch
        .record_sync(
            &[
                SyncOutcome::Specs { hotkey: MINER_HOTKEY, json: H100_SPECS, signed: true },
                SyncOutcome::NoSpecs { hotkey: MINER2_HOTKEY, error: "timed out" },
                SyncOutcome::Specs { hotkey: "5Empty", json: "{}", signed: false },
            ],
            1_000,
        )
        .unwrap();
    let rows = |db: &ComputeDb| {
        db.miner_details()
            .unwrap()
            .into_iter()
            .map(|m| (m.hotkey, m.details_raw, m.no_specs_count, m.last_seen_ms, m.last_error, m.failures))
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(&one), rows(&batch));
    assert_eq!(one.signers().unwrap(), batch.signers().unwrap());
    assert!(batch.signers().unwrap().contains(MINER_HOTKEY));
    assert_eq!(one.miner_last_errors().unwrap(), batch.miner_last_errors().unwrap());
    assert_eq!(batch.miner_last_errors().unwrap().len(), 2, "the timed-out miner and the empty answer");
    // Invalid specs: nothing is written.
    let e = batch.record_sync(
        &[
            SyncOutcome::NoSpecs { hotkey: "5New", error: "x" },
            SyncOutcome::Specs { hotkey: "5Bad", json: "[1]", signed: false },
        ],
        2_000,
    );
    assert!(matches!(e, Err(DbError::InvalidSpecs { .. })), "{e:?}");
    assert!(batch.miner_details().unwrap().iter().all(|m| m.hotkey != "5New"));
}

#[test]
fn five_consecutive_failures_blank_the_specs_and_an_answer_resets_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database.db");
    let db = ComputeDb::open(&path).unwrap();
    let miner = |db: &ComputeDb| db.miner_details().unwrap().into_iter().find(|m| m.hotkey == MINER_HOTKEY).unwrap();

    db.upsert_specs(MINER_HOTKEY, H100_SPECS, 1_000).unwrap();
    let m = miner(&db);
    assert_eq!((m.no_specs_count, m.last_seen_ms, m.specs_updated_ms), (0, Some(1_000), Some(1_000)));
    assert!(m.specs.is_some());

    for i in 1..NO_SPECS_LIMIT {
        db.record_no_specs(MINER_HOTKEY, "timed out", 1_000 + u64::from(i)).unwrap();
        let m = miner(&db);
        assert_eq!(m.no_specs_count, i);
        assert_eq!(m.details_raw.as_deref(), Some(H100_SPECS), "specs kept after {i} failure(s)");
        assert_eq!((m.failures, m.last_error.as_deref()), (i, Some("timed out")));
        assert_eq!(m.last_seen_ms, Some(1_000), "a failure is not a sighting");
    }
    db.record_no_specs(MINER_HOTKEY, "timed out", 2_000).unwrap();
    let m = miner(&db);
    assert_eq!((m.no_specs_count, m.details_raw.as_deref(), m.specs.is_none()), (5, Some("{}"), true));
    assert_eq!(m.last_failure_ms, Some(2_000));
    db.record_no_specs(MINER_HOTKEY, "timed out", 2_001).unwrap();
    assert_eq!(miner(&db).no_specs_count, 5, "capped");

    db.upsert_specs(MINER_HOTKEY, H100_SPECS, 3_000).unwrap();
    let m = miner(&db);
    assert_eq!((m.no_specs_count, m.failures, m.last_error.as_deref()), (0, 0, None));
    assert_eq!((m.details_raw.as_deref(), m.last_seen_ms), (Some(H100_SPECS), Some(3_000)));

    // A miner never seen before that does not answer gets SN27's row: '{}' and a count of 1.
    db.record_no_specs(MINER2_HOTKEY, "refused", 4_000).unwrap();
    let m = db.miner_details().unwrap().into_iter().find(|m| m.hotkey == MINER2_HOTKEY).unwrap();
    assert_eq!((m.details_raw.as_deref(), m.no_specs_count, m.last_seen_ms), (Some("{}"), 1, None));

    // Not JSON objects: refused, nothing stored. An empty object is a failure, as in SN27.
    for bad in ["not json", "[1]", "\"x\""] {
        assert!(matches!(db.upsert_specs(MINER_HOTKEY, bad, 5_000), Err(DbError::InvalidSpecs { .. })), "{bad}");
    }
    assert_eq!(miner(&db).details_raw.as_deref(), Some(H100_SPECS));
    db.upsert_specs(MINER_HOTKEY, "{}", 5_000).unwrap();
    assert_eq!((miner(&db).no_specs_count, miner(&db).details_raw.as_deref()), (1, Some(H100_SPECS)));
}

#[test]
fn penalize_and_depenalize_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database.db");
    let db = ComputeDb::open(&path).unwrap();
    assert_eq!(db.penalize(&["a", "b"]).unwrap(), ["a", "b"]);
    assert_eq!(db.penalize(&["a", "c", "c"]).unwrap(), ["c"]);
    assert!(db.penalize(&["a", "b", "c"]).unwrap().is_empty());
    assert_eq!(db.penalized().unwrap(), ["a", "b", "c"]);
    assert_eq!(db.depenalize(&[String::from("a"), String::from("x")]).unwrap(), ["a"]);
    assert!(db.depenalize(&["a"]).unwrap().is_empty());
    assert_eq!(db.penalized().unwrap(), ["b", "c"]);
    drop(db);
    // Rows as SN27 writes them: the hotkey only.
    let conn = Connection::open(&path).unwrap();
    let nulls: i64 = conn.query_row("SELECT count(*) FROM blacklist WHERE details IS NULL", [], |r| r.get(0)).unwrap();
    assert_eq!(nulls, 2);
}

#[test]
fn two_connections_write_concurrently_without_lock_errors_or_lost_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database.db");
    const N: usize = 150;
    let start = Arc::new(Barrier::new(2));
    let workers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let path = path.clone();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                // Both open the new file at the same moment, then interleave writes and reads.
                let db = ComputeDb::open(&path).unwrap();
                for i in 0..N {
                    let hotkey = format!("5{name}{i:04}");
                    db.upsert_specs(&hotkey, H100_SPECS, i as u64).unwrap();
                    db.begin_allocation(&hotkey, REGKEY, 1, true).unwrap();
                    db.commit_allocation(&hotkey, &details(REGKEY, "p")).unwrap();
                    db.penalize(&[&hotkey]).unwrap();
                    if i % 10 == 0 {
                        db.record_no_specs(&hotkey, "x", i as u64).unwrap();
                        assert!(db.allocations().unwrap().len() > i);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("no worker failed (a `database is locked` error panics it)");
    }
    let db = ComputeDb::open(&path).unwrap();
    assert_eq!(db.allocations().unwrap().len(), 2 * N);
    assert!(db.allocations().unwrap().iter().all(|a| a.state == AllocationState::Active && a.details.is_some()));
    assert_eq!(db.miner_details().unwrap().len(), 2 * N);
    assert_eq!(db.penalized().unwrap().len(), 2 * N);
}

#[test]
fn a_writer_holding_the_lock_past_the_busy_timeout_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database.db");
    let db = ComputeDb::open(&path).unwrap();
    db.penalize(&["a"]).unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE; INSERT INTO blacklist (hotkey) VALUES ('held');").unwrap();

    assert_eq!(db.penalized().unwrap(), ["a"], "readers are not blocked in WAL mode");
    let t = Instant::now();
    let err = db.penalize(&["b"]).unwrap_err();
    assert!(t.elapsed() >= Duration::from_secs(4), "waited out the busy timeout: {:?}", t.elapsed());
    assert!(matches!(err, DbError::Locked { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("another nicompute or validator process holds a write lock on {}; try again", path.display())
    );
    other.execute_batch("COMMIT").unwrap();
    assert_eq!(db.penalize(&["b"]).unwrap(), ["b"]);
}

fn assert_refused_untouched(path: &Path, content: &[u8]) {
    let err = ComputeDb::open(path).unwrap_err();
    assert!(matches!(err, DbError::NotADatabase { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{} is not a SQLite database or is corrupt; nothing was changed", path.display())
    );
    assert_eq!(fs::read(path).unwrap(), content, "the file is unchanged");
    assert_eq!(mode(path), 0o644, "not even its mode changed");
    assert!(!side(path, "-wal").exists() && !side(path, "-journal").exists());
}

#[test]
fn files_that_are_not_databases_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let random: Vec<u8> = (0..8192)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let mut fake_header = b"SQLite format 3\0".to_vec();
    fake_header.extend_from_slice(&random[..4096]);
    let cases: [(&str, Vec<u8>); 4] = [
        ("text.db", b"this is my notes file, not a database\n".to_vec()),
        ("random.db", random),
        ("header-only.db", fake_header),
        ("wallet.json", br#"{"secretPhrase": "..."}"#.to_vec()),
    ];
    for (name, content) in cases {
        let path = dir.path().join(name);
        fs::write(&path, &content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_refused_untouched(&path, &content);
    }
}

#[test]
fn a_corrupt_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database.db");
    sn27_database(&path);
    let conn = Connection::open(&path).unwrap();
    for i in 0..300 {
        conn.execute(
            "INSERT INTO tb (hotkey, details) VALUES (?, ?)",
            rusqlite::params![format!("h{i}"), "x".repeat(200)],
        )
        .unwrap();
    }
    let page_size: usize = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    drop(conn);
    let mut bytes = fs::read(&path).unwrap();
    assert!(bytes.len() > 8 * page_size);
    // Scribble over pages 2..8 (table b-trees); page 1, the header and the schema, stays intact.
    for b in &mut bytes[page_size..8 * page_size] {
        *b = 0x5a;
    }
    fs::write(&path, &bytes).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert_refused_untouched(&path, &bytes);
}

#[test]
fn the_file_is_private_after_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("database.db");
    let db = ComputeDb::open(&path).unwrap();
    db.penalize(&["x"]).unwrap();
    assert_eq!(mode(&path), 0o600);
    for suffix in ["-wal", "-shm"] {
        let side = side(&path, suffix);
        if side.exists() {
            assert_eq!(mode(&side), 0o600, "{}", side.display());
        }
    }
    drop(db);

    // A validator's database created with the usual umask is narrowed too.
    let path = dir.path().join("validator.db");
    sn27_database(&path);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    drop(ComputeDb::open(&path).unwrap());
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn a_read_only_database_is_refused_untouched() {
    if rustix::process::geteuid().is_root() {
        eprintln!("skipped: root can write to any file");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database.db");
    sn27_database(&path);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
    let content = fs::read(&path).unwrap();
    let err = ComputeDb::open(&path).unwrap_err();
    assert!(matches!(err, DbError::ReadOnly { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    assert_eq!(fs::read(&path).unwrap(), content);
    assert_eq!(mode(&path), 0o444, "a deliberately read-only file keeps its mode");
}

#[test]
fn a_thousand_allocations_are_listed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database.db");
    let db = ComputeDb::open(&path).unwrap();
    // 400 rows as SN27 writes them, 600 through the state machine, interleaved by id.
    let conn = Connection::open(&path).unwrap();
    for i in 0..1000 {
        let hotkey = format!("5Hotkey{i:04}");
        if i % 5 < 2 {
            conn.execute(SN27_ALLOCATION_UPSERT, [&hotkey, &sn27_allocation_json(&format!("pw{i}"), REGKEY)]).unwrap();
        } else {
            let key = format!("{REGKEY}{i}");
            db.begin_allocation(&hotkey, &key, 1_000 + i as u64, i % 2 == 0).unwrap();
            db.commit_allocation(&hotkey, &details(&key, &format!("pw{i}"))).unwrap();
            if i % 5 == 4 {
                db.mark_pending_deallocation(&hotkey, "unreachable").unwrap();
            }
        }
    }
    let all = db.allocations().unwrap();
    assert_eq!(all.len(), 1000);
    for (i, a) in all.iter().enumerate() {
        assert_eq!(a.id, i as i64 + 1);
        assert_eq!(a.hotkey, format!("5Hotkey{i:04}"));
        assert_eq!(a.details.as_ref().map(|d| d.password.expose_secret().to_string()), Some(format!("pw{i}")));
        let (state, expires) = match i % 5 {
            0 | 1 => (AllocationState::Active, None),
            4 => (AllocationState::PendingDeallocation, Some(1_000 + i as u64)),
            _ => (AllocationState::Active, Some(1_000 + i as u64)),
        };
        assert_eq!((a.state, a.expires_ms), (state, expires), "row {i}");
        let key = if i % 5 < 2 { REGKEY.to_string() } else { format!("{REGKEY}{i}") };
        assert_eq!(a.key_fingerprint, Some(key_fingerprint(&key)), "row {i}");
    }
}

#[test]
fn an_allocation_in_flight_is_not_interrupted_for_another_handle_until_its_claim_lapses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database.db");
    let t0 = 1_700_000_000_000;
    let clock = bittensor::Clock::manual(t0);
    let server = ComputeDb::open(&path).unwrap().with_clock(clock.clone());
    let cli = ComputeDb::open(&path).unwrap().with_clock(clock.clone());
    server.begin_allocation(MINER_HOTKEY, REGKEY, t0 + 1, false).unwrap();
    // This process is alive: the other handle leaves it alone, its maker may release it.
    assert!(cli.interrupted_unclaimed().unwrap().is_empty(), "another live handle is making it");
    assert_eq!(server.interrupted_unclaimed().unwrap().len(), 1);
    assert_eq!(cli.interrupted().unwrap().len(), 1, "interrupted() still lists every intent");
    // Past the claim's lease it counts as interrupted for everyone.
    clock.advance(compute::db::CLAIM_TTL + Duration::from_secs(1));
    assert_eq!(cli.interrupted_unclaimed().unwrap().len(), 1);
    // Committing drops the claim.
    server.commit_allocation(MINER_HOTKEY, &details(REGKEY, "p")).unwrap();
    assert!(cli.interrupted_unclaimed().unwrap().is_empty());
}
