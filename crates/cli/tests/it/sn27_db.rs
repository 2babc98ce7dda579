//! A `database.db` as SN27 makes it — its validator's DDL and its rows, written by Python's
//! sqlite3 as the subnet's own code writes them — read by the CLI through `--db`: `list_r`,
//! `list_a` (password redacted) and `list_p` show what SN27 stored, and SN27's tables are
//! unchanged afterwards.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::renter_world::{json, python, text};

/// `compute/utils/db.py` `ComputeDb.init()` (v1.8.3), then SN27's writes: `update_miner_details`
/// for a miner with specs and one without, `update_allocation_db(hotkey, info, True)`,
/// `update_blacklist_db([hotkey], True)`, and rows of the validator's other tables.
const MAKE_SN27_DB: &str = r#"
import json, sqlite3, sys

conn = sqlite3.connect(sys.argv[1])
cur = conn.cursor()
cur.execute("CREATE TABLE IF NOT EXISTS miner (uid INTEGER PRIMARY KEY, ss58_address TEXT UNIQUE)")
cur.execute("CREATE TABLE IF NOT EXISTS miner_details (id INTEGER PRIMARY KEY, hotkey TEXT UNIQUE, details TEXT, no_specs_count INTEGER DEFAULT 0)")
cur.execute("CREATE TABLE IF NOT EXISTS tb (id INTEGER PRIMARY KEY, hotkey TEXT, details TEXT)")
cur.execute("""
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
            """)
cur.execute("CREATE TABLE IF NOT EXISTS blacklist (id INTEGER PRIMARY KEY, hotkey TEXT UNIQUE, details TEXT)")
cur.execute("CREATE TABLE IF NOT EXISTS allocation (id INTEGER PRIMARY KEY, hotkey TEXT UNIQUE, details TEXT)")
cur.execute("CREATE INDEX IF NOT EXISTS idx_uid ON challenge_details (uid)")
cur.execute("CREATE INDEX IF NOT EXISTS idx_ss58_address ON challenge_details (ss58_address)")
cur.execute("CREATE TABLE IF NOT EXISTS wandb_runs (hotkey TEXT PRIMARY KEY, run_id TEXT NOT NULL)")
cur.execute("""
                CREATE TABLE IF NOT EXISTS pog_stats (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    hotkey TEXT,
                    gpu_name TEXT,
                    num_gpus INTEGER,
                    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                    FOREIGN KEY (hotkey) REFERENCES miner_details (hotkey) ON DELETE CASCADE
                )
            """)
cur.execute("""
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
                """)
conn.commit()

miner, miner2, penalized, regkey, password = sys.argv[2:7]
# What the Python miner's get_perf_info() reports (GPUtil memory as floats), as the validator
# stores it: json.dumps of the dict.
specs = {"cpu": {"count": 52, "frequency": 2000.0},
         "gpu": {"count": 1, "capacity": 81559.0,
                 "details": [{"name": "NVIDIA H100 80GB HBM3", "capacity": 81559.0}],
                 "graphics_speed": 1980, "memory_speed": 2619},
         "hard_disk": {"total": 1967317618688, "free": 1650237771776, "used": 217047355392,
                       "write_speed": 1612.9032258064517, "read_speed": 7142.857142857143},
         "ram": {"total": 2163764801536, "available": 2088145506304, "used": 62379982848,
                 "free": 1473012482048, "swap_total": 0, "swap_used": 0, "swap_free": 0,
                 "read_speed": 33333.333333333336, "write_speed": 2564.102564102564},
         "has_docker": True}
upsert_specs = """
                    INSERT INTO miner_details (hotkey, details, no_specs_count)
                    VALUES (?, ?, 0)
                    ON CONFLICT(hotkey) DO UPDATE SET
                        details = excluded.details,
                        no_specs_count = 0;
                """
cur.execute(upsert_specs, (miner, json.dumps(specs)))
cur.execute(upsert_specs, (miner2, json.dumps({})))
# register.py: the miner's decrypted info, then ip, resource and regkey added.
info = {"username": "root", "password": password, "port": 4444, "version": 183}
info["ip"] = "203.0.113.7"
info["resource"] = "NVIDIA H100 80GB HBM3"
info["regkey"] = regkey
cur.execute("""
                INSERT INTO allocation (hotkey, details)
                VALUES (?, ?) ON CONFLICT(hotkey) DO UPDATE SET
                details=excluded.details
            """, (miner, json.dumps(info)))
cur.execute("""
                INSERT INTO blacklist (hotkey)
                VALUES (?) ON CONFLICT(hotkey) DO NOTHING
            """, (penalized,))
cur.execute("INSERT INTO miner (uid, ss58_address) VALUES (?, ?)", (12, miner))
cur.execute("INSERT INTO challenge_details (uid, ss58_address, success, elapsed_time, difficulty, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (12, miner, True, 1.25, 6, "2025-03-01 10:00:00"))
cur.execute("INSERT INTO wandb_runs (hotkey, run_id) VALUES (?, ?)", ("5Grwva", "vali0001"))
cur.execute("INSERT INTO pog_stats (hotkey, gpu_name, num_gpus) VALUES (?, ?, ?)", (miner, "NVIDIA H100 80GB HBM3", 1))
cur.execute("INSERT INTO stats (uid, hotkey, gpu_specs, score, allocated, own_score, reliability_score) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (12, miner, json.dumps({"gpu_name": "NVIDIA H100 80GB HBM3", "num_gpus": 1}), 0.5, True, True, 0.98))
cur.execute("INSERT INTO tb (hotkey, details) VALUES (?, ?)", (miner, "x"))
conn.commit()
conn.close()
"#;

/// Every SN27 table's stored DDL and rows (each value with its SQLite type), as JSON.
const DUMP_SN27_TABLES: &str = r#"
import json, sqlite3, sys

conn = sqlite3.connect(sys.argv[1])
out = {}
for table in ["miner", "miner_details", "tb", "challenge_details", "blacklist", "allocation",
              "wandb_runs", "pog_stats", "stats", "idx_uid", "idx_ss58_address"]:
    sql = conn.execute("SELECT type, sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    rows = []
    if sql is not None and sql[0] == "table":
        for row in conn.execute("SELECT * FROM %s ORDER BY rowid" % table):
            rows.append([[type(v).__name__, repr(v)] for v in row])
    out[table] = {"sql": sql, "rows": rows}
print(json.dumps(out, indent=1, sort_keys=True))
"#;

const MINER: &str = "5DAAnrj7VHTznn2AWBemMuyBwZWs6FNFjdyVXUeYum3PTXFy";
const MINER2: &str = "5HGjWAeFDfFCWPsjFQdVV2Msvz2XtMktvgocEZcCj68kUMaw";
const PENALIZED: &str = "5FLSigC9HGRKVhB9FiEo4Y3koPsNmBmLJbpXg2mp1hXcS59Y";
const PASSWORD: &str = "Xk29fLq0Zp";
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

fn cli(home: &Path, db: &Path, args: &[&str]) -> Output {
    let out = crate::harness::nicompute(home).arg("--db").arg(db).args(args).output().expect("run");
    assert!(out.status.success(), "{args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    out
}

#[test]
fn the_cli_reads_an_sn27_database_and_leaves_its_tables_unchanged() {
    let dir = tempfile::tempdir().expect("tmp");
    let home = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("database.db");
    let path = db.to_str().expect("utf8");
    python(MAKE_SN27_DB, &[path, MINER, MINER2, PENALIZED, REGKEY, PASSWORD]);
    let before = python(DUMP_SN27_TABLES, &[path]);

    // list_r: the miner SN27 stored specs for, reserved since SN27 has its allocation row.
    let out = cli(home.path(), &db, &["list_r", "--json"]);
    let v = json(&out);
    let rows = v["resources"].as_array().expect("resources");
    let row = rows.iter().find(|r| r["hotkey"] == MINER).unwrap_or_else(|| panic!("{v}"));
    assert_eq!(row["gpu_name"], "NVIDIA H100 80GB HBM3");
    assert_eq!(row["gpu_count"], 1);
    assert_eq!(row["vcpus"], 52);
    assert_eq!(row["status"], "Res.");
    assert_eq!(row["simulated"], false);
    assert!((row["gpu_size_gb"].as_f64().expect("size") - 81559.0 / 1024.0).abs() < 1e-6, "{row}");

    // list_a: the allocation register.py wrote, active, its password redacted.
    let out = cli(home.path(), &db, &["list_a", "--json"]);
    assert!(!text(&out.stdout).contains(PASSWORD), "the password is redacted: {}", text(&out.stdout));
    let v = json(&out);
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    let a = &v[0];
    assert_eq!(a["hotkey"], MINER);
    assert_eq!(a["password"], "********");
    assert_eq!(a["username"], "root");
    assert_eq!((a["ip"].as_str(), a["port"].as_u64()), (Some("203.0.113.7"), Some(4444)));
    assert_eq!(a["ssh"], "ssh root@203.0.113.7 -p 4444");
    assert_eq!(a["resource"], "NVIDIA H100 80GB HBM3");
    assert_eq!(a["state"], "active");
    let out = cli(home.path(), &db, &["list_a", "--json", "--show-secrets"]);
    assert_eq!(json(&out)[0]["password"], PASSWORD);
    let out = cli(home.path(), &db, &["list_a"]);
    assert!(text(&out.stdout).contains(MINER) && !text(&out.stdout).contains(PASSWORD), "{}", text(&out.stdout));

    // list_p: SN27's blacklist row.
    let out = cli(home.path(), &db, &["list_p", "--json"]);
    let v: Value = json(&out);
    assert_eq!(v["count"], 1, "{v}");
    assert_eq!(v["penalized"], serde_json::json!([PENALIZED]));

    let after = python(DUMP_SN27_TABLES, &[path]);
    assert_eq!(after, before, "SN27's tables and rows are unchanged");
}
