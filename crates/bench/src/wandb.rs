//! `wandb`: reading SN27's shared allocation state (`list_r`'s Status column) from a local
//! endpoint serving 100 signed validator runs, paginated as the wandb backend does (50 per page,
//! cursor of the last edge), each run with a `stats` blob like real validators publish (256 UIDs),
//! so pages weigh what they weigh on the real project. Measures `WandbClient::shared_state` end to
//! end — a new client and connection each time, both pages, JSON parsing, 100 sr25519
//! verifications — and prints p50/p90/max against the issue's target (< 1 s).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::wandb::{sign_run, ApiKey, Lists, RetryPolicy, WandbClient, WandbConfig};
use anyhow::{ensure, Result};
use bittensor::Keypair;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};

/// Benchmark options.
#[derive(Debug)]
pub struct Options {
    pub runs: usize,
    pub iterations: usize,
    pub stats_uids: usize,
}

/// One validator run node as the backend stores it (config wrapped per key, JSON text).
fn run_node(i: usize, key: &Keypair, stats_uids: usize) -> Value {
    let id = format!("v{i:07}");
    let allocated: Vec<String> =
        (0..10).filter_map(|j| Keypair::from_seed(&[(i * 10 + j) as u8; 32]).ok().map(|k| k.ss58())).collect();
    let stats: Map<String, Value> = (0..stats_uids)
        .map(|uid| {
            (
                uid.to_string(),
                json!({"uid": uid, "hotkey": key.ss58(), "gpu_name": "NVIDIA H100 80GB HBM3", "gpu_num": 8,
                "score": 12.5, "allocated": uid % 7 == 0, "own_score": true, "reliability_score": 0.97,
                "created_at": "2025-01-01T00:00:00"}),
            )
        })
        .collect();
    let config = json!({
        "hotkey": key.ss58(), "role": "validator",
        "config": {"netuid": 27, "subtensor": {"network": "finney"}},
        "version": 183, "allocated_hotkeys": allocated, "penalized_hotkeys": [],
        "stats": stats, "signature": sign_run(&id, key),
    });
    let Value::Object(config) = config else { unreachable!("an object literal") };
    let wrapped: Map<String, Value> = config.into_iter().map(|(k, v)| (k, json!({"desc": null, "value": v}))).collect();
    json!({"id": format!("S:{id}"), "tags": [], "name": id, "displayName": format!("validator-{}", key.ss58()),
        "sweepName": null, "state": "running", "config": Value::Object(wrapped).to_string(), "summaryMetrics": "{}"})
}

/// The pages the backend would send, keyed by the cursor that asks for them.
fn pages(nodes: &[Value], per_page: usize) -> Vec<(Option<String>, Bytes)> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + per_page).min(nodes.len());
        let edges: Vec<Value> = (start..end).map(|i| json!({"node": nodes[i], "cursor": format!("c{i}")})).collect();
        let has_next = end < nodes.len();
        let body = json!({"data": {"project": {"runCount": nodes.len(), "readOnly": false, "runs": {"edges": edges,
            "pageInfo": {"endCursor": format!("c{}", end.saturating_sub(1)), "hasNextPage": has_next}}}}});
        let cursor = (start > 0).then(|| format!("c{}", start - 1));
        out.push((cursor, Bytes::from(body.to_string())));
        if !has_next {
            return out;
        }
        start = end;
    }
}

async fn serve(pages: Arc<Vec<(Option<String>, Bytes)>>) -> Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let pages = pages.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let pages = pages.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let cursor = serde_json::from_slice::<Value>(&body)
                            .ok()
                            .and_then(|v| v["variables"]["cursor"].as_str().map(str::to_owned));
                        let page = pages.iter().find(|(c, _)| *c == cursor).map(|(_, b)| b.clone());
                        let (status, body) = match page {
                            Some(b) => (200, b),
                            None => (400, Bytes::from_static(br#"{"errors":[{"message":"unknown cursor"}]}"#)),
                        };
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .unwrap_or_default(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    Ok(addr)
}

pub fn run(opts: &Options) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let keys: Vec<Keypair> =
            (0..opts.runs).map(|i| Keypair::from_seed(&[(i % 251) as u8 + 1; 32])).collect::<Result<_, _>>()?;
        let nodes: Vec<Value> = keys.iter().enumerate().map(|(i, k)| run_node(i, k, opts.stats_uids)).collect();
        let pages = Arc::new(pages(&nodes, ::wandb::DEFAULT_PER_PAGE as usize));
        let bytes: usize = pages.iter().map(|(_, b)| b.len()).sum();
        let addr = serve(pages.clone()).await?;
        let config = WandbConfig {
            base_url: format!("http://{addr}"),
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::NONE,
            ..WandbConfig::default()
        };
        println!(
            "wandb shared state: {} validator runs ({} UIDs of stats each), {} pages, {:.1} MB of JSON, local endpoint",
            opts.runs,
            opts.stats_uids,
            pages.len(),
            bytes as f64 / 1e6
        );
        for (label, lists) in [("allocated (list_r)", Lists::Allocated), ("allocated + penalized", Lists::Both)] {
            let mut times = Vec::with_capacity(opts.iterations);
            for _ in 0..opts.iterations {
                let t0 = Instant::now();
                let client = WandbClient::with_key(config.clone(), ApiKey::new("0".repeat(40)))?;
                let state = client.shared_state(27, lists, |_| true).await?;
                times.push(t0.elapsed());
                ensure!(state.runs_counted == opts.runs, "{} of {} runs counted", state.runs_counted, opts.runs);
            }
            times.sort();
            let ms = |q: f64| {
                times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1].as_secs_f64() * 1e3
            };
            println!(
                "  {label:<24} p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms ({} runs; target < 1000 ms)",
                ms(0.5),
                ms(0.9),
                ms(1.0),
                times.len()
            );
        }
        Ok(())
    })
}
