//! The Python SDK as a test peer: the venvs built by `scripts/python-peers.sh` and the scripts in
//! `tests/peers/`. Where a venv is missing the test says so and skips, unless
//! `NICOMPUTE_REQUIRE_PEERS=1` or `CI` is set (the test script sets it), where that is a failure.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Stdio};

use serde_json::{json, Value};

pub const VERSIONS: [&str; 2] = ["9.0.0", "10.5.0"];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn keys() -> Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/http/keys.json")).expect("keys.json");
    serde_json::from_str(&text).expect("json")
}

pub fn mnemonic(name: &str) -> String {
    keys()[name]["mnemonic"].as_str().expect("mnemonic").to_owned()
}

fn required() -> bool {
    std::env::var("NICOMPUTE_REQUIRE_PEERS").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

// Saying plainly that a check did not run is the point of the skip message.
#[allow(clippy::print_stderr)]
/// The venv's interpreter for an SDK version, or `None` (after saying so) when absent here.
pub fn python(version: &str) -> Option<PathBuf> {
    let dir =
        std::env::var_os("NICOMPUTE_PY_PEERS").map(PathBuf::from).unwrap_or_else(|| root().join("target/python-peers"));
    let py = dir.join(format!("bt{version}")).join("bin/python");
    if py.exists() {
        return Some(py);
    }
    assert!(
        !required(),
        "Python peer for bittensor {version} missing at {} (scripts/python-peers.sh builds it)",
        py.display()
    );
    eprintln!("skipped: no Python peer for bittensor {version} at {} (run scripts/python-peers.sh)", py.display());
    None
}

pub fn script(name: &str) -> PathBuf {
    root().join("tests/peers").join(name)
}

/// A running Python axon; stopped when dropped.
pub struct PyAxon {
    child: Child,
    pub port: u16,
}

impl PyAxon {
    pub fn start(py: &PathBuf, denied: &[String]) -> PyAxon {
        Self::start_with(py, &mnemonic("axon_hotkey"), denied, "Blacklisted hotkey")
    }

    /// An axon with its own hotkey that refuses `denied` with `deny_reason` (403).
    pub fn start_with(py: &PathBuf, hotkey_mnemonic: &str, denied: &[String], deny_reason: &str) -> PyAxon {
        let doc = json!({"hotkey_mnemonic": hotkey_mnemonic, "port": 0, "denied_hotkeys": denied, "deny_reason": deny_reason});
        Self::start_config(py, &doc)
    }

    /// An axon configured by `doc` (see `tests/peers/axon.py`).
    pub fn start_config(py: &PathBuf, doc: &Value) -> PyAxon {
        let mut child = crate::harness::command(py)
            .arg(script("axon.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python axon");
        writeln!(child.stdin.as_mut().expect("stdin"), "{doc}").expect("write config");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read READY");
        let port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("python axon said {line:?}"));
        PyAxon { child, port }
    }
}

impl Drop for PyAxon {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `dendrite.py` with a document on stdin; returns its `results`.
pub fn py_dendrite(py: &PathBuf, doc: &Value) -> Vec<Value> {
    let mut child = crate::harness::command(py)
        .arg(script("dendrite.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python dendrite");
    child.stdin.take().expect("stdin").write_all(doc.to_string().as_bytes()).expect("write");
    let out = child.wait_with_output().expect("python dendrite");
    assert!(out.status.success(), "python dendrite failed");
    let v: Value = serde_json::from_slice(&out.stdout).expect("python dendrite JSON");
    v["results"].as_array().expect("results").clone()
}

/// Runs `wallet.py` (password in the environment); returns its JSON.
pub fn py_wallet(py: &PathBuf, args: &[&str], password: &str) -> Value {
    let out = crate::harness::command(py)
        .arg(script("wallet.py"))
        .args(args)
        .env("NICOMPUTE_TEST_PASSWORD", password)
        .output()
        .expect("python wallet");
    assert!(out.status.success(), "wallet.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("wallet.py JSON")
}
