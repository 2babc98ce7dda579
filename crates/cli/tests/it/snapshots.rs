//! Human output, exactly: `list_r`, `list_p` and `list_a` on a fixed database in SN27's format
//! (rows as the Python validator writes them, so no freshness data of ours). Set
//! `UPDATE_SNAPSHOTS=1` to rewrite the files after an intended change, then review the diff.

use std::path::{Path, PathBuf};

const H100: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
const RTX: &str = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty";
const CPU: &str = "5FLSigC9HGRKVhB9FiEo4Y3koPsNmBmLJbpXg2mp1hXcS59Y";

fn sn27_database(path: &Path) {
    let c = rusqlite::Connection::open(path).expect("open");
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS miner_details (id INTEGER PRIMARY KEY, hotkey TEXT UNIQUE, details TEXT, no_specs_count INTEGER DEFAULT 0);
         CREATE TABLE IF NOT EXISTS blacklist (id INTEGER PRIMARY KEY, hotkey TEXT UNIQUE, details TEXT);
         CREATE TABLE IF NOT EXISTS allocation (id INTEGER PRIMARY KEY, hotkey TEXT UNIQUE, details TEXT);",
    )
    .expect("ddl");
    let gib = 1u64 << 30;
    let specs = |gpu: &str, mib: u64, count: u64, cpus: u64| {
        let gpu = if count == 0 {
            serde_json::json!({"count": 0, "capacity": 0, "details": []})
        } else {
            let details: Vec<_> = (0..count).map(|_| serde_json::json!({"name": gpu, "capacity": mib})).collect();
            serde_json::json!({"count": count, "capacity": mib * count, "details": details})
        };
        serde_json::json!({"cpu": {"count": cpus, "frequency": 2400.0}, "gpu": gpu,
            "hard_disk": {"total": 2000 * gib, "free": 1500 * gib, "used": 500 * gib},
            "ram": {"total": 256 * gib, "available": 200 * gib, "used": 56 * gib, "free": 190 * gib}, "has_docker": true})
        .to_string()
    };
    let ins = "INSERT INTO miner_details (hotkey, details, no_specs_count) VALUES (?1, ?2, 0)";
    c.execute(ins, [H100, &specs("NVIDIA H100 80GB HBM3", 81559, 1, 32)]).expect("row");
    c.execute(ins, [RTX, &specs("NVIDIA GeForce RTX 4090", 24564, 2, 16)]).expect("row");
    c.execute(ins, [CPU, &specs("", 0, 0, 8)]).expect("row");
    c.execute("INSERT INTO blacklist (hotkey) VALUES (?1)", [CPU]).expect("row");
    let details = serde_json::json!({"username": "root", "password": "s3cret-pass", "port": 4444, "version": 183,
        "ip": "192.0.2.7", "resource": "NVIDIA GeForce RTX 4090", "regkey": "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n"});
    c.execute("INSERT INTO allocation (hotkey, details) VALUES (?1, ?2)", [RTX, &details.to_string()]).expect("row");
}

fn snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/snapshots").join(format!("{name}.txt"));
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing snapshot {} (UPDATE_SNAPSHOTS=1)", path.display()));
    assert_eq!(actual, expected, "human output of {name} changed (UPDATE_SNAPSHOTS=1 to accept)");
}

#[test]
fn human_output_matches_the_snapshots() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("database.db");
    sn27_database(&db);
    for (name, args) in [("list_r", vec!["list_r"]), ("list_p", vec!["list_p"]), ("list_a", vec!["list_a"])] {
        // No WANDB_API_KEY or NICOMPUTE_WANDB from outside: list_r never asks wandb here.
        let out = crate::harness::nicompute(dir.path()).args(&args).arg("--db").arg(&db).output().expect("run");
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!text.contains("s3cret-pass"), "passwords are redacted");
        snapshot(name, &text);
    }
}

/// What a malicious miner got into the database (its specs through `sync`, its credentials
/// through another tool): escapes in the GPU name, an option as username. The real binary prints
/// none of the escapes, in text or JSON, and `ssh` refuses the login before OpenSSH runs.
#[test]
fn a_hostile_miners_strings_never_reach_the_terminal_or_ssh() {
    const HOSTILE_GPU: &str = "NVIDIA H100\u{1b}]0;pwned\u{7}\u{1b}[2J\r\u{9b}31m\u{202e}";
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("database.db");
    sn27_database(&db);
    let c = rusqlite::Connection::open(&db).expect("open");
    let specs = serde_json::json!({"cpu": {"count": 8}, "gpu": {"count": 1, "capacity": 81559,
        "details": [{"name": HOSTILE_GPU, "capacity": 81559}]}, "has_docker": true});
    c.execute("UPDATE miner_details SET details = ?1 WHERE hotkey = ?2", [&specs.to_string(), H100]).expect("row");
    let details = serde_json::json!({"username": "-oProxyCommand=touch pwned #", "password": "p", "port": 4444,
        "version": 183, "ip": "127.0.0.1", "resource": HOSTILE_GPU, "regkey": "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n"});
    c.execute("INSERT INTO allocation (hotkey, details) VALUES (?1, ?2)", [H100, &details.to_string()]).expect("row");
    drop(c);
    for args in [vec!["list_r"], vec!["list_r", "--json"], vec!["list_a"], vec!["list_a", "--json"]] {
        let out = crate::harness::nicompute(dir.path()).args(&args).arg("--db").arg(&db).output().expect("run");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("NVIDIA H100"), "{args:?}: the name is shown: {text}");
        let bad: Vec<char> =
            text.chars().filter(|c| (c.is_control() && *c != '\n' && *c != '\t') || *c == '\u{202e}').collect();
        assert!(bad.is_empty(), "{args:?} printed control characters {bad:?}");
        assert!(!text.contains("\\u001b"), "{args:?}: not even escaped in JSON");
    }
    let pwned = dir.path().join("pwned");
    let out = crate::harness::nicompute(dir.path())
        .current_dir(dir.path())
        .args(["ssh", H100])
        .arg("--db")
        .arg(&db)
        .args(["--", "uname"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not safe to use"), "{err}");
    assert!(!pwned.exists(), "no ProxyCommand ran");
}
