//! The typed Subtensor client: block pinning, runtime-API calls, and the metagraph.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parity_scale_codec::{Decode, Encode};
use serde_json::{json, Value};

use super::decode::{decode_result, from_hex, DecodeError};
use super::metagraph::{Metagraph, MetagraphError};
use super::rpc::{self, RpcError, Transport};
use super::types::{NeuronInfo, NeuronInfoLite, SubnetState};
use crate::extrinsic::{ExtrinsicError, Metadata};

/// Default time allowed for one call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What can go wrong reading the chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("{call} from {endpoint}: {source}")]
    Decode { endpoint: String, call: String, source: DecodeError },
    #[error("netuid {netuid} does not exist on {endpoint} (no neurons, no subnet state)")]
    UnknownNetuid { netuid: u16, endpoint: String },
    #[error("{call} from {endpoint}: {reason}")]
    BadResponse { endpoint: String, call: String, reason: String },
    #[error("metagraph from {endpoint}: {source}")]
    Metagraph { endpoint: String, source: MetagraphError },
    /// The runtime's metadata, or a value read with it, does not fit.
    #[error(transparent)]
    Runtime(#[from] ExtrinsicError),
}

/// Whether a `state_call` failed because the runtime has no such function (rather than because
/// it failed to run it): a real node says "Exported method … is not found", chopsticks "Function
/// to start was not found".
pub fn is_missing_runtime_api(e: &ChainError) -> bool {
    match e {
        ChainError::Rpc(RpcError::Rpc { method, message, .. }) if method == "state_call" => {
            let m = message.to_ascii_lowercase();
            m.contains("not found") && (m.contains("method") || m.contains("function"))
        }
        _ => false,
    }
}

/// A block header's number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub number: u64,
    pub hash: String,
}

/// A client for one endpoint.
#[derive(Debug, Clone)]
pub struct Subtensor {
    transport: Arc<dyn Transport>,
    timeout: Duration,
    cache: Arc<Cache>,
}

/// What does not change while a client lives (the genesis hash) or changes only with a runtime
/// upgrade (the metadata, kept per spec version).
#[derive(Debug, Default)]
pub(crate) struct Cache {
    genesis: Mutex<Option<[u8; 32]>>,
    metadata: Mutex<HashMap<u32, Arc<Metadata>>>,
    /// Where metadata is kept between processes, one file per (genesis, spec version).
    dir: Option<std::path::PathBuf>,
    /// The runtime as last read, and when: reads in one burst share one `state_getRuntimeVersion`.
    runtime: Mutex<Option<(std::time::Instant, super::tx::RuntimeInfo)>>,
    /// Held while the runtime is read, so concurrent callers wait for one read instead of each
    /// fetching and decoding the metadata.
    pub(crate) loading: tokio::sync::Mutex<()>,
}

impl Cache {
    pub(crate) fn genesis(&self) -> Option<[u8; 32]> {
        *self.genesis.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn put_genesis(&self, g: [u8; 32]) {
        *self.genesis.lock().unwrap_or_else(|e| e.into_inner()) = Some(g);
    }
    pub(crate) fn metadata(&self, spec: u32) -> Option<Arc<Metadata>> {
        self.metadata.lock().unwrap_or_else(|e| e.into_inner()).get(&spec).cloned()
    }
    pub(crate) fn put_metadata(&self, spec: u32, md: Arc<Metadata>) {
        self.metadata.lock().unwrap_or_else(|e| e.into_inner()).insert(spec, md);
    }
    /// The runtime read less than `fresh` ago.
    pub(crate) fn runtime(&self, fresh: Duration) -> Option<super::tx::RuntimeInfo> {
        let guard = self.runtime.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().filter(|(at, _)| at.elapsed() < fresh).map(|(_, r)| r.clone())
    }
    pub(crate) fn put_runtime(&self, r: super::tx::RuntimeInfo) {
        *self.runtime.lock().unwrap_or_else(|e| e.into_inner()) = Some((std::time::Instant::now(), r));
    }
    /// The file for a runtime's metadata bytes, when a directory was given.
    pub(crate) fn file(&self, genesis: &[u8; 32], spec: u32) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{}-{spec}.scale", hex::encode(genesis))))
    }
}

impl Subtensor {
    /// Connects lazily: the first call opens the connection.
    pub fn new(endpoint: &str) -> Result<Self, ChainError> {
        Self::with_timeout(endpoint, DEFAULT_TIMEOUT)
    }

    pub fn with_timeout(endpoint: &str, timeout: Duration) -> Result<Self, ChainError> {
        Ok(Self { transport: rpc::connect(endpoint, timeout)?, timeout, cache: Arc::default() })
    }

    pub fn from_transport(transport: Arc<dyn Transport>) -> Self {
        Self { transport, timeout: DEFAULT_TIMEOUT, cache: Arc::default() }
    }

    /// Keeps runtime metadata in `dir` between processes (one file per genesis hash and spec
    /// version), so a command does not fetch the same few hundred kilobytes every time. A file
    /// that does not decode is fetched again and replaced.
    pub fn with_metadata_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.cache = Arc::new(Cache { dir: Some(dir.into()), ..Cache::default() });
        self
    }

    pub fn endpoint(&self) -> &str {
        self.transport.endpoint()
    }

    pub(crate) fn transport(&self) -> Arc<dyn Transport> {
        self.transport.clone()
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn cache(&self) -> &Cache {
        &self.cache
    }

    /// A raw JSON-RPC call (devnet methods, diagnostics).
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, ChainError> {
        Ok(self.transport.request(method, params).await?)
    }

    fn bad(&self, call: &str, reason: impl Into<String>) -> ChainError {
        ChainError::BadResponse { endpoint: self.endpoint().to_owned(), call: call.to_owned(), reason: reason.into() }
    }

    /// The best block's hash (`chain_getHead`, alias of `chain_getBlockHash []`).
    pub async fn best_hash(&self) -> Result<String, ChainError> {
        let v = self.request("chain_getHead", json!([])).await?;
        v.as_str().map(str::to_owned).ok_or_else(|| self.bad("chain_getHead", "result is not a hash string"))
    }

    pub async fn finalized_hash(&self) -> Result<String, ChainError> {
        let v = self.request("chain_getFinalizedHead", json!([])).await?;
        v.as_str().map(str::to_owned).ok_or_else(|| self.bad("chain_getFinalizedHead", "result is not a hash string"))
    }

    /// The hash of block `number`, `None` if the node does not know it.
    pub async fn block_hash(&self, number: u64) -> Result<Option<String>, ChainError> {
        let v = self.request("chain_getBlockHash", json!([number])).await?;
        Ok(v.as_str().map(str::to_owned))
    }

    /// The number of the block with `hash`.
    pub async fn block_number(&self, hash: &str) -> Result<u64, ChainError> {
        let v = self.request("chain_getHeader", json!([hash])).await?;
        let n =
            v.get("number").and_then(Value::as_str).ok_or_else(|| self.bad("chain_getHeader", "no block number"))?;
        u64::from_str_radix(n.trim_start_matches("0x"), 16)
            .map_err(|_| self.bad("chain_getHeader", format!("block number '{n}' is not hex")))
    }

    /// The best block, pinned: its hash first, then its number.
    pub async fn best_block(&self) -> Result<Block, ChainError> {
        let hash = self.best_hash().await?;
        let number = self.block_number(&hash).await?;
        Ok(Block { number, hash })
    }

    pub async fn runtime_version(&self, at: Option<&str>) -> Result<Value, ChainError> {
        self.request("state_getRuntimeVersion", json!([at])).await
    }

    /// `state_call` of a runtime API with SCALE-encoded arguments; returns the raw result bytes.
    /// The data goes `0x`-prefixed: every node accepts that, and chopsticks accepts nothing else.
    pub async fn state_call(&self, name: &str, args: &[u8], at: Option<&str>) -> Result<Vec<u8>, ChainError> {
        let v = self.request("state_call", json!([name, format!("0x{}", hex::encode(args)), at])).await?;
        let text = v.as_str().ok_or_else(|| self.bad(name, "result is not a hex string"))?;
        from_hex(text).map_err(|source| ChainError::Decode {
            endpoint: self.endpoint().to_owned(),
            call: name.to_owned(),
            source,
        })
    }

    async fn call_decoded<T: Decode>(
        &self,
        name: &'static str,
        args: &[u8],
        at: Option<&str>,
    ) -> Result<T, ChainError> {
        let bytes = self.state_call(name, args, at).await?;
        decode_result(&bytes, name).map_err(|source| ChainError::Decode {
            endpoint: self.endpoint().to_owned(),
            call: name.to_owned(),
            source,
        })
    }

    pub async fn neurons_lite(&self, netuid: u16, at: Option<&str>) -> Result<Vec<NeuronInfoLite>, ChainError> {
        self.call_decoded("NeuronInfoRuntimeApi_get_neurons_lite", &netuid.encode(), at).await
    }

    pub async fn subnet_state(&self, netuid: u16, at: Option<&str>) -> Result<Option<SubnetState>, ChainError> {
        const NAME: &str = "SubnetInfoRuntimeApi_get_subnet_state";
        let bytes = self.state_call(NAME, &netuid.encode(), at).await?;
        super::decode::decode_subnet_state(&bytes).map_err(|source| ChainError::Decode {
            endpoint: self.endpoint().to_owned(),
            call: NAME.to_owned(),
            source,
        })
    }

    /// One full neuron. Current runtimes return `Option<NeuronInfo>`; legacy ones (spec 218 among
    /// them) a `Vec<u8>` holding the bare `NeuronInfo`, empty for an unknown uid.
    pub async fn neuron(&self, netuid: u16, uid: u16, at: Option<&str>) -> Result<Option<NeuronInfo>, ChainError> {
        const NAME: &str = "NeuronInfoRuntimeApi_get_neuron";
        let bytes = self.state_call(NAME, &(netuid, uid).encode(), at).await?;
        let decode_err =
            |source| ChainError::Decode { endpoint: self.endpoint().to_owned(), call: NAME.to_owned(), source };
        match super::decode::decode_exact::<Option<NeuronInfo>>(&bytes, NAME) {
            Ok(v) => Ok(v),
            Err(typed) => match super::decode::decode_exact::<Vec<u8>>(&bytes, NAME) {
                Ok(inner) if inner.is_empty() => Ok(None),
                Ok(inner) => super::decode::decode_exact::<NeuronInfo>(&inner, NAME).map(Some).map_err(decode_err),
                Err(_) => Err(decode_err(typed)),
            },
        }
    }

    /// The subnet's metagraph at the best block (both calls pinned to one block hash).
    pub async fn metagraph(&self, netuid: u16) -> Result<Metagraph, ChainError> {
        let block = self.best_block().await?;
        self.metagraph_at(netuid, &block).await
    }

    /// Neurons and subnet state at one block. A runtime without
    /// `SubnetInfoRuntimeApi_get_subnet_state` (older than the call) gives the metagraph with the
    /// stake in `neurons_lite`, as SDKs did before it existed; `stake_source` says which.
    pub async fn metagraph_at(&self, netuid: u16, block: &Block) -> Result<Metagraph, ChainError> {
        let (neurons, state) =
            tokio::join!(self.neurons_lite(netuid, Some(&block.hash)), self.subnet_state(netuid, Some(&block.hash)));
        let neurons = neurons?;
        let state = match state {
            Err(e) if is_missing_runtime_api(&e) => {
                tracing::debug!(
                    endpoint = self.endpoint(),
                    "no get_subnet_state in this runtime: stake from neurons_lite"
                );
                None
            }
            other => other?,
        };
        if neurons.is_empty() && state.is_none() {
            return Err(ChainError::UnknownNetuid { netuid, endpoint: self.endpoint().to_owned() });
        }
        Metagraph::from_parts(netuid, block.number, block.hash.clone(), neurons, state)
            .map_err(|source| ChainError::Metagraph { endpoint: self.endpoint().to_owned(), source })
    }
}
