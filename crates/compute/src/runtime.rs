//! Container runtimes: where an allocation actually runs. The miner asks a [`ContainerRuntime`]
//! to start, stop and manage one SSH-reachable machine per allocation; which runtime is a
//! deployment choice (`docker`, the production default, or `local`, devnet only).
//!
//! Every container a runtime starts carries the allocation id, so that after a crash the miner
//! can list what is running ([`ContainerRuntime::list`]) and reconcile it with its state.

use std::future::Future;
use std::pin::Pin;

use russh::keys::PrivateKey;
use secrecy::SecretString;

pub mod docker;
pub mod local;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The label (docker) or marker that says a container belongs to a nicompute miner.
pub const OWNER_LABEL: &str = "io.nicompute.miner";
/// The label naming which miner made the container (its hotkey), so miners sharing one Docker
/// daemon never take each other's containers for orphans.
pub const SCOPE_LABEL: &str = "io.nicompute.scope";
/// The label holding the allocation id.
pub const ALLOCATION_LABEL: &str = "io.nicompute.allocation";

/// What to start for one allocation.
#[derive(Clone)]
pub struct ContainerSpec {
    /// Unique per allocation; recorded on the container.
    pub allocation_id: String,
    /// Root's password (the miner always sets one; the renter gets it encrypted).
    pub password: SecretString,
    /// OpenSSH public key lines for `authorized_keys` (may be empty).
    pub authorized_keys: Vec<String>,
    /// Host port that reaches the container's SSH server.
    pub ssh_port: u16,
    /// Host address the SSH port is published on (0.0.0.0 in production, 127.0.0.1 in tests).
    pub bind_ip: std::net::IpAddr,
    /// CPU cores to give it (None: no limit).
    pub cpu_count: Option<u32>,
    /// Memory limit in bytes (None: no limit).
    pub memory_bytes: Option<u64>,
    /// Give it every GPU of the host.
    pub gpus: bool,
    /// The image to run instead of the runtime's own (a renter's choice the miner offers;
    /// ignored by the local runtime).
    pub image: Option<String>,
    /// Environment variables for the container (ignored by the local runtime).
    pub env: Vec<(String, String)>,
    /// The container port sshd listens on (22 in the nicompute image).
    pub ssh_container_port: u16,
    /// Extra ports: (container port, host port) pairs published on `bind_ip`. The local runtime
    /// maps nothing: its sessions bind host ports themselves.
    pub user_ports: Vec<(u16, u16)>,
    /// The SSH host key the machine must present (the miner makes one per allocation and signs
    /// its public half to nicompute renters); `None`: the runtime's own.
    pub host_key: Option<PrivateKey>,
}

impl ContainerSpec {
    /// A spec with no limits, no extra ports, the runtime's image and host key.
    pub fn new(allocation_id: &str, password: SecretString, ssh_port: u16, bind_ip: std::net::IpAddr) -> Self {
        Self {
            allocation_id: allocation_id.to_owned(),
            password,
            authorized_keys: Vec::new(),
            ssh_port,
            bind_ip,
            cpu_count: None,
            memory_bytes: None,
            gpus: false,
            image: None,
            env: Vec::new(),
            ssh_container_port: 22,
            user_ports: Vec::new(),
            host_key: None,
        }
    }

    /// The OpenSSH public line of [`Self::host_key`].
    pub fn host_public_key(&self) -> Option<String> {
        self.host_key.as_ref().and_then(|k| k.public_key().to_openssh().ok())
    }
}

impl std::fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerSpec")
            .field("allocation_id", &self.allocation_id)
            .field("password", &"<redacted>")
            .field("authorized_keys", &self.authorized_keys.len())
            .field("ssh_port", &self.ssh_port)
            .field("bind_ip", &self.bind_ip)
            .field("cpu_count", &self.cpu_count)
            .field("memory_bytes", &self.memory_bytes)
            .field("gpus", &self.gpus)
            .field("image", &self.image)
            .field("env", &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
            .field("ssh_container_port", &self.ssh_container_port)
            .field("user_ports", &self.user_ports)
            .field("host_key", &self.host_public_key())
            .finish()
    }
}

/// A container as the runtime knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The runtime's id for it.
    pub id: String,
    pub allocation_id: String,
    pub state: ContainerState,
    /// The extra ports the runtime really published, (container port, host port); what the
    /// renter's credentials report (empty from [`ContainerRuntime::list`]).
    pub user_ports: Vec<(u16, u16)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Running,
    Paused,
    Stopped,
}

/// Runtime failures; each says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error("the container runtime is unavailable: {0}")]
    Unavailable(String),
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("the SSH port {port} is already in use on this host")]
    PortInUse { port: u16 },
    #[error("{0}")]
    Failed(String),
}

/// Starts and manages SSH-reachable machines, one per allocation.
pub trait ContainerRuntime: Send + Sync + std::fmt::Debug {
    /// `docker` or `local`.
    fn name(&self) -> &'static str;

    /// Starts the machine and returns once its SSH server accepts TCP connections.
    fn start<'a>(&'a self, spec: &'a ContainerSpec) -> BoxFuture<'a, Result<Container, RuntimeError>>;

    /// Stops and removes it. Removing a container that is already gone succeeds.
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>>;

    fn pause<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>>;
    fn unpause<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>>;
    fn restart<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>>;

    /// Replaces root's `authorized_keys`.
    fn set_authorized_keys<'a>(&'a self, id: &'a str, keys: &'a [String]) -> BoxFuture<'a, Result<(), RuntimeError>>;

    /// Every container of ours this runtime has, running or not (the warm one included: its
    /// allocation id starts with [`WARM_PREFIX`] until an allocation takes it).
    fn list(&self) -> BoxFuture<'_, Result<Vec<Container>, RuntimeError>>;

    /// Keeps one machine for specs like `template` made in advance (the warm container: parked,
    /// or created and not started), so that the next [`Self::start`] it fits only sets the
    /// credentials and unpauses or starts it. Replaces one made for another template or an older image; a no-op when the one kept
    /// still fits. Returns whether this runtime keeps one (the default: it does not).
    fn prepare_warm<'a>(&'a self, template: &'a ContainerSpec) -> BoxFuture<'a, Result<bool, RuntimeError>> {
        let _ = template;
        Box::pin(async { Ok(false) })
    }

    /// Removes the warm container, if one is kept (the miner stops).
    fn discard_warm(&self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The allocation id a warm container carries until an allocation takes it.
pub const WARM_PREFIX: &str = "warm-";
