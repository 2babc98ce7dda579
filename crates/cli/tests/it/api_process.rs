//! `nicompute serve` and `nicompute api token` as users run them: tokens made, listed and revoked
//! by the CLI; a server killed with -9 while a webhook is pending delivers it after its restart
//! (the outbox is in the database); the CLI and the server allocating on one database at once.

use std::io::BufReader;
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api_world::{call, config, serve, Receiver, World, SECRET};
use crate::harness::{json, wait_for};

/// A `nicompute serve` process and the address it reported.
struct ServeProc {
    child: Child,
    addr: SocketAddr,
    _stdout: BufReader<ChildStdout>,
}

impl ServeProc {
    fn spawn(mut cmd: Command) -> ServeProc {
        let mut child = cmd.arg("--json").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let doc: Value = match serde_json::Deserializer::from_reader(&mut stdout).into_iter::<Value>().next() {
            Some(Ok(v)) => v,
            other => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                panic!("serve did not report its start ({other:?}); it ended with {status}");
            }
        };
        let addr = doc["listen"].as_str().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("no address in {doc}"));
        ServeProc { child, addr, _stdout: stdout }
    }
}

impl Drop for ServeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_command(net: &World, hook: &str) -> Command {
    let mut c = net.command();
    c.args(net.global_args())
        .args(["serve", "--listen", "127.0.0.1:0", "--webhook-url", hook, "--webhook-backoff", "100ms"])
        .args(["--check-interval", "1h"])
        .env("NICOMPUTE_WEBHOOK_SECRET", SECRET);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_with_a_webhook_pending_delivers_it_after_a_restart() {
    let net = World::new().await;
    // Tokens through the CLI: printed once, listed without secrets, revoked.
    let out = net.cli(&["api", "token", "create", "--name", "ops", "--scope", "admin", "--json"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let admin = json(&out)["token"].as_str().expect("token").to_owned();
    let out = net.cli(&["api", "token", "create", "--name", "gone", "--scope", "read", "--json"]).await;
    let gone = json(&out)["token"].as_str().expect("token").to_owned();
    assert_eq!(net.cli(&["api", "token", "create", "--name", "x", "--scope", "root"]).await.status.code(), Some(2));
    assert_eq!(net.cli(&["api", "token", "create", "--name", "ops"]).await.status.code(), Some(2), "names are unique");
    let listed = net.cli(&["api", "token", "list", "--json"]).await;
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&admin[4..]), "a list never shows a secret");
    assert_eq!(json(&listed).as_array().map(Vec::len), Some(2));
    assert!(net.cli(&["api", "token", "revoke", "gone"]).await.status.success());
    assert_eq!(net.cli(&["api", "token", "revoke", "gone"]).await.status.code(), Some(1));
    // The secret is refused in argv.
    let out = net.cli(&["serve", "--webhook-secret", "s3cret"]).await;
    assert_eq!(out.status.code(), Some(2));

    let mut hooks = Receiver::start().await;
    hooks.status.store(500, Ordering::SeqCst);
    let server = tokio::task::spawn_blocking({
        let c = serve_command(&net, &hooks.url());
        move || ServeProc::spawn(c)
    })
    .await
    .expect("join");
    let a = server.addr;
    assert_eq!(call(a, "GET", "/v1/me", Some(&gone), None).await.0, 401, "a revoked token");
    let (s, _, v) = call(a, "POST", "/test/notify?event=DEALLOCATION&hotkey=hk&uuid_key=u1", Some(&admin), None).await;
    assert_eq!(s, 200, "{v}");
    let event_id = v["data"]["event_id"].as_str().expect("event id").to_owned();
    // It failed at least once and is pending a retry.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, v) = call(a, "GET", "/v1/webhooks/deliveries?state=pending", Some(&admin), None).await;
        if v["items"][0]["attempts"].as_u64().is_some_and(|n| n >= 1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the delivery was never attempted: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // kill -9, the receiver recovers, the server comes back on the same database.
    drop(server);
    hooks.status.store(200, Ordering::SeqCst);
    let again = tokio::task::spawn_blocking({
        let c = serve_command(&net, &hooks.url());
        move || ServeProc::spawn(c)
    })
    .await
    .expect("join");
    let hook = hooks.next("DEALLOCATION", Duration::from_secs(30)).await.verified();
    assert_eq!((hook["event_id"].as_str(), hook["uuid"].as_str()), (Some(event_id.as_str()), Some("u1")));
    let (_, _, v) = call(again.addr, "GET", "/v1/webhooks/deliveries?state=delivered", Some(&admin), None).await;
    assert!(v["items"][0]["attempts"].as_u64().is_some_and(|n| n >= 2), "{v}");
    drop(again);
    net.chain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_and_the_server_allocate_on_one_database_at_once() {
    let mut net = World::new().await;
    let mut miners = Vec::new();
    let mut slots = Vec::new();
    for _ in 0..2 {
        let m = net.add_miner().await;
        let p = net.spawn_miner(&m, "local", "NVIDIA GeForce RTX 4090:24564:1").await;
        net.wait_ready(&m, &p).await;
        slots.push(m);
        miners.push(p);
    }
    assert!(net.cli(&["sync"]).await.status.success());
    let server = serve(&net, config(&[])).await;
    let a = server.addr();
    let t = crate::api_world::token(&net.db(), "platform", "allocate");
    let body = json!({"requirement": {"gpu_type": "4090"}, "deadline_seconds": 20});
    let (api, cli) = tokio::join!(
        call(a, "POST", "/v1/allocations?wait=120", Some(&t), Some(body)),
        net.cli(&["a", "--gpu_type", "4090", "--no-ssh-key", "--deadline", "20s", "--json"]),
    );
    assert_eq!(api.0, 201, "{}", api.2);
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let cli_hk = json(&cli)["hotkey"].as_str().expect("hotkey").to_owned();
    assert_ne!(api.2["hotkey"].as_str(), Some(cli_hk.as_str()), "one miner each");
    let rows = json(&net.cli(&["list_a", "--json"]).await);
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "the CLI sees both: {rows}");
    // The CLI releases its own while the server runs; the server releases its own.
    let out = net.cli(&["d", &cli_hk, "-y", "--json"]).await;
    assert_eq!(json(&out)[0]["result"], "released");
    let id = api.2["id"].as_str().expect("id");
    let (s, _, v) = call(a, "DELETE", &format!("/v1/allocations/{id}"), Some(&t), None).await;
    assert_eq!(s, 200, "{v}");
    wait_for("the database to be empty", Duration::from_secs(5), || {
        compute::db::ComputeDb::open(net.db()).expect("db").allocations().expect("rows").is_empty()
    });
    server.shutdown().await;
    for m in miners {
        m.stop();
    }
    net.chain.shutdown().await;
}
