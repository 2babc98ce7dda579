//! CPU, memory, disk and Docker facts of the host, read the way SN27's Python (psutil) reads
//! them, so the miner's specs mean the same numbers validators and requesters already know.
//!
//! The text parsers (`/proc/cpuinfo`, `/proc/meminfo`, cpufreq) are pure functions tested on sample
//! files; the readers around them never fail: an unreadable source gives zeros and a warning.

use std::path::Path;

use super::{CpuSpecs, DiskSpecs, RamSpecs};

/// What `/proc/cpuinfo` says: logical CPUs and the highest current clock among them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuInfo {
    /// Number of `processor` entries.
    pub logical: u64,
    /// Highest `cpu MHz` value, when the kernel reports one (not on every architecture).
    pub max_mhz: Option<f64>,
}

/// Parses `/proc/cpuinfo`.
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut logical = 0;
    let mut max_mhz: Option<f64> = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        match key.trim() {
            "processor" => logical += 1,
            "cpu MHz" => {
                if let Ok(mhz) = value.trim().parse::<f64>() {
                    if mhz.is_finite() && mhz > 0.0 {
                        max_mhz = Some(max_mhz.map_or(mhz, |m| m.max(mhz)));
                    }
                }
            }
            _ => {}
        }
    }
    CpuInfo { logical, max_mhz }
}

/// Parses a cpufreq `cpuinfo_max_freq` file (kHz) into MHz.
pub fn parse_cpufreq_khz(text: &str) -> Option<f64> {
    let khz: u64 = text.trim().parse().ok()?;
    (khz > 0).then(|| khz as f64 / 1000.0)
}

/// Parses `/proc/meminfo` into SN27's `ram` numbers (bytes), computed as psutil does on Linux:
/// `available` = MemAvailable, `free` = MemFree, `used` = total − free − buffers − cached (cached
/// including SReclaimable; falls back to total − free if that goes negative), swap used = total −
/// free. `None` when MemTotal is missing. Speeds are left at 0 (not measured).
pub fn parse_meminfo(text: &str) -> Option<RamSpecs> {
    let mut total = None;
    let (mut available, mut free, mut buffers, mut cached, mut reclaimable) = (None, 0, 0, 0, 0);
    let (mut swap_total, mut swap_free) = (0, 0);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let mut parts = value.split_whitespace();
        let Some(Ok(n)) = parts.next().map(str::parse::<u64>) else { continue };
        let bytes = match parts.next() {
            Some("kB") => n.saturating_mul(1024),
            _ => n,
        };
        match key.trim() {
            "MemTotal" => total = Some(bytes),
            "MemAvailable" => available = Some(bytes),
            "MemFree" => free = bytes,
            "Buffers" => buffers = bytes,
            "Cached" => cached = bytes,
            "SReclaimable" => reclaimable = bytes,
            "SwapTotal" => swap_total = bytes,
            "SwapFree" => swap_free = bytes,
            _ => {}
        }
    }
    let total = total?;
    let cached = cached.saturating_add(reclaimable);
    let used = match total.checked_sub(free.saturating_add(buffers).saturating_add(cached)) {
        Some(u) => u,
        None => total.saturating_sub(free),
    };
    Some(RamSpecs {
        total,
        // Kernels before 3.14 have no MemAvailable; psutil estimates it, we take free + cached.
        available: available.unwrap_or_else(|| free.saturating_add(cached).min(total)),
        used,
        free,
        swap_total,
        swap_used: swap_total.saturating_sub(swap_free),
        swap_free,
        read_speed: 0.0,
        write_speed: 0.0,
    })
}

/// Disk numbers from `statvfs` fields, as psutil's `disk_usage` computes them: total =
/// blocks × frsize, free = blocks available to unprivileged users × frsize, used = (blocks −
/// free blocks) × frsize.
pub fn disk_from_statvfs(blocks: u64, bfree: u64, bavail: u64, frsize: u64) -> DiskSpecs {
    DiskSpecs {
        total: blocks.saturating_mul(frsize),
        free: bavail.saturating_mul(frsize),
        used: blocks.saturating_sub(bfree).saturating_mul(frsize),
        write_speed: 0.0,
        read_speed: 0.0,
    }
}

/// The filesystem holding `path`.
pub fn disk(path: &Path) -> DiskSpecs {
    match rustix::fs::statvfs(path) {
        Ok(s) => disk_from_statvfs(s.f_blocks, s.f_bfree, s.f_bavail, s.f_frsize),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot stat the disk for specs; reporting 0 bytes");
            DiskSpecs::default()
        }
    }
}

/// Logical CPUs this process may use and the CPUs' maximum clock in MHz.
pub fn cpu() -> CpuSpecs {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").map(|t| parse_cpuinfo(&t)).ok();
    let count = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .ok()
        .or(cpuinfo.map(|c| c.logical).filter(|n| *n > 0))
        .unwrap_or_else(|| {
            tracing::warn!("cannot count the CPUs for specs; reporting 0");
            0
        });
    let frequency = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        .ok()
        .and_then(|t| parse_cpufreq_khz(&t))
        .or(cpuinfo.and_then(|c| c.max_mhz))
        .unwrap_or(0.0);
    CpuSpecs { count, frequency }
}

/// Memory and swap from `/proc/meminfo`.
pub fn ram() -> RamSpecs {
    match std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| parse_meminfo(&t)) {
        Some(r) => r,
        None => {
            tracing::warn!("cannot read /proc/meminfo for specs; reporting 0 bytes of RAM");
            RamSpecs::default()
        }
    }
}

/// Whether a Docker daemon socket exists at `socket`.
pub fn has_docker(socket: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(socket).map(|m| m.file_type().is_socket()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n\
cpu MHz\t\t: 2000.000\ncache size\t: 107520 KB\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\ncpu MHz\t\t: 3799.998\n\n\
processor\t: 2\ncpu MHz\t\t: 800.125\n\n";

    // Layout of a real aarch64 /proc/cpuinfo: no "cpu MHz" lines.
    const CPUINFO_ARM: &str =
        "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm\nCPU implementer\t: 0x41\n\n\
processor\t: 1\nBogoMIPS\t: 50.00\n\n";

    const MEMINFO: &str = "MemTotal:       16303428 kB\nMemFree:         1187440 kB\nMemAvailable:   10264652 kB\n\
Buffers:          525240 kB\nCached:          8394920 kB\nSwapCached:         1024 kB\nActive:          7356104 kB\n\
SReclaimable:     521620 kB\nSwapTotal:       2097148 kB\nSwapFree:        2096124 kB\nHugePages_Total:       0\n";

    #[test]
    fn cpuinfo_counts_processors_and_takes_the_highest_clock() {
        assert_eq!(parse_cpuinfo(CPUINFO), CpuInfo { logical: 3, max_mhz: Some(3799.998) });
        assert_eq!(parse_cpuinfo(CPUINFO_ARM), CpuInfo { logical: 2, max_mhz: None });
        assert_eq!(parse_cpuinfo(""), CpuInfo { logical: 0, max_mhz: None });
    }

    #[test]
    fn cpufreq_is_khz() {
        assert_eq!(parse_cpufreq_khz("3800000\n"), Some(3800.0));
        assert_eq!(parse_cpufreq_khz("0\n"), None);
        assert_eq!(parse_cpufreq_khz("garbage"), None);
    }

    #[test]
    fn meminfo_in_bytes_like_psutil() {
        let r = parse_meminfo(MEMINFO).unwrap();
        let k = 1024u64;
        assert_eq!(r.total, 16303428 * k);
        assert_eq!(r.available, 10264652 * k);
        assert_eq!(r.free, 1187440 * k);
        assert_eq!(r.used, (16303428 - 1187440 - 525240 - 8394920 - 521620) * k);
        assert_eq!(r.swap_total, 2097148 * k);
        assert_eq!(r.swap_free, 2096124 * k);
        assert_eq!(r.swap_used, 1024 * k);
        assert_eq!((r.read_speed, r.write_speed), (0.0, 0.0));
    }

    #[test]
    fn meminfo_edge_cases() {
        assert_eq!(parse_meminfo("MemFree: 10 kB\n"), None);
        // No MemAvailable (old kernels), and caches larger than total - free.
        let r = parse_meminfo("MemTotal: 100 kB\nMemFree: 40 kB\nCached: 90 kB\n").unwrap();
        assert_eq!(r.available, 100 * 1024);
        assert_eq!(r.used, 60 * 1024);
    }

    #[test]
    fn statvfs_arithmetic_matches_psutil() {
        let d = disk_from_statvfs(1000, 300, 250, 4096);
        assert_eq!((d.total, d.free, d.used), (4_096_000, 1_024_000, 2_867_200));
    }

    #[test]
    fn live_readers_return_something_sane_here() {
        let d = disk(Path::new("/"));
        assert!(d.total > 0 && d.free <= d.total, "{d:?}");
        assert_eq!(disk(Path::new("/nonexistent/dir")), DiskSpecs::default());
        let c = cpu();
        assert!(c.count >= 1, "{c:?}");
        let r = ram();
        assert!(r.total > 0 && r.available <= r.total, "{r:?}");
        assert!(!has_docker(Path::new("/nonexistent.sock")));
        // A regular file is not a daemon socket.
        assert!(!has_docker(Path::new("/proc/meminfo")));
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(has_docker(&sock));
    }
}
