//! Ctrl-C during `nicompute a`: the only matching miner is an axon of the test's own that says
//! yes to the check and then sits on the allocate request. SIGINT while it sits must end the
//! command with an error about the interruption, release the half-made allocation with the same
//! key it was requested with, and leave no row behind.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bittensor::axon::{Axon, AxonConfig, HandlerError, Request};
use bittensor::devnet::ops;
use compute::protocol::{Allocate, Specs as SpecsSynapse};
use compute::specs::{DetectOptions, SimulatedGpu};
use serde_json::{json, Map, Value};

use crate::renter_world::{count_rows, json as json_of, text, World, H100};

/// The public keys the slow axon saw in allocate and in deallocate requests.
#[derive(Debug, Default)]
struct Seen {
    allocate: Vec<String>,
    deallocate: Vec<String>,
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Checks: yes. Allocate: sits 30 s, then says no. Deallocate: records the key, says yes.
async fn slow_allocate(req: Request<Allocate>, seen: Arc<Mutex<Seen>>) -> Result<Allocate, HandlerError> {
    let mut s = req.synapse;
    if s.checking {
        s.output = object(json!({"status": true}));
    } else if s.timeline > 0 {
        seen.lock().unwrap_or_else(|e| e.into_inner()).allocate.push(s.public_key.clone());
        tokio::time::sleep(Duration::from_secs(30)).await;
        s.output = object(json!({"status": false, "reason": "too slow"}));
    } else {
        seen.lock().unwrap_or_else(|e| e.into_inner()).deallocate.push(s.public_key.clone());
        s.output = object(json!({"status": true}));
    }
    Ok(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_a_releases_the_half_made_allocation() {
    let mut w = World::new().await;
    let m = w.add_miner().await;

    // The slow miner: specs of a simulated H100 80GB, and the Allocate behaviour above.
    let sim: SimulatedGpu = H100.parse().expect("gpu");
    let specs = compute::specs::detect(&DetectOptions { simulate_gpu: Some(sim), ..Default::default() }).await;
    let specs_json = specs.to_json_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen_by_axon = seen.clone();
    let axon = Axon::new(m.key.clone())
        .attach(move |req: Request<SpecsSynapse>| {
            let specs_json = specs_json.clone();
            async move {
                let mut s = req.synapse;
                s.specs_output = specs_json;
                Ok(s)
            }
        })
        .attach(move |req: Request<Allocate>| slow_allocate(req, seen_by_axon.clone()))
        .spawn(AxonConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..AxonConfig::default() })
        .await
        .expect("axon");
    let port = axon.local_addr().port();
    ops::serve_axon(&w.client, &m.key, 27, "127.0.0.1".parse().expect("ip"), port, 9_000_000).await.expect("serve");

    let out = w.cli(&["sync", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json_of(&out)["answered"], 1, "{}", text(&out.stdout));

    let mut cmd = w.command();
    cmd.args(w.global_args())
        .args(["a", "--gpu_type", "h100", "--gpu_size", "80", "--no-ssh-key"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn a");
    let pid = child.id();
    let finished = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"));

    // Ctrl-C once the miner holds the allocate request.
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.lock().unwrap_or_else(|e| e.into_inner()).allocate.is_empty() {
        assert!(!finished.is_finished(), "`a` ended before it asked to allocate");
        assert!(Instant::now() < deadline, "the allocate request never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::spawn_blocking(move || crate::harness::signal(pid, "-INT")).await.expect("join");
    let out = finished.await.expect("join");

    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stdout: {}\nstderr: {stderr}", text(&out.stdout));
    assert!(stderr.contains("interrupted") && stderr.contains("1 half-made allocation(s) released"), "{stderr}");
    {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(seen.allocate.len(), 1, "{seen:?}");
        assert_eq!(seen.deallocate, seen.allocate, "the release carries the allocation's own key");
    }
    let out = w.cli(&["list_a", "--json"]).await;
    assert_eq!(json_of(&out), json!([]), "no allocation is listed");
    assert_eq!(count_rows(&w.db(), "allocation"), 0);
    assert_eq!(count_rows(&w.db(), "nc_allocation_meta"), 0, "no half-written state row");

    axon.shutdown().await;
    w.chain.shutdown().await;
}
