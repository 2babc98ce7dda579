//! SN27's allocation requirement (`Allocate.device_requirement`) and the rule that decides
//! whether a machine's [`Specs`] meet it, with the reason when they do not (for `--explain` and
//! for miners refusing allocations they cannot serve).
//!
//! The rule is SN27's `allocate_check_if_miner_meet` (v1.8.3) — cpu count `>=`; GPU count `>=`;
//! the required GPU type a case-insensitive substring of the GPU name; disk free `>=`; RAM
//! available `>=`; empty specs never match — except for GPU memory, where SN27 compares the
//! requirement (GB × 1024, per GPU) with the *summed* capacity of all GPUs, strictly greater.
//! That rejects a single H100 80GB (81559 MiB) for an 80 GB requirement (81920 MiB) and accepts
//! two 40 GB cards for an 80 GB one. Here GPU memory is compared per GPU, with a tolerance so a GPU
//! sold as N GB matches a requirement of N GB: see [`GPU_MEMORY_SLACK_MIB`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Map, Value};

use super::Specs;

/// Per-GPU memory `M` MiB (nvidia-smi's `memory.total`) meets a requirement of `R` MiB when
/// `M ≥ R − max(768 MiB, 1 % of R)` (integer MiB; see [`gpu_memory_threshold`]).
///
/// Why: NVIDIA sells memory in round gigabytes (`R` = GB × 1024 in SN27) while nvidia-smi reports
/// a little less on many parts, so the rule needs slack; the slack must stay under 1 GiB so a card
/// never matches the next size up. The figures (sources in `tests/fixtures/nvidia-smi/README.md`):
///
/// | GPU | reports (MiB) | sold size → threshold | next size up → threshold |
/// |---|---|---|---|
/// | H100 80GB HBM3 | 81559 | 80 GB → 81101 ✓ | 81 GB → 82115 ✗ |
/// | A100 / A800 80GB | 81920 | 80 GB → 81101 ✓ | 81 GB → 82115 ✗ |
/// | A100 40GB | 40960 | 40 GB → 40192 ✓ | 41 GB → 41216 ✗ |
/// | RTX 4090 | 24564 | 24 GB → 23808 ✓ | 25 GB → 24832 ✗ |
/// | Quadro RTX 6000 | 24576 | 24 GB → 23808 ✓ | 25 GB → 24832 ✗ |
/// | V100 16GB | 16384 | 16 GB → 15616 ✓ | 17 GB → 16640 ✗ |
/// | H200 | 143771 | 141 GB → 142941 ✓ | 142 GB → 143954 ✗ |
///
/// A purely proportional rule cannot do this: the H100 (0.44 % short of 80 GiB) needs a factor
/// ≤ 99.56 % to match 80 GB, the A100 80GB (exactly 80 GiB) needs one > 98.77 % not to match 81 GB,
/// the H200 one > 98.87 % not to match 142 GB, while consumer cards on some drivers report a
/// fixed 200–300 MiB short (1–2 % of 12–16 GB), which a 99 % factor would reject. The fixed
/// 768 MiB covers those; the 1 % covers the largest parts (the H200 is 613 MiB short of 141 GiB).
///
/// Cards that reserve 1/16 of their memory for ECC (A10 23028, L4 23034, L40S 46068, T4 15360 MiB,
/// about 6.3 % under their sold size) do not match their sold size, only the largest whole GB
/// under what they report (23, 23, 45 and 15 GB); no slack under 1 GiB can accept them.
pub const GPU_MEMORY_SLACK_MIB: u64 = 768;
/// The proportional part of the slack, in percent of the requirement; see [`GPU_MEMORY_SLACK_MIB`].
pub const GPU_MEMORY_SLACK_PERCENT: u64 = 1;

/// The smallest per-GPU memory (MiB) that meets a requirement of `required_mib`.
pub fn gpu_memory_threshold(required_mib: u64) -> u64 {
    required_mib.saturating_sub(GPU_MEMORY_SLACK_MIB.max(required_mib / 100 * GPU_MEMORY_SLACK_PERCENT))
}

/// Whether a GPU with `gpu_mib` of memory meets a per-GPU requirement of `required_mib`.
pub fn gpu_memory_matches(gpu_mib: u64, required_mib: u64) -> bool {
    gpu_mib >= gpu_memory_threshold(required_mib)
}

/// A GPU requirement: at least `count` GPUs whose name contains `kind` (case-insensitive; empty
/// matches any GPU) and whose memory meets `memory_mib` per GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuRequirement {
    /// Number of GPUs; `0` reads as 1 (a GPU requirement asks for a GPU).
    pub count: u64,
    /// Per-GPU memory, MiB (SN27: GB × 1024).
    pub memory_mib: u64,
    /// Type, matched as a case-insensitive substring of the GPU name (`"h100"`, `"4090"`).
    pub kind: String,
}

/// SN27's `device_requirement`. `None` sections impose nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirement {
    pub cpu_count: Option<u64>,
    pub gpu: Option<GpuRequirement>,
    /// Free disk, bytes.
    pub hard_disk_bytes: Option<u64>,
    /// Available RAM, bytes.
    pub ram_bytes: Option<u64>,
}

const GIB: u64 = 1 << 30;

impl Requirement {
    /// What SN27's `register.py` sends: 1 CPU, 1 GiB of disk, 1 GiB of RAM and the GPU, if any.
    pub fn sn27(gpu: Option<GpuRequirement>) -> Self {
        Self { cpu_count: Some(1), gpu, hard_disk_bytes: Some(GIB), ram_bytes: Some(GIB) }
    }

    /// Reads a `device_requirement` object. Missing or empty sections (`"gpu": {}`) impose
    /// nothing; within a GPU section, a missing count reads as 1, a missing capacity as 0 and a
    /// missing type as any. Numbers may be integers, floats or numeric strings.
    pub fn from_json(v: &Value) -> Result<Self, RequirementError> {
        let Value::Object(m) = v else {
            return Err(RequirementError("a device requirement must be a JSON object".into()));
        };
        let section = |key: &str| -> Option<&Map<String, Value>> {
            match m.get(key) {
                Some(Value::Object(s)) if !s.is_empty() => Some(s),
                _ => None,
            }
        };
        let number = |s: &Map<String, Value>, key: &str| -> Result<Option<u64>, RequirementError> {
            match s.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => {
                    number(v).map(Some).ok_or_else(|| RequirementError(format!("\"{key}\" is not a number: {v}")))
                }
            }
        };
        let gpu = match section("gpu") {
            None => None,
            Some(g) => Some(GpuRequirement {
                count: number(g, "count")?.unwrap_or(1),
                memory_mib: number(g, "capacity")?.unwrap_or(0),
                kind: match g.get("type") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                },
            }),
        };
        Ok(Self {
            cpu_count: section("cpu").map(|s| number(s, "count")).transpose()?.flatten(),
            gpu,
            hard_disk_bytes: section("hard_disk").map(|s| number(s, "capacity")).transpose()?.flatten(),
            ram_bytes: section("ram").map(|s| number(s, "capacity")).transpose()?.flatten(),
        })
    }

    /// The `device_requirement` object SN27 sends, keys in its order; absent sections are `{}`.
    pub fn to_json(&self) -> Value {
        let opt = |key: &str, v: Option<u64>| v.map_or_else(|| json!({}), |n| json!({ key: n }));
        let gpu = match &self.gpu {
            None => json!({}),
            Some(g) => json!({"count": g.count, "capacity": g.memory_mib, "type": g.kind}),
        };
        json!({
            "cpu": opt("count", self.cpu_count),
            "gpu": gpu,
            "hard_disk": opt("capacity", self.hard_disk_bytes),
            "ram": opt("capacity", self.ram_bytes),
        })
    }
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64().filter(|x| x.is_finite() && *x >= 0.0 && *x < u64::MAX as f64).map(|x| x.ceil() as u64)
        }),
        Value::String(s) => number(&Value::from(s.trim().parse::<f64>().ok()?)),
        _ => None,
    }
}

/// A `device_requirement` that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid device requirement: {0}")]
pub struct RequirementError(pub String);

impl Serialize for Requirement {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Requirement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_json(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The first requirement a machine fails: which field, what was required, what it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// `specs`, `cpu.count`, `gpu.count`, `gpu.type`, `gpu.capacity`, `hard_disk.capacity` or
    /// `ram.capacity`.
    pub field: &'static str,
    pub required: String,
    pub actual: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: requires {}, has {}", self.field, self.required, self.actual)
    }
}

impl std::error::Error for Mismatch {}

/// Checks `specs` against `req`, returning the first failed requirement.
pub fn check(req: &Requirement, specs: &Specs) -> Result<(), Mismatch> {
    match mismatches(req, specs).into_iter().next() {
        Some(m) => Err(m),
        None => Ok(()),
    }
}

/// Every failed requirement, in the order cpu, gpu, disk, ram (at most one per section).
pub fn mismatches(req: &Requirement, specs: &Specs) -> Vec<Mismatch> {
    if specs.is_empty() {
        return vec![Mismatch { field: "specs", required: "reported specs".into(), actual: "none".into() }];
    }
    let mut out = Vec::new();
    if let Some(n) = req.cpu_count {
        if specs.cpu.count < n {
            out.push(Mismatch {
                field: "cpu.count",
                required: format!("{n} CPUs"),
                actual: format!("{}", specs.cpu.count),
            });
        }
    }
    if let Some(g) = &req.gpu {
        if let Some(m) = gpu_mismatch(g, specs) {
            out.push(m);
        }
    }
    if let Some(bytes) = req.hard_disk_bytes {
        if specs.hard_disk.free < bytes {
            out.push(Mismatch {
                field: "hard_disk.capacity",
                required: format!("{} free", human_bytes(bytes)),
                actual: format!("{} free", human_bytes(specs.hard_disk.free)),
            });
        }
    }
    if let Some(bytes) = req.ram_bytes {
        if specs.ram.available < bytes {
            out.push(Mismatch {
                field: "ram.capacity",
                required: format!("{} available", human_bytes(bytes)),
                actual: format!("{} available", human_bytes(specs.ram.available)),
            });
        }
    }
    out
}

/// GPUs are compared one by one: the requirement is met when at least `count` GPUs each match
/// the type and the per-GPU memory. (SN27 checks the type against the first GPU only and the
/// memory against the sum; a machine mixing GPU models is judged on the GPUs that qualify.)
fn gpu_mismatch(req: &GpuRequirement, specs: &Specs) -> Option<Mismatch> {
    let need = req.count.max(1);
    let details = &specs.gpu.details;
    let kind = req.kind.trim().to_lowercase();
    let typed: Vec<_> = details.iter().filter(|d| d.name.to_lowercase().contains(&kind)).collect();
    let sized = typed.iter().filter(|d| gpu_memory_matches(d.capacity, req.memory_mib)).count() as u64;
    if sized >= need {
        return None;
    }
    let names = || {
        let mut names: Vec<&str> = details.iter().map(|d| d.name.as_str()).collect();
        names.dedup();
        names.join(", ")
    };
    Some(if (details.len() as u64) < need {
        Mismatch {
            field: "gpu.count",
            required: format!("{need} GPUs"),
            actual: if details.is_empty() { "0".into() } else { format!("{} ({})", details.len(), names()) },
        }
    } else if (typed.len() as u64) < need {
        Mismatch {
            field: "gpu.type",
            required: format!("{need} GPUs named like {:?}", req.kind),
            actual: format!("{} matching ({})", typed.len(), names()),
        }
    } else {
        let mut sizes: Vec<String> = typed.iter().map(|d| format!("{} MiB", d.capacity)).collect();
        sizes.dedup();
        Mismatch {
            field: "gpu.capacity",
            required: format!(
                "{need} GPUs of {} MiB each (at least {} MiB)",
                req.memory_mib,
                gpu_memory_threshold(req.memory_mib)
            ),
            actual: format!("{sized} large enough ({})", sizes.join(", ")),
        }
    })
}

fn human_bytes(b: u64) -> String {
    if b >= GIB {
        format!("{:.1} GiB ({b} bytes)", b as f64 / GIB as f64)
    } else {
        format!("{b} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::specs::{CpuSpecs, DiskSpecs, GpuDetail, GpuSpecs, RamSpecs};
    use std::path::PathBuf;

    /// (name, memory.total MiB) of each GPU in a real nvidia-smi default table: the name column
    /// of the first row of a GPU block and the number after `/` in Memory-Usage on the next.
    fn table_gpus(file: &str) -> Vec<(String, u64)> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/nvidia-smi").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::new();
        for pair in lines.windows(2) {
            let cells: Vec<&str> = pair[0].split('|').collect();
            let Some(first) = cells.get(1) else { continue };
            let mut words = first.split_whitespace();
            if words.next().and_then(|w| w.parse::<u32>().ok()).is_none() {
                continue;
            }
            let mut name: Vec<&str> = words.collect();
            name.pop(); // Persistence-M: On/Off
            let Some(mem) = pair[1].split('|').nth(2).and_then(|c| c.split('/').nth(1)) else { continue };
            let mib = mem.trim().trim_end_matches("MiB").parse().unwrap();
            out.push((name.join(" "), mib));
        }
        assert!(!out.is_empty(), "{file}: no GPU rows");
        out
    }

    fn specs_with(gpus: &[(String, u64)]) -> Specs {
        Specs {
            cpu: CpuSpecs { count: 8, frequency: 3000.0 },
            gpu: GpuSpecs {
                count: gpus.len() as u64,
                capacity: gpus.iter().map(|g| g.1).sum(),
                details: gpus.iter().map(|(n, c)| GpuDetail { name: n.clone(), capacity: *c }).collect(),
                graphics_speed: Some(0),
                memory_speed: Some(0),
            },
            hard_disk: DiskSpecs { free: 100 * GIB, ..Default::default() },
            ram: RamSpecs { available: 64 * GIB, ..Default::default() },
            has_docker: true,
            simulated: false,
        }
    }

    fn gb(kind: &str, gb: u64, count: u64) -> Requirement {
        Requirement::sn27(Some(GpuRequirement { count, memory_mib: gb * 1024, kind: kind.into() }))
    }

    #[test]
    fn real_cards_match_their_sold_size_and_not_the_next() {
        for (file, kind, sold_gb, count) in [
            ("h100-80gb-hbm3.table.txt", "h100", 80, 1),
            ("h100-80gb-hbm3.gpu-burn.table.txt", "H100", 80, 2),
            ("rtx-4090.table.txt", "4090", 24, 2),
            ("a100-sxm4-40gb.table.txt", "a100", 40, 2),
            ("a800-sxm4-80gb.table.txt", "a800", 80, 1),
            ("v100-sxm2-16gb.table.txt", "v100", 16, 2),
        ] {
            let gpus = table_gpus(file);
            assert_eq!(gpus.len() as u64, count, "{file}");
            let specs = specs_with(&gpus);
            assert_eq!(check(&gb(kind, sold_gb, count), &specs), Ok(()), "{file} should meet {sold_gb} GB");
            let m = check(&gb(kind, sold_gb + 1, count), &specs).unwrap_err();
            assert_eq!(m.field, "gpu.capacity", "{file}: {m}");
            // One more GPU than the machine has.
            assert_eq!(check(&gb(kind, sold_gb, count + 1), &specs).unwrap_err().field, "gpu.count", "{file}");
        }
        assert_eq!(table_gpus("h100-80gb-hbm3.table.txt"), vec![("NVIDIA H100 80GB HBM3".to_owned(), 81559)]);
        assert_eq!(table_gpus("rtx-4090.table.txt")[0], ("NVIDIA GeForce RTX 4090".to_owned(), 24564));
    }

    /// Totals quoted in modal-labs/modal-client#2797 and thundergolfer.com (fixture README).
    #[test]
    fn reported_totals_against_sold_sizes() {
        let reported = [
            ("H100", 81559, 80, true),
            ("A100 80GB", 81920, 80, true),
            ("A100 40GB", 40960, 40, true),
            ("H200", 143771, 141, true),
            // ECC-reserving parts report about 6.3 % less than their sold size.
            ("A10", 23028, 24, false),
            ("L40S", 46068, 48, false),
            ("L4", 23034, 24, false),
            ("T4", 15360, 16, false),
        ];
        for (gpu, mib, sold_gb, matches) in reported {
            assert_eq!(gpu_memory_matches(mib, sold_gb * 1024), matches, "{gpu} {mib} MiB vs {sold_gb} GB");
            assert!(!gpu_memory_matches(mib, (sold_gb + 1) * 1024), "{gpu} must not meet {} GB", sold_gb + 1);
        }
        // What the ECC parts do match: the largest whole GB under what they report.
        for (mib, gb) in [(23028, 23), (23034, 23), (46068, 45), (15360, 15)] {
            assert!(gpu_memory_matches(mib, gb * 1024) && !gpu_memory_matches(mib, (gb + 1) * 1024), "{mib}");
        }
        // The thresholds of the doc table.
        for (gb, threshold) in [(80, 81101), (81, 82115), (40, 40192), (41, 41216), (24, 23808), (25, 24832)] {
            assert_eq!(gpu_memory_threshold(gb * 1024), threshold, "{gb} GB");
        }
        assert_eq!((gpu_memory_threshold(16 * 1024), gpu_memory_threshold(17 * 1024)), (15616, 16640));
        assert_eq!((gpu_memory_threshold(141 * 1024), gpu_memory_threshold(142 * 1024)), (142941, 143954));
        assert!(gpu_memory_matches(81101, 81920) && !gpu_memory_matches(81100, 81920));
        // No requirement, no threshold.
        assert_eq!(gpu_memory_threshold(0), 0);
    }

    #[test]
    fn sn27_would_reject_a_single_h100_for_80gb_and_we_do_not() {
        let specs = specs_with(&table_gpus("h100-80gb-hbm3.table.txt"));
        // SN27: summed capacity strictly greater than the requirement.
        assert!(specs.gpu.capacity <= 80 * 1024);
        assert_eq!(check(&gb("h100", 80, 1), &specs), Ok(()));
        // Two 40 GB cards do not make a 79 GB GPU (SN27's sum, 81920 > 80896, accepts them).
        let specs = specs_with(&table_gpus("a100-sxm4-40gb.table.txt"));
        assert!(specs.gpu.capacity > 79 * 1024);
        assert_eq!(check(&gb("a100", 79, 1), &specs).unwrap_err().field, "gpu.capacity");
    }

    #[test]
    fn type_is_a_case_insensitive_substring_and_other_sections_apply() {
        let specs = specs_with(&table_gpus("rtx-4090.table.txt"));
        assert_eq!(check(&gb("RTX 4090", 24, 1), &specs), Ok(()));
        assert_eq!(check(&gb("", 24, 1), &specs), Ok(()));
        let m = check(&gb("h100", 24, 1), &specs).unwrap_err();
        assert_eq!(m.field, "gpu.type");
        assert_eq!(
            m.to_string(),
            "gpu.type: requires 1 GPUs named like \"h100\", has 0 matching (NVIDIA GeForce RTX 4090)"
        );

        let mut req = gb("4090", 24, 1);
        req.cpu_count = Some(9);
        assert_eq!(check(&req, &specs).unwrap_err().to_string(), "cpu.count: requires 9 CPUs, has 8");
        req.cpu_count = Some(8);
        req.hard_disk_bytes = Some(101 * GIB);
        req.ram_bytes = Some(65 * GIB);
        let all = mismatches(&req, &specs);
        assert_eq!(all.iter().map(|m| m.field).collect::<Vec<_>>(), ["hard_disk.capacity", "ram.capacity"]);
        assert_eq!(all[1].required, "65.0 GiB (69793218560 bytes) available");

        // A CPU-only machine against a GPU requirement, and empty specs against anything.
        let cpu_only = specs_with(&[]);
        assert_eq!(check(&Requirement::sn27(None), &cpu_only), Ok(()));
        assert_eq!(check(&gb("h100", 80, 1), &cpu_only).unwrap_err().to_string(), "gpu.count: requires 1 GPUs, has 0");
        assert_eq!(check(&Requirement::default(), &Specs::default()).unwrap_err().field, "specs");
    }

    #[test]
    fn mixed_machines_are_judged_on_the_gpus_that_qualify() {
        let mut gpus = table_gpus("h100-80gb-hbm3.table.txt");
        gpus.extend(table_gpus("rtx-4090.table.txt"));
        let specs = specs_with(&gpus);
        assert_eq!(check(&gb("h100", 80, 1), &specs), Ok(()));
        assert_eq!(check(&gb("", 24, 3), &specs), Ok(()));
        let m = check(&gb("", 80, 2), &specs).unwrap_err();
        assert_eq!(m.field, "gpu.capacity");
        assert_eq!(m.actual, "1 large enough (81559 MiB, 24564 MiB)");
        assert_eq!(m.required, "2 GPUs of 81920 MiB each (at least 81101 MiB)");
    }

    #[test]
    fn reads_and_writes_sn27s_device_requirement() {
        let sent = json!({"cpu":{"count":1},"gpu":{"count":1,"capacity":81920,"type":"h100"},
                          "hard_disk":{"capacity":1073741824},"ram":{"capacity":1073741824}});
        let req = Requirement::from_json(&sent).unwrap();
        assert_eq!(req, gb("h100", 80, 1));
        assert_eq!(req.to_json(), sent);
        assert_eq!(
            bittensor::synapse::py::to_json(&req, true, true),
            br#"{"cpu": {"count": 1}, "gpu": {"count": 1, "capacity": 81920, "type": "h100"}, "hard_disk": {"capacity": 1073741824}, "ram": {"capacity": 1073741824}}"#
        );
        // `gpu: {}` when no GPU is asked for.
        let no_gpu =
            json!({"cpu":{"count":1},"gpu":{},"hard_disk":{"capacity":1073741824},"ram":{"capacity":1073741824}});
        assert_eq!(Requirement::from_json(&no_gpu).unwrap(), Requirement::sn27(None));
        assert_eq!(Requirement::sn27(None).to_json(), no_gpu);
        // Tolerance: missing sections and keys, floats, strings.
        let loose = json!({"gpu":{"capacity":"24576","type":null},"ram":{"capacity":1.5e9},"extra":true});
        let req: Requirement = serde_json::from_value(loose).unwrap();
        assert_eq!(
            req,
            Requirement {
                cpu_count: None,
                gpu: Some(GpuRequirement { count: 1, memory_mib: 24576, kind: String::new() }),
                hard_disk_bytes: None,
                ram_bytes: Some(1_500_000_000),
            }
        );
        assert_eq!(Requirement::from_json(&json!({})).unwrap(), Requirement::default());
        assert!(Requirement::from_json(&json!([1])).is_err());
        let err = Requirement::from_json(&json!({"cpu":{"count":"many"}})).unwrap_err();
        assert_eq!(err.to_string(), "invalid device requirement: \"count\" is not a number: \"many\"");
    }
}
