//! The subnet's shared state on wandb, from the CLI's side: whether it is on (`--wandb`),
//! publishing our allocated and penalized lists after local changes, and reading the network's
//! union of validator lists for `list_r` and `list_p`.
//!
//! Publication never blocks or undoes a local operation: the change is in the database first,
//! the list is marked pending there, the command's result is printed, and only then is wandb
//! asked; a failure leaves the mark for the next publishing command or `reconcile` to retry.

use std::collections::BTreeSet;
use std::time::Duration;

use bittensor::subtensor::network;
use bittensor::Keypair;
use clap::ValueEnum;
use compute::db::ComputeDb;
use secrecy::ExposeSecret;
use wandb::{ApiKey, KeySource, Lists, Publication, SharedState, WandbClient, WandbConfig};

use crate::opts::GlobalOpts;
use crate::output::Output;

/// SN27's validator threshold: runs of hotkeys with less stake do not count.
pub const VALIDATOR_MIN_STAKE_TAO: f32 = 1024.0;
/// The longest a command waits for wandb after its result is printed.
const PUBLISH_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WandbMode {
    /// On for finney and the test network when an API key is found, off otherwise.
    Auto,
    On,
    Off,
}

/// One of the two lists we publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Allocated,
    Penalized,
}

impl List {
    pub fn name(self) -> &'static str {
        match self {
            List::Allocated => "allocated",
            List::Penalized => "penalized",
        }
    }
}

/// Whether wandb is used for this command, and with which client.
#[derive(Debug)]
pub enum Wandb {
    On {
        client: Box<WandbClient>,
        key_source: KeySource,
    },
    /// Not used here (turned off, or not the real network), and why.
    Off {
        reason: String,
    },
    /// Wanted (asked for, or the real network) but not usable, e.g. no API key: changes stay
    /// pending and the user is warned, since Python miners end allocations no validator lists.
    Unavailable {
        reason: String,
    },
}

/// Decides from `--wandb`, the network and the API key.
pub fn resolve(g: &GlobalOpts) -> Wandb {
    let mode = g.wandb.mode;
    if mode == WandbMode::Off {
        return Wandb::Off { reason: "turned off (--wandb off)".into() };
    }
    if mode == WandbMode::Auto {
        let endpoint = g.subtensor.endpoint().map_err(|e| e.0);
        match endpoint {
            Ok(e) if e == network::FINNEY || e == network::TEST => {}
            Ok(e) => {
                return Wandb::Off {
                    reason: format!("the chain {e} is not finney or test (--wandb on to publish anyway)"),
                }
            }
            Err(e) => return Wandb::Off { reason: e },
        }
    }
    let config = WandbConfig::with_base_url(&g.wandb.base_url);
    let netrc = g.wandb.netrc.clone().or_else(|| g.dirs.home.as_ref().map(|h| h.join(".netrc")));
    let api_key = g.wandb.api_key.as_ref().map(ExposeSecret::expose_secret);
    let key = config.api_host().and_then(|host| ApiKey::resolve_from(api_key, netrc.as_deref(), &host));
    match key {
        Ok(key) => {
            let key_source = key.source().clone();
            match WandbClient::with_key(config, key) {
                Ok(client) => Wandb::On { client: Box::new(client), key_source },
                Err(e) => Wandb::Unavailable { reason: e.to_string() },
            }
        }
        Err(e) => Wandb::Unavailable { reason: e.to_string() },
    }
}

/// After a local change of `changed` (none: only retry what is pending), publishes every list
/// that is pending. Failures are noted and left pending; they never fail the command.
pub async fn publish(g: &GlobalOpts, db: &ComputeDb, changed: &[List], out: &mut Output) {
    let wandb = resolve(g);
    if let Wandb::Off { .. } = wandb {
        return;
    }
    for list in changed {
        if let Err(e) = db.mark_publication_pending(list.name()) {
            out.note(&format!("wandb: could not mark the {} list for publication: {e}", list.name()));
        }
    }
    let pending: Vec<List> = match db.publications() {
        Ok(p) => [List::Allocated, List::Penalized]
            .into_iter()
            .filter(|l| p.iter().any(|r| r.list == l.name() && r.pending))
            .collect(),
        Err(e) => {
            out.note(&format!("wandb: cannot read the publication state: {e}"));
            return;
        }
    };
    let client = match wandb {
        Wandb::On { client, .. } => client,
        Wandb::Off { .. } => return,
        Wandb::Unavailable { reason } => {
            if !pending.is_empty() {
                tell(
                    out,
                    &format!(
                        "wandb: not published ({reason}); on the real network Python SN27 miners end allocations that \
                         no validator lists on wandb — `nicompute reconcile` publishes once this is fixed"
                    ),
                    true,
                );
            }
            return;
        }
    };
    if pending.is_empty() {
        return;
    }
    // The runs are signed with the wallet's hotkey (plaintext in btcli wallets: no prompt).
    let keypair = match g.wallet.hotkey() {
        Ok(k) => k,
        Err(e) => {
            out.note(&format!("wandb: not published, the hotkey cannot be loaded: {e:#}"));
            return;
        }
    };
    for list in pending {
        let result = tokio::time::timeout(PUBLISH_LIMIT, publish_one(&client, g, db, &keypair, list)).await;
        let result = result.unwrap_or_else(|_| Err(format!("wandb did not confirm within {PUBLISH_LIMIT:?}")));
        let now = g.clock.now_ms();
        match &result {
            Ok(n) => tell(out, &format!("wandb: published the {} list ({n} hotkeys)", list.name()), false),
            Err(e) => tell(
                out,
                &format!(
                    "wandb: the {} list is not published yet ({e}); the next a/d/p_hotkey/dp_hotkey or `nicompute reconcile` retries",
                    list.name()
                ),
                true,
            ),
        }
        if let Err(e) = db.record_publication(list.name(), result.as_ref().map(|_| ()).map_err(String::as_str), now) {
            out.note(&format!("wandb: could not record the publication: {e}"));
        }
    }
}

/// A publication's outcome: a note for people; under `--json` (notes hidden) a log line, a
/// warning when it failed.
fn tell(out: &mut Output, msg: &str, failure: bool) {
    if !out.json {
        out.note(msg);
    } else if failure {
        tracing::warn!("{msg}");
    } else {
        tracing::info!("{msg}");
    }
}

async fn publish_one(
    client: &WandbClient,
    g: &GlobalOpts,
    db: &ComputeDb,
    keypair: &Keypair,
    list: List,
) -> Result<usize, String> {
    let hotkeys: Vec<String> = match list {
        List::Allocated => db.allocations().map_err(|e| e.to_string())?.into_iter().map(|r| r.hotkey).collect(),
        List::Penalized => db.penalized().map_err(|e| e.to_string())?,
    };
    let n = hotkeys.len();
    let publication = match list {
        List::Allocated => Publication::Allocated(hotkeys),
        List::Penalized => Publication::Penalized(hotkeys),
    };
    let ss58 = keypair.ss58();
    let stored = db.wandb_run_id(&ss58).map_err(|e| e.to_string())?;
    let published = client
        .publish(keypair, g.subtensor.netuid(), stored.as_deref(), &publication)
        .await
        .map_err(|e| e.to_string())?;
    if stored.as_deref() != Some(published.run_id.as_str()) {
        db.set_wandb_run_id(&ss58, &published.run_id).map_err(|e| e.to_string())?;
    }
    Ok(n)
}

/// The network's union of validator lists, counting only runs signed by a hotkey with a
/// validator's stake in the metagraph. None (with a note) when wandb is off or unreachable: the
/// caller then shows the local database alone.
pub async fn network_state(g: &GlobalOpts, lists: Lists, out: &mut Output) -> Option<SharedState> {
    let Wandb::On { client, .. } = resolve(g) else { return None };
    let netuid = g.subtensor.netuid();
    let validators: BTreeSet<String> = match g.subtensor.client() {
        Ok(chain) => match chain.metagraph(netuid).await {
            Ok(mg) => {
                mg.neurons.iter().filter(|n| n.stake_tao >= VALIDATOR_MIN_STAKE_TAO).map(|n| n.hotkey.clone()).collect()
            }
            Err(e) => {
                out.note(&format!("wandb: cannot read the metagraph to check validators ({e}); local state only"));
                return None;
            }
        },
        Err(e) => {
            out.note(&format!("wandb: {e}; local state only"));
            return None;
        }
    };
    match client.shared_state(netuid, lists, |a| validators.contains(&a.to_ss58())).await {
        Ok(s) => Some(s),
        Err(e) => {
            out.note(&format!("wandb: cannot read the validators' lists ({e}); local state only"));
            None
        }
    }
}
