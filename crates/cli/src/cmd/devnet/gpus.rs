//! `--gpus` for `devnet up`: presets (`h100`, `a100`, `4090`, `cpu`, with `xN`) or nvidia-smi
//! names with memory, cycled over the miners, as `miner run --simulate-gpu` values.

use compute::specs::{SimulatedGpu, SimulatedGpuError};

/// The default spread: one of each kind a renter asks for, and a CPU-only machine.
pub const DEFAULT_GPUS: &str = "h100,a100,4090,cpu";

/// A preset's nvidia-smi name and memory; `None` for a CPU-only machine.
fn preset(name: &str) -> Option<Option<(&'static str, u64)>> {
    match name.to_ascii_lowercase().as_str() {
        "h100" => Some(Some(("NVIDIA H100 80GB HBM3", 81559))),
        "a100" => Some(Some(("NVIDIA A100-SXM4-40GB", 40960))),
        "4090" | "rtx4090" => Some(Some(("NVIDIA GeForce RTX 4090", 24564))),
        "cpu" | "none" => Some(None),
        _ => None,
    }
}

/// One `--gpus` entry as a `--simulate-gpu` value: a preset, a preset with `xN`, or a full
/// `NAME:MEM_MIB[:COUNT]`.
pub fn gpu_preset(entry: &str) -> Result<SimulatedGpu, SimulatedGpuError> {
    let entry = entry.trim();
    let with_count = entry.rsplit_once(['x', 'X']).and_then(|(n, c)| {
        let count = c.parse::<u32>().ok().filter(|_| c.bytes().all(|b| b.is_ascii_digit()))?;
        Some((preset(n)?, count))
    });
    let (kind, count) = match (preset(entry), with_count) {
        (Some(kind), _) => (kind, 1),
        (None, Some((kind, count))) => (kind, count),
        (None, None) => return entry.parse::<SimulatedGpu>(),
    };
    match kind {
        None => Ok(SimulatedGpu::none()),
        Some((model, mib)) => format!("{model}:{mib}:{count}").parse::<SimulatedGpu>(),
    }
}

/// A `--gpus` value that names no usable machine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpusError {
    #[error(transparent)]
    Entry(#[from] SimulatedGpuError),
    #[error("--gpus names no machine")]
    Empty,
}

/// `--gpus` and `--miners` to one simulated machine per miner.
pub fn plan_gpus(spec: Option<&str>, miners: Option<u16>) -> Result<Vec<SimulatedGpu>, GpusError> {
    let entries: Vec<SimulatedGpu> = spec
        .unwrap_or(DEFAULT_GPUS)
        .split(',')
        .filter(|e| !e.trim().is_empty())
        .map(gpu_preset)
        .collect::<Result<_, _>>()?;
    if entries.is_empty() {
        return Err(GpusError::Empty);
    }
    let n = miners.map_or(if spec.is_some() { entries.len() } else { 4 }, usize::from);
    Ok((0..n).map(|i| entries[i % entries.len()].clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spread_and_cycling() {
        let g = plan_gpus(None, None).expect("default");
        let names: Vec<String> = g.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "NVIDIA H100 80GB HBM3:81559:1",
                "NVIDIA A100-SXM4-40GB:40960:1",
                "NVIDIA GeForce RTX 4090:24564:1",
                "none"
            ]
        );
        assert_eq!(plan_gpus(None, Some(6)).expect("six")[4].to_string(), "NVIDIA H100 80GB HBM3:81559:1");
        let custom = plan_gpus(Some("h100x8, Tesla T4:15360:2"), None).expect("custom");
        assert_eq!(custom.len(), 2);
        assert_eq!(custom[0].count, 8);
        assert_eq!(custom[1].name, "Tesla T4");
        assert_eq!(gpu_preset("rtx4090").expect("preset").name, "NVIDIA GeForce RTX 4090");
        assert_eq!(gpu_preset("RTX4090x2").expect("preset").count, 2);
        assert!(gpu_preset("h100x0").is_err(), "zero cards");
        assert!(plan_gpus(Some("h200"), None).is_err(), "not a preset and not NAME:MEM");
        assert!(plan_gpus(Some(","), None).is_err());
    }
}
