//! The miner's hardware specs in SN27's JSON shape, detected from the real machine, and the
//! requirement matching that decides whether a machine can serve an allocation.
//!
//! SN27 miners report their hardware as
//! `{"cpu": {...}, "gpu": {...}, "hard_disk": {...}, "ram": {...}, "has_docker": bool}`
//! (`neurons/Validator/script.py`, v1.8.3); requesters and validators read it back and match
//! allocation requirements against it. [`Specs`] writes that shape key for key and reads the
//! Python miners' version of it tolerantly (missing sections, floats where we write integers,
//! extra keys). [`detect`] fills it from nvidia-smi, `/proc`, `statvfs` and the Docker socket;
//! [`check`] applies SN27's matching rule, corrected for GPU memory (see [`requirement`]).
//!
//! Where our numbers differ from the Python miner's, on purpose:
//! * `cpu.count` is the number of logical CPUs this process may use (psutil's
//!   `cpu_count(logical=False)` counts physical cores); `cpu.frequency` is the CPUs' maximum
//!   clock in MHz (cpufreq `cpuinfo_max_freq`, else the highest `cpu MHz` of `/proc/cpuinfo`),
//!   where psutil reports the current one.
//! * `gpu.graphics_speed` / `gpu.memory_speed` are the first GPU's *maximum* graphics and memory
//!   clocks in MHz (`clocks.max.*`); SN27 queries the current clocks (`clocks.gr`, `clocks.mem`),
//!   which on an idle GPU are its idle clocks and say little about the hardware.
//! * The disk and RAM `read_speed` / `write_speed` are `0.0`, meaning "not measured": SN27 times
//!   a 100 MB write that lands in the page cache, a number that measures nothing reliable. The
//!   keys stay present because Python readers index them directly.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub mod host;
pub mod nvidia;
pub mod requirement;

pub use nvidia::{parse_nvidia_smi_csv, NvidiaGpu, NvidiaSmi, GPU_QUERY};
pub use requirement::{
    check, gpu_memory_matches, gpu_memory_threshold, mismatches, GpuRequirement, Mismatch, Requirement,
    RequirementError, GPU_MEMORY_SLACK_MIB, GPU_MEMORY_SLACK_PERCENT,
};

/// A machine's hardware, serialized exactly as SN27's specs JSON (bytes unless noted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Specs {
    #[serde(default, deserialize_with = "section")]
    pub cpu: CpuSpecs,
    #[serde(default, deserialize_with = "section")]
    pub gpu: GpuSpecs,
    #[serde(default, deserialize_with = "section")]
    pub hard_disk: DiskSpecs,
    #[serde(default, deserialize_with = "section")]
    pub ram: RamSpecs,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub has_docker: bool,
    /// Present (and `true`) only when the GPUs were simulated with `--simulate-gpu`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not", deserialize_with = "lenient_bool")]
    pub simulated: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuSpecs {
    /// Logical CPUs.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub count: u64,
    /// MHz.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub frequency: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuSpecs {
    #[serde(default, deserialize_with = "lenient_u64")]
    pub count: u64,
    /// MiB, summed over all GPUs.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub capacity: u64,
    #[serde(default, deserialize_with = "lenient_details")]
    pub details: Vec<GpuDetail>,
    /// MHz; written only when there are GPUs, as SN27 does.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_opt_u64")]
    pub graphics_speed: Option<u64>,
    /// MHz; written only when there are GPUs, as SN27 does.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_opt_u64")]
    pub memory_speed: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDetail {
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: String,
    /// MiB.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub capacity: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskSpecs {
    #[serde(default, deserialize_with = "lenient_u64")]
    pub total: u64,
    /// Bytes available to unprivileged users.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub free: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub used: u64,
    /// MB/s; 0 = not measured.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub write_speed: f64,
    /// MB/s; 0 = not measured.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub read_speed: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RamSpecs {
    #[serde(default, deserialize_with = "lenient_u64")]
    pub total: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub available: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub used: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub free: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub swap_total: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub swap_used: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub swap_free: u64,
    /// MB/s; 0 = not measured.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub read_speed: f64,
    /// MB/s; 0 = not measured.
    #[serde(default, deserialize_with = "lenient_f64")]
    pub write_speed: f64,
}

impl Specs {
    /// Parses specs JSON, tolerating SN27's Python variants (see the module docs). The top level
    /// must be an object.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        // Straight into the struct when it can be (one pass, no intermediate tree: most of a
        // cold `list_r`); through a `Value` when that fails, which keeps the last of duplicate
        // keys and words the error as before.
        if text.trim_start().starts_with('{') {
            // Sections read strictly here; one of the wrong shape sends the whole text down the
            // tolerant path below.
            STRICT_SECTIONS.set(true);
            let direct = serde_json::from_str::<Self>(text);
            STRICT_SECTIONS.set(false);
            if let Ok(specs) = direct {
                return Ok(specs);
            }
        }
        match serde_json::from_str::<Value>(text)? {
            v @ Value::Object(_) => serde_json::from_value(v),
            _ => Err(serde::de::Error::custom("specs must be a JSON object")),
        }
    }

    /// The JSON text as Python's `json.dumps` writes it (`", "`/`": "` separators, ASCII only).
    pub fn to_json_string(&self) -> String {
        let bytes = bittensor::synapse::py::to_json(self, true, true);
        // `to_json` with ensure_ascii writes only ASCII.
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Whether nothing at all was reported (SN27: "empty details never match").
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl GpuSpecs {
    /// The `gpu` section for these GPUs: count, summed MiB, per-GPU details, and the first GPU's
    /// maximum clocks as the speeds (0 when nvidia-smi reports them unknown).
    pub fn from_gpus(gpus: &[NvidiaGpu]) -> Self {
        let details: Vec<GpuDetail> =
            gpus.iter().map(|g| GpuDetail { name: g.name.clone(), capacity: g.memory_mib.unwrap_or(0) }).collect();
        let first = gpus.first();
        Self {
            count: details.len() as u64,
            capacity: details.iter().map(|d| d.capacity).sum(),
            details,
            graphics_speed: first.map(|g| g.max_graphics_mhz.unwrap_or(0)),
            memory_speed: first.map(|g| g.max_memory_mhz.unwrap_or(0)),
        }
    }
}

/// GPUs to report instead of detecting them (test rigs, CPU-only development machines):
/// `NAME:MEMORY_MIB[:COUNT]`, e.g. `NVIDIA H100 80GB HBM3:81559:1`. The name may contain spaces
/// and colons; the memory and count are the last one or two fields. `none` simulates a machine
/// without GPUs (a CPU-only devnet miner on a host that has some).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedGpu {
    pub name: String,
    pub memory_mib: u64,
    pub count: u32,
}

/// Why a `--simulate-gpu` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid simulated GPU {input:?}: {reason} (expected NAME:MEMORY_MIB[:COUNT], e.g. \"NVIDIA H100 80GB HBM3:81559:1\")")]
pub struct SimulatedGpuError {
    pub input: String,
    pub reason: String,
}

impl FromStr for SimulatedGpu {
    type Err = SimulatedGpuError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| SimulatedGpuError { input: s.to_owned(), reason: reason.to_owned() };
        if s.trim().eq_ignore_ascii_case("none") {
            return Ok(Self::none());
        }
        let number = |t: &str| -> Option<u64> {
            let t = t.trim();
            (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse().ok()).flatten()
        };
        let parts: Vec<&str> = s.split(':').collect();
        let (name_parts, memory, count) = match parts.as_slice() {
            [.., m, c] if parts.len() >= 3 && number(m).is_some() && number(c).is_some() => {
                (&parts[..parts.len() - 2], number(m), number(c))
            }
            [.., m] if parts.len() >= 2 => (&parts[..parts.len() - 1], number(m), Some(1)),
            _ => return Err(err("missing the memory size")),
        };
        let memory = memory.ok_or_else(|| err("the memory size must be a whole number of MiB"))?;
        let name = name_parts.join(":").trim().to_owned();
        if name.is_empty() {
            return Err(err("the GPU name is empty"));
        }
        if memory == 0 {
            return Err(err("the memory size must be more than 0 MiB"));
        }
        let count = count.and_then(|c| u32::try_from(c).ok()).ok_or_else(|| err("the count is too large"))?;
        if count == 0 {
            return Err(err("the count must be at least 1"));
        }
        if count > 64 {
            return Err(err("the count must be at most 64"));
        }
        Ok(Self { name, memory_mib: memory, count })
    }
}

impl fmt::Display for SimulatedGpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return f.write_str("none");
        }
        write!(f, "{}:{}:{}", self.name, self.memory_mib, self.count)
    }
}

impl SimulatedGpu {
    /// No GPUs at all (still marked simulated).
    pub fn none() -> Self {
        Self { name: String::new(), memory_mib: 0, count: 0 }
    }

    /// The GPUs this simulates, as nvidia-smi would list them (clocks unknown).
    pub fn gpus(&self) -> Vec<NvidiaGpu> {
        let gpu = NvidiaGpu { name: self.name.clone(), memory_mib: Some(self.memory_mib), ..Default::default() };
        vec![gpu; self.count as usize]
    }
}

/// Where [`detect`] looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectOptions {
    /// A path on the filesystem whose space is reported (the miner's state dir or Docker's data
    /// root); default `/`, as SN27.
    pub disk_path: PathBuf,
    /// Report these GPUs instead of asking nvidia-smi, and mark the specs `simulated`.
    pub simulate_gpu: Option<SimulatedGpu>,
    /// The nvidia-smi binary; default `nvidia-smi` (looked up on `PATH`).
    pub nvidia_smi: PathBuf,
    /// How long nvidia-smi may take before it is killed and no GPUs are reported.
    pub nvidia_smi_timeout: Duration,
    /// The Docker daemon socket whose presence sets `has_docker`.
    pub docker_socket: PathBuf,
}

impl Default for DetectOptions {
    fn default() -> Self {
        Self {
            disk_path: PathBuf::from("/"),
            simulate_gpu: None,
            nvidia_smi: PathBuf::from("nvidia-smi"),
            nvidia_smi_timeout: Duration::from_secs(15),
            docker_socket: PathBuf::from("/var/run/docker.sock"),
        }
    }
}

/// Detects this machine's specs. Never fails: whatever cannot be read is reported as zero (with
/// a warning), and a missing or failing nvidia-smi means no GPUs.
pub async fn detect(opts: &DetectOptions) -> Specs {
    let opts = opts.clone();
    match tokio::task::spawn_blocking(move || detect_blocking(&opts)).await {
        Ok(specs) => specs,
        Err(e) => {
            tracing::warn!(error = %e, "specs detection did not finish; reporting empty specs");
            Specs::default()
        }
    }
}

/// [`detect`] for callers outside an async runtime. Blocks for up to `nvidia_smi_timeout`.
pub fn detect_blocking(opts: &DetectOptions) -> Specs {
    let (gpus, simulated) = match &opts.simulate_gpu {
        Some(sim) => (sim.gpus(), true),
        None => (detect_gpus(opts), false),
    };
    Specs {
        cpu: host::cpu(),
        gpu: GpuSpecs::from_gpus(&gpus),
        hard_disk: host::disk(&opts.disk_path),
        ram: host::ram(),
        has_docker: host::has_docker(&opts.docker_socket),
        simulated,
    }
}

fn detect_gpus(opts: &DetectOptions) -> Vec<NvidiaGpu> {
    match nvidia::query(&opts.nvidia_smi, opts.nvidia_smi_timeout) {
        NvidiaSmi::Gpus(gpus) => gpus,
        NvidiaSmi::NotInstalled => {
            tracing::debug!(nvidia_smi = %opts.nvidia_smi.display(), "nvidia-smi not found; reporting no GPUs");
            Vec::new()
        }
        NvidiaSmi::Failed(reason) => {
            tracing::warn!(%reason, "nvidia-smi failed; reporting no GPUs");
            Vec::new()
        }
    }
}

// ---- tolerant deserialization of Python-made specs ----

thread_local! {
    /// Set during [`Specs::from_json`]'s first, strict pass (see [`section`]).
    static STRICT_SECTIONS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A section (`cpu`, `gpu`, ...): `null`, `{}`, a missing key or a value of the wrong shape all
/// read as the default, so one odd section does not discard a miner's whole specs.
fn section<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    // On `from_json`'s first pass, straight into `T` (a cold `list_r` parses a thousand specs);
    // a section of the wrong shape then fails that pass, and the tolerant pass below reads it.
    if STRICT_SECTIONS.get() {
        return Ok(Option::<T>::deserialize(d)?.unwrap_or_default());
    }
    // Tolerant: serde's untagged buffer (borrowed strings, no ordered map), then `T` or the
    // default.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Or<T> {
        Read(T),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Or::<T>::deserialize(d)? {
        Or::Read(t) => t,
        Or::Other(_) => T::default(),
    })
}

/// Integers written by Python as ints, floats (`81559.0`) or numeric strings; anything else is 0.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(d.deserialize_any(Lenient)?.u64().unwrap_or(0))
}

fn lenient_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(d.deserialize_any(Lenient)?.u64())
}

fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(d.deserialize_any(Lenient)?.f64().filter(|x| x.is_finite()).unwrap_or(0.0))
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(matches!(d.deserialize_any(Lenient)?, Scalar::Bool(true)))
}

/// What a lenient field reads, straight from the parser (a thousand specs are read per cold
/// `list_r`, each with twenty numbers): the scalar it holds, a numeric string as the float it
/// spells, and any other value consumed as [`Scalar::Other`]. The fields keep the rules they had
/// when they went through a `serde_json::Value`; a test keeps that reading as the reference.
struct Lenient;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Other,
}

impl Scalar {
    /// Non-negative integers as they are, finite non-negative floats rounded (numeric strings
    /// read as floats), negative numbers and everything else none.
    fn u64(self) -> Option<u64> {
        match self {
            Scalar::U64(v) => Some(v),
            Scalar::I64(v) => u64::try_from(v).ok(),
            Scalar::F64(x) => {
                Some(x).filter(|x| x.is_finite() && *x >= 0.0 && *x < u64::MAX as f64).map(|x| x.round() as u64)
            }
            Scalar::Bool(_) | Scalar::Other => None,
        }
    }

    fn f64(self) -> Option<f64> {
        match self {
            Scalar::U64(v) => Some(v as f64),
            Scalar::I64(v) => Some(v as f64),
            Scalar::F64(x) => Some(x),
            Scalar::Bool(_) | Scalar::Other => None,
        }
    }
}

impl<'de> serde::de::Visitor<'de> for Lenient {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::U64(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::I64(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::F64(v))
    }

    /// A numeric string reads as the number it spells (as a float, like Python's `float()`).
    fn visit_str<E>(self, s: &str) -> Result<Scalar, E> {
        Ok(s.trim().parse::<f64>().map_or(Scalar::Other, Scalar::F64))
    }

    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_none<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

fn lenient_details<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<GpuDetail>, D::Error> {
    // `from_json`'s first pass reads the list straight into its structs; one odd entry fails
    // that pass, and the tolerant pass below drops just that entry.
    if STRICT_SECTIONS.get() {
        return Ok(Option::<Vec<GpuDetail>>::deserialize(d)?.unwrap_or_default());
    }
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items.into_iter().filter_map(|v| serde_json::from_value(v).ok()).collect(),
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h100_specs() -> Specs {
        let gpus = parse_nvidia_smi_csv("NVIDIA H100 80GB HBM3, 81559, 1980, 2619\n", &GPU_QUERY);
        Specs {
            cpu: CpuSpecs { count: 16, frequency: 3800.0 },
            gpu: GpuSpecs::from_gpus(&gpus),
            hard_disk: DiskSpecs { total: 3, free: 2, used: 1, write_speed: 0.0, read_speed: 0.0 },
            ram: RamSpecs {
                total: 10,
                available: 8,
                used: 2,
                free: 5,
                swap_total: 4,
                swap_used: 1,
                swap_free: 3,
                ..Default::default()
            },
            has_docker: true,
            simulated: false,
        }
    }

    #[test]
    fn lenient_fields_read_as_they_did_through_a_json_value() {
        // The reading these fields had when each went through a `serde_json::Value`.
        fn value_u64(v: &Value) -> Option<u64> {
            match v {
                Value::Number(n) => n.as_u64().or_else(|| {
                    n.as_f64().filter(|x| x.is_finite() && *x >= 0.0 && *x < u64::MAX as f64).map(|x| x.round() as u64)
                }),
                Value::String(s) => value_u64(&Value::from(s.trim().parse::<f64>().ok()?)),
                _ => None,
            }
        }
        fn value_f64(v: &Value) -> f64 {
            let x = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            x.filter(|x: &f64| x.is_finite()).unwrap_or(0.0)
        }
        #[derive(Deserialize)]
        struct Fields {
            #[serde(deserialize_with = "lenient_opt_u64")]
            u: Option<u64>,
            #[serde(deserialize_with = "lenient_f64")]
            f: f64,
            #[serde(deserialize_with = "lenient_bool")]
            b: bool,
        }
        let strings = [" 42 ", "4.5", "-3", "NaN", "inf", "x", ""];
        let mut raws: Vec<String> = [
            "0",
            "81559",
            "81559.0",
            "81559.5",
            "2596.14",
            "-1",
            "-1.5",
            "1e30",
            "18446744073709551615",
            "18446744073709551616",
            "1.7976931348623157e308",
            "true",
            "false",
            "null",
            "[1, 2]",
            "{\"a\": {\"b\": [1]}}",
        ]
        .map(String::from)
        .to_vec();
        raws.extend(strings.iter().map(|s| Value::from(*s).to_string()));
        for raw in &raws {
            let v: Value = serde_json::from_str(raw).unwrap();
            let doc = format!("{{\"u\": {raw}, \"f\": {raw}, \"b\": {raw}}}");
            // Straight from the parser, and from a parsed document (the tolerant pass's path).
            let direct: Fields = serde_json::from_str(&doc).unwrap();
            let from_value: Fields = serde_json::from_value(serde_json::from_str(&doc).unwrap()).unwrap();
            for got in [direct, from_value] {
                assert_eq!(got.u, value_u64(&v), "{raw}");
                assert_eq!(got.f.to_bits(), value_f64(&v).to_bits(), "{raw}");
                assert_eq!(got.b, v == Value::Bool(true), "{raw}");
            }
        }
    }

    #[test]
    fn serializes_to_sn27s_shape_in_pythons_style() {
        assert_eq!(
            h100_specs().to_json_string(),
            concat!(
                r#"{"cpu": {"count": 16, "frequency": 3800.0}, "#,
                r#""gpu": {"count": 1, "capacity": 81559, "details": [{"name": "NVIDIA H100 80GB HBM3", "capacity": 81559}], "graphics_speed": 1980, "memory_speed": 2619}, "#,
                r#""hard_disk": {"total": 3, "free": 2, "used": 1, "write_speed": 0.0, "read_speed": 0.0}, "#,
                r#""ram": {"total": 10, "available": 8, "used": 2, "free": 5, "swap_total": 4, "swap_used": 1, "swap_free": 3, "read_speed": 0.0, "write_speed": 0.0}, "#,
                r#""has_docker": true}"#
            )
        );
    }

    #[test]
    fn no_gpus_omits_speeds_and_simulated_is_marked() {
        let mut s = h100_specs();
        s.gpu = GpuSpecs::from_gpus(&[]);
        let v: Value = serde_json::from_str(&s.to_json_string()).unwrap();
        assert_eq!(v["gpu"], serde_json::json!({"count": 0, "capacity": 0, "details": []}));
        assert!(v.get("simulated").is_none());

        let sim: SimulatedGpu = "NVIDIA H100 80GB HBM3:81559:2".parse().unwrap();
        s.gpu = GpuSpecs::from_gpus(&sim.gpus());
        s.simulated = true;
        let v: Value = serde_json::from_str(&s.to_json_string()).unwrap();
        assert_eq!(v["simulated"], Value::Bool(true));
        assert_eq!(v["gpu"]["count"], 2);
        assert_eq!(v["gpu"]["capacity"], 163118);
        assert_eq!(v["gpu"]["graphics_speed"], 0);
        assert_eq!(Specs::from_json(&s.to_json_string()).unwrap(), s);
    }

    #[test]
    fn round_trips() {
        let s = h100_specs();
        assert_eq!(Specs::from_json(&s.to_json_string()).unwrap(), s);
    }

    #[test]
    fn reads_python_miners_specs_tolerantly() {
        // The shape SN27's script.py produces: GPUtil floats, current-clock ints, float speeds,
        // an extra per-GPU key from an older version, and a section that failed (`{}`).
        let python = r#"{"cpu": {"count": 8, "frequency": 2899.998}, "gpu": {"count": 2, "capacity": 163118.0,
            "details": [{"name": "NVIDIA H100 80GB HBM3", "capacity": 81559.0, "utilization": 0.0},
                        {"name": "NVIDIA H100 80GB HBM3", "capacity": 81559.0}],
            "graphics_speed": 345, "memory_speed": 2619},
            "hard_disk": {"total": 1000, "free": 600, "used": 400, "write_speed": 1234.5, "read_speed": 4321.5},
            "ram": {}, "has_docker": true, "extra": [1, 2]}"#;
        let s = Specs::from_json(python).unwrap();
        assert_eq!(s.cpu, CpuSpecs { count: 8, frequency: 2899.998 });
        assert_eq!(s.gpu.capacity, 163118);
        assert_eq!(s.gpu.details[1], GpuDetail { name: "NVIDIA H100 80GB HBM3".into(), capacity: 81559 });
        assert_eq!(s.gpu.graphics_speed, Some(345));
        assert_eq!(s.hard_disk.write_speed, 1234.5);
        assert_eq!(s.ram, RamSpecs::default());
        assert!(s.has_docker && !s.simulated);

        // Older miners: no has_docker, null and wrong-typed sections, string numbers.
        let s =
            Specs::from_json(r#"{"cpu": null, "gpu": "oops", "hard_disk": {"free": "123"}, "ram": {"available": -5}}"#)
                .unwrap();
        assert_eq!(s.cpu, CpuSpecs::default());
        assert_eq!(s.gpu, GpuSpecs::default());
        assert_eq!(s.hard_disk.free, 123);
        assert_eq!(s.ram.available, 0);
        assert!(!s.has_docker);
        assert!(Specs::from_json("{}").unwrap().is_empty());
        assert!(Specs::from_json("[]").is_err());
    }

    #[test]
    fn simulated_gpu_syntax() {
        let g: SimulatedGpu = "NVIDIA H100 80GB HBM3:81559:1".parse().unwrap();
        assert_eq!(g, SimulatedGpu { name: "NVIDIA H100 80GB HBM3".into(), memory_mib: 81559, count: 1 });
        assert_eq!(g.to_string(), "NVIDIA H100 80GB HBM3:81559:1");
        let g: SimulatedGpu = "NVIDIA GeForce RTX 4090:24564".parse().unwrap();
        assert_eq!((g.memory_mib, g.count), (24564, 1));
        let g: SimulatedGpu = "Odd:Name:1024:8".parse().unwrap();
        assert_eq!((g.name.as_str(), g.memory_mib, g.count), ("Odd:Name", 1024, 8));
        assert_eq!(g.to_string().parse::<SimulatedGpu>().unwrap(), g);

        for (input, reason) in [
            ("H100", "missing the memory size"),
            ("H100:80GB", "whole number of MiB"),
            (":81559", "name is empty"),
            ("H100:0", "more than 0 MiB"),
            ("H100:81559:0", "at least 1"),
            ("H100:81559:65", "at most 64"),
            ("H100:81559:99999999999", "too large"),
            ("", "missing the memory size"),
        ] {
            let err = input.parse::<SimulatedGpu>().unwrap_err();
            assert!(err.reason.contains(reason), "{input}: {err}");
            assert!(err.to_string().contains("NAME:MEMORY_MIB[:COUNT]"));
        }
    }

    #[tokio::test]
    async fn detect_with_simulated_gpus_and_a_missing_nvidia_smi() {
        let opts = DetectOptions {
            simulate_gpu: Some("NVIDIA H100 80GB HBM3:81559:8".parse().unwrap()),
            nvidia_smi: PathBuf::from("/nonexistent/nvidia-smi"),
            docker_socket: PathBuf::from("/nonexistent.sock"),
            ..DetectOptions::default()
        };
        let s = detect(&opts).await;
        assert!(s.simulated);
        assert_eq!((s.gpu.count, s.gpu.capacity), (8, 8 * 81559));
        assert!(s.cpu.count >= 1 && s.ram.total > 0 && s.hard_disk.total > 0);
        assert!(!s.has_docker);

        let s = detect(&DetectOptions { simulate_gpu: None, ..opts }).await;
        assert!(!s.simulated);
        assert_eq!(
            s.gpu,
            GpuSpecs { count: 0, capacity: 0, details: vec![], graphics_speed: None, memory_speed: None }
        );
    }
}
