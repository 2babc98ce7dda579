//! `nicompute wandb status`: whether the subnet's shared state on wandb is used and why, our
//! validator run (its id, its signature checked as Python miners check it, what it lists compared
//! with the local database), and when each list was last published or is still pending.

use clap::Subcommand;
use serde::Serialize;

use crate::cmd::open_db;
use crate::opts::GlobalOpts;
use crate::output::Output;
use crate::shared::{self, Wandb};

#[derive(Debug, Subcommand)]
pub enum WandbCommand {
    /// Our validator run on wandb and the state of each publication.
    Status,
}

#[derive(Debug, Serialize)]
struct RunView {
    id: String,
    name: Option<String>,
    /// `valid`, or why Python miners would not count it.
    signature: String,
    allocated_hotkeys: Option<usize>,
    penalized_hotkeys: Option<usize>,
    /// The run lists exactly the local database's allocations and penalties.
    in_sync: bool,
}

#[derive(Debug, Serialize)]
struct PublicationView {
    list: String,
    pending: bool,
    last_success: Option<String>,
    last_attempt: Option<String>,
    last_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct StatusDoc {
    enabled: bool,
    /// Why it is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key_from: Option<String>,
    hotkey: Option<String>,
    stored_run_id: Option<String>,
    run: Option<RunView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_error: Option<String>,
    publications: Vec<PublicationView>,
}

fn when(now: u64, ms: Option<u64>) -> Option<String> {
    ms.map(|t| crate::duration::human_duration_ms(i128::from(now) - i128::from(t)) + " ago")
}

impl WandbCommand {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let db = open_db(g)?;
        let hotkey = g.wallet.wallet().hotkey_public().ok().map(|a| a.to_ss58());
        let stored_run_id = match &hotkey {
            Some(h) => db.wandb_run_id(h)?,
            None => None,
        };
        let publications = db
            .publications()?
            .into_iter()
            .map(|p| PublicationView {
                list: p.list,
                pending: p.pending,
                last_success: when(g.clock.now_ms(), p.last_success_ms),
                last_attempt: when(g.clock.now_ms(), p.last_attempt_ms),
                last_error: p.last_error,
            })
            .collect();
        let mut doc = StatusDoc {
            enabled: false,
            reason: None,
            endpoint: None,
            project: None,
            api_key_from: None,
            hotkey: hotkey.clone(),
            stored_run_id,
            run: None,
            run_error: None,
            publications,
        };
        match shared::resolve(g) {
            Wandb::Off { reason } => doc.reason = Some(reason),
            Wandb::Unavailable { reason } => doc.reason = Some(format!("wanted but unusable: {reason}")),
            Wandb::On { client, key_source } => {
                doc.enabled = true;
                doc.endpoint = Some(client.endpoint().to_owned());
                doc.project = Some(format!("{}/{}", client.config().entity, client.config().project));
                doc.api_key_from = Some(key_source.to_string());
                if let Some(h) = &hotkey {
                    match client.find_validator_run(h, g.subtensor.netuid(), doc.stored_run_id.as_deref()).await {
                        Ok(Some(run)) => {
                            let signature = match ::wandb::check_run(&run) {
                                Ok(signer) if &signer.to_ss58() == h => "valid".to_owned(),
                                Ok(signer) => format!("signed by another hotkey ({})", signer.to_ss58()),
                                Err(why) => why.to_string(),
                            };
                            let list = |k: &str| -> Option<Vec<String>> {
                                run.config.get(k)?.as_array().map(|a| {
                                    let mut v: Vec<String> =
                                        a.iter().filter_map(|x| x.as_str()).map(str::to_owned).collect();
                                    v.sort();
                                    v
                                })
                            };
                            let mut local_alloc = db.allocated_hotkeys()?;
                            local_alloc.sort();
                            let mut local_pen = db.penalized()?;
                            local_pen.sort();
                            let (alloc, pen) = (list("allocated_hotkeys"), list("penalized_hotkeys"));
                            let in_sync = alloc.as_deref().unwrap_or_default() == local_alloc.as_slice()
                                && pen.as_deref().unwrap_or_default() == local_pen.as_slice();
                            doc.run = Some(RunView {
                                id: run.id.clone(),
                                name: run.display_name.clone(),
                                signature,
                                allocated_hotkeys: alloc.map(|v| v.len()),
                                penalized_hotkeys: pen.map(|v| v.len()),
                                in_sync,
                            });
                        }
                        Ok(None) => {
                            doc.run_error = Some("no validator run yet (the first publication creates it)".into())
                        }
                        Err(e) => doc.run_error = Some(e.to_string()),
                    }
                }
            }
        }
        out.result(&doc, |o| {
            if doc.enabled {
                writeln!(
                    o,
                    "wandb: on — {} at {}",
                    doc.project.as_deref().unwrap_or("?"),
                    doc.endpoint.as_deref().unwrap_or("?")
                )?;
                writeln!(o, "API key from: {}", doc.api_key_from.as_deref().unwrap_or("?"))?;
            } else {
                writeln!(o, "wandb: off — {}", doc.reason.as_deref().unwrap_or("?"))?;
            }
            writeln!(o, "hotkey: {}", doc.hotkey.as_deref().unwrap_or("(wallet hotkey not found)"))?;
            writeln!(o, "stored run id: {}", doc.stored_run_id.as_deref().unwrap_or("-"))?;
            if let Some(r) = &doc.run {
                writeln!(o, "run: {} ({})", r.id, r.name.as_deref().unwrap_or("-"))?;
                writeln!(o, "  signature: {}", r.signature)?;
                let n = |v: Option<usize>| v.map_or("-".to_owned(), |n| n.to_string());
                writeln!(
                    o,
                    "  allocated_hotkeys: {}, penalized_hotkeys: {}",
                    n(r.allocated_hotkeys),
                    n(r.penalized_hotkeys)
                )?;
                writeln!(o, "  matches the local database: {}", if r.in_sync { "yes" } else { "no" })?;
            }
            if let Some(e) = &doc.run_error {
                writeln!(o, "run: {e}")?;
            }
            for p in &doc.publications {
                writeln!(
                    o,
                    "{} list: {}; last published {}; last attempt {}{}",
                    p.list,
                    if p.pending { "PENDING" } else { "published" },
                    p.last_success.as_deref().unwrap_or("never"),
                    p.last_attempt.as_deref().unwrap_or("never"),
                    p.last_error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
                )?;
            }
            if doc.publications.is_empty() {
                writeln!(o, "nothing published yet")?;
            }
            Ok(())
        });
        Ok(())
    }
}
