//! The embedded chain as a node: the transaction pool, the block producer and the Substrate
//! JSON-RPC methods clients call (the Python SDK's and nicompute's own).
//!
//! Blocks: a submitted extrinsic that passes the pool's checks wakes the producer, which builds a
//! block with everything in the pool at once (instant inclusion, like chopsticks' `Instant` mode
//! or anvil's automine); without transactions an empty block follows every `block_time`. Every
//! block is final as soon as it is built (one author, no forks), so `inBlock` and `finalized`
//! come together. One mutex orders submissions and block building, so a nonce the pool accepted
//! is the one the block applies.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use super::apis::{self, ApiError};
use super::runtime::{self, Applied, Block, Checked, Invalid, Rules};
use super::spec;
use super::state::{State, StateError};
use super::store::{BlockRow, Store};
use crate::clock::Clock;
use crate::extrinsic::Metadata;
use crate::keys::AccountId;
use crate::subtensor::server::{Reply, RpcFault, Subscription, METHOD_NOT_FOUND, SERVER_ERROR};

/// The chain name the devnet reports (`system_chain`); clients use it to tell a devnet.
pub const CHAIN_NAME: &str = "nicompute devnet";

/// A transaction waiting in the pool, with whoever watches it.
struct Pending {
    tx: Checked,
    watchers: Vec<UnboundedSender<Value>>,
}

/// What the pool lock guards.
struct Inner {
    pool: Vec<Pending>,
    /// The best block's timestamp (the next one is later).
    last_timestamp_ms: u64,
}

/// Who hears of new blocks.
type HeadSubs = Vec<UnboundedSender<Value>>;

/// A running chain.
pub struct Node {
    pub store: Store,
    pub md: Arc<Metadata>,
    pub rules: Rules,
    pub genesis: [u8; 32],
    pub block_time: Duration,
    clock: Clock,
    best: RwLock<BlockRow>,
    inner: Mutex<Inner>,
    heads: Mutex<HeadSubs>,
    /// Runtime-version subscriptions (kept open; nothing more is ever sent).
    versions: Mutex<Vec<UnboundedSender<Value>>>,
    /// Woken by a submission: build a block now.
    pub wake: tokio::sync::Notify,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("best", &self.best().number)
            .field("block_time", &self.block_time)
            .finish_non_exhaustive()
    }
}

fn fault(e: impl std::fmt::Display) -> RpcFault {
    RpcFault::new(SERVER_ERROR, e.to_string())
}

fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

fn unhex(s: &str, what: &str) -> Result<Vec<u8>, RpcFault> {
    hex::decode(s.strip_prefix("0x").unwrap_or(s)).map_err(|_| RpcFault::invalid_params(format!("{what} is not hex")))
}

fn positional(params: &Value, i: usize) -> Option<&Value> {
    params.as_array().and_then(|a| a.get(i)).filter(|v| !v.is_null())
}

fn str_param<'a>(params: &'a Value, i: usize, what: &str) -> Result<&'a str, RpcFault> {
    positional(params, i).and_then(Value::as_str).ok_or_else(|| RpcFault::invalid_params(format!("{what} is missing")))
}

impl Node {
    /// Opens (or creates, with `genesis`) the chain in `store`.
    pub fn open(
        store: Store,
        rules: Rules,
        block_time: Duration,
        clock: Clock,
        genesis: impl FnOnce(&Store, Arc<Metadata>) -> Result<BlockRow, StateError>,
    ) -> Result<Self, StateError> {
        let md = spec::metadata();
        let best = match store.best()? {
            Some(b) => b,
            None => genesis(&store, md.clone())?,
        };
        let genesis_hash = store
            .block_by_number(0)?
            .map(|b| b.hash)
            .ok_or_else(|| super::store::StoreError::Corrupt("the chain has no block 0".into()))?;
        let st = State::new(&store, md.clone(), best.number);
        let last_timestamp_ms = st.num("Timestamp", "Now", &[])? as u64;
        drop(st);
        Ok(Self {
            store,
            md,
            rules,
            genesis: genesis_hash,
            block_time,
            clock,
            best: RwLock::new(best),
            inner: Mutex::new(Inner { pool: Vec::new(), last_timestamp_ms }),
            heads: Mutex::new(Vec::new()),
            versions: Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
        })
    }

    pub fn best(&self) -> BlockRow {
        self.best.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether transactions wait.
    pub fn has_pending(&self) -> bool {
        !self.lock().pool.is_empty()
    }

    /// Builds the next block with everything in the pool.
    pub fn produce(&self) -> Result<BlockRow, StateError> {
        let mut inner = self.lock();
        let parent = self.best();
        let timestamp = self.clock.now_ms().max(inner.last_timestamp_ms + 1);
        let state = State::new(&self.store, self.md.clone(), parent.number);
        let mut block = Block::start(state, parent, timestamp, &self.rules)?;
        let pending = std::mem::take(&mut inner.pool);
        let mut results = Vec::with_capacity(pending.len());
        for p in pending {
            let applied = block.apply(&p.tx)?;
            results.push((p, applied));
        }
        let (row, changes) = block.finish()?;
        self.store.commit_block(&row, &changes)?;
        inner.last_timestamp_ms = timestamp;
        *self.best.write().unwrap_or_else(|e| e.into_inner()) = row.clone();
        drop(inner);
        let hash = hex0x(&row.hash);
        for (p, applied) in results {
            let updates: Vec<Value> = match &applied {
                Applied::Dropped(_) => vec![json!("invalid")],
                _ => vec![json!({"inBlock": hash}), json!({"finalized": hash})],
            };
            for w in &p.watchers {
                for u in &updates {
                    let _ = w.send(u.clone());
                }
            }
            if let Applied::Failed(why) = &applied {
                tracing::debug!(tx = %hex0x(&p.tx.hash), "dispatch failed: {why}");
            }
        }
        let header = header_json(&row);
        self.heads.lock().unwrap_or_else(|e| e.into_inner()).retain(|s| s.send(header.clone()).is_ok());
        if row.number % 256 == 0 {
            self.store.prune(row.number)?;
        }
        Ok(row)
    }

    /// The pool's checks, then the pool; the producer is woken.
    fn submit(&self, bytes: &[u8], watcher: Option<UnboundedSender<Value>>) -> Result<[u8; 32], RpcFault> {
        let mut inner = self.lock();
        let best = self.best();
        let state = State::new(&self.store, self.md.clone(), best.number);
        let pool = &inner.pool;
        let pending_of = |who: &AccountId| pool.iter().filter(|p| p.tx.signer == *who).count() as u64;
        let checked = runtime::validate(&state, &self.store, self.genesis, best.number, bytes, pending_of)
            .map_err(fault)?
            .and_then(|c| {
                if super::pallets::supported(&c.call) {
                    Ok(c)
                } else {
                    Err(Invalid::Unsupported(format!("{}.{}", c.call.pallet, c.call.name)))
                }
            });
        let checked = match checked {
            Ok(c) => c,
            Err(invalid) => {
                let (code, message, data) = invalid.rpc();
                return Err(RpcFault::new(code, message).with_data(data));
            }
        };
        let hash = checked.hash;
        let watchers = watcher.into_iter().collect::<Vec<_>>();
        for w in &watchers {
            let _ = w.send(json!("ready"));
        }
        inner.pool.push(Pending { tx: checked, watchers });
        drop(inner);
        self.wake.notify_one();
        Ok(hash)
    }

    /// The block a `[hash]` parameter names (the best block when absent).
    fn block_at(&self, at: Option<&Value>) -> Result<BlockRow, RpcFault> {
        match at {
            None => Ok(self.best()),
            Some(Value::String(h)) => {
                let bytes = unhex(h, "block hash")?;
                let hash = <[u8; 32]>::try_from(bytes.as_slice())
                    .map_err(|_| RpcFault::invalid_params("a block hash is 32 bytes"))?;
                self.store.block_by_hash(&hash).map_err(fault)?.ok_or_else(|| {
                    RpcFault::new(SERVER_ERROR, format!("Unknown block: {h} is not a known block of this devnet"))
                })
            }
            Some(_) => Err(RpcFault::invalid_params("a block hash is a 0x-hex string")),
        }
    }

    fn state_at(&self, at: Option<&Value>) -> Result<State<'_>, RpcFault> {
        let b = self.block_at(at)?;
        Ok(State::new(&self.store, self.md.clone(), b.number))
    }

    fn block_hash(&self, n: &Value) -> Result<Value, RpcFault> {
        let number = match n {
            Value::Number(x) => x.as_u64().ok_or_else(|| RpcFault::invalid_params("block number must be unsigned"))?,
            Value::String(s) => u64::from_str_radix(s.trim_start_matches("0x"), 16)
                .map_err(|_| RpcFault::invalid_params("block number must be an integer or hex"))?,
            _ => return Err(RpcFault::invalid_params("block number must be an integer or hex")),
        };
        Ok(match self.store.block_by_number(number).map_err(fault)? {
            Some(b) => json!(hex0x(&b.hash)),
            None => Value::Null,
        })
    }

    /// One JSON-RPC call (blocking: SQLite).
    pub fn call(&self, method: &str, params: &Value, ws: bool) -> Result<Reply, RpcFault> {
        let r = self.answer(method, params, ws);
        if tracing::enabled!(tracing::Level::DEBUG) {
            let shown: String = params.to_string().chars().take(160).collect();
            match &r {
                Ok(_) => tracing::debug!("rpc {method} {shown}"),
                Err(e) => tracing::debug!("rpc {method} {shown} -> error {}: {}", e.code, e.message),
            }
        }
        r
    }

    fn answer(&self, method: &str, params: &Value, ws: bool) -> Result<Reply, RpcFault> {
        let p = params;
        let v = match method {
            "system_chain" => json!(CHAIN_NAME),
            "system_name" => json!("nicompute-devnet"),
            "system_version" => json!(env!("CARGO_PKG_VERSION")),
            "system_chainType" => json!("Development"),
            "system_properties" => json!({"ss58Format": 42, "tokenDecimals": 9, "tokenSymbol": "TAO"}),
            "system_health" => json!({"peers": 0, "isSyncing": false, "shouldHavePeers": false}),
            "system_peers" => json!([]),
            "system_accountNextIndex" | "account_nextIndex" => {
                let who = AccountId::from_ss58(str_param(p, 0, "the account")?)
                    .map_err(|e| RpcFault::invalid_params(e.to_string()))?;
                let inner = self.lock();
                let state = State::new(&self.store, self.md.clone(), self.best().number);
                let nonce = runtime::Account::read(&state, &who).map_err(fault)?.nonce;
                json!(nonce + inner.pool.iter().filter(|x| x.tx.signer == who).count() as u64)
            }
            "rpc_methods" => json!({"version": 1, "methods": METHODS}),
            "chain_getBlockHash" | "chain_getHead" => match positional(p, 0) {
                None => json!(hex0x(&self.best().hash)),
                Some(Value::Array(list)) => {
                    Value::Array(list.iter().map(|n| self.block_hash(n)).collect::<Result<_, _>>()?)
                }
                Some(n) => self.block_hash(n)?,
            },
            "chain_getFinalizedHead" | "chain_getFinalisedHead" => json!(hex0x(&self.best().hash)),
            "chain_getHeader" => header_json(&self.block_at(positional(p, 0))?),
            "chain_getBlock" => {
                let b = self.block_at(positional(p, 0))?;
                json!({
                    "block": {"header": header_json(&b), "extrinsics": b.extrinsics.iter().map(|x| hex0x(x)).collect::<Vec<_>>()},
                    "justifications": null
                })
            }
            "chain_subscribeNewHeads"
            | "chain_subscribeAllHeads"
            | "chain_subscribeFinalizedHeads"
            | "chain_subscribeFinalisedHeads"
            | "subscribe_newHead"
            | "chain_subscribeNewHead" => {
                if !ws {
                    return Err(RpcFault::new(METHOD_NOT_FOUND, "Subscriptions need a WebSocket connection"));
                }
                let (tx, rx) = unbounded_channel();
                let _ = tx.send(header_json(&self.best()));
                self.heads.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
                let (notification, unsubscribe) = match method {
                    "chain_subscribeAllHeads" => ("chain_allHead", "chain_unsubscribeAllHeads"),
                    "chain_subscribeFinalizedHeads" => ("chain_finalizedHead", "chain_unsubscribeFinalizedHeads"),
                    "chain_subscribeFinalisedHeads" => ("chain_finalizedHead", "chain_unsubscribeFinalisedHeads"),
                    "subscribe_newHead" => ("chain_newHead", "unsubscribe_newHead"),
                    "chain_subscribeNewHead" => ("chain_newHead", "chain_unsubscribeNewHead"),
                    _ => ("chain_newHead", "chain_unsubscribeNewHeads"),
                };
                return Ok(Reply::Subscription(Subscription { notification, unsubscribe, items: rx }));
            }
            "state_getRuntimeVersion" | "chain_getRuntimeVersion" => {
                self.block_at(positional(p, 0))?;
                spec::runtime_version()
            }
            "state_subscribeRuntimeVersion" | "chain_subscribeRuntimeVersion" => {
                if !ws {
                    return Err(RpcFault::new(METHOD_NOT_FOUND, "Subscriptions need a WebSocket connection"));
                }
                let (tx, rx) = unbounded_channel();
                let _ = tx.send(spec::runtime_version());
                // The runtime never changes: the first notification stays the answer, and the
                // subscription stays open until the client ends it.
                let mut open = self.versions.lock().unwrap_or_else(|e| e.into_inner());
                open.retain(|s| !s.is_closed());
                open.push(tx);
                let unsubscribe = if method.starts_with("chain") {
                    "chain_unsubscribeRuntimeVersion"
                } else {
                    "state_unsubscribeRuntimeVersion"
                };
                return Ok(Reply::Subscription(Subscription {
                    notification: "state_runtimeVersion",
                    unsubscribe,
                    items: rx,
                }));
            }
            "state_getMetadata" => {
                self.block_at(positional(p, 0))?;
                json!(hex0x(spec::metadata_v14_bytes()))
            }
            "state_call" | "state_callAt" => {
                let name = str_param(p, 0, "the runtime API name")?;
                let data = unhex(positional(p, 1).and_then(Value::as_str).unwrap_or(""), "call data")?;
                let state = self.state_at(positional(p, 2))?;
                match apis::call(&state, name, &data) {
                    Ok(out) => json!(hex0x(&out)),
                    Err(ApiError::State(e)) => return Err(fault(e)),
                    Err(e) => return Err(RpcFault::new(SERVER_ERROR, format!("Execution failed: {e}"))),
                }
            }
            "state_getStorage"
            | "state_getStorageAt"
            | "state_getStorageHash"
            | "state_getStorageHashAt"
            | "state_getStorageSize"
            | "state_getStorageSizeAt" => {
                let key = unhex(str_param(p, 0, "the storage key")?, "the storage key")?;
                let b = self.block_at(positional(p, 1))?;
                let v = self.store.read(&key, b.number).map_err(fault)?;
                match (method, v) {
                    (_, None) => Value::Null,
                    (m, Some(v)) if m.starts_with("state_getStorageHash") => {
                        json!(hex0x(&sp_crypto_hashing::blake2_256(&v)))
                    }
                    (m, Some(v)) if m.starts_with("state_getStorageSize") => json!(v.len()),
                    (_, Some(v)) => json!(hex0x(&v)),
                }
            }
            "state_queryStorageAt" => {
                let keys = positional(p, 0)
                    .and_then(Value::as_array)
                    .ok_or_else(|| RpcFault::invalid_params("the storage keys are a list"))?;
                let b = self.block_at(positional(p, 1))?;
                let mut changes = Vec::with_capacity(keys.len());
                for k in keys {
                    let text = k.as_str().ok_or_else(|| RpcFault::invalid_params("a storage key is a hex string"))?;
                    let v = self.store.read(&unhex(text, "a storage key")?, b.number).map_err(fault)?;
                    changes.push(json!([text, v.map(|v| hex0x(&v))]));
                }
                json!([{"block": hex0x(&b.hash), "changes": changes}])
            }
            "state_getKeysPaged" | "state_getKeysPagedAt" | "state_getKeys" => {
                let prefix = unhex(positional(p, 0).and_then(Value::as_str).unwrap_or("0x"), "the key prefix")?;
                let (count, start, at) = if method == "state_getKeys" {
                    (u32::MAX, None, positional(p, 1))
                } else {
                    let count = positional(p, 1).and_then(Value::as_u64).unwrap_or(1000).min(1000) as u32;
                    let start =
                        positional(p, 2).and_then(Value::as_str).map(|s| unhex(s, "the start key")).transpose()?;
                    (count, start, positional(p, 3))
                };
                let b = self.block_at(at)?;
                let keys = self.store.keys(&prefix, count, start.as_deref(), b.number).map_err(fault)?;
                json!(keys.iter().map(|k| hex0x(k)).collect::<Vec<_>>())
            }
            "author_submitExtrinsic" => {
                let bytes = unhex(str_param(p, 0, "the extrinsic")?, "the extrinsic")?;
                json!(hex0x(&self.submit(&bytes, None)?))
            }
            "author_submitAndWatchExtrinsic" => {
                if !ws {
                    return Err(RpcFault::new(METHOD_NOT_FOUND, "Subscriptions need a WebSocket connection"));
                }
                let bytes = unhex(str_param(p, 0, "the extrinsic")?, "the extrinsic")?;
                let (tx, rx) = unbounded_channel();
                self.submit(&bytes, Some(tx))?;
                return Ok(Reply::Subscription(Subscription {
                    notification: "author_extrinsicUpdate",
                    unsubscribe: "author_unwatchExtrinsic",
                    items: rx,
                }));
            }
            "author_pendingExtrinsics" => {
                json!(self.lock().pool.iter().map(|x| hex0x(&x.tx.bytes)).collect::<Vec<_>>())
            }
            other => return Err(RpcFault::method_not_found(other)),
        };
        Ok(Reply::Value(v))
    }
}

/// The methods this node answers (`rpc_methods`).
const METHODS: &[&str] = &[
    "account_nextIndex",
    "author_pendingExtrinsics",
    "author_submitAndWatchExtrinsic",
    "author_submitExtrinsic",
    "author_unwatchExtrinsic",
    "chain_getBlock",
    "chain_getBlockHash",
    "chain_getFinalisedHead",
    "chain_getFinalizedHead",
    "chain_getHead",
    "chain_getHeader",
    "chain_getRuntimeVersion",
    "chain_subscribeAllHeads",
    "chain_subscribeFinalisedHeads",
    "chain_subscribeFinalizedHeads",
    "chain_subscribeNewHead",
    "chain_subscribeNewHeads",
    "chain_subscribeRuntimeVersion",
    "chain_unsubscribeAllHeads",
    "chain_unsubscribeFinalisedHeads",
    "chain_unsubscribeFinalizedHeads",
    "chain_unsubscribeNewHead",
    "chain_unsubscribeNewHeads",
    "chain_unsubscribeRuntimeVersion",
    "rpc_methods",
    "state_call",
    "state_callAt",
    "state_getKeys",
    "state_getKeysPaged",
    "state_getKeysPagedAt",
    "state_getMetadata",
    "state_getRuntimeVersion",
    "state_getStorage",
    "state_getStorageAt",
    "state_getStorageHash",
    "state_getStorageHashAt",
    "state_getStorageSize",
    "state_getStorageSizeAt",
    "state_queryStorageAt",
    "state_subscribeRuntimeVersion",
    "state_unsubscribeRuntimeVersion",
    "subscribe_newHead",
    "system_accountNextIndex",
    "system_chain",
    "system_chainType",
    "system_health",
    "system_name",
    "system_peers",
    "system_properties",
    "system_version",
    "unsubscribe_newHead",
];

/// A header as JSON (`number` in hex, as nodes send it).
pub fn header_json(b: &BlockRow) -> Value {
    json!({
        "parentHash": hex0x(&b.parent),
        "number": format!("0x{:x}", b.number),
        "stateRoot": hex0x(&b.state_root),
        "extrinsicsRoot": hex0x(&b.extrinsics_root),
        "digest": {"logs": []},
    })
}

/// Produces blocks until `stop` changes: at once when transactions arrive, else every block time.
pub async fn run_producer(node: Arc<Node>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut last = tokio::time::Instant::now();
    loop {
        let due = last + node.block_time;
        tokio::select! {
            _ = node.wake.notified() => {
                if !node.has_pending() { continue; }
            }
            _ = tokio::time::sleep_until(due) => {}
            _ = stop.changed() => break,
        }
        let n = node.clone();
        match tokio::task::spawn_blocking(move || n.produce()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("devnet chain: building a block failed: {e}"),
            Err(e) => tracing::error!("devnet chain: the block builder panicked: {e}"),
        }
        last = tokio::time::Instant::now();
    }
}
