//! The interactive shell (`nicompute` with no command) on a real pseudo-terminal, driven by a
//! small Python `pty` script: `sync`, `a` answering its GPU prompts, `list_a`, `help`, an unknown
//! command that does not end the shell, `exit` with status 0 and the history file. Without a
//! terminal, `nicompute` alone is a usage error at once.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{in_home, nicompute};
use crate::renter_world::{text, World, H100};

/// Spawns `argv[3:]` under a pseudo-terminal and plays `argv[1]` (JSON steps: `{"expect": text}`
/// waits for text after the previous match, `{"send": text}` types it); then reads to the end,
/// writes everything the terminal showed to `argv[2]` and exits with the child's status. A step
/// that waits in vain (a hang guard, 180 s) kills the child and exits 99.
const PTY_DRIVER: &str = r#"
import fcntl, json, os, pty, select, signal, struct, sys, termios, time

steps = json.loads(sys.argv[1])
log_path = sys.argv[2]
cmd = sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    try:
        # A wide window, so tables are not wrapped.
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 400, 0, 0))
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)

buf = b""
pos = 0

def save():
    with open(log_path, "wb") as f:
        f.write(buf)

def pump(timeout):
    """Reads what is there; False at the end of the terminal's output."""
    global buf
    r, _, _ = select.select([fd], [], [], timeout)
    if not r:
        return True
    try:
        data = os.read(fd, 65536)
    except OSError:
        return False
    if not data:
        return False
    buf += data
    return True

def fail(msg):
    save()
    sys.stderr.write(msg + "\n")
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    sys.exit(99)

for step in steps:
    if "expect" in step:
        pat = step["expect"].encode()
        deadline = time.monotonic() + 180
        while True:
            i = buf.find(pat, pos)
            if i >= 0:
                pos = i + len(pat)
                break
            if time.monotonic() > deadline:
                fail("timed out waiting for %r" % step["expect"])
            if not pump(0.2):
                if buf.find(pat, pos) < 0:
                    fail("the terminal closed before %r" % step["expect"])
    else:
        os.write(fd, step["send"].encode())

deadline = time.monotonic() + 180
while pump(0.2):
    if time.monotonic() > deadline:
        fail("the shell did not end")
_, status = os.waitpid(pid, 0)
save()
sys.exit(os.waitstatus_to_exitcode(status))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_on_a_terminal_allocates_lists_helps_survives_errors_and_exits() {
    let mut w = World::new().await;
    let m = w.add_miner().await;
    let miner = w.spawn_miner(&m, "local", H100).await;
    w.wait_ready(&m, &miner).await;
    let hotkey = m.key.ss58();

    let prompt = json!({"expect": "nicompute> "});
    let steps = json!([
        prompt,
        {"send": "sync\r"},
        {"expect": "sync: 1 of 1 serving miners answered"},
        prompt,
        {"send": "a --no-ssh-key\r"},
        {"expect": "Enter GPU type:"},
        {"send": "h100\r"},
        {"expect": "Enter GPU memory in GB:"},
        {"send": "80\r"},
        {"expect": "Hotkey:"},
        {"expect": "SSH:"},
        prompt,
        {"send": "list_a\r"},
        {"expect": "1 allocation(s)"},
        prompt,
        {"send": "help\r"},
        {"expect": "a_hotkey"},
        prompt,
        {"send": "frobnicate --now\r"},
        {"expect": "error"},
        prompt,
        {"send": "list_p\r"},
        {"expect": "0 penalized"},
        prompt,
        {"send": "exit\r"},
    ]);
    let log_dir = tempfile::tempdir().expect("tmp");
    let log = log_dir.path().join("terminal.log");
    // The driver runs the binary in the harness's clean environment, with the world's HOME.
    let mut c = in_home("python3", w.home.path());
    c.arg("-c")
        .arg(PTY_DRIVER)
        .arg(steps.to_string())
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_nicompute"))
        .args(w.global_args())
        .env("TERM", "xterm");
    let out = tokio::task::spawn_blocking(move || c.output().expect("python3")).await.expect("join");
    let screen = std::fs::read(&log).map(|b| text(&b)).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "driver: {}\nterminal:\n{screen}", text(&out.stderr));

    // What `a` printed: the allocated miner and how to log in.
    let after_a = &screen[screen.find("Enter GPU memory in GB:").expect("prompt")..];
    assert!(after_a.contains(&format!("Hotkey:     {hotkey}")), "{screen}");
    assert!(
        after_a.contains("SSH:        ssh ") && after_a.contains(&format!("@127.0.0.1 -p {}", miner.ssh_port)),
        "{screen}"
    );
    // `list_a` showed it, `help` listed the commands, the unknown command was an error.
    let after_list = &screen[screen.find("list_a").expect("list_a")..];
    assert!(after_list.contains(&hotkey), "{screen}");
    assert!(screen.contains("frobnicate"), "{screen}");

    // The database agrees, and the history was saved where the shell keeps it.
    let rows = w.cli(&["list_a", "--json"]).await;
    let v = crate::renter_world::json(&rows);
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v[0]["hotkey"], hotkey.as_str());
    let history = w.home.path().join(".local/share/nicompute/shell_history");
    let saved = std::fs::read_to_string(&history).unwrap_or_else(|e| panic!("{}: {e}", history.display()));
    for line in ["sync", "a --no-ssh-key", "list_a", "frobnicate --now"] {
        assert!(saved.lines().any(|l| l == line), "{line:?} missing from the history:\n{saved}");
    }

    let out = w.cli(&["d", &hotkey, "-y", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    miner.stop();
    w.chain.shutdown().await;
}

#[test]
fn no_command_without_a_terminal_is_a_usage_error_at_once() {
    let home = tempfile::tempdir().expect("tmp");
    // stdin is a pipe kept open: a shell that waited for input would never end.
    let mut child = nicompute(home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`nicompute` without a terminal waited for input");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("needs a terminal"), "{}", text(&out.stderr));
}
