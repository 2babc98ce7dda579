//! Fuzzing the parsing a stranger reaches, proptest-driven with a bounded number of cases so it
//! runs in CI: raw HTTP bytes (request line, headers, framing, body) through the real server
//! (hyper, the header phase, the body reader), and the synapse parsers on their own (headers
//! into a `SynapseHeader`, a body object split into common and own fields). Whatever the input,
//! the answer is a well-formed HTTP response or a closed connection, never a panic or a hang,
//! and the axon keeps serving.

use std::net::SocketAddr;
use std::time::Duration;

use bittensor::axon::AxonConfig;
use bittensor::dendrite::{AxonTarget, Dendrite};
use bittensor::synapse::SynapseHeader;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::{key, test_axon, Behaviour, Specs};

const HEADER_NAMES: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "content-type",
    "connection",
    "expect",
    "timeout",
    "name",
    "computed_body_hash",
    "bt_header_dendrite_hotkey",
    "bt_header_dendrite_nonce",
    "bt_header_dendrite_uuid",
    "bt_header_dendrite_signature",
    "bt_header_dendrite_version",
    "bt_header_axon_hotkey",
];

/// Header values as attackers write them: numbers at the edges, long runs, control bytes.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"0".to_vec()),
        Just(b"18446744073709551615".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"chunked".to_vec()),
        Just(b"100-continue".to_vec()),
        Just(b"5DAAnrj7VHTznn2AWBemMuyBwZWs6FNFjdyVXUeYum3PTXFy".to_vec()),
        "[ -~]{0,300}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

/// A request as bytes: a plausible or garbled request line, headers, then a body whose length
/// may or may not match what the headers claim.
fn raw_request() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just(b"POST /Specs HTTP/1.1".to_vec()),
        Just(b"POST /Allocate HTTP/1.1".to_vec()),
        Just(b"POST /Synapse HTTP/1.0".to_vec()),
        Just(b"GET / HTTP/1.1".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..60),
    ];
    let headers = proptest::collection::vec(
        (
            prop_oneof![proptest::sample::select(HEADER_NAMES).prop_map(str::to_owned), "[a-zA-Z_-]{1,20}"],
            header_value(),
        ),
        0..10,
    );
    let body = prop_oneof![
        Just(Vec::new()),
        Just(br#"{"specs_input": ""}"#.to_vec()),
        Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..400),
    ];
    (line, headers, body, any::<bool>()).prop_map(|(line, headers, body, end_head)| {
        let mut raw = line;
        raw.extend_from_slice(b"\r\n");
        for (name, value) in headers {
            raw.extend_from_slice(name.as_bytes());
            raw.extend_from_slice(b": ");
            raw.extend_from_slice(&value);
            raw.extend_from_slice(b"\r\n");
        }
        if end_head {
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(&body);
        raw
    })
}

/// Writes the bytes, closes our side, and reads whatever comes back (bounded).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out)).await {
        Ok(_) => Ok(out),
        Err(_) => Err("no answer and no close within 15 s".into()),
    }
}

#[test]
fn raw_http_through_the_server_gets_well_formed_answers() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let kp = key("axon_hotkey");
    let id = kp.account_id();
    let handle = rt.block_on(async {
        let cfg = AxonConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..AxonConfig::default() };
        test_axon(kp, Behaviour::default()).spawn(cfg).await.expect("spawn")
    });
    let addr = handle.local_addr();
    let mut runner = TestRunner::new(Config { cases: 200, failure_persistence: None, ..Config::default() });
    let result = runner.run(&raw_request(), |bytes| {
        let out = rt.block_on(exchange(addr, &bytes)).map_err(TestCaseError::fail)?;
        let text = String::from_utf8_lossy(&out);
        // Every answer is HTTP/1.x with a 2xx/4xx/5xx status (or nothing, on a closed socket).
        if !out.is_empty() {
            let status: u16 = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            prop_assert!(text.starts_with("HTTP/1."), "not HTTP: {:?}", &text[..text.len().min(80)]);
            prop_assert!((200..600).contains(&status), "status {}", status);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Still serving.
    let target = AxonTarget::new("127.0.0.1", addr.port(), &id);
    let ok = rt.block_on(async {
        Dendrite::new(key("dendrite_hotkey")).call(&target, Specs::default(), Duration::from_secs(5)).await.is_success()
    });
    assert!(ok, "the axon stopped serving after the fuzz cases");
    rt.block_on(handle.shutdown());
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[ -~]{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body object that uses the common fields' names with arbitrary values.
fn body_object() -> impl Strategy<Value = Map<String, Value>> {
    let names = prop_oneof![
        proptest::sample::select(
            &[
                "name",
                "timeout",
                "total_size",
                "header_size",
                "dendrite",
                "axon",
                "computed_body_hash",
                "required_hash_fields"
            ][..]
        )
        .prop_map(str::to_owned),
        "[a-z_]{1,12}",
    ];
    proptest::collection::btree_map(names, json_value(), 0..10).prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Headers into a synapse: a value of the wrong type is an error, never a panic.
    #[test]
    fn synapse_headers_parse_or_fail_cleanly(
        headers in proptest::collection::vec((proptest::sample::select(HEADER_NAMES), header_value()), 0..16)
    ) {
        let mut map = http::HeaderMap::new();
        for (name, value) in &headers {
            if let Ok(v) = http::HeaderValue::from_bytes(value) {
                map.append(*name, v);
            }
        }
        if let Ok(h) = SynapseHeader::from_headers(&map) {
            // What parsed renders back into headers without panicking either.
            let _ = h.to_headers(&h.computed_body_hash);
        }
    }

    /// A body object split into the common fields and the synapse's own, then joined back.
    #[test]
    fn synapse_bodies_split_or_fail_cleanly(body in body_object()) {
        if let Ok((header, fields)) = SynapseHeader::split_body(body) {
            let joined = header.join_body(&fields);
            prop_assert!(joined.len() >= fields.len());
        }
    }
}
