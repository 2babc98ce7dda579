//! The miner's publication of its axon at start (`miner run`), the same on every chain — the
//! embedded devnet, the real runtime under chopsticks, finney: the `serve_axon` extrinsic through
//! `bittensor::subtensor::serve::publish`, which reads the neuron first and sends nothing when ip,
//! port and version already match, as SN27's miner does. A refusal is explained and logged; the
//! miner keeps serving.

use std::net::IpAddr;

use bittensor::devnet::ops;
use bittensor::subtensor::serve::{self, Endpoint, Kind, Publication, ServeError};
use bittensor::subtensor::tx::TxOptions;
use bittensor::subtensor::Subtensor;
use bittensor::Keypair;
use serde_json::{json, Value};

use crate::output::{Output, UsageError};

/// Whether the chain is a development chain: a nicompute devnet, or one that offers chopsticks'
/// `dev_setStorage` (the real runtime run locally). The local runtime and simulated GPUs are
/// allowed only there.
pub async fn is_dev_chain(chain: &Subtensor) -> bool {
    if ops::is_devnet(chain).await.unwrap_or(false) {
        return true;
    }
    match chain.request("rpc_methods", json!([])).await {
        Ok(v) => v
            .get("methods")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|x| x.as_str() == Some("dev_setStorage"))),
        Err(_) => false,
    }
}

/// The address to publish: `--axon.external_ip`, else the address the axon listens on when that
/// is a loopback address, else 127.0.0.1 on the embedded devnet (which accepts it) when the axon
/// listens on every address. Otherwise it must be given: the miner cannot know the address
/// validators reach it at (and the real runtime refuses 127.0.0.1).
pub fn external_ip(devnet: bool, external: Option<IpAddr>, bind: IpAddr) -> Result<IpAddr, UsageError> {
    if let Some(ip) = external {
        return Ok(ip);
    }
    if bind.is_loopback() {
        return Ok(bind);
    }
    if devnet && bind.is_unspecified() {
        return Ok([127, 0, 0, 1].into());
    }
    Err(UsageError(format!(
        "--axon.external_ip is required: the axon listens on {bind}, and the chain must publish the address validators \
         reach this machine at (its public IP)"
    )))
}

/// Publishes the axon; returns what happened, for the start document.
pub async fn publish(chain: &Subtensor, keypair: &Keypair, netuid: u16, endpoint: Endpoint, out: &mut Output) -> Value {
    let where_ = format!("{}:{} version {}", endpoint.ip, endpoint.port, endpoint.version);
    match serve::publish(chain, keypair, netuid, Kind::Axon, &endpoint, &TxOptions::default()).await {
        Ok(p) => {
            match &p {
                Publication::Unchanged { block, .. } => {
                    tracing::info!(axon = %where_, block, "the chain already has this axon; nothing sent")
                }
                Publication::Published { included, .. } => {
                    tracing::info!(axon = %where_, block = included.block_number, "axon published (serve_axon)")
                }
            }
            let mut v = serde_json::to_value(&p).unwrap_or(Value::Null);
            if let Value::Object(o) = &mut v {
                o.insert("ok".into(), json!(true));
                o.insert("axon".into(), json!(endpoint));
            }
            v
        }
        Err(e) => {
            let text = format!("could not publish the axon {where_} on {}: {e}", chain.endpoint());
            tracing::error!("{text}");
            out.note(&format!(
                "warning: {text}\n  the miner keeps serving, but validators find it only at the address on chain"
            ));
            let refusal = match &e {
                ServeError::Tx { source, .. } => source.refusal_name().map(str::to_owned),
                _ => None,
            };
            json!({"ok": false, "error": e.to_string(), "refusal": refusal, "axon": endpoint})
        }
    }
}
