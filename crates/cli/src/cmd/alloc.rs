//! `a` and `a_hotkey`: allocate a miner's machine by requirement or by hotkey.
//!
//! Candidates are the database's miners that meet the requirement, are not penalized, and serve
//! an axon in the metagraph; they are checked in parallel under one `--deadline` and the first
//! that says yes is allocated (compute::allocator). The intent is recorded before the miner is
//! asked, so Ctrl-C at any point leaves nothing orphaned: an interrupted allocation is released
//! on the spot (or by `reconcile`). Credentials are printed once, the password redacted unless
//! `--show-secrets`; the renter's SSH public key is injected by default.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bittensor::AccountId;
use clap::Args;
use compute::allocator::{AllocateOptions, Allocated, Explain, Stage, Verdict};
use compute::protocol::login::Login;
use compute::protocol::refusal::{CallerRefusal, Gate};
use compute::renter::{RenterError, Target};
use compute::specs::{GpuRequirement, Requirement};
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::duration::parse_duration;
use crate::opts::GlobalOpts;
use crate::output::{table, Output, Reported, UsageError};

const GIB: u64 = 1 << 30;

#[derive(Debug, Clone, Args)]
pub struct RequirementArgs {
    /// GPU type, matched against the GPU name (e.g. h100, a100, 4090).
    #[arg(long = "gpu_type", visible_alias = "gpu-type", value_name = "TYPE")]
    pub gpu_type: Option<String>,
    /// GPU memory per GPU in GB (a GPU sold as N GB matches N).
    #[arg(long = "gpu_size", visible_alias = "gpu-size", value_name = "GB")]
    pub gpu_size: Option<f64>,
    #[arg(long = "gpu-count", default_value_t = 1)]
    pub gpu_count: u64,
    /// Ask for no GPU at all (a CPU machine).
    #[arg(long = "cpu-only", conflicts_with_all = ["gpu_type", "gpu_size"])]
    pub cpu_only: bool,
    #[arg(long = "cpu-count", default_value_t = 1)]
    pub cpu_count: u64,
    /// Available RAM in GB.
    #[arg(long, value_name = "GB", default_value_t = 1.0)]
    pub ram: f64,
    /// Free disk in GB.
    #[arg(long, value_name = "GB", default_value_t = 1.0)]
    pub disk: f64,
}

#[derive(Debug, Clone, Args)]
pub struct AllocOpts {
    /// How long the allocation lasts (sent as `timeline` days; our miners honour it exactly).
    #[arg(long, value_parser = parse_duration, default_value = "90d")]
    pub ttl: Duration,
    /// The SSH public key to inject [default: ~/.ssh/id_ed25519.pub or ~/.ssh/id_rsa.pub]
    #[arg(long = "ssh-key", value_name = "PUBKEY_FILE")]
    pub ssh_key: Option<PathBuf>,
    /// Do not inject an SSH key (password login only).
    #[arg(long = "no-ssh-key", conflicts_with = "ssh_key")]
    pub no_ssh_key: bool,
    /// Total time for checking candidates.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub deadline: Duration,
    /// Print every candidate and why it was taken or rejected.
    #[arg(long)]
    pub explain: bool,
    /// A container port to reach from outside (SN27 v2.x user ports; the miner maps it to a host
    /// port it picks; repeatable or comma-separated, at most 4) [default: the miner's, SN27's
    /// 27015-27018]
    #[arg(short = 'p', long = "port", value_name = "PORT", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,
    /// The image to run, where the miner offers it (SN27 v2.4 `docker_requirement.image`).
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
}

#[derive(Debug, Args)]
pub struct AllocateArgs {
    #[command(flatten)]
    pub req: RequirementArgs,
    #[command(flatten)]
    pub opts: AllocOpts,
}

#[derive(Debug, Args)]
pub struct AllocateHotkeyArgs {
    /// The miner's hotkey (asked for in the shell when missing).
    #[arg(id = "miner_hotkey", value_name = "HOTKEY")]
    pub hotkey: Option<String>,
    #[command(flatten)]
    pub req: RequirementArgs,
    #[command(flatten)]
    pub opts: AllocOpts,
}

/// Asks on the terminal, or fails with a usage error when there is none.
pub fn prompt(label: &str, flag: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(format!("{flag} is required (no terminal to ask on)")).into());
    }
    let mut err = std::io::stderr();
    let _ = write!(err, "{label} ");
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

impl RequirementArgs {
    /// The requirement, prompting as SN27's shell does for a missing GPU type and size.
    /// `choose`: the GPU must be chosen (by flag, prompt, or `--cpu-only`), as `a` requires.
    fn resolve(&self, choose: bool) -> anyhow::Result<Requirement> {
        let (mut kind, mut size) = (self.gpu_type.clone(), self.gpu_size);
        if choose && !self.cpu_only && kind.is_none() && size.is_none() {
            kind = Some(prompt("Enter GPU type:", "--gpu_type (or --cpu-only)")?);
            let s = prompt("Enter GPU memory in GB:", "--gpu_size")?;
            size = if s.is_empty() {
                None
            } else {
                Some(s.parse().map_err(|_| UsageError(format!("'{s}' is not a number of GB")))?)
            };
        }
        let kind = kind.filter(|k| !k.trim().is_empty());
        let gpu = if self.cpu_only || (kind.is_none() && size.is_none()) {
            None
        } else {
            Some(GpuRequirement {
                count: self.gpu_count.max(1),
                memory_mib: size.map_or(0, |gb| (gb * 1024.0).round() as u64),
                kind: kind.unwrap_or_default(),
            })
        };
        Ok(Requirement {
            cpu_count: Some(self.cpu_count),
            gpu,
            hard_disk_bytes: Some((self.disk * GIB as f64) as u64),
            ram_bytes: Some((self.ram * GIB as f64) as u64),
        })
    }
}

impl AllocOpts {
    fn options(&self, g: &GlobalOpts, out: &mut Output, timeline_days: i64) -> anyhow::Result<AllocateOptions> {
        let ssh_key = if self.no_ssh_key {
            None
        } else {
            let path = match &self.ssh_key {
                Some(p) => Some(p.clone()),
                None => crate::cmd::ssh::default_ssh_key(g.dirs.home.as_deref(), ".pub"),
            };
            match path {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("reading the SSH public key {}", p.display()))?
                        .trim()
                        .to_owned(),
                ),
                None => {
                    out.note("No SSH public key found (~/.ssh/id_ed25519.pub, id_rsa.pub): password login only.");
                    None
                }
            }
        };
        let days = (self.ttl.as_secs().div_ceil(86_400) as i64).max(1).min(timeline_days.max(1).max(365));
        Ok(AllocateOptions {
            timeline_days: days,
            ttl: Some(self.ttl),
            ssh_key,
            deadline: self.deadline,
            check_timeout: self.deadline,
            clock: g.clock.clone(),
            user_ports: self.ports.clone(),
            image: self.image.clone(),
            ..AllocateOptions::default()
        })
    }
}

/// Progress on stderr, only on a terminal.
fn progress(stage: Stage) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let msg = match stage {
        Stage::Checking { candidates } => format!("checking {candidates} candidate(s)…"),
        Stage::Allocating { hotkey, attempt } => format!("allocating {hotkey} (attempt {attempt})…"),
        Stage::WaitingForSsh { ip, port } => format!("waiting for SSH at {ip}:{port}…"),
        Stage::Done => "done".into(),
    };
    let _ = writeln!(std::io::stderr(), "{msg}");
}

#[derive(Debug, Serialize)]
struct AllocatedView<'a> {
    hotkey: &'a str,
    resource: &'a str,
    username: &'a str,
    password: String,
    port: u16,
    ip: &'a str,
    ssh: String,
    ssh_key_injected: bool,
    ssh_ready: bool,
    /// SN27 v2.x user ports: container port → host port.
    #[serde(skip_serializing_if = "Option::is_none")]
    external_user_ports: Option<serde_json::Map<String, serde_json::Value>>,
    /// The miner signed its answer (nicompute's extension); SN27 peers do not.
    authenticated: bool,
    /// The SHA256 fingerprint of the host key the miner signed (pinned for `ssh`).
    #[serde(skip_serializing_if = "Option::is_none")]
    host_key: Option<String>,
    expires_in: String,
    elapsed_ms: u128,
    /// Where `elapsed_ms` went: the first yes, the wait for the allocation key after it, the
    /// allocate request, the wait for the SSH banner (milliseconds).
    timings_ms: TimingsView,
    #[serde(skip_serializing_if = "Option::is_none")]
    explain: Option<Vec<ExplainView<'a>>>,
}

#[derive(Debug, Serialize)]
struct TimingsView {
    check: f64,
    key: f64,
    allocate: f64,
    ssh: f64,
}

impl From<&compute::allocator::Timings> for TimingsView {
    fn from(t: &compute::allocator::Timings) -> Self {
        let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        Self { check: ms(t.check), key: ms(t.key), allocate: ms(t.allocate), ssh: ms(t.ssh) }
    }
}

/// A verdict with, when the miner refused our hotkey itself, what to do about it.
#[derive(Debug, Serialize)]
struct ExplainView<'a> {
    #[serde(flatten)]
    explain: &'a Explain,
    #[serde(skip_serializing_if = "Option::is_none")]
    refused_caller: Option<CallerRefusal>,
}

/// The miner refused our hotkey (its registration, stake or version), not the request.
fn caller_refusal(e: &Explain) -> Option<CallerRefusal> {
    match &e.verdict {
        Verdict::CallerRefused(c) => Some(c.clone()),
        _ => None,
    }
}

fn explain_views(explain: &[Explain]) -> Vec<ExplainView<'_>> {
    explain.iter().map(|e| ExplainView { explain: e, refused_caller: caller_refusal(e) }).collect()
}

/// One line per gate the miners closed on our hotkey: how many, and the fix.
fn gate_notes(explain: &[Explain]) -> Vec<String> {
    let mut by_gate: Vec<(Gate, usize)> = Vec::new();
    for r in explain.iter().filter_map(caller_refusal) {
        match by_gate.iter_mut().find(|(g, _)| *g == r.gate) {
            Some((_, n)) => *n += 1,
            None => by_gate.push((r.gate, 1)),
        }
    }
    by_gate.into_iter().map(|(g, n)| format!("{n} miner(s) refused your hotkey ({}): {}", g.label(), g.fix())).collect()
}

/// An allocation error, led by what to do when miners refused our hotkey itself.
fn with_gate_notes(e: compute::allocator::AllocateError) -> anyhow::Error {
    let notes = gate_notes(&e.explain);
    let err = anyhow::Error::from(e);
    if notes.is_empty() {
        err
    } else {
        err.context(notes.join("; "))
    }
}

fn explain_table(explain: &[Explain]) -> String {
    let rows = explain
        .iter()
        .map(|e| {
            let detail = match caller_refusal(e) {
                Some(r) => format!("{}\n→ {}", e.verdict, r.fix),
                None => e.verdict.to_string(),
            };
            vec![
                e.hotkey.clone(),
                e.verdict.label().to_owned(),
                detail,
                e.answer_ms.map_or("-".into(), |m| format!("{m} ms")),
            ]
        })
        .collect();
    table(&["Hotkey", "Verdict", "Detail", "Answer"], rows)
}

/// `27015→40001, 27016→40002` for people.
pub fn ports_text(ports: &[(u16, u16)]) -> String {
    if ports.is_empty() {
        return "none".into();
    }
    ports.iter().map(|(c, h)| format!("{c}→{h}")).collect::<Vec<_>>().join(", ")
}

/// How an allocation's answers were authenticated, for people.
pub fn auth_text(authenticated: bool, host_key: Option<&str>) -> String {
    match (authenticated, host_key) {
        (true, Some(k)) => format!("signed by the miner; host key {} pinned", compute::sshexec::fingerprint(k)),
        (true, None) => "signed by the miner (no host key given)".into(),
        (false, _) => "not signed (an SN27 miner): host key trusted on first use".into(),
    }
}

fn show(out: &mut Output, a: &Allocated, with_explain: bool, now: u64) {
    let view = AllocatedView {
        hotkey: &a.hotkey,
        resource: &a.resource,
        username: &a.username,
        password: out.secret(a.password.expose_secret()).to_owned(),
        port: a.port,
        ip: &a.ip,
        // The allocator checked the login when it decrypted the credentials.
        ssh: Login::new(&a.username, &a.ip, a.port).map_or_else(|e| format!("(none: {e})"), |l| l.command_line()),
        ssh_key_injected: a.ssh_key_injected,
        ssh_ready: a.ssh_ready,
        external_user_ports: a
            .external_user_ports
            .as_ref()
            .map(|p| p.iter().map(|(c, h)| (c.to_string(), serde_json::Value::from(*h))).collect()),
        authenticated: a.authenticated,
        host_key: a.host_key.as_deref().map(compute::sshexec::fingerprint),
        expires_in: crate::duration::human_duration_ms(i128::from(a.expires_ms) - i128::from(now)),
        elapsed_ms: a.timings.total.as_millis(),
        timings_ms: TimingsView::from(&a.timings),
        explain: with_explain.then(|| explain_views(&a.explain)),
    };
    out.result(&view, |o| {
        writeln!(o, "Hotkey:     {}", view.hotkey)?;
        writeln!(o, "Resource:   {}", view.resource)?;
        writeln!(o, "Username:   {}", view.username)?;
        writeln!(o, "Password:   {}", view.password)?;
        writeln!(o, "Port:       {}", view.port)?;
        writeln!(o, "IP:         {}", view.ip)?;
        if let Some(ports) = &a.external_user_ports {
            writeln!(o, "User ports: {}", ports_text(ports))?;
        }
        writeln!(o, "Expires in: {}", view.expires_in)?;
        writeln!(o, "SSH:        {}", view.ssh)?;
        writeln!(o, "Auth:       {}", auth_text(a.authenticated, a.host_key.as_deref()))?;
        if with_explain {
            writeln!(o, "{}", explain_table(&a.explain))?;
        }
        Ok(())
    });
    if !a.ssh_ready {
        out.note(
            "The miner allocated the machine but its SSH server did not answer yet; try `nicompute ssh` in a minute.",
        );
    }
}

async fn run_alloc(
    g: &GlobalOpts,
    out: &mut Output,
    hotkey: Option<&str>,
    req: &RequirementArgs,
    opts: &AllocOpts,
    timeline_days: i64,
) -> anyhow::Result<()> {
    // The allocation key is made while the metagraph is read and the miners are checked (a
    // one-shot `a` started it right after parsing: `cmd::start_early`; this is then a no-op).
    compute::crypto::KeyReserve::global().prepare();
    let requirement = req.resolve(hotkey.is_none())?;
    let options = opts.options(g, out, timeline_days)?;
    let renter = crate::cmd::renter(g)?;
    let mg = renter.metagraph().await?;
    renter.release_interrupted(&mg).await;
    let target = match hotkey {
        Some(hk) => Target::Hotkey(hk.to_owned()),
        None => Target::Requirement,
    };
    let work = async {
        renter.allocate(&mg, &target, &requirement, &options, &progress).await.map_err(|e| match e {
            RenterError::Allocate(e) => {
                if opts.explain && target == Target::Requirement {
                    let _ = writeln!(std::io::stderr(), "{}", explain_table(&e.explain));
                }
                with_gate_notes(e)
            }
            e => anyhow::Error::from(e),
        })
    };
    let result = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => {
            let n = renter.release_interrupted(&mg).await;
            return Err(Reported(format!("interrupted; {n} half-made allocation(s) released")).into());
        }
    };
    let allocated = result?;
    show(out, &allocated, opts.explain, g.clock.now_ms());
    crate::shared::publish(g, renter.db(), &[crate::shared::List::Allocated], out).await;
    Ok(())
}

impl AllocateArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        run_alloc(g, out, None, &self.req, &self.opts, 90).await
    }
}

impl AllocateHotkeyArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let hotkey = match &self.hotkey {
            Some(h) => h.trim().to_owned(),
            None => prompt("Enter hotkey:", "HOTKEY")?,
        };
        AccountId::from_ss58(&hotkey).map_err(|e| UsageError(e.to_string()))?;
        run_alloc(g, out, Some(&hotkey), &self.req, &self.opts, 30).await
    }
}
