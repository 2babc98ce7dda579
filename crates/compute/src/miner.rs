//! The miner daemon: answers SN27's `Allocate` and `Specs` synapses over the axon and runs one
//! SSH-reachable container per allocation through a [`ContainerRuntime`].
//!
//! Semantics are SN27's, answer shapes included (`{"status": bool, "info"?, "port"}`), with its
//! weaknesses fixed: a check says yes only if the machine is free *and* meets the requirement;
//! expiry is a timer of this daemon that survives restarts (no `at` jobs); a crash at any moment
//! is reconciled at the next start (see [`state`]); only the holder of the allocation key may
//! end or manage an allocation; concurrent allocations get one success and clean refusals, each
//! with a typed code ([`crate::protocol::refusal`]). Requests signed with nicompute's extension
//! are verified and answered signed, the container's SSH host key included
//! ([`crate::protocol::auth`]; the handler is in `handler`); what the miner offers beyond SN27
//! 1.8.3 is in [`offer`].

mod handler;
pub mod offer;
pub mod policy;
pub mod state;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bittensor::axon::{Axon, AxonConfig, AxonHandle, HandlerError, Request};
use bittensor::subtensor::Subtensor;
use bittensor::{Clock, Keypair};
use secrecy::SecretString;
use tokio::sync::{Mutex, Notify};

use crate::protocol::{Allocate, Specs as SpecsSynapse};
use crate::runtime::{ContainerRuntime, ContainerSpec, ContainerState, RuntimeError};
use crate::specs::Specs;
use offer::Offer;
use policy::{CallerPolicy, PolicyConfig};
use state::{Allocation, Phase, StateStore};

/// The SN27 version we speak, as the subnet reports it in credentials and
/// `bt_header_axon_version` (1.8.3 → 183).
pub const COMPUTE_VERSION_INT: i64 = 183;

/// How long after an allocation the next warm container is made.
const WARM_AFTER_ALLOCATION: Duration = Duration::from_secs(3);

/// Where the miner learns who is registered and staked.
#[derive(Debug, Clone)]
pub enum MetagraphSource {
    /// Refresh from the chain every `interval`.
    Chain { client: Subtensor, interval: Duration },
    /// A fixed hotkey → stake (TAO) map (tests and closed deployments).
    Static(std::collections::HashMap<String, f32>),
}

/// Everything the daemon needs.
pub struct MinerConfig {
    pub keypair: Keypair,
    pub netuid: u16,
    pub axon: AxonConfig,
    /// Host port renters' SSH reaches (SN27 default 4444).
    pub ssh_port: u16,
    /// Host address the SSH port is published on.
    pub ssh_bind_ip: IpAddr,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub state_dir: PathBuf,
    pub specs: Specs,
    pub policy: PolicyConfig,
    pub metagraph: MetagraphSource,
    /// What the miner offers beyond SN27 1.8.3 (user ports, images, environment, signed-only).
    pub offer: Offer,
    /// Keep one container made in advance for the next allocation (`--warm-containers 1`): an
    /// allocation then only sets the credentials and starts it. Runtimes without warm
    /// containers (local) ignore it.
    pub warm_containers: bool,
}

impl std::fmt::Debug for MinerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MinerConfig")
            .field("hotkey", &self.keypair.ss58())
            .field("netuid", &self.netuid)
            .field("axon", &self.axon.bind)
            .field("ssh_port", &self.ssh_port)
            .field("runtime", &self.runtime.name())
            .field("state_dir", &self.state_dir)
            .field("offer", &self.offer)
            .field("warm_containers", &self.warm_containers)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MinerError {
    #[error("cannot create the state directory {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("the container runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("cannot serve the axon on {addr}: {source}")]
    Axon { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Replay(#[from] bittensor::axon::ReplayError),
}

struct Miner {
    /// Signs answers to nicompute renters.
    keypair: Keypair,
    ss58: String,
    offer: Offer,
    runtime: Arc<dyn ContainerRuntime>,
    store: StateStore,
    specs: Specs,
    specs_json: String,
    ssh_port: u16,
    ssh_bind_ip: IpAddr,
    /// Serializes changes to the allocation; `try_lock` refuses concurrent allocations.
    busy: Mutex<()>,
    /// Wakes the expiry timer when the allocation changes.
    changed: Notify,
    /// Whether to keep a warm container ([`MinerConfig::warm_containers`]).
    warm: bool,
}

impl std::fmt::Debug for Miner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Miner").field("runtime", &self.runtime.name()).field("ssh_port", &self.ssh_port).finish()
    }
}

/// A running miner.
#[derive(Debug)]
pub struct MinerHandle {
    axon: Option<AxonHandle>,
    addr: std::net::SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    runtime: Arc<dyn ContainerRuntime>,
}

impl MinerHandle {
    pub fn axon_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops serving and the background tasks, and removes the warm container (a parked one
    /// holds the SSH port). Allocations keep running: the next start reconciles them.
    pub async fn shutdown(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(axon) = self.axon.take() {
            axon.shutdown().await;
        }
        if let Err(e) = self.runtime.discard_warm().await {
            tracing::warn!(error = %e, "miner: could not remove the warm container; the next start removes it");
        }
    }
}

impl Drop for MinerHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Reconciles state with the runtime, then serves the axon.
pub async fn spawn(cfg: MinerConfig) -> Result<MinerHandle, MinerError> {
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|source| MinerError::StateDir { path: cfg.state_dir.clone(), source })?;
    let db = cfg.state_dir.join("miner.sqlite");
    let store = StateStore::open(&db)?;
    let replay = state::SqliteReplayJournal::open(&db)?;
    let specs_json = cfg.specs.to_json_string();
    let miner = Arc::new(Miner {
        ss58: cfg.keypair.ss58(),
        keypair: cfg.keypair.clone(),
        offer: cfg.offer,
        runtime: cfg.runtime.clone(),
        store,
        specs: cfg.specs,
        specs_json,
        ssh_port: cfg.ssh_port,
        ssh_bind_ip: cfg.ssh_bind_ip,
        busy: Mutex::new(()),
        changed: Notify::new(),
        warm: cfg.warm_containers,
    });
    reconcile(&miner).await?;
    warm_up(&miner, Duration::ZERO);

    let policy = Arc::new(CallerPolicy::new(cfg.policy, cfg.netuid));
    let mut tasks = Vec::new();
    match cfg.metagraph {
        MetagraphSource::Static(map) => policy.set_stakes(map),
        MetagraphSource::Chain { client, interval } => {
            let (p, netuid) = (policy.clone(), cfg.netuid);
            // First load before serving, so registered callers are not refused at start-up.
            match client.metagraph(netuid).await {
                Ok(mg) => p.update(&mg),
                Err(e) => {
                    tracing::warn!(error = %e, "miner: cannot load the metagraph yet; callers are refused until it loads")
                }
            }
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    match client.metagraph(netuid).await {
                        Ok(mg) => p.update(&mg),
                        Err(e) => tracing::warn!(error = %e, "miner: metagraph refresh failed; keeping the last one"),
                    }
                }
            }));
        }
    }
    tasks.push(tokio::spawn(expiry_loop(miner.clone())));

    let (m1, m2) = (miner.clone(), miner.clone());
    let (p1, p2) = (policy.clone(), policy);
    let axon = Axon::new(cfg.keypair)
        .version(COMPUTE_VERSION_INT)
        .replay_journal(Box::new(replay))?
        .attach(move |req: Request<Allocate>| {
            let m = m1.clone();
            async move { Ok::<_, HandlerError>(handler::allocate(&m, req).await) }
        })
        .attach(move |req: Request<SpecsSynapse>| {
            let m = m2.clone();
            async move { Ok::<_, HandlerError>(handler::specs(&m, req)) }
        })
        .blacklist(move |head| p1.refuse(head.header.dendrite.hotkey.as_deref(), head.name))
        .priority(16, move |head| p2.priority(head.header.dendrite.hotkey.as_deref()));
    let bind = cfg.axon.bind;
    let axon = axon.spawn(cfg.axon).await.map_err(|source| MinerError::Axon { addr: bind, source })?;
    let addr = axon.local_addr();
    tracing::info!(axon = %addr, ssh_port = miner.ssh_port, runtime = miner.runtime.name(), "miner: serving");
    Ok(MinerHandle { axon: Some(axon), addr, tasks, runtime: cfg.runtime.clone() })
}

/// Start-up: make the runtime and the state agree (spec in [`state`]).
async fn reconcile(m: &Miner) -> Result<(), MinerError> {
    let containers = m.runtime.list().await?;
    let current = m.store.current()?;
    let keep = match &current {
        Some(a) if a.phase == Phase::Starting => {
            tracing::warn!(allocation = %a.allocation_id, "reconcile: an allocation was interrupted while starting; removing it");
            m.store.clear(&a.allocation_id)?;
            None
        }
        Some(a) if a.expires_ms <= Clock::system().now_ms() => {
            tracing::info!(allocation = %a.allocation_id, "reconcile: the allocation expired while the miner was down; ending it");
            m.store.clear(&a.allocation_id)?;
            None
        }
        Some(a) => {
            let alive =
                containers.iter().any(|c| Some(&c.id) == a.container_id.as_ref() && c.state != ContainerState::Stopped);
            if alive {
                Some(a.allocation_id.clone())
            } else {
                tracing::warn!(allocation = %a.allocation_id, "reconcile: the allocation's container is gone; clearing it");
                m.store.clear(&a.allocation_id)?;
                None
            }
        }
        None => None,
    };
    for c in containers {
        if Some(&c.allocation_id) != keep.as_ref() {
            tracing::warn!(container = %c.id, allocation = %c.allocation_id, "reconcile: removing a container with no live allocation");
            m.runtime.remove(&c.id).await?;
        }
    }
    Ok(())
}

/// Ends the allocation when it expires; re-armed whenever it changes.
async fn expiry_loop(m: Arc<Miner>) {
    loop {
        let current = m.store.current().ok().flatten();
        match current {
            Some(a) if a.phase == Phase::Running => {
                let wait = Duration::from_millis(a.expires_ms.saturating_sub(Clock::system().now_ms()));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {
                        let _guard = m.busy.lock().await;
                        if m.store.current().ok().flatten().is_some_and(|c| c.allocation_id == a.allocation_id && c.expires_ms <= Clock::system().now_ms()) {
                            tracing::info!(allocation = %a.allocation_id, "allocation expired; removing its container");
                            if let Err(e) = end(&m, &a).await {
                                tracing::error!(error = %e, "could not end the expired allocation; retrying in 30 s");
                                drop(_guard);
                                tokio::time::sleep(Duration::from_secs(30)).await;
                            }
                        }
                    }
                    _ = m.changed.notified() => {}
                }
            }
            _ => m.changed.notified().await,
        }
    }
}

async fn end(m: &Miner, a: &Allocation) -> Result<(), MinerError> {
    if let Some(id) = &a.container_id {
        m.runtime.remove(id).await?;
    }
    m.store.clear(&a.allocation_id)?;
    m.changed.notify_one();
    // The image may have changed while the allocation ran: the next one finds a warm container
    // of the image as it is now.
    warm_up(m, Duration::ZERO);
    Ok(())
}

/// Makes (or keeps) the warm container in the background after `delay`, when the miner keeps
/// one: at start, after each allocation and after each end. The runtime replaces one made from
/// an older image.
fn warm_up(m: &Miner, delay: Duration) {
    if !m.warm {
        return;
    }
    let runtime = m.runtime.clone();
    let mut template = ContainerSpec::new("warm", SecretString::from(String::new()), m.ssh_port, m.ssh_bind_ip);
    template.gpus = m.specs.gpu.count > 0 && !m.specs.simulated;
    // What a renter who asks for nothing particular gets (SN27's four user ports by default).
    match m.offer.resolve(&crate::protocol::docker::DockerRequest::default()) {
        Ok(r) => {
            template.ssh_container_port = r.ssh_container_port;
            template.user_ports = r.user_ports;
        }
        Err(r) => {
            tracing::warn!(reason = ?r.reason, "miner: no warm container: the default request resolves to nothing");
            return;
        }
    }
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        match runtime.prepare_warm(&template).await {
            Ok(true) => tracing::debug!("miner: the warm container is ready"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "miner: cannot make the warm container; allocations start cold"),
        }
    });
}
