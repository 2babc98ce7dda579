//! `nicompute metagraph`: a subnet's neurons at the best block — keys, stake, validator
//! permits and axons — from the endpoint `--subtensor.*` names (finney by default).

use anyhow::Context;
use bittensor::subtensor::metagraph::{Metagraph, StakeSource};
use clap::Args;
use serde::Serialize;

use crate::opts::GlobalOpts;
use crate::output::{table, Output};

#[derive(Debug, Args)]
pub struct MetagraphArgs {
    /// Only neurons whose axon is serving.
    #[arg(long)]
    pub serving: bool,
}

#[derive(Debug, Serialize)]
struct Doc<'a> {
    endpoint: String,
    #[serde(flatten)]
    metagraph: &'a Metagraph,
}

impl MetagraphArgs {
    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let chain = g.subtensor.client()?;
        let netuid = g.subtensor.netuid();
        let mut mg =
            chain.metagraph(netuid).await.with_context(|| format!("reading the metagraph of netuid {netuid}"))?;
        if self.serving {
            mg.neurons.retain(|n| n.axon.serving);
        }
        let doc = Doc { endpoint: chain.endpoint().to_owned(), metagraph: &mg };
        out.result(&doc, |o| {
            let rows = mg
                .neurons
                .iter()
                .map(|n| {
                    vec![
                        n.uid.to_string(),
                        n.hotkey.clone(),
                        n.coldkey.clone(),
                        format!("{:.4}", n.stake_tao),
                        if n.validator_permit { "yes".into() } else { String::new() },
                        n.axon.addr().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            writeln!(o, "{}", table(&["UID", "Hotkey", "Coldkey", "Stake (τ)", "VPermit", "Axon"], rows))?;
            writeln!(
                o,
                "netuid {} at block {} ({}) from {}: {} neurons, {} with a validator permit, {} serving{}",
                mg.netuid,
                mg.block,
                mg.block_hash,
                doc.endpoint,
                mg.neurons.len(),
                mg.neurons.iter().filter(|n| n.validator_permit).count(),
                mg.neurons.iter().filter(|n| n.axon.serving).count(),
                match mg.stake_source {
                    StakeSource::SubnetState => "",
                    StakeSource::NeuronLite => "; stake from neurons_lite (no subnet state from this runtime)",
                }
            )
        });
        Ok(())
    }
}
