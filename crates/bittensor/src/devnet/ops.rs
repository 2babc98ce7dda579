//! Setting up a network on a development chain with real extrinsics — the same calls and the same
//! `subtensor::tx` path nicompute uses on finney: register (`burned_register`, by the coldkey),
//! stake (`add_stake`), serve (`serve::publish`), and fund. Each step is idempotent (it reads the
//! chain first and sends nothing when it is already done), so `devnet up` can run them again.
//!
//! Funding is the one development convenience: on the embedded chain it is
//! `Sudo.sudo(Balances.force_set_balance)` signed by the devnet's owner key (the genesis sudo
//! key); on the real runtime under chopsticks it is chopsticks' `dev_setStorage`
//! (`crate::chopsticks::fund`).

use std::net::IpAddr;

use scale_value::Value;

use crate::extrinsic::call::multi_address;
use crate::extrinsic::Call;
use crate::keys::{AccountId, Keypair};
use crate::subtensor::calls::{add_stake, burned_register};
use crate::subtensor::serve::{self, Endpoint, Kind, Publication, ServeError};
use crate::subtensor::tx::{Included, TxError, TxOptions};
use crate::subtensor::{ChainError, Subtensor};

/// Whether the endpoint is a nicompute devnet (`system_chain`).
pub async fn is_devnet(chain: &Subtensor) -> Result<bool, ChainError> {
    Ok(chain.request("system_chain", serde_json::json!([])).await?.as_str() == Some(super::CHAIN_NAME))
}

/// `Sudo.sudo(Balances.force_set_balance { who, new_free })`.
pub fn force_set_balance(who: &AccountId, free: u128) -> Call {
    let inner = Value::unnamed_variant(
        "Balances",
        [Value::named_variant("force_set_balance", [("who", multi_address(who)), ("new_free", Value::u128(free))])],
    );
    Call::new("Sudo", "sudo").arg("call", inner)
}

async fn send(chain: &Subtensor, call: &Call, signer: &Keypair) -> Result<Included, TxError> {
    let opts = TxOptions::default();
    let prepared = chain.prepare(call, &signer.account_id(), &opts).await?;
    chain.submit(&prepared, signer, &opts).await
}

/// Sets each account's free balance (rao) on the embedded chain, signed by the owner (sudo) key.
/// Accounts that already hold at least that much are left alone.
pub async fn fund(chain: &Subtensor, owner: &Keypair, accounts: &[(AccountId, u128)]) -> Result<(), TxError> {
    for (who, rao) in accounts {
        if chain.free_balance(who).await? >= *rao {
            continue;
        }
        send(chain, &force_set_balance(who, *rao), owner).await?;
    }
    Ok(())
}

/// Registers `hotkey` on `netuid` with `burned_register` signed (and paid) by `coldkey`; returns
/// its uid, sending nothing when it is registered already.
pub async fn register(chain: &Subtensor, coldkey: &Keypair, hotkey: &AccountId, netuid: u16) -> Result<u16, TxError> {
    if let Some(uid) = chain.uid_of(netuid, hotkey).await? {
        return Ok(uid);
    }
    send(chain, &burned_register(netuid, hotkey), coldkey).await?;
    chain.uid_of(netuid, hotkey).await?.ok_or_else(|| {
        ChainError::BadResponse {
            endpoint: chain.endpoint().to_owned(),
            call: "SubtensorModule.burned_register".into(),
            reason: format!("the call succeeded but {hotkey} has no uid on netuid {netuid}"),
        }
        .into()
    })
}

/// Stakes from `coldkey` to `hotkey` on `netuid` until the hotkey holds at least `rao` of stake
/// from it (nothing sent when it does).
pub async fn stake_to(
    chain: &Subtensor,
    coldkey: &Keypair,
    hotkey: &AccountId,
    netuid: u16,
    rao: u64,
) -> Result<(), TxError> {
    let have = chain.stake(&coldkey.account_id(), hotkey, netuid).await?;
    if have >= rao {
        return Ok(());
    }
    send(chain, &add_stake(hotkey, netuid, rao - have), coldkey).await.map(|_| ())
}

/// Publishes the hotkey's axon (nothing sent when the chain has it already).
pub async fn serve_axon(
    chain: &Subtensor,
    hotkey: &Keypair,
    netuid: u16,
    ip: IpAddr,
    port: u16,
    version: u32,
) -> Result<Publication, ServeError> {
    let endpoint = Endpoint { ip, port, version };
    serve::publish(chain, hotkey, netuid, Kind::Axon, &endpoint, &TxOptions::default()).await
}
