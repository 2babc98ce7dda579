//! The wandb public API calls SN27 makes, sent exactly as `wandb==0.19.0` sends them.
//!
//! Every call is `POST {base}/graphql` with `{"query": <document>, "variables": {...}}`; the
//! documents in `documents/` are the ones the SDK prints (byte for byte), the variables are sent in
//! the SDK's order with unset ones as `null`, and the body is written as Python's `json.dumps`
//! writes it. Errors, retries and backoff follow the SDK: 5xx, 429, timeouts and network errors
//! are retried with exponential backoff from 1 s (doubling, up to 25 % jitter) until 20 s have
//! passed; other HTTP errors and GraphQL errors are not. One deliberate difference: the entity is
//! configured, so the SDK's `Viewer` query (it asks for the default entity) is never sent.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use rand::Rng as _;
use secrecy::ExposeSecret as _;
use serde_json::{json, Map, Value};

use crate::auth::ApiKey;
use crate::error::WandbError;
use crate::pyjson;
use crate::transport::{Endpoint, Failure, Transport};

/// `query Runs`: a page of runs matching a filter, with their configs.
pub const RUNS_QUERY: &str = include_str!("documents/runs.graphql");
/// `query Run`: one run by id.
pub const RUN_QUERY: &str = include_str!("documents/run.graphql");
/// `mutation UpsertBucket` as `Run.update()` sends it: the whole config of a run, by storage id.
pub const UPDATE_RUN_MUTATION: &str = include_str!("documents/update_run.graphql");
/// `mutation UpsertBucket` as `Api.create_run()` sends it: a new empty run with a chosen id.
pub const CREATE_RUN_MUTATION: &str = include_str!("documents/create_run.graphql");

/// The public wandb API, as the SDK defaults to.
pub const DEFAULT_BASE_URL: &str = "https://api.wandb.ai";
/// SN27's wandb entity.
pub const SN27_ENTITY: &str = "neuralinternet";
/// SN27's wandb project.
pub const SN27_PROJECT: &str = "opencompute";
/// Runs per page: the SDK's default `per_page`.
pub const DEFAULT_PER_PAGE: u32 = 50;
/// Ours, instead of the SDK's `W&B Public Client 0.19.0`: the server should know who calls.
pub const USER_AGENT: &str = concat!("nicompute-wandb/", env!("CARGO_PKG_VERSION"));

/// Retry schedule for server errors, timeouts and network errors.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// First pause; each next one doubles, plus up to 25 % random jitter.
    pub initial_backoff: Duration,
    /// No new pause starts once this much time has passed since the first attempt.
    pub max_elapsed: Duration,
}

impl RetryPolicy {
    /// No retries: one attempt only (the SDK's `WANDB_TEST=1`).
    pub const NONE: Self = Self { initial_backoff: Duration::ZERO, max_elapsed: Duration::ZERO };
}

impl Default for RetryPolicy {
    /// The SDK's: 1 s, doubling, retried while less than 20 s have passed (6 attempts, ~35 s).
    fn default() -> Self {
        Self { initial_backoff: Duration::from_secs(1), max_elapsed: Duration::from_secs(20) }
    }
}

/// Where and how to talk to wandb.
#[derive(Clone, Debug)]
pub struct WandbConfig {
    /// `https://api.wandb.ai` unless overridden (see [`WandbConfig::with_base_url`]).
    pub base_url: String,
    pub entity: String,
    pub project: String,
    /// Per HTTP request (each attempt).
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for WandbConfig {
    /// SN27's project on the public API, 20 s per request (the SDK's), the SDK's retries.
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            entity: SN27_ENTITY.to_owned(),
            project: SN27_PROJECT.to_owned(),
            timeout: Duration::from_secs(20),
            retry: RetryPolicy::default(),
        }
    }
}

impl WandbConfig {
    /// The defaults with another API server (`--wandb-base-url` / `WANDB_BASE_URL`, as the
    /// caller read it).
    pub fn with_base_url(base_url: &str) -> Self {
        Self { base_url: base_url.to_owned(), ..Self::default() }
    }

    /// The host the API key is looked up for in `~/.netrc`.
    pub fn api_host(&self) -> Result<String, WandbError> {
        Endpoint::parse(&self.base_url).map(|e| e.host)
    }
}

/// A run as the SDK's `Run` object exposes it, with what an update must send back.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// The run id (`name` on the wire; the SDK's `run.id`), e.g. `ckig4h3x`. What SN27 signs.
    pub id: String,
    /// The backend's storage id (`id` on the wire), which updates address. Absent in minimal answers.
    pub storage_id: Option<String>,
    /// The run's display name (`displayName`; the SDK's `run.name`), e.g. `validator-5F…`.
    pub display_name: Option<String>,
    pub state: Option<String>,
    /// The user config, unwrapped (`{"k": {"value": v, "desc": …}}` → `{"k": v}`), in stored order.
    pub config: Map<String, Value>,
    /// The `_wandb` entry of the stored config (telemetry the SDK keeps and writes back).
    pub wandb_internal: Option<Value>,
    pub tags: Vec<String>,
    pub description: Option<String>,
    pub notes: Option<String>,
    pub group: Option<String>,
}

/// A run node the client cannot read (the server's answer, shown in [`WandbError::Protocol`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunNodeError {
    #[error("run node without `name`")]
    NoName,
    #[error("run {id}: config is not a JSON object")]
    ConfigNotAnObject { id: String },
    #[error("run {id}: config is not JSON ({reason})")]
    ConfigNotJson { id: String, reason: String },
    #[error("run {id}: config is neither JSON text nor an object")]
    ConfigShape { id: String },
}

impl Run {
    /// Reads a `RunFragment` node as `Run.load` does. Config, summary and system metrics are JSON
    /// text inside the JSON; `null` or missing config is an empty one.
    pub fn from_node(node: &Value) -> Result<Self, RunNodeError> {
        let id = node.get("name").and_then(Value::as_str).ok_or(RunNodeError::NoName)?.to_owned();
        let text = |k: &str| node.get(k).and_then(Value::as_str).map(str::to_owned);
        let stored = match node.get("config") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(m)) => m,
                Ok(Value::Null) => Map::new(),
                Ok(_) => return Err(RunNodeError::ConfigNotAnObject { id }),
                Err(e) => return Err(RunNodeError::ConfigNotJson { id, reason: e.to_string() }),
            },
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(RunNodeError::ConfigShape { id }),
        };
        let mut config = Map::new();
        let mut wandb_internal = None;
        for (key, value) in stored {
            // One level of unwrapping, as the SDK does; anything not wrapped passes as it is.
            let value = match value {
                Value::Object(mut wrapped) if wrapped.contains_key("value") => {
                    wrapped.remove("value").unwrap_or_default()
                }
                other => other,
            };
            match key.as_str() {
                "_wandb" => wandb_internal = Some(value),
                "wandb_version" => {}
                _ => {
                    config.insert(key, value);
                }
            }
        }
        let tags = node
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        Ok(Self {
            id,
            storage_id: text("id"),
            display_name: text("displayName"),
            state: text("state"),
            config,
            wandb_internal,
            tags,
            description: text("description"),
            notes: text("notes"),
            group: text("group"),
        })
    }

    /// The `config` variable of an update, as the SDK's `Run.json_config` writes it: `_wandb`
    /// first, then every user key, each as `{"value": v, "desc": null}`. The whole config, not a
    /// delta: the backend replaces what it stores.
    pub fn wrapped_config(&self) -> String {
        let mut out = Map::new();
        if let Some(internal) = &self.wandb_internal {
            out.insert("_wandb".into(), json!({"value": internal, "desc": null}));
        }
        for (key, value) in &self.config {
            out.insert(key.clone(), json!({"value": value, "desc": null}));
        }
        pyjson::to_string(&Value::Object(out))
    }
}

/// One page of runs and where the next starts.
#[derive(Debug)]
struct Page {
    runs: Vec<Run>,
    next_cursor: Option<String>,
}

/// A client for one wandb project.
#[derive(Debug)]
pub struct WandbClient {
    config: WandbConfig,
    key: ApiKey,
    transport: Transport,
}

impl WandbClient {
    /// A client for `config.entity/config.project` with a key the caller found (see
    /// [`ApiKey::resolve_from`]). Sends nothing yet.
    pub fn with_key(config: WandbConfig, key: ApiKey) -> Result<Self, WandbError> {
        let endpoint = Endpoint::parse(&config.base_url)?;
        let transport = Transport::new(endpoint, config.timeout);
        Ok(Self { config, key, transport })
    }

    pub fn config(&self) -> &WandbConfig {
        &self.config
    }

    /// `{base}/graphql`, for messages.
    pub fn endpoint(&self) -> &str {
        &self.transport.endpoint.url
    }

    /// All runs matching a Mongo-style `filters` document, oldest first, following the pages as
    /// the SDK does (cursor of the last edge, while `hasNextPage`). `api.runs(path, filters)`.
    pub async fn runs(&self, filters: &Value, per_page: u32) -> Result<Vec<Run>, WandbError> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.runs_page(filters, per_page, cursor.as_deref()).await?;
            all.extend(page.runs);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// The first page only: what SN27's `len(runs)` / `runs[0]` costs.
    pub async fn first_runs(&self, filters: &Value, per_page: u32) -> Result<Vec<Run>, WandbError> {
        Ok(self.runs_page(filters, per_page, None).await?.runs)
    }

    async fn runs_page(&self, filters: &Value, per_page: u32, cursor: Option<&str>) -> Result<Page, WandbError> {
        let variables = json!({
            "project": self.config.project,
            "entity": self.config.entity,
            "order": "+created_at",
            "filters": pyjson::to_string(filters),
            "perPage": per_page,
            "cursor": cursor,
        });
        let data = self.graphql(RUNS_QUERY, variables).await?;
        let runs = data
            .pointer("/project/runs")
            .filter(|r| !r.is_null())
            .ok_or_else(|| self.protocol("`project.runs` missing: the project may not exist".into()))?;
        let edges = runs.get("edges").and_then(Value::as_array).ok_or_else(|| self.protocol("no `edges`".into()))?;
        let mut out = Vec::with_capacity(edges.len());
        for edge in edges {
            let node = edge.get("node").ok_or_else(|| self.protocol("an edge without `node`".into()))?;
            out.push(Run::from_node(node).map_err(|e| self.protocol(e.to_string()))?);
        }
        let has_next = runs.pointer("/pageInfo/hasNextPage").and_then(Value::as_bool).unwrap_or(false);
        let next_cursor = if has_next {
            // The SDK continues from the last edge's cursor, not pageInfo.endCursor; an empty
            // page that claims more would loop forever (the SDK fails with IndexError).
            let last = edges.last().ok_or_else(|| self.protocol("an empty page with hasNextPage".into()))?;
            let c = last
                .get("cursor")
                .and_then(Value::as_str)
                .ok_or_else(|| self.protocol("edge without cursor".into()))?;
            if cursor == Some(c) {
                return Err(self.protocol("the next page starts at the same cursor".into()));
            }
            Some(c.to_owned())
        } else {
            None
        };
        Ok(Page { runs: out, next_cursor })
    }

    /// One run by id (`api.run("entity/project/id")`); `None` when the project has no such run.
    pub async fn run(&self, run_id: &str) -> Result<Option<Run>, WandbError> {
        let variables = json!({"entity": self.config.entity, "project": self.config.project, "name": run_id});
        let data = self.graphql(RUN_QUERY, variables).await?;
        match data.pointer("/project/run") {
            None | Some(Value::Null) => Ok(None),
            Some(node) => Run::from_node(node).map(Some).map_err(|e| self.protocol(e.to_string())),
        }
    }

    /// Creates an empty run with this id (`api.create_run(run_id=…)`); returns its storage id.
    pub async fn create_run(&self, run_id: &str) -> Result<Run, WandbError> {
        let variables = json!({"entity": self.config.entity, "project": self.config.project, "name": run_id});
        let data = self.graphql(CREATE_RUN_MUTATION, variables).await?;
        let bucket = data.pointer("/upsertBucket/bucket").ok_or_else(|| self.protocol("no `bucket`".into()))?;
        let storage_id = bucket.get("id").and_then(Value::as_str).map(str::to_owned);
        if storage_id.is_none() {
            return Err(self.protocol("the created run has no storage id".into()));
        }
        let id = bucket.get("name").and_then(Value::as_str).unwrap_or(run_id).to_owned();
        Ok(Run {
            id,
            storage_id,
            display_name: None,
            state: None,
            config: Map::new(),
            wandb_internal: None,
            tags: Vec::new(),
            description: None,
            notes: None,
            group: None,
        })
    }

    /// Writes `run`'s display name and whole config (`run.update()`'s config mutation). The SDK
    /// follows it with a second mutation re-sending the summary it read; we do not, so a summary
    /// logged meanwhile by the validator's own process is not overwritten with an older one.
    pub async fn update_run(&self, run: &Run) -> Result<(), WandbError> {
        let storage_id = run
            .storage_id
            .as_deref()
            .ok_or_else(|| self.protocol(format!("run {} came without a storage id; cannot update it", run.id)))?;
        let variables = json!({
            "entity": self.config.entity,
            "project": self.config.project,
            "name": run.id,
            "id": storage_id,
            "tags": run.tags,
            "description": run.description,
            "notes": run.notes,
            "display_name": run.display_name,
            "config": run.wrapped_config(),
            "groupName": run.group,
        });
        self.graphql(UPDATE_RUN_MUTATION, variables).await.map(drop)
    }

    fn protocol(&self, reason: String) -> WandbError {
        WandbError::Protocol { endpoint: self.endpoint().to_owned(), reason }
    }

    /// Sends one GraphQL document with retries; returns `data`.
    async fn graphql(&self, document: &str, variables: Value) -> Result<Value, WandbError> {
        let body = Bytes::from(pyjson::to_string(&json!({"query": document, "variables": variables})));
        let auth = HeaderValue::from_str(self.key.basic_auth().expose_secret())
            .map_err(|_| WandbError::NoApiKey { host: self.transport.endpoint.host.clone() })
            .map(|mut v| {
                v.set_sensitive(true);
                v
            })?;
        let headers = [
            ("user-agent", HeaderValue::from_static(USER_AGENT)),
            ("accept", HeaderValue::from_static("*/*")),
            ("use-admin-privileges", HeaderValue::from_static("true")),
            ("content-type", HeaderValue::from_static("application/json")),
            ("authorization", auth),
        ];
        let operation = document.split(['(', ' ', '{']).nth(1).unwrap_or("?");
        let endpoint = self.endpoint().to_owned();
        let started = Instant::now();
        let mut backoff = self.config.retry.initial_backoff;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let outcome = self.transport.post(&headers, body.clone()).await;
            let retryable = match outcome {
                Ok(reply) if reply.status.is_success() => return self.read_data(&reply.body),
                Ok(reply) => {
                    let status = reply.status.as_u16();
                    let message = first_error_message(&reply.body)
                        .unwrap_or_else(|| reply.status.canonical_reason().unwrap_or("error").to_owned());
                    let (entity, project) = (self.config.entity.clone(), self.config.project.clone());
                    match status {
                        401 => return Err(WandbError::BadApiKey { endpoint }),
                        403 => return Err(WandbError::Forbidden { endpoint, entity, project, message }),
                        404 => return Err(WandbError::ProjectNotFound { endpoint, entity, project, message }),
                        429 | 500..=599 => WandbError::Server { endpoint: endpoint.clone(), status, message, attempts },
                        _ => return Err(WandbError::Rejected { endpoint, status, message }),
                    }
                }
                Err(Failure::Timeout) => WandbError::Timeout {
                    endpoint: endpoint.clone(),
                    seconds: self.config.timeout.as_secs_f64(),
                    attempts,
                },
                Err(Failure::Network(reason)) => {
                    WandbError::Unreachable { endpoint: endpoint.clone(), reason, attempts }
                }
            };
            if started.elapsed() >= self.config.retry.max_elapsed {
                return Err(retryable);
            }
            let jitter = rand::thread_rng().gen_range(0.0..=0.25);
            let pause = backoff.mul_f64(1.0 + jitter);
            tracing::debug!(%endpoint, operation, attempts, "wandb: {retryable}; retrying in {:.1} s", pause.as_secs_f64());
            tokio::time::sleep(pause).await;
            backoff = backoff.saturating_mul(2);
        }
    }

    /// `data` of a 200 answer; a non-empty `errors` wins even when `data` is there (as the SDK).
    fn read_data(&self, body: &[u8]) -> Result<Value, WandbError> {
        let endpoint = self.endpoint().to_owned();
        let mut v: Value = serde_json::from_slice(body)
            .map_err(|e| WandbError::Protocol { endpoint: endpoint.clone(), reason: format!("not JSON ({e})") })?;
        if let Some(message) = error_message(&v) {
            return Err(WandbError::GraphQl { endpoint, message });
        }
        match v.get_mut("data") {
            Some(data) if !data.is_null() => Ok(data.take()),
            _ => Err(WandbError::Protocol { endpoint, reason: "neither `data` nor `errors` in the answer".into() }),
        }
    }
}

fn error_message(v: &Value) -> Option<String> {
    let first = v.get("errors")?.as_array()?.first()?;
    Some(first.get("message").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| first.to_string()))
}

fn first_error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    error_message(&v).map(|m| m.chars().take(300).collect())
}

/// A fresh run id as the SDK makes one: 8 characters of `[a-z0-9]`.
pub fn new_run_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..8).map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_unwrapped_one_level_and_written_back_wrapped() {
        let stored = r#"{"_wandb": {"desc": null, "value": {"t": 1}}, "wandb_version": 1, "hotkey": {"desc": null, "value": "5X"}, "config": {"desc": null, "value": {"netuid": 27, "value": 3}}, "bare": 5}"#;
        let node = json!({"name": "r1", "id": "S1", "config": stored, "tags": ["a"], "sweepName": null});
        let run = Run::from_node(&node).unwrap();
        assert_eq!(run.id, "r1");
        assert_eq!(run.storage_id.as_deref(), Some("S1"));
        assert_eq!(
            Value::Object(run.config.clone()),
            json!({"hotkey": "5X", "config": {"netuid": 27, "value": 3}, "bare": 5})
        );
        assert_eq!(run.wandb_internal, Some(json!({"t": 1})));
        assert_eq!(
            run.wrapped_config(),
            r#"{"_wandb": {"value": {"t": 1}, "desc": null}, "hotkey": {"value": "5X", "desc": null}, "config": {"value": {"netuid": 27, "value": 3}, "desc": null}, "bare": {"value": 5, "desc": null}}"#
        );
        // Missing or null config is empty, as in the SDK.
        assert!(Run::from_node(&json!({"name": "r2", "config": null})).unwrap().config.is_empty());
        assert!(Run::from_node(&json!({"name": "r3"})).unwrap().config.is_empty());
        assert!(Run::from_node(&json!({"name": "r4", "config": "[1]"})).is_err());
    }

    #[test]
    fn run_ids_look_like_the_sdks() {
        let id = new_run_id();
        assert_eq!(id.len(), 8);
        assert!(id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{id}");
        assert_ne!(new_run_id(), new_run_id());
    }
}
