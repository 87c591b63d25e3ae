//! cgroup v2 file formats: enabling controllers in `cgroup.subtree_control`, writing
//! `memory.max`/`cpu.max`/`pids.max`, and reading `memory.events`, `memory.peak`,
//! `cpu.stat`.

use std::path::Path;

use super::{CgroupError, Request, keyed, read_string, write_value};

/// The controllers a runner enables for its cgroups, where available: memory (also
/// for its counters), cpu and pids.
pub(super) const WANTED: [&str; 3] = ["memory", "cpu", "pids"];

/// A child of `parent` can enforce `req`: each controller it needs is enabled in
/// `parent`'s `cgroup.subtree_control`.
pub(super) fn check_controllers(parent: &Path, req: &Request) -> Result<(), CgroupError> {
    let enabled = read_string(&parent.join("cgroup.subtree_control"))?;
    for (ctrl, needed) in [
        ("memory", req.memory.is_some()),
        ("cpu", req.cpus.is_some()),
        ("pids", req.pids.is_some()),
    ] {
        if needed
            && !enabled
                .split_whitespace()
                .any(|c| c.trim_start_matches('+') == ctrl)
        {
            return Err(CgroupError::ControllerMissing {
                controller: ctrl,
                path: parent.to_owned(),
            });
        }
    }
    Ok(())
}

pub(super) fn write_limits(dir: &Path, req: &Request) -> Result<(), CgroupError> {
    if let Some(bytes) = req.memory {
        write_value(&dir.join("memory.max"), &bytes.to_string())?;
        // Absent when the kernel has no swap accounting; then there is nothing to cap.
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            write_value(&swap, "0")?;
        }
        write_value(&dir.join("memory.oom.group"), "1")?;
    }
    if let Some(cpus) = req.cpus {
        let (quota, period) = super::run::cpu_max(cpus);
        write_value(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
    }
    if let Some(n) = req.pids {
        write_value(&dir.join("pids.max"), &n.to_string())?;
    }
    Ok(())
}

/// `oom_kill` counter of `memory.events`.
pub(super) fn oom_kills(dir: &Path) -> Result<u64, CgroupError> {
    let path = dir.join("memory.events");
    let text = read_string(&path)?;
    keyed(&text, "oom_kill").ok_or_else(|| CgroupError::Parse {
        path,
        detail: "no `oom_kill` line".into(),
    })
}

pub(super) fn memory_current(dir: &Path) -> Option<u64> {
    read_string(&dir.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub(super) fn peak_memory(dir: &Path) -> Option<u64> {
    read_string(&dir.join("memory.peak"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `(user, system, total)` in ns from `cpu.stat` (microseconds there).
pub(super) fn cpu_ns(dir: &Path) -> (Option<u64>, Option<u64>, Option<u64>) {
    let Ok(text) = read_string(&dir.join("cpu.stat")) else {
        return (None, None, None);
    };
    let ns = |key| keyed(&text, key).map(|us| us.saturating_mul(1000));
    (ns("user_usec"), ns("system_usec"), ns("usage_usec"))
}
