//! cgroup v2 file formats: enabling controllers in `cgroup.subtree_control`, writing
//! `memory.max`/`cpu.max`/`pids.max`, and reading `memory.events`, `memory.peak`,
//! `cpu.stat`.

use std::path::Path;

use super::{CgroupError, Request, keyed, read_string, write_value};

/// Make `wanted` controllers available to children of `dir` (its `cgroup.subtree_control`).
/// A controller in `required` that cannot be enabled is an error; others are skipped.
pub(super) fn enable_controllers(
    dir: &Path,
    wanted: &[&'static str],
    required: &[&'static str],
) -> Result<(), CgroupError> {
    let available = read_string(&dir.join("cgroup.controllers"))?;
    let subtree_path = dir.join("cgroup.subtree_control");
    let enabled = read_string(&subtree_path)?;
    let has = |text: &str, ctrl: &str| text.split_whitespace().any(|c| c == ctrl);
    let mut to_enable = Vec::new();
    for &ctrl in wanted {
        if has(&enabled, ctrl) {
            continue;
        }
        if has(&available, ctrl) {
            to_enable.push(ctrl);
        } else if required.contains(&ctrl) {
            return Err(CgroupError::ControllerMissing {
                controller: ctrl,
                path: dir.to_owned(),
            });
        }
    }
    if to_enable.is_empty() {
        return Ok(());
    }
    // One write for all; EBUSY here usually means `dir` holds processes itself (the
    // "no internal processes" rule) and the error names the path for the caller.
    let line = |ctrls: &[&str]| {
        ctrls
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match write_value(&subtree_path, &line(&to_enable)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let must: Vec<&str> = to_enable
                .into_iter()
                .filter(|c| required.contains(c))
                .collect();
            if must.is_empty() {
                Ok(())
            } else {
                write_value(&subtree_path, &line(&must)).map_err(|_| e)
            }
        }
    }
}

/// Controllers a request needs enabled; `memory` is always wanted for its counters.
pub(super) fn controllers_for(req: &Request) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut required = Vec::new();
    if req.memory.is_some() {
        required.push("memory");
    }
    if req.cpus.is_some() {
        required.push("cpu");
    }
    if req.pids.is_some() {
        required.push("pids");
    }
    let mut wanted = required.clone();
    if !wanted.contains(&"memory") {
        wanted.insert(0, "memory");
    }
    (wanted, required)
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
        let quota = super::run::cpu_quota(cpus);
        write_value(
            &dir.join("cpu.max"),
            &format!("{quota} {}", super::run::CPU_PERIOD_US),
        )?;
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
