//! Reading GPUs from `nvidia-smi --query-gpu … --format=csv`, the one interface every NVIDIA
//! driver ships, so the miner can report the GPUs it really has.
//!
//! The parser is a pure function over nvidia-smi's text and is tested on real outputs
//! (`tests/fixtures/nvidia-smi/`). It accepts output with or without the header line, with or
//! without units (`81559 MiB` or `81559`), treats `[N/A]`, `N/A`, `[Not Supported]` and other
//! bracketed placeholders as unknown, and tolerates commas inside GPU names (nvidia-smi does not
//! quote fields: extra fields on a row are given back to the name column). Lines that do not have
//! as many fields as columns (error messages such as "No devices were found") are skipped.
//!
//! Running the binary lives here too: blocking, with a timeout, so that a wedged driver (nvidia-smi
//! can hang for minutes when a GPU falls off the bus) cannot stall the miner.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The fields the miner asks nvidia-smi for, in order.
pub const GPU_QUERY: [&str; 4] = ["name", "memory.total", "clocks.max.graphics", "clocks.max.memory"];

/// One GPU as nvidia-smi describes it. Fields nvidia-smi reports as unknown are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NvidiaGpu {
    pub name: String,
    /// `memory.total`, MiB.
    pub memory_mib: Option<u64>,
    /// `clocks.max.graphics`, MHz.
    pub max_graphics_mhz: Option<u64>,
    /// `clocks.max.memory`, MHz.
    pub max_memory_mhz: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Column {
    Name,
    MemoryTotal,
    MaxGraphics,
    MaxMemory,
    Other,
}

fn column(query_name: &str) -> Column {
    // A header cell is the canonical field name plus an optional " [unit]".
    let name = query_name.split(" [").next().unwrap_or(query_name).trim().to_ascii_lowercase();
    match name.as_str() {
        "name" | "gpu_name" => Column::Name,
        "memory.total" => Column::MemoryTotal,
        "clocks.max.graphics" | "clocks.max.gr" => Column::MaxGraphics,
        "clocks.max.memory" | "clocks.max.mem" => Column::MaxMemory,
        _ => Column::Other,
    }
}

/// Whether a line is a `--format=csv` header such as `name, memory.total [MiB]`: every cell is a
/// lower-case field identifier (with an optional `[unit]`) and at least one has a letter.
fn is_header(line: &str) -> bool {
    let mut has_letter = false;
    for cell in line.split(',') {
        let ident = cell.split(" [").next().unwrap_or(cell).trim();
        if ident.is_empty()
            || !ident.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
        {
            return false;
        }
        has_letter |= ident.bytes().any(|b| b.is_ascii_lowercase());
    }
    has_letter
}

/// A numeric cell: `81559`, `81559 MiB`, `1980 MHz`, `7979.0`; `None` for `[N/A]`, `N/A`,
/// `[Not Supported]`, `[Unknown Error]` and anything else that is not a non-negative number.
pub fn parse_quantity(cell: &str) -> Option<u64> {
    let token = cell.split_whitespace().next()?;
    if let Ok(n) = token.parse::<u64>() {
        return Some(n);
    }
    match token.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 && x < u64::MAX as f64 => Some(x.round() as u64),
        _ => None,
    }
}

/// Parses nvidia-smi CSV output. `columns` names the queried fields in order (the `--query-gpu`
/// list); a header line, when present, takes precedence. Unknown columns are ignored.
pub fn parse_nvidia_smi_csv(text: &str, columns: &[&str]) -> Vec<NvidiaGpu> {
    let mut cols: Vec<Column> = columns.iter().map(|c| column(c)).collect();
    let mut gpus = Vec::new();
    let mut first = true;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if std::mem::take(&mut first) && is_header(line) {
            cols = line.split(',').map(column).collect();
            continue;
        }
        if let Some(gpu) = parse_row(line, &cols) {
            gpus.push(gpu);
        }
    }
    gpus
}

fn parse_row(line: &str, cols: &[Column]) -> Option<NvidiaGpu> {
    let mut cells: Vec<&str> = line.split(',').collect();
    if cells.len() < cols.len() || cols.is_empty() {
        return None;
    }
    // Unquoted commas can only come from the free-text name: fold the extra cells back into it.
    let mut name_override = None;
    let extra = cells.len() - cols.len();
    if extra > 0 {
        let i = cols.iter().position(|c| *c == Column::Name)?;
        name_override = Some(cells[i..=i + extra].join(","));
        cells.drain(i + 1..=i + extra);
    }
    let mut gpu = NvidiaGpu::default();
    for (col, cell) in cols.iter().zip(&cells) {
        match col {
            Column::Name => gpu.name = name_override.take().as_deref().unwrap_or(cell).trim().to_owned(),
            Column::MemoryTotal => gpu.memory_mib = parse_quantity(cell),
            Column::MaxGraphics => gpu.max_graphics_mhz = parse_quantity(cell),
            Column::MaxMemory => gpu.max_memory_mhz = parse_quantity(cell),
            Column::Other => {}
        }
    }
    Some(gpu)
}

/// What running nvidia-smi gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvidiaSmi {
    /// It ran and listed these GPUs (possibly none).
    Gpus(Vec<NvidiaGpu>),
    /// The binary is not installed (or not on `PATH`): a machine without NVIDIA GPUs.
    NotInstalled,
    /// The binary exists but failed, timed out or could not be started; the reason.
    Failed(String),
}

/// Runs `nvidia-smi --query-gpu=<GPU_QUERY> --format=csv,noheader,nounits`, killing it after
/// `timeout`. Blocking: call it from a blocking context.
pub fn query(nvidia_smi: &Path, timeout: Duration) -> NvidiaSmi {
    let query = format!("--query-gpu={}", GPU_QUERY.join(","));
    match run_with_timeout(nvidia_smi, &[&query, "--format=csv,noheader,nounits"], timeout) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NvidiaSmi::NotInstalled,
        Err(e) => NvidiaSmi::Failed(format!("could not run {}: {e}", nvidia_smi.display())),
        Ok(Run::TimedOut) => NvidiaSmi::Failed(format!("{} did not answer within {timeout:?}", nvidia_smi.display())),
        Ok(Run::Exited { success: true, stdout, .. }) => NvidiaSmi::Gpus(parse_nvidia_smi_csv(&stdout, &GPU_QUERY)),
        Ok(Run::Exited { success: false, code, stdout, stderr }) => {
            let said = first_line(&stderr).or_else(|| first_line(&stdout)).unwrap_or("no output");
            let code = code.map_or_else(|| "a signal".to_owned(), |c| format!("status {c}"));
            NvidiaSmi::Failed(format!("{} exited with {code}: {said}", nvidia_smi.display()))
        }
    }
}

fn first_line(s: &str) -> Option<&str> {
    s.lines().map(str::trim).find(|l| !l.is_empty())
}

enum Run {
    Exited { success: bool, code: Option<i32>, stdout: String, stderr: String },
    TimedOut,
}

/// Runs a program with no stdin, capturing its output, and kills it once `timeout` has passed.
fn run_with_timeout(program: &Path, args: &[&str], timeout: Duration) -> std::io::Result<Run> {
    let mut child =
        Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                // Output is capped: nvidia-smi's answer for a full 8-GPU node is well under 1 KiB.
                let _ = p.by_ref().take(1 << 20).read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(match status {
        Some(s) => Run::Exited { success: s.success(), code: s.code(), stdout, stderr },
        None => Run::TimedOut,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    pub(crate) fn fixture(name: &str) -> String {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/nvidia-smi").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn gpu(name: &str, mem: Option<u64>, gr: Option<u64>, mm: Option<u64>) -> NvidiaGpu {
        NvidiaGpu { name: name.into(), memory_mib: mem, max_graphics_mhz: gr, max_memory_mhz: mm }
    }

    #[test]
    fn real_quadro_output_with_units_and_extra_columns() {
        let text = fixture("quadro-rtx-6000.name-memory-driver-devid.noheader.csv");
        let gpus = parse_nvidia_smi_csv(&text, &["name", "memory.total", "driver_version", "pci.device_id"]);
        assert_eq!(gpus, vec![gpu("Quadro RTX 6000", Some(24576), None, None); 2]);
    }

    #[test]
    fn real_h100_nvl_output_without_memory_column() {
        let text = fixture("h100-nvl.name-devid.noheader.csv");
        let gpus = parse_nvidia_smi_csv(&text, &["name", "pci.device_id"]);
        assert_eq!(gpus, vec![gpu("NVIDIA H100 NVL", None, None, None)]);
    }

    #[test]
    fn real_19_field_output_with_name_in_the_middle_and_na_values() {
        let text = fixture("rtx-2080.19-fields.noheader-nounits.csv");
        let columns = "power.limit,power.min_limit,power.max_limit,memory.total,vbios_version,driver_version,name,\
                       gpu_uuid,power.draw,temperature.gpu,temperature.memory,clocks.current.graphics,clocks.sm,\
                       clocks.mem,utilization.gpu,utilization.memory,fan.speed,pcie.link.width.current,pstate";
        let columns: Vec<&str> = columns.split(',').collect();
        assert_eq!(columns.len(), 19);
        let gpus = parse_nvidia_smi_csv(&text, &columns);
        assert_eq!(gpus, vec![gpu("GeForce RTX 2080", Some(7979), None, None)]);
    }

    #[test]
    fn real_na_and_not_supported_placeholders() {
        let columns = [
            "memory.total",
            "memory.free",
            "memory.used",
            "temperature.gpu",
            "fan.speed",
            "utilization.gpu",
            "utilization.memory",
        ];
        for name in
            ["na-value.memory-fields.noheader-nounits.csv", "not-supported-value.memory-fields.noheader-nounits.csv"]
        {
            let gpus = parse_nvidia_smi_csv(&fixture(name), &columns);
            assert_eq!(gpus, vec![gpu("", Some(2004), None, None)], "{name}");
        }
        // The placeholders themselves, as the clock columns of our query would show them.
        let gpus = parse_nvidia_smi_csv("NVIDIA H100 80GB HBM3, 81559, [N/A], [Not Supported]\n", &GPU_QUERY);
        assert_eq!(gpus, vec![gpu("NVIDIA H100 80GB HBM3", Some(81559), None, None)]);
    }

    #[test]
    fn our_query_shape_with_and_without_header() {
        let gpus = parse_nvidia_smi_csv(&fixture("synthetic.h100x2.4-field.noheader-nounits.csv"), &GPU_QUERY);
        assert_eq!(gpus, vec![gpu("NVIDIA H100 80GB HBM3", Some(81559), Some(1980), Some(2619)); 2]);

        // A header wins over the columns passed in (here deliberately wrong).
        let gpus = parse_nvidia_smi_csv(&fixture("synthetic.mixed.4-field.header-units.csv"), &["x", "y", "z", "w"]);
        assert_eq!(
            gpus,
            vec![
                gpu("NVIDIA GeForce RTX 4090", Some(24564), None, None),
                gpu("NVIDIA A100-SXM4-40GB", Some(40960), Some(1410), Some(1215)),
            ]
        );
    }

    #[test]
    fn commas_in_names_whitespace_and_junk_lines() {
        let text = "\r\n  Weird, Inc. GPU, 1024 ,  100 MHz, 200\r\nNo devices were found\n\n";
        let gpus = parse_nvidia_smi_csv(text, &GPU_QUERY);
        assert_eq!(gpus, vec![gpu("Weird, Inc. GPU", Some(1024), Some(100), Some(200))]);
        assert_eq!(parse_nvidia_smi_csv("", &GPU_QUERY), vec![]);
        assert_eq!(parse_nvidia_smi_csv("No devices were found\n", &GPU_QUERY), vec![]);
        // More cells than columns and no name column: not ours to guess.
        assert_eq!(parse_nvidia_smi_csv("1, 2, 3\n", &["memory.total", "memory.used"]), vec![]);
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity(" 81559 MiB"), Some(81559));
        assert_eq!(parse_quantity("81559"), Some(81559));
        assert_eq!(parse_quantity("7979.6"), Some(7980));
        for na in ["[N/A]", "N/A", "[Not Supported]", "[Unknown Error]", "", "-1", "nan", "inf"] {
            assert_eq!(parse_quantity(na), None, "{na}");
        }
    }

    #[test]
    fn header_detection() {
        assert!(is_header("name, memory.total [MiB], clocks.max.graphics [MHz], clocks.max.memory [MHz]"));
        assert!(is_header("index, name, memory.total [MiB]"));
        assert!(!is_header("NVIDIA H100 80GB HBM3, 81559, 1980, 2619"));
        assert!(!is_header("2004, 2004, 0, 44, [N/A], 0, 0"));
        assert!(!is_header("200.00, 105.00"));
    }

    #[test]
    fn running_a_missing_or_failing_binary() {
        let missing = query(Path::new("/nonexistent/nvidia-smi"), Duration::from_secs(5));
        assert_eq!(missing, NvidiaSmi::NotInstalled);
        // `false` exists everywhere and fails without output.
        let failed = query(Path::new("false"), Duration::from_secs(5));
        assert!(matches!(&failed, NvidiaSmi::Failed(m) if m.contains("exited with status 1")), "{failed:?}");
    }

    #[test]
    fn running_a_fake_nvidia_smi_and_timing_out() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("nvidia-smi");
        std::fs::write(
            &ok,
            "#!/bin/sh\n[ \"$1\" = --query-gpu=name,memory.total,clocks.max.graphics,clocks.max.memory ] || exit 9\n\
             echo 'NVIDIA H100 80GB HBM3, 81559, 1980, 2619'\n",
        )
        .unwrap();
        let slow = dir.path().join("slow-smi");
        std::fs::write(&slow, "#!/bin/sh\nexec sleep 30\n").unwrap();
        for p in [&ok, &slow] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        assert_eq!(
            query(&ok, Duration::from_secs(10)),
            NvidiaSmi::Gpus(vec![gpu("NVIDIA H100 80GB HBM3", Some(81559), Some(1980), Some(2619))])
        );
        let started = Instant::now();
        let timed_out = query(&slow, Duration::from_millis(200));
        assert!(matches!(&timed_out, NvidiaSmi::Failed(m) if m.contains("did not answer")), "{timed_out:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
