//! Publishing our allocated/penalized list: find (stored id, else by name) or create the run, then
//! one whole-config write that keeps every key we do not own and carries a signature SN27 accepts.

use std::sync::{Arc, Mutex};

use bittensor::Keypair;
use serde_json::{json, Value};
use wandb::{sn27, Publication, Run, CREATE_RUN_MUTATION, RUNS_QUERY, RUN_QUERY, UPDATE_RUN_MUTATION};

use crate::server::{Answer, Recorded, Server};
use crate::{client, read_json, step};

fn our_key() -> Keypair {
    Keypair::from_mnemonic(read_json("signature_example.json")["mnemonic"].as_str().unwrap()).unwrap()
}

fn ok(data: Value) -> Answer {
    Answer { status: 200, body: json!({"data": data}) }
}

fn empty_page() -> Value {
    json!({"project": {"runCount": 0, "readOnly": false,
        "runs": {"edges": [], "pageInfo": {"endCursor": null, "hasNextPage": false}}}})
}

/// A fake backend that answers by document: `run` for Run (or null), `by_name` for Runs, and
/// echoes creates; every update is kept.
async fn backend(run: Option<Value>, by_name: Vec<Value>) -> Server {
    Server::with_handler(move |req: &Recorded| {
        let body = req.json();
        let query = body["query"].as_str().unwrap_or_default();
        let vars = &body["variables"];
        if query == RUN_QUERY {
            ok(json!({"project": {"run": run.clone()}}))
        } else if query == RUNS_QUERY {
            let edges: Vec<Value> =
                by_name.iter().enumerate().map(|(i, n)| json!({"node": n, "cursor": format!("c{i}")})).collect();
            ok(json!({"project": {"runCount": edges.len(), "readOnly": false,
                "runs": {"edges": edges, "pageInfo": {"endCursor": null, "hasNextPage": false}}}}))
        } else if query == CREATE_RUN_MUTATION {
            let name = vars["name"].as_str().unwrap();
            ok(json!({"upsertBucket": {"bucket": {"project": {"name": "opencompute", "entity": {"name": "neuralinternet"}},
                "id": format!("S:{name}"), "name": name}, "inserted": true}}))
        } else if query == UPDATE_RUN_MUTATION {
            ok(json!({"upsertBucket": {"bucket": {"id": vars["id"], "name": vars["name"]}}}))
        } else {
            Answer { status: 400, body: json!({"errors": [{"message": "unexpected document"}]}) }
        }
    })
    .await
}

fn queries(server: &Server) -> Vec<&'static str> {
    server
        .requests()
        .iter()
        .map(|r| match r.json()["query"].as_str().unwrap() {
            q if q == RUN_QUERY => "Run",
            q if q == RUNS_QUERY => "Runs",
            q if q == CREATE_RUN_MUTATION => "Create",
            q if q == UPDATE_RUN_MUTATION => "Update",
            _ => "?",
        })
        .collect()
}

/// The run the last update wrote, as a reader would see it.
fn written(server: &Server) -> (Value, Run) {
    let last = server.requests().last().unwrap().json();
    let vars = last["variables"].clone();
    let node =
        json!({"name": vars["name"], "id": vars["id"], "displayName": vars["display_name"], "config": vars["config"]});
    (vars, Run::from_node(&node).unwrap())
}

#[tokio::test]
async fn first_publication_creates_the_run_and_signs_it() {
    let server = backend(None, vec![]).await;
    let c = client(&server.base_url());
    let key = our_key();
    let dave = "5DAAnrj7VHTznn2AWBemMuyBwZWs6FNFjdyVXUeYum3PTXFy".to_owned();
    let published = c.publish(&key, 27, None, &Publication::Allocated(vec![dave.clone()])).await.unwrap();
    assert!(published.created);
    assert_eq!(queries(&server), ["Runs", "Create", "Update"]);
    let runs_vars = server.requests()[0].json()["variables"].clone();
    let filter: Value = serde_json::from_str(runs_vars["filters"].as_str().unwrap()).unwrap();
    assert_eq!(
        filter,
        json!({"$and": [{"config.config.netuid": 27}, {"display_name": format!("validator-{}", key.ss58())}]})
    );

    let (vars, run) = written(&server);
    assert_eq!(run.id, published.run_id);
    assert_eq!(vars["id"], format!("S:{}", published.run_id));
    assert_eq!(vars["display_name"], format!("validator-{}", key.ss58()));
    // Keys in SN27's order, nothing else.
    assert_eq!(
        run.config.keys().collect::<Vec<_>>(),
        ["hotkey", "role", "config", "version", "allocated_hotkeys", "signature"]
    );
    assert_eq!(run.config["config"], json!({"netuid": 27}));
    assert_eq!(run.config["version"], json!(183));
    assert_eq!(run.config["allocated_hotkeys"], json!([dave]));
    assert_eq!(sn27::check_run(&run), Ok(key.account_id()));
    assert_eq!(run.config["signature"], json!(published.signature));
}

#[tokio::test]
async fn republication_keeps_keys_we_do_not_own() {
    // vali0001 as recorded: _wandb, stats, penalized_hotkeys_checklist, a full CLI config.
    let node = step("05b_run_by_path_entity_in_overrides")[0]["response"]["body"]["data"]["project"]["run"].clone();
    let before = Run::from_node(&node).unwrap();
    let server = backend(Some(node), vec![]).await;
    let c = client(&server.base_url());
    let key = our_key();
    let eve = "5HGjWAeFDfFCWPsjFQdVV2Msvz2XtMktvgocEZcCj68kUMaw".to_owned();
    let published = c.publish(&key, 27, Some("vali0001"), &Publication::Penalized(vec![eve.clone()])).await.unwrap();
    assert_eq!((published.run_id.as_str(), published.created), ("vali0001", false));
    assert_eq!(queries(&server), ["Run", "Update"], "the stored id is used, nothing searched or created");

    let (vars, after) = written(&server);
    assert_eq!(vars["id"], before.storage_id.clone().unwrap());
    assert_eq!(after.wandb_internal, before.wandb_internal, "_wandb is written back");
    assert_eq!(
        after.config.keys().collect::<Vec<_>>(),
        before.config.keys().collect::<Vec<_>>(),
        "same keys, same order"
    );
    for k in ["stats", "penalized_hotkeys_checklist", "allocated_hotkeys", "role", "version"] {
        assert_eq!(after.config[k], before.config[k], "{k} kept");
    }
    assert_eq!(after.config["config"], before.config["config"], "the validator's CLI config is kept");
    assert_eq!(after.config["penalized_hotkeys"], json!([eve]));
    assert_eq!(after.config["hotkey"], json!(key.ss58()));
    assert!(sn27::verify_run(&after));
    assert!(!sn27::verify_run(&Run { id: "vali0002".into(), ..after }), "bound to the run id");
}

#[tokio::test]
async fn a_stored_run_that_is_gone_is_found_by_name() {
    let key = our_key();
    let mine = json!({"name": "mine0001", "id": "S:mine0001", "displayName": format!("validator-{}", key.ss58()),
        "sweepName": null, "config": "{\"role\": {\"desc\": null, \"value\": \"validator\"}}"});
    let server = backend(None, vec![mine]).await;
    let c = client(&server.base_url());
    let published = c.publish(&key, 27, Some("gone0001"), &Publication::Allocated(vec![])).await.unwrap();
    assert_eq!((published.run_id.as_str(), published.created), ("mine0001", false));
    assert_eq!(queries(&server), ["Run", "Runs", "Update"]);
    let (_, run) = written(&server);
    assert_eq!(run.config["allocated_hotkeys"], json!([]));
    assert!(sn27::verify_run(&run));
}

#[tokio::test]
async fn a_failed_write_reports_and_changes_nothing_else() {
    // The update is refused: publish fails with the server's error; the caller keeps its state
    // and retries later (nothing here is cached between calls).
    let calls = Arc::new(Mutex::new(0));
    let seen = calls.clone();
    let server = Server::with_handler(move |req: &Recorded| {
        *seen.lock().unwrap() += 1;
        if req.json()["query"] == RUNS_QUERY {
            ok(empty_page())
        } else if req.json()["query"] == CREATE_RUN_MUTATION {
            ok(json!({"upsertBucket": {"bucket": {"id": "S:x", "name": req.json()["variables"]["name"]}, "inserted": true}}))
        } else {
            Answer { status: 403, body: json!({"errors": [{"message": "permission denied"}]}) }
        }
    })
    .await;
    let c = client(&server.base_url());
    let err = c.publish(&our_key(), 27, None, &Publication::Allocated(vec!["a".into()])).await.unwrap_err();
    assert!(matches!(err, wandb::WandbError::Forbidden { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(*calls.lock().unwrap(), 3);
}
