//! The local runtime driven by the system's OpenSSH client, as a renter would: password and key
//! logins, refusals, exit statuses, the allocation directory, key exchange, pause, restart,
//! remove, port conflicts and listing. Needs `ssh`, `ssh-keygen` and `sshpass` on the PATH
//! (`apt-get install -y openssh-client sshpass`); without them each test says it skipped.

// Skips and timings are reported on stderr, on purpose.
#![allow(clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use compute::runtime::local::LocalRuntime;
use compute::runtime::{Container, ContainerRuntime, ContainerSpec, ContainerState, RuntimeError};
use secrecy::SecretString;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::{self, command, describe, run, ssh, ssh_as, ssh_tools, stdout, Login};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PASSWORD: &str = "correct horse battery staple";

fn spec(id: &str, port: u16, keys: Vec<String>) -> ContainerSpec {
    ContainerSpec {
        allocation_id: id.to_owned(),
        password: SecretString::from(PASSWORD),
        authorized_keys: keys,
        ssh_port: port,
        bind_ip: LOCALHOST,
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

fn runtime(dir: &tempfile::TempDir) -> LocalRuntime {
    LocalRuntime::new(dir.path().join("local")).expect("local runtime")
}

/// What most tests start from: a runtime in a temporary directory, a renter's key pair, and the
/// allocation `id` accepting that key on a port of the runtime's choosing.
struct Setup {
    dir: tempfile::TempDir,
    rt: LocalRuntime,
    key: PathBuf,
    c: Container,
    port: u16,
}

/// [`Setup`], or `None` (after saying why) without the OpenSSH client.
async fn setup(id: &str) -> Option<Setup> {
    if !ssh_tools(false) {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "renter");
    let rt = runtime(&dir);
    let (c, port) = started(&rt, id, vec![public]).await;
    Some(Setup { dir, rt, key, c, port })
}

/// Starts allocation `id` on a port of the runtime's choosing; the container and its port.
async fn started(rt: &LocalRuntime, id: &str, keys: Vec<String>) -> (Container, u16) {
    let c = rt.start(&spec(id, 0, keys)).await.expect("start");
    let port = rt.ssh_port(&c.id).expect("the allocation's port");
    (c, port)
}

/// `ssh` with the password (through sshpass's environment).
async fn ssh_password(port: u16, password: &str, command: &str) -> Output {
    let mut c = ssh(port, Login::Password(password), &[]);
    c.arg(command);
    run(c, None).await
}

/// `ssh -i KEY [args…]` with `stdin`.
async fn ssh_key_with(port: u16, key: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    run(ssh(port, Login::Key(key), args), stdin).await
}

async fn ssh_key(port: u16, key: &Path, command: &str) -> Output {
    let mut c = ssh(port, Login::Key(key), &[]);
    c.arg(command);
    run(c, None).await
}

/// A new key pair: (private key path, public key line).
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    keygen_typed(dir, name, "ed25519")
}

fn keygen_typed(dir: &Path, name: &str, kind: &str) -> (PathBuf, String) {
    let k = harness::keygen_typed(dir, name, kind);
    (k.private, k.public)
}

/// The state letter of a process in /proc (`S` sleeping, `T` stopped, `Z` zombie…).
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_runs_uname_and_reports_timings() {
    if !ssh_tools(true) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir);
    let t0 = Instant::now();
    let (c, port) = started(&rt, "pw", vec![]).await;
    let started = t0.elapsed();
    let accepts = std::net::TcpStream::connect((LOCALHOST, port)).is_ok();
    assert!(accepts, "the port accepts connections once start returns");
    let out = ssh_password(port, PASSWORD, "uname -a").await;
    let first_login = t0.elapsed();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).starts_with("Linux") || !stdout(&out).trim().is_empty(), "{}", describe(&out));
    assert_eq!(c.id, "local-pw");
    assert_eq!(c.allocation_id, "pw");
    eprintln!(
        "timing: start() returned after {} ms; first password login + `uname -a` done {} ms after start",
        started.as_millis(),
        first_login.as_millis()
    );
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_login_runs_a_command() {
    if !ssh_tools(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "renter");
    let rt = runtime(&dir);
    let t0 = Instant::now();
    let (c, port) = started(&rt, "key", vec![public]).await;
    let out = ssh_key(port, &key, "echo hello from $(id -un >/dev/null; echo local)").await;
    eprintln!("timing: start + first key login + command: {} ms", t0.elapsed().as_millis());
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "hello from local\n");
    // RSA keys (rsa-sha2-256/512) work too, with options before the key in the line.
    let (rsa, rsa_public) = keygen_typed(dir.path(), "rsa", "rsa");
    let line = format!("no-agent-forwarding,from=\"127.0.0.1\" {rsa_public}");
    rt.set_authorized_keys(&c.id, &[line]).await.expect("set keys");
    let out = ssh_key(port, &rsa, "echo rsa").await;
    assert_eq!(stdout(&out), "rsa\n", "{}", describe(&out));
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused() {
    if !ssh_tools(true) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir);
    let (c, port) = started(&rt, "wrongpw", vec![]).await;
    let out = ssh_password(port, "not the password", "echo in").await;
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!stdout(&out).contains("in"), "{}", describe(&out));
    // Another user with the right password is refused too: root only.
    let mut cmd = ssh_as("someone", port, Login::Password(PASSWORD), &[]);
    cmd.arg("echo in");
    let out = run(cmd, None).await;
    assert!(!out.status.success(), "{}", describe(&out));
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_refused() {
    if !ssh_tools(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, public) = keygen(dir.path(), "listed");
    let (other, _) = keygen(dir.path(), "other");
    let rt = runtime(&dir);
    let (c, port) = started(&rt, "wrongkey", vec![public]).await;
    let out = ssh_key(port, &other, "echo in").await;
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{}", describe(&out));
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_and_stderr_propagate() {
    let Some(Setup { dir: _dir, rt, key, c, port }) = setup("exit").await else { return };
    let out = ssh_key(port, &key, "exit 7").await;
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    let out = ssh_key(port, &key, "echo out; echo err >&2; false").await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // A large output arrives whole.
    let out = ssh_key(port, &key, "head -c 3000000 /dev/zero").await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(out.stdout.len(), 3_000_000);
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_in_the_allocation_dir() {
    let Some(Setup { dir: _dir, rt, key, c, port }) = setup("pwd").await else { return };
    let alloc_dir = rt.allocation_dir("pwd");
    let mode = std::fs::metadata(&alloc_dir).expect("allocation dir").permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let out = ssh_key(port, &key, "pwd; echo $HOME; touch made-here").await;
    assert!(out.status.success(), "{}", describe(&out));
    let expected = alloc_dir.display().to_string();
    assert_eq!(stdout(&out), format!("{expected}\n{expected}\n"));
    assert!(alloc_dir.join("made-here").exists());
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_without_a_pty_reads_stdin() {
    let Some(Setup { dir: _dir, rt, key, c, port }) = setup("shell").await else { return };
    let out = ssh_key_with(port, &key, &["-T"], Some(b"echo hi; exit 3\n")).await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(stdout(&out), "hi\n");
    // Piped input to a command.
    let mut cmd = ssh(port, Login::Key(&key), &[]);
    cmd.arg("wc -c");
    let out = run(cmd, Some(&[b'x'; 100_000])).await;
    assert_eq!(stdout(&out).trim(), "100000", "{}", describe(&out));
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pty_request_gets_an_emulated_terminal() {
    let Some(Setup { dir: _dir, rt, key, c, port }) = setup("pty").await else { return };
    // -tt forces a PTY request although our stdin is a pipe; the keys arrive as typed.
    let out = ssh_key_with(port, &key, &["-tt"], Some(b"echo hi-there\rexit 4\r")).await;
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("hi-there\r\n"), "output is CRLF terminal output: {}", describe(&out));
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_authorized_keys_swaps_keys() {
    if !ssh_tools(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (old, old_public) = keygen(dir.path(), "old");
    let (new, new_public) = keygen(dir.path(), "new");
    let rt = runtime(&dir);
    let (c, port) = started(&rt, "swap", vec![old_public]).await;
    assert!(ssh_key(port, &old, "true").await.status.success());
    assert!(!ssh_key(port, &new, "true").await.status.success());
    rt.set_authorized_keys(&c.id, &[new_public]).await.expect("set keys");
    assert!(ssh_key(port, &new, "true").await.status.success(), "the new key is accepted");
    assert!(!ssh_key(port, &old, "true").await.status.success(), "the old key is refused");
    // Garbage is refused and changes nothing.
    let err = rt.set_authorized_keys(&c.id, &["ssh-ed25519 not-base64".into()]).await;
    assert!(matches!(err, Err(RuntimeError::Failed(_))), "{err:?}");
    assert!(ssh_key(port, &new, "true").await.status.success());
    let err = rt.set_authorized_keys("local-nope", &[]).await;
    assert!(matches!(err, Err(RuntimeError::NotFound(_))), "{err:?}");
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_refuses_new_logins_and_unpause_allows_them() {
    let Some(Setup { dir: _dir, rt, key, c, port }) = setup("pause").await else { return };
    let out = ssh_key(port, &key, "nohup sleep 300 >/dev/null 2>&1 & echo $!").await;
    let pid: u32 = stdout(&out).trim().parse().expect("a pid");
    rt.pause(&c.id).await.expect("pause");
    assert_eq!(rt.list().await.expect("list")[0].state, ContainerState::Paused);
    let out = ssh_key(port, &key, "echo in").await;
    assert!(!out.status.success(), "{}", describe(&out));
    assert_eq!(state_of(pid), Some('T'), "paused processes are stopped");
    rt.unpause(&c.id).await.expect("unpause");
    assert_eq!(rt.list().await.expect("list")[0].state, ContainerState::Running);
    let state = state_of(pid);
    assert!(state.is_some_and(|s| s != 'T' && s != 'Z'), "and continue on unpause: {state:?}");
    let out = ssh_key(port, &key, "echo in").await;
    assert_eq!(stdout(&out), "in\n", "{}", describe(&out));
    assert!(matches!(rt.pause("local-nope").await, Err(RuntimeError::NotFound(_))));
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_drops_sessions_and_keeps_serving() {
    let Some(Setup { dir: _dir, rt, key, c, port }) = setup("restart").await else { return };
    let mut long = tokio::process::Command::from(ssh(port, Login::Key(&key), &[]));
    long.arg("echo started; sleep 60; echo finished").stdout(Stdio::piped()).stderr(Stdio::null()).kill_on_drop(true);
    let mut long = long.spawn().expect("ssh");
    let mut lines = BufReader::new(long.stdout.take().expect("stdout")).lines();
    // The session is up once its command says so.
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.expect("the session starts");
    assert_eq!(first.expect("read").as_deref(), Some("started"));
    rt.restart(&c.id).await.expect("restart");
    let status = tokio::time::timeout(Duration::from_secs(30), long.wait()).await.expect("the session was dropped");
    assert!(!status.expect("wait").success(), "the session ended with an error");
    let mut rest = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push(line);
    }
    assert!(!rest.iter().any(|l| l == "finished"), "the command was cut short: {rest:?}");
    assert_eq!(stdout(&ssh_key(port, &key, "echo again").await), "again\n");
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_frees_the_port_deletes_the_dir_and_kills_processes() {
    let Some(Setup { dir: _dir, rt, key, c, port }) = setup("gone").await else { return };
    // A background process that outlives its command (as with sshd) until the allocation goes.
    let out = ssh_key(port, &key, "nohup sleep 300 >/dev/null 2>&1 & echo $!").await;
    let pid: u32 = stdout(&out).trim().parse().expect("a pid");
    let alive = |pid: u32| state_of(pid).is_some_and(|s| s != 'Z');
    assert!(alive(pid), "the background process runs after its command ended");
    let alloc_dir = rt.allocation_dir("gone");
    assert!(alloc_dir.is_dir());

    rt.remove(&c.id).await.expect("remove");
    assert!(!alloc_dir.exists(), "the allocation dir is deleted");
    std::net::TcpListener::bind((LOCALHOST, port)).expect("the port is free again");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(pid), "the session's processes are killed");
    assert!(rt.list().await.expect("list").is_empty());
    // Removing it again, or something unknown, succeeds.
    rt.remove(&c.id).await.expect("remove again");
    rt.remove("local-never-was").await.expect("remove unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_port_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir);
    let taken = std::net::TcpListener::bind((LOCALHOST, 0)).expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let err = rt.start(&spec("busy", port, vec![])).await;
    assert!(matches!(err, Err(RuntimeError::PortInUse { port: p }) if p == port), "{err:?}");
    assert!(rt.list().await.expect("list").is_empty());
    drop(taken);
    // Two allocations cannot share a port either.
    let (c, port) = started(&rt, "first", vec![]).await;
    let err = rt.start(&spec("second", port, vec![])).await;
    assert!(matches!(err, Err(RuntimeError::PortInUse { .. })), "{err:?}");
    rt.remove(&c.id).await.expect("remove");
    // Nor a reserved port, which the runtime keeps between its allocations.
    let reserved = rt.reserve(LOCALHOST, 0).await.expect("reserve");
    let c = rt.start(&spec("third", reserved, vec![])).await.expect("start on the reserved port");
    let err = rt.start(&spec("fourth", reserved, vec![])).await;
    assert!(matches!(err, Err(RuntimeError::PortInUse { port: p }) if p == reserved), "{err:?}");
    rt.remove(&c.id).await.expect("remove");
    assert!(std::net::TcpListener::bind((LOCALHOST, reserved)).is_err(), "still held after the allocation");
    let c = rt.start(&spec("fourth", reserved, vec![])).await.expect("the next allocation gets it");
    assert_eq!(rt.ssh_port(&c.id), Some(reserved));
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_reflects_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir);
    assert!(rt.list().await.expect("list").is_empty());
    let a = rt.start(&spec("a", 0, vec![])).await.expect("start a");
    let b = rt.start(&spec("b", 0, vec![])).await.expect("start b");
    rt.pause(&b.id).await.expect("pause b");
    let list = rt.list().await.expect("list");
    let states: Vec<(&str, &str, ContainerState)> =
        list.iter().map(|c| (c.id.as_str(), c.allocation_id.as_str(), c.state)).collect();
    assert_eq!(states, vec![("local-a", "a", ContainerState::Running), ("local-b", "b", ContainerState::Paused)]);
    // The same allocation twice is refused.
    assert!(rt.start(&spec("a", 0, vec![])).await.is_err());
    rt.remove(&a.id).await.expect("remove a");
    let list = rt.list().await.expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, "local-b");
    rt.remove(&b.id).await.expect("remove b");
    assert!(rt.list().await.expect("list").is_empty());
    assert_eq!(rt.name(), "local");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_key_persists_and_a_new_runtime_starts_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = runtime(&dir);
    let key = first.host_public_key().expect("host key");
    assert!(key.starts_with("ssh-ed25519 "), "{key}");
    let path = dir.path().join("local").join("host_key");
    assert_eq!(std::fs::metadata(&path).expect("host key file").permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(dir.path().join("local")).expect("root").permissions().mode() & 0o777, 0o700);
    let c = first.start(&spec("left", 0, vec![])).await.expect("start");
    let left = first.allocation_dir("left");
    first.remove(&c.id).await.expect("remove");
    // An allocation directory left by a crashed miner is cleaned up by the next runtime.
    std::fs::create_dir(&left).expect("recreate");
    std::fs::write(left.join(".nicompute-allocation"), b"").expect("marker");
    let second = runtime(&dir);
    assert_eq!(second.host_public_key().expect("host key"), key, "generated once");
    assert!(second.list().await.expect("list").is_empty());
    assert!(!left.exists(), "stale allocation dirs are deleted");
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_copies_files_both_ways() {
    if !ssh_tools(false) || !harness::on_path("scp") {
        return;
    }
    let sftp = ["/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/lib/ssh/sftp-server"];
    let has_sftp = sftp.iter().any(|p| Path::new(p).is_file());
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "renter");
    let rt = runtime(&dir);
    let (c, port) = started(&rt, "scp", vec![public]).await;
    let local = dir.path().join("payload");
    std::fs::write(&local, b"weights\n").expect("write payload");
    // -O: the legacy protocol, through exec; without it scp speaks sftp (needs sftp-server).
    let modes: &[&[&str]] = if has_sftp { &[&["-O"], &[]] } else { &[&["-O"]] };
    if !has_sftp {
        eprintln!("sftp part skipped: no OpenSSH sftp-server on this host");
    }
    for (i, mode) in modes.iter().enumerate() {
        let scp = |from: String, to: String| {
            let mut cmd = command("scp");
            cmd.args(*mode)
                .args(["-P", &port.to_string(), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
                .args(["-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
                .arg(&key)
                .args([from, to]);
            cmd
        };
        let remote = format!("root@127.0.0.1:up{i}");
        let out = run(scp(local.display().to_string(), remote.clone()), None).await;
        assert!(out.status.success(), "scp {mode:?} up: {}", describe(&out));
        assert_eq!(std::fs::read(rt.allocation_dir("scp").join(format!("up{i}"))).expect("uploaded"), b"weights\n");
        let back = dir.path().join(format!("back{i}"));
        let out = run(scp(remote, back.display().to_string()), None).await;
        assert!(out.status.success(), "scp {mode:?} down: {}", describe(&out));
        assert_eq!(std::fs::read(&back).expect("downloaded"), b"weights\n");
    }
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_runtime_stops_its_servers_and_processes() {
    let Some(Setup { dir: _dir, rt, key, c: _c, port }) = setup("dropped").await else { return };
    let out = ssh_key(port, &key, "nohup sleep 300 >/dev/null 2>&1 & echo $!").await;
    let pid: u32 = stdout(&out).trim().parse().expect("a pid");
    drop(rt);
    let deadline = Instant::now() + Duration::from_secs(5);
    let freed = loop {
        let dead = state_of(pid).is_none_or(|s| s == 'Z');
        let free = std::net::TcpListener::bind((LOCALHOST, port)).is_ok();
        if (dead && free) || Instant::now() > deadline {
            break (dead, free);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(freed, (true, true), "(processes killed, port free)");
}
