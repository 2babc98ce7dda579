//! The chain client end to end: recorded finney traffic replayed over WebSocket and HTTP yields
//! the same metagraph as decoding the bytes directly; failures give typed errors naming the
//! endpoint; the devnet chain registers, stakes and serves with signed requests, survives a
//! restart, and refuses forgeries and replays without changing its state.

use std::sync::Arc;
use std::time::Duration;

use bittensor::clock::Clock;
use bittensor::devnet::{self, ops, DevnetConfig};
use bittensor::keys::Keypair;
use bittensor::subtensor::decode::{decode_result, from_hex};
use bittensor::subtensor::metagraph::{Metagraph, StakeSource};
use bittensor::subtensor::rpc::RpcError;
use bittensor::subtensor::server::{self, Handler, RpcFault};
use bittensor::subtensor::types::{NeuronInfoLite, SubnetState};
use bittensor::subtensor::{ChainError, Subtensor};
use serde_json::{json, Value};

use crate::util::fixtures;

const FIXTURE_01: &str = "metagraph/01_sn1_block6852690_spec343";

/// The recorded traffic of a fixture, served as a node would.
fn replay_handler(dir: &str) -> Handler {
    let text = std::fs::read_to_string(fixtures().join(dir).join("rpc_transcript.json")).expect("transcript");
    server::replay(&serde_json::from_str::<Vec<Value>>(&text).expect("json"))
}

fn direct_metagraph() -> Metagraph {
    let read = |f: &str| {
        from_hex(std::fs::read_to_string(fixtures().join(FIXTURE_01).join(f)).expect("hex").trim()).expect("hex")
    };
    let neurons: Vec<NeuronInfoLite> = decode_result(&read("neurons_lite.result.hex"), "neurons").expect("neurons");
    let state: Option<SubnetState> = decode_result(&read("subnet_state.result.hex"), "state").expect("state");
    Metagraph::from_parts(
        1,
        6_852_690,
        "0xdb13c066e2c63969f140164fb3bfe7a0aaa7b71407fc0fe525d68e57329ef9d0".into(),
        neurons,
        state,
    )
    .expect("metagraph")
}

#[tokio::test]
async fn replayed_finney_traffic_gives_the_same_metagraph_over_ws_and_http() {
    let srv = server::spawn("127.0.0.1:0".parse().expect("addr"), replay_handler(FIXTURE_01)).await.expect("server");
    let want = direct_metagraph();
    assert_eq!(want.neurons.len(), 1024);
    for url in [srv.ws_url(), srv.http_url()] {
        let chain = Subtensor::new(&url).expect("client");
        let got = chain.metagraph(1).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(got.block, 6_852_690, "{url}");
        assert_eq!(got.neurons, want.neurons, "{url}");
        assert_eq!(f64::from(got.neurons[24].stake_tao), 58036.80859375, "S[24] exactly as the SDK has it");
    }
}

#[tokio::test]
async fn a_runtime_without_get_subnet_state_gives_the_lite_stake_and_says_so() {
    // The recorded node, except that its runtime predates get_subnet_state (a real node's words).
    let recorded = replay_handler(FIXTURE_01);
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let handler: Handler = Arc::new(move |method: String, params: Value| {
        if method == "state_call" {
            log.lock().expect("lock").push(params[1].as_str().unwrap_or("").to_owned());
        }
        if params.get(0).and_then(Value::as_str) == Some("SubnetInfoRuntimeApi_get_subnet_state") {
            let msg =
                "Client error: Execution failed: Exported method SubnetInfoRuntimeApi_get_subnet_state is not found";
            return Box::pin(async move { Err(RpcFault::new(4003, msg)) });
        }
        recorded(method, params)
    });
    let srv = server::spawn("127.0.0.1:0".parse().expect("addr"), handler).await.expect("server");
    let got = Subtensor::new(&srv.ws_url()).expect("client").metagraph(1).await.expect("metagraph without state");
    assert_eq!(got.stake_source, StakeSource::NeuronLite);
    assert_eq!(got.neurons.len(), 1024);
    // uid 24's S is then its lite stake (959,873,144,507 rao), not the state's 58036.8 (spec §8).
    assert_eq!(got.neurons[24].stake_tao, (959_873_144_507f64 / 1e9) as f32);
    assert_eq!(got.neurons[24].axon, direct_metagraph().neurons[24].axon);
    // Every state_call went 0x-prefixed.
    let sent = seen.lock().expect("lock").clone();
    assert!(!sent.is_empty() && sent.iter().all(|d| d.starts_with("0x")), "{sent:?}");

    // Any other failure of the call is still an error, not a silent fallback.
    let recorded = replay_handler(FIXTURE_01);
    let handler: Handler = Arc::new(move |method: String, params: Value| {
        if params.get(0).and_then(Value::as_str) == Some("SubnetInfoRuntimeApi_get_subnet_state") {
            return Box::pin(async move { Err(RpcFault::new(4003, "Client error: Execution failed: wasm trap")) });
        }
        recorded(method, params)
    });
    let srv = server::spawn("127.0.0.1:0".parse().expect("addr"), handler).await.expect("server");
    assert!(Subtensor::new(&srv.ws_url()).expect("client").metagraph(1).await.is_err());
}

#[tokio::test]
async fn legacy_get_neuron_is_a_bare_neuron_in_a_vec() {
    // Spec 218's answer for get_neuron(1, 0) (the genesis neuron) and for an unknown uid.
    const NEURON: &str = "0xed02000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000004010000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000040000000000000000000000000000000000000000000000000000000000000000feff030000c621f6d8000000000000010000feff0300";
    let handler: Handler = Arc::new(|_method: String, params: Value| {
        let answer = match params[1].as_str() {
            Some("0x01000000") => json!(NEURON),
            _ => json!("0x00"),
        };
        Box::pin(async move { Ok(answer) })
    });
    let srv = server::spawn("127.0.0.1:0".parse().expect("addr"), handler).await.expect("server");
    let chain = Subtensor::new(&srv.ws_url()).expect("client");
    let n = chain.neuron(1, 0, None).await.expect("decodes").expect("present");
    assert_eq!((n.uid, n.netuid, n.active, n.pruning_score), (0, 1, true, 65535));
    assert_eq!(chain.neuron(1, 5, None).await.expect("decodes"), None);
}

#[tokio::test]
async fn failures_are_typed_and_name_the_endpoint() {
    // Nothing listens.
    let (_closed, free) = crate::util::closed_port();
    for url in [format!("ws://127.0.0.1:{free}"), format!("http://127.0.0.1:{free}")] {
        let err =
            Subtensor::with_timeout(&url, Duration::from_secs(3)).expect("client").metagraph(27).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ChainError::Rpc(RpcError::Unreachable { .. })), "{msg}");
        assert!(msg.contains(&url), "{msg}");
    }
    assert!(Subtensor::new("127.0.0.1:9944").is_err(), "a URL without a scheme is refused up front");

    // A server that answers with an error object, garbage hex, truncated bytes, or unknown netuid.
    let truncated = {
        let hex = std::fs::read_to_string(fixtures().join(FIXTURE_01).join("neurons_lite.result.hex")).expect("hex");
        hex.trim()[..5000].to_owned()
    };
    let handler: Handler = Arc::new(move |method: String, params: Value| {
        let truncated = truncated.clone();
        Box::pin(async move {
            let netuid = params.get(1).and_then(Value::as_str).unwrap_or("").to_owned();
            match (method.as_str(), netuid.as_str()) {
                ("chain_getHead", _) => Ok(json!("0x11")),
                ("chain_getHeader", _) => Ok(json!({"number": "0x10"})),
                ("state_call", "0x0100") => Err(RpcFault::new(-32000, "Client error: Execution failed")),
                ("state_call", "0x0200") => Ok(json!("0xzz12")),
                ("state_call", "0x0300") => Ok(json!(truncated)),
                ("state_call", _) => Ok(json!("0x00")),
                _ => Err(RpcFault::method_not_found(&method)),
            }
        })
    });
    let srv = server::spawn("127.0.0.1:0".parse().expect("addr"), handler).await.expect("server");
    for url in [srv.ws_url(), srv.http_url()] {
        let chain = Subtensor::new(&url).expect("client");
        let e = chain.metagraph(1).await.unwrap_err();
        assert!(
            matches!(&e, ChainError::Rpc(RpcError::Rpc { code: -32000, method, .. }) if method == "state_call"),
            "{e}"
        );
        let e = chain.metagraph(2).await.unwrap_err();
        assert!(matches!(&e, ChainError::Decode { .. }) && e.to_string().contains("not hex"), "{e}");
        let e = chain.metagraph(3).await.unwrap_err();
        assert!(matches!(&e, ChainError::Decode { .. }) && e.to_string().contains("truncated"), "{e}");
        let e = chain.metagraph(27).await.unwrap_err();
        assert!(matches!(e, ChainError::UnknownNetuid { netuid: 27, .. }), "{e}");
        assert!(e.to_string().contains(&url));
        let e = chain.request("no_such_method", json!([])).await.unwrap_err();
        assert!(matches!(e, ChainError::Rpc(RpcError::Rpc { code: -32601, .. })), "{e}");
    }
}

#[tokio::test]
async fn websocket_client_reconnects_after_the_server_restarts() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = DevnetConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..DevnetConfig::new(dir.path()) };
    let node = devnet::spawn(cfg.clone()).await.expect("devnet");
    let addr = node.local_addr();
    let chain = Subtensor::new(&node.ws_url()).expect("client");
    assert!(ops::is_devnet(&chain).await.expect("system_chain"));
    node.shutdown().await;
    assert!(chain.best_block().await.is_err(), "the chain is down");
    let node = devnet::spawn(DevnetConfig { bind: addr, ..cfg }).await.expect("devnet again");
    assert!(chain.best_block().await.is_ok(), "the same client reconnects");
    node.shutdown().await;
}

fn fresh_keys(n: usize) -> Vec<Keypair> {
    (0..n).map(|_| Keypair::generate(12).expect("key")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_registers_stakes_serves_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    // The chain's clock stands still until the test moves it: block numbers are exact.
    let cfg = DevnetConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        block_time: Duration::from_millis(250),
        clock: Clock::manual(1_700_000_000_000),
        ..DevnetConfig::new(dir.path())
    };
    let node = devnet::spawn(cfg.clone()).await.expect("devnet");
    let chain = Subtensor::new(&node.ws_url()).expect("client");
    let coldkey = Keypair::generate(12).expect("cold").account_id();

    // 16 concurrent registrations: distinct uids 0..15, no lost write.
    let keys = fresh_keys(16);
    let mut set = tokio::task::JoinSet::new();
    for k in keys.clone() {
        let chain = chain.clone();
        set.spawn(async move { ops::register(&chain, &k, &coldkey, 27).await.expect("register") });
    }
    let mut uids = Vec::new();
    while let Some(u) = set.join_next().await {
        uids.push(u.expect("task"));
    }
    uids.sort_unstable();
    assert_eq!(uids, (0..16).collect::<Vec<u16>>());
    // Registering again is idempotent.
    let again = ops::register(&chain, &keys[3], &coldkey, 27).await.expect("again");
    let mg = chain.metagraph(27).await.expect("metagraph");
    assert_eq!(mg.by_hotkey(&keys[3].ss58()).map(|n| n.uid), Some(again));

    ops::set_stake(&chain, &keys[0], 27, 2_000 * 1_000_000_000, 1_000 * 1_000_000_000).await.expect("stake");
    for (i, k) in keys.iter().enumerate().skip(1) {
        ops::serve_axon(&chain, k, 27, "127.0.0.1".parse().expect("ip"), 9000 + i as u16, 9_000_000)
            .await
            .expect("serve");
    }

    for url in [node.ws_url(), node.http_url()] {
        let mg = Subtensor::new(&url).expect("client").metagraph(27).await.expect("metagraph");
        assert_eq!(mg.neurons.len(), 16);
        let v = mg.by_hotkey(&keys[0].ss58()).expect("validator");
        assert!(v.validator_permit);
        assert_eq!(v.stake_tao, 2180.0, "alpha + 0.18 × tao");
        assert_eq!(v.alpha_stake_rao, 2_000_000_000_000);
        assert!(!v.axon.serving);
        let m = mg.by_hotkey(&keys[5].ss58()).expect("miner");
        assert!(!m.validator_permit);
        assert_eq!(m.axon.addr().as_deref(), Some("127.0.0.1:9005"));
        assert_eq!(m.coldkey, coldkey.to_ss58());
        let full =
            Subtensor::new(&url).expect("client").neuron(27, m.uid, None).await.expect("neuron").expect("exists");
        assert_eq!(full.axon_info.port, 9005);
    }
    let before = chain.metagraph(27).await.expect("metagraph");
    assert_eq!(before.block, 1, "no time has passed since genesis");
    node.shutdown().await;

    cfg.clock.advance(Duration::from_secs(1));
    let node = devnet::spawn(cfg).await.expect("restart");
    let after = Subtensor::new(&node.ws_url()).expect("client").metagraph(27).await.expect("metagraph");
    assert_eq!(after.neurons, before.neurons, "state survives a restart");
    assert_eq!(after.block, before.block + 4, "block numbers continue from the stored genesis, one per 250 ms");
    node.shutdown().await;
}

#[tokio::test]
async fn devnet_refuses_forged_replayed_and_malformed_requests() {
    let dir = tempfile::tempdir().expect("tmp");
    let node =
        devnet::spawn(DevnetConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..DevnetConfig::new(dir.path()) })
            .await
            .expect("devnet");
    let chain = Subtensor::new(&node.http_url()).expect("client");
    let (victim, attacker) = (Keypair::generate(12).expect("k"), Keypair::generate(12).expect("k"));
    let cold = attacker.account_id();

    // Forged: claims the victim's hotkey, signed by the attacker.
    let mut fields = serde_json::Map::new();
    fields.insert("netuid".into(), json!(27));
    fields.insert("hotkey".into(), json!(victim.ss58()));
    fields.insert("coldkey".into(), json!(cold.to_ss58()));
    fields.insert("nonce".into(), json!(1));
    let sig = attacker.sign(devnet::signing_message("devnet_register", &fields).as_bytes());
    fields.insert("signature".into(), json!(sig.to_hex()));
    let e = chain.request("devnet_register", json!([Value::Object(fields.clone())])).await.unwrap_err();
    assert!(e.to_string().contains("Invalid signature"), "{e}");
    assert!(matches!(chain.metagraph(27).await, Err(ChainError::UnknownNetuid { .. })), "nothing was written");

    // Genuine, then the identical request again (a replay).
    let sig = victim.sign(devnet::signing_message("devnet_register", &fields).as_bytes());
    fields.insert("signature".into(), json!(sig.to_hex()));
    chain.request("devnet_register", json!([Value::Object(fields.clone())])).await.expect("genuine");
    let e = chain.request("devnet_register", json!([Value::Object(fields)])).await.unwrap_err();
    assert!(e.to_string().contains("not newer"), "{e}");

    // Staking an unregistered hotkey, malformed params, unknown methods.
    let e = ops::set_stake(&chain, &attacker, 27, 1, 0).await.unwrap_err();
    assert!(e.to_string().contains("not registered"), "{e}");
    let e = chain.request("devnet_serveAxon", json!([{"hotkey": "nope"}])).await.unwrap_err();
    assert!(matches!(e, ChainError::Rpc(RpcError::Rpc { code: -32602, .. })), "{e}");
    let e = ops::serve_axon(&chain, &victim, 27, "127.0.0.1".parse().expect("ip"), 0, 1).await.unwrap_err();
    assert!(e.to_string().contains("port"), "{e}");
    let e = chain.request("author_submitExtrinsic", json!(["0x00"])).await.unwrap_err();
    assert!(matches!(e, ChainError::Rpc(RpcError::Rpc { code: -32601, .. })), "{e}");
    let e =
        chain.request("state_call", json!(["NeuronInfoRuntimeApi_get_neurons_lite", "01", null])).await.unwrap_err();
    assert!(e.to_string().contains("cannot decode the arguments"), "{e}");

    let mg = chain.metagraph(27).await.expect("metagraph");
    assert_eq!(mg.neurons.len(), 1, "only the genuine registration landed");
    node.shutdown().await;
}

#[tokio::test]
async fn subscriptions_receive_every_notification_in_order_and_unsubscribe_on_drop() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("handshake");
        while let Some(Ok(Message::Text(t))) = ws.next().await {
            let req: Value = serde_json::from_str(&t).expect("json");
            let _ = seen_tx.send(req.clone());
            if req["method"] == "author_submitAndWatchExtrinsic" {
                // The id and three notifications in one burst: none may be lost to the race
                // between the response and the subscriber registering.
                let mut burst = vec![json!({"jsonrpc": "2.0", "id": req["id"], "result": "sub-7"})];
                for r in [json!("ready"), json!({"inBlock": "0xaa"}), json!({"finalized": "0xaa"})] {
                    burst.push(json!({"jsonrpc": "2.0", "method": "author_extrinsicUpdate", "params": {"subscription": "sub-7", "result": r}}));
                }
                // Another subscription's notification is not ours.
                burst.insert(
                    2,
                    json!({"jsonrpc": "2.0", "method": "x", "params": {"subscription": "sub-8", "result": "no"}}),
                );
                for m in burst {
                    ws.send(Message::Text(m.to_string().into())).await.expect("send");
                }
            }
        }
    });
    let t = bittensor::subtensor::rpc::WsTransport::new(&format!("ws://127.0.0.1:{port}"), Duration::from_secs(5));
    let mut sub = bittensor::subtensor::rpc::Transport::subscribe(
        &t,
        "author_submitAndWatchExtrinsic",
        json!(["0x00"]),
        "author_unwatchExtrinsic",
    )
    .await
    .expect("subscribed");
    assert_eq!(sub.next().await, Some(json!("ready")));
    assert_eq!(sub.next().await, Some(json!({"inBlock": "0xaa"})));
    assert_eq!(sub.next().await, Some(json!({"finalized": "0xaa"})));
    drop(sub);
    let first = seen_rx.recv().await.expect("submit seen");
    assert_eq!(first["method"], "author_submitAndWatchExtrinsic");
    let unsub = tokio::time::timeout(Duration::from_secs(5), seen_rx.recv()).await.expect("in time").expect("unsub");
    assert_eq!((unsub["method"].as_str(), &unsub["params"]), (Some("author_unwatchExtrinsic"), &json!(["sub-7"])));
    // HTTP carries no subscriptions: a clear error, not a hang.
    let http =
        bittensor::subtensor::rpc::HttpTransport::new("http://127.0.0.1:9", Duration::from_secs(1)).expect("http");
    let err = bittensor::subtensor::rpc::Transport::subscribe(&http, "chain_subscribeNewHeads", json!([]), "x")
        .await
        .expect_err("no subscriptions over HTTP");
    assert!(err.to_string().contains("WebSocket"), "{err}");
}

#[tokio::test]
async fn runtime_metadata_is_fetched_once_per_spec_and_kept_between_clients() {
    let hex = std::fs::read_to_string(fixtures().join("chain/metadata_v14_spec343.hex")).expect("metadata");
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = fetches.clone();
    let handler: Handler = Arc::new(move |method: String, _params: Value| {
        let answer = match method.as_str() {
            "state_getRuntimeVersion" => Ok(json!({"specVersion": 343, "transactionVersion": 1})),
            "chain_getBlockHash" => Ok(json!(format!("0x{}", "ab".repeat(32)))),
            "state_getMetadata" => {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(json!(hex.trim()))
            }
            _ => Err(RpcFault::method_not_found(&method)),
        };
        Box::pin(async move { answer })
    });
    let srv = server::spawn("127.0.0.1:0".parse().expect("addr"), handler).await.expect("server");
    let dir = tempfile::tempdir().expect("tmp");
    let fetched = || fetches.load(std::sync::atomic::Ordering::SeqCst);
    let client = || Subtensor::new(&srv.ws_url()).expect("client").with_metadata_dir(dir.path());
    let a = client();
    let rt = a.runtime().await.expect("runtime");
    assert_eq!((rt.spec_version, rt.metadata.version, fetched()), (343, 14, 1));
    a.runtime().await.expect("again");
    assert_eq!(fetched(), 1, "the client keeps it");
    client().runtime().await.expect("a new client");
    assert_eq!(fetched(), 1, "a new client reads the file");
    // A damaged file is fetched again and replaced.
    let file = std::fs::read_dir(dir.path()).expect("dir").next().expect("a file").expect("entry").path();
    assert!(file.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("-343.scale")), "{file:?}");
    std::fs::write(&file, b"garbage").expect("damage");
    client().runtime().await.expect("refetched");
    assert_eq!(fetched(), 2);
    client().runtime().await.expect("from the new file");
    assert_eq!(fetched(), 2);
}
