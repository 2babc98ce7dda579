//! Integration tests of the wandb client: against the real SDK's recorded requests
//! (`tests/fixtures/wandb/`), against the live Python SDK where its venv is built, and the SN27
//! semantics (signatures, union, publication) over a local recording endpoint.

// Test helpers panic on purpose: a broken fixture or harness must fail the test loudly.
#![allow(clippy::unwrap_used)]

mod golden;
mod peers;
mod publish;
mod server;
mod shared;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use wandb::{ApiKey, RetryPolicy, WandbClient, WandbConfig};

use server::{Answer, Recorded};

/// The fake key the capture used (40 hex, like a real key); a test value, not a secret.
pub const TEST_KEY: &str = "0123456789abcdef0123456789abcdef01234567";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures/wandb")
}

pub fn read_json(rel: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::from_str(&text).expect("fixture JSON")
}

/// The GraphQL records of one captured step, without the SDK's `Viewer` queries (it asks for
/// the default entity; with the entity configured, as ours always is, the SDK skips it too).
pub fn step(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join(format!("by_step/{name}.jsonl"))).expect("step file");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("record"))
        .filter(|r| r["kind"] == "graphql" && r["operation"] != "Viewer")
        .collect()
}

/// The recorded answers of records, in order.
pub fn answers(records: &[Value]) -> Vec<Answer> {
    records
        .iter()
        .map(|r| Answer {
            status: r["response"]["status"].as_u64().unwrap() as u16,
            body: r["response"]["body"].clone(),
        })
        .collect()
}

pub fn config(base_url: &str) -> WandbConfig {
    WandbConfig {
        base_url: base_url.to_owned(),
        timeout: Duration::from_secs(10),
        retry: RetryPolicy { initial_backoff: Duration::from_millis(10), max_elapsed: Duration::from_millis(200) },
        ..WandbConfig::default()
    }
}

pub fn client(base_url: &str) -> WandbClient {
    WandbClient::with_key(config(base_url), ApiKey::new(TEST_KEY)).expect("client")
}

/// Asserts that our request is the SDK's: method, path, the body byte for byte (the recorded body
/// re-printed as Python printed it — checked against the recorded Content-Length — equals ours),
/// and the headers that carry meaning. The User-Agent is ours on purpose.
pub fn assert_same_request(ours: &Recorded, sdk: &Value) {
    let what = format!("seq {} ({})", sdk["seq"], sdk["operation"]);
    assert_eq!(ours.method, sdk["method"].as_str().unwrap(), "{what}: method");
    assert_eq!(ours.path, sdk["path"].as_str().unwrap(), "{what}: path");
    let sdk_bytes = wandb::pyjson::to_string(&sdk["body"]);
    let sdk_len: usize = sdk["headers"]["Content-Length"].as_str().unwrap().parse().unwrap();
    assert_eq!(sdk_bytes.len(), sdk_len, "{what}: the recorded body is not re-printed exactly");
    if ours.body != sdk_bytes.as_bytes() {
        assert_eq!(ours.json(), sdk["body"], "{what}: body differs as JSON");
        panic!("{what}: same JSON, different bytes:\n ours {}\n sdk  {sdk_bytes}", String::from_utf8_lossy(&ours.body));
    }
    assert_eq!(ours.header("content-length"), Some(sdk_len.to_string().as_str()), "{what}: Content-Length");
    for h in ["Content-Type", "Use-Admin-Privileges", "Accept"] {
        assert_eq!(ours.header(h), sdk["headers"][h].as_str(), "{what}: header {h}");
    }
    assert_basic_auth(ours, sdk["headers"]["Authorization"].as_str().unwrap());
    assert_eq!(ours.header("user-agent"), Some(wandb::USER_AGENT));
}

/// Our Authorization is `Basic base64("api:" + key)`, the shape the capture recorded (redacted:
/// scheme, user, key length).
pub fn assert_basic_auth(ours: &Recorded, sdk_redacted: &str) {
    let shape: Value = serde_json::from_str(sdk_redacted.trim_start_matches("<redacted> ")).expect("redacted shape");
    let header = ours.header("authorization").expect("authorization header");
    let (scheme, b64) = header.split_once(' ').expect("scheme and credentials");
    assert_eq!(scheme, shape["scheme"].as_str().unwrap());
    let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap();
    let (user, password) = decoded.split_once(':').unwrap();
    assert_eq!(user, shape["username"].as_str().unwrap());
    assert_eq!(password.len() as u64, shape["password_len"].as_u64().unwrap());
    assert_eq!(password, TEST_KEY);
}
