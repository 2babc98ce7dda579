//! How the real 9.0.0 dendrite reads odd responses (`dendrite_response_parsing-bt9.0.0.json`),
//! reproduced by ours against a stub server sending the same bytes.

use std::time::Duration;

use bittensor::dendrite::{AxonTarget, Dendrite, StatusKind};
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::util::{fixtures, key, Allocate};

/// Serves one canned response per connection: status, headers exactly as given, JSON body.
async fn stub(status: u16, headers: Map<String, Value>, body: Value) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (headers, body) = (headers.clone(), body.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let body = serde_json::to_vec(&body).expect("json");
                let mut resp =
                    format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
                for (k, v) in &headers {
                    resp.push_str(&format!("{k}: {}\r\n", v.as_str().unwrap_or("")));
                }
                resp.push_str("\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn dendrite_reads_odd_responses_like_the_sdk() {
    let path = fixtures().join("http/dendrite_response_parsing-bt9.0.0.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    let results = doc["results"].as_object().expect("results");
    assert!(results.len() >= 9);
    let dendrite = Dendrite::new(key("dendrite_hotkey"));
    let axon_hotkey = key("axon_hotkey").account_id();
    for (case, r) in results {
        let sent = &r["server_sent"];
        let addr = stub(
            sent["status"].as_u64().expect("status") as u16,
            sent["headers"].as_object().cloned().unwrap_or_default(),
            sent["body"].clone(),
        )
        .await;
        let target = AxonTarget::new("127.0.0.1", addr.port(), &axon_hotkey);
        let request = Allocate { timeline: 90, public_key: "orig".into(), ..Allocate::default() };
        let resp = dendrite.call(&target, request, Duration::from_secs(5)).await;

        if case == "uppercase_header_axon_status" {
            // Documented deviation: HTTP header names are case-insensitive; the Python dendrite
            // matches them case-sensitively and misses an upper-case status header.
            assert!(resp.is_success(), "{case}");
            assert_eq!(r["is_success"], false);
            continue;
        }
        assert_eq!(resp.is_success(), r["is_success"].as_bool().expect("bool"), "{case}: is_success");
        assert_eq!(resp.status_code(), r["dendrite.status_code"].as_i64(), "{case}: status code");
        let want_msg = r["dendrite.status_message"].as_str();
        if resp.status_code() == Some(422) {
            assert_eq!(resp.kind, StatusKind::BadResponse);
            assert!(resp.status_message().is_some_and(|m| m.starts_with("Failed to parse response")), "{case}");
            assert!(want_msg.is_some_and(|m| m.starts_with("Failed to parse response")), "{case}");
        } else {
            assert_eq!(resp.status_message(), want_msg, "{case}: status message");
        }
        assert_eq!(resp.synapse.timeline, r["timeline_after"].as_i64().expect("timeline"), "{case}: timeline");
        assert_eq!(resp.synapse.public_key, r["public_key_after"].as_str().expect("pk"), "{case}: public_key");
        // `deserialize()` is `output`: the server's on a 200 that parsed, else ours (empty).
        assert_eq!(Value::Object(resp.synapse.output.clone()), r["deserialize()"], "{case}: output");
    }
}
