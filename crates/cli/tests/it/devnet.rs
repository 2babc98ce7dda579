//! End-to-end: `nicompute devnet up/status/down/demo` as a user runs them — background chain and
//! miner processes, the config file, and the failures a real network has: a miner killed while
//! `d` waits on it, the chain restarted under running miners, a miner gone offline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::nicompute;
use crate::renter_world::{docker, json, text};

/// A devnet directory and a HOME for one test; `down` runs on drop so a failing test leaves no
/// process behind.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub home: tempfile::TempDir,
}

impl Net {
    pub fn new() -> Net {
        Net { dir: tempfile::tempdir().expect("tmp"), home: tempfile::tempdir().expect("tmp") }
    }

    pub fn dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    pub fn config(&self) -> String {
        self.dir.path().join("config.toml").display().to_string()
    }

    pub fn command(&self) -> Command {
        nicompute(self.home.path())
    }

    /// `nicompute <args>` (no config).
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run")
    }

    /// `nicompute <args>` with the devnet's config taken from NICOMPUTE_CONFIG, as `up` suggests.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().env("NICOMPUTE_CONFIG", self.config()).args(args).output().expect("run")
    }

    pub fn up(&self, extra: &[&str]) -> Value {
        let mut args = vec!["--json", "devnet", "up", "--dir", self.dir.path().to_str().expect("utf8")];
        args.extend_from_slice(extra);
        let o = self.run(&args);
        assert!(o.status.success(), "devnet up failed: {}\n{}", text(&o.stdout), text(&o.stderr));
        json(&o)
    }

    pub fn status(&self) -> (bool, Value) {
        let o = self.run(&["--json", "devnet", "status", "--dir", &self.dir()]);
        (o.status.success(), json(&o))
    }

    pub fn miner(&self, status: &Value, name: &str) -> Value {
        status["miners"].as_array().expect("miners").iter().find(|m| m["name"] == name).expect("miner").clone()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = self.run(&["devnet", "down", "--dir", &self.dir()]);
    }
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s[s.rfind(')')? + 1..].split_whitespace().next().map(|st| st != "Z" && st != "X"))
        .unwrap_or(false)
}

pub fn pids(status: &Value) -> Vec<u64> {
    let mut v: Vec<u64> =
        status["miners"].as_array().expect("miners").iter().filter_map(|m| m["pid"].as_u64()).collect();
    v.extend(status["chain_process"]["pid"].as_u64());
    v
}

pub fn signal(pid: u64, sig: &str) {
    crate::harness::signal(u32::try_from(pid).expect("pid"), sig);
}

pub fn wait_dead(pid: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn allocated_hotkey(net: &Net, args: &[&str]) -> String {
    let o = net.cli(&[&["--json", "a"][..], args].concat());
    assert!(o.status.success(), "a failed: {}\n{}", text(&o.stdout), text(&o.stderr));
    json(&o)["hotkey"].as_str().expect("hotkey").to_owned()
}

pub fn list_a(net: &Net) -> Vec<Value> {
    let o = net.cli(&["--json", "list_a"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    json(&o).as_array().expect("array").clone()
}

fn ssh_hello(net: &Net, hotkey: &str) -> String {
    let o = net.cli(&["ssh", hotkey, "--builtin", "--", "echo", "hello from the allocation"]);
    assert!(o.status.success(), "ssh failed: {}", text(&o.stderr));
    text(&o.stdout)
}

/// `devnet demo` with this allocation runtime and chain, as a user runs it; checks every step.
pub fn run_demo(runtime: &str, chain: &str) {
    run_demo_with(runtime, chain, 4);
}

/// [`run_demo`] on a network of `miners` miners.
pub fn run_demo_with(runtime: &str, chain: &str, miners: u16) {
    let home = tempfile::tempdir().expect("tmp");
    let tmp = tempfile::tempdir().expect("tmp");
    let o = nicompute(home.path())
        .args(["devnet", "demo", "--runtime", runtime, "--chain", chain, "--miners", &miners.to_string()])
        .env("TMPDIR", tmp.path())
        .output()
        .expect("demo");
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "demo failed:\n{stdout}\n{}", text(&o.stderr));
    for shown in [
        "$ nicompute devnet up",
        "list_r",
        "a --gpu_type h100 --gpu_size 80",
        "hello from ",
        "list_a",
        "$ nicompute devnet down",
        "demo: all 7 steps did what they say",
    ] {
        assert!(stdout.contains(shown), "the demo did not show {shown:?}:\n{stdout}");
    }
    assert!(stdout.contains(&format!("runtime {runtime}")), "{stdout}");
    assert!(stdout.contains(&format!("{chain} chain and {miners} miners running")), "{stdout}");
    // The temporary devnet directory is gone, with every process it had.
    let left: Vec<PathBuf> = std::fs::read_dir(tmp.path()).expect("ls").map(|e| e.expect("entry").path()).collect();
    assert!(left.is_empty(), "the demo left {left:?}");
}

#[test]
fn demo_runs_the_main_job_with_the_local_runtime() {
    run_demo("local", "embedded");
}

/// The demo's whole flow (up → list_r → a → ssh → list_a → d → down) on a 64-miner network: 64
/// miner processes, each with its own hotkey, axon port, SSH port and state, all registered and
/// serving; every one is checked by `a`. Runs alone (nextest group `network`).
#[test]
fn many_miners_demo_runs_on_a_64_miner_network() {
    run_demo_with("local", "embedded", 64);
}

#[tokio::test(flavor = "multi_thread")]
async fn devnet_docker_demo_runs_the_main_job_in_containers() {
    if docker().await.is_none() {
        return;
    }
    run_demo("docker", "embedded");
}

/// An H100 allocated with `a`, a command run in it over SSH, released with `d`: its hotkey.
fn allocate_use_and_release(net: &Net) -> String {
    let hk = allocated_hotkey(net, &["--gpu_type", "h100", "--gpu_size", "80"]);
    assert!(ssh_hello(net, &hk).contains("hello from the allocation"));
    let o = net.cli(&["d", &hk]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    hk
}

/// `devnet down` succeeds and no process of `status` survives it.
fn down_stops_everything(net: &Net, status: &Value) {
    let o = net.run(&["devnet", "down", "--dir", &net.dir()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for pid in pids(status) {
        assert!(!alive(pid), "process {pid} survived devnet down");
    }
}

#[test]
fn up_twice_starts_one_network_and_the_config_serves_every_command() {
    let net = Net::new();
    let first = net.up(&["--runtime", "local", "--miners", "2", "--gpus", "h100,cpu"]);
    assert_eq!(first["started"].as_array().expect("started").len(), 3, "{first}");
    assert_eq!(first["healthy"], true);
    assert_eq!(first["sync"]["answered"], 2, "{first}");
    let second = net.up(&[]);
    assert_eq!(second["started"], serde_json::json!([]), "a second up starts nothing");
    assert_eq!(pids(&first), pids(&second));
    // Asking for another shape of network in the same directory is refused, not merged.
    let o = net.run(&["devnet", "up", "--dir", &net.dir(), "--miners", "3"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("has miners 2, not 3"), "{}", text(&o.stderr));

    let (ok, st) = net.status();
    assert!(ok);
    assert_eq!(st["config"], net.config());
    assert!(st["chain"].as_str().expect("chain").starts_with("ws://127.0.0.1:"));
    let v = &st["validator"];
    assert_eq!(v["wallet_name"], "validator");
    assert_eq!(v["wallet_hotkey"], "default");
    assert!(Path::new(v["wallet_path"].as_str().expect("path")).join("validator/hotkeys/default").is_file());
    let m0 = net.miner(&st, "miner-0");
    for field in ["hotkey", "axon", "ssh_port", "runtime", "pid", "healthy"] {
        assert!(!m0[field].is_null(), "status lacks miners[].{field}: {m0}");
    }
    assert_eq!(m0["runtime"], "local");
    assert_eq!(m0["healthy"], true);

    // The config file carries chain, wallet and database: flags are not needed, and win over it.
    let o = net.cli(&["--json", "list_r"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(json(&o)["resources"].as_array().expect("rows").len(), 2);
    let o = net.cli(&["--json", "--db", &net.dir.path().join("other.db").display().to_string(), "list_r"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(json(&o)["resources"].as_array().expect("rows").len(), 0, "--db wins over the config file");
    let o = net
        .command()
        .env("NICOMPUTE_CONFIG", net.config())
        .env("BT_WALLET_NAME", "nobody")
        .arg("sync")
        .output()
        .expect("run");
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("'nobody'"), "the environment wins over the config file: {}", text(&o.stderr));
    let hk = allocate_use_and_release(&net);
    assert_eq!(hk, m0["hotkey"].as_str().expect("hotkey"));

    // down: nothing left running; a second down is a no-op; --delete removes the directory.
    down_stops_everything(&net, &st);
    let (ok, after) = net.status();
    assert!(!ok, "status exits 1 when the devnet is down");
    assert_eq!(after["chain_process"]["running"], false);
    let o = net.run(&["devnet", "down", "--dir", &net.dir()]);
    assert!(text(&o.stdout).contains("nothing was running"), "{}", text(&o.stdout));
    let o = net.run(&["devnet", "down", "--dir", &net.dir(), "--delete"]);
    assert!(o.status.success());
    assert!(!net.dir.path().exists());
}

/// `--miners-per-process`: four miners in two `miner group` processes, each miner still its own
/// hotkey, axon and SSH port; the network allocates from them, a group lives and dies as one
/// process, and `down` stops both.
#[test]
fn miners_per_process_runs_groups_that_serve_like_separate_miners() {
    let net = Net::new();
    let up =
        net.up(&["--runtime", "local", "--miners", "4", "--gpus", "h100,h100,h100,h100", "--miners-per-process", "2"]);
    assert_eq!(up["started"], serde_json::json!(["chain", "miners-0", "miners-1"]), "{up}");
    assert_eq!(up["healthy"], true, "{up}");
    assert_eq!(up["sync"]["answered"], 4, "every miner of both groups answers: {up}");
    let (ok, st) = net.status();
    assert!(ok);
    let pid = |name: &str| net.miner(&st, name)["pid"].as_u64().expect("pid");
    assert_eq!(pid("miner-0"), pid("miner-1"));
    assert_eq!(pid("miner-2"), pid("miner-3"));
    assert_ne!(pid("miner-0"), pid("miner-2"));
    let axons: std::collections::HashSet<String> = ["miner-0", "miner-1", "miner-2", "miner-3"]
        .iter()
        .map(|m| net.miner(&st, m)["axon"].as_str().expect("axon").to_owned())
        .collect();
    assert_eq!(axons.len(), 4, "an axon each: {axons:?}");
    assert!(net.miner(&st, "miner-3")["log"].as_str().expect("log").ends_with("miners-1.log"));
    // A second up with another grouping is refused.
    let o = net.run(&["devnet", "up", "--dir", &net.dir(), "--miners-per-process", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("has miners per process 2, not 1"), "{}", text(&o.stderr));

    // The second group's process dies: its two miners are gone, the others still allocate.
    signal(pid("miner-2"), "-KILL");
    wait_dead(pid("miner-2"));
    let (ok, after) = net.status();
    assert!(!ok, "status says the devnet is not healthy");
    assert_eq!(net.miner(&after, "miner-3")["running"], false);
    assert_eq!(net.miner(&after, "miner-0")["healthy"], true);
    let hk = allocate_use_and_release(&net);
    let in_first = [net.miner(&st, "miner-0")["hotkey"].clone(), net.miner(&st, "miner-1")["hotkey"].clone()];
    assert!(in_first.contains(&Value::String(hk.clone())), "{hk} is in the live group");
    down_stops_everything(&net, &st);
}

#[test]
fn a_miner_killed_during_d_leaves_it_pending_until_reconcile() {
    let net = Net::new();
    let st = net.up(&["--runtime", "local", "--miners", "1", "--gpus", "h100"]);
    let hk = allocated_hotkey(&net, &["--gpu_type", "h100", "--gpu_size", "80"]);
    let pid = net.miner(&st, "miner-0")["pid"].as_u64().expect("pid");
    let axon = net.miner(&st, "miner-0")["axon"].as_str().expect("axon").to_owned();
    let axon_port: u16 = axon.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("axon port");
    // Freeze the miner so `d` is left waiting on it, then kill it while `d` waits.
    signal(pid, "-STOP");
    let mut d = net
        .command()
        .env("NICOMPUTE_CONFIG", net.config())
        .args(["--json", "d", &hk, "--timeout", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("d");
    // `d` has reached the frozen miner once its connection is up (the kernel accepts it).
    crate::harness::wait_for("d connecting to the frozen miner", Duration::from_secs(30), || {
        crate::harness::connected_to(axon_port)
    });
    assert!(d.try_wait().expect("try_wait").is_none(), "d should be waiting on the frozen miner");
    signal(pid, "-KILL");
    wait_dead(pid);
    let o = d.wait_with_output().expect("d");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    assert_eq!(json(&o)[0]["result"], "pending");
    let rows = list_a(&net);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["state"], "pending_deallocation");

    let (ok, down) = net.status();
    assert!(!ok);
    assert_eq!(net.miner(&down, "miner-0")["running"], false);
    let again = net.up(&[]);
    assert_eq!(again["started"], serde_json::json!(["miner-0"]), "up restarts only the dead miner");
    let o = net.cli(&["reconcile"]);
    assert!(o.status.success(), "{}\n{}", text(&o.stdout), text(&o.stderr));
    assert!(list_a(&net).is_empty(), "reconcile completed the deallocation");
    // The miner is free again.
    let hk2 = allocated_hotkey(&net, &["--gpu_type", "h100", "--gpu_size", "80"]);
    assert_eq!(hk2, hk);
}

#[test]
fn the_chain_restarted_under_running_miners_and_the_cli() {
    let net = Net::new();
    let st = net.up(&["--runtime", "local", "--miners", "2", "--gpus", "h100,a100"]);
    let chain_pid = st["chain_process"]["pid"].as_u64().expect("pid");
    let miner_pids: Vec<u64> = pids(&st).into_iter().filter(|p| *p != chain_pid).collect();
    signal(chain_pid, "-KILL");
    wait_dead(chain_pid);

    // Without the chain, commands that need it fail with a message naming it.
    let o = net.cli(&["sync"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains(st["chain"].as_str().expect("chain")), "{}", text(&o.stderr));
    let (ok, down) = net.status();
    assert!(!ok);
    assert_eq!(down["chain_process"]["running"], false);

    let again = net.up(&[]);
    assert_eq!(again["started"], serde_json::json!(["chain"]));
    assert_eq!(again["chain"], st["chain"], "same endpoint");
    for pid in &miner_pids {
        assert!(alive(*pid), "the miners kept running");
    }
    assert_eq!(again["sync"]["answered"], 2, "{again}");
    let hk = allocated_hotkey(&net, &["--gpu_type", "a100", "--gpu_size", "40"]);
    assert!(ssh_hello(&net, &hk).contains("hello"));
    let o = net.cli(&["d", &hk]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn an_offline_miner_is_listed_stale_and_skipped_by_a() {
    let net = Net::new();
    let st = net.up(&["--runtime", "local", "--gpus", "h100,h100,cpu"]);
    let m0 = net.miner(&st, "miner-0");
    let m1 = net.miner(&st, "miner-1");
    let pid = m0["pid"].as_u64().expect("pid");
    signal(pid, "-KILL");
    wait_dead(pid);

    let o = net.cli(&["--json", "sync", "--timeout", "3s"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let failed = json(&o)["failed"].clone();
    assert_eq!(failed.as_array().expect("failed").len(), 1, "{failed}");
    assert_eq!(failed[0][0], m0["hotkey"]);

    let o = net.cli(&["--json", "list_r"]);
    let rows = json(&o)["resources"].as_array().expect("rows").clone();
    let row = |hk: &Value| rows.iter().find(|r| &r["hotkey"] == hk).expect("row").clone();
    assert_eq!(row(&m0["hotkey"])["stale"], true, "the offline miner keeps its specs, marked stale");
    assert_eq!(row(&m1["hotkey"])["stale"], false);
    let human = text(&net.cli(&["list_r"]).stdout);
    let line = human.lines().find(|l| l.contains(m0["hotkey"].as_str().expect("hk"))).expect("line");
    assert!(line.contains("stale"), "{line}");

    let hk = allocated_hotkey(&net, &["--gpu_type", "h100", "--gpu_size", "80"]);
    assert_eq!(hk, m1["hotkey"].as_str().expect("hk"), "a skips the offline H100 and takes the live one");
    let o = net.cli(&["d", &hk]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn devnet_docker_down_leaves_no_process_and_no_container() {
    let Some(_docker) = docker().await else { return };
    let net = Net::new();
    let st = tokio::task::block_in_place(|| net.up(&["--runtime", "docker", "--miners", "2", "--gpus", "h100,cpu"]));
    assert_eq!(st["runtime"], "docker");
    let hk = tokio::task::block_in_place(|| allocated_hotkey(&net, &["--gpu_type", "h100", "--gpu_size", "80"]));
    let ps = |hk: &str, all: bool| -> Vec<String> {
        let filter = format!("label=io.nicompute.scope={hk}");
        let args = if all { vec!["ps", "-aq", "--filter", &filter] } else { vec!["ps", "-q", "--filter", &filter] };
        let o = crate::harness::command("docker").args(args).output().expect("docker ps");
        text(&o.stdout).lines().map(str::to_owned).collect()
    };
    let containers = |hk: &str| ps(hk, true);
    // Beside it, each miner may keep a warm container (created, not running).
    assert_eq!(ps(&hk, false).len(), 1, "the allocation runs in a container labelled with its miner");
    tokio::task::block_in_place(|| {
        assert!(ssh_hello(&net, &hk).contains("hello"));
        // Down with the allocation still running: the container goes too.
        let o = net.run(&["--json", "devnet", "down", "--dir", &net.dir()]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let removed = json(&o)["containers_removed"].as_u64().unwrap_or(0);
        assert!((1..=4).contains(&removed), "the allocation's container and at most one warm one per miner: {removed}");
    });
    for pid in pids(&st) {
        assert!(!alive(pid), "process {pid} survived devnet down");
    }
    for m in st["miners"].as_array().expect("miners") {
        assert!(containers(m["hotkey"].as_str().expect("hk")).is_empty());
    }
}
