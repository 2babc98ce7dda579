//! Our requests against the real `wandb==0.19.0` SDK's recorded requests for the same operations,
//! answered with the recorded answers; the recorded error answers mapped to our errors.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wandb::{sn27, Lists, RetryPolicy, WandbClient, WandbError};

use crate::server::Server;
use crate::{answers, assert_same_request, client, config, fixtures, step, TEST_KEY};

fn document(name: &str) -> String {
    std::fs::read_to_string(fixtures().join("documents").join(name)).expect("document")
}

#[test]
fn documents_are_the_sdks_byte_for_byte() {
    assert_eq!(wandb::RUNS_QUERY, document("Runs.graphql"));
    assert_eq!(wandb::RUN_QUERY, document("Run.graphql"));
    assert_eq!(wandb::UPDATE_RUN_MUTATION, document("UpsertBucket.graphql"));
    assert_eq!(wandb::CREATE_RUN_MUTATION, document("UpsertBucket_3.graphql"));
}

/// Serves a step's recorded answers to `f`, then compares every request with the recording.
async fn replay<F, Fut, T>(name: &str, prefix: &str, f: F) -> (T, usize)
where
    F: FnOnce(WandbClient) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let sdk = step(name);
    let server = Server::scripted(answers(&sdk)).await;
    let out = f(client(&format!("{}{prefix}", server.base_url()))).await;
    let ours = server.requests();
    for (o, s) in ours.iter().zip(&sdk) {
        assert_same_request(o, s);
    }
    (out, ours.len())
}

#[tokio::test]
async fn allocated_union_sends_sn27s_runs_query() {
    let (state, n) = replay("02_validators_allocated", "", |c| async move {
        c.shared_state(27, Lists::Allocated, |_| true).await.unwrap()
    })
    .await;
    assert_eq!(n, 1);
    // vali0001 (//Alice, signed in Python) allocates //Dave; vbob0002 is unsigned and left out.
    assert_eq!(state.allocated.into_iter().collect::<Vec<_>>(), ["5DAAnrj7VHTznn2AWBemMuyBwZWs6FNFjdyVXUeYum3PTXFy"]);
    assert_eq!(state.runs_counted, 1);
    assert_eq!(state.runs_rejected, vec![("vbob0002".to_owned(), wandb::Rejection::Unsigned)]);
    assert!(state.penalized.is_empty(), "only the allocated list was asked for");
}

#[tokio::test]
async fn validator_run_is_found_by_display_name() {
    let alice = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
    let (run, n) =
        replay("04_find_by_display_name", "", |c| async move { c.find_validator_run(alice, 27, None).await.unwrap() })
            .await;
    assert_eq!(n, 1);
    let run = run.expect("found");
    assert_eq!(run.id, "vali0001");
    assert_eq!(run.display_name.as_deref(), Some(&*format!("validator-{alice}")));
    assert!(sn27::verify_run(&run));

    let (none, n) = replay("04b_find_by_display_name_no_match", "", |c| async move {
        c.find_validator_run("5NoSuchHotkey", 27, None).await.unwrap()
    })
    .await;
    assert_eq!((none, n), (None, 1));
}

#[tokio::test]
async fn run_by_id_and_missing_run() {
    let (run, n) =
        replay("05b_run_by_path_entity_in_overrides", "", |c| async move { c.run("vali0001").await.unwrap() }).await;
    assert_eq!(n, 1);
    let run = run.expect("run");
    let cfg = sn27::ValidatorRunConfig::from_run(&run);
    assert_eq!(cfg.hotkey.as_deref(), Some("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"));
    assert_eq!((cfg.netuid(), cfg.version, cfg.role.as_deref()), (Some(27), Some(183), Some("validator")));
    assert!(run.config.contains_key("stats") && run.wandb_internal.is_some());
    assert!(!run.config.contains_key("_wandb"), "_wandb is not user config");

    let (missing, n) =
        replay("05c_run_by_path_not_found", "", |c| async move { c.run("doesnotexist").await.unwrap() }).await;
    assert_eq!((missing, n), (None, 1));
}

#[tokio::test]
async fn pagination_follows_the_last_edge_cursor() {
    let filter = json!({"$and": [{"config.role": "validator"}, {"config.config.netuid": 27}]});
    let (runs, n) = replay("06_pagination_per_page_2", "", |c| async move { c.runs(&filter, 2).await.unwrap() }).await;
    assert_eq!(n, 2, "two pages");
    assert_eq!(runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["vali0001", "vbob0002", "vcha0003"]);
}

/// The values the SDK driver set, unwrapped from the config it sent.
fn sent_config(record: &Value) -> serde_json::Map<String, Value> {
    let text = record["body"]["variables"]["config"].as_str().unwrap();
    let Value::Object(wrapped) = serde_json::from_str::<Value>(text).unwrap() else { panic!("object") };
    wrapped.into_iter().filter(|(k, _)| k != "_wandb").map(|(k, v)| (k, v["value"].clone())).collect()
}

#[tokio::test]
async fn config_update_is_the_sdks_whole_config_write() {
    let sdk = step("07_update_config");
    let upsert = sdk.iter().find(|r| r["operation"] == "UpsertBucket").unwrap().clone();
    // The SDK's read and its config write; not its summary re-write (see update_run's docs).
    let (_, n) = replay("07_update_config", "", |c| async move {
        let mut run = c.run("vbob0002").await.unwrap().expect("run");
        for (k, v) in sent_config(&upsert) {
            run.config.insert(k, v);
        }
        c.update_run(&run).await.unwrap();
    })
    .await;
    assert_eq!(n, 2);
}

#[tokio::test]
async fn create_then_write_config_like_the_sdk() {
    let sdk = step("08_create_run");
    // SDK: create (41), reload (45: its update() fails on the object create_run returns), write
    // (46), summary (47). Ours: create and write.
    let create = sdk[0].clone();
    let write = sdk.iter().find(|r| r["body"]["variables"].get("config").is_some()).unwrap().clone();
    let server = Server::scripted(answers(&[create.clone(), write.clone()])).await;
    let c = client(&server.base_url());
    let mut run = c.create_run("crea0006").await.unwrap();
    assert_eq!(run.storage_id.as_deref(), Some("UnVuOnYxOmNyZWEwMDA2Om9wZW5jb21wdXRlOm5ldXJhbGludGVybmV0"));
    run.display_name = write["body"]["variables"]["display_name"].as_str().map(str::to_owned);
    run.config = sent_config(&write);
    c.update_run(&run).await.unwrap();
    let ours = server.requests();
    assert_eq!(ours.len(), 2);
    assert_same_request(&ours[0], &create);
    assert_same_request(&ours[1], &write);
}

#[tokio::test]
async fn minimal_answers_are_read() {
    let sdk = step("11_minimal_answers");
    let server = Server::scripted(answers(&sdk)).await;
    let c = client(&format!("{}/minimal", server.base_url()));
    let state = c.shared_state(27, Lists::Allocated, |_| true).await.unwrap();
    assert_eq!(state.runs_counted, 1);
    let run = c.run("vali0001").await.unwrap().expect("run");
    assert!(run.storage_id.is_none() && sn27::verify_run(&run));
    for (o, s) in server.requests().iter().zip(&sdk) {
        assert_same_request(o, s);
    }
}

/// The error, after checking the request is the SDK's and the key appears nowhere in it.
async fn error_of(name: &str, prefix: &str, runs: bool) -> (WandbError, usize) {
    let (err, n) = replay(name, prefix, |c| async move {
        if runs {
            // The capture's error steps list SN27's running miners.
            let miners =
                json!({"$and": [{"config.role": "miner"}, {"config.config.netuid": 27}, {"state": "running"}]});
            c.runs(&miners, 50).await.map(drop).unwrap_err()
        } else {
            c.run("vali0001").await.map(drop).unwrap_err()
        }
    })
    .await;
    assert_key_hidden(&err);
    (err, n)
}

fn assert_key_hidden(err: &WandbError) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("api:{TEST_KEY}"));
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(TEST_KEY) && !text.contains(&b64), "key in {text}");
    }
}

#[tokio::test]
async fn http_errors_map_to_what_the_user_must_do() {
    let (err, n) = error_of("10_err401_run", "/err401", false).await;
    assert!(matches!(err, WandbError::BadApiKey { .. }) && n == 1, "{err:?}");
    assert!(err.to_string().contains("/err401/graphql") && err.to_string().contains("WANDB_API_KEY"));
    assert!(!err.is_transient());

    let (err, _) = error_of("10_err401_runs", "/err401", true).await;
    assert!(matches!(err, WandbError::BadApiKey { .. }), "{err:?}");

    let (err, n) = error_of("10_err403_run", "/err403", false).await;
    assert!(matches!(&err, WandbError::Forbidden { message, .. } if message == "permission denied") && n == 1);

    let (err, n) = error_of("10_err404_run", "/err404", false).await;
    assert!(matches!(&err, WandbError::ProjectNotFound { message, .. } if message == "project not found") && n == 1);
    assert!(err.to_string().contains("neuralinternet/opencompute"), "{err}");
    let (err, _) = error_of("10_err404_runs", "/err404", true).await;
    assert!(matches!(err, WandbError::ProjectNotFound { .. }));

    let (err, n) = error_of("10_err400_run", "/err400", false).await;
    assert!(matches!(err, WandbError::Rejected { status: 400, .. }) && n == 1, "{err:?}");
}

#[tokio::test]
async fn graphql_errors_are_not_retried() {
    for (name, runs) in [("10_gqlerr_run", false), ("10_gqlerr_runs", true)] {
        let (err, n) = error_of(name, "/gqlerr", runs).await;
        assert_eq!(n, 1);
        assert!(
            matches!(&err, WandbError::GraphQl { message, .. } if message == "run not found: opencompute/doesnotexist"),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_reported() {
    // The SDK tried 6 times (+0, 1.0, 3.4, 8.4, 17.0, 34.2 s). Same schedule, scaled to 10 ms.
    let sdk = step("10_err500_run");
    let gaps: Vec<f64> = sdk.windows(2).map(|w| w[1]["t"].as_f64().unwrap() - w[0]["t"].as_f64().unwrap()).collect();
    assert_eq!(sdk.len(), 6);
    let server = Server::scripted(answers(&sdk)).await;
    let mut cfg = config(&format!("{}/err500", server.base_url()));
    cfg.retry = RetryPolicy { initial_backoff: Duration::from_millis(10), max_elapsed: Duration::from_millis(300) };
    let c = WandbClient::with_key(cfg, wandb::ApiKey::new(TEST_KEY)).unwrap();
    let started = Instant::now();
    let err = c.run("vali0001").await.unwrap_err();
    let ours = server.requests();
    assert!(
        matches!(&err, WandbError::Server { status: 500, attempts, message, .. }
            if *attempts as usize == ours.len() && message == "internal server error"),
        "{err:?}"
    );
    assert!(err.is_transient());
    // Pauses of 10, 20, 40, 80, 160 ms (+≤25 %) with a 300 ms budget checked after each attempt:
    // after the 5th at most 188 ms of pauses have passed (so over 100 ms are left for the
    // requests themselves on a loaded machine), after the 6th at least 310 ms: 6 attempts, as the
    // SDK made, whatever the machine's speed.
    assert_eq!(ours.len(), 6, "SDK gaps were {gaps:?}");
    assert!(started.elapsed() >= Duration::from_millis(310), "{:?}", started.elapsed());
    for (o, s) in ours.iter().zip(&sdk) {
        assert_same_request(o, s);
    }
    assert_key_hidden(&err);
}

#[tokio::test]
async fn a_single_server_error_is_recovered() {
    let (run, n) = replay("10_flaky500_run", "/flaky500", |c| async move { c.run("vali0001").await.unwrap() }).await;
    assert_eq!(n, 2);
    assert_eq!(run.expect("run").id, "vali0001");
}

#[tokio::test]
async fn network_down_and_timeouts_are_reported_with_the_endpoint() {
    // A port nothing listens on, held (bound, not listening) so nothing else can take it.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = closed.local_addr().unwrap().port();
    let c = client(&format!("http://127.0.0.1:{port}"));
    let err = c.run("x").await.unwrap_err();
    assert!(matches!(&err, WandbError::Unreachable { attempts, .. } if *attempts > 1), "{err:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}/graphql")), "{err}");
    assert!(err.is_transient());
    assert_key_hidden(&err);

    // A server that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut cfg = config(&format!("http://{addr}"));
    cfg.timeout = Duration::from_millis(100);
    cfg.retry = RetryPolicy::NONE;
    let c = WandbClient::with_key(cfg, wandb::ApiKey::new(TEST_KEY)).unwrap();
    let started = Instant::now();
    let err = c.run("x").await.unwrap_err();
    assert!(matches!(err, WandbError::Timeout { attempts: 1, .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    hold.abort();
}

#[test]
fn base_url_is_the_callers_or_the_public_api() {
    let cfg = wandb::WandbConfig::with_base_url("http://127.0.0.1:9/");
    assert_eq!(cfg.base_url, "http://127.0.0.1:9/");
    assert_eq!(cfg.api_host().unwrap(), "127.0.0.1");
    let dflt = wandb::WandbConfig::default();
    assert_eq!(
        (dflt.base_url.as_str(), dflt.entity.as_str(), dflt.project.as_str()),
        ("https://api.wandb.ai", "neuralinternet", "opencompute")
    );
    assert_eq!(dflt.api_host().unwrap(), "api.wandb.ai");
    let debug = format!("{:?}", client("http://127.0.0.1:9"));
    assert!(debug.contains("127.0.0.1:9/graphql") && !debug.contains(TEST_KEY), "{debug}");
}
