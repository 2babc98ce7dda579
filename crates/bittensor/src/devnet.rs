//! The embedded devnet chain: a local Subtensor chain that speaks real Substrate for what it
//! supports, so the Python SDK, btcli-style tools and nicompute's own extrinsic layer use it as
//! they use finney.
//!
//! - It presents finney's runtime of spec 343 (`spec.rs`): the recorded V14 metadata through
//!   `state_getMetadata`, V15 through `Metadata_metadata_at_version`, and that runtime's version.
//! - It accepts **signed extrinsics** (`author_submitExtrinsic`, `author_submitAndWatchExtrinsic`)
//!   for `burned_register`, `serve_axon`, `serve_prometheus`, `add_stake`, the Balances transfers
//!   and `Sudo.sudo(Balances.force_set_balance)`, decoded with that metadata and verified over the
//!   real signing payload (`runtime.rs`); the calls follow Subtensor's rules and errors
//!   (`pallets.rs`).
//! - Its state is Substrate storage (raw keys and SCALE values, per block: `store.rs`), read with
//!   `state_getStorage`/`state_queryStorageAt`/`state_getKeysPaged`; blocks carry their
//!   extrinsics and `System.Events`; the runtime APIs the metagraph and the SDK need are
//!   answered from that storage (`apis.rs`).
//! - Nothing is written except by extrinsics. Funding is the one development convenience, and it
//!   is an extrinsic too: the genesis makes the devnet's **owner key** the sudo key, so only the
//!   holder of that key (in `devnet up`'s directory: the `owner` wallet, readable by its owner
//!   alone) can give an account TAO, with `Sudo.sudo(Balances.force_set_balance)` ([`ops::fund`]).
//!
//! It is not the runtime: there is no emission, no epoch beyond validator permits (given every
//! block by stake weight), no weights, and subnets use the stable mechanism (one alpha per TAO).
//! `devnet up --chain runtime` runs the real runtime instead.

pub mod apis;
pub mod node;
pub mod ops;
pub mod pallets;
pub mod runtime;
pub mod spec;
pub mod state;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use node::{Node, CHAIN_NAME};
pub use runtime::Rules;

use crate::clock::Clock;
use crate::keys::AccountId;
use crate::subtensor::server::{self, RpcFault, ServerHandle, Service, SERVER_ERROR};
use store::{Store, StoreError};

/// Errors starting a devnet chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevnetError {
    #[error("cannot create the devnet directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the devnet chain's state: {0}")]
    State(#[from] state::StateError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Devnet chain settings.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    pub bind: SocketAddr,
    /// Where the SQLite state lives (`DIR/chain.sqlite`).
    pub dir: PathBuf,
    /// Time between empty blocks (a transaction gets its block at once).
    pub block_time: Duration,
    /// Block timestamps.
    pub clock: Clock,
    /// The sudo key written at genesis: whoever holds it can fund accounts. Ignored when the
    /// directory already holds a chain.
    pub owner: AccountId,
    /// Subnets at genesis besides the root subnet.
    pub netuids: Vec<u16>,
    /// Registration, serving and IP rules (applied at genesis; 127.0.0.1 at every start).
    pub rules: Rules,
}

impl DevnetConfig {
    pub fn new(dir: impl Into<PathBuf>, owner: AccountId) -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 9944)),
            dir: dir.into(),
            block_time: Duration::from_secs(12),
            clock: Clock::system(),
            owner,
            netuids: vec![1, 27],
            rules: Rules::default(),
        }
    }
}

/// A running devnet chain.
#[derive(Debug)]
pub struct DevnetHandle {
    addr: SocketAddr,
    server: Option<ServerHandle>,
    stop: tokio::sync::watch::Sender<bool>,
    producer: Option<tokio::task::JoinHandle<()>>,
}

impl DevnetHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// `ws://127.0.0.1:PORT`, what clients use.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(p) = self.producer.take() {
            let _ = p.await;
        }
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

impl Drop for DevnetHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Opens (or creates) the devnet chain in `config.dir` and serves it.
pub async fn spawn(config: DevnetConfig) -> Result<DevnetHandle, DevnetError> {
    std::fs::create_dir_all(&config.dir).map_err(|source| DevnetError::Dir { path: config.dir.clone(), source })?;
    let path = config.dir.join("chain.sqlite");
    let cfg = config.clone();
    let node = tokio::task::spawn_blocking(move || -> Result<Node, DevnetError> {
        let store = Store::open(&path)?;
        let salt: [u8; 32] = rand::random();
        let (owner, netuids, rules, now) = (cfg.owner, cfg.netuids.clone(), cfg.rules.clone(), cfg.clock.now_ms());
        Ok(Node::open(store, cfg.rules.clone(), cfg.block_time, cfg.clock.clone(), move |store, md| {
            runtime::genesis(store, md, &owner, &netuids, &rules, &salt, now)
        })?)
    })
    .await
    .map_err(|e| DevnetError::Dir { path: config.dir.clone(), source: std::io::Error::other(e.to_string()) })??;
    let node = Arc::new(node);
    let n = node.clone();
    let service: Service = Arc::new(move |method, params, ws| {
        let n = n.clone();
        Box::pin(async move {
            // SQLite work is short but blocking: keep it off the async workers.
            tokio::task::spawn_blocking(move || n.call(&method, &params, ws))
                .await
                .unwrap_or_else(|_| Err(RpcFault::new(SERVER_ERROR, "internal error")))
        })
    });
    let server = server::spawn_service(config.bind, service)
        .await
        .map_err(|source| DevnetError::Bind { addr: config.bind, source })?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let producer = tokio::spawn(node::run_producer(node, stop_rx));
    Ok(DevnetHandle { addr: server.local_addr(), server: Some(server), stop, producer: Some(producer) })
}
