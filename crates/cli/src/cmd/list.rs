//! `list_a`, `list_ah`, `list_r`: what I have allocated, which of those miners are still in the
//! metagraph, and what the network offers (SN27's tables, plus the age of each miner's specs).

use std::borrow::Cow;
use std::collections::HashSet;

use clap::{Args, ValueEnum};
use compute::db::AllocationListing;
use compute::renter::{gpu_summary, resources, Resource, ResourceQuery, SortKey};
use serde::Serialize;

use crate::cmd::open_db;
use crate::duration::human_duration_ms;
use crate::opts::GlobalOpts;
use crate::output::{table, Output};

fn age(now: u64, ms: Option<u64>) -> String {
    match ms {
        Some(t) => human_duration_ms(i128::from(now) - i128::from(t)) + " ago",
        None => "-".into(),
    }
}

#[derive(Debug, Serialize)]
struct AllocationView {
    id: i64,
    hotkey: String,
    resource: String,
    username: String,
    password: String,
    port: Option<u16>,
    ip: String,
    ssh: String,
    /// SN27 v2.x user ports: container port → host port.
    #[serde(skip_serializing_if = "Option::is_none")]
    external_user_ports: Option<serde_json::Map<String, serde_json::Value>>,
    /// The miner signed its answers (nicompute's extension); SN27 peers do not.
    authenticated: bool,
    /// The pinned host key's SHA256 fingerprint (signed allocations).
    #[serde(skip_serializing_if = "Option::is_none")]
    host_key: Option<String>,
    expires_in: String,
    state: String,
}

fn view(r: AllocationListing, out: &Output, now: u64) -> AllocationView {
    use secrecy::ExposeSecret;
    let ssh = r.details.as_ref().map(|d| d.ssh_command()).unwrap_or_default();
    let password = r.details.as_ref().map(|d| out.secret(d.password.expose_secret()).to_owned()).unwrap_or_default();
    let host_key = r.details.as_ref().and_then(|d| d.host_key.as_deref()).map(compute::sshexec::fingerprint);
    let (resource, username, port, ip, user_ports, authenticated) = match r.details {
        Some(d) => (d.resource, d.username, Some(d.port), d.ip, d.external_user_ports, d.authenticated),
        None => (String::new(), String::new(), None, String::new(), None, false),
    };
    AllocationView {
        id: r.id,
        hotkey: r.hotkey,
        resource,
        username,
        password,
        port,
        ssh,
        external_user_ports: user_ports
            .map(|p| p.iter().map(|(c, h)| (c.to_string(), serde_json::Value::from(*h))).collect()),
        authenticated,
        host_key,
        ip,
        expires_in: r.expires_ms.map_or("-".into(), |e| human_duration_ms(i128::from(e) - i128::from(now))),
        state: r.state.as_str().to_owned(),
    }
}

pub fn list_a(g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
    let db = open_db(g)?;
    let now = g.clock.now_ms();
    let rows: Vec<AllocationView> = db.allocation_listing()?.into_iter().map(|r| view(r, out, now)).collect();
    out.result(&rows, |o| {
        let t: Vec<Vec<Cow<'_, str>>> = rows
            .iter()
            .map(|r| {
                vec![
                    Cow::Owned(r.id.to_string()),
                    Cow::Borrowed(r.hotkey.as_str()),
                    Cow::Borrowed(r.resource.as_str()),
                    Cow::Borrowed(r.username.as_str()),
                    Cow::Borrowed(r.password.as_str()),
                    r.port.map_or(Cow::Borrowed("-"), |p| Cow::Owned(p.to_string())),
                    Cow::Borrowed(r.ip.as_str()),
                    Cow::Borrowed(r.ssh.as_str()),
                    r.external_user_ports.as_ref().map_or(Cow::Borrowed("-"), |p| {
                        Cow::Owned(p.iter().map(|(c, h)| format!("{c}→{h}")).collect::<Vec<_>>().join(", "))
                    }),
                    Cow::Borrowed(match (r.authenticated, &r.host_key) {
                        // Short: a thousand rows of it are printed cold (the 12 ms target).
                        (true, Some(_)) => "signed, pinned",
                        (true, None) => "signed",
                        (false, _) => "no",
                    }),
                    Cow::Borrowed(r.expires_in.as_str()),
                    Cow::Borrowed(r.state.as_str()),
                ]
            })
            .collect();
        let header = [
            "ID",
            "Hotkey",
            "Resource",
            "Username",
            "Password",
            "Port",
            "IP",
            "SSH",
            "User ports",
            "Auth",
            "Expires in",
            "State",
        ];
        writeln!(o, "{}", table(&header, t))?;
        writeln!(o, "{} allocation(s)", rows.len())
    });
    Ok(())
}

pub async fn list_ah(g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
    let db = open_db(g)?;
    let chain = g.subtensor.client()?;
    let mg = chain.metagraph(g.subtensor.netuid()).await?;
    let hotkeys: Vec<String> = db.allocated_hotkeys()?.into_iter().filter(|h| mg.by_hotkey(h).is_some()).collect();
    #[derive(Serialize)]
    struct Doc<'a> {
        hotkeys: &'a [String],
        count: usize,
    }
    let doc = Doc { hotkeys: &hotkeys, count: hotkeys.len() };
    out.result(&doc, |o| {
        for h in &hotkeys {
            writeln!(o, "{h}")?;
        }
        writeln!(o, "{} allocated hotkey(s) in the metagraph of netuid {}", hotkeys.len(), g.subtensor.netuid())
    });
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortBy {
    Hotkey,
    Gpu,
    GpuSize,
    GpuCount,
    Cpu,
    Ram,
    Disk,
    Age,
}

impl From<SortBy> for SortKey {
    fn from(s: SortBy) -> Self {
        match s {
            SortBy::Hotkey => SortKey::Hotkey,
            SortBy::Gpu => SortKey::Gpu,
            SortBy::GpuSize => SortKey::GpuSize,
            SortBy::GpuCount => SortKey::GpuCount,
            SortBy::Cpu => SortKey::Cpu,
            SortBy::Ram => SortKey::Ram,
            SortBy::Disk => SortKey::Disk,
            SortBy::Age => SortKey::Age,
        }
    }
}

#[derive(Debug, Args)]
pub struct ListResourcesArgs {
    /// Only miners whose GPU name contains this (case-insensitive).
    #[arg(long)]
    pub gpu: Option<String>,
    /// Only miners with at least this much memory per GPU, in GB.
    #[arg(long = "min-gpu-size", value_name = "GB")]
    pub min_gpu_size: Option<f64>,
    /// Only miners not allocated.
    #[arg(long)]
    pub available: bool,
    #[arg(long, value_enum, default_value_t = SortBy::Hotkey)]
    pub sort: SortBy,
}

#[derive(Debug, Serialize, Clone)]
pub struct ResourceRow {
    pub hotkey: String,
    pub gpu_name: String,
    pub gpu_size_gb: f64,
    pub gpu_count: u64,
    pub vcpus: u64,
    pub ram_gb: f64,
    pub disk_gb: f64,
    pub status: &'static str,
    pub simulated: bool,
    pub specs_age: String,
    /// The last `sync` got no answer from it: these specs are old and it may be offline.
    pub stale: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The last `sync` was refused because of our hotkey (registration, stake, version): the fix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_caller: Option<compute::protocol::refusal::CallerRefusal>,
}

impl ResourceRow {
    fn new(r: &Resource, now: u64) -> Self {
        Self {
            hotkey: r.hotkey.clone(),
            gpu_name: r.gpu_name.clone(),
            gpu_size_gb: r.gpu_size_gb,
            gpu_count: r.gpu_count,
            vcpus: r.vcpus,
            ram_gb: r.ram_gb,
            disk_gb: r.disk_gb,
            status: r.status(),
            simulated: r.simulated,
            specs_age: age(now, r.specs_updated_ms),
            stale: r.stale,
            refused_caller: r.last_error.as_deref().and_then(compute::protocol::refusal::classify_text),
            last_error: r.last_error.clone(),
        }
    }
}

impl ListResourcesArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let db = open_db(g)?;
        // With wandb on, "Res." also covers machines any validator lists as allocated.
        let network = crate::shared::network_state(g, ::wandb::Lists::Allocated, out).await;
        let extra: HashSet<String> =
            network.as_ref().map(|n| n.allocated.iter().cloned().collect()).unwrap_or_default();
        let now = g.clock.now_ms();
        let all = resources(&db, &extra)?;
        let query = ResourceQuery {
            gpu: self.gpu.clone(),
            gpu_size_min: self.min_gpu_size,
            available: self.available.then_some(true),
            sort: self.sort.into(),
            ..ResourceQuery::default()
        };
        let chosen = query.apply(&all);
        let summary = gpu_summary(chosen.iter().copied());
        let rows: Vec<ResourceRow> = chosen.iter().map(|r| ResourceRow::new(r, now)).collect();
        // Miners that refused our hotkey itself at the last sync, with or without specs on file.
        let refusals: Vec<(String, compute::protocol::refusal::CallerRefusal)> = db
            .miner_last_errors()?
            .into_iter()
            .filter_map(|(hotkey, error)| Some((hotkey, compute::protocol::refusal::classify_text(&error)?)))
            .collect();
        #[derive(Serialize)]
        struct Doc<'a> {
            resources: &'a [ResourceRow],
            summary_instances: Vec<(String, u64, u64)>,
            summary_gpus: Vec<(String, u64)>,
            /// Where Status comes from: `local`, or `local+wandb` with the validator runs counted.
            status_from: String,
            /// Miners that refused our hotkey at the last sync, and the fix.
            refused_caller: Vec<serde_json::Value>,
        }
        let doc = Doc {
            resources: &rows,
            summary_instances: summary.instances.iter().map(|((n, c), k)| (n.clone(), *c, *k)).collect(),
            summary_gpus: summary.gpus.iter().map(|(n, c)| (n.clone(), *c)).collect(),
            status_from: match &network {
                Some(n) => format!("local+wandb ({} validator runs)", n.runs_counted),
                None => "local".into(),
            },
            refused_caller: refusals
                .iter()
                .map(|(h, r)| serde_json::json!({"hotkey": h, "gate": r.gate, "reason": r.reason, "fix": r.fix}))
                .collect(),
        };
        out.result(&doc, |o| {
            let t: Vec<Vec<Cow<'_, str>>> = rows
                .iter()
                .map(|r| {
                    vec![
                        Cow::Borrowed(r.hotkey.as_str()),
                        if r.simulated {
                            Cow::Owned(format!("{} (simulated)", r.gpu_name))
                        } else {
                            Cow::Borrowed(r.gpu_name.as_str())
                        },
                        Cow::Owned(format!("{:.2}", r.gpu_size_gb)),
                        Cow::Owned(r.gpu_count.to_string()),
                        Cow::Owned(r.vcpus.to_string()),
                        Cow::Owned(format!("{:.2}", r.ram_gb)),
                        Cow::Owned(format!("{:.2}", r.disk_gb)),
                        Cow::Borrowed(r.status),
                        if r.stale {
                            Cow::Owned(format!("{} (stale: no answer)", r.specs_age))
                        } else {
                            Cow::Borrowed(r.specs_age.as_str())
                        },
                    ]
                })
                .collect();
            let header = [
                "Hotkey",
                "GPU Name",
                "GPU Size (GB)",
                "GPU Count",
                "vCPUs",
                "RAM (GB)",
                "Hard Disk (GB)",
                "Status",
                "Specs age",
            ];
            writeln!(o, "{}", table(&header, t))?;
            writeln!(o, "SUMMARY (Instances Count)")?;
            let s1 =
                doc.summary_instances.iter().map(|(n, c, k)| vec![n.clone(), c.to_string(), k.to_string()]).collect();
            writeln!(o, "{}", table(&["GPU Name", "GPU Count", "Instances Count"], s1))?;
            writeln!(o, "SUMMARY (Total GPU Counts)")?;
            let s2 = doc.summary_gpus.iter().map(|(n, c)| vec![n.clone(), c.to_string()]).collect();
            writeln!(o, "{}", table(&["GPU Name", "Total GPU Count"], s2))?;
            if network.is_some() {
                writeln!(o, "Status: this database and the validators' lists on wandb ({})", doc.status_from)?;
            }
            let mut gates: Vec<compute::protocol::refusal::Gate> = Vec::new();
            for (_, r) in &refusals {
                if !gates.contains(&r.gate) {
                    gates.push(r.gate);
                }
            }
            for g in gates {
                let n = refusals.iter().filter(|(_, r)| r.gate == g).count();
                writeln!(o, "{n} miner(s) refused your hotkey at the last sync ({}): {}", g.label(), g.fix())?;
            }
            Ok(())
        });
        Ok(())
    }
}
