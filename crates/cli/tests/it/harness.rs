//! What the CLI tests share: the one way to run the `nicompute` binary (every `NICOMPUTE_*`,
//! `BT_*` and `WANDB_*` variable cleared, a home of the test's own, no data directory and no
//! terminal), a miner process that binds port 0 and reports the ports it got, and small helpers
//! for output, signals and Docker. The process builder, SSH keys and ports are the compute
//! tests' harness (`common`, the same file), so the rule for a clean environment is written once.

// Helpers fail loudly (that is their job) and say on stderr why something is skipped.
#![allow(clippy::print_stderr)]

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use crate::common::{command, ClosedPort, PortLease};

/// `nicompute` with no setting from the environment of whoever runs the tests: every
/// `NICOMPUTE_*`, `BT_*`, `WANDB_*` variable (and `NETRC`, `XDG_DATA_HOME`) removed, HOME set to
/// `home`, stdin closed. Tests add the variables they mean to test.
pub fn nicompute(home: &Path) -> Command {
    in_home(env!("CARGO_BIN_EXE_nicompute"), home)
}

/// `program` in that same environment (a driver that runs the binary for the test).
pub fn in_home(program: impl AsRef<std::ffi::OsStr>, home: &Path) -> Command {
    let mut c = command(program);
    c.env("HOME", home).env_remove("XDG_DATA_HOME");
    c
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// stdout as JSON, failing with both streams when it is not.
pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", text(&out.stdout), text(&out.stderr)))
}

/// Sends `sig` (`-TERM`, `-KILL`, `-STOP`, `-INT`) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let st = command("kill").args([sig, &pid.to_string()]).status().expect("kill");
    assert!(st.success(), "kill {sig} {pid}");
}

/// A new passphrase-less ed25519 key pair `dir/id_ed25519`; returns the private key's path.
pub fn keygen(dir: &Path) -> PathBuf {
    crate::common::keygen(dir, "id_ed25519").private
}

/// Runs a Python 3 snippet with `args` (as `sys.argv[1:]`); its stdout, failing on error.
pub fn python(code: &str, args: &[&str]) -> String {
    let out = command("python3").arg("-c").arg(code).args(args).output().expect("python3");
    assert!(out.status.success(), "python3 failed: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Counts the rows of `table` in the SQLite file `db`, read with Python's sqlite3.
pub fn count_rows(db: &Path, table: &str) -> u64 {
    let code = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n\
                print(c.execute('SELECT count(*) FROM ' + sys.argv[2]).fetchone()[0])";
    python(code, &[db.to_str().expect("utf8"), table]).trim().parse().expect("count")
}

/// The Docker runtime, or `None` (after saying so) where no daemon answers — unless
/// `NICOMPUTE_REQUIRE_DOCKER=1` (CI), where that is a failure.
pub async fn docker() -> Option<compute::runtime::docker::DockerRuntime> {
    use compute::runtime::docker::DockerRuntime;
    match DockerRuntime::connect(crate::common::docker_config()).await {
        Ok(d) if d.ensure_image().await.is_ok() => Some(d),
        other => {
            let why = match other {
                Ok(_) => "the nicompute/sshd image is missing (scripts/build-ssh-image.sh)".to_owned(),
                Err(e) => e.to_string(),
            };
            crate::common::skip("NICOMPUTE_REQUIRE_DOCKER", &format!("no Docker daemon ({why})"));
            None
        }
    }
}

/// A `nicompute miner run` process and the ports it reported.
#[derive(Debug)]
pub struct MinerProc {
    pub child: Child,
    pub axon_port: u16,
    pub ssh_port: u16,
    /// The start-up document it printed (`--json`).
    pub start: Value,
    /// Kept open: the miner's stdout (it writes nothing after its start-up document).
    _stdout: BufReader<ChildStdout>,
}

impl MinerProc {
    /// Starts `cmd` (a `miner run` command line without `--json`) and waits for its start-up
    /// document: the axon's and the SSH server's real ports (`--axon.port 0`, and with the local
    /// runtime `--ssh.port 0`, let the miner bind free ones itself).
    pub fn spawn(mut cmd: Command) -> MinerProc {
        let mut child = cmd.arg("--json").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn miner");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let doc: Value = match serde_json::Deserializer::from_reader(&mut stdout).into_iter::<Value>().next() {
            Some(Ok(v)) => v,
            other => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                panic!("the miner did not report its start ({other:?}); it ended with {status}");
            }
        };
        let axon_port = doc["axon"]
            .as_str()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("no axon port in {doc}"));
        let ssh_port = doc["ssh_port"].as_u64().and_then(|p| u16::try_from(p).ok()).expect("ssh_port");
        MinerProc { child, axon_port, ssh_port, start: doc, _stdout: stdout }
    }

    /// `kill -9`, and reaped.
    pub fn kill(self) {
        drop(self);
    }

    /// SIGTERM, then SIGKILL after 15 s.
    pub fn stop(mut self) {
        let _ = command("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A test that fails midway leaves no miner running.
impl Drop for MinerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a TCP connection to (or from) local port `port` is established: a client has
/// connected, whether or not the server (a stopped process, say) has accepted it yet.
pub fn connected_to(port: u16) -> bool {
    let hex = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).unwrap_or_default().lines().skip(1).any(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local address, remote address, state (01: established)
            f.len() > 3 && f[3] == "01" && (f[1].ends_with(&hex) || f[2].ends_with(&hex))
        })
    })
}

/// Waits (up to `limit`) until `ready` says yes; fails with `what` otherwise.
pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
