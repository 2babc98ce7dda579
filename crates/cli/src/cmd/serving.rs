//! What `axon set` and `prometheus set` share (not a command itself): read the hotkey's neuron,
//! decide the endpoint, send nothing when the chain already has it, otherwise confirm, sign with
//! the hotkey and report the runtime's verdict with `bittensor::subtensor::serve::explain`.

use anyhow::Context;
use bittensor::subtensor::serve::{self, Current, Endpoint, Kind};
use bittensor::subtensor::tx::TxError;
use clap::Args;
use serde_json::{json, Map};

use super::tx::{self, Report, TxArgs};
use crate::opts::GlobalOpts;
use crate::output::{Output, Reported};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Send even when the chain already has this endpoint.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub tx: TxArgs,
}

/// The hotkey's axon and prometheus endpoints as the chain holds them.
#[derive(Debug)]
pub struct OnChain {
    pub axon: Current,
    pub prometheus: Current,
}

pub async fn run(
    g: &GlobalOpts,
    out: &mut Output,
    kind: Kind,
    endpoint: impl FnOnce(&OnChain) -> anyhow::Result<Endpoint>,
    args: &ServeArgs,
) -> anyhow::Result<()> {
    let netuid = g.subtensor.netuid();
    let w = g.wallet.wallet();
    let hot = w.hotkey_public().with_context(|| format!("reading hotkey '{}' of wallet '{}'", w.hotkey, w.name))?;
    let chain = tx::chain(g)?;
    let endpoints =
        chain.endpoints_of(netuid, &hot).await.with_context(|| format!("reading the endpoints of {hot}"))?;
    let Some(endpoints) = endpoints else {
        return Err(Reported(format!(
            "hotkey {hot} is not registered on netuid {netuid} ({}): register it first (`nicompute subnet register`); nothing was signed",
            chain.endpoint()
        ))
        .into());
    };
    let now =
        OnChain { axon: Current::of(&endpoints, Kind::Axon), prometheus: Current::of(&endpoints, Kind::Prometheus) };
    let want = endpoint(&now)?;
    let current = match kind {
        Kind::Axon => &now.axon,
        Kind::Prometheus => &now.prometheus,
    };
    let what = match kind {
        Kind::Axon => "axon",
        Kind::Prometheus => "prometheus",
    };
    let target = format!("{}:{} version {}", want.ip, want.port, want.version);
    if current.matches(&want) && !args.force {
        let doc = json!({"ok": true, "unchanged": true, "hotkey": hot.to_ss58(), "netuid": netuid, "uid": current.uid,
            kind.call_name(): want, "served_at_block": current.block, "endpoint": chain.endpoint()});
        out.result(&doc, |o| {
            writeln!(o, "The chain already has {what} {target} for {hot} on netuid {netuid}; nothing to do")
        });
        return Ok(());
    }
    let prepared = chain
        .prepare(&serve::call(kind, netuid, &want), &hot, &args.tx.options())
        .await
        .with_context(|| format!("preparing {}", kind.call_name()))?;
    let fee = tx::quote_if_asking(&chain, &prepared, &args.tx).await?;
    let was = if current.block == 0 && current.ip == "0.0.0.0" {
        "never published".to_owned()
    } else {
        format!("now {}:{} version {}, published at block {}", current.ip, current.port, current.version, current.block)
    };
    tx::confirm(
        out,
        &args.tx,
        &[
            format!(
                "Publish {what} {target} for hotkey {hot} (uid {}) on netuid {netuid}, {}",
                current.uid,
                chain.endpoint()
            ),
            format!("  ({was})"),
            tx::fee_line(fee),
        ],
    )?;
    let key = g.wallet.hotkey()?;
    let (result, fee) = tx::submit(&chain, &prepared, &key, &args.tx, fee).await;
    let hint = match result.as_ref().err().and_then(TxError::refusal_name) {
        Some(name) => serve::explain(&chain, netuid, name, current.block).await,
        None => None,
    };
    let fields = Map::from_iter([
        ("hotkey".to_owned(), json!(hot.to_ss58())),
        ("netuid".to_owned(), json!(netuid)),
        ("uid".to_owned(), json!(current.uid)),
        (kind.call_name().to_owned(), json!(want)),
    ]);
    tx::finish(
        out,
        Report { chain: &chain, prepared: &prepared, fee, fields },
        result,
        |inc| format!("Published {what} {target} for {hot} on netuid {netuid} in block {}", inc.block_number),
        |_| hint,
    )
}
