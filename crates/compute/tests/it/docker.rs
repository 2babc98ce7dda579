//! The docker runtime against a real Docker daemon and the real `nicompute/sshd` image: a renter
//! logs in over SSH with the password and with a key, through pause, restart, key rotation and
//! removal. Without a daemon (or without the image) every test says "skipped" and passes, unless
//! NICOMPUTE_REQUIRE_DOCKER=1, as in CI after scripts/docker-up.sh and
//! scripts/build-ssh-image.sh.
//!
//! SSH goes through Debian's `ssh` and `sshpass` (scripts/docker-up.sh installs them).

// Test helpers outside #[test] fns: failing loudly is their job, and skips and timings are
// reported on stderr on purpose.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bollard::query_parameters::InspectContainerOptions;
use compute::runtime::docker::{DockerConfig, DockerRuntime, NAME_PREFIX};
use compute::runtime::{Container, ContainerRuntime, ContainerSpec, ContainerState, RuntimeError};
use rand::distributions::{Alphanumeric, DistString};
use secrecy::SecretString;

use crate::harness::{docker_config, docker_runtime, keygen, port_is_free, ssh_run, Login, PortLease, SshKey};

/// The runtime, or None (after saying why) when this machine cannot run these tests.
async fn runtime() -> Option<DockerRuntime> {
    docker_runtime(docker_config(), &["ssh", "sshpass", "ssh-keygen"]).await
}

/// The runtime, a fresh allocation id whose container is removed at the end whatever happens,
/// and a port for it.
async fn one_allocation(tag: &str) -> Option<(DockerRuntime, String, Cleanup, PortLease)> {
    let rt = runtime().await?;
    let alloc = unique_id(tag);
    Some((rt, alloc.clone(), Cleanup(vec![alloc]), PortLease::new()))
}

fn unique_id(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let suffix = Alphanumeric.sample_string(&mut rand::thread_rng(), 6).to_lowercase();
    format!("test-{tag}-{}-{}-{suffix}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Removes the containers of the allocations it names when dropped, even when a test panics.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names: Vec<String> = self.0.iter().map(|a| format!("{NAME_PREFIX}{a}")).collect();
        // Drop is synchronous and may run inside the test's runtime: use a runtime of its own.
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let Ok(docker) = DockerRuntime::connect(docker_config()).await else { return };
                for name in names {
                    if let Err(e) = docker.remove(&name).await {
                        eprintln!("cleanup of {name} failed: {e}");
                    }
                }
            });
        })
        .join();
        if joined.is_err() {
            eprintln!("cleanup thread panicked");
        }
    }
}

fn ssh_password(port: u16, password_file: &Path, command: &str) -> Result<String, String> {
    ssh_run(port, Login::PasswordFile(password_file), command)
}

fn ssh_key(port: u16, key: &SshKey, command: &str) -> Result<String, String> {
    ssh_run(port, Login::Key(&key.private), command)
}

fn spec(allocation_id: &str, password: &str, keys: Vec<String>, port: u16) -> ContainerSpec {
    ContainerSpec {
        allocation_id: allocation_id.to_owned(),
        password: SecretString::from(password.to_owned()),
        authorized_keys: keys,
        ssh_port: port,
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        cpu_count: Some(1),
        memory_bytes: Some(512 * 1024 * 1024),
        gpus: false,
        image: None,
        env: Vec::new(),
        ssh_container_port: 22,
        user_ports: Vec::new(),
        host_key: None,
    }
}

async fn find(rt: &DockerRuntime, allocation_id: &str) -> Option<Container> {
    rt.list().await.unwrap().into_iter().find(|c| c.allocation_id == allocation_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_lifecycle_over_ssh() {
    let Some(rt) = runtime().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let key1 = keygen(dir.path(), "key1");
    let key2 = keygen(dir.path(), "key2");
    // Characters a shell or chpasswd line could trip on, but one line.
    let password = format!("{}:$ '\"x", Alphanumeric.sample_string(&mut rand::thread_rng(), 24));
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, &password).unwrap();

    let alloc = unique_id("life");
    let other = unique_id("clash");
    let _cleanup = Cleanup(vec![alloc.clone(), other.clone()]);
    let lease = PortLease::new();
    let port = lease.port();

    let t0 = Instant::now();
    let container = rt.start(&spec(&alloc, &password, vec![key1.public.clone()], port)).await.unwrap();
    eprintln!("start() to SSH banner: {:?}", t0.elapsed());
    assert_eq!(container.allocation_id, alloc);
    assert_eq!(container.state, ContainerState::Running);
    let id = container.id.clone();

    // Both ways in.
    let uname = ssh_password(port, &password_file, "uname -a").unwrap();
    assert!(uname.starts_with("Linux"), "{uname}");
    let uname = ssh_key(port, &key1, "uname -a").unwrap();
    assert!(uname.starts_with("Linux"), "{uname}");
    // The password file was applied and deleted; the keys are root's, 0600.
    let files = ssh_key(
        port,
        &key1,
        "test ! -e /run/nicompute/chpasswd && stat -c '%a %U' /root/.ssh /root/.ssh/authorized_keys",
    )
    .unwrap();
    assert_eq!(files, "700 root\n600 root\n");
    // Wrong password refused.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password").unwrap();
    assert!(ssh_password(port, &wrong, "true").is_err());

    // The password is nowhere in what Docker tells about the container.
    let docker = bollard::Docker::connect_with_local_defaults().unwrap().negotiate_version().await.unwrap();
    let inspect = docker.inspect_container(&id, None::<InspectContainerOptions>).await.unwrap();
    let json = serde_json::to_string(&inspect).unwrap();
    assert!(json.contains(&alloc));
    assert!(!json.contains(&password), "the password is in the inspect JSON");
    let config = inspect.config.unwrap();
    assert!(config.env.unwrap_or_default().iter().all(|e| !e.contains(&password)));
    if let Ok(out) = crate::harness::command("docker").args(["inspect", &id]).output() {
        if out.status.success() {
            assert!(!String::from_utf8_lossy(&out.stdout).contains(&password));
        }
    }

    // Listed, with its allocation id.
    let listed = find(&rt, &alloc).await.unwrap();
    assert_eq!(
        listed,
        Container { id: id.clone(), allocation_id: alloc.clone(), state: ContainerState::Running, user_ports: vec![] }
    );

    // A second container on the same port.
    let clash = rt.start(&spec(&other, &password, vec![], port)).await;
    assert!(matches!(clash, Err(RuntimeError::PortInUse { port: p }) if p == port), "{clash:?}");
    assert!(find(&rt, &other).await.is_none(), "the failed container was not removed");

    // Pause and unpause (both idempotent).
    rt.pause(&id).await.unwrap();
    rt.pause(&id).await.unwrap();
    assert_eq!(find(&rt, &alloc).await.unwrap().state, ContainerState::Paused);
    rt.unpause(&id).await.unwrap();
    rt.unpause(&id).await.unwrap();
    assert_eq!(find(&rt, &alloc).await.unwrap().state, ContainerState::Running);
    ssh_key(port, &key1, "true").unwrap();

    // Restart: the password and the key still work.
    let t0 = Instant::now();
    rt.restart(&id).await.unwrap();
    eprintln!("restart() to SSH banner: {:?}", t0.elapsed());
    ssh_password(port, &password_file, "true").unwrap();
    ssh_key(port, &key1, "true").unwrap();

    // Restart from paused works too.
    rt.pause(&id).await.unwrap();
    rt.restart(&id).await.unwrap();
    assert_eq!(find(&rt, &alloc).await.unwrap().state, ContainerState::Running);

    // Key rotation: the old key is refused, the new one works, and the file stays root's 0600
    // even after the renter loosened it.
    ssh_key(port, &key1, "chmod 777 /root/.ssh && chmod 666 /root/.ssh/authorized_keys").unwrap();
    rt.set_authorized_keys(&id, std::slice::from_ref(&key2.public)).await.unwrap();
    assert!(ssh_key(port, &key1, "true").is_err(), "the old key still works");
    let files = ssh_key(port, &key2, "stat -c '%a %U' /root/.ssh /root/.ssh/authorized_keys").unwrap();
    assert_eq!(files, "700 root\n600 root\n");
    ssh_password(port, &password_file, "true").unwrap();

    // Remove: gone, port free, and removing again is fine.
    rt.remove(&id).await.unwrap();
    assert!(find(&rt, &alloc).await.is_none());
    assert!(port_is_free(port), "port {port} still bound after remove");
    rt.remove(&id).await.unwrap();
    assert!(matches!(rt.pause(&id).await, Err(RuntimeError::NotFound(_))));
    assert!(matches!(rt.restart(&id).await, Err(RuntimeError::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_time_to_ssh_ready() {
    let Some(rt) = runtime().await else { return };
    let mut times = Vec::new();
    for _ in 0..3 {
        let alloc = unique_id("time");
        let _cleanup = Cleanup(vec![alloc.clone()]);
        let lease = PortLease::new();
        let port = lease.port();
        let t0 = Instant::now();
        let c = rt.start(&spec(&alloc, "pw-for-timing", vec![], port)).await.unwrap();
        times.push(t0.elapsed());
        rt.remove(&c.id).await.unwrap();
    }
    times.sort();
    eprintln!("start() to SSH banner, 3 runs: {times:?}, median {:?}", times[1]);
    assert!(times[1] < Duration::from_secs(30));
}

#[tokio::test]
async fn bad_requests_are_refused_without_leftovers() {
    let Some((rt, alloc, _cleanup, lease)) = one_allocation("bad").await else { return };
    let port = lease.port();
    let multi_line = rt.start(&spec(&alloc, "a\nroot:b", vec![], port)).await;
    assert!(matches!(multi_line, Err(RuntimeError::Failed(_))), "{multi_line:?}");
    let bad_key = rt.start(&spec(&alloc, "pw", vec!["ssh-ed25519 AAAA\nssh-rsa BBBB".into()], port)).await;
    assert!(matches!(bad_key, Err(RuntimeError::Failed(_))), "{bad_key:?}");
    let bad_id = rt.start(&spec("../etc", "pw", vec![], port)).await;
    assert!(matches!(bad_id, Err(RuntimeError::Failed(_))), "{bad_id:?}");
    assert!(find(&rt, &alloc).await.is_none());

    // SSH that does not answer in time: the container is removed again.
    let config = DockerConfig { ssh_ready_timeout: Duration::from_millis(1), ..docker_config() };
    let impatient = DockerRuntime::connect(config).await.unwrap();
    let late = impatient.start(&spec(&alloc, "pw", vec![], port)).await;
    assert!(matches!(&late, Err(RuntimeError::Failed(m)) if m.contains("did not answer")), "{late:?}");
    assert!(find(&rt, &alloc).await.is_none());
    assert!(port_is_free(port));

    let config = DockerConfig { image: "nicompute/no-such-image:none".into(), ..docker_config() };
    let missing = DockerRuntime::connect(config).await.unwrap();
    let err = missing.ensure_image().await.unwrap_err();
    assert!(err.to_string().contains("scripts/build-ssh-image.sh"), "{err}");
    let start = missing.start(&spec(&alloc, "pw", vec![], port)).await;
    assert!(matches!(start, Err(RuntimeError::Failed(_))), "{start:?}");
    assert!(find(&rt, &alloc).await.is_none());
}

#[tokio::test]
async fn unreachable_socket_is_unavailable() {
    let config = DockerConfig { socket: Some("/nonexistent/docker.sock".into()), ..DockerConfig::default() };
    let err = DockerRuntime::connect(config).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn port_held_by_another_process_is_port_in_use() {
    let Some((rt, alloc, _cleanup, _)) = one_allocation("held").await else { return };
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let start = rt.start(&spec(&alloc, "pw", vec![], port)).await;
    assert!(matches!(start, Err(RuntimeError::PortInUse { port: p }) if p == port), "{start:?}");
    assert!(find(&rt, &alloc).await.is_none());
}

/// On a host without the NVIDIA Container Toolkit a GPU request fails with a clear error and
/// leaves nothing behind; on a GPU host it starts.
#[tokio::test]
async fn gpu_request() {
    let Some((rt, alloc, _cleanup, lease)) = one_allocation("gpu").await else { return };
    let port = lease.port();
    let spec = ContainerSpec { gpus: true, ..spec(&alloc, "pw", vec![], port) };
    match rt.start(&spec).await {
        Ok(c) => {
            eprintln!("this host gives containers GPUs");
            rt.remove(&c.id).await.unwrap();
        }
        Err(RuntimeError::Failed(message)) => {
            assert!(message.contains("NVIDIA Container Toolkit"), "{message}");
            assert!(find(&rt, &alloc).await.is_none());
        }
        Err(other) => panic!("{other:?}"),
    }
}
