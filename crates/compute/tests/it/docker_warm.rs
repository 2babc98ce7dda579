//! The miner's warm container against a real Docker daemon and the real `nicompute/sshd` image:
//! an allocation starts in the container parked in advance (and a renter logs in over SSH with
//! the credentials it got, also after a restart) while a new one is made for the next, created
//! while the allocation holds the ports and parked once it ends; a restarted miner removes a
//! warm container left behind and makes a fresh one, and a clean stop removes it; concurrent
//! allocations never share a container; `--warm-containers 0` creates one container per
//! allocation as before. Every container here
//! carries a scope of its own, so nothing else on the shared daemon is touched. Without a daemon,
//! the image or ssh/sshpass, each test says "skipped" (a failure under
//! NICOMPUTE_REQUIRE_DOCKER=1).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bittensor::dendrite::{AxonTarget, Dendrite};
use bollard::models::RestartPolicyNameEnum;
use bollard::query_parameters::InspectContainerOptions;
use compute::crypto::AllocationKey;
use compute::miner::state::StateStore;
use compute::miner::{self, MinerHandle};
use compute::protocol::Allocate;
use compute::runtime::docker::{DockerConfig, DockerRuntime, DEFAULT_IMAGE, NAME_PREFIX};
use compute::runtime::{Container, ContainerRuntime, ContainerState, WARM_PREFIX};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::harness::{
    allocate_with, docker_config, docker_miner, docker_runtime, fixture_key as kp, ssh_run, Login, PortLease,
};

/// A runtime whose containers carry `scope`, or None after saying why there is none.
async fn docker(scope: &str) -> Option<Arc<DockerRuntime>> {
    let cfg = DockerConfig { image: DEFAULT_IMAGE.to_owned(), scope: Some(scope.to_owned()), ..docker_config() };
    docker_runtime(cfg, &["ssh", "sshpass"]).await.map(Arc::new)
}

fn scope(tag: &str) -> String {
    format!("test-warm-{tag}-{}", std::process::id())
}

/// Removes every container of the scope when dropped, even when the test panics.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let scope = self.0.clone();
        let _ = std::thread::spawn(move || {
            let Ok(tokio) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            tokio.block_on(async {
                let cfg = DockerConfig { scope: Some(scope), ..docker_config() };
                let Ok(rt) = DockerRuntime::connect(cfg).await else { return };
                for c in rt.list().await.unwrap_or_default() {
                    let _ = rt.remove(&c.id).await;
                }
            });
        })
        .join();
    }
}

async fn start_miner(
    state_dir: PathBuf,
    runtime: Arc<dyn ContainerRuntime>,
    ssh: &PortLease,
    warm: bool,
) -> MinerHandle {
    docker_miner(state_dir, runtime, ssh, warm, miner::offer::Offer::default()).await
}

fn deallocate(key: &AllocationKey) -> Allocate {
    Allocate { timeline: 0, checking: false, public_key: key.public_pem().expect("pem"), ..Allocate::default() }
}

fn yes(a: &Allocate) -> bool {
    a.output.get("status") == Some(&json!(true))
}

fn warm_ones(list: &[Container]) -> Vec<&Container> {
    list.iter().filter(|c| c.allocation_id.starts_with(WARM_PREFIX)).collect()
}

/// Parked: started and paused, its entrypoint waiting for credentials (the image promises it).
const PARKED: ContainerState = ContainerState::Paused;
/// Created, not started (made while an allocation holds the ports).
const CREATED: ContainerState = ContainerState::Stopped;

/// Waits (up to 30 s) until the scope has a warm container other than `not` in state `want`;
/// returns its id.
async fn wait_for_warm(rt: &DockerRuntime, not: Option<&str>, want: ContainerState) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = rt.list().await.expect("list");
        let warm = warm_ones(&list);
        assert!(warm.len() <= 1, "one warm container at most: {list:?}");
        if let Some(w) = warm.first().filter(|w| Some(w.id.as_str()) != not && w.state == want) {
            return w.id.clone();
        }
        assert!(Instant::now() < deadline, "no new warm container {want:?} appeared: {list:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Renter {
    dendrite: Dendrite,
    target: AxonTarget,
}

impl Renter {
    fn of(miner: &MinerHandle) -> Self {
        let target = AxonTarget::new("127.0.0.1", miner.axon_addr().port(), &kp("axon_hotkey").account_id());
        Self { dendrite: Dendrite::new(kp("dendrite_hotkey")), target }
    }

    async fn call(&self, req: Allocate) -> Allocate {
        let r = self.dendrite.call(&self.target, req, Duration::from_secs(90)).await;
        assert!(r.is_success(), "{:?}", r.status_message());
        r.synapse
    }

    /// Allocates with `key` and logs in over SSH with the credentials: the container's id, its
    /// RSA host key's public line and the miner's answer.
    async fn allocate_and_log_in(
        &self,
        key: &AllocationKey,
        state_dir: &std::path::Path,
        port: u16,
    ) -> (String, String, Allocate) {
        let answer = self.call(allocate_with(key)).await;
        let rsa = log_in(key, &answer, port);
        let state = StateStore::open(&state_dir.join("miner.sqlite")).expect("state");
        let id = state.current().expect("read").and_then(|a| a.container_id).expect("the allocation's container");
        (id, rsa, answer)
    }
}

/// Logs in over SSH with the credentials of an allocation's answer: the machine's RSA host key.
fn log_in(key: &AllocationKey, answer: &Allocate, port: u16) -> String {
    assert!(yes(answer), "{:?}", answer.output);
    let info = answer.output.get("info").and_then(Value::as_str).expect("credentials");
    let creds = key.decrypt_credentials(info).expect("decrypt");
    let dir = tempfile::tempdir().expect("tmp");
    let password = dir.path().join("password");
    std::fs::write(&password, creds.password.expose_secret()).expect("password file");
    let out = ssh_run(port, Login::PasswordFile(&password), "cat /etc/ssh/ssh_host_rsa_key.pub");
    out.unwrap_or_else(|e| panic!("SSH login with the allocation's credentials: {e}")).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_warm_an_allocation_starts_in_the_warm_container_and_a_new_one_is_made() {
    let scope = scope("use");
    let Some(rt) = docker(&scope).await else { return };
    let _cleanup = Cleanup(scope.clone());
    let dir = tempfile::tempdir().expect("tmp");
    let state_dir = dir.path().join("state");
    let ssh = PortLease::new();
    // SN27's user port 27015 mapped to a host port of this test's own, as `nicompute miner run`
    // maps the four by default: the warm container publishes it too.
    let user_port = PortLease::new();
    let offer = miner::offer::Offer { external_ports: vec![user_port.port()], ..miner::offer::Offer::default() };
    let miner = docker_miner(state_dir.clone(), rt.clone(), &ssh, true, offer).await;
    let renter = Renter::of(&miner);

    let first_warm = wait_for_warm(&rt, None, PARKED).await;
    let socket = docker_config().socket.expect("socket");
    let api = bollard::Docker::connect_with_socket(socket.to_str().expect("utf-8"), 30, bollard::API_DEFAULT_VERSION)
        .expect("socket")
        .negotiate_version()
        .await
        .expect("daemon");
    let parked = api.inspect_container(&first_warm, None::<InspectContainerOptions>).await.expect("inspect");
    let policy = |h: &Option<bollard::models::HostConfig>| h.as_ref().and_then(|h| h.restart_policy.clone()?.name);
    assert_eq!(policy(&parked.host_config), Some(RestartPolicyNameEnum::NO), "a parked container is never restarted");
    let key = AllocationKey::generate().expect("key");
    let (container, rsa, answer) = renter.allocate_and_log_in(&key, &state_dir, ssh.port()).await;
    assert_eq!(container, first_warm, "the allocation runs in the parked warm container");
    // The miner's RSA host key (no comment), not one `ssh-keygen -A` made at start (`root@…`).
    assert!(rsa.starts_with("ssh-rsa ") && rsa.split_whitespace().count() == 2, "{rsa}");
    let list = rt.list().await.expect("list");
    let allocated = list.iter().find(|c| c.id == container).expect("listed");
    assert_eq!(allocated.state, ContainerState::Running);
    let current = StateStore::open(&state_dir.join("miner.sqlite")).expect("state").current().expect("read");
    let allocation_id = current.expect("allocation").allocation_id;
    assert_eq!(allocated.allocation_id, allocation_id, "listed under its allocation (renamed on taking)");
    let inspect = api.inspect_container(&container, None::<InspectContainerOptions>).await.expect("inspect");
    assert_eq!(inspect.name.as_deref(), Some(format!("/{NAME_PREFIX}{allocation_id}").as_str()));
    assert_eq!(policy(&inspect.host_config), Some(RestartPolicyNameEnum::UNLESS_STOPPED), "the allocation's policy");
    let host = inspect.host_config.expect("host config");
    assert_eq!(host.nano_cpus, Some(1_000_000_000), "the renter's CPU limit is applied");
    assert_eq!(host.memory, Some(1 << 30), "the renter's memory limit is applied");
    let bindings = host.port_bindings.expect("port bindings");
    let published = bindings.get("27015/tcp").cloned().flatten().expect("27015 published");
    assert_eq!(published[0].host_port.as_deref(), Some(user_port.port().to_string().as_str()));

    // A new warm container is made while the allocation runs (created only: the port is the
    // allocation's), and the deallocation leaves it.
    let second_warm = wait_for_warm(&rt, Some(&first_warm), CREATED).await;
    // A restart runs the entrypoint again: it does not wait for credentials a second time.
    rt.restart(&container).await.expect("restart");
    assert_eq!(log_in(&key, &answer, ssh.port()), rsa, "the same machine, logged in again");
    assert!(yes(&renter.call(deallocate(&key)).await));
    // Its ports free again, the new one is parked.
    assert_eq!(wait_for_warm(&rt, Some(&first_warm), PARKED).await, second_warm);
    let list = rt.list().await.expect("list");
    assert!(list.iter().all(|c| c.id != first_warm), "the allocation's container is removed: {list:?}");
    assert_eq!(warm_ones(&list).iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![second_warm]);
    miner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_warm_a_restarted_miner_reconciles_a_leftover_warm_container() {
    let scope = scope("restart");
    let Some(rt) = docker(&scope).await else { return };
    let _cleanup = Cleanup(scope.clone());
    let dir = tempfile::tempdir().expect("tmp");
    let state_dir = dir.path().join("state");
    let ssh = PortLease::new();
    let miner = start_miner(state_dir.clone(), rt.clone(), &ssh, true).await;
    let leftover = wait_for_warm(&rt, None, PARKED).await;
    // The process dies (no shutdown, which would remove the warm container): its runtime and
    // what it remembered go with it, the parked container stays.
    drop(miner);
    drop(rt);

    let rt = docker(&scope).await.expect("docker");
    let miner = start_miner(state_dir.clone(), rt.clone(), &ssh, true).await;
    let list = rt.list().await.expect("list");
    assert!(list.iter().all(|c| c.id != leftover), "start-up removed the leftover warm container: {list:?}");
    let fresh = wait_for_warm(&rt, Some(&leftover), PARKED).await;
    // A miner restarted in the same process (the runtime remembers the container it made, which
    // the start-up removes) makes another one too.
    miner.shutdown().await;
    let miner = start_miner(state_dir.clone(), rt.clone(), &ssh, true).await;
    assert!(rt.list().await.expect("list").iter().all(|c| c.id != fresh), "start-up removed it");
    let fresh = wait_for_warm(&rt, Some(&fresh), PARKED).await;
    // And the fresh one serves an allocation.
    let key = AllocationKey::generate().expect("key");
    let (container, _, _) = Renter::of(&miner).allocate_and_log_in(&key, &state_dir, ssh.port()).await;
    assert_eq!(container, fresh);
    assert!(yes(&Renter::of(&miner).call(deallocate(&key)).await));
    // A clean stop removes the warm container: a parked one holds the SSH port.
    let last = wait_for_warm(&rt, Some(&fresh), PARKED).await;
    miner.shutdown().await;
    assert!(rt.list().await.expect("list").iter().all(|c| c.id != last), "shutdown removed the warm container");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_warm_two_allocations_never_get_the_same_container() {
    let scope = scope("two");
    let Some(rt) = docker(&scope).await else { return };
    let _cleanup = Cleanup(scope.clone());
    let dir = tempfile::tempdir().expect("tmp");
    let state_dir = dir.path().join("state");
    let ssh = PortLease::new();
    let miner = start_miner(state_dir.clone(), rt.clone(), &ssh, true).await;
    let renter = Arc::new(Renter::of(&miner));
    let first_warm = wait_for_warm(&rt, None, PARKED).await;

    // Eight renters at once: one gets the machine, the others a clean refusal.
    let keys: Vec<AllocationKey> = (0..8).map(|_| AllocationKey::generate().expect("key")).collect();
    let calls: Vec<_> = keys
        .iter()
        .map(|k| {
            let (renter, req) = (renter.clone(), allocate_with(k));
            tokio::spawn(async move { renter.call(req).await })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        let answer = call.await.expect("task");
        if yes(&answer) {
            winners.push((i, answer));
        }
    }
    assert_eq!(winners.len(), 1, "one allocation at a time");
    let (winner, answer) = winners.remove(0);
    let first_rsa = log_in(&keys[winner], &answer, ssh.port());
    let list = rt.list().await.expect("list");
    let running: Vec<_> = list.iter().filter(|c| c.state == ContainerState::Running).collect();
    assert_eq!(running.len(), 1, "one container runs: {list:?}");
    assert_eq!(running[0].id, first_warm);

    // The next renter, after the first leaves, gets another container: the new warm one (taken
    // created or parked, or while being parked).
    let second_warm = wait_for_warm(&rt, Some(&first_warm), CREATED).await;
    assert!(yes(&renter.call(deallocate(&keys[winner])).await));
    let key = AllocationKey::generate().expect("key");
    let (container, rsa, _) = renter.allocate_and_log_in(&key, &state_dir, ssh.port()).await;
    assert_eq!(container, second_warm);
    assert_ne!(container, first_warm);
    assert_ne!(rsa, first_rsa, "each warm container has host keys of its own");
    assert!(yes(&renter.call(deallocate(&key)).await));
    miner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_warm_containers_0_creates_one_container_per_allocation() {
    let scope = scope("off");
    let Some(rt) = docker(&scope).await else { return };
    let _cleanup = Cleanup(scope.clone());
    let dir = tempfile::tempdir().expect("tmp");
    let state_dir = dir.path().join("state");
    let ssh = PortLease::new();
    let miner = start_miner(state_dir.clone(), rt.clone(), &ssh, false).await;
    let renter = Renter::of(&miner);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rt.list().await.expect("list").is_empty(), "no container before an allocation");

    let key = AllocationKey::generate().expect("key");
    let (container, _, _) = renter.allocate_and_log_in(&key, &state_dir, ssh.port()).await;
    let allocation_id = StateStore::open(&state_dir.join("miner.sqlite"))
        .expect("state")
        .current()
        .expect("read")
        .expect("allocation")
        .allocation_id;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let list = rt.list().await.expect("list");
    assert_eq!(list.len(), 1, "only the allocation's container, no warm one: {list:?}");
    assert_eq!((list[0].id.as_str(), list[0].allocation_id.as_str()), (container.as_str(), allocation_id.as_str()));
    assert!(yes(&renter.call(deallocate(&key)).await));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rt.list().await.expect("list").is_empty(), "nothing left after the deallocation");
    miner.shutdown().await;
}
