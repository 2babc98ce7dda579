//! Publishing where a hotkey serves — its axon (`serve_axon`) or its prometheus endpoint and
//! version (`serve_prometheus`) — the way the Python SDK does it: read the neuron first, send
//! nothing when the chain already says the same, and explain the runtime's refusals
//! (`InvalidIpAddress`, `ServingRateLimitExceeded`, …) with what to do about them.
//!
//! [`publish`] is the one function a daemon (the miner) calls; commands that ask before signing
//! use [`current`], [`call`] and [`explain`] around their own confirmation.

use std::net::IpAddr;

use serde::Serialize;

use super::calls::{ip_to_int, serve_axon, serve_prometheus, Endpoints};
use super::client::{ChainError, Subtensor};
use super::metagraph::ip_to_string;
use super::tx::{Included, TxError, TxOptions};
use crate::extrinsic::Call;
use crate::keys::{AccountId, Keypair};

/// Which endpoint of a neuron.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Axon,
    Prometheus,
}

impl Kind {
    pub fn call_name(self) -> &'static str {
        match self {
            Kind::Axon => "serve_axon",
            Kind::Prometheus => "serve_prometheus",
        }
    }
}

/// What to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    pub version: u32,
}

/// What the chain holds for the hotkey now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Current {
    pub uid: u16,
    /// As the chain formats it (`0.0.0.0` when never served).
    pub ip: String,
    pub port: u16,
    pub version: u32,
    /// The block it was last served at (0: never).
    pub block: u64,
}

impl Current {
    /// Whether publishing `want` would change nothing (the SDK's check before `serve_axon`).
    pub fn matches(&self, want: &Endpoint) -> bool {
        let (ip, _) = ip_to_int(want.ip);
        self.ip == ip_to_string(ip) && self.port == want.port && self.version == want.version
    }
}

/// The hotkey's uid and current endpoint on `netuid`; `None` when it is not registered there.
pub async fn current(
    chain: &Subtensor,
    netuid: u16,
    hotkey: &AccountId,
    kind: Kind,
) -> Result<Option<Current>, ChainError> {
    let Some(e) = chain.endpoints_of(netuid, hotkey).await? else { return Ok(None) };
    Ok(Some(Current::of(&e, kind)))
}

impl Current {
    /// The axon or prometheus endpoint of what the chain holds.
    pub fn of(e: &Endpoints, kind: Kind) -> Self {
        match kind {
            Kind::Axon => Current {
                uid: e.uid,
                ip: ip_to_string(e.axon.ip),
                port: e.axon.port,
                version: e.axon.version,
                block: e.axon.block,
            },
            Kind::Prometheus => Current {
                uid: e.uid,
                ip: ip_to_string(e.prometheus.ip),
                port: e.prometheus.port,
                version: e.prometheus.version,
                block: e.prometheus.block,
            },
        }
    }
}

/// The call that publishes `endpoint`.
pub fn call(kind: Kind, netuid: u16, e: &Endpoint) -> Call {
    match kind {
        Kind::Axon => serve_axon(netuid, e.version, e.ip, e.port),
        Kind::Prometheus => serve_prometheus(netuid, e.version, e.ip, e.port),
    }
}

/// What to do about a refusal of a serve call, in the runtime's terms. `last_block` is when the
/// hotkey last served; the rate limit and the current block are read for the rate-limit case.
pub async fn explain(chain: &Subtensor, netuid: u16, name: &str, last_block: u64) -> Option<String> {
    Some(match name {
        "InvalidIpAddress" => "the chain refuses this address (127.0.0.1, 0.0.0.0 for prometheus, 255.255.255.255 and \
            ::1 are never accepted): publish the address validators reach this machine at (its public IP; on a local \
            chain another loopback address such as 127.0.0.2 works)"
            .to_owned(),
        "InvalidIpType" => "the address must be IPv4 or IPv6".to_owned(),
        "InvalidPort" => "port 0 cannot be published".to_owned(),
        "ServingRateLimitExceeded" => {
            let (limit, now) = tokio::join!(chain.serving_rate_limit(netuid), chain.best_number());
            match (limit, now) {
                (Ok(limit), Ok(now)) => {
                    let next = last_block + limit;
                    format!(
                        "this hotkey served at block {last_block} and netuid {netuid} allows one serve every {limit} \
                         blocks (ServingRateLimit): try again after block {next} ({} blocks from now, about {} s)",
                        next.saturating_sub(now),
                        next.saturating_sub(now) * 12
                    )
                }
                _ => format!("netuid {netuid} allows one serve per ServingRateLimit blocks: wait and try again"),
            }
        }
        "HotKeyNotRegisteredInNetwork" | "HotKeyNotRegisteredInSubNet" | "NotRegistered" => {
            format!("the hotkey is not registered on netuid {netuid}: `nicompute subnet register` first")
        }
        "InvalidTransaction::Payment" => "the hotkey cannot pay the fee this call asks".to_owned(),
        _ => return None,
    })
}

/// Why a publication did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("hotkey {hotkey} is not registered on netuid {netuid}: register it first (`nicompute subnet register`)")]
    NotRegistered { hotkey: String, netuid: u16 },
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("{source}{}", hint.as_ref().map(|h| format!("\n  {h}")).unwrap_or_default())]
    Tx { source: TxError, hint: Option<String> },
}

/// What [`publish`] did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Publication {
    /// The chain already had this endpoint; nothing was sent.
    Unchanged {
        uid: u16,
        block: u64,
    },
    Published {
        uid: u16,
        included: Included,
    },
}

/// Publishes `endpoint` for `hotkey` on `netuid` unless the chain already has it.
pub async fn publish(
    chain: &Subtensor,
    hotkey: &Keypair,
    netuid: u16,
    kind: Kind,
    endpoint: &Endpoint,
    opts: &TxOptions,
) -> Result<Publication, ServeError> {
    let id = hotkey.account_id();
    let now = current(chain, netuid, &id, kind)
        .await?
        .ok_or_else(|| ServeError::NotRegistered { hotkey: id.to_ss58(), netuid })?;
    if now.matches(endpoint) {
        return Ok(Publication::Unchanged { uid: now.uid, block: now.block });
    }
    let tx = async {
        let prepared = chain.prepare(&call(kind, netuid, endpoint), &id, opts).await?;
        chain.submit(&prepared, hotkey, opts).await
    };
    match tx.await {
        Ok(included) => Ok(Publication::Published { uid: now.uid, included }),
        Err(source) => {
            let hint = match source.refusal_name() {
                Some(name) => explain(chain, netuid, name, now.block).await,
                None => None,
            };
            Err(ServeError::Tx { source, hint })
        }
    }
}
