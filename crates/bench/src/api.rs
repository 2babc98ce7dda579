//! `nicompute-bench api`: the Resource Allocation API (`nicompute serve`, release build) against
//! the targets.
//!
//! 1. `GET /v1/resources` over a database of 1,024 miners: the server pinned to CPU 0, this load
//!    generator to CPU 1, 32 keep-alive connections, 2 s warm-up then 10 s measured: p50, p99 and
//!    requests/s (target: p50 under 5 ms, at least 5,000 req/s on one core). Default page (100
//!    rows) and the largest page (1,000 rows).
//! 2. An allocation through the API vs `nicompute a` on a devnet with one live miner (local
//!    runtime): N runs of each (released after each), p50 of both and the difference (target: the
//!    API adds under 10 ms). The API is asked with `?wait=` so both times end at the same point
//!    (the machine allocated and its SSH answering).
//! 3. Webhook latency: N events queued through `/test/notify`, from the request to the
//!    receiver's arrival (target: under 1 s).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bittensor::devnet::{self, ops, DevnetConfig};
use bittensor::subtensor::Subtensor;
use bittensor::wallet::Wallet;
use bittensor::Keypair;
use bytes::Bytes;
use compute::db::ComputeDb;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

const MINERS: usize = 1024;
const CONNECTIONS: usize = 32;

pub struct Options {
    pub runs: usize,
    pub seconds: f64,
}

/// A `nicompute serve` process.
pub(crate) struct Serve {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn spawn_serve(bin: &Path, cpu: Option<&str>, args: &[String], serve_args: &[String]) -> Result<Serve> {
    let mut c = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    c.args(args).args(["serve", "--listen", "127.0.0.1:0", "--json"]).args(serve_args).stdout(Stdio::piped()).stderr(
        match std::env::var_os("NICOMPUTE_BENCH_SERVE_LOG") {
            Some(path) => Stdio::from(std::fs::File::create(path)?),
            None => Stdio::null(),
        },
    );
    let mut child = c.spawn().context("starting nicompute serve")?;
    let stdout = child.stdout.take().context("stdout")?;
    let doc: Value = serde_json::Deserializer::from_reader(BufReader::new(stdout))
        .into_iter::<Value>()
        .next()
        .context("serve printed nothing")??;
    let addr = doc["listen"].as_str().and_then(|a| a.parse().ok()).context("no address")?;
    Ok(Serve { child, addr })
}

/// One request on a kept-alive connection.
struct Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(Conn { send, addr })
    }

    async fn call(&mut self, method: &str, path: &str, token: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let (status, bytes) = self.raw(method, path, token, body).await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// The status and the body's bytes (the load generator does not parse what it measures).
    async fn raw(&mut self, method: &str, path: &str, token: &str, body: Option<&Value>) -> Result<(u16, Bytes)> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("authorization", format!("Bearer {token}"));
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(b)?)
            }
            None => Bytes::new(),
        };
        // The connection takes the next request once it has finished the last one.
        self.send.ready().await?;
        let resp = self.send.send_request(req.body(Full::new(bytes))?).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn token(db: &ComputeDb, name: &str, scope: &str) -> Result<String> {
    let (secret, hash) = api::new_token();
    db.create_token(name, scope, &hash)?;
    Ok(secret)
}

pub fn run(opts: &Options) -> Result<()> {
    let bin = crate::nicompute_bin()?;
    // This process generates load from CPU 1; the server runs on CPU 0.
    let _ = Command::new("taskset").args(["-a", "-p", "-c", "1", &std::process::id().to_string()]).output();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::Builder::new().prefix("nicompute-bench-api-").tempdir()?;
    let wallets = dir.path().join("wallets");
    Wallet::new(&wallets, "bench", "default").write_hotkey(&Keypair::generate(12)?)?;
    db_writes(dir.path())?;
    resources(&rt, &bin, dir.path(), &wallets, opts)?;
    webhooks(&rt, &bin, dir.path(), &wallets, opts)?;
    allocation(&rt, &bin, dir.path(), opts)?;
    Ok(())
}

/// One write transaction of the database (what each state change of an API allocation costs).
fn db_writes(dir: &Path) -> Result<()> {
    let db = ComputeDb::open(dir.join("writes.db"))?;
    let mut times = Vec::new();
    for i in 0..50 {
        let start = Instant::now();
        db.create_token(&format!("t{i}"), "read", &format!("{i:064x}"))?;
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "api/db: one write transaction (WAL, synchronous=FULL): p50 {:.2} ms, max {:.2} ms",
        pct(&times, 0.5),
        pct(&times, 1.0)
    );
    Ok(())
}

pub(crate) fn base_args(db: &Path, wallets: &Path, chain: &str) -> Vec<String> {
    vec![
        "--db".into(),
        db.display().to_string(),
        "--wallet.path".into(),
        wallets.display().to_string(),
        "--wallet.name".into(),
        "bench".into(),
        "--subtensor.chain_endpoint".into(),
        chain.into(),
        "--netuid".into(),
        "27".into(),
    ]
}

fn resources(rt: &tokio::runtime::Runtime, bin: &Path, dir: &Path, wallets: &Path, opts: &Options) -> Result<()> {
    let db_path = dir.join("resources.db");
    let db = ComputeDb::open(&db_path)?;
    let specs = crate::renter::h100_specs_json(dir);
    for i in 0..MINERS {
        db.upsert_specs(&crate::renter::hotkey(i as u32)?, &specs, 1_700_000_000_000)?;
    }
    let t = token(&db, "bench", "read")?;
    drop(db);
    // No chain answers here: the server only reads the database for this route.
    let serve = spawn_serve(bin, Some("0"), &base_args(&db_path, wallets, "ws://127.0.0.1:9"), &[])?;
    for (label, path) in [("default page (100 rows)", "/v1/resources"), ("1,000 rows", "/v1/resources?per_page=1000")] {
        let (one, _) = rt.block_on(load(serve.addr, &t, path, opts.seconds / 2.0, 1))?;
        println!(
            "api/resources: GET {path} over {MINERS} miners, {label}, one request at a time: p50 {:.2} ms, p99 {:.2} ms",
            pct(&one, 0.5),
            pct(&one, 0.99)
        );
        let (times, total) = rt.block_on(load(serve.addr, &t, path, opts.seconds, CONNECTIONS))?;
        let rps = times.len() as f64 / total.as_secs_f64();
        println!(
            "api/resources: GET {path} over {MINERS} miners, {label}, {CONNECTIONS} connections: {} requests in {:.1} s, {rps:.0} req/s, p50 {:.2} ms, p99 {:.2} ms (target: p50 < 5 ms, >= 5000 req/s on one core)",
            times.len(),
            total.as_secs_f64(),
            pct(&times, 0.5),
            pct(&times, 0.99)
        );
    }
    Ok(())
}

async fn load(
    addr: SocketAddr,
    token: &str,
    path: &str,
    seconds: f64,
    connections: usize,
) -> Result<(Vec<Duration>, Duration)> {
    let warm_until = Instant::now() + Duration::from_secs(2);
    let mut conns = Vec::new();
    for _ in 0..connections {
        conns.push(Conn::open(addr).await?);
    }
    let mut tasks = tokio::task::JoinSet::new();
    let end = warm_until + Duration::from_secs_f64(seconds);
    for mut c in conns {
        let (token, path) = (token.to_owned(), path.to_owned());
        tasks.spawn(async move {
            let mut times = Vec::new();
            loop {
                let start = Instant::now();
                if start >= end {
                    break;
                }
                let (status, _) = c.raw("GET", &path, &token, None).await?;
                ensure!(status == 200, "GET {path}: {status}");
                if start >= warm_until {
                    times.push(start.elapsed());
                }
            }
            anyhow::Ok(times)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    all.sort();
    Ok((all, Duration::from_secs_f64(seconds)))
}

fn webhooks(rt: &tokio::runtime::Runtime, bin: &Path, dir: &Path, wallets: &Path, opts: &Options) -> Result<()> {
    let db_path = dir.join("webhooks.db");
    let t = token(&ComputeDb::open(&db_path)?, "ops", "admin")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Value)>();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let _ = tx.send((Instant::now(), v));
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("{}"))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
                });
            }
        });
        let args = base_args(&db_path, wallets, "ws://127.0.0.1:9");
        let serve = spawn_serve(bin, None, &args, &["--webhook-url".into(), url])?;
        let mut c = Conn::open(serve.addr).await?;
        let mut times = Vec::new();
        for i in 0..opts.runs.max(5) * 2 {
            let start = Instant::now();
            let (status, v) = c.call("POST", &format!("/test/notify?event=ONLINE&hotkey=h{i}"), &t, None).await?;
            ensure!(status == 200, "test/notify: {status} {v}");
            let (at, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await?.context("receiver")?;
            ensure!(body["hotkey"] == format!("h{i}"), "out of order: {body}");
            times.push(at - start);
        }
        times.sort();
        println!(
            "api/webhooks: {} events from the request to the receiver: p50 {:.1} ms, max {:.1} ms (target: < 1000 ms)",
            times.len(),
            pct(&times, 0.5),
            pct(&times, 1.0)
        );
        drop(serve);
        anyhow::Ok(())
    })
}

fn allocation(rt: &tokio::runtime::Runtime, bin: &Path, dir: &Path, opts: &Options) -> Result<()> {
    let owner = Keypair::generate(12)?;
    let cfg = DevnetConfig {
        bind: "127.0.0.1:0".parse()?,
        block_time: Duration::from_secs(1),
        ..DevnetConfig::new(dir.join("chain"), owner.account_id())
    };
    let node = rt.block_on(devnet::spawn(cfg))?;
    let ws = node.ws_url();
    let chain = Subtensor::new(&ws)?;
    let renter = Keypair::generate(12)?;
    let miner = Keypair::generate(12)?;
    let cold = Keypair::generate(12)?;
    let wallets = dir.join("devnet-wallets");
    Wallet::new(&wallets, "bench", "default").write_hotkey(&renter)?;
    Wallet::new(&wallets, "miner", "default").write_hotkey(&miner)?;
    rt.block_on(async {
        ops::fund(&chain, &owner, &[(cold.account_id(), 10_000_000_000_000)]).await?;
        ops::register(&chain, &cold, &renter.account_id(), 27).await?;
        ops::stake_to(&chain, &cold, &renter.account_id(), 27, 5_000_000_000_000).await?;
        ops::register(&chain, &cold, &miner.account_id(), 27).await?;
        anyhow::Ok(())
    })?;
    let state = dir.join("miner-state");
    let mut m = Command::new(bin)
        .args([
            "miner",
            "run",
            "--runtime",
            "local",
            "--netuid",
            "27",
            "--min-stake",
            "0",
            "--subtensor.chain_endpoint",
            &ws,
        ])
        .arg("--wallet.path")
        .arg(&wallets)
        .args(["--wallet.name", "miner", "--axon.ip", "127.0.0.1", "--axon.port", "0", "--ssh.port", "0"])
        .args([
            "--ssh.bind_ip",
            "127.0.0.1",
            "--metagraph-refresh",
            "1s",
            "--simulate-gpu",
            "NVIDIA H100 80GB HBM3:81559:1",
        ])
        .arg("--state-dir")
        .arg(&state)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(m.stdout.take().context("stdout")?).read_line(&mut line)?;
    let result = (|| -> Result<()> {
        let db_path = dir.join("alloc.db");
        let args = base_args(&db_path, &wallets, &ws);
        let cli = |extra: &[&str]| -> Result<std::process::Output> {
            Ok(Command::new(bin).args(&args).args(extra).stdin(Stdio::null()).output()?)
        };
        // Until the miner answers: sync finds it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = cli(&["sync", "--json"])?;
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if v["answered"] == 1 {
                break;
            }
            ensure!(Instant::now() < deadline, "the miner never answered sync");
            std::thread::sleep(Duration::from_millis(200));
        }
        let hk = miner.ss58();
        let mut cli_times = Vec::new();
        for _ in 0..opts.runs {
            let start = Instant::now();
            let out = cli(&["a", "--gpu_type", "h100", "--no-ssh-key", "--json"])?;
            cli_times.push(start.elapsed());
            ensure!(out.status.success(), "a: {}", String::from_utf8_lossy(&out.stderr));
            ensure!(cli(&["d", &hk, "-y"])?.status.success(), "d failed");
        }
        let t = token(&ComputeDb::open(&db_path)?, "bench", "allocate")?;
        let serve = spawn_serve(bin, None, &args, &[])?;
        let api_times = rt.block_on(async {
            let mut c = Conn::open(serve.addr).await?;
            let mut times = Vec::new();
            let body = json!({"requirement": {"gpu_type": "h100"}});
            for _ in 0..opts.runs {
                let start = Instant::now();
                let (status, v) = c.call("POST", "/v1/allocations?wait=60", &t, Some(&body)).await?;
                times.push(start.elapsed());
                ensure!(status == 201, "POST /v1/allocations: {status} {v}");
                let id = v["id"].as_str().context("id")?;
                let (status, v) = c.call("DELETE", &format!("/v1/allocations/{id}"), &t, None).await?;
                ensure!(status == 200, "DELETE: {status} {v}");
            }
            anyhow::Ok(times)
        })?;
        drop(serve);
        cli_times.sort();
        let mut api_sorted = api_times;
        api_sorted.sort();
        let (c50, a50) = (pct(&cli_times, 0.5), pct(&api_sorted, 0.5));
        println!(
            "api/allocation: {} runs each, one live miner: `nicompute a` p50 {c50:.1} ms (process start, metagraph, allocation, SSH banner); POST /v1/allocations?wait p50 {a50:.1} ms; the API adds {:.1} ms (target: < 10 ms)",
            opts.runs,
            a50 - c50
        );
        Ok(())
    })();
    let _ = m.kill();
    let _ = m.wait();
    rt.block_on(node.shutdown());
    if let Err(e) = &result {
        bail!("allocation benchmark: {e:#}");
    }
    Ok(())
}
