//! The `local` runtime: an allocation is an SSH server embedded in the miner process, for devnets
//! and tests on machines without Docker. It exists so that the whole allocate → SSH → deallocate
//! path can run anywhere (CI, a laptop) with the real OpenSSH client on the renter's side.
//!
//! **It isolates nothing.** Every command a renter runs executes as the miner's own Unix user, with
//! that user's files, network and credentials (the miner's wallet included) in reach. CPU, memory
//! and GPU limits, the image, the environment and the user ports in the [`ContainerSpec`] are
//! ignored (a session binds host ports itself). Use it only against a devnet chain, never
//! to sell compute.
//!
//! Each allocation gets:
//! - a working directory `root_dir/<allocation_id>/` (mode 0700), which is `HOME` and the current
//!   directory of every command; `root_dir/<allocation_id>/.ssh/authorized_keys` holds the public
//!   keys accepted for new logins (re-read at every login, so a renter can edit it as in a container);
//! - an SSH server (russh) on `spec.bind_ip:spec.ssh_port` presenting the spec's host key (the
//!   miner makes one per allocation), else one persistent ed25519 host key shared by all
//!   allocations (`root_dir/host_key`, mode 0600, generated once). Port 0 takes
//!   any free port ([`LocalRuntime::ssh_port`] says which); a port [`LocalRuntime::reserve`]d
//!   is bound once and kept between allocations, so a miner that publishes it before its first
//!   allocation (SN27's answers carry it) never loses it to another process;
//! - login as `root` only, by password (compared in constant time with the spec's) or by a listed
//!   public key; every other user and method is refused.
//!
//! Sessions: `exec` runs `sh -c COMMAND`, a `shell` runs `sh` (or `sh -i` when a PTY was asked for),
//! the `sftp` subsystem runs the host's OpenSSH `sftp-server` if it has one (so `scp` and `sftp`
//! work; `scp -O` works regardless). No port forwarding, agent or X11 forwarding.
//! There is **no real PTY**: a PTY request is accepted and emulated by a small line discipline
//! (echo, Enter, backspace, ^C/^\ as SIGINT/SIGQUIT, ^D as end of input, `\n` → `\r\n` on output), so
//! an interactive `ssh host` is usable for line-oriented work, but programs see no terminal
//! (`isatty` is false): no full-screen editors, no job control, no window size.
//!
//! Every process a session starts leads its own process group; the runtime signals those groups:
//! SIGHUP when the SSH connection ends, SIGSTOP/SIGCONT on pause/unpause, SIGKILL on restart and
//! remove. A process that leaves its group (`setsid`) escapes all of that.
//!
//! State is in memory only: dropping the runtime stops its servers and kills their sessions'
//! processes; after a miner restart [`LocalRuntime::list`] is empty (the miner's reconcile then
//! clears its allocation) and leftover directories are deleted by [`LocalRuntime::new`].

mod line;
mod ssh;

use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{BoxFuture, Container, ContainerRuntime, ContainerSpec, ContainerState, RuntimeError};
use ssh::Shared;

/// The prefix of a local container id: `local-<allocation_id>`.
pub const CONTAINER_PREFIX: &str = "local-";
/// The file, inside an allocation directory, that marks it as ours (so [`LocalRuntime::new`] may
/// delete it after a restart).
const MARKER: &str = ".nicompute-allocation";
const HOST_KEY: &str = "host_key";

/// The devnet/test runtime: one embedded SSH server per allocation, commands run as the miner's
/// own user. **It isolates nothing** (see the [module docs](self)); resource limits are ignored.
///
/// One `LocalRuntime` per `root_dir`: [`LocalRuntime::new`] deletes allocation directories left
/// there by an earlier process.
pub struct LocalRuntime {
    root: PathBuf,
    host_key: PrivateKey,
    servers: Mutex<HashMap<String, Served>>,
    /// Listeners bound by [`LocalRuntime::reserve`], by port: kept while the runtime lives.
    reserved: Mutex<HashMap<u16, Arc<TcpListener>>>,
}

/// One allocation being served.
struct Served {
    shared: Arc<Shared>,
    port: u16,
    listener: JoinHandle<()>,
}

fn listen_error(addr: SocketAddr, e: std::io::Error) -> RuntimeError {
    match e.kind() {
        ErrorKind::AddrInUse => RuntimeError::PortInUse { port: addr.port() },
        _ => RuntimeError::Failed(format!("local runtime: cannot listen on {addr}: {e}")),
    }
}

impl std::fmt::Debug for LocalRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers = lock(&self.servers);
        let mut ports: Vec<(&String, u16)> = servers.iter().map(|(id, s)| (id, s.port)).collect();
        ports.sort();
        f.debug_struct("LocalRuntime").field("root", &self.root).field("serving", &ports).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn failed(what: &str, path: &Path, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Failed(format!("local runtime: {what} {}: {e}", path.display()))
}

impl LocalRuntime {
    /// Opens (creating it 0700 if needed) the runtime's directory, loads or generates its ed25519
    /// host key, and deletes allocation directories left by an earlier process (its servers died
    /// with it). Logs a loud warning: this runtime isolates nothing.
    pub fn new(root_dir: PathBuf) -> Result<Self, RuntimeError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root_dir)
            .map_err(|e| failed("cannot create", &root_dir, e))?;
        std::fs::set_permissions(&root_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| failed("cannot restrict", &root_dir, e))?;
        let host_key = load_or_create_host_key(&root_dir.join(HOST_KEY))?;
        remove_stale_dirs(&root_dir);
        tracing::warn!(
            root = %root_dir.display(),
            "the LOCAL runtime ISOLATES NOTHING: renters' commands run as this miner's own user, with \
             its files (wallet included) and network in reach, and no CPU/memory/GPU limits; devnet and tests only"
        );
        Ok(Self { root: root_dir, host_key, servers: Mutex::new(HashMap::new()), reserved: Mutex::new(HashMap::new()) })
    }

    /// Binds `ip:port` now (0: any free port) and keeps it for the allocations started on that
    /// port, which then never bind it themselves; returns the port.
    pub async fn reserve(&self, ip: IpAddr, port: u16) -> Result<u16, RuntimeError> {
        let addr = SocketAddr::new(ip, port);
        let listener = TcpListener::bind(addr).await.map_err(|e| listen_error(addr, e))?;
        let port = listener.local_addr().map_err(|e| listen_error(addr, e))?.port();
        lock(&self.reserved).insert(port, Arc::new(listener));
        Ok(port)
    }

    /// The port an allocation's SSH server listens on (its container id or allocation id).
    pub fn ssh_port(&self, id: &str) -> Option<u16> {
        let servers = lock(&self.servers);
        id.strip_prefix(CONTAINER_PREFIX).and_then(|a| servers.get(a)).or_else(|| servers.get(id)).map(|s| s.port)
    }

    /// The directory holding the allocation directories and the host key.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The working directory (and `HOME`) of an allocation: `root_dir/<allocation_id>`.
    pub fn allocation_dir(&self, allocation_id: &str) -> PathBuf {
        self.root.join(allocation_id)
    }

    /// The public half of the host key every local SSH server presents, as an OpenSSH line
    /// (`ssh-ed25519 AAAA…`), for a `known_hosts` entry.
    pub fn host_public_key(&self) -> Result<String, RuntimeError> {
        self.host_key
            .public_key()
            .to_openssh()
            .map_err(|e| RuntimeError::Failed(format!("local runtime: cannot encode the host key: {e}")))
    }

    /// The served allocation that `id` names: a container id (`local-<allocation_id>`) or, failing
    /// that, an allocation id.
    fn find(&self, id: &str) -> Option<Arc<Shared>> {
        let servers = lock(&self.servers);
        id.strip_prefix(CONTAINER_PREFIX)
            .and_then(|a| servers.get(a))
            .or_else(|| servers.get(id))
            .map(|s| s.shared.clone())
    }

    fn take(&self, id: &str) -> Option<Served> {
        let mut servers = lock(&self.servers);
        let key = match id.strip_prefix(CONTAINER_PREFIX) {
            Some(a) if servers.contains_key(a) => a.to_owned(),
            _ => id.to_owned(),
        };
        servers.remove(&key)
    }

    async fn start_inner(&self, spec: &ContainerSpec) -> Result<Container, RuntimeError> {
        let id = spec.allocation_id.as_str();
        check_allocation_id(id)?;
        if lock(&self.servers).contains_key(id) {
            return Err(RuntimeError::Failed(format!("local runtime: allocation {id} is already being served")));
        }
        let began = std::time::Instant::now();
        let mut addr = SocketAddr::new(spec.bind_ip, spec.ssh_port);
        let reserved = lock(&self.reserved).get(&spec.ssh_port).filter(|_| spec.ssh_port != 0).cloned();
        let listener = match reserved {
            Some(_) if lock(&self.servers).values().any(|s| s.port == spec.ssh_port) => {
                return Err(RuntimeError::PortInUse { port: spec.ssh_port })
            }
            Some(l) => l,
            None => Arc::new(TcpListener::bind(addr).await.map_err(|e| listen_error(addr, e))?),
        };
        addr = listener.local_addr().map_err(|e| listen_error(addr, e))?;

        let dir = self.allocation_dir(id);
        let keys = spec.authorized_keys.clone();
        let dir2 = dir.clone();
        tokio::task::spawn_blocking(move || prepare_dir(&dir2, &keys))
            .await
            .map_err(|e| RuntimeError::Failed(format!("local runtime: preparing the directory: {e}")))??;

        let shared = Arc::new(Shared::new(id.to_owned(), dir.clone(), spec.password.expose_secret()));
        // The miner's per-allocation key when it made one (it signs that key to renters).
        let config = ssh::server_config(spec.host_key.clone().unwrap_or_else(|| self.host_key.clone()));
        let task = tokio::spawn(ssh::serve(listener, config, shared.clone()));

        let mut servers = lock(&self.servers);
        if servers.contains_key(id) {
            // Another start of the same allocation won the race: keep it, undo ours.
            task.abort();
            return Err(RuntimeError::Failed(format!("local runtime: allocation {id} is already being served")));
        }
        if servers.values().any(|s| s.port == addr.port()) {
            // Another allocation took the reserved port meanwhile.
            task.abort();
            return Err(RuntimeError::PortInUse { port: addr.port() });
        }
        servers.insert(id.to_owned(), Served { shared, port: addr.port(), listener: task });
        drop(servers);
        tracing::info!(
            allocation = %id,
            %addr,
            dir = %dir.display(),
            elapsed_ms = began.elapsed().as_millis() as u64,
            "local SSH server started (no isolation)"
        );
        // Nothing is mapped: a session's process binds the host port itself.
        let user_ports = spec.user_ports.iter().map(|(c, _)| (*c, *c)).collect();
        Ok(Container { id: container_id(id), allocation_id: id.to_owned(), state: ContainerState::Running, user_ports })
    }

    async fn remove_inner(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(served) = self.take(id) else { return Ok(()) };
        let shared = served.shared;
        shared.closing.store(true, Ordering::SeqCst);
        // Stop accepting: once the task is gone, so is its listener, and the port is free (unless
        // it is reserved: the runtime keeps it for the next allocation).
        served.listener.abort();
        let _ = served.listener.await;
        shared.drop_sessions().await;
        let dir = shared.dir.clone();
        tokio::task::spawn_blocking(move || remove_dir_retrying(&dir))
            .await
            .map_err(|e| RuntimeError::Failed(format!("local runtime: deleting the directory: {e}")))??;
        tracing::info!(allocation = %shared.allocation_id, "local SSH server removed");
        Ok(())
    }

    fn found(&self, id: &str) -> Result<Arc<Shared>, RuntimeError> {
        self.find(id).ok_or_else(|| RuntimeError::NotFound(id.to_owned()))
    }
}

/// Nothing can manage an allocation once its runtime is gone (state is in memory only), so
/// dropping the runtime stops its servers and kills what their sessions started; the directories
/// stay until the next [`LocalRuntime::new`] on the same root.
impl Drop for LocalRuntime {
    fn drop(&mut self) {
        let servers = std::mem::take(&mut *lock(&self.servers));
        for (_, served) in servers {
            served.shared.closing.store(true, Ordering::SeqCst);
            served.listener.abort();
            served.shared.signal_all(rustix::process::Signal::KILL);
        }
    }
}

/// `local-<allocation_id>`.
pub fn container_id(allocation_id: &str) -> String {
    format!("{CONTAINER_PREFIX}{allocation_id}")
}

impl ContainerRuntime for LocalRuntime {
    fn name(&self) -> &'static str {
        "local"
    }

    fn start<'a>(&'a self, spec: &'a ContainerSpec) -> BoxFuture<'a, Result<Container, RuntimeError>> {
        Box::pin(self.start_inner(spec))
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.remove_inner(id))
    }

    fn pause<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            let shared = self.found(id)?;
            if !shared.paused.swap(true, Ordering::SeqCst) {
                shared.signal_all(rustix::process::Signal::STOP);
            }
            Ok(())
        })
    }

    fn unpause<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            let shared = self.found(id)?;
            if shared.paused.swap(false, Ordering::SeqCst) {
                shared.signal_all(rustix::process::Signal::CONT);
            }
            Ok(())
        })
    }

    fn restart<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            let shared = self.found(id)?;
            shared.drop_sessions().await;
            // Like a container, it comes back running.
            shared.paused.store(false, Ordering::SeqCst);
            Ok(())
        })
    }

    fn set_authorized_keys<'a>(&'a self, id: &'a str, keys: &'a [String]) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            let shared = self.found(id)?;
            let (_, bad) = ssh::parse_authorized_keys(&keys.join("\n"));
            if bad > 0 {
                return Err(RuntimeError::Failed(format!(
                    "{bad} of the given authorized keys is not an OpenSSH public key line"
                )));
            }
            let dir = shared.dir.clone();
            let keys = keys.to_vec();
            tokio::task::spawn_blocking(move || write_authorized_keys(&dir, &keys))
                .await
                .map_err(|e| RuntimeError::Failed(format!("local runtime: writing authorized_keys: {e}")))?
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Container>, RuntimeError>> {
        Box::pin(async move {
            let servers = lock(&self.servers);
            let mut list: Vec<Container> = servers
                .iter()
                .map(|(id, s)| Container {
                    id: container_id(id),
                    allocation_id: id.clone(),
                    state: if s.shared.paused.load(Ordering::SeqCst) {
                        ContainerState::Paused
                    } else {
                        ContainerState::Running
                    },
                    user_ports: Vec::new(),
                })
                .collect();
            list.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(list)
        })
    }
}

/// An allocation id names a directory: one plain path component, not the host key's name.
fn check_allocation_id(id: &str) -> Result<(), RuntimeError> {
    let plain = id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if id.is_empty() || id.len() > 128 || !plain || id.starts_with('.') || id == HOST_KEY {
        return Err(RuntimeError::Failed(format!(
            "local runtime: allocation id {id:?} is not usable as a directory name (letters, digits, '-', '_', '.')"
        )));
    }
    Ok(())
}

fn load_or_create_host_key(path: &Path) -> Result<PrivateKey, RuntimeError> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes()).map_err(|e| failed("unreadable host key", path, e)),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let key = PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519)
                .map_err(|e| failed("cannot generate the host key for", path, e))?;
            let text = key.to_openssh(LineEnding::LF).map_err(|e| failed("cannot encode the host key for", path, e))?;
            // Write a temporary file (0600 from its creation), then rename it into place.
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
                .and_then(|()| std::fs::rename(&tmp, path));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(failed("cannot write the host key", path, e));
            }
            tracing::info!(path = %path.display(), "generated the local runtime's ed25519 host key");
            Ok(key)
        }
        Err(e) => Err(failed("cannot read the host key", path, e)),
    }
}

/// Deletes the allocation directories (those holding our marker) an earlier process left.
fn remove_stale_dirs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && path.join(MARKER).is_file() {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(dir = %path.display(), "deleted a local allocation directory left by an earlier run")
                }
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "cannot delete a stale local allocation directory")
                }
            }
        }
    }
}

/// A fresh directory (0700) with its marker and `.ssh/authorized_keys`.
fn prepare_dir(dir: &Path, keys: &[String]) -> Result<(), RuntimeError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| failed("cannot clear", dir, e))?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(dir).map_err(|e| failed("cannot create", dir, e))?;
    std::fs::write(dir.join(MARKER), b"a nicompute local-runtime allocation directory\n")
        .map_err(|e| failed("cannot write the marker in", dir, e))?;
    let (_, bad) = ssh::parse_authorized_keys(&keys.join("\n"));
    if bad > 0 {
        tracing::warn!(
            bad,
            "some authorized keys of the allocation are not OpenSSH public key lines; they are ignored"
        );
    }
    write_authorized_keys(dir, keys)
}

fn write_authorized_keys(dir: &Path, keys: &[String]) -> Result<(), RuntimeError> {
    let ssh_dir = dir.join(".ssh");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&ssh_dir)
        .map_err(|e| failed("cannot create", &ssh_dir, e))?;
    let path = ssh_dir.join("authorized_keys");
    let tmp = ssh_dir.join("authorized_keys.tmp");
    let mut text = String::new();
    for key in keys {
        text.push_str(key.trim());
        text.push('\n');
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| failed("cannot write", &path, e))
}

/// Deletes a directory; processes killed a moment ago may still be creating files, so retry briefly.
fn remove_dir_retrying(dir: &Path) -> Result<(), RuntimeError> {
    let mut last = None;
    for _ in 0..20 {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match last {
        Some(e) => Err(failed("cannot delete", dir, e)),
        None => Ok(()),
    }
}
