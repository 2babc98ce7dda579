//! `nicompute-bench chain`: a 256-neuron metagraph fetched from the devnet chain, a new
//! connection each time (WebSocket, then HTTP), the way a CLI process would fetch it.

use std::time::{Duration, Instant};

use anyhow::Result;
use bittensor::devnet::{self, ops, DevnetConfig};
use bittensor::subtensor::calls::RAO_PER_TAO;
use bittensor::subtensor::Subtensor;
use bittensor::Keypair;

pub fn run(neurons: usize, iterations: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let dir = tempfile_dir()?;
        let owner = Keypair::generate(12)?;
        let cfg = DevnetConfig { bind: "127.0.0.1:0".parse()?, ..DevnetConfig::new(&dir, owner.account_id()) };
        let node = devnet::spawn(cfg).await?;
        let setup = Subtensor::new(&node.ws_url())?;
        let cold = Keypair::generate(12)?;
        ops::fund(&setup, &owner, &[(cold.account_id(), 1_000_000 * RAO_PER_TAO)]).await?;
        eprintln!("bench: registering {neurons} neurons on the devnet");
        let t = Instant::now();
        for i in 0..neurons {
            let k = Keypair::generate(12)?;
            ops::register(&setup, &cold, &k.account_id(), 27).await?;
            ops::serve_axon(&setup, &k, 27, "127.0.0.1".parse()?, 10_000 + i as u16, 9_000_000).await?;
            if i % 16 == 0 {
                ops::stake_to(&setup, &cold, &k.account_id(), 27, 2_000_000_000_000).await?;
            }
        }
        eprintln!("bench: set up in {:.1} s", t.elapsed().as_secs_f64());
        for (label, url) in [("WebSocket", node.ws_url()), ("HTTP", node.http_url())] {
            let mut times = Vec::with_capacity(iterations);
            for i in 0..iterations + 10 {
                let t = Instant::now();
                let chain = Subtensor::new(&url)?;
                let mg = chain.metagraph(27).await?;
                let dt = t.elapsed();
                anyhow::ensure!(mg.neurons.len() == neurons, "expected {neurons} neurons");
                if i >= 10 {
                    times.push(dt);
                }
            }
            times.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "devnet metagraph, {neurons} neurons, {label}, new connection: p50 {:.2} ms, p99 {:.2} ms ({iterations} runs)",
                ms(times[times.len() / 2]),
                ms(times[(times.len() - 1) * 99 / 100])
            );
        }
        node.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("nicompute-bench-devnet-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
