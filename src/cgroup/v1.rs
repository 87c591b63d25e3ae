//! cgroup v1 file formats: `memory.limit_in_bytes` (+ `memsw`), CFS quota, `pids.max`,
//! the freezer, and counters from `memory.oom_control`, `memory.max_usage_in_bytes`,
//! `cpuacct.usage` and `cpuacct.stat`.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{CgroupError, keyed, read_string, write_value};

pub(super) fn write_memory(dir: &Path, bytes: u64) -> Result<(), CgroupError> {
    let value = bytes.to_string();
    // memsw must stay >= the memory limit, so the memory limit goes first.
    write_value(&dir.join("memory.limit_in_bytes"), &value)?;
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    if memsw.exists() {
        write_value(&memsw, &value)?;
    }
    // Best effort: not every kernel lets a child cgroup set its own swappiness.
    let _ = write_value(&dir.join("memory.swappiness"), "0");
    Ok(())
}

pub(super) fn write_cpu(dir: &Path, cpus: f64) -> Result<(), CgroupError> {
    let (quota, period) = super::run::cpu_max(cpus);
    write_value(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
    write_value(&dir.join("cpu.cfs_quota_us"), &quota.to_string())
}

pub(super) fn write_pids(dir: &Path, n: u64) -> Result<(), CgroupError> {
    write_value(&dir.join("pids.max"), &n.to_string())
}

/// `oom_kill` counter of `memory.oom_control`.
pub(super) fn oom_kills(dir: &Path) -> Result<u64, CgroupError> {
    let path = dir.join("memory.oom_control");
    let text = read_string(&path)?;
    keyed(&text, "oom_kill").ok_or_else(|| CgroupError::Parse {
        path,
        detail: "no `oom_kill` line".into(),
    })
}

pub(super) fn memory_current(dir: &Path) -> Option<u64> {
    read_string(&dir.join("memory.usage_in_bytes"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub(super) fn peak_memory(dir: &Path) -> Option<u64> {
    read_string(&dir.join("memory.max_usage_in_bytes"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The total CPU time in ns (`cpuacct.usage`).
pub(super) fn cpu_total_ns(dir: &Path) -> Option<u64> {
    read_string(&dir.join("cpuacct.usage"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `(user, system, total)` in ns: `cpuacct.stat` is in clock ticks, `cpuacct.usage` in ns.
pub(super) fn cpu_ns(dir: &Path) -> (Option<u64>, Option<u64>, Option<u64>) {
    let total = cpu_total_ns(dir);
    let (user, system) = match read_string(&dir.join("cpuacct.stat")) {
        Ok(text) => {
            let ns_per_tick = 1_000_000_000 / clock_ticks();
            let ns = |key| keyed(&text, key).map(|t| t.saturating_mul(ns_per_tick));
            (ns("user"), ns("system"))
        }
        Err(_) => (None, None),
    };
    (user, system, total)
}

fn clock_ticks() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    }
}

/// Freeze the cgroup and wait (briefly) until the kernel reports it `FROZEN`.
pub(super) fn freeze(dir: &Path) -> Result<(), CgroupError> {
    let state = dir.join("freezer.state");
    write_value(&state, "FROZEN")?;
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        if read_string(&state)?.trim() == "FROZEN" {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Still FREEZING: killing anyway is fine, the next round catches stragglers.
    Ok(())
}

pub(super) fn thaw(dir: &Path) -> Result<(), CgroupError> {
    write_value(&dir.join("freezer.state"), "THAWED")
}
