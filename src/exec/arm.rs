//! Limits of the launch stage, resolved before anything runs: capacity and GPU
//! checks, rlimits checked against the hard limits, the run's cgroup created.
//! A limit that cannot be enforced refuses the run unless best effort is asked for;
//! every limit is recorded with how it is enforced.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::{Options, Refusal, refuse};
use crate::cgroup::{self, CgroupFs, RunCgroup};
use crate::limits::{self, Rlimits};
use crate::plan::Plan;
use crate::report::{Ending, Enforcement, LaunchFailure, LimitRecord};

/// Everything the launch stage needs that is decided before it starts.
pub struct Armed {
    pub rlimits: Rlimits,
    pub cgroup: Option<RunCgroup>,
    pub extra_env: BTreeMap<String, String>,
    pub records: Vec<LimitRecord>,
    pub warnings: Vec<String>,
}

fn record(name: &str, value: serde_json::Value, by: Enforcement) -> LimitRecord {
    LimitRecord {
        name: name.to_string(),
        value,
        enforced_by: by,
    }
}

fn enforcement_of(tag: &str) -> Enforcement {
    match tag {
        "cgroup-v2" => Enforcement::CgroupV2,
        "cgroup-v1" => Enforcement::CgroupV1,
        _ => Enforcement::None,
    }
}

fn cgroup_fs() -> Result<CgroupFs, cgroup::CgroupError> {
    match std::env::var_os("RUNNER_CGROUP_ROOT") {
        // Tests point the runner at a fake (or read-only) cgroupfs tree.
        Some(root) => {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            CgroupFs::from_texts(&mountinfo, &own, Some(Path::new(&root)))
        }
        None => CgroupFs::detect(),
    }
}

/// A cgroup without limits for the prepare or cleanup stage. It tracks every process a
/// command starts, so whatever a command leaves running is killed when it ends; and if
/// the runner itself is killed mid-stage (PDEATHSIG reaches only the command, not its
/// children), the next runner's stale cleanup kills the rest *before* it prepares again,
/// so no orphan keeps writing into a cache entry being rebuilt. `None` where no cgroup
/// can be had: the stage then relies on the command's process group, as before.
pub fn stage_cgroup(plan: &Plan, stage: &str) -> Option<RunCgroup> {
    let fs = cgroup_fs().ok()?;
    let name = format!("{}-{stage}", plan.run_id);
    RunCgroup::create(&fs, &name, &cgroup::Request::default()).ok()
}

/// Resolve every limit of the launch stage into something enforceable, or refuse.
pub fn arm(plan: &Plan, opts: &Options) -> Result<Armed, Refusal> {
    let l = &plan.launch.limits;
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    let mut extra_env = BTreeMap::new();
    limits::check_capacity(l.memory_bytes, l.cpus)
        .map_err(|e| refuse(Ending::LaunchError(LaunchFailure::Other), e.to_string()))?;

    if let Some(n) = l.gpus {
        if n == 0 {
            extra_env.insert("CUDA_VISIBLE_DEVICES".into(), String::new());
            extra_env.insert("NVIDIA_VISIBLE_DEVICES".into(), "void".into());
        } else {
            let devices = limits::select_gpus(n, &limits::detect_gpus())
                .map_err(|e| refuse(Ending::LaunchError(LaunchFailure::Other), e.to_string()))?;
            // Indices are the driver's device minors, which follow PCI bus order.
            extra_env.insert("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into());
            extra_env.insert("CUDA_VISIBLE_DEVICES".into(), devices.clone());
            extra_env.insert("NVIDIA_VISIBLE_DEVICES".into(), devices);
        }
        records.push(record("gpus", json!(n), Enforcement::Env));
    }

    // rlimits: each checked on its own so best effort can keep the ones that work.
    let mut rlimits = Rlimits::default();
    type Set = fn(&mut Rlimits, u64);
    let wanted: [(&str, Option<u64>, Set); 5] = [
        ("open_files", l.open_files, |r, v| r.open_files = Some(v)),
        ("cpu_time", l.cpu_time_secs, |r, v| r.cpu_time = Some(v)),
        ("file_size", l.file_size_bytes, |r, v| r.file_size = Some(v)),
        ("core", l.core_bytes, |r, v| r.core = Some(v)),
        ("address_space", l.address_space_bytes, |r, v| {
            r.address_space = Some(v)
        }),
    ];
    for (name, value, set) in wanted {
        let Some(v) = value else { continue };
        let mut one = Rlimits::default();
        set(&mut one, v);
        match one.check() {
            Ok(()) => {
                set(&mut rlimits, v);
                records.push(record(name, json!(v), Enforcement::Rlimit));
            }
            Err(e) if opts.best_effort => {
                warnings.push(format!("limit `{name}` not enforced: {e}"));
                records.push(record(name, json!(v), Enforcement::None));
            }
            Err(e) => {
                return Err(refuse(
                    Ending::LaunchError(LaunchFailure::Other),
                    format!(
                        "cannot enforce limit `{name}`: {e} (use --best-effort-limits to run anyway)"
                    ),
                ));
            }
        }
    }

    let req = cgroup::Request {
        memory: l.memory_bytes,
        cpus: l.cpus,
        pids: l.pids,
    };
    let wants_cgroup = req.memory.is_some() || req.cpus.is_some() || req.pids.is_some();
    let cg = cgroup_fs().and_then(|fs| {
        fs.clean_stale();
        RunCgroup::create(&fs, &plan.run_id, &req)
    });
    let cgroup = match cg {
        Ok(cg) => {
            let by: BTreeMap<&str, &str> = cg.enforcement().into_iter().collect();
            for (name, value) in [
                ("memory", l.memory_bytes.map(|v| json!(v))),
                ("cpus", l.cpus.map(|v| json!(v))),
                ("pids", l.pids.map(|v| json!(v))),
            ] {
                if let Some(v) = value {
                    records.push(record(
                        name,
                        v,
                        by.get(name)
                            .map(|t| enforcement_of(t))
                            .unwrap_or(Enforcement::None),
                    ));
                }
            }
            Some(cg)
        }
        Err(e) if wants_cgroup && !opts.best_effort => {
            return Err(refuse(
                Ending::LaunchError(LaunchFailure::Other),
                format!(
                    "cannot enforce memory/cpus/pids limits: {e} (use --best-effort-limits to run anyway)"
                ),
            ));
        }
        Err(e) => {
            if wants_cgroup {
                warnings.push(format!("memory/cpus/pids limits not enforced: {e}"));
            } else {
                warnings.push(format!(
                    "no cgroup for this run ({e}): processes that leave the session are not tracked"
                ));
            }
            for (name, value) in [
                ("memory", l.memory_bytes.map(|v| json!(v))),
                ("cpus", l.cpus.map(|v| json!(v))),
                ("pids", l.pids.map(|v| json!(v))),
            ] {
                if let Some(v) = value {
                    records.push(record(name, v, Enforcement::None));
                }
            }
            None
        }
    };
    if let Some(t) = plan.launch.timeout_secs {
        records.push(record("timeout", json!(t), Enforcement::Supervisor));
    }
    Ok(Armed {
        rlimits,
        cgroup,
        extra_env,
        records,
        warnings,
    })
}
