//! `nicompute-bench decode`: how long turning fixture 01 (finney netuid 1, 1024 neurons) into a
//! `Metagraph` takes, so a validator's metagraph sync is known to be dominated by the network.
//!
//! The timed part is what a sync does after the two `state_call` responses arrive: SCALE-decode
//! `Vec<NeuronInfoLite>` (186 kB) and `Option<SubnetState>`, then `Metagraph::from_parts` (SS58
//! for every key, IP strings, f32 stakes). Hex decoding of the JSON-RPC strings is done once
//! outside that loop; it is timed on its own, and as part of a hex + decode total.

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use bittensor::subtensor::decode::{decode_result, from_hex};
use bittensor::subtensor::metagraph::Metagraph;
use bittensor::subtensor::types::{NeuronInfoLite, SubnetState};

const FIXTURE: &str = "01_sn1_block6852690_spec343";
const BLOCK: u64 = 6_852_690;
const BLOCK_HASH: &str = "0xdb13c066e2c63969f140164fb3bfe7a0aaa7b71407fc0fe525d68e57329ef9d0";
const WARMUP: usize = 20;

/// Decodes both results and assembles the metagraph: the timed unit.
fn decode_once(neurons: &[u8], state: &[u8]) -> Result<Metagraph> {
    Ok(Metagraph::decode(1, BLOCK, BLOCK_HASH.to_owned(), neurons, state)?)
}

/// Median and p99 (nearest rank), in ms, of `iterations` timed runs of `f` after `WARMUP` untimed ones.
fn time<T>(iterations: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, f64)> {
    for _ in 0..WARMUP {
        std::hint::black_box(f()?);
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        std::hint::black_box(f()?);
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    Ok((at(0.5), at(0.99)))
}

pub fn run(fixtures_dir: &Path, iterations: usize) -> Result<()> {
    ensure!(iterations > 0, "--iterations must be at least 1");
    let dir = fixtures_dir.join(FIXTURE);
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let (neurons_hex, state_hex) = (read("neurons_lite.result.hex")?, read("subnet_state.result.hex")?);
    let (neurons, state) = (from_hex(neurons_hex.trim())?, from_hex(state_hex.trim())?);

    let mg = decode_once(&neurons, &state)?;
    ensure!(mg.len() == 1024, "fixture 01 should hold 1024 neurons, decoded {}", mg.len());
    println!(
        "fixture {FIXTURE}: {} neurons, {} + {} bytes; {WARMUP} warm-up runs, then {iterations} timed",
        mg.len(),
        neurons.len(),
        state.len()
    );

    let (median, p99) = time(iterations, || Ok(decode_result::<Vec<NeuronInfoLite>>(&neurons, "get_neurons_lite")?))?;
    println!("{:<44} median {median:>8.3} ms   p99 {p99:>8.3} ms", "SCALE decode Vec<NeuronInfoLite>");
    let (median, p99) = time(iterations, || Ok(decode_result::<Option<SubnetState>>(&state, "get_subnet_state")?))?;
    println!("{:<44} median {median:>8.3} ms   p99 {p99:>8.3} ms", "SCALE decode Option<SubnetState> (derived)");
    let (median, p99) = time(iterations, || Ok(bittensor::subtensor::decode::decode_subnet_state(&state)?))?;
    println!("{:<44} median {median:>8.3} ms   p99 {p99:>8.3} ms", "SCALE decode Option<SubnetState> (fast)");
    let (median, p99) = time(iterations, || decode_once(&neurons, &state))?;
    println!("{:<44} median {median:>8.3} ms   p99 {p99:>8.3} ms", "decode both + Metagraph::from_parts");
    let (median, p99) = time(iterations, || Ok((from_hex(neurons_hex.trim())?, from_hex(state_hex.trim())?)))?;
    println!("{:<44} median {median:>8.3} ms   p99 {p99:>8.3} ms", "hex decode of both results");
    let (median, p99) = time(iterations, || {
        let (n, s) = (from_hex(neurons_hex.trim())?, from_hex(state_hex.trim())?);
        decode_once(&n, &s)
    })?;
    println!("{:<44} median {median:>8.3} ms   p99 {p99:>8.3} ms", "hex + decode both + Metagraph::from_parts");
    Ok(())
}
