//! The devnet chain: a local stand-in for a Subtensor node that speaks the JSON-RPC subset the
//! client uses, so everything that reads finney reads the devnet through the same code.
//!
//! It answers `chain_*`, `state_getRuntimeVersion`, `system_*` and `state_call` for the runtime
//! APIs the metagraph needs, with SCALE bytes produced by the very types the client decodes.
//! Neurons live in SQLite under the devnet directory, so a restart keeps them. Blocks advance
//! with wall time from a genesis time stored on first start. Registration, staking and serving
//! an axon are devnet-only methods (below), each signed by the hotkey and carrying a nonce that
//! must increase, verified before anything is written.
//!
//! Devnet-only methods (params: one JSON object; `signature` = `0x` sr25519 signature by
//! `hotkey` over `nicompute-devnet/v1:{method}:{the other fields as JSON with sorted keys}`):
//!
//! | method | fields | result |
//! |---|---|---|
//! | `devnet_register` | `netuid`, `hotkey`, `coldkey`, `nonce` | `{"uid", "new"}` |
//! | `devnet_setStake` | `netuid`, `hotkey`, `alpha_rao`, `tao_rao`, `nonce` | `null` |
//! | `devnet_serveAxon` | `netuid`, `hotkey`, `ip`, `port`, `version`, `nonce` | `null` |
//! | `devnet_info` | — | genesis, block time, current block, subnets |

pub mod ops;
pub mod store;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use parity_scale_codec::{Compact, Decode, Encode};
use serde_json::{json, Map, Value};

use crate::clock::Clock;
use crate::keys::{AccountId, Signature};
use crate::subtensor::server::{self, Handler, RpcFault, ServerHandle, INVALID_PARAMS, SERVER_ERROR};
use crate::subtensor::types::{AxonInfo, NeuronInfo, NeuronInfoLite, PrometheusInfo, SubnetState};
use store::{AxonUpdate, NeuronRow, Store, StoreError};

/// The chain name the devnet reports (`system_chain`); clients use it to tell a devnet.
pub const CHAIN_NAME: &str = "nicompute devnet";
/// The prefix of every devnet signing message.
pub const SIGNING_DOMAIN: &str = "nicompute-devnet/v1";
/// Neurons with the most stake that get a validator permit (the chain's `max_allowed_validators`).
pub const MAX_VALIDATORS: usize = 64;
/// The chain's `TaoWeight`: `total_stake = alpha + 0.18 × tao`.
const TAO_WEIGHT_PERCENT: u128 = 18;
/// How far back a block hash is still known.
const KNOWN_BLOCKS: u64 = 4096;

/// Errors starting a devnet chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevnetError {
    #[error("cannot create the devnet directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Devnet chain settings.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    pub bind: SocketAddr,
    /// Where the SQLite state lives (`DIR/chain.sqlite`).
    pub dir: PathBuf,
    /// Time per block (12 s like the real chain).
    pub block_time: Duration,
    /// What time it is: blocks are counted from the genesis time by it.
    pub clock: Clock,
}

impl DevnetConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 9944)),
            dir: dir.into(),
            block_time: Duration::from_secs(12),
            clock: Clock::system(),
        }
    }
}

#[derive(Debug)]
struct Chain {
    store: Store,
    genesis_ms: u64,
    block_time_ms: u64,
    clock: Clock,
}

impl Chain {
    /// The best block: 1 at genesis, then one more per block time.
    fn best(&self) -> u64 {
        1 + self.clock.now_ms().saturating_sub(self.genesis_ms) / self.block_time_ms.max(1)
    }

    fn hash_of(&self, n: u64) -> String {
        let mut h = Blake2b::<U32>::new();
        h.update(b"nicompute-devnet");
        h.update(self.genesis_ms.to_le_bytes());
        h.update(n.to_le_bytes());
        format!("0x{}", hex::encode(h.finalize()))
    }

    /// The number of a known block hash (recent blocks only, like a pruning node).
    fn number_of(&self, hash: &str) -> Result<u64, RpcFault> {
        let best = self.best();
        let want = hash.to_ascii_lowercase();
        (best.saturating_sub(KNOWN_BLOCKS)..=best).rev().find(|n| self.hash_of(*n) == want).ok_or_else(|| {
            RpcFault::new(SERVER_ERROR, format!("Unknown block: {hash} is not a recent block of this devnet"))
        })
    }

    fn header(&self, n: u64) -> Value {
        json!({
            "parentHash": self.hash_of(n.saturating_sub(1)),
            "number": format!("0x{n:x}"),
            "stateRoot": self.hash_of(n ^ (1 << 63)),
            "extrinsicsRoot": format!("0x{}", "00".repeat(32)),
            "digest": {"logs": []},
        })
    }
}

/// Validator permits: the `MAX_VALIDATORS` neurons with the most stake (and some stake).
fn permits(rows: &[NeuronRow]) -> Vec<bool> {
    let mut order: Vec<usize> = (0..rows.len()).filter(|i| total_stake(&rows[*i]) > 0).collect();
    order.sort_by(|a, b| total_stake(&rows[*b]).cmp(&total_stake(&rows[*a])).then(a.cmp(b)));
    let mut out = vec![false; rows.len()];
    for i in order.into_iter().take(MAX_VALIDATORS) {
        out[i] = true;
    }
    out
}

fn total_stake(r: &NeuronRow) -> u64 {
    let t = u128::from(r.alpha_stake) + u128::from(r.tao_stake) * TAO_WEIGHT_PERCENT / 100;
    u64::try_from(t).unwrap_or(u64::MAX)
}

fn axon_of(r: &NeuronRow) -> AxonInfo {
    AxonInfo {
        block: r.axon_block,
        version: r.axon_version,
        ip: r.axon_ip,
        port: r.axon_port,
        ip_type: r.axon_ip_type,
        protocol: r.axon_protocol,
        placeholder1: 0,
        placeholder2: 0,
    }
}

fn lite_of(r: &NeuronRow, permit: bool) -> NeuronInfoLite {
    NeuronInfoLite {
        hotkey: r.hotkey,
        coldkey: r.coldkey,
        uid: r.uid,
        netuid: r.netuid,
        active: true,
        axon_info: axon_of(r),
        prometheus_info: PrometheusInfo::default(),
        stake: vec![(r.coldkey, Compact(r.alpha_stake))],
        rank: 0,
        emission: 0,
        incentive: 0,
        consensus: 0,
        trust: 0,
        validator_trust: 0,
        dividends: 0,
        last_update: r.last_update,
        validator_permit: permit,
        pruning_score: u16::MAX,
    }
}

/// The full neuron (`get_neuron`): the lite one with (empty) weights and bonds.
fn full_of(r: &NeuronRow, permit: bool) -> NeuronInfo {
    let l = lite_of(r, permit);
    NeuronInfo {
        hotkey: l.hotkey,
        coldkey: l.coldkey,
        uid: l.uid,
        netuid: l.netuid,
        active: l.active,
        axon_info: l.axon_info,
        prometheus_info: l.prometheus_info,
        stake: l.stake,
        rank: l.rank,
        emission: l.emission,
        incentive: l.incentive,
        consensus: l.consensus,
        trust: l.trust,
        validator_trust: l.validator_trust,
        dividends: l.dividends,
        last_update: l.last_update,
        validator_permit: l.validator_permit,
        weights: Vec::new(),
        bonds: Vec::new(),
        pruning_score: l.pruning_score,
    }
}

fn subnet_state(netuid: u16, rows: &[NeuronRow]) -> Option<SubnetState> {
    if rows.is_empty() {
        return None;
    }
    let zeros16 = || rows.iter().map(|_| Compact(0u16)).collect::<Vec<_>>();
    Some(SubnetState {
        netuid,
        hotkeys: rows.iter().map(|r| r.hotkey).collect(),
        coldkeys: rows.iter().map(|r| r.coldkey).collect(),
        active: rows.iter().map(|_| true).collect(),
        validator_permit: permits(rows),
        pruning_score: Vec::new(),
        last_update: rows.iter().map(|r| Compact(r.last_update)).collect(),
        emission: rows.iter().map(|_| Compact(0u64)).collect(),
        dividends: zeros16(),
        incentives: zeros16(),
        consensus: zeros16(),
        trust: Vec::new(),
        rank: Vec::new(),
        block_at_registration: rows.iter().map(|r| Compact(r.registered_block)).collect(),
        alpha_stake: rows.iter().map(|r| Compact(r.alpha_stake)).collect(),
        tao_stake: rows.iter().map(|r| Compact(r.tao_stake)).collect(),
        total_stake: rows.iter().map(|r| Compact(total_stake(r))).collect(),
        emission_history: Vec::new(),
    })
}

/// A running devnet chain.
#[derive(Debug)]
pub struct DevnetHandle {
    server: ServerHandle,
}

impl DevnetHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
    /// `ws://127.0.0.1:PORT`, what clients use.
    pub fn ws_url(&self) -> String {
        self.server.ws_url()
    }
    pub fn http_url(&self) -> String {
        self.server.http_url()
    }
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Opens (or creates) the devnet state in `config.dir` and serves it.
pub async fn spawn(config: DevnetConfig) -> Result<DevnetHandle, DevnetError> {
    std::fs::create_dir_all(&config.dir).map_err(|source| DevnetError::Dir { path: config.dir.clone(), source })?;
    let store = Store::open(&config.dir.join("chain.sqlite"))?;
    let genesis_ms: u64 = store.meta_init("genesis_ms", &config.clock.now_ms().to_string())?.parse().unwrap_or(0);
    let block_time_ms = config.block_time.as_millis().max(1) as u64;
    let chain = Arc::new(Chain { store, genesis_ms, block_time_ms, clock: config.clock.clone() });
    let handler: Handler = Arc::new(move |method, params| {
        let chain = chain.clone();
        Box::pin(async move {
            // SQLite work is short but blocking: keep it off the async workers.
            tokio::task::spawn_blocking(move || dispatch(&chain, &method, params))
                .await
                .unwrap_or_else(|_| Err(RpcFault::new(SERVER_ERROR, "internal error")))
        })
    });
    let server =
        server::spawn(config.bind, handler).await.map_err(|source| DevnetError::Bind { addr: config.bind, source })?;
    Ok(DevnetHandle { server })
}

fn positional(params: &Value, i: usize) -> Option<&Value> {
    params.as_array().and_then(|a| a.get(i)).filter(|v| !v.is_null())
}

fn dispatch(chain: &Chain, method: &str, params: Value) -> Result<Value, RpcFault> {
    match method {
        "system_chain" => Ok(json!(CHAIN_NAME)),
        "system_name" => Ok(json!("nicompute-devnet")),
        "system_version" => Ok(json!(env!("CARGO_PKG_VERSION"))),
        "system_properties" => Ok(json!({"ss58Format": 42, "tokenDecimals": 9, "tokenSymbol": "TAO"})),
        "system_health" => Ok(json!({"peers": 0, "isSyncing": false, "shouldHavePeers": false})),
        "chain_getHead" | "chain_getBlockHash" => block_hash(chain, positional(&params, 0)),
        "chain_getFinalizedHead" => Ok(json!(chain.hash_of(chain.best()))),
        "chain_getHeader" => {
            let n = match positional(&params, 0) {
                None => chain.best(),
                Some(Value::String(h)) => chain.number_of(h)?,
                Some(_) => return Err(RpcFault::invalid_params("expected a block hash")),
            };
            Ok(chain.header(n))
        }
        "state_getRuntimeVersion" => {
            if let Some(Value::String(h)) = positional(&params, 0) {
                chain.number_of(h)?;
            }
            Ok(json!({
                "specName": "nicompute-devnet", "implName": "nicompute-devnet", "authoringVersion": 1,
                "specVersion": 343, "implVersion": 1, "apis": [], "transactionVersion": 1, "stateVersion": 1
            }))
        }
        "state_call" => state_call(chain, &params),
        "devnet_info" => info(chain),
        "devnet_register" | "devnet_setStake" | "devnet_serveAxon" => signed(chain, method, &params),
        other => Err(RpcFault::method_not_found(other)),
    }
}

fn block_hash(chain: &Chain, at: Option<&Value>) -> Result<Value, RpcFault> {
    let best = chain.best();
    let n = match at {
        None => best,
        Some(Value::Number(n)) => {
            n.as_u64().ok_or_else(|| RpcFault::invalid_params("block number must be unsigned"))?
        }
        Some(Value::String(s)) => u64::from_str_radix(s.trim_start_matches("0x"), 16)
            .map_err(|_| RpcFault::invalid_params("block number must be an integer or hex"))?,
        Some(_) => return Err(RpcFault::invalid_params("block number must be an integer or hex")),
    };
    Ok(if n <= best { json!(chain.hash_of(n)) } else { Value::Null })
}

fn state_call(chain: &Chain, params: &Value) -> Result<Value, RpcFault> {
    let name = positional(params, 0)
        .and_then(Value::as_str)
        .ok_or_else(|| RpcFault::invalid_params("state_call needs a method name"))?;
    let args_hex = positional(params, 1).and_then(Value::as_str).unwrap_or("");
    let args =
        hex::decode(args_hex.trim_start_matches("0x")).map_err(|_| RpcFault::invalid_params("call data is not hex"))?;
    if let Some(Value::String(h)) = positional(params, 2) {
        chain.number_of(h)?;
    }
    let bad_args = || RpcFault::new(SERVER_ERROR, format!("Execution failed: cannot decode the arguments of {name}"));
    let rows = |netuid: u16| chain.store.neurons(netuid).map_err(|e| RpcFault::new(SERVER_ERROR, e.to_string()));
    let out = match name {
        "NeuronInfoRuntimeApi_get_neurons_lite" => {
            let netuid = u16::decode(&mut &args[..]).ok().filter(|_| args.len() == 2).ok_or_else(bad_args)?;
            let rows = rows(netuid)?;
            let p = permits(&rows);
            rows.iter().zip(p).map(|(r, permit)| lite_of(r, permit)).collect::<Vec<_>>().encode()
        }
        "SubnetInfoRuntimeApi_get_subnet_state" => {
            let netuid = u16::decode(&mut &args[..]).ok().filter(|_| args.len() == 2).ok_or_else(bad_args)?;
            subnet_state(netuid, &rows(netuid)?).encode()
        }
        "NeuronInfoRuntimeApi_get_neuron" => {
            let (netuid, uid) =
                <(u16, u16)>::decode(&mut &args[..]).ok().filter(|_| args.len() == 4).ok_or_else(bad_args)?;
            let rows = rows(netuid)?;
            let p = permits(&rows);
            rows.iter().zip(p).find(|(r, _)| r.uid == uid).map(|(r, permit)| full_of(r, permit)).encode()
        }
        other => {
            return Err(RpcFault::new(SERVER_ERROR, format!("Execution failed: the devnet runtime has no API {other}")))
        }
    };
    Ok(json!(format!("0x{}", hex::encode(out))))
}

fn info(chain: &Chain) -> Result<Value, RpcFault> {
    let subnets = chain.store.subnets().map_err(|e| RpcFault::new(SERVER_ERROR, e.to_string()))?;
    Ok(json!({
        "chain": CHAIN_NAME,
        "genesis_ms": chain.genesis_ms,
        "block_time_ms": chain.block_time_ms,
        "block": chain.best(),
        "subnets": subnets.iter().map(|(n, c)| json!({"netuid": n, "neurons": c})).collect::<Vec<_>>(),
    }))
}

/// The exact bytes a devnet request's signature covers.
pub fn signing_message(method: &str, fields: &Map<String, Value>) -> String {
    let sorted: BTreeMap<&String, &Value> = fields.iter().filter(|(k, _)| k.as_str() != "signature").collect();
    format!("{SIGNING_DOMAIN}:{method}:{}", serde_json::to_string(&sorted).unwrap_or_default())
}

fn signed(chain: &Chain, method: &str, params: &Value) -> Result<Value, RpcFault> {
    let fields = match params {
        Value::Object(m) => m.clone(),
        Value::Array(a) if a.len() == 1 && a[0].is_object() => a[0].as_object().cloned().unwrap_or_default(),
        _ => return Err(RpcFault::invalid_params("expected one object")),
    };
    let str_field = |k: &str| {
        fields.get(k).and_then(Value::as_str).ok_or_else(|| RpcFault::invalid_params(format!("missing '{k}'")))
    };
    let u64_field = |k: &str| {
        fields
            .get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| RpcFault::invalid_params(format!("missing or invalid '{k}'")))
    };
    let hotkey = AccountId::from_ss58(str_field("hotkey")?).map_err(|e| RpcFault::invalid_params(e.to_string()))?;
    let netuid = u16::try_from(u64_field("netuid")?).map_err(|_| RpcFault::invalid_params("netuid must fit u16"))?;
    let nonce = u64_field("nonce")?;
    let signature =
        Signature::from_hex(str_field("signature")?).map_err(|e| RpcFault::invalid_params(e.to_string()))?;
    if !hotkey.verify(signing_message(method, &fields).as_bytes(), &signature) {
        return Err(RpcFault::new(1010, format!("Invalid signature: the request is not signed by hotkey {hotkey}")));
    }
    let refused = |e: StoreError| match e {
        StoreError::Refused(m) => RpcFault::new(1011, m),
        other => RpcFault::new(SERVER_ERROR, other.to_string()),
    };
    let block = chain.best();
    match method {
        "devnet_register" => {
            let coldkey =
                AccountId::from_ss58(str_field("coldkey")?).map_err(|e| RpcFault::invalid_params(e.to_string()))?;
            let (uid, new) = chain.store.register(netuid, &hotkey, &coldkey, nonce, block).map_err(refused)?;
            Ok(json!({"uid": uid, "new": new}))
        }
        "devnet_setStake" => {
            let alpha = u64_field("alpha_rao")?;
            let tao = fields.get("tao_rao").and_then(Value::as_u64).unwrap_or(0);
            chain.store.set_stake(netuid, &hotkey, alpha, tao, nonce).map_err(refused)?;
            Ok(Value::Null)
        }
        "devnet_serveAxon" => {
            let ip: IpAddr =
                str_field("ip")?.parse().map_err(|_| RpcFault::invalid_params("ip is not an IP address"))?;
            let port = u16::try_from(u64_field("port")?)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| RpcFault::new(INVALID_PARAMS, "Invalid params: port must be 1..65535"))?;
            let version =
                u32::try_from(u64_field("version")?).map_err(|_| RpcFault::invalid_params("version must fit u32"))?;
            // Unlike the real chain, loopback addresses are allowed: a devnet lives on one machine.
            let (ip, ip_type) = match ip {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 4),
                IpAddr::V6(v6) => (u128::from(v6), 6),
            };
            let axon = AxonUpdate { version, ip, port, ip_type, protocol: 4 };
            chain.store.serve_axon(netuid, &hotkey, axon, nonce, block).map_err(refused)?;
            Ok(Value::Null)
        }
        _ => Err(RpcFault::method_not_found(method)),
    }
}
