//! `nicompute miner run` as a provider runs it, against the devnet chain: allocate through the
//! axon, log in over SSH with the password and the injected key, deallocate; `kill -9` at
//! several points of an allocation and after it, then a restart leaves no orphan container and
//! no dangling state; the `local` runtime is refused off a devnet.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bittensor::dendrite::AxonTarget;
use bittensor::dendrite::Dendrite;
use compute::crypto::AllocationKey;
use compute::protocol::Allocate;
use compute::runtime::docker::{DockerConfig, DockerRuntime};
use compute::runtime::{ContainerRuntime, ContainerState};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::docker_proxy::{DockerProxy, Hold};
use crate::harness::{nicompute, MinerProc};
use crate::renter_world::{docker, MinerSlot, World, H100};

/// A devnet with one miner hotkey; the renter's staked hotkey is the validator calling it.
struct Net {
    w: World,
    m: MinerSlot,
}

async fn world() -> Net {
    let mut w = World::new().await;
    let m = w.add_miner().await;
    Net { w, m }
}

impl Net {
    /// `nicompute miner run` with a simulated H100, talking to Docker through `docker_host`
    /// when given.
    /// A miner without a warm container: the crash points below are those of a container created
    /// per allocation (the warm container's are in compute's `docker_warm` tests).
    async fn spawn_miner(&self, runtime: &str, docker_host: Option<&str>) -> MinerProc {
        let mut env: Vec<(&str, &str)> = docker_host.map(|h| ("DOCKER_HOST", h)).into_iter().collect();
        env.push(("NICOMPUTE_WARM_CONTAINERS", "0"));
        self.w.spawn_miner_with(&self.m, runtime, H100, &env).await
    }

    fn target(&self, p: &MinerProc) -> AxonTarget {
        AxonTarget::new("127.0.0.1", p.axon_port, &self.m.key.account_id())
    }

    async fn wait_ready(&self, p: &MinerProc) {
        self.w.wait_ready(&self.m, p).await;
    }

    /// The Docker runtime seeing only this miner's containers.
    async fn docker(&self) -> DockerRuntime {
        let config = DockerConfig { scope: Some(self.m.key.ss58()), ..crate::common::docker_config() };
        DockerRuntime::connect(config).await.expect("docker")
    }
}

const T: Duration = Duration::from_secs(60);

fn alloc(key: &AllocationKey, ssh_key: &str) -> Allocate {
    let req = json!({"cpu": {"count": 1}, "gpu": {"count": 1, "capacity": 81920, "type": "h100"},
                     "hard_disk": {"capacity": 1_073_741_824u64}, "ram": {"capacity": 1_073_741_824u64}});
    let mut a = Allocate {
        timeline: 1,
        checking: false,
        public_key: key.public_pem().expect("pem"),
        device_requirement: req.as_object().cloned().unwrap_or_default(),
        ..Allocate::default()
    };
    a.docker_requirement.insert("ssh_key".into(), json!(ssh_key));
    a
}

fn status(a: &Allocate) -> bool {
    a.output.get("status").and_then(Value::as_bool).unwrap_or(false)
}

fn held(key: &AllocationKey) -> Allocate {
    Allocate { timeline: 0, checking: true, public_key: key.public_pem().expect("pem"), ..Allocate::default() }
}

fn dealloc(key: &AllocationKey) -> Allocate {
    Allocate { timeline: 0, checking: false, public_key: key.public_pem().expect("pem"), ..Allocate::default() }
}

fn ssh(port: u16, password: Option<&str>, key: Option<&Path>, cmd: &str) -> std::process::Output {
    use crate::common::Login;
    let login = match (password, key) {
        (Some(p), _) => Login::Password(p),
        (None, Some(k)) => Login::Key(k),
        (None, None) => panic!("a password or a key"),
    };
    crate::common::ssh(port, login, &[]).arg(cmd).output().expect("ssh")
}

fn keygen(dir: &Path) -> (PathBuf, String) {
    let k = crate::common::keygen(dir, "id_ed25519");
    (k.private, k.public)
}

async fn ours(docker: &DockerRuntime) -> Vec<ContainerState> {
    docker.list().await.expect("docker list").into_iter().map(|c| c.state).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_miner_allocates_logs_in_survives_kill_9_and_cleans_up() {
    let Some(real) = docker().await else { return };
    let w = world().await;
    let docker = w.docker().await;
    // The miner talks to Docker through a proxy that can hold it at a chosen request.
    let proxy = DockerProxy::start(crate::common::docker_config().socket.expect("socket"));
    drop(real);
    let d = Dendrite::new(w.w.renter.clone());
    let mut miner = w.spawn_miner("docker", Some(&proxy.docker_host())).await;
    w.wait_ready(&miner).await;
    let ssh_port = miner.ssh_port;

    // Allocate, log in with the password and with the key, run a command, deallocate.
    let keydir = tempfile::tempdir().expect("tmp");
    let (user_key, user_pub) = keygen(keydir.path());
    let key = AllocationKey::generate().expect("rsa");
    let r = d.call(&w.target(&miner), alloc(&key, &user_pub), T).await;
    assert!(status(&r.synapse), "{:?} {:?}", r.status_message(), r.synapse.output);
    let creds = key.decrypt_credentials(r.synapse.output["info"].as_str().expect("info")).expect("decrypt");
    let out = ssh(ssh_port, Some(creds.password.expose_secret()), None, "uname -a");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Linux"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = ssh(ssh_port, None, Some(&user_key), "echo key-login");
    assert!(String::from_utf8_lossy(&out.stdout).contains("key-login"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ours(&docker).await, [ContainerState::Running]);
    assert!(status(&d.call(&w.target(&miner), dealloc(&key), T).await.synapse));
    assert_eq!(ours(&docker).await, [], "the container is gone");

    // kill -9 after an allocation: the allocation survives the restart, then ends cleanly.
    let key = AllocationKey::generate().expect("rsa");
    let r = d.call(&w.target(&miner), alloc(&key, ""), T).await;
    assert!(status(&r.synapse));
    let creds = key.decrypt_credentials(r.synapse.output["info"].as_str().expect("info")).expect("decrypt");
    miner.kill();
    miner = w.spawn_miner("docker", Some(&proxy.docker_host())).await;
    w.wait_ready(&miner).await;
    assert_eq!(ours(&docker).await, [ContainerState::Running], "the allocation's container is kept");
    assert!(status(&d.call(&w.target(&miner), held(&key), T).await.synapse), "still allocated to us");
    assert!(ssh(ssh_port, Some(creds.password.expose_secret()), None, "true").status.success());
    assert!(status(&d.call(&w.target(&miner), dealloc(&key), T).await.synapse));
    assert_eq!(ours(&docker).await, []);

    // kill -9 at each point of an allocation before the miner answers, each reached by
    // construction (the proxy holds the miner there): after the restart nothing is left of the
    // half-made allocation and the miner is free.
    for (point, before) in [
        (Hold::Create, vec![]),
        (Hold::Start, vec![ContainerState::Stopped]),
        (Hold::Started, vec![ContainerState::Running]),
    ] {
        let reached = proxy.hold(point);
        let key = AllocationKey::generate().expect("rsa");
        let (d2, t2, a2) = (d.clone(), w.target(&miner), alloc(&key, ""));
        let request = tokio::spawn(async move { d2.call(&t2, a2, Duration::from_secs(60)).await });
        tokio::time::timeout(T, reached).await.expect("the miner reached the held request").expect("reached");
        assert_eq!(ours(&docker).await, before, "{point:?}: what exists when the miner is killed");
        miner.kill();
        assert!(!status(&request.await.expect("join").synapse), "{point:?}: no answer from a killed miner");
        proxy.release();
        miner = w.spawn_miner("docker", Some(&proxy.docker_host())).await;
        w.wait_ready(&miner).await;
        assert_eq!(ours(&docker).await, [], "{point:?}: the half-made allocation is removed at the restart");
        let free = Allocate { timeline: 1, checking: true, ..alloc(&key, "") };
        let r = d.call(&w.target(&miner), free, T).await;
        assert!(status(&r.synapse), "{point:?}: the miner is free again: {:?}", r.synapse.output);
    }

    // SIGTERM stops the daemon cleanly.
    miner.stop();
    assert_eq!(ours(&docker).await, []);
    w.w.chain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_runtime_only_on_a_devnet() {
    let w = world().await;
    // On the devnet: serves, and a renter logs in and runs a command.
    let miner = w.spawn_miner("local", None).await;
    w.wait_ready(&miner).await;
    let d = Dendrite::new(w.w.renter.clone());
    let key = AllocationKey::generate().expect("rsa");
    let r = d.call(&w.target(&miner), alloc(&key, ""), T).await;
    assert!(status(&r.synapse), "{:?}", r.synapse.output);
    let creds = key.decrypt_credentials(r.synapse.output["info"].as_str().expect("info")).expect("decrypt");
    assert_eq!(creds.port, miner.ssh_port, "the port the miner bound for --ssh.port 0");
    if crate::common::ssh_tools(true) {
        let out = ssh(miner.ssh_port, Some(creds.password.expose_secret()), None, "echo local-exec");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("local-exec"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(status(&d.call(&w.target(&miner), dealloc(&key), T).await.synapse));
    miner.stop();

    // Against a chain that is not a devnet (recorded finney traffic): refused up front.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/metagraph/01_sn1_block6852690_spec343/rpc_transcript.json");
    let entries: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).expect("transcript")).expect("json");
    let replay = bittensor::subtensor::server::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        bittensor::subtensor::server::replay(&entries),
    )
    .await
    .expect("replay");
    let out = nicompute(w.w.home.path())
        .args(["miner", "run", "--runtime", "local", "--subtensor.chain_endpoint", &replay.ws_url()])
        .arg("--wallet.path")
        .arg(w.w.wallets.path())
        .args(["--wallet.name", &w.m.wallet, "--axon.ip", "127.0.0.1", "--axon.port", "0"])
        .arg("--state-dir")
        .arg(w.m.state.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("isolates nothing"));
    w.w.chain.shutdown().await;
}
