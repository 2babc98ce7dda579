//! The network's resources as a renter sees them (`list_r`, `GET /v1/resources`, SN27's
//! `/list/resources_sql`): every miner with specs in the database, in GB, with whether it is
//! allocated, how old its specs are and whether its last sync went unanswered; the filters and
//! sort orders the front ends offer; and the GPU totals of SN27's summaries.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::db::{ComputeDb, DbError};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// One miner's resources.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resource {
    pub hotkey: String,
    /// The first GPU's name as the miner reported it, or `No GPU`.
    pub gpu_name: String,
    /// Memory per GPU, GB (MiB / 1024).
    pub gpu_size_gb: f64,
    pub gpu_count: u64,
    pub vcpus: u64,
    /// Available RAM, GB.
    pub ram_gb: f64,
    /// Free disk, GB.
    pub disk_gb: f64,
    /// Allocated (by this database, or in the extra set the caller gave, e.g. wandb's).
    pub allocated: bool,
    /// The miner advertises simulated GPUs (devnets and tests).
    pub simulated: bool,
    /// When its specs were stored, else when it last answered (Unix ms).
    pub specs_updated_ms: Option<u64>,
    /// The last `sync` got no answer from it: these specs are old and it may be offline.
    pub stale: bool,
    pub last_error: Option<String>,
}

impl Resource {
    /// SN27's `Res.`/`Avail.`.
    pub fn status(&self) -> &'static str {
        if self.allocated {
            "Res."
        } else {
            "Avail."
        }
    }
}

/// Every miner of the database with readable specs, in database order. `extra_allocated`
/// are more hotkeys to show as allocated (the validators' union on wandb).
pub fn resources(db: &ComputeDb, extra_allocated: &HashSet<String>) -> Result<Vec<Resource>, DbError> {
    let allocated: HashSet<String> = db.allocated_hotkeys()?.into_iter().collect();
    Ok(db
        .miner_specs()?
        .into_iter()
        .filter_map(|m| {
            let specs = m.specs?;
            let first = specs.gpu.details.first();
            Some(Resource {
                gpu_name: first.map(|d| d.name.clone()).unwrap_or_else(|| "No GPU".into()),
                gpu_size_gb: first.map_or(0.0, |d| d.capacity as f64 / 1024.0),
                gpu_count: specs.gpu.count,
                vcpus: specs.cpu.count,
                ram_gb: specs.ram.available as f64 / GIB,
                disk_gb: specs.hard_disk.free as f64 / GIB,
                allocated: allocated.contains(&m.hotkey) || extra_allocated.contains(&m.hotkey),
                simulated: specs.simulated,
                specs_updated_ms: m.specs_updated_ms.or(m.last_seen_ms),
                stale: m.failures > 0 || m.no_specs_count > 0,
                last_error: m.last_error.clone(),
                hotkey: m.hotkey,
            })
        })
        .collect())
}

/// Sort orders: by hotkey or GPU name ascending, by sizes and counts largest first, by specs age
/// newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    #[default]
    Hotkey,
    Gpu,
    GpuSize,
    GpuCount,
    Cpu,
    Ram,
    Disk,
    Age,
}

/// Filters over [`Resource`]s; every bound is inclusive, every field optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceQuery {
    /// The GPU name contains this (case-insensitive).
    pub gpu: Option<String>,
    pub gpu_size_min: Option<f64>,
    pub gpu_size_max: Option<f64>,
    pub cpu_min: Option<u64>,
    pub cpu_max: Option<u64>,
    pub ram_min: Option<f64>,
    pub ram_max: Option<f64>,
    pub disk_min: Option<f64>,
    pub disk_max: Option<f64>,
    /// `Some(true)`: only unallocated; `Some(false)`: only allocated.
    pub available: Option<bool>,
    pub sort: SortKey,
}

fn within<T: PartialOrd>(v: T, min: Option<T>, max: Option<T>) -> bool {
    min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m)
}

impl ResourceQuery {
    pub fn matches(&self, r: &Resource) -> bool {
        let gpu_ok = match &self.gpu {
            Some(g) => r.gpu_name.to_lowercase().contains(&g.to_lowercase()),
            None => true,
        };
        gpu_ok
            && within(r.gpu_size_gb, self.gpu_size_min, self.gpu_size_max)
            && within(r.vcpus, self.cpu_min, self.cpu_max)
            && within(r.ram_gb, self.ram_min, self.ram_max)
            && within(r.disk_gb, self.disk_min, self.disk_max)
            && self.available.is_none_or(|a| a != r.allocated)
    }

    /// The rows that match, sorted.
    pub fn apply<'a>(&self, rows: impl IntoIterator<Item = &'a Resource>) -> Vec<&'a Resource> {
        let mut out: Vec<&Resource> = rows.into_iter().filter(|r| self.matches(r)).collect();
        sort(&mut out, self.sort);
        out
    }
}

/// Sorts `rows` by `key` (stable: equal rows keep their order).
pub fn sort(rows: &mut [&Resource], key: SortKey) {
    match key {
        SortKey::Hotkey => rows.sort_by(|a, b| a.hotkey.cmp(&b.hotkey)),
        SortKey::Gpu => rows.sort_by(|a, b| a.gpu_name.cmp(&b.gpu_name)),
        SortKey::GpuSize => rows.sort_by(|a, b| b.gpu_size_gb.total_cmp(&a.gpu_size_gb)),
        SortKey::GpuCount => rows.sort_by_key(|r| std::cmp::Reverse(r.gpu_count)),
        SortKey::Cpu => rows.sort_by_key(|r| std::cmp::Reverse(r.vcpus)),
        SortKey::Ram => rows.sort_by(|a, b| b.ram_gb.total_cmp(&a.ram_gb)),
        SortKey::Disk => rows.sort_by(|a, b| b.disk_gb.total_cmp(&a.disk_gb)),
        SortKey::Age => rows.sort_by_key(|r| std::cmp::Reverse(r.specs_updated_ms.unwrap_or(0))),
    }
}

/// SN27's two summaries: machines per (GPU name, GPU count), and GPUs per GPU name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GpuSummary {
    /// (GPU name, GPUs per machine) → machines.
    pub instances: BTreeMap<(String, u64), u64>,
    /// GPU name → GPUs.
    pub gpus: BTreeMap<String, u64>,
}

/// The summaries over the machines with GPUs among `rows`.
pub fn gpu_summary<'a>(rows: impl IntoIterator<Item = &'a Resource>) -> GpuSummary {
    let mut s = GpuSummary::default();
    for r in rows.into_iter().filter(|r| r.gpu_count > 0) {
        *s.instances.entry((r.gpu_name.clone(), r.gpu_count)).or_default() += 1;
        *s.gpus.entry(r.gpu_name.clone()).or_default() += r.gpu_count;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hotkey: &str, gpu: &str, size: f64, count: u64, allocated: bool, age: Option<u64>) -> Resource {
        Resource {
            hotkey: hotkey.into(),
            gpu_name: gpu.into(),
            gpu_size_gb: size,
            gpu_count: count,
            vcpus: 8,
            ram_gb: 32.0,
            disk_gb: 100.0,
            allocated,
            simulated: false,
            specs_updated_ms: age,
            stale: false,
            last_error: None,
        }
    }

    #[test]
    fn filters_sorts_and_sums() {
        let rows = [
            row("c", "NVIDIA H100 80GB HBM3", 79.6, 1, false, Some(5)),
            row("a", "NVIDIA GeForce RTX 4090", 24.0, 2, true, Some(9)),
            row("b", "No GPU", 0.0, 0, false, None),
        ];
        let q = ResourceQuery { gpu: Some("h100".into()), ..ResourceQuery::default() };
        assert_eq!(q.apply(&rows).iter().map(|r| r.hotkey.as_str()).collect::<Vec<_>>(), ["c"]);
        let q = ResourceQuery { available: Some(true), sort: SortKey::Hotkey, ..ResourceQuery::default() };
        assert_eq!(q.apply(&rows).iter().map(|r| r.hotkey.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        let q = ResourceQuery { gpu_size_min: Some(20.0), gpu_size_max: Some(30.0), ..ResourceQuery::default() };
        assert_eq!(q.apply(&rows).len(), 1);
        let q = ResourceQuery { sort: SortKey::Age, ..ResourceQuery::default() };
        assert_eq!(q.apply(&rows).iter().map(|r| r.hotkey.as_str()).collect::<Vec<_>>(), ["a", "c", "b"]);
        let s = gpu_summary(&rows);
        assert_eq!(s.gpus.get("NVIDIA GeForce RTX 4090"), Some(&2));
        assert_eq!(s.instances.len(), 2, "the machine without GPUs is not counted");
    }
}
