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
use compute::runtime::{ContainerRuntime, ContainerSpec, ContainerState, RuntimeError};
use secrecy::SecretString;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PASSWORD: &str = "correct horse battery staple";

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// `ssh` and `ssh-keygen` are there (and `sshpass` when `password` is set); otherwise says so.
fn tools(password: bool) -> bool {
    let present = on_path("ssh") && on_path("ssh-keygen") && (!password || on_path("sshpass"));
    assert!(
        present || std::env::var("CI").is_err(),
        "ssh, ssh-keygen and sshpass are required in CI (scripts/docker-up.sh)"
    );
    if !on_path("ssh") || !on_path("ssh-keygen") {
        eprintln!("skipped: no ssh client");
        return false;
    }
    if password && !on_path("sshpass") {
        eprintln!("skipped: no ssh client (sshpass is missing)");
        return false;
    }
    true
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind((LOCALHOST, 0)).expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

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
    }
}

fn runtime(dir: &tempfile::TempDir) -> LocalRuntime {
    LocalRuntime::new(dir.path().join("local")).expect("local runtime")
}

fn ssh_options(cmd: &mut Command, port: u16) {
    cmd.args(["-p", &port.to_string()])
        .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "-o", "ServerAliveInterval=5"]);
}

async fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn ssh");
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data).await.expect("write ssh's stdin");
        drop(pipe);
    }
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("ssh finished within 30 s")
        .expect("ssh ran")
}

/// `sshpass -p PASSWORD ssh … root@127.0.0.1 COMMAND`.
async fn ssh_password(port: u16, password: &str, command: &str) -> Output {
    let mut cmd = Command::new("sshpass");
    cmd.args(["-p", password, "ssh"]);
    ssh_options(&mut cmd, port);
    cmd.args(["-o", "BatchMode=no", "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"])
        .args(["-o", "NumberOfPasswordPrompts=1", "root@127.0.0.1", command]);
    run(cmd, None).await
}

/// `ssh -i KEY … root@127.0.0.1 [args…]` with `stdin`.
async fn ssh_key_with(port: u16, key: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new("ssh");
    ssh_options(&mut cmd, port);
    cmd.arg("-i")
        .arg(key)
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "PreferredAuthentications=publickey"])
        .args(args)
        .arg("root@127.0.0.1");
    run(cmd, stdin).await
}

async fn ssh_key(port: u16, key: &Path, command: &str) -> Output {
    let mut cmd = Command::new("ssh");
    ssh_options(&mut cmd, port);
    cmd.arg("-i")
        .arg(key)
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "PreferredAuthentications=publickey"])
        .args(["root@127.0.0.1", command]);
    run(cmd, None).await
}

/// A new ed25519 key pair: (private key path, public key line).
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    keygen_typed(dir, name, "ed25519")
}

fn keygen_typed(dir: &Path, name: &str, kind: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("read the public key");
    (path, public.trim().to_owned())
}

/// The state letter of a process in /proc (`S` sleeping, `T` stopped, `Z` zombie…).
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn describe(o: &Output) -> String {
    format!("status {:?}, stdout {:?}, stderr {:?}", o.status.code(), stdout(o), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_runs_uname_and_reports_timings() {
    if !tools(true) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir);
    let port = free_port();
    let t0 = Instant::now();
    let c = rt.start(&spec("pw", port, vec![])).await.expect("start");
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
    if !tools(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "renter");
    let rt = runtime(&dir);
    let port = free_port();
    let t0 = Instant::now();
    let c = rt.start(&spec("key", port, vec![public])).await.expect("start");
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
    if !tools(true) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir);
    let port = free_port();
    let c = rt.start(&spec("wrongpw", port, vec![])).await.expect("start");
    let out = ssh_password(port, "not the password", "echo in").await;
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!stdout(&out).contains("in"), "{}", describe(&out));
    // Another user with the right password is refused too: root only.
    let mut cmd = Command::new("sshpass");
    cmd.args(["-p", PASSWORD, "ssh"]);
    ssh_options(&mut cmd, port);
    cmd.args(["-o", "BatchMode=no", "-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1"])
        .args(["someone@127.0.0.1", "echo in"]);
    let out = run(cmd, None).await;
    assert!(!out.status.success(), "{}", describe(&out));
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_refused() {
    if !tools(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, public) = keygen(dir.path(), "listed");
    let (other, _) = keygen(dir.path(), "other");
    let rt = runtime(&dir);
    let port = free_port();
    let c = rt.start(&spec("wrongkey", port, vec![public])).await.expect("start");
    let out = ssh_key(port, &other, "echo in").await;
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{}", describe(&out));
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_and_stderr_propagate() {
    if !tools(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "renter");
    let rt = runtime(&dir);
    let port = free_port();
    let c = rt.start(&spec("exit", port, vec![public])).await.expect("start");
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
    if !tools(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "renter");
    let rt = runtime(&dir);
    let port = free_port();
    let c = rt.start(&spec("pwd", port, vec![public])).await.expect("start");
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
    if !tools(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "renter");
    let rt = runtime(&dir);
    let port = free_port();
    let c = rt.start(&spec("shell", port, vec![public])).await.expect("start");
    let out = ssh_key_with(port, &key, &["-T"], Some(b"echo hi; exit 3\n")).await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(stdout(&out), "hi\n");
    // Piped input to a command.
    let mut cmd = Command::new("ssh");
    ssh_options(&mut cmd, port);
    cmd.arg("-i").arg(&key).args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "root@127.0.0.1", "wc -c"]);
    let out = run(cmd, Some(&[b'x'; 100_000])).await;
    assert_eq!(stdout(&out).trim(), "100000", "{}", describe(&out));
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pty_request_gets_an_emulated_terminal() {
    if !tools(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "renter");
    let rt = runtime(&dir);
    let port = free_port();
    let c = rt.start(&spec("pty", port, vec![public])).await.expect("start");
    // -tt forces a PTY request although our stdin is a pipe; the keys arrive as typed.
    let out = ssh_key_with(port, &key, &["-tt"], Some(b"echo hi-there\rexit 4\r")).await;
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("hi-there\r\n"), "output is CRLF terminal output: {}", describe(&out));
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_authorized_keys_swaps_keys() {
    if !tools(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (old, old_public) = keygen(dir.path(), "old");
    let (new, new_public) = keygen(dir.path(), "new");
    let rt = runtime(&dir);
    let port = free_port();
    let c = rt.start(&spec("swap", port, vec![old_public])).await.expect("start");
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
    if !tools(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "renter");
    let rt = runtime(&dir);
    let port = free_port();
    let c = rt.start(&spec("pause", port, vec![public])).await.expect("start");
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
    if !tools(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "renter");
    let rt = runtime(&dir);
    let port = free_port();
    let c = rt.start(&spec("restart", port, vec![public])).await.expect("start");
    let long = {
        let key = key.clone();
        tokio::spawn(async move { ssh_key(port, &key, "echo started; sleep 60; echo finished").await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = Instant::now();
    rt.restart(&c.id).await.expect("restart");
    let out = long.await.expect("join");
    assert!(t0.elapsed() < Duration::from_secs(10), "the session was dropped");
    assert!(!stdout(&out).contains("finished"), "{}", describe(&out));
    assert!(!out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&ssh_key(port, &key, "echo again").await), "again\n");
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_frees_the_port_deletes_the_dir_and_kills_processes() {
    if !tools(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "renter");
    let rt = runtime(&dir);
    let port = free_port();
    let c = rt.start(&spec("gone", port, vec![public])).await.expect("start");
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
    // Two allocations cannot share a port either.
    drop(taken);
    let c = rt.start(&spec("first", port, vec![])).await.expect("start");
    let err = rt.start(&spec("second", port, vec![])).await;
    assert!(matches!(err, Err(RuntimeError::PortInUse { .. })), "{err:?}");
    rt.remove(&c.id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_reflects_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir);
    assert!(rt.list().await.expect("list").is_empty());
    let a = rt.start(&spec("a", free_port(), vec![])).await.expect("start a");
    let b = rt.start(&spec("b", free_port(), vec![])).await.expect("start b");
    rt.pause(&b.id).await.expect("pause b");
    let list = rt.list().await.expect("list");
    let states: Vec<(&str, &str, ContainerState)> =
        list.iter().map(|c| (c.id.as_str(), c.allocation_id.as_str(), c.state)).collect();
    assert_eq!(states, vec![("local-a", "a", ContainerState::Running), ("local-b", "b", ContainerState::Paused)]);
    // The same allocation twice is refused.
    assert!(rt.start(&spec("a", free_port(), vec![])).await.is_err());
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
    let c = first.start(&spec("left", free_port(), vec![])).await.expect("start");
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
    if !tools(false) || !on_path("scp") {
        return;
    }
    let sftp = ["/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/lib/ssh/sftp-server"];
    let has_sftp = sftp.iter().any(|p| Path::new(p).is_file());
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "renter");
    let rt = runtime(&dir);
    let port = free_port();
    let c = rt.start(&spec("scp", port, vec![public])).await.expect("start");
    let local = dir.path().join("payload");
    std::fs::write(&local, b"weights\n").expect("write payload");
    // -O: the legacy protocol, through exec; without it scp speaks sftp (needs sftp-server).
    let modes: &[&[&str]] = if has_sftp { &[&["-O"], &[]] } else { &[&["-O"]] };
    if !has_sftp {
        eprintln!("sftp part skipped: no OpenSSH sftp-server on this host");
    }
    for (i, mode) in modes.iter().enumerate() {
        let scp = |from: String, to: String| {
            let mut cmd = Command::new("scp");
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
    if !tools(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, public) = keygen(dir.path(), "renter");
    let rt = runtime(&dir);
    let port = free_port();
    rt.start(&spec("dropped", port, vec![public])).await.expect("start");
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
