//! `nicompute devnet demo`: the main job, end to end, as a user would type it — `devnet up`,
//! `list_r`, `a --gpu_type h100 --gpu_size 80`, a command in the allocation over SSH, `list_a`,
//! `d`, `devnet down` — each step run as its own `nicompute` process and printed with its
//! output. Every step is checked for what it claims (the H100 listed, the allocation recorded,
//! the command's output received, the allocation gone, no process left), and the demo exits 0
//! only if all of them hold. On a failure the devnet is still taken down and its directory, with
//! the logs, is kept.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::up::{ChainChoice, RuntimeChoice};
use crate::opts::GlobalOpts;
use crate::output::{Output, Reported};

/// What the SSH step runs inside the allocation.
const REMOTE_COMMAND: &str = r#"echo "hello from $(whoami)@$(hostname)"; uname -sr"#;
const REMOTE_MARKER: &str = "hello from ";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The devnet directory [default: a new temporary one, deleted at the end]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Where allocations run (passed to `devnet up`).
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Auto)]
    pub runtime: RuntimeChoice,
    /// The chain (passed to `devnet up`): nicompute's embedded chain, or the real Subtensor
    /// runtime under chopsticks.
    #[arg(long, value_enum, default_value_t = ChainChoice::Embedded)]
    pub chain: ChainChoice,
    /// Leave the devnet running at the end (skip `devnet down`).
    #[arg(long)]
    pub keep: bool,
    /// How many miners (passed to `devnet up`; SN27 allows 256 on a subnet).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub miners: u16,
}

#[derive(Debug, Serialize)]
struct Step {
    command: String,
    ok: bool,
    seconds: f64,
    /// What was checked, or why it failed.
    check: String,
}

struct Demo<'a> {
    out: &'a mut Output,
    /// Set by Ctrl-C: the remaining steps are skipped, the devnet still goes down.
    interrupted: Arc<AtomicBool>,
    exe: PathBuf,
    config: PathBuf,
    steps: Vec<Step>,
}

/// A step's captured run.
struct Run {
    ok: bool,
    stdout: Vec<u8>,
}

impl Demo<'_> {
    fn say(&mut self, text: &str) {
        if !self.out.json {
            self.out.passthrough(text.as_bytes(), b"");
        }
    }

    /// Runs `nicompute <args>`, shows it and its output; stderr (progress, notes) goes straight
    /// through.
    fn run(&mut self, args: &[&str], show: bool) -> anyhow::Result<Run> {
        let mut c = Command::new(&self.exe);
        c.args(args).stdin(Stdio::null()).stdout(Stdio::piped());
        c.stderr(if show { Stdio::inherit() } else { Stdio::null() });
        c.env_remove(crate::opts::CONFIG_ENV).env_remove(crate::opts::DB_ENV);
        let o = c.output().with_context(|| format!("running {}", self.exe.display()))?;
        if show && !self.out.json {
            self.out.passthrough(&o.stdout, b"");
        }
        Ok(Run { ok: o.status.success(), stdout: o.stdout })
    }

    /// The JSON result of a quiet `nicompute --config C --json <args>`.
    fn query(&mut self, args: &[&str]) -> anyhow::Result<Value> {
        let config = self.config.display().to_string();
        let mut full = vec!["--config", config.as_str(), "--json"];
        full.extend_from_slice(args);
        let r = self.run(&full, false)?;
        serde_json::from_slice(&r.stdout).with_context(|| format!("reading the JSON of `nicompute {}`", args.join(" ")))
    }

    /// One shown step: `nicompute [--config C] <args>`, then `check` on success.
    fn step(
        &mut self,
        with_config: bool,
        args: &[&str],
        check: impl FnOnce(&mut Self, &Run) -> Result<String, String>,
    ) -> anyhow::Result<bool> {
        let config = self.config.display().to_string();
        let mut full: Vec<&str> = Vec::new();
        if with_config {
            full.extend(["--config", config.as_str()]);
        }
        full.extend_from_slice(args);
        let shown = format!("nicompute {}", shell_words::join(&full));
        if self.interrupted.load(Ordering::SeqCst) && args.get(1) != Some(&"down") {
            self.steps.push(Step { command: shown, ok: false, seconds: 0.0, check: "skipped: interrupted".into() });
            return Ok(false);
        }
        self.say(&format!("\n$ {shown}\n"));
        let t = Instant::now();
        let r = self.run(&full, true)?;
        let verdict = if r.ok { check(self, &r) } else { Err("the command failed (see above)".into()) };
        let seconds = t.elapsed().as_secs_f64();
        let ok = verdict.is_ok();
        let check = verdict.unwrap_or_else(|e| e);
        self.say(&format!("{} {check} ({seconds:.2} s)\n", if ok { "  ✓" } else { "  ✗" }));
        self.steps.push(Step { command: shown, ok, seconds, check });
        Ok(ok)
    }
}

impl DemoArgs {
    pub async fn run(&self, _g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let temporary = self.dir.is_none();
        let dir = match &self.dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("nicompute-demo-{}", std::process::id())),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let exe = std::env::current_exe().context("finding the nicompute binary")?;
        // Ctrl-C reaches the step's process (same process group), which fails; the demo itself
        // keeps going to take the devnet down.
        let interrupted = Arc::new(AtomicBool::new(false));
        let flag = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
        });
        let mut demo = Demo { out, interrupted, exe, config: dir.join("config.toml"), steps: Vec::new() };
        let t0 = Instant::now();
        demo.say(&format!(
            "nicompute devnet demo: a chain, {} miner(s) with simulated GPUs and a renter, all on this machine ({}).\n",
            self.miners,
            dir.display()
        ));
        // Blocking work (child processes) off the async runtime's workers.
        let (ok, steps, keep_dir) = tokio::task::block_in_place(|| {
            let ok = self.main_job(&mut demo, &dir);
            let ok = match ok {
                Ok(ok) => ok,
                Err(e) => {
                    demo.say(&format!("  ✗ {e:#}\n"));
                    false
                }
            };
            let mut all_ok = ok;
            if !self.keep {
                let dir_s = dir.display().to_string();
                let mut args = vec!["devnet", "down", "--dir", dir_s.as_str()];
                if temporary && ok {
                    args.push("--delete");
                }
                let down_ok = demo
                    .step(false, &args, |d, _| {
                        if temporary && ok {
                            return if dir.exists() {
                                Err("the directory is still there".into())
                            } else {
                                Ok("nothing left".into())
                            };
                        }
                        let v = d.query(&["devnet", "status", "--dir", &dir_s]);
                        let running = v.map_or(0, |v| {
                            let m =
                                v["miners"].as_array().map_or(0, |m| m.iter().filter(|m| m["running"] == true).count());
                            m + usize::from(v["chain_process"]["running"] == true)
                        });
                        if running == 0 {
                            Ok("no devnet process left".into())
                        } else {
                            Err(format!("{running} process(es) still running"))
                        }
                    })
                    .unwrap_or(false);
                all_ok &= down_ok;
            }
            (all_ok, std::mem::take(&mut demo.steps), !(temporary && ok) || self.keep)
        });
        let total = t0.elapsed().as_secs_f64();
        #[derive(Serialize)]
        struct Doc {
            ok: bool,
            seconds: f64,
            dir: String,
            kept: bool,
            steps: Vec<Step>,
        }
        let doc = Doc { ok, seconds: total, dir: dir.display().to_string(), kept: keep_dir, steps };
        out.result(&doc, |o| {
            writeln!(o)?;
            if doc.ok {
                writeln!(o, "demo: all {} steps did what they say, in {:.1} s", doc.steps.len(), doc.seconds)?;
            } else {
                let failed = doc.steps.iter().filter(|s| !s.ok).count();
                writeln!(
                    o,
                    "demo FAILED: {failed} of {} steps did not do what they say ({:.1} s)",
                    doc.steps.len(),
                    doc.seconds
                )?;
            }
            if doc.kept {
                writeln!(o, "the devnet directory (logs in {}/logs) is kept: {}", doc.dir, doc.dir)?;
            }
            Ok(())
        });
        if ok {
            Ok(())
        } else {
            Err(Reported("the demo failed".into()).into())
        }
    }

    /// up → list_r → a → ssh → list_a → d; false at the first step that fails.
    fn main_job(&self, d: &mut Demo<'_>, dir: &Path) -> anyhow::Result<bool> {
        let dir_s = dir.display().to_string();
        let runtime = format!("{:?}", self.runtime).to_lowercase();
        let chain = format!("{:?}", self.chain).to_lowercase();
        let miners = self.miners.to_string();
        let args = ["devnet", "up", "--dir", &dir_s, "--runtime", &runtime, "--chain", &chain, "--miners", &miners];
        let up = d.step(false, &args, |d, _| {
            let v = d.query(&["devnet", "status"]).map_err(|e| e.to_string())?;
            let n = v["miners"].as_array().map_or(0, Vec::len);
            if v["healthy"] == true {
                Ok(format!(
                    "{} chain and {n} miners running and answering ({} runtime)",
                    v["chain_kind"].as_str().unwrap_or("?"),
                    v["runtime"].as_str().unwrap_or("?")
                ))
            } else {
                Err("not every process is healthy".into())
            }
        })?;
        if !up {
            return Ok(false);
        }
        if !d.step(true, &["list_r"], |d, _| {
            let v = d.query(&["list_r"]).map_err(|e| e.to_string())?;
            let rows = v["resources"].as_array().cloned().unwrap_or_default();
            let h100 = rows.iter().any(|r| r["gpu_name"].as_str().is_some_and(|n| n.contains("H100")));
            if h100 {
                Ok(format!("{} machines listed, an H100 among them", rows.len()))
            } else {
                Err("no H100 machine listed".into())
            }
        })? {
            return Ok(false);
        }
        let mut hotkey = String::new();
        if !d.step(true, &["a", "--gpu_type", "h100", "--gpu_size", "80"], |d, _| {
            let v = d.query(&["list_a"]).map_err(|e| e.to_string())?;
            let rows = v.as_array().cloned().unwrap_or_default();
            match rows.as_slice() {
                [one] => {
                    hotkey = one["hotkey"].as_str().unwrap_or_default().to_owned();
                    Ok(format!("allocated {hotkey}, recorded in the database"))
                }
                other => Err(format!("{} allocations recorded, expected 1", other.len())),
            }
        })? {
            return Ok(false);
        }
        let ssh = d.step(true, &["ssh", &hotkey, "--builtin", "--", "sh", "-c", REMOTE_COMMAND], |_, r| {
            let text = String::from_utf8_lossy(&r.stdout);
            if text.contains(REMOTE_MARKER) {
                Ok("the command ran in the allocation over SSH".into())
            } else {
                Err("the command's output did not come back".into())
            }
        })?;
        let listed = d.step(true, &["list_a"], |_, r| {
            if String::from_utf8_lossy(&r.stdout).contains(&hotkey) {
                Ok("the allocation is listed".into())
            } else {
                Err("the allocation is not listed".into())
            }
        })?;
        // Deallocate even when the SSH step failed: nothing is left allocated.
        let freed = d.step(true, &["d", &hotkey], |d, _| {
            let v = d.query(&["list_a"]).map_err(|e| e.to_string())?;
            if v.as_array().is_some_and(Vec::is_empty) {
                Ok("deallocated; no allocation left".into())
            } else {
                Err("the allocation is still recorded".into())
            }
        })?;
        Ok(ssh && listed && freed)
    }
}
