//! The chain client end to end: recorded finney traffic replayed over WebSocket and HTTP yields
//! the same metagraph as decoding the bytes directly; failures give typed errors naming the
//! endpoint; subscriptions and the metadata cache. (The devnet chain: `devnet.rs`.)

use std::sync::Arc;
use std::time::Duration;

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
