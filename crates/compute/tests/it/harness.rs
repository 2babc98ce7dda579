//! What the compute tests share, written once (the CLI tests include this file too, as
//! `common`): fixture keys, in-process miners, the gates for tools a test needs
//! (skipped with a reason here, a failure in CI), ports, SSH keys and logins, and the one builder
//! of child processes, which clears every `NICOMPUTE_*`, `BT_*` and `WANDB_*` variable and gives
//! the child a home of its own, so no test reads the developer's environment or `~/.ssh`.
//!
//! Ports: a server in this process binds port 0 and reports its address; a component that must
//! be told its port up front (a miner's SSH port, which SN27's answers carry) gets a listener
//! reserved by the runtime; only a port that another process (Docker) binds itself is a
//! [`PortLease`].

// Helpers fail loudly (that is their job) and say on stderr why something is skipped.
#![allow(clippy::print_stderr, clippy::unwrap_used)]

use std::ffi::OsString;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use bittensor::Keypair;
use serde_json::Value;

/// A simulated 80 GB H100 and a 24 GB RTX 4090, as `--simulate-gpu` takes them.
pub const H100: &str = "NVIDIA H100 80GB HBM3:81559:1";
pub const RTX4090: &str = "NVIDIA GeForce RTX 4090:24564:1";
/// The timeout of one synapse request in these tests.
pub const T: Duration = Duration::from_secs(30);

/// The repository's root (fixtures live under `tests/fixtures`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The mnemonic of a hotkey of the recorded SDK fixtures (`dendrite_hotkey`, `axon_hotkey`,
/// `denied_hotkey`).
pub fn fixture_mnemonic(name: &str) -> String {
    static KEYS: OnceLock<Value> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/http/keys.json")).unwrap()).unwrap()
    });
    keys[name]["mnemonic"].as_str().unwrap().to_owned()
}

/// That fixture hotkey.
pub fn fixture_key(name: &str) -> Keypair {
    Keypair::from_mnemonic(&fixture_mnemonic(name)).unwrap()
}

/// A throw-away hotkey, the same for the same `n`.
pub fn seed_key(n: u8) -> Keypair {
    Keypair::from_seed(&[n; 32]).unwrap()
}

/// Simulated specs of one GPU (`H100`, `RTX4090`), detected like a devnet miner's.
pub async fn simulated_specs(gpu: &str) -> compute::specs::Specs {
    let sim: compute::specs::SimulatedGpu = gpu.parse().unwrap();
    compute::specs::detect(&compute::specs::DetectOptions { simulate_gpu: Some(sim), ..Default::default() }).await
}

/// A miner in this process on `runtime` (the local runtime): its axon on a port of its own,
/// its SSH port reserved by the runtime (SN27's answers carry it), callers admitted by `stakes`
/// (1024 TAO needed). The miner and its SSH port.
pub async fn local_miner(
    keypair: Keypair,
    specs: compute::specs::Specs,
    stakes: std::collections::HashMap<String, f32>,
    runtime: std::sync::Arc<compute::runtime::local::LocalRuntime>,
    state_dir: PathBuf,
) -> (compute::miner::MinerHandle, u16) {
    use compute::miner::{self, policy::PolicyConfig, MetagraphSource, MinerConfig};
    let ssh_port = runtime.reserve(Ipv4Addr::LOCALHOST.into(), 0).await.unwrap();
    let cfg = MinerConfig {
        keypair,
        netuid: 27,
        axon: bittensor::axon::AxonConfig { bind: "127.0.0.1:0".parse().unwrap(), ..Default::default() },
        ssh_port,
        ssh_bind_ip: Ipv4Addr::LOCALHOST.into(),
        runtime,
        state_dir,
        specs,
        policy: PolicyConfig { min_stake_tao: 1024.0, ..PolicyConfig::default() },
        metagraph: MetagraphSource::Static(stakes),
        offer: miner::offer::Offer::default(),
        warm_containers: true,
    };
    (miner::spawn(cfg).await.unwrap(), ssh_port)
}

/// A miner in this process on `runtime` (Docker's, usually), as `axon_hotkey` with an H100, its
/// SSH port leased for as long as the test holds the lease (Docker publishes it itself); the
/// `dendrite_hotkey` fixture is its staked caller. `warm`: keep a warm container; `offer`: what
/// renters may ask beyond SN27's defaults.
pub async fn docker_miner(
    state_dir: PathBuf,
    runtime: std::sync::Arc<dyn compute::runtime::ContainerRuntime>,
    ssh: &PortLease,
    warm: bool,
    offer: compute::miner::offer::Offer,
) -> compute::miner::MinerHandle {
    use compute::miner::{self, policy::PolicyConfig, MetagraphSource, MinerConfig};
    let stakes = [(fixture_key("dendrite_hotkey").ss58(), 5000.0)].into_iter().collect();
    let cfg = MinerConfig {
        keypair: fixture_key("axon_hotkey"),
        netuid: 27,
        axon: bittensor::axon::AxonConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..Default::default() },
        ssh_port: ssh.port(),
        ssh_bind_ip: Ipv4Addr::LOCALHOST.into(),
        runtime,
        state_dir,
        specs: simulated_specs("NVIDIA H100 80GB HBM3:81559:1").await,
        policy: PolicyConfig { min_stake_tao: 1024.0, ..PolicyConfig::default() },
        metagraph: MetagraphSource::Static(stakes),
        offer,
        warm_containers: warm,
    };
    miner::spawn(cfg).await.expect("miner")
}

/// An allocation request for [`docker_miner`]'s H100 (one GPU, one CPU, 1 GiB of RAM and disk)
/// under `key`.
pub fn allocate_with(key: &compute::crypto::AllocationKey) -> compute::protocol::Allocate {
    let req = serde_json::json!({"cpu": {"count": 1}, "gpu": {"count": 1, "capacity": 81920, "type": "h100"},
                     "hard_disk": {"capacity": 1_073_741_824u64}, "ram": {"capacity": 1_073_741_824u64}});
    compute::protocol::Allocate {
        timeline: 1,
        checking: false,
        public_key: key.public_pem().expect("pem"),
        device_requirement: req.as_object().cloned().unwrap_or_default(),
        ..compute::protocol::Allocate::default()
    }
}

// ---- gates ----

/// Whether `var=1` makes a missing tool a failure here (CI sets it).
fn required(var: &str) -> bool {
    match var {
        "CI" => std::env::var_os("CI").is_some(),
        _ => std::env::var(var).is_ok_and(|v| v == "1"),
    }
}

/// Says why a test does not run here, or fails when `var` says it must run.
pub fn skip(var: &str, why: &str) {
    assert!(!required(var), "{var} is set, but {why}");
    eprintln!("skipped: {why}");
}

pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// `ssh` and `ssh-keygen` are there (and `sshpass` when `password` is set); otherwise says so.
/// In CI they are required (scripts/docker-up.sh installs them).
pub fn ssh_tools(password: bool) -> bool {
    let missing: Vec<&str> =
        ["ssh", "ssh-keygen", "sshpass"].into_iter().filter(|t| (password || *t != "sshpass") && !on_path(t)).collect();
    if missing.is_empty() {
        return true;
    }
    skip("CI", &format!("no ssh client ({} missing)", missing.join(", ")));
    false
}

// ---- child processes ----

/// A home directory of the tests' own (under the build's scratch directory, shared by the
/// tests, never the developer's): OpenSSH reads no `~/.ssh/config` there.
pub fn home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compute-home");
        std::fs::create_dir_all(&home).unwrap();
        home
    })
}

/// `program` with the settings of nicompute, the SDK and wandb cleared, HOME set to [`home`]
/// and stdin closed: the one way these tests start a process.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if is_setting(&key) {
            c.env_remove(key);
        }
    }
    c.env("HOME", home()).stdin(Stdio::null());
    c
}

/// A variable of nicompute, the Bittensor SDK or wandb (or the netrc wandb reads).
pub fn is_setting(key: &OsString) -> bool {
    let k = key.to_string_lossy();
    ["NICOMPUTE_", "BT_", "WANDB_"].iter().any(|p| k.starts_with(p)) || k == "NETRC"
}

/// Runs `cmd` to the end (at most 60 s) with `stdin`, capturing its output.
pub async fn run(cmd: Command, stdin: Option<&[u8]>) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data).await.unwrap();
        drop(pipe);
    }
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command finished within 60 s")
        .unwrap()
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Status, stdout and stderr, for assertion messages.
pub fn describe(o: &std::process::Output) -> String {
    format!("status {:?}, stdout {:?}, stderr {:?}", o.status.code(), stdout(o), String::from_utf8_lossy(&o.stderr))
}

// ---- SSH ----

/// A passphrase-less key pair made by ssh-keygen.
#[derive(Debug, Clone)]
pub struct SshKey {
    pub private: PathBuf,
    /// The OpenSSH public key line.
    pub public: String,
}

/// A new ed25519 key pair `dir/name`.
pub fn keygen(dir: &Path, name: &str) -> SshKey {
    keygen_typed(dir, name, "ed25519")
}

/// A new key pair of type `kind` (`ed25519`, `rsa`, `ecdsa`).
pub fn keygen_typed(dir: &Path, name: &str, kind: &str) -> SshKey {
    let private = dir.join(name);
    let out =
        command("ssh-keygen").args(["-q", "-t", kind, "-N", "", "-C", name, "-f"]).arg(&private).output().unwrap();
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
    let public = std::fs::read_to_string(private.with_extension("pub")).unwrap().trim().to_owned();
    SshKey { private, public }
}

/// How a renter logs in.
#[derive(Debug, Clone, Copy)]
pub enum Login<'a> {
    /// The password, handed to `sshpass` in its environment (never in argv).
    Password(&'a str),
    /// The password in a 0600 file read by `sshpass` (in no argv or environment).
    PasswordFile(&'a Path),
    /// Only this key.
    Key(&'a Path),
}

/// `ssh [args…] root@127.0.0.1 -p port` as a renter runs it, trusting any host key and
/// remembering none; a remote command goes after it (`.arg(…)`).
pub fn ssh(port: u16, login: Login<'_>, args: &[&str]) -> Command {
    ssh_as("root", port, login, args)
}

/// [`ssh`] as another user.
pub fn ssh_as(user: &str, port: u16, login: Login<'_>, args: &[&str]) -> Command {
    let mut c = match login {
        Login::Password(p) => {
            let mut c = command("sshpass");
            c.args(["-e", "ssh"]).env("SSHPASS", p);
            c
        }
        Login::PasswordFile(f) => {
            let mut c = command("sshpass");
            c.arg("-f").arg(f).arg("ssh");
            c
        }
        Login::Key(_) => command("ssh"),
    };
    c.args(["-p", &port.to_string(), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]).args([
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "ServerAliveInterval=5",
    ]);
    match login {
        Login::Password(_) | Login::PasswordFile(_) => c
            .args(["-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no"])
            .args(["-o", "NumberOfPasswordPrompts=1"]),
        Login::Key(k) => c.arg("-i").arg(k).args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "PreferredAuthentications=publickey",
        ]),
    };
    c.args(args).arg(format!("{user}@127.0.0.1"));
    c
}

/// Runs `command` over [`ssh`]: Ok(stdout) or Err(status and stderr).
pub fn ssh_run(port: u16, login: Login<'_>, command: &str) -> Result<String, String> {
    let out = ssh(port, login, &[]).arg(command).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(stdout(&out))
    } else {
        Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

// ---- ports ----

/// A local port that refuses connections and that nothing else can take while this lives: a
/// socket bound to it without listening.
#[derive(Debug)]
pub struct ClosedPort(tokio::net::TcpSocket);

impl ClosedPort {
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        Self(socket)
    }

    pub fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }
}

/// A port for a process that binds it itself and cannot be handed a listener (the Docker daemon
/// publishing a container's SSH port): below the kernel's ephemeral range, which every port-0
/// bind draws from, and locked (flock) against the other tests for as long as this lives.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    _lock: File,
}

impl PortLease {
    pub fn new() -> Self {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
        let ephemeral_low: u16 = range.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(32768);
        let dir = std::env::temp_dir().join("nicompute-test-ports");
        std::fs::create_dir_all(&dir).unwrap();
        let (low, high) = (ephemeral_low.saturating_sub(12_000).max(1024), ephemeral_low.saturating_sub(2_000));
        let start = low + (std::process::id() % u32::from(high - low)) as u16;
        for port in (start..high).chain(low..start) {
            let lock =
                File::options().create(true).truncate(false).write(true).open(dir.join(port.to_string())).unwrap();
            let held = rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok();
            if held && std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Self { port, _lock: lock };
            }
        }
        panic!("no free port between {low} and {high}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Whether nothing listens on 127.0.0.1:`port` (binds it and lets it go at once).
pub fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

// ---- Docker ----

/// A runtime for `cfg` on a daemon that has the default `nicompute/sshd` image, with `tools` on
/// PATH; or None after saying why there is none (a failure under NICOMPUTE_REQUIRE_DOCKER=1).
pub async fn docker_runtime(
    cfg: compute::runtime::docker::DockerConfig,
    tools: &[&str],
) -> Option<compute::runtime::docker::DockerRuntime> {
    use compute::runtime::docker::{DockerRuntime, DEFAULT_IMAGE};
    const GATE: &str = "NICOMPUTE_REQUIRE_DOCKER";
    let own_image = cfg.image == DEFAULT_IMAGE;
    let rt = match DockerRuntime::connect(cfg).await {
        Ok(rt) => rt,
        Err(e) => {
            skip(GATE, &format!("no Docker daemon ({e})"));
            return None;
        }
    };
    let image = match own_image {
        true => rt.ensure_image().await,
        false => match DockerRuntime::connect(docker_config()).await {
            Ok(default) => default.ensure_image().await,
            Err(e) => Err(e),
        },
    };
    if let Err(e) = image {
        skip(GATE, &format!("no sshd image ({e})"));
        return None;
    }
    if let Some(tool) = tools.iter().find(|t| !on_path(t)) {
        skip(GATE, &format!("no {tool} binary (scripts/docker-up.sh installs it)"));
        return None;
    }
    Some(rt)
}

/// How to reach the Docker daemon these tests use: `DOCKER_HOST` (a unix socket) or the default.
pub fn docker_config() -> compute::runtime::docker::DockerConfig {
    let host = std::env::var("DOCKER_HOST").ok();
    let socket = compute::runtime::docker::socket_for_docker_host(host.as_deref()).unwrap();
    compute::runtime::docker::DockerConfig { socket: Some(socket), ..Default::default() }
}
