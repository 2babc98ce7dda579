//! The production container runtime: one Docker container per allocation, started from an image
//! whose entrypoint sets root's password and authorized keys and runs sshd (the contract is in
//! `images/sshd/README.md`; `scripts/build-ssh-image.sh` builds the default image without a
//! registry). It talks to the Docker Engine API over its unix socket through bollard, never
//! through the docker CLI.
//!
//! Secrets never reach `docker inspect`: the password travels in a tar archive uploaded into the
//! created container before its first start (the archive API), the entrypoint applies it with
//! `chpasswd` and deletes the file. It is never in an environment variable, a command argument,
//! a label, a log line or a `Debug` output.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummaryStateEnum, DeviceRequest, HostConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    RestartContainerOptions, StartContainerOptions, UploadToContainerOptions,
};
use bollard::{ClientVersion, Docker};
use bytes::Bytes;
use secrecy::ExposeSecret;

use self::tar::TarBuilder;
use super::{
    BoxFuture, Container, ContainerRuntime, ContainerSpec, ContainerState, RuntimeError, ALLOCATION_LABEL, OWNER_LABEL,
    SCOPE_LABEL,
};

mod tar;
mod warm;

/// How a provisioned container is set going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launch {
    /// A container of any image: its entrypoint applies the credentials at first start.
    Start,
    /// A warm container whose entrypoint waits for `go` (made while a port was taken).
    StartAwaiting,
    /// A parked warm container: started and paused in advance, waiting for `go`.
    Unpause,
}

pub use warm::WARM_LABEL;

/// The image `scripts/build-ssh-image.sh` builds.
pub const DEFAULT_IMAGE: &str = "nicompute/sshd:bookworm";
/// The Docker socket used when the config names none.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Containers are named `nicompute-<allocation id>`.
pub const NAME_PREFIX: &str = "nicompute-";
/// Where the entrypoint looks for `root:<password>` (applied with chpasswd, then deleted).
pub const CHPASSWD_PATH: &str = "/run/nicompute/chpasswd";

/// The label naming the container port sshd listens on (`22/tcp` unless the renter's image
/// says otherwise), so a restart finds the SSH port to wait on.
const SSH_PORT_LABEL: &str = "io.nicompute.ssh";
/// Where the miner's per-allocation SSH host key goes (OpenSSH's default ed25519 host key; the
/// entrypoint's `ssh-keygen -A` keeps an existing one).
pub const HOST_KEY_PATH: &str = "/etc/ssh/ssh_host_ed25519_key";
/// Seconds Docker waits after SIGTERM before it kills the container on restart.
const STOP_GRACE_SECS: i32 = 10;
/// Read/write timeout of one Engine API request, in seconds.
const API_TIMEOUT_SECS: u64 = 120;

/// How to reach Docker and what to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// The Engine API's unix socket. None: [`DEFAULT_SOCKET`]. The caller reads `DOCKER_HOST`
    /// (see [`socket_for_docker_host`]); the library reads no environment.
    pub socket: Option<PathBuf>,
    /// The image every allocation runs; it must follow the `images/sshd` entrypoint contract.
    pub image: String,
    /// Docker's restart policy: `no`, `always`, `unless-stopped` or `on-failure`.
    pub restart_policy: String,
    /// How long [`ContainerRuntime::start`] and [`ContainerRuntime::restart`] wait for the SSH
    /// banner before they give up.
    pub ssh_ready_timeout: Duration,
    /// Who owns the containers (the miner's hotkey): set as a label on every container, and only
    /// containers with it are listed. None: every nicompute container on the daemon.
    pub scope: Option<String>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            socket: None,
            image: DEFAULT_IMAGE.to_owned(),
            restart_policy: "unless-stopped".to_owned(),
            ssh_ready_timeout: Duration::from_secs(30),
            scope: None,
        }
    }
}

/// The Docker runtime. Cheap to share: every method takes `&self`.
#[derive(Debug)]
pub struct DockerRuntime {
    docker: Docker,
    socket: PathBuf,
    image: String,
    restart_policy: RestartPolicyNameEnum,
    ssh_ready_timeout: Duration,
    scope: Option<String>,
    /// The container made in advance for the next allocation (see `warm`).
    warm: warm::WarmSlot,
}

impl DockerRuntime {
    /// Connects to the Docker daemon and agrees on an API version with it (so both older daemons
    /// and ones that dropped old API versions work). Fails with [`RuntimeError::Unavailable`]
    /// when the daemon does not answer.
    pub async fn connect(config: DockerConfig) -> Result<Self, RuntimeError> {
        let restart_policy = parse_restart_policy(&config.restart_policy)?;
        let socket = match config.socket {
            Some(path) => path,
            None => PathBuf::from(DEFAULT_SOCKET),
        };
        let path = socket.to_str().ok_or_else(|| {
            RuntimeError::Unavailable(format!("the Docker socket path {} is not UTF-8", socket.display()))
        })?;
        // Start from the newest version bollard knows; negotiation lowers it to the daemon's.
        let version: &ClientVersion = bollard::API_DEFAULT_VERSION;
        let docker = Docker::connect_with_socket(path, API_TIMEOUT_SECS, version)
            .map_err(|e| unavailable(&socket, &e))?
            .negotiate_version()
            .await
            .map_err(|e| unavailable(&socket, &e))?;
        tracing::debug!(socket = %socket.display(), api = %docker.client_version(), "connected to Docker");
        Ok(Self {
            docker,
            socket,
            image: config.image,
            restart_policy,
            ssh_ready_timeout: config.ssh_ready_timeout,
            scope: config.scope,
            warm: warm::WarmSlot::default(),
        })
    }

    /// The image this runtime starts.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// Checks that the daemon answers.
    pub async fn ping(&self) -> Result<(), RuntimeError> {
        self.docker.ping().await.map(drop).map_err(|e| unavailable(&self.socket, &e))
    }

    /// Checks that the configured image exists locally (this runtime never pulls).
    pub async fn ensure_image(&self) -> Result<(), RuntimeError> {
        match self.docker.inspect_image(&self.image).await {
            Ok(_) => Ok(()),
            Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => Err(RuntimeError::Failed(format!(
                "the image {} is not in the local Docker daemon: build it with scripts/build-ssh-image.sh \
                 (or set --image to an image that follows images/sshd/README.md)",
                self.image
            ))),
            Err(e) => Err(self.map_err(e, &self.image)),
        }
    }

    fn map_err(&self, e: DockerError, id: &str) -> RuntimeError {
        match e {
            DockerError::DockerResponseServerError { status_code: 404, .. } => RuntimeError::NotFound(id.to_owned()),
            DockerError::DockerResponseServerError { status_code, message } => {
                RuntimeError::Failed(format!("Docker refused ({status_code}) for {id}: {message}"))
            }
            other => unavailable(&self.socket, &other),
        }
    }

    fn create_body(&self, spec: &ContainerSpec) -> Result<ContainerCreateBody, RuntimeError> {
        let ssh = format!("{}/tcp", spec.ssh_container_port);
        let mut labels = HashMap::from([
            (OWNER_LABEL.to_owned(), "1".to_owned()),
            (ALLOCATION_LABEL.to_owned(), spec.allocation_id.clone()),
            (SSH_PORT_LABEL.to_owned(), ssh.clone()),
        ]);
        if let Some(scope) = &self.scope {
            labels.insert(SCOPE_LABEL.to_owned(), scope.clone());
        }
        let host_ip = Some(spec.bind_ip.to_string());
        let mut bindings = HashMap::from([(
            ssh.clone(),
            Some(vec![PortBinding { host_ip: host_ip.clone(), host_port: Some(spec.ssh_port.to_string()) }]),
        )]);
        for (container, host) in &spec.user_ports {
            let binding = PortBinding { host_ip: host_ip.clone(), host_port: Some(host.to_string()) };
            bindings.insert(format!("{container}/tcp"), Some(vec![binding]));
        }
        let exposed = bindings.keys().map(|k| (k.clone(), HashMap::new())).collect();
        let (nano_cpus, memory) = limits(spec)?;
        let device_requests = spec.gpus.then(|| {
            vec![DeviceRequest {
                driver: Some(String::new()),
                count: Some(-1),
                capabilities: Some(vec![vec!["gpu".to_owned()]]),
                ..Default::default()
            }]
        });
        let env = (!spec.env.is_empty()).then(|| spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect());
        Ok(ContainerCreateBody {
            image: Some(spec.image.clone().unwrap_or_else(|| self.image.clone())),
            labels: Some(labels),
            env,
            exposed_ports: Some(exposed),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                nano_cpus,
                memory,
                restart_policy: Some(RestartPolicy { name: Some(self.restart_policy), maximum_retry_count: None }),
                device_requests,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    async fn start_inner(&self, spec: &ContainerSpec) -> Result<Container, RuntimeError> {
        validate_allocation_id(&spec.allocation_id)?;
        let password = spec.password.expose_secret();
        if password.is_empty() || password.contains(['\n', '\r', '\0']) {
            return Err(RuntimeError::Failed("the root password must be one non-empty line".into()));
        }
        let keys = authorized_keys_file(&spec.authorized_keys)?;
        if let Some(container) = self.start_warm(spec, password, &keys).await {
            return Ok(container);
        }
        let name = format!("{NAME_PREFIX}{}", spec.allocation_id);
        let body = self.create_body(spec)?;
        let options = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        let created = self.docker.create_container(Some(options), body).await.map_err(|e| match e {
            DockerError::DockerResponseServerError { status_code: 404, .. } => RuntimeError::Failed(format!(
                "the image {} is not in the local Docker daemon: build it with scripts/build-ssh-image.sh",
                self.image
            )),
            DockerError::DockerResponseServerError { status_code: 409, .. } => RuntimeError::Failed(format!(
                "a container named {name} already exists; remove it (or reconcile with list) before starting \
                 allocation {} again",
                spec.allocation_id
            )),
            other => self.map_err(other, &name),
        })?;
        let id = created.id;
        tracing::debug!(container = %id, allocation = %spec.allocation_id, "created container");
        match self.provision(&id, spec, password, &keys).await {
            Ok(()) => Ok(Container {
                id,
                allocation_id: spec.allocation_id.clone(),
                state: ContainerState::Running,
                user_ports: spec.user_ports.clone(),
            }),
            Err(e) => {
                if let Err(cleanup) = self.force_remove(&id).await {
                    tracing::warn!(container = %id, error = %cleanup, "could not remove a container that failed to start");
                }
                Err(e)
            }
        }
    }

    /// Uploads the secrets, starts the container and waits for sshd.
    async fn provision(&self, id: &str, spec: &ContainerSpec, password: &str, keys: &str) -> Result<(), RuntimeError> {
        self.provision_as(id, spec, password, keys, Launch::Start).await
    }

    /// [`Self::provision`] for a container that waits for its credentials (`warm`'s parked
    /// start): `go` is uploaded last, and a parked one is unpaused instead of started.
    async fn provision_as(
        &self,
        id: &str,
        spec: &ContainerSpec,
        password: &str,
        keys: &str,
        launch: Launch,
    ) -> Result<(), RuntimeError> {
        let mut tar = TarBuilder::new();
        tar.dir("run/nicompute", 0o700);
        tar.file(CHPASSWD_PATH.trim_start_matches('/'), 0o600, format!("root:{password}\n").as_bytes());
        tar.dir("root/.ssh", 0o700);
        tar.file("root/.ssh/authorized_keys", 0o600, keys.as_bytes());
        if let Some(key) = &spec.host_key {
            let private = key
                .to_openssh(russh::keys::ssh_key::LineEnding::LF)
                .map_err(|e| RuntimeError::Failed(format!("cannot encode the SSH host key: {e}")))?;
            let public = spec.host_public_key().unwrap_or_default();
            tar.dir("etc/ssh", 0o755);
            tar.file(HOST_KEY_PATH.trim_start_matches('/'), 0o600, private.as_bytes());
            tar.file(
                &format!("{}.pub", HOST_KEY_PATH.trim_start_matches('/')),
                0o644,
                format!("{public}\n").as_bytes(),
            );
        }
        if launch != Launch::Start {
            // The last entry, so the waiting entrypoint finds everything else in place.
            tar.file(warm::GO_PATH.trim_start_matches('/'), 0o600, b"");
        }
        self.upload(id, tar.finish()).await?;

        let started = match launch {
            Launch::Unpause => self.docker.unpause_container(id).await,
            Launch::Start | Launch::StartAwaiting => {
                self.docker.start_container(id, None::<StartContainerOptions>).await
            }
        };
        if let Err(e) = started {
            return Err(match e {
                DockerError::DockerResponseServerError { message, .. } if is_port_in_use(&message) => {
                    RuntimeError::PortInUse { port: spec.ssh_port }
                }
                DockerError::DockerResponseServerError { message, .. }
                    if message.contains("could not select device driver") =>
                {
                    RuntimeError::Failed(format!(
                        "GPUs were requested but Docker has no GPU device driver (install the NVIDIA Container \
                         Toolkit and restart dockerd): {message}"
                    ))
                }
                other => self.map_err(other, id),
            });
        }
        self.wait_for_ssh(id, spec.bind_ip, spec.ssh_port).await
    }

    async fn upload(&self, id: &str, tar: Vec<u8>) -> Result<(), RuntimeError> {
        let options = UploadToContainerOptions { path: "/".to_owned(), ..Default::default() };
        self.docker
            .upload_to_container(id, Some(options), bollard::body_full(Bytes::from(tar)))
            .await
            .map_err(|e| self.map_err(e, id))
    }

    /// Waits until `ip:port` answers with an SSH banner. Docker's port proxy accepts connections
    /// before sshd listens, so a bare TCP connect proves nothing: the banner does.
    async fn wait_for_ssh(&self, id: &str, ip: IpAddr, port: u16) -> Result<(), RuntimeError> {
        let addr = SocketAddr::new(reachable(ip), port);
        let started = Instant::now();
        let deadline = started + self.ssh_ready_timeout;
        let mut last_state_check = started;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match crate::ssh_banner::read_banner(addr, left.min(Duration::from_secs(3))).await {
                Ok(banner) => {
                    tracing::debug!(container = %id, %addr, banner = %banner, elapsed_ms = started.elapsed().as_millis(), "SSH ready");
                    return Ok(());
                }
                Err(reason) => {
                    if Instant::now() >= deadline {
                        return Err(RuntimeError::Failed(format!(
                            "the container's SSH server did not answer on {addr} within {:?} ({reason}); \
                             see `docker logs {id}`",
                            self.ssh_ready_timeout
                        )));
                    }
                }
            }
            // A container whose entrypoint failed will never answer: say so at once.
            if last_state_check.elapsed() >= Duration::from_millis(500) {
                last_state_check = Instant::now();
                let inspect = self
                    .docker
                    .inspect_container(id, None::<InspectContainerOptions>)
                    .await
                    .map_err(|e| self.map_err(e, id))?;
                if let Some(state) = inspect.state {
                    if matches!(state.status, Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)) {
                        return Err(RuntimeError::Failed(format!(
                            "the container exited with code {} before its SSH server answered{}",
                            state.exit_code.unwrap_or(-1),
                            state.error.filter(|e| !e.is_empty()).map(|e| format!(": {e}")).unwrap_or_default()
                        )));
                    }
                }
            }
            // sshd answers ~30 ms after a start once no host key is made at start (the warm
            // container): poll often enough not to add up to 100 ms to every allocation.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn force_remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            // Docker answers 409 "removal already in progress" when another remove races us.
            Err(DockerError::DockerResponseServerError { status_code: 409, message })
                if message.contains("already in progress") =>
            {
                Ok(())
            }
            Err(e) => Err(self.map_err(e, id)),
        }
    }

    async fn status(&self, id: &str) -> Result<Option<ContainerStateStatusEnum>, RuntimeError> {
        let inspect = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| self.map_err(e, id))?;
        Ok(inspect.state.and_then(|s| s.status))
    }

    async fn pause_inner(&self, id: &str) -> Result<(), RuntimeError> {
        match self.docker.pause_container(id).await {
            Ok(()) => Ok(()),
            Err(e @ DockerError::DockerResponseServerError { status_code: 404, .. }) => Err(self.map_err(e, id)),
            Err(e) if self.status(id).await? == Some(ContainerStateStatusEnum::PAUSED) => {
                tracing::debug!(container = %id, error = %e, "already paused");
                Ok(())
            }
            Err(e) => Err(self.map_err(e, id)),
        }
    }

    async fn unpause_inner(&self, id: &str) -> Result<(), RuntimeError> {
        match self.docker.unpause_container(id).await {
            Ok(()) => Ok(()),
            Err(e @ DockerError::DockerResponseServerError { status_code: 404, .. }) => Err(self.map_err(e, id)),
            Err(e) if self.status(id).await? == Some(ContainerStateStatusEnum::RUNNING) => {
                tracing::debug!(container = %id, error = %e, "not paused");
                Ok(())
            }
            Err(e) => Err(self.map_err(e, id)),
        }
    }

    async fn restart_inner(&self, id: &str) -> Result<(), RuntimeError> {
        let inspect = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| self.map_err(e, id))?;
        // Docker cannot stop a paused container.
        if inspect.state.as_ref().and_then(|s| s.status) == Some(ContainerStateStatusEnum::PAUSED) {
            self.unpause_inner(id).await?;
        }
        let ssh = inspect
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(SSH_PORT_LABEL).cloned())
            .unwrap_or_else(|| "22/tcp".to_owned());
        let binding = inspect
            .host_config
            .and_then(|h| h.port_bindings)
            .and_then(|mut p| p.remove(&ssh).flatten())
            .and_then(|b| b.into_iter().next())
            .ok_or_else(|| RuntimeError::Failed(format!("container {id} publishes no SSH port")))?;
        let port = binding.host_port.as_deref().and_then(|p| p.parse::<u16>().ok());
        let Some(port) = port else {
            return Err(RuntimeError::Failed(format!("container {id} publishes SSH on no fixed host port")));
        };
        let ip = match binding.host_ip.as_deref() {
            None | Some("") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(ip) => ip.parse().map_err(|_| RuntimeError::Failed(format!("container {id} binds SSH on {ip}")))?,
        };
        let options = RestartContainerOptions { t: Some(STOP_GRACE_SECS), ..Default::default() };
        self.docker.restart_container(id, Some(options)).await.map_err(|e| self.map_err(e, id))?;
        self.wait_for_ssh(id, ip, port).await
    }

    async fn set_authorized_keys_inner(&self, id: &str, keys: &[String]) -> Result<(), RuntimeError> {
        let file = authorized_keys_file(keys)?;
        // The directory entry resets /root/.ssh to root:root 0700 and the file entry writes the
        // keys as root:root 0600, so sshd's StrictModes accepts them whatever the renter did.
        let mut tar = TarBuilder::new();
        tar.dir("root/.ssh", 0o700);
        tar.file("root/.ssh/authorized_keys", 0o600, file.as_bytes());
        self.upload(id, tar.finish()).await
    }

    async fn list_inner(&self) -> Result<Vec<Container>, RuntimeError> {
        let mut wanted = vec![format!("{OWNER_LABEL}=1")];
        if let Some(scope) = &self.scope {
            wanted.push(format!("{SCOPE_LABEL}={scope}"));
        }
        let filters = HashMap::from([("label".to_owned(), wanted)]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let summaries = self.docker.list_containers(Some(options)).await.map_err(|e| unavailable(&self.socket, &e))?;
        Ok(summaries
            .into_iter()
            .filter_map(|s| {
                let id = s.id?;
                let mut labels = s.labels.unwrap_or_default();
                // A warm container keeps its labels when an allocation takes it; its name says whose.
                let allocation_id = if labels.contains_key(WARM_LABEL) {
                    let name = s.names.unwrap_or_default().into_iter().next().unwrap_or_default();
                    name.trim_start_matches('/').strip_prefix(NAME_PREFIX).unwrap_or_default().to_owned()
                } else {
                    labels.remove(ALLOCATION_LABEL).unwrap_or_default()
                };
                let state = match s.state {
                    Some(ContainerSummaryStateEnum::RUNNING) => ContainerState::Running,
                    Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
                    // created, restarting (crash loop), exited, removing, dead: not serving.
                    _ => ContainerState::Stopped,
                };
                Some(Container { id, allocation_id, state, user_ports: Vec::new() })
            })
            .collect())
    }
}

impl ContainerRuntime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    /// Creates `nicompute-<allocation id>` (or takes the warm container when it fits the spec
    /// and renames it so), uploads the password and keys, starts it and waits for its SSH
    /// banner. On any failure the container is removed again.
    fn start<'a>(&'a self, spec: &'a ContainerSpec) -> BoxFuture<'a, Result<Container, RuntimeError>> {
        Box::pin(self.start_inner(spec))
    }

    /// Force-removes the container and its anonymous volumes; a missing one is fine.
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.force_remove(id))
    }

    fn pause<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.pause_inner(id))
    }

    fn unpause<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.unpause_inner(id))
    }

    /// Restarts it (unpausing first) and waits for its SSH banner again.
    fn restart<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.restart_inner(id))
    }

    fn set_authorized_keys<'a>(&'a self, id: &'a str, keys: &'a [String]) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.set_authorized_keys_inner(id, keys))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Container>, RuntimeError>> {
        Box::pin(self.list_inner())
    }

    /// Creates the warm container (`nicompute-warm-…`, not started) from the image's current id.
    fn discard_warm(&self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(self.discard_warm_inner())
    }

    fn prepare_warm<'a>(&'a self, template: &'a ContainerSpec) -> BoxFuture<'a, Result<bool, RuntimeError>> {
        Box::pin(self.prepare_warm_inner(template))
    }
}

/// Docker's CPU and memory limits for `spec`: (NanoCpus, Memory).
fn limits(spec: &ContainerSpec) -> Result<(Option<i64>, Option<i64>), RuntimeError> {
    let nano_cpus = spec.cpu_count.map(|n| i64::from(n) * 1_000_000_000);
    let memory = spec
        .memory_bytes
        .map(i64::try_from)
        .transpose()
        .map_err(|_| RuntimeError::Failed("the memory limit does not fit Docker's signed 64-bit field".into()))?;
    Ok((nano_cpus, memory))
}

fn unavailable(socket: &std::path::Path, e: &DockerError) -> RuntimeError {
    RuntimeError::Unavailable(format!(
        "Docker at {} does not answer ({e}); is dockerd running? (scripts/docker-up.sh starts one)",
        socket.display()
    ))
}

/// The socket a `DOCKER_HOST` value names (`unix:///path`; empty: [`DEFAULT_SOCKET`]). Other
/// schemes are refused: the docker runtime only talks to a local daemon.
pub fn socket_for_docker_host(docker_host: Option<&str>) -> Result<PathBuf, RuntimeError> {
    match docker_host.filter(|h| !h.is_empty()) {
        None => Ok(PathBuf::from(DEFAULT_SOCKET)),
        Some(host) => match host.strip_prefix("unix://") {
            Some(path) => Ok(PathBuf::from(path)),
            None => Err(RuntimeError::Unavailable(format!(
                "DOCKER_HOST={host} is not a unix:// socket; the docker runtime only talks to a local daemon"
            ))),
        },
    }
}

fn parse_restart_policy(name: &str) -> Result<RestartPolicyNameEnum, RuntimeError> {
    match name {
        "no" => Ok(RestartPolicyNameEnum::NO),
        "always" => Ok(RestartPolicyNameEnum::ALWAYS),
        "unless-stopped" => Ok(RestartPolicyNameEnum::UNLESS_STOPPED),
        "on-failure" => Ok(RestartPolicyNameEnum::ON_FAILURE),
        other => Err(RuntimeError::Failed(format!(
            "unknown restart policy {other:?}: use no, always, unless-stopped or on-failure"
        ))),
    }
}

/// Allocation ids become container names, which Docker limits to `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn validate_allocation_id(id: &str) -> Result<(), RuntimeError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && id.len() <= 200 {
        Ok(())
    } else {
        Err(RuntimeError::Failed(format!(
            "allocation id {id:?} cannot name a container: use letters, digits, '_', '.' and '-'"
        )))
    }
}

/// One key per line; a key spanning lines would smuggle in options or other keys.
fn authorized_keys_file(keys: &[String]) -> Result<String, RuntimeError> {
    let mut file = String::new();
    for key in keys {
        let key = key.trim();
        if key.is_empty() {
            continue;
        }
        if key.contains(['\n', '\r', '\0']) {
            return Err(RuntimeError::Failed("an authorized key must be a single line".into()));
        }
        file.push_str(key);
        file.push('\n');
    }
    Ok(file)
}

fn is_port_in_use(message: &str) -> bool {
    message.contains("port is already allocated") || message.contains("address already in use")
}

/// The address to probe for a port published on `ip`: loopback for the wildcard addresses.
fn reachable(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ids_are_checked() {
        assert_eq!(authorized_keys_file(&["a b".into(), " ".into(), "c d\n".into()]).unwrap(), "a b\nc d\n");
        assert!(authorized_keys_file(&["a\nb".into()]).is_err());
        assert!(validate_allocation_id("alloc-1.x_y").is_ok());
        assert!(validate_allocation_id("-x").is_err());
        assert!(validate_allocation_id("a/b").is_err());
        assert!(validate_allocation_id("").is_err());
    }

    #[test]
    fn docker_host_and_policies() {
        assert_eq!(socket_for_docker_host(None).unwrap(), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(socket_for_docker_host(Some("unix:///tmp/d.sock")).unwrap(), PathBuf::from("/tmp/d.sock"));
        assert!(matches!(socket_for_docker_host(Some("tcp://1.2.3.4:2375")), Err(RuntimeError::Unavailable(_))));
        assert!(parse_restart_policy("unless-stopped").is_ok());
        assert!(parse_restart_policy("sometimes").is_err());
        assert!(is_port_in_use("driver failed programming external connectivity: Bind for 127.0.0.1:2222 failed: port is already allocated"));
        assert_eq!(reachable("0.0.0.0".parse().unwrap()), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
}
