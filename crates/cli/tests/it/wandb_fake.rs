//! A stand-in for the hosted wandb API (which cannot be reached here): a small stateful GraphQL
//! endpoint on 127.0.0.1 that understands the four operations SN27's code uses — `Runs` (with
//! SN27's Mongo-style filters), `Run`, `UpsertBucket` to create a run and to write its config —
//! and stores runs the way wandb does (the config as wrapped JSON text). The exact request bytes
//! are checked against the real SDK's in the `wandb` crate's tests; this one checks what the CLI
//! does with them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct StoredRun {
    pub storage_id: String,
    pub name: String,
    pub display_name: Option<String>,
    /// Wrapped, as wandb stores it: `{"key": {"value": v, "desc": null}}`.
    pub config: Map<String, Value>,
}

impl StoredRun {
    /// The config as the SDK reads it (one level unwrapped).
    pub fn unwrapped(&self) -> Map<String, Value> {
        self.config.iter().map(|(k, v)| (k.clone(), v.get("value").cloned().unwrap_or_else(|| v.clone()))).collect()
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub runs: Vec<StoredRun>,
    pub requests: u64,
}

#[derive(Debug, Clone)]
pub struct FakeWandb {
    pub url: String,
    pub state: Arc<Mutex<State>>,
    /// While set, every request is refused with HTTP 401 (a rejected key).
    pub refuse: Arc<AtomicBool>,
    next_id: Arc<AtomicU64>,
}

impl FakeWandb {
    pub async fn start() -> FakeWandb {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let fake =
            FakeWandb { url, state: Arc::default(), refuse: Arc::default(), next_id: Arc::new(AtomicU64::new(1)) };
        let me = fake.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let Some(body) = read_request(&mut sock).await else { return };
                    let (status, reply) = me.answer(&body);
                    let bytes = serde_json::to_vec(&reply).expect("json");
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        bytes.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&bytes).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        fake
    }

    /// Adds a run as another validator's process would have written it.
    pub fn insert(&self, name: &str, display_name: &str, config: Value) {
        let Value::Object(config) = config else { panic!("config must be an object") };
        let wrapped = config.into_iter().map(|(k, v)| (k, json!({"value": v, "desc": null}))).collect();
        let storage_id = format!("storage-{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        self.state.lock().expect("lock").runs.push(StoredRun {
            storage_id,
            name: name.into(),
            display_name: Some(display_name.into()),
            config: wrapped,
        });
    }

    pub fn runs(&self) -> Vec<StoredRun> {
        self.state.lock().expect("lock").runs.clone()
    }

    fn answer(&self, body: &[u8]) -> (u16, Value) {
        self.state.lock().expect("lock").requests += 1;
        if self.refuse.load(Ordering::SeqCst) {
            return (401, json!({"errors": [{"message": "user is not logged in"}]}));
        }
        let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let query = req["query"].as_str().unwrap_or_default();
        let vars = &req["variables"];
        let mut state = self.state.lock().expect("lock");
        let data = if query.starts_with("query Runs") {
            let filters: Value =
                vars["filters"].as_str().and_then(|f| serde_json::from_str(f).ok()).unwrap_or(Value::Null);
            let edges: Vec<Value> = state
                .runs
                .iter()
                .filter(|r| matches(&filters, r))
                .enumerate()
                .map(|(i, r)| json!({"node": node(r), "cursor": format!("c{i}")}))
                .collect();
            json!({"project": {"runCount": edges.len(), "readOnly": false, "runs": {
                "edges": edges, "pageInfo": {"endCursor": null, "hasNextPage": false}}}})
        } else if query.starts_with("query Run") {
            let name = vars["name"].as_str().unwrap_or_default();
            let run = state.runs.iter().find(|r| r.name == name).map(node);
            json!({"project": {"run": run}})
        } else if query.starts_with("mutation UpsertBucket") && query.contains("modelName") {
            let name = vars["name"].as_str().unwrap_or_default().to_owned();
            let storage_id = format!("storage-{}", self.next_id.fetch_add(1, Ordering::SeqCst));
            state.runs.push(StoredRun {
                storage_id: storage_id.clone(),
                name: name.clone(),
                display_name: None,
                config: Map::new(),
            });
            json!({"upsertBucket": {"bucket": {"project": {"name": vars["project"], "entity": {"name": vars["entity"]}},
                "id": storage_id, "name": name}, "inserted": true}})
        } else if query.starts_with("mutation UpsertBucket") {
            let id = vars["id"].as_str().unwrap_or_default();
            let Some(run) = state.runs.iter_mut().find(|r| r.storage_id == id) else {
                return (200, json!({"errors": [{"message": "run not found"}], "data": null}));
            };
            if let Some(c) = vars["config"].as_str().and_then(|c| serde_json::from_str::<Map<String, Value>>(c).ok()) {
                run.config = c;
            }
            if let Some(d) = vars["display_name"].as_str() {
                run.display_name = Some(d.to_owned());
            }
            json!({"upsertBucket": {"bucket": node(run)}})
        } else {
            return (200, json!({"errors": [{"message": "unknown operation"}], "data": null}));
        };
        (200, json!({"data": data}))
    }
}

pub fn node(r: &StoredRun) -> Value {
    json!({
        "id": r.storage_id, "name": r.name, "displayName": r.display_name, "state": "running",
        "config": serde_json::to_string(&r.config).expect("json"), "tags": [], "group": null,
        "description": null, "notes": null, "sweepName": null,
    })
}

/// SN27's filters: `$and` of `{path: value}` and `{path: {"$exists": bool}}` over `config.*` and
/// `display_name`.
fn matches(filter: &Value, run: &StoredRun) -> bool {
    let config = Value::Object(run.unwrapped());
    let Some(all) = filter.get("$and").and_then(Value::as_array) else { return true };
    all.iter().all(|cond| {
        let Some((path, want)) = cond.as_object().and_then(|o| o.iter().next()) else { return true };
        let have = if path == "display_name" {
            run.display_name.clone().map(Value::from)
        } else {
            path.strip_prefix("config.")
                .map(|p| p.split('.').try_fold(&config, |v, k| v.get(k)).cloned())
                .unwrap_or(None)
        };
        match want.get("$exists").and_then(Value::as_bool) {
            Some(e) => have.is_some() == e,
            None => have.as_ref() == Some(want),
        }
    })
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_lowercase();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while buf.len() < header_end + len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf[header_end..header_end + len].to_vec())
}
