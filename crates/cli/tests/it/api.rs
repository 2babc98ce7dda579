//! The Resource Allocation API on a devnet with real miners (local runtime): every `/v1`
//! operation, every SN27 route with register_api's own request bodies, tokens (401, 403, one
//! tenant never sees or releases another's allocation), the health checks' ONLINE/OFFLINE,
//! automatic release and EXPIRING webhooks (received and verified by a receiver), concurrent
//! allocations never sharing a miner, and the OpenAPI document matching the router.

use std::time::Duration;

use serde_json::{json, Value};

use crate::api_world::{call, config, serve, token, Receiver, World};
use crate::harness::signal;

const GPUS: [&str; 2] = ["NVIDIA H100 80GB HBM3:81559:1", "NVIDIA GeForce RTX 4090:24564:2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v1_and_sn27_routes_with_tokens_and_tenants() {
    let mut net = World::new().await;
    let slots = [net.add_miner().await, net.add_miner().await];
    let mut miners = Vec::new();
    for (m, g) in slots.iter().zip(GPUS) {
        let p = net.spawn_miner(m, "local", g).await;
        net.wait_ready(m, &p).await;
        miners.push(p);
    }
    let (h100, rtx) = (slots[0].key.ss58(), slots[1].key.ss58());
    let mut hooks = Receiver::start().await;
    let server = serve(&net, config(&[hooks.url()])).await;
    let a = server.addr();
    let admin = token(&net.db(), "ops", "admin");
    let alice = token(&net.db(), "alice", "allocate");
    let bob = token(&net.db(), "bob", "allocate");
    let reader = token(&net.db(), "dash", "read");

    // Access: no token, a wrong token, a weak scope.
    let (s, h, v) = call(a, "GET", "/v1/resources", None, None).await;
    assert_eq!(s, 401);
    assert_eq!(h.get("content-type").map(|v| v.to_str().unwrap_or("")), Some("application/problem+json"));
    assert_eq!(v["status"], 401);
    assert_eq!(call(a, "GET", "/v1/resources", Some("nct_wrong"), None).await.0, 401);
    let (s, _, v) = call(a, "POST", "/v1/allocations", Some(&reader), Some(json!({}))).await;
    assert_eq!((s, v["type"].as_str()), (403, Some("urn:nicompute:problem:forbidden")));
    assert_eq!(call(a, "POST", "/v1/sync", Some(&alice), None).await.0, 403, "sync is for admins");
    assert_eq!(call(a, "POST", "/list/resources_sql", None, None).await.0, 401, "SN27 routes need credentials too");
    let (_, _, v) = call(a, "GET", "/v1/me", Some(&alice), None).await;
    assert_eq!((v["name"].as_str(), v["scope"].as_str()), (Some("alice"), Some("allocate")));

    // Sync, then resources with filters, sort and paging, and counts by model.
    let (s, _, v) = call(a, "POST", "/v1/sync", Some(&admin), Some(json!({"timeout_seconds": 10}))).await;
    assert_eq!((s, v["answered"].as_u64()), (200, Some(2)), "{v}");
    let (s, _, v) = call(a, "GET", "/v1/resources?sort=gpu_size", Some(&reader), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["total"], 2);
    assert_eq!(v["items"][0]["hotkey"], h100.as_str(), "largest GPU first");
    let (_, _, v) = call(a, "GET", "/v1/resources?gpu=4090&per_page=1", Some(&reader), None).await;
    assert_eq!((v["total"].as_u64(), v["items"][0]["gpu_count"].as_u64()), (Some(1), Some(2)));
    let (_, _, v) = call(a, "GET", "/v1/resources?per_page=1&page=2&sort=hotkey", Some(&reader), None).await;
    assert_eq!((v["items"].as_array().map(Vec::len), v["next_page"].clone()), (Some(1), Value::Null));
    assert_eq!(call(a, "GET", "/v1/resources?per_page=0", Some(&reader), None).await.0, 400);
    assert_eq!(call(a, "GET", "/v1/resources?sort=nonsense", Some(&reader), None).await.0, 400);
    let (_, _, v) = call(a, "GET", "/v1/resources/counts", Some(&reader), None).await;
    assert_eq!((v["total_gpus"].as_u64(), v["total_machines"].as_u64()), (Some(3), Some(2)), "{v}");

    // Alice allocates an H100 and waits: 201, the password this once.
    let body = json!({"requirement": {"gpu_type": "h100", "gpu_size_gb": 80}, "ttl_seconds": 7200});
    let (s, h, v) = call(a, "POST", "/v1/allocations?wait=60", Some(&alice), Some(body)).await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    assert_eq!(h.get("location").and_then(|l| l.to_str().ok()), Some(format!("/v1/allocations/{id}").as_str()));
    assert_eq!((v["state"].as_str(), v["hotkey"].as_str()), (Some("active"), Some(h100.as_str())));
    assert!(v["machine"]["password"].as_str().is_some_and(|p| !p.is_empty()), "{v}");
    assert!(v.get("owner").is_none(), "owners are shown to admins only");
    let (_, _, v) = call(a, "GET", &format!("/v1/allocations/{id}"), Some(&alice), None).await;
    assert_eq!(v["machine"]["password"], Value::Null, "the password is shown once");
    assert_eq!(v["health"]["status"], "ONLINE");

    // Bob cannot see, list or release it; the admin sees it with its owner.
    assert_eq!(call(a, "GET", &format!("/v1/allocations/{id}"), Some(&bob), None).await.0, 404);
    assert_eq!(call(a, "DELETE", &format!("/v1/allocations/{id}"), Some(&bob), None).await.0, 404);
    assert_eq!(call(a, "GET", "/v1/allocations", Some(&bob), None).await.2["total"], 0);
    let (_, _, v) = call(a, "GET", "/v1/allocations", Some(&admin), None).await;
    assert_eq!(v["total"], 1);
    assert!(v["items"][0]["owner"].as_str().is_some_and(|o| o.starts_with("token:")));

    // Bob allocates the 4090 by hotkey without waiting: 202 allocating, then active.
    let (s, _, v) = call(a, "POST", "/v1/allocations", Some(&bob), Some(json!({"hotkey": rtx}))).await;
    assert_eq!((s, v["state"].as_str()), (202, Some("allocating")), "{v}");
    let bob_id = v["id"].as_str().expect("id").to_owned();
    let (_, _, v) = call(a, "GET", &format!("/v1/allocations/{bob_id}?wait=60"), Some(&bob), None).await;
    assert_eq!(v["state"], "active", "{v}");
    // Nothing left: the next allocation fails, with the reason.
    let (s, _, v) = call(a, "POST", "/v1/allocations?wait=60", Some(&alice), Some(json!({}))).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("failed")), "{v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));

    // Lifecycle: a restart is reported done once the machine's SSH answers again.
    let (s, _, v) = call(a, "POST", &format!("/v1/allocations/{id}/restart"), Some(&alice), None).await;
    assert_eq!((s, v["done"].as_bool()), (200, Some(true)), "{v}");
    let (s, _, v) = call(a, "POST", &format!("/v1/allocations/{id}/reboot"), Some(&alice), None).await;
    assert_eq!(s, 400, "{v}");
    let (s, _, _) = call(a, "POST", &format!("/v1/allocations/{id}/restart"), Some(&bob), None).await;
    assert_eq!(s, 404, "another tenant's allocation does not exist for it");

    // Miner status and penalties.
    let (_, _, v) =
        call(a, "POST", "/v1/miners/status", Some(&reader), Some(json!({"hotkeys": [h100, "5Nope"]}))).await;
    assert_eq!(v["items"][0]["status"], "allocated", "{v}");
    assert_eq!(v["items"][0]["health"]["status"], "ONLINE");
    assert_eq!(v["items"][1]["status"], "not_found");
    assert_eq!(call(a, "PUT", &format!("/v1/penalties/{rtx}"), Some(&alice), None).await.0, 403);
    assert_eq!(call(a, "PUT", &format!("/v1/penalties/{rtx}"), Some(&admin), None).await.0, 201);
    assert_eq!(call(a, "GET", "/v1/penalties", Some(&reader), None).await.2["count"], 1);
    assert_eq!(call(a, "DELETE", &format!("/v1/penalties/{rtx}"), Some(&admin), None).await.0, 200);
    assert_eq!(call(a, "DELETE", &format!("/v1/penalties/{rtx}"), Some(&admin), None).await.0, 404);
    assert_eq!(call(a, "PUT", "/v1/penalties/not-a-hotkey", Some(&admin), None).await.0, 400);

    // Release: 200 released, a DEALLOCATION webhook signed as SN27 signs it.
    let (s, _, v) = call(a, "DELETE", &format!("/v1/allocations/{id}"), Some(&alice), None).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("released")), "{v}");
    let hook = hooks.next("DEALLOCATION", Duration::from_secs(30)).await.verified();
    assert_eq!((hook["hotkey"].as_str(), hook["uuid"].as_str()), (Some(h100.as_str()), Some(id.as_str())));
    assert!(hook["event_id"].as_str().is_some() && hook["deallocated_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(call(a, "DELETE", &format!("/v1/allocations/{id}"), Some(&alice), None).await.0, 409);
    let (s, _, v) = call(a, "DELETE", &format!("/v1/allocations/{bob_id}"), Some(&bob), None).await;
    assert_eq!(s, 200, "{v}");

    // SN27's routes with register_api's own bodies.
    let spec = json!({
        "requirements": {"cpu_count": 1, "gpu_type": "h100", "gpu_size": 80, "ram": 1, "hard_disk": 1, "timeline": 1},
        "docker_requirement": {"base_image": "ubuntu", "ssh_key": "", "volume_path": "/tmp", "dockerfile": ""}
    });
    let (s, _, v) = call(a, "POST", "/service/allocate_spec", Some(&alice), Some(spec)).await;
    assert_eq!((s, v["success"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(v["message"], "Resource was successfully allocated");
    let d = &v["data"];
    assert_eq!(d["hotkey"], h100.as_str());
    assert!(d["ssh_password"].as_str().is_some_and(|p| !p.is_empty()));
    let uuid = d["uuid_key"].as_str().expect("uuid_key").to_owned();
    for key in ["resource", "regkey", "ssh_ip", "ssh_port", "ssh_username", "ssh_command", "ssh_key", "miner_version"] {
        assert!(d.get(key).is_some(), "Allocation.{key} in {d}");
    }
    let (s, _, v) = call(a, "POST", &format!("/service/allocate_hotkey?hotkey={rtx}"), Some(&bob), None).await;
    assert_eq!((s, v["success"].as_bool()), (200, Some(true)), "{v}");
    let bob_uuid = v["data"]["uuid_key"].as_str().expect("uuid").to_owned();
    let (s, _, v) = call(a, "POST", "/list/allocations_sql", Some(&alice), None).await;
    assert_eq!((s, v["data"].as_array().map(Vec::len)), (200, Some(1)), "a tenant lists its own: {v}");
    assert_eq!(v["data"][0]["ssh_password"], "", "no passwords in lists without the secrets scope");
    assert_eq!(
        call(a, "POST", "/list/allocations_sql", Some(&admin), None).await.2["data"].as_array().map(Vec::len),
        Some(2)
    );
    let (s, _, v) = call(a, "POST", "/list/resources_sql", Some(&reader), Some(json!({"gpu_name": "h100"}))).await;
    assert_eq!((s, v["data"]["page_items"][0]["allocate_status"].as_str()), (200, Some("reserved")), "{v}");
    let (_, _, v) = call(a, "POST", "/list/resources_sql?stats=true", Some(&reader), None).await;
    assert_eq!(v["data"]["stats"], json!({"available": 0, "reserved": 2, "total": 2}));
    let (_, _, v) = call(a, "POST", "/list/resources_sql?page_number=1&page_size=1", Some(&reader), None).await;
    assert_eq!((v["data"]["page_size"].as_u64(), v["data"]["next_page_number"].as_u64()), (Some(1), Some(2)));
    assert_eq!(call(a, "POST", "/list/count_all_gpus", Some(&reader), None).await.2, json!({"count": 3}));
    let (_, _, v) =
        call(a, "POST", "/list/count_all_by_model?model=NVIDIA%20GeForce%20RTX%204090", Some(&reader), None).await;
    assert_eq!(v, json!({"count": 1}));
    let (_, _, v) = call(a, "POST", "/list/available?rent_status=true", Some(&reader), None).await;
    assert_eq!(v["data"]["page_items"].as_array().map(Vec::len), Some(2), "{v}");
    let (_, _, v) = call(a, "POST", "/list/allocated_hotkeys", Some(&reader), None).await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2));
    let (_, _, v) = call(a, "POST", "/service/check_miner_status", Some(&reader), Some(json!([h100, "5Nope"]))).await;
    assert_eq!(v["data"][0], json!({"hotkey": h100, "status": "Docker ONLINE"}));
    assert_eq!(v["data"][1]["status"], "Not Found");
    let path = format!("/service/restart_docker?hotkey={h100}&uuid_key={uuid}");
    let (s, _, v) = call(a, "POST", &path, Some(&alice), None).await;
    assert_eq!((s, v["message"].as_str()), (200, Some("Resource restarted successfully.")), "{v}");
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHmXv0Lw8H1vY2ZsN3T0N0RkKq1tLxq0Ff5QeZ8mK9fJ test";
    let path = format!(
        "/service/exchange_docker_key?hotkey={h100}&uuid_key={uuid}&ssh_key={}&key_type=user",
        key.replace(' ', "%20")
    );
    let (s, _, v) = call(a, "POST", &path, Some(&alice), None).await;
    assert_eq!((s, v["success"].as_bool()), (200, Some(true)), "{v}");
    let (s, _, v) =
        call(a, "POST", &format!("/service/deallocate?hotkey={h100}&uuid_key=wrong"), Some(&alice), None).await;
    assert_eq!((s, v["err_detail"].as_str()), (400, Some("Invalid UUID key")));
    let path = format!("/service/deallocate?hotkey={h100}&uuid_key={uuid}");
    assert_eq!(call(a, "POST", &path, Some(&bob), None).await.0, 404, "not bob's to release");
    let (s, _, v) = call(a, "POST", &format!("{path}&notify_flag=true"), Some(&alice), None).await;
    assert_eq!((s, v["message"].as_str()), (200, Some("Resource deallocated successfully.")), "{v}");
    hooks.next("DEALLOCATION", Duration::from_secs(30)).await.verified();
    let path = format!("/service/deallocate?hotkey={rtx}&uuid_key={bob_uuid}");
    assert_eq!(call(a, "POST", &path, Some(&bob), None).await.0, 200);
    let (s, _, v) = call(a, "POST", "/service/allocate_spec", Some(&alice), Some(json!({"requirements": 5}))).await;
    assert_eq!((s, v["message"].as_str()), (422, Some("Validation Error, Please check the request body.")));

    // The outbox: everything above was delivered; a test event too.
    let (s, _, v) = call(a, "POST", "/test/notify?event=OFFLINE&hotkey=h&uuid_key=u", Some(&admin), None).await;
    assert_eq!(s, 200, "{v}");
    let hook = hooks.next("OFFLINE", Duration::from_secs(30)).await.verified();
    assert_eq!((hook["hotkey"].as_str(), hook["uuid"].as_str()), (Some("h"), Some("u")));
    let (_, _, v) = call(a, "GET", "/v1/webhooks/deliveries?state=delivered", Some(&admin), None).await;
    assert!(v["items"].as_array().is_some_and(|i| i.len() >= 3), "{v}");
    assert_eq!(call(a, "GET", "/v1/webhooks/deliveries", Some(&alice), None).await.0, 403);

    // Metrics and the documents.
    let (s, _, v) = call(a, "GET", "/metrics", Some(&reader), None).await;
    let text = v["_text"].as_str().unwrap_or_default();
    assert_eq!(s, 200);
    assert!(text.contains("nicompute_api_allocations_total{result=\"active\"}"), "{text}");
    assert!(text.contains("nicompute_api_deliveries_total{event=\"DEALLOCATION\",result=\"delivered\"}"), "{text}");
    assert_eq!(call(a, "GET", "/openapi.json", None, None).await.2["openapi"], "3.1.0");
    assert!(call(a, "GET", "/docs", None, None).await.2["_text"].as_str().is_some_and(|t| t.contains("/openapi.json")));

    server.shutdown().await;
    for m in miners {
        m.stop();
    }
    net.chain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_checks_send_offline_online_expiring_and_release_a_dead_machine() {
    let mut net = World::new().await;
    let slot = net.add_miner().await;
    let miner = net.spawn_miner(&slot, "local", GPUS[0]).await;
    net.wait_ready(&slot, &miner).await;
    let hk = slot.key.ss58();
    assert!(net.cli(&["sync"]).await.status.success());
    let mut hooks = Receiver::start().await;
    let mut cfg = config(&[hooks.url()]);
    cfg.check_interval = Duration::from_millis(400);
    cfg.check_timeout = Duration::from_millis(800);
    cfg.offline_limit = 3;
    cfg.expiring_before = Duration::from_secs(7200);
    let server = serve(&net, cfg).await;
    let a = server.addr();
    let t = token(&net.db(), "p", "allocate");

    // A two-hour lease with EXPIRING two hours ahead: expiring at once.
    let body = json!({"hotkey": hk, "ttl_seconds": 3600});
    let (s, _, v) = call(a, "POST", "/v1/allocations?wait=60", Some(&t), Some(body)).await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    let e = hooks.next("EXPIRING", Duration::from_secs(30)).await.verified();
    assert_eq!((e["uuid"].as_str(), e["hotkey"].as_str()), (Some(id.as_str()), Some(hk.as_str())));
    assert!(e["expires_at"].as_str().is_some());

    // The miner stops answering (SIGSTOP: a machine that went away): OFFLINE.
    signal(miner.child.id(), "-STOP");
    let off = hooks.next("OFFLINE", Duration::from_secs(30)).await.verified();
    assert_eq!(off["uuid"], id.as_str());
    assert!(off["status_change_at"].as_str().is_some());
    // Back: ONLINE.
    signal(miner.child.id(), "-CONT");
    hooks.next("ONLINE", Duration::from_secs(30)).await.verified();
    let (_, _, v) = call(a, "GET", &format!("/v1/allocations/{id}"), Some(&t), None).await;
    assert_eq!(v["health"]["status"], "ONLINE");

    // Kept down: after three failed checks it is released, DEALLOCATION with the cause.
    miner.kill();
    hooks.next("OFFLINE", Duration::from_secs(30)).await.verified();
    let d = hooks.next("DEALLOCATION", Duration::from_secs(60)).await.verified();
    assert_eq!((d["uuid"].as_str(), d["cause"].as_str()), (Some(id.as_str()), Some("offline")));
    let (_, _, v) = call(a, "GET", &format!("/v1/allocations/{id}"), Some(&t), None).await;
    assert!(matches!(v["state"].as_str(), Some("released" | "releasing")), "{v}");
    server.shutdown().await;
    net.chain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_allocations_never_share_a_miner() {
    let mut net = World::new().await;
    let mut slots = Vec::new();
    let mut miners = Vec::new();
    for _ in 0..3 {
        let m = net.add_miner().await;
        let p = net.spawn_miner(&m, "local", GPUS[1]).await;
        net.wait_ready(&m, &p).await;
        slots.push(m);
        miners.push(p);
    }
    assert!(net.cli(&["sync"]).await.status.success());
    let server = serve(&net, config(&[])).await;
    let a = server.addr();
    let tokens: Vec<String> = (0..8).map(|i| token(&net.db(), &format!("client{i}"), "allocate")).collect();
    let posts = tokens.iter().map(|t| {
        let body = json!({"requirement": {"gpu_type": "4090"}, "deadline_seconds": 20});
        call(a, "POST", "/v1/allocations?wait=120", Some(t), Some(body))
    });
    let results = futures_util::future::join_all(posts).await;
    let mut held: Vec<String> = results
        .iter()
        .filter(|(s, _, _)| *s == 201)
        .map(|(_, _, v)| v["hotkey"].as_str().expect("hotkey").to_owned())
        .collect();
    let failed = results.iter().filter(|(_, _, v)| v["state"] == "failed").count();
    held.sort();
    let n = held.len();
    held.dedup();
    assert_eq!(held.len(), n, "one miner given twice: {results:?}");
    assert_eq!((n, failed), (3, 5), "three miners, eight clients: {results:?}");
    let rows = compute::db::ComputeDb::open(net.db()).expect("db").allocations().expect("rows");
    assert_eq!(rows.len(), 3);

    // Graceful shutdown finishes an allocation in flight: free one miner, ask without waiting,
    // stop the server at once.
    let first = results.iter().find(|(s, _, _)| *s == 201).map(|(_, _, v)| v.clone()).expect("one");
    let owner = tokens[results.iter().position(|(s, _, _)| *s == 201).expect("one")].clone();
    let id = first["id"].as_str().expect("id");
    assert_eq!(call(a, "DELETE", &format!("/v1/allocations/{id}"), Some(&owner), None).await.0, 200);
    let (s, _, v) =
        call(a, "POST", "/v1/allocations", Some(&owner), Some(json!({"requirement": {"gpu_type": "4090"}}))).await;
    assert_eq!(s, 202, "{v}");
    let pending = v["id"].as_str().expect("id").to_owned();
    server.shutdown().await;
    let db = compute::db::ComputeDb::open(net.db()).expect("db");
    let rec = db.api_allocation(&pending).expect("read").expect("row");
    assert_eq!(rec.state, compute::db::ApiAllocationState::Active, "finished before the server stopped: {rec:?}");
    for m in miners {
        m.stop();
    }
    net.chain.shutdown().await;
}

/// Every route of the OpenAPI table answers through the router (no 404/405 from routing), and
/// the document lists every route of the table.
#[tokio::test]
async fn the_openapi_table_matches_the_router() {
    use tower::ServiceExt;
    let dir = tempfile::tempdir().expect("tmp");
    let db = std::sync::Arc::new(compute::db::ComputeDb::open(dir.path().join("database.db")).expect("db"));
    // A chain nobody answers: the routes fail later, after routing.
    let chain = bittensor::subtensor::Subtensor::new("ws://127.0.0.1:9").expect("chain");
    let renter = compute::renter::Renter::new(db, chain, 27, bittensor::Keypair::generate(12).expect("key"));
    let app = api::app(api::AppState::new(std::sync::Arc::new(renter), api::ApiConfig::default()));
    let doc = api::openapi();
    for (method, path, scope, ..) in api::ROUTES {
        let concrete = path
            .replace("{id}", "1")
            .replace("{action}", "restart")
            .replace("{hotkey}", "5x")
            .replace("{file}", "app.js");
        let req = http::Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(&concrete)
            .body(axum::body::Body::empty())
            .expect("request");
        let resp = app.clone().oneshot(req).await.expect("response");
        let status = resp.status().as_u16();
        assert_ne!(status, 405, "{method} {path}: method not routed");
        if *scope != "none" {
            assert_eq!(status, 401, "{method} {path} answers {status} without a token");
        } else if *path != "/v1/events" {
            assert_eq!(status, 200, "{method} {path}");
        }
        assert!(doc["paths"][path][method].is_object(), "{method} {path} in the document");
    }
}

/// HTTPS with client certificates, as register_api runs: curl without a certificate is refused
/// in the handshake, with one it is served at `--mtls-scope`; the allow-list refuses others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_and_the_allow_list() {
    use crate::common::{on_path, skip};
    if !on_path("openssl") || !on_path("curl") {
        skip("CI", "openssl or curl is missing (apt-get install openssl curl)");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let sh = |script: &str| {
        let out = crate::common::command("sh").arg("-c").arg(script).current_dir(d).output().expect("sh");
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca");
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        sh(&format!(
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key -out {name}.csr -subj /CN={name} && \
             printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nkeyUsage=digitalSignature\\nextendedKeyUsage={usage}\\n' > {name}.ext && \
             openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile {name}.ext"
        ));
    }
    let net = World::new().await;
    let mut cfg = config(&[]);
    cfg.tls = Some(api::TlsConfig {
        cert: d.join("server.pem"),
        key: d.join("server.key"),
        client_ca: Some(d.join("ca.pem")),
        client_scope: api::Level::Read,
    });
    let server = serve(&net, cfg).await;
    let url = format!("https://{}", server.addr());
    let curl = |args: &[&str]| {
        let out = crate::common::command("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(d.join("ca.pem"))
            .args(args)
            .output()
            .expect("curl");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, _) = curl(&[&format!("{url}/v1/me")]);
    assert_ne!(code, Some(0), "no client certificate: refused in the handshake");
    let cert = d.join("client.pem").display().to_string();
    let key = d.join("client.key").display().to_string();
    let (code, body) = curl(&["--cert", &cert, "--key", &key, &format!("{url}/v1/me")]);
    assert_eq!(code, Some(0), "{body}");
    let me: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(me["level"], "read", "{me}");
    assert!(me["owner"].as_str().is_some_and(|o| o.starts_with("mtls:")), "{me}");
    let (_, body) =
        curl(&["--cert", &cert, "--key", &key, "-X", "POST", &format!("{url}/service/allocate_spec"), "-d", "{}"]);
    assert!(body.contains("\"success\":false") && body.contains("Not allowed"), "read scope cannot allocate: {body}");
    server.shutdown().await;

    // Only 192.0.2.1 may call: this machine's loopback is refused.
    let mut cfg = config(&[]);
    cfg.allow_ips = vec!["192.0.2.1".parse().expect("ip")];
    let server = serve(&net, cfg).await;
    let t = token(&net.db(), "x", "read");
    assert_eq!(call(server.addr(), "GET", "/v1/me", Some(&t), None).await.0, 403);
    server.shutdown().await;
    net.chain.shutdown().await;
}
