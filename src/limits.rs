//! Limits: what a manifest can limit ([`LimitKind`]), the values a plan carries
//! ([`Limits`]), how each was enforced ([`Enforcement`]), and the limits that are not
//! cgroups — rlimits (checked in the parent, applied in `pre_exec`), GPU selection for
//! `CUDA_VISIBLE_DEVICES`, and machine capacity checks.

use std::path::Path;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use serde::{Deserialize, Serialize};

/// Every limit, by its name in manifests (`launch.limits.NAME`) and results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    Memory,
    Cpus,
    Gpus,
    Pids,
    OpenFiles,
    CpuTime,
    FileSize,
    Core,
    AddressSpace,
    /// The launch stage's timeout (not under `limits:`, but recorded with them).
    Timeout,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Memory => "memory",
            LimitKind::Cpus => "cpus",
            LimitKind::Gpus => "gpus",
            LimitKind::Pids => "pids",
            LimitKind::OpenFiles => "open_files",
            LimitKind::CpuTime => "cpu_time",
            LimitKind::FileSize => "file_size",
            LimitKind::Core => "core",
            LimitKind::AddressSpace => "address_space",
            LimitKind::Timeout => "timeout",
        }
    }

    /// The rlimit enforcing this limit, if it is one.
    fn rlimit(self) -> Option<Resource> {
        match self {
            LimitKind::OpenFiles => Some(Resource::RLIMIT_NOFILE),
            LimitKind::CpuTime => Some(Resource::RLIMIT_CPU),
            LimitKind::FileSize => Some(Resource::RLIMIT_FSIZE),
            LimitKind::Core => Some(Resource::RLIMIT_CORE),
            LimitKind::AddressSpace => Some(Resource::RLIMIT_AS),
            _ => None,
        }
    }

    /// The rlimits, in a fixed order.
    pub const RLIMITS: [LimitKind; 5] = [
        LimitKind::OpenFiles,
        LimitKind::CpuTime,
        LimitKind::FileSize,
        LimitKind::Core,
        LimitKind::AddressSpace,
    ];

    /// The limits a cgroup enforces.
    pub const CGROUP: [LimitKind; 3] = [LimitKind::Memory, LimitKind::Cpus, LimitKind::Pids];
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a limit was enforced, in the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Enforcement {
    #[serde(rename = "cgroup-v2")]
    CgroupV2,
    #[serde(rename = "cgroup-v1")]
    CgroupV1,
    #[serde(rename = "rlimit")]
    Rlimit,
    #[serde(rename = "env")]
    Env,
    /// The runner itself, for timeouts.
    #[serde(rename = "supervisor")]
    Supervisor,
    /// The engine that ran the step (a container's or a cluster job's limit), as it
    /// reported in `$RUNNER_ENGINE_OUTCOME`.
    #[serde(rename = "engine")]
    Engine,
    /// The engine only schedules it (places the step where it fits): nothing holds the
    /// step to it once it runs (Ray's memory).
    #[serde(rename = "scheduler")]
    Scheduler,
    /// Asked for but not enforced (`--best-effort-limits`).
    #[serde(rename = "none")]
    None,
}

/// A plan's limits in plain units. `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_space_bytes: Option<u64>,
}

impl Limits {
    /// The value of one limit as the result records it: bytes for memory and sizes,
    /// cores for cpus, seconds for cpu time, a count otherwise.
    pub fn value(&self, kind: LimitKind) -> Option<serde_json::Value> {
        use serde_json::json;
        match kind {
            LimitKind::Memory => self.memory_bytes.map(|v| json!(v)),
            LimitKind::Cpus => self.cpus.map(|v| json!(v)),
            LimitKind::Gpus => self.gpus.map(|v| json!(v)),
            LimitKind::Pids => self.pids.map(|v| json!(v)),
            LimitKind::Timeout => None,
            rlimit => self.rlimit(rlimit).map(|v| json!(v)),
        }
    }

    /// The value of an rlimit kind, in the unit `setrlimit` takes.
    pub fn rlimit(&self, kind: LimitKind) -> Option<u64> {
        match kind {
            LimitKind::OpenFiles => self.open_files,
            LimitKind::CpuTime => self.cpu_time_secs,
            LimitKind::FileSize => self.file_size_bytes,
            LimitKind::Core => self.core_bytes,
            LimitKind::AddressSpace => self.address_space_bytes,
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error(
        "rlimit `{limit}` of {value} exceeds the hard limit {hard}, which cannot be raised without CAP_SYS_RESOURCE"
    )]
    AboveHard {
        limit: LimitKind,
        value: u64,
        hard: u64,
    },
    #[error("failed to read rlimit `{limit}`")]
    Get {
        limit: LimitKind,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("{requested} GPU{} requested but {detected} detected", if *.requested == 1 { "" } else { "s" })]
    NotEnoughGpus { requested: u32, detected: usize },
    #[error("memory limit of {} exceeds the machine's {} of RAM", crate::units::exact_bytes(*.requested), crate::units::Bytes(*.total))]
    MemoryAboveTotal { requested: u64, total: u64 },
    #[error("cpus limit of {} exceeds the machine's {cores} logical cores", crate::units::Cores(*.requested))]
    CpusAboveCores { requested: f64, cores: usize },
    #[error("cpus limit of {} is below the {MIN_CPUS} of a core a cgroup can enforce", crate::units::Cores(*.requested))]
    CpusBelowLeast { requested: f64 },
    #[error("memory limit of {} is below one page ({}), the least a cgroup can enforce", crate::units::exact_bytes(*.requested), crate::units::exact_bytes(*.page))]
    MemoryBelowPage { requested: u64, page: u64 },
    #[error(
        "pids limit of {requested} exceeds the {PIDS_MOST} processes a kernel can have at once (a cgroup refuses more)"
    )]
    PidsAboveMost { requested: u64 },
}

/// The most processes and threads a Linux kernel can have (`PID_MAX_LIMIT` on 64-bit
/// kernels), so the highest `pids.max` a cgroup takes.
pub const PIDS_MOST: u64 = 1 << 22;

/// The size of a memory page: the unit in which the kernel counts a cgroup's memory.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// A memory limit as a cgroup holds it: the kernel counts memory in whole pages and
/// rounds a limit down to them (`--memory 100MB` is held as 99,999,744 bytes with
/// 4 KiB pages), so that is the limit the step gets and the result lists.
pub fn whole_pages(bytes: u64) -> u64 {
    bytes - bytes % page_size()
}

/// The least share of a core a cgroup enforces: a quota of 1 ms (the kernel's least)
/// in a period of 1 s (its most).
pub const MIN_CPUS: f64 = 0.001;

/// Per-process resource limits for a step; each set value becomes soft = hard.
/// A fixed array, so applying them in `pre_exec` allocates nothing.
#[derive(Default, Clone, Debug)]
pub struct Rlimits([Option<u64>; 5]);

impl Rlimits {
    fn slot(kind: LimitKind) -> usize {
        LimitKind::RLIMITS
            .iter()
            .position(|k| *k == kind)
            .expect("an rlimit kind")
    }

    pub fn set(&mut self, kind: LimitKind, value: u64) {
        self.0[Self::slot(kind)] = Some(value);
    }

    pub fn get(&self, kind: LimitKind) -> Option<u64> {
        self.0[Self::slot(kind)]
    }

    /// Set limits with their kind and resource: no allocation (usable in `pre_exec`).
    fn entries(&self) -> impl Iterator<Item = (LimitKind, Resource, u64)> + '_ {
        LimitKind::RLIMITS
            .iter()
            .zip(self.0.iter())
            .filter_map(|(k, v)| Some((*k, k.rlimit()?, (*v)?)))
    }

    /// In the parent, before fork: a value above the current hard limit would fail in
    /// the child (root here lacks CAP_SYS_RESOURCE), so refuse it with a clear message.
    pub fn check(&self) -> Result<(), LimitError> {
        for (limit, resource, value) in self.entries() {
            let (_soft, hard) =
                getrlimit(resource).map_err(|source| LimitError::Get { limit, source })?;
            if hard != libc::RLIM_INFINITY && value > hard {
                return Err(LimitError::AboveHard { limit, value, hard });
            }
        }
        Ok(())
    }

    /// Async-signal-safe, for `pre_exec`: `setrlimit(soft = hard = value)` for each set limit.
    pub fn apply_in_child(&self) -> Result<(), nix::errno::Errno> {
        for (_, resource, v) in self.entries() {
            setrlimit(resource, v, v)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpu {
    pub index: u32,
    pub name: String,
}

const NVIDIA_PROC: &str = "/proc/driver/nvidia/gpus";

/// Detect NVIDIA GPUs: `RUNNER_GPU_INFO` (a file in `nvidia-smi -L` format) when set,
/// else the driver's `/proc` files, else `nvidia-smi -L`. Sorted by index.
pub fn detect_gpus() -> Vec<Gpu> {
    let info = std::env::var_os("RUNNER_GPU_INFO");
    detect_gpus_from(info.as_deref().map(Path::new), Path::new(NVIDIA_PROC))
}

fn detect_gpus_from(info_file: Option<&Path>, proc_dir: &Path) -> Vec<Gpu> {
    let mut gpus = if let Some(file) = info_file {
        std::fs::read_to_string(file)
            .map(|t| parse_nvidia_smi_l(&t))
            .unwrap_or_default()
    } else {
        let from_proc = gpus_from_proc(proc_dir);
        if from_proc.is_empty() {
            std::process::Command::new("nvidia-smi")
                .arg("-L")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| parse_nvidia_smi_l(&String::from_utf8_lossy(&o.stdout)))
                .unwrap_or_default()
        } else {
            from_proc
        }
    };
    gpus.sort_by_key(|g| g.index);
    gpus
}

/// `<dir>/*/information` files: `Model:` and `Device Minor:` lines.
fn gpus_from_proc(dir: &Path) -> Vec<Gpu> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("information")).ok())
        .filter_map(|text| parse_proc_information(&text))
        .collect()
}

fn parse_proc_information(text: &str) -> Option<Gpu> {
    let field = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
    };
    Some(Gpu {
        index: field("Device Minor")?.parse().ok()?,
        name: field("Model")?,
    })
}

/// `GPU 0: Tesla T4 (UUID: GPU-…)` lines; other lines (MIG devices, blanks) are skipped.
pub fn parse_nvidia_smi_l(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("GPU ")?;
            let (index, name) = rest.split_once(':')?;
            let name = name.trim();
            let name = name.rfind(" (UUID:").map_or(name, |i| &name[..i]);
            Some(Gpu {
                index: index.trim().parse().ok()?,
                name: name.trim().to_owned(),
            })
        })
        .collect()
}

/// The first `n` detected GPUs as a `CUDA_VISIBLE_DEVICES` value, e.g. `"0,1"`.
pub fn select_gpus(n: u32, detected: &[Gpu]) -> Result<String, LimitError> {
    if n as usize > detected.len() {
        return Err(LimitError::NotEnoughGpus {
            requested: n,
            detected: detected.len(),
        });
    }
    Ok(detected[..n as usize]
        .iter()
        .map(|g| g.index.to_string())
        .collect::<Vec<_>>()
        .join(","))
}

/// Refuse limits the machine cannot satisfy, before anything runs: memory above total
/// RAM or below a page, cpus above cores or below the least share, pids above what a
/// kernel can have.
pub fn check_capacity(limits: &Limits) -> Result<(), LimitError> {
    // Two system calls (sysinfo(2), sysconf): a system-information library read
    // /proc/stat and more here, for two numbers.
    if let Some(requested) = limits.pids
        && requested > PIDS_MOST
    {
        return Err(LimitError::PidsAboveMost { requested });
    }
    if let Some(requested) = limits.memory_bytes {
        let page = page_size();
        if requested < page {
            return Err(LimitError::MemoryBelowPage { requested, page });
        }
        let total = nix::sys::sysinfo::sysinfo().map_or(0, |si| si.ram_total());
        if total > 0 && requested > total {
            return Err(LimitError::MemoryAboveTotal { requested, total });
        }
    }
    if let Some(requested) = limits.cpus {
        if requested < MIN_CPUS {
            return Err(LimitError::CpusBelowLeast { requested });
        }
        // SAFETY: sysconf has no preconditions.
        let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(0) as usize;
        if cores > 0 && requested > cores as f64 {
            return Err(LimitError::CpusAboveCores { requested, cores });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
