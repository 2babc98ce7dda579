//! Against the live Python peers built by `scripts/python-peers.sh`: the real `wandb==0.19.0`
//! (`target/python-peers/wandb0.19.0`) driven through the same operations as our client against
//! the same local endpoint, and the real bittensor-wallet (`target/python-peers/bt9.0.0`) for run
//! signatures both ways. Where a venv is missing the test says so and skips, unless
//! `NICOMPUTE_REQUIRE_PEERS=1` or `CI` is set, where that is a failure.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use bittensor::Keypair;
use serde_json::{json, Value};
use wandb::{sign_run, verify_run, Run, CREATE_RUN_MUTATION, RUNS_QUERY, RUN_QUERY, UPDATE_RUN_MUTATION};

use crate::server::{Answer, Recorded, Server};
use crate::{client, fixtures, read_json, root, step, TEST_KEY};

fn required() -> bool {
    std::env::var("NICOMPUTE_REQUIRE_PEERS").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

// Saying plainly that a check did not run is the point of the skip message.
#[allow(clippy::print_stderr)]
/// The interpreter of a peer venv (`wandb0.19.0`, `bt9.0.0`), or `None` after saying so.
fn python(venv: &str, what: &str) -> Option<PathBuf> {
    let dir =
        std::env::var_os("NICOMPUTE_PY_PEERS").map(PathBuf::from).unwrap_or_else(|| root().join("target/python-peers"));
    let py = dir.join(venv).join("bin/python");
    if py.exists() {
        return Some(py);
    }
    assert!(!required(), "Python {what} peer missing at {} (scripts/python-peers.sh builds it)", py.display());
    eprintln!("skipped: no Python {what} peer at {} (run scripts/python-peers.sh)", py.display());
    None
}

/// Runs a peer script with JSON on stdin (secrets never in argv); returns its stdout JSON. The
/// crate's one process builder: every `NICOMPUTE_*`, `BT_*` and `WANDB_*` variable (and `NETRC`)
/// of whoever runs the tests is removed, the SDK gets a home of its own, and only `env` is added.
fn run_script(py: &PathBuf, script: &str, input: &Value, env: &[(&str, String)]) -> Value {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(py);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if ["NICOMPUTE_", "BT_", "WANDB_"].iter().any(|p| k.starts_with(p)) || k == "NETRC" {
            cmd.env_remove(&key);
        }
    }
    cmd.arg(root().join("tests/peers").join(script))
        .env("HOME", home.path())
        .env("WANDB_DIR", home.path())
        .env("WANDB_CONFIG_DIR", home.path())
        .env("WANDB_CACHE_DIR", home.path())
        .env("WANDB_DATA_DIR", home.path())
        // Anything not on loopback fails at once instead of leaving the machine.
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start python peer");
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{script} failed: {:?}", out.status);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{script} printed non-JSON ({e})"))
}

fn response_of(step_name: &str, operation: &str, nth: usize) -> Value {
    step(step_name).into_iter().filter(|r| r["operation"] == operation).nth(nth).expect("record")["response"]["body"]
        .clone()
}

/// A backend answering each document with the recorded answer for it.
async fn recorded_backend() -> Server {
    let runs = response_of("02_validators_allocated", "Runs", 0);
    let run = response_of("07_update_config", "Run", 0);
    let update = response_of("07_update_config", "UpsertBucket", 0);
    let summary = response_of("07_update_config", "UpsertBucket", 1);
    let create = response_of("08_create_run", "UpsertBucket", 0);
    let summary_doc = std::fs::read_to_string(fixtures().join("documents/UpsertBucket_2.graphql")).unwrap();
    Server::with_handler(move |req: &Recorded| {
        let q = req.json()["query"].as_str().unwrap_or_default().to_owned();
        let body = match q.as_str() {
            q if q == RUNS_QUERY => runs.clone(),
            q if q == RUN_QUERY => run.clone(),
            q if q == UPDATE_RUN_MUTATION => update.clone(),
            q if q == CREATE_RUN_MUTATION => create.clone(),
            q if q == summary_doc => summary.clone(),
            _ => return Answer { status: 400, body: json!({"errors": [{"message": format!("unexpected: {q}")}]}) },
        };
        Answer { status: 200, body }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_requests_equal_the_live_sdks() {
    let Some(py) = python("wandb0.19.0", "wandb") else { return };
    let allocated = wandb::sn27::allocated_filter(27);
    let by_name = wandb::sn27::run_name_filter(27, "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY");
    let set = json!({"allocated_hotkeys": ["5DAAnrj7VHTznn2AWBemMuyBwZWs6FNFjdyVXUeYum3PTXFy"],
                     "penalized_hotkeys": [], "signature": "ab".repeat(64), "note": "é ünïcode"});
    let display = "validator-5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty";

    // The SDK, through wandb_sdk.py.
    let sdk_server = recorded_backend().await;
    let spec = json!({"base_url": sdk_server.base_url(), "entity": "neuralinternet", "project": "opencompute", "ops": [
        {"op": "runs", "filters": allocated, "per_page": 50},
        {"op": "runs", "filters": by_name, "per_page": 2},
        {"op": "run", "id": "vbob0002"},
        {"op": "update", "id": "vbob0002", "set": set, "display_name": display},
        {"op": "create", "id": "crea0006"},
    ]});
    let out = tokio::task::spawn_blocking(move || {
        run_script(&py, "wandb_sdk.py", &spec, &[("WANDB_API_KEY", TEST_KEY.to_owned())])
    })
    .await
    .unwrap();
    let results = out["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r.get("error").is_none()), "the SDK failed: {out}");

    // Ours, the same operations.
    let ours_server = recorded_backend().await;
    let c = client(&ours_server.base_url());
    let ids: Vec<String> = c.runs(&allocated, 50).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(json!(ids), results[0]);
    let ids: Vec<String> = c.runs(&by_name, 2).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(json!(ids), results[1]);
    let run = c.run("vbob0002").await.unwrap().expect("run");
    assert_eq!(json!({"id": run.id, "config": run.config}), results[2], "the same config read");
    let mut run = c.run("vbob0002").await.unwrap().expect("run");
    run.display_name = Some(display.to_owned());
    for (k, v) in set.as_object().unwrap() {
        run.config.insert(k.clone(), v.clone());
    }
    c.update_run(&run).await.unwrap();
    assert_eq!(json!(c.create_run("crea0006").await.unwrap().id), results[4]);

    // Same requests, byte for byte, but for the SDK's summary re-write after update (skipped on
    // purpose, see WandbClient::update_run) and the User-Agent.
    let summary_doc = std::fs::read_to_string(fixtures().join("documents/UpsertBucket_2.graphql")).unwrap();
    let (sdk_summary, sdk): (Vec<Recorded>, Vec<Recorded>) =
        sdk_server.requests().into_iter().partition(|r| r.json()["query"] == summary_doc);
    assert_eq!(sdk_summary.len(), 1, "the SDK re-writes the summary once per update");
    let ours = ours_server.requests();
    assert_eq!(ours.len(), sdk.len(), "request count");
    for (i, (o, s)) in ours.iter().zip(&sdk).enumerate() {
        assert_eq!((o.method.as_str(), o.path.as_str()), (s.method.as_str(), s.path.as_str()), "request {i}");
        assert_eq!(String::from_utf8_lossy(&o.body), String::from_utf8_lossy(&s.body), "request {i} body");
        for h in ["authorization", "content-type", "accept", "use-admin-privileges", "content-length"] {
            assert_eq!(o.header(h), s.header(h), "request {i} header {h}");
        }
        assert_eq!(s.header("user-agent"), Some("W&B Public Client 0.19.0"));
    }
}

#[tokio::test]
async fn run_signatures_verify_both_ways_with_bittensor_wallet() {
    let Some(py) = python("bt9.0.0", "bittensor 9.0.0") else { return };
    let mnemonic = read_json("signature_example.json")["mnemonic"].as_str().unwrap().to_owned();
    let ours = Keypair::from_mnemonic(&mnemonic).unwrap();

    // Ours, checked by SN27's verify_run expression in Python.
    let sig = sign_run("q1w2e3r4", &ours);
    let verify = |run_id: &str, sig: &str| {
        run_script(
            &py,
            "wandb_sign.py",
            &json!({"op": "verify", "ss58": ours.ss58(), "run_id": run_id, "signature": sig}),
            &[],
        )["valid"]
            .clone()
    };
    assert_eq!(verify("q1w2e3r4", &sig), json!(true));
    assert_eq!(verify("q1w2e3r5", &sig), json!(false), "bound to the run id");

    // Python's (SN27's sign_run expression), checked by ours.
    let signed =
        run_script(&py, "wandb_sign.py", &json!({"op": "sign", "mnemonic": mnemonic, "run_id": "z9x8c7v6"}), &[]);
    assert_eq!(signed["ss58"], json!(ours.ss58()));
    let run = |id: &str| {
        let config = json!({"hotkey": {"value": signed["ss58"]}, "signature": {"value": signed["signature"]}});
        Run::from_node(&json!({"name": id, "config": config.to_string()})).unwrap()
    };
    assert!(verify_run(&run("z9x8c7v6")));
    assert!(!verify_run(&run("z9x8c7v7")));
}
