//! Client side of the devnet-only methods: builds and signs the requests with a hotkey.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::signing_message;
use crate::keys::{AccountId, Keypair};
use crate::subtensor::{ChainError, Subtensor};

/// A fresh nonce: wall-clock nanoseconds (the devnet requires it to increase per hotkey).
fn nonce() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

async fn send(
    chain: &Subtensor,
    method: &str,
    hotkey: &Keypair,
    mut fields: Map<String, Value>,
) -> Result<Value, ChainError> {
    fields.insert("hotkey".into(), json!(hotkey.ss58()));
    fields.insert("nonce".into(), json!(nonce()));
    let sig = hotkey.sign(signing_message(method, &fields).as_bytes());
    fields.insert("signature".into(), json!(sig.to_hex()));
    chain.request(method, json!([Value::Object(fields)])).await
}

/// Registers `hotkey` (owned by `coldkey`) on `netuid`; returns its uid.
pub async fn register(
    chain: &Subtensor,
    hotkey: &Keypair,
    coldkey: &AccountId,
    netuid: u16,
) -> Result<u16, ChainError> {
    let mut f = Map::new();
    f.insert("netuid".into(), json!(netuid));
    f.insert("coldkey".into(), json!(coldkey.to_ss58()));
    let v = send(chain, "devnet_register", hotkey, f).await?;
    v.get("uid").and_then(Value::as_u64).map(|u| u as u16).ok_or_else(|| ChainError::BadResponse {
        endpoint: chain.endpoint().to_owned(),
        call: "devnet_register".into(),
        reason: format!("no uid in {v}"),
    })
}

/// Sets the hotkey's alpha and root TAO stake on `netuid`, in rao.
pub async fn set_stake(
    chain: &Subtensor,
    hotkey: &Keypair,
    netuid: u16,
    alpha_rao: u64,
    tao_rao: u64,
) -> Result<(), ChainError> {
    let mut f = Map::new();
    f.insert("netuid".into(), json!(netuid));
    f.insert("alpha_rao".into(), json!(alpha_rao));
    f.insert("tao_rao".into(), json!(tao_rao));
    send(chain, "devnet_setStake", hotkey, f).await.map(|_| ())
}

/// Publishes the hotkey's axon address on `netuid`.
pub async fn serve_axon(
    chain: &Subtensor,
    hotkey: &Keypair,
    netuid: u16,
    ip: IpAddr,
    port: u16,
    version: u32,
) -> Result<(), ChainError> {
    let mut f = Map::new();
    f.insert("netuid".into(), json!(netuid));
    f.insert("ip".into(), json!(ip.to_string()));
    f.insert("port".into(), json!(port));
    f.insert("version".into(), json!(version));
    send(chain, "devnet_serveAxon", hotkey, f).await.map(|_| ())
}

/// Whether the endpoint is a nicompute devnet (`system_chain`).
pub async fn is_devnet(chain: &Subtensor) -> Result<bool, ChainError> {
    Ok(chain.request("system_chain", json!([])).await?.as_str() == Some(super::CHAIN_NAME))
}
