//! The miner daemon: answers SN27's `Allocate` and `Specs` synapses over the axon and runs one
//! SSH-reachable container per allocation through a [`ContainerRuntime`].
//!
//! Semantics are SN27's, answer shapes included (`{"status": bool, "info"?, "port"}`), with its
//! weaknesses fixed: a check says yes only if the machine is free *and* meets the requirement;
//! expiry is a timer of this daemon that survives restarts (no `at` jobs); a crash at any moment
//! is reconciled at the next start (see [`state`]); only the holder of the allocation key may
//! end or manage an allocation; concurrent allocations get one success and clean refusals.

pub mod policy;
pub mod state;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bittensor::axon::{Axon, AxonConfig, AxonHandle, HandlerError, Request};
use bittensor::subtensor::Subtensor;
use bittensor::{Clock, Keypair};
use rand::distributions::{Alphanumeric, DistString};
use secrecy::SecretString;
use serde_json::{json, Map, Value};
use tokio::sync::{Mutex, Notify};

use crate::crypto::{allocation_key_b64, Credentials, CredentialsVersion};
use crate::protocol::{Allocate, Specs as SpecsSynapse};
use crate::runtime::{ContainerRuntime, ContainerSpec, ContainerState, RuntimeError};
use crate::specs::{self, Requirement, Specs};
use policy::{CallerPolicy, PolicyConfig};
use state::{Allocation, Phase, StateStore};

/// The SN27 version we speak, as the subnet reports it in credentials and
/// `bt_header_axon_version` (1.8.3 → 183).
pub const COMPUTE_VERSION_INT: i64 = 183;

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
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
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
}

impl MinerHandle {
    pub fn axon_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops serving and the background tasks. Allocations keep running: the next start
    /// reconciles them.
    pub async fn shutdown(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(axon) = self.axon.take() {
            axon.shutdown().await;
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
        runtime: cfg.runtime.clone(),
        store,
        specs: cfg.specs,
        specs_json,
        ssh_port: cfg.ssh_port,
        ssh_bind_ip: cfg.ssh_bind_ip,
        busy: Mutex::new(()),
        changed: Notify::new(),
    });
    reconcile(&miner).await?;

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
            async move { Ok::<_, HandlerError>(allocate(&m, req).await) }
        })
        .attach(move |req: Request<SpecsSynapse>| {
            let m = m2.clone();
            async move {
                let mut s = req.synapse;
                s.specs_output = m.specs_json.clone();
                Ok::<_, HandlerError>(s)
            }
        })
        .blacklist(move |head| p1.refuse(head.header.dendrite.hotkey.as_deref()))
        .priority(16, move |head| p2.priority(head.header.dendrite.hotkey.as_deref()));
    let bind = cfg.axon.bind;
    let axon = axon.spawn(cfg.axon).await.map_err(|source| MinerError::Axon { addr: bind, source })?;
    let addr = axon.local_addr();
    tracing::info!(axon = %addr, ssh_port = miner.ssh_port, runtime = miner.runtime.name(), "miner: serving");
    Ok(MinerHandle { axon: Some(axon), addr, tasks })
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
    Ok(())
}

fn answer(mut s: Allocate, port: u16, status: bool, extra: Option<(&str, Value)>) -> Allocate {
    let mut out = Map::new();
    out.insert("status".into(), json!(status));
    if let Some((k, v)) = extra {
        out.insert(k.into(), v);
    }
    out.insert("port".into(), json!(port));
    s.output = out;
    s
}

fn refuse(s: Allocate, port: u16, reason: impl Into<String>) -> Allocate {
    answer(s, port, false, Some(("reason", json!(reason.into()))))
}

/// The Allocate synapse, SN27's five cases.
async fn allocate(m: &Miner, req: Request<Allocate>) -> Allocate {
    let s = req.synapse;
    let port = m.ssh_port;
    let key = if s.public_key.is_empty() { None } else { Some(allocation_key_b64(&s.public_key)) };
    let current = match m.store.current() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "miner state unreadable");
            return refuse(s, port, "the miner's state is unavailable");
        }
    };
    let holds_key = |a: &Allocation| key.as_deref() == Some(a.key_b64.as_str());
    match (s.checking, s.timeline > 0, s.docker_change) {
        // Is this machine free and does it meet the requirement?
        (true, true, _) => {
            if current.is_some() {
                return refuse(s, port, "already allocated");
            }
            let req = match Requirement::from_json(&Value::Object(s.device_requirement.clone())) {
                Ok(r) => r,
                Err(e) => return refuse(s, port, format!("unreadable device_requirement: {}", e.0)),
            };
            match specs::check(&req, &m.specs) {
                Ok(()) => answer(s, port, true, None),
                Err(mismatch) => refuse(s, port, mismatch.to_string()),
            }
        }
        // Is the caller's allocation still here?
        (true, false, _) => {
            let alive = match &current {
                Some(a) if holds_key(a) && a.phase == Phase::Running => container_running(m, a).await,
                _ => false,
            };
            answer(s, port, alive, None)
        }
        // Restart, pause, unpause, exchange_key: the key holder only. A caller without the key
        // is refused before waiting for the allocation lock, so it cannot queue behind one.
        (false, _, true) => {
            if !current.as_ref().is_some_and(holds_key) {
                return refuse(s, port, "not the holder of the allocation key");
            }
            let _guard = m.busy.lock().await;
            match m.store.current().ok().flatten() {
                Some(a) if holds_key(&a) => {
                    let action = s.docker_action.get("action").and_then(Value::as_str).unwrap_or("").to_owned();
                    match docker_action(m, &a, &action, &s.docker_action).await {
                        Ok(()) => answer(s, port, true, None),
                        Err(e) => refuse(s, port, e),
                    }
                }
                _ => refuse(s, port, "not the holder of the allocation key"),
            }
        }
        // Allocate.
        (false, true, false) => start_allocation(m, s, &req.caller.hotkey.to_ss58(), key).await,
        // Deallocate: the key holder only, checked before waiting for the allocation lock.
        (false, false, false) => {
            match &current {
                None => return refuse(s, port, "no allocation"),
                Some(a) if !holds_key(a) => return refuse(s, port, "not the holder of the allocation key"),
                Some(_) => {}
            }
            let _guard = m.busy.lock().await;
            let Some(a) = m.store.current().ok().flatten() else { return refuse(s, port, "no allocation") };
            if !holds_key(&a) {
                return refuse(s, port, "not the holder of the allocation key");
            }
            match end(m, &a).await {
                Ok(()) => answer(s, port, true, None),
                Err(e) => {
                    tracing::error!(allocation = %a.allocation_id, error = %e, "deallocation failed");
                    refuse(s, port, "the miner could not remove the container; its operator's log has the details")
                }
            }
        }
    }
}

/// What a caller may read about a runtime failure; the detail (Docker's own text, paths, ids)
/// goes to the miner's log only.
fn plain(e: &RuntimeError) -> &'static str {
    match e {
        RuntimeError::Unavailable(_) => "the miner's container runtime is unavailable; try again later",
        RuntimeError::NotFound(_) => "the allocation's container is gone",
        RuntimeError::PortInUse { .. } => "the miner's SSH port is taken on its host; its operator must free it",
        RuntimeError::Failed(_) => "the miner's container runtime failed; its operator's log has the details",
    }
}

async fn container_running(m: &Miner, a: &Allocation) -> bool {
    let Ok(list) = m.runtime.list().await else { return false };
    list.iter().any(|c| Some(&c.id) == a.container_id.as_ref() && c.state != ContainerState::Stopped)
}

async fn docker_action(m: &Miner, a: &Allocation, action: &str, fields: &Map<String, Value>) -> Result<(), String> {
    let id = a.container_id.as_deref().ok_or("the allocation has no container yet")?;
    let r = match action {
        "restart" => m.runtime.restart(id).await,
        "pause" => m.runtime.pause(id).await,
        "unpause" | "resume" => m.runtime.unpause(id).await,
        "exchange_key" => {
            let key = fields.get("ssh_key").and_then(Value::as_str).unwrap_or("").trim().to_owned();
            let key_type = fields.get("key_type").and_then(Value::as_str).unwrap_or("user");
            if !matches!(key_type, "user" | "terminal" | "") {
                return Err("unknown key_type (user or terminal)".into());
            }
            if key.is_empty() || !key.starts_with("ssh-") && !key.starts_with("ecdsa-") {
                return Err("exchange_key needs an OpenSSH public key in ssh_key".into());
            }
            m.runtime.set_authorized_keys(id, &[key]).await
        }
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(format!("unknown docker action '{shown}' (restart, pause, unpause, resume, exchange_key)"));
        }
    };
    r.map_err(|e| {
        tracing::error!(allocation = %a.allocation_id, action, error = %e, "container action failed");
        plain(&e).to_owned()
    })
}

async fn start_allocation(m: &Miner, s: Allocate, requester: &str, key: Option<String>) -> Allocate {
    let port = m.ssh_port;
    let Some(key_b64) = key else { return refuse(s, port, "public_key is required to allocate") };
    // One allocation at a time: a concurrent request is refused, not queued.
    let Ok(_guard) = m.busy.try_lock() else { return refuse(s, port, "another allocation is in progress") };
    let req = match Requirement::from_json(&Value::Object(s.device_requirement.clone())) {
        Ok(r) => r,
        Err(e) => return refuse(s, port, format!("unreadable device_requirement: {}", e.0)),
    };
    if let Err(mismatch) = specs::check(&req, &m.specs) {
        return refuse(s, port, mismatch.to_string());
    }
    let ttl = ttl_of(&s);
    let started_ms = Clock::system().now_ms();
    let allocation = Allocation {
        allocation_id: uuid_like(),
        key_b64,
        container_id: None,
        requester: requester.to_owned(),
        started_ms,
        expires_ms: started_ms.saturating_add(ttl.as_millis() as u64),
        phase: Phase::Starting,
    };
    match m.store.begin(&allocation) {
        Ok(true) => {}
        Ok(false) => return refuse(s, port, "already allocated"),
        Err(e) => {
            tracing::error!(error = %e, "miner state unwritable");
            return refuse(s, port, "the miner's state is unavailable");
        }
    }
    let password = Alphanumeric.sample_string(&mut rand::rngs::OsRng, 20);
    let ssh_key = s.docker_requirement.get("ssh_key").and_then(Value::as_str).unwrap_or("").trim().to_owned();
    let spec = ContainerSpec {
        allocation_id: allocation.allocation_id.clone(),
        password: SecretString::from(password.clone()),
        authorized_keys: if ssh_key.is_empty() { Vec::new() } else { vec![ssh_key] },
        ssh_port: port,
        bind_ip: m.ssh_bind_ip,
        cpu_count: req.cpu_count.and_then(|c| u32::try_from(c).ok()),
        memory_bytes: req.ram_bytes,
        gpus: m.specs.gpu.count > 0 && !m.specs.simulated,
    };
    let container = match m.runtime.start(&spec).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(allocation = %allocation.allocation_id, error = %e, "allocation failed to start");
            let _ = m.store.clear(&allocation.allocation_id);
            return refuse(s, port, format!("the machine could not start: {}", plain(&e)));
        }
    };
    let creds = Credentials {
        username: "root".into(),
        password: SecretString::from(password),
        port,
        version: CredentialsVersion::Number(COMPUTE_VERSION_INT),
    };
    let info = match creds.encrypt_for(&s.public_key) {
        Ok(i) => i,
        Err(e) => {
            let _ = m.runtime.remove(&container.id).await;
            let _ = m.store.clear(&allocation.allocation_id);
            return refuse(s, port, format!("cannot encrypt the credentials for this public_key: {e}"));
        }
    };
    if let Err(e) = m.store.running(&allocation.allocation_id, &container.id) {
        tracing::error!(error = %e, "miner state unwritable");
        let _ = m.runtime.remove(&container.id).await;
        let _ = m.store.clear(&allocation.allocation_id);
        return refuse(s, port, "the miner's state is unavailable");
    }
    m.changed.notify_one();
    tracing::info!(allocation = %allocation.allocation_id, requester, ttl_s = ttl.as_secs(), "allocated");
    answer(s, port, true, Some(("info", json!(info))))
}

/// `timeline` days (SN27), or our CLI's finer `docker_requirement.ttl_seconds` when given.
fn ttl_of(s: &Allocate) -> Duration {
    match s.docker_requirement.get("ttl_seconds").and_then(Value::as_u64) {
        Some(secs) if secs > 0 => Duration::from_secs(secs),
        _ => Duration::from_secs(u64::try_from(s.timeline).unwrap_or(0).saturating_mul(86_400)),
    }
}

fn uuid_like() -> String {
    let mut b = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    hex_lower(&b)
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
