//! The union SN27 miners believe: recorded runs (one signed in Python, one unsigned) plus forged,
//! impostor, malformed and low-stake ones, served over several pages.

use std::collections::BTreeSet;

use bittensor::Keypair;
use serde_json::{json, Map, Value};
use wandb::{sign_run, Lists, Rejection, RUNS_QUERY};

use crate::server::{Answer, Recorded, Server};
use crate::{client, read_json, step};

const ALICE: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
const DAVE: &str = "5DAAnrj7VHTznn2AWBemMuyBwZWs6FNFjdyVXUeYum3PTXFy";
const EVE: &str = "5HGjWAeFDfFCWPsjFQdVV2Msvz2XtMktvgocEZcCj68kUMaw";
const PAGE: usize = 3;

/// A run node with this id and (unwrapped) config, stored wrapped as the backend does.
fn node(id: &str, config: Value) -> Value {
    let Value::Object(config) = config else { panic!("object") };
    let wrapped: Map<String, Value> = config.into_iter().map(|(k, v)| (k, json!({"desc": null, "value": v}))).collect();
    json!({"id": format!("S:{id}"), "name": id, "displayName": "validator-x", "sweepName": null, "state": "running",
           "config": Value::Object(wrapped).to_string()})
}

fn signed(id: &str, key: &Keypair, allocated: Value, penalized: Value) -> Value {
    node(
        id,
        json!({"hotkey": key.ss58(), "role": "validator", "config": {"netuid": 27},
        "allocated_hotkeys": allocated, "penalized_hotkeys": penalized, "signature": sign_run(id, key)}),
    )
}

/// Serves `runs` filtered by the `$exists` key of the query's filter, `PAGE` per page.
async fn project(runs: Vec<Value>) -> Server {
    Server::with_handler(move |req: &Recorded| {
        let body = req.json();
        assert_eq!(body["query"], RUNS_QUERY);
        let vars = &body["variables"];
        let filter: Value = serde_json::from_str(vars["filters"].as_str().unwrap()).unwrap();
        let list_key =
            filter["$and"][2].as_object().unwrap().keys().next().unwrap().trim_start_matches("config.").to_owned();
        let matching: Vec<&Value> = runs
            .iter()
            .filter(|n| {
                let cfg: Value = serde_json::from_str(n["config"].as_str().unwrap()).unwrap();
                cfg.get(&list_key).is_some()
            })
            .collect();
        let start = vars["cursor"].as_str().map_or(0, |c| c.trim_start_matches('c').parse::<usize>().unwrap() + 1);
        let end = (start + PAGE).min(matching.len());
        let edges: Vec<Value> = (start..end).map(|i| json!({"node": matching[i], "cursor": format!("c{i}")})).collect();
        Answer {
            status: 200,
            body: json!({"data": {"project": {"runCount": matching.len(), "readOnly": false, "runs": {"edges": edges,
                "pageInfo": {"endCursor": format!("c{}", end.max(1) - 1), "hasNextPage": end < matching.len()}}}}}),
        }
    })
    .await
}

#[tokio::test]
async fn union_counts_only_runs_signed_by_accepted_validators() {
    let recorded = step("02_validators_allocated")[0]["response"]["body"]["data"]["project"]["runs"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect::<Vec<_>>();
    assert_eq!(recorded.len(), 2, "vali0001 (signed by //Alice in Python) and vbob0002 (unsigned)");
    let ours = Keypair::from_mnemonic(read_json("signature_example.json")["mnemonic"].as_str().unwrap()).unwrap();
    let low_stake = Keypair::from_seed(&[9; 32]).unwrap();

    // vali0001's config, signature included, copied onto another run: the signature binds the id.
    let mut copied = recorded[0].clone();
    copied["name"] = json!("copy0001");
    // A run claiming //Alice's hotkey, signed by another key.
    let mut impostor = signed("impo0001", &ours, json!([EVE]), json!([]));
    let cfg = impostor["config"].as_str().unwrap().replace(&ours.ss58(), ALICE);
    impostor["config"] = json!(cfg);

    let runs = vec![
        recorded[0].clone(),
        recorded[1].clone(),
        copied,
        impostor,
        node("badh0001", json!({"hotkey": ours.ss58(), "allocated_hotkeys": [EVE], "signature": "zz"})),
        signed("ours0001", &ours, json!(["5X1", "5X2"]), json!([])),
        signed("lows0001", &low_stake, json!(["5LOW"]), json!(["5LOWP"])),
        signed("mall0001", &ours, json!("5NOTALIST"), json!([])),
    ];
    let server = project(runs).await;
    let c = client(&server.base_url());
    let low = low_stake.account_id();
    let state = c.shared_state(27, Lists::Both, |a| *a != low).await.unwrap();

    assert_eq!(state.allocated, BTreeSet::from([DAVE.to_owned(), "5X1".to_owned(), "5X2".to_owned()]));
    assert_eq!(state.penalized, BTreeSet::from([EVE.to_owned()]));
    // ours0001 counts in both queries, once; mall0001's penalized list is fine but the run is
    // rejected for its allocated one. Each run is counted or rejected, once.
    assert_eq!(state.runs_counted, 2);
    let rejected: Vec<(&str, &Rejection)> = state.runs_rejected.iter().map(|(id, why)| (id.as_str(), why)).collect();
    assert_eq!(
        rejected,
        vec![
            ("vbob0002", &Rejection::Unsigned),
            ("copy0001", &Rejection::BadSignature),
            ("impo0001", &Rejection::BadSignature),
            ("badh0001", &Rejection::MalformedSignature),
            ("lows0001", &Rejection::NotAValidator),
            ("mall0001", &Rejection::MalformedList("allocated_hotkeys")),
        ]
    );

    // One paginated sequence per list, SN27's filters, cursor = the last edge's.
    let reqs: Vec<Value> = server.requests().iter().map(|r| r.json()["variables"].clone()).collect();
    let seq: Vec<(String, Value)> = reqs
        .iter()
        .map(|v| {
            let f: Value = serde_json::from_str(v["filters"].as_str().unwrap()).unwrap();
            (f["$and"][2].as_object().unwrap().keys().next().unwrap().clone(), v["cursor"].clone())
        })
        .collect();
    assert_eq!(
        seq,
        vec![
            ("config.allocated_hotkeys".to_owned(), Value::Null),
            ("config.allocated_hotkeys".to_owned(), json!("c2")),
            ("config.allocated_hotkeys".to_owned(), json!("c5")),
            ("config.penalized_hotkeys".to_owned(), Value::Null),
            ("config.penalized_hotkeys".to_owned(), json!("c2")),
            ("config.penalized_hotkeys".to_owned(), json!("c5")),
        ]
    );
    assert!(reqs.iter().all(|v| v["perPage"] == 50 && v["order"] == "+created_at"));
    assert_eq!(
        serde_json::from_str::<Value>(reqs[0]["filters"].as_str().unwrap()).unwrap(),
        json!({"$and": [{"config.role": "validator"}, {"config.config.netuid": 27}, {"config.allocated_hotkeys": {"$exists": true}}]})
    );

    // Accepting no validator leaves nothing, and says why for every signed run.
    let none = c.shared_state(27, Lists::Allocated, |_| false).await.unwrap();
    assert!(none.allocated.is_empty() && none.runs_counted == 0);
    assert!(none.runs_rejected.iter().any(|(id, why)| id == "vali0001" && *why == Rejection::NotAValidator));
}

#[tokio::test]
async fn an_empty_page_claiming_more_is_an_error_not_a_loop() {
    let server = Server::scripted(vec![Answer {
        status: 200,
        body: json!({"data": {"project": {"runCount": 5, "readOnly": false,
            "runs": {"edges": [], "pageInfo": {"endCursor": null, "hasNextPage": true}}}}}),
    }])
    .await;
    let err = client(&server.base_url()).shared_state(27, Lists::Allocated, |_| true).await.unwrap_err();
    assert!(matches!(err, wandb::WandbError::Protocol { .. }), "{err:?}");
}

#[test]
fn signature_example_verifies_and_its_negative_cases_do_not() {
    let ex = read_json("signature_example.json");
    let run = |id: &str, hotkey: &str, sig: &str| {
        let node = json!({"name": id, "config": json!({"hotkey": {"value": hotkey}, "signature": {"value": sig}}).to_string()});
        wandb::Run::from_node(&node).unwrap()
    };
    let ss58 = ex["ss58_address"].as_str().unwrap();
    let id = ex["run_id"].as_str().unwrap();
    for key in ["signature_hex", "signature_hex_second_signing"] {
        assert!(wandb::verify_run(&run(id, ss58, ex[key].as_str().unwrap())), "{key}");
    }
    for case in ex["negative_and_edge_cases"].as_array().unwrap() {
        let hotkey = case.get("hotkey").and_then(Value::as_str).unwrap_or(ss58);
        let r = run(case["run_id"].as_str().unwrap(), hotkey, case["signature_hex"].as_str().unwrap());
        assert_eq!(wandb::verify_run(&r), case["expected_verify"].as_bool().unwrap(), "{}", case["case"]);
    }
    let alice = &ex["alice_example"];
    assert!(wandb::verify_run(&run(
        alice["run_id"].as_str().unwrap(),
        alice["ss58_address"].as_str().unwrap(),
        alice["signature_hex"].as_str().unwrap()
    )));
    // Our key from the same mnemonic is the same account.
    let ours = Keypair::from_mnemonic(ex["mnemonic"].as_str().unwrap()).unwrap();
    assert_eq!(ours.ss58(), ss58);
    assert!(wandb::verify_run(&run(id, ss58, &sign_run(id, &ours))));
}
