//! `nicompute miner run` as a provider runs it, against the devnet chain: allocate through the
//! axon, log in over SSH with the password and the injected key, deallocate; `kill -9` at
//! several points of an allocation and after it, then a restart leaves no orphan container and
//! no dangling state; the `local` runtime is refused off a devnet.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bittensor::dendrite::{AxonTarget, Dendrite};
use bittensor::devnet::{self, ops, DevnetConfig};
use bittensor::subtensor::Subtensor;
use bittensor::wallet::Wallet;
use bittensor::Keypair;
use compute::crypto::AllocationKey;
use compute::protocol::{Allocate, Specs};
use compute::runtime::docker::DockerRuntime;
use compute::runtime::ContainerRuntime;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::renter_world::docker;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A devnet with a registered miner hotkey (in a wallet on disk) and a staked validator.
struct World {
    chain: devnet::DevnetHandle,
    wallet_dir: tempfile::TempDir,
    state_dir: tempfile::TempDir,
    validator: Keypair,
    miner_hotkey: Keypair,
    axon_port: u16,
    ssh_port: u16,
}

async fn world() -> World {
    let chain_dir = tempfile::tempdir().expect("tmp");
    let chain = devnet::spawn(DevnetConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        block_time: Duration::from_secs(1),
        ..DevnetConfig::new(chain_dir.keep())
    })
    .await
    .expect("devnet");
    let client = Subtensor::new(&chain.ws_url()).expect("client");
    let cold = Keypair::generate(12).expect("k").account_id();
    let (miner_hotkey, validator) = (Keypair::generate(12).expect("k"), Keypair::generate(12).expect("k"));
    ops::register(&client, &miner_hotkey, &cold, 27).await.expect("register miner");
    ops::register(&client, &validator, &cold, 27).await.expect("register validator");
    ops::set_stake(&client, &validator, 27, 5_000_000_000_000, 0).await.expect("stake");
    let wallet_dir = tempfile::tempdir().expect("tmp");
    Wallet::new(wallet_dir.path(), "miner", "default").write_hotkey(&miner_hotkey).expect("wallet");
    World {
        chain,
        wallet_dir,
        state_dir: tempfile::tempdir().expect("tmp"),
        validator,
        miner_hotkey,
        axon_port: free_port(),
        ssh_port: free_port(),
    }
}

impl World {
    fn spawn_miner(&self, runtime: &str) -> Child {
        Command::new(env!("CARGO_BIN_EXE_nicompute"))
            .args(["miner", "run", "--runtime", runtime, "--netuid", "27", "--min-stake", "0"])
            .args(["--subtensor.chain_endpoint", &self.chain.ws_url()])
            .arg("--wallet.path")
            .arg(self.wallet_dir.path())
            .args(["--wallet.name", "miner", "--wallet.hotkey", "default"])
            .args(["--axon.ip", "127.0.0.1", "--axon.port", &self.axon_port.to_string()])
            .args(["--ssh.port", &self.ssh_port.to_string(), "--ssh.bind_ip", "127.0.0.1"])
            .arg("--state-dir")
            .arg(self.state_dir.path())
            .args(["--simulate-gpu", "NVIDIA H100 80GB HBM3:81559:1", "--metagraph-refresh", "1s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn miner")
    }

    fn target(&self) -> AxonTarget {
        AxonTarget::new("127.0.0.1", self.axon_port, &self.miner_hotkey.account_id())
    }

    async fn wait_ready(&self) {
        let d = Dendrite::new(self.validator.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if d.call(&self.target(), Specs::default(), Duration::from_secs(2)).await.is_success() {
                return;
            }
            assert!(Instant::now() < deadline, "the miner did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
    let mut c = match password {
        Some(_) => {
            let mut c = Command::new("sshpass");
            c.args(["-e", "ssh", "-o", "PubkeyAuthentication=no"]);
            c
        }
        None => {
            let mut c = Command::new("ssh");
            c.args(["-o", "BatchMode=yes"]);
            c
        }
    };
    if let Some(k) = key {
        c.arg("-i").arg(k);
    }
    c.args(["-p", &port.to_string(), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "ConnectTimeout=10", "root@127.0.0.1", cmd])
        .env("SSHPASS", password.unwrap_or(""))
        .stdin(Stdio::null())
        .output()
        .expect("ssh")
}

fn keygen(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    (path.clone(), std::fs::read_to_string(path.with_extension("pub")).expect("pub").trim().to_owned())
}

async fn ours(docker: &DockerRuntime) -> usize {
    docker.list().await.expect("docker list").len()
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_miner_allocates_logs_in_survives_kill_9_and_cleans_up() {
    let Some(docker) = docker().await else { return };
    // Containers of earlier runs are not ours to judge: start clean.
    for c in docker.list().await.expect("list") {
        docker.remove(&c.id).await.expect("remove");
    }
    let w = world().await;
    let d = Dendrite::new(w.validator.clone());
    let mut miner = w.spawn_miner("docker");
    w.wait_ready().await;

    // Allocate, log in with the password and with the key, run a command, deallocate.
    let keydir = tempfile::tempdir().expect("tmp");
    let (user_key, user_pub) = keygen(keydir.path());
    let key = AllocationKey::generate().expect("rsa");
    let r = d.call(&w.target(), alloc(&key, &user_pub), T).await;
    assert!(status(&r.synapse), "{:?} {:?}", r.status_message(), r.synapse.output);
    let creds = key.decrypt_credentials(r.synapse.output["info"].as_str().expect("info")).expect("decrypt");
    let out = ssh(w.ssh_port, Some(creds.password.expose_secret()), None, "uname -a");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Linux"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = ssh(w.ssh_port, None, Some(&user_key), "echo key-login");
    assert!(String::from_utf8_lossy(&out.stdout).contains("key-login"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ours(&docker).await, 1);
    assert!(status(&d.call(&w.target(), dealloc(&key), T).await.synapse));
    assert_eq!(ours(&docker).await, 0, "the container is gone");

    // kill -9 after an allocation: the allocation survives the restart, then ends cleanly.
    let key = AllocationKey::generate().expect("rsa");
    let r = d.call(&w.target(), alloc(&key, ""), T).await;
    assert!(status(&r.synapse));
    let creds = key.decrypt_credentials(r.synapse.output["info"].as_str().expect("info")).expect("decrypt");
    miner.kill().expect("kill -9");
    let _ = miner.wait();
    miner = w.spawn_miner("docker");
    w.wait_ready().await;
    assert_eq!(ours(&docker).await, 1, "the allocation's container is kept");
    assert!(status(&d.call(&w.target(), held(&key), T).await.synapse), "still allocated to us");
    assert!(ssh(w.ssh_port, Some(creds.password.expose_secret()), None, "true").status.success());
    assert!(status(&d.call(&w.target(), dealloc(&key), T).await.synapse));
    assert_eq!(ours(&docker).await, 0);

    // kill -9 at several points during an allocation: after the restart, either nothing is left
    // (and the miner is free), or exactly one container that is the live, held allocation.
    for delay_ms in [50u64, 250, 600, 1200] {
        let key = AllocationKey::generate().expect("rsa");
        let (d2, t2, a2) = (d.clone(), w.target(), alloc(&key, ""));
        let request = tokio::spawn(async move { d2.call(&t2, a2, Duration::from_secs(20)).await });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        miner.kill().expect("kill -9");
        let _ = miner.wait();
        let _ = request.await;
        miner = w.spawn_miner("docker");
        w.wait_ready().await;
        match ours(&docker).await {
            0 => {
                let free = Allocate { timeline: 1, checking: true, ..alloc(&key, "") };
                let r = d.call(&w.target(), free, T).await;
                assert!(
                    status(&r.synapse),
                    "killed at {delay_ms} ms: no container, so no allocation: {:?}",
                    r.synapse.output
                );
            }
            1 => {
                assert!(
                    status(&d.call(&w.target(), held(&key), T).await.synapse),
                    "killed at {delay_ms} ms: the container is the held allocation"
                );
                assert!(status(&d.call(&w.target(), dealloc(&key), T).await.synapse));
                assert_eq!(ours(&docker).await, 0);
            }
            n => panic!("killed at {delay_ms} ms: {n} containers"),
        }
    }

    // SIGTERM stops the daemon cleanly.
    stop(miner);
    assert_eq!(ours(&docker).await, 0);
    w.chain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_runtime_only_on_a_devnet() {
    let w = world().await;
    // On the devnet: serves, and a renter logs in and runs a command.
    let miner = w.spawn_miner("local");
    w.wait_ready().await;
    let d = Dendrite::new(w.validator.clone());
    let key = AllocationKey::generate().expect("rsa");
    let r = d.call(&w.target(), alloc(&key, ""), T).await;
    assert!(status(&r.synapse), "{:?}", r.synapse.output);
    let creds = key.decrypt_credentials(r.synapse.output["info"].as_str().expect("info")).expect("decrypt");
    if Command::new("sshpass").arg("-V").output().is_ok() {
        let out = ssh(w.ssh_port, Some(creds.password.expose_secret()), None, "echo local-exec");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("local-exec"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(status(&d.call(&w.target(), dealloc(&key), T).await.synapse));
    stop(miner);

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
    let out = Command::new(env!("CARGO_BIN_EXE_nicompute"))
        .args(["miner", "run", "--runtime", "local", "--subtensor.chain_endpoint", &replay.ws_url()])
        .arg("--wallet.path")
        .arg(w.wallet_dir.path())
        .args(["--wallet.name", "miner", "--axon.ip", "127.0.0.1", "--axon.port", "0"])
        .arg("--state-dir")
        .arg(w.state_dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("isolates nothing"));
    w.chain.shutdown().await;
}
