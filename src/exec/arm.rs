//! Limits of the launch stage, resolved before anything runs: capacity and GPU
//! checks, rlimits checked against the hard limits, the run's cgroup created.
//! A limit that cannot be enforced refuses the run unless best effort is asked for;
//! every limit is recorded with how it is enforced.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::{Options, Refusal, refuse};
use crate::cgroup::{self, CgroupFs, RunCgroup};
use crate::limits::{self, Enforcement, LimitKind, Rlimits};
use crate::manifest::StageName;
use crate::plan::Plan;
use crate::report::{Ending, LaunchFailure, LimitRecord};

/// Everything the launch stage needs that is decided before it starts.
pub struct Armed {
    pub rlimits: Rlimits,
    pub cgroup: Option<RunCgroup>,
    pub extra_env: BTreeMap<String, String>,
    pub records: Vec<LimitRecord>,
    pub warnings: Vec<String>,
}

fn record(name: LimitKind, value: serde_json::Value, by: Enforcement) -> LimitRecord {
    LimitRecord {
        name,
        value,
        enforced_by: by,
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
pub fn stage_cgroup(plan: &Plan, stage: StageName) -> Option<RunCgroup> {
    let fs = cgroup_fs().ok()?;
    let name = format!("{}-{}", plan.run_id, stage.as_str());
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
        records.push(record(LimitKind::Gpus, json!(n), Enforcement::Env));
    }

    // rlimits: each checked on its own so best effort can keep the ones that work.
    let mut rlimits = Rlimits::default();
    for kind in LimitKind::RLIMITS {
        let Some(v) = l.rlimit(kind) else { continue };
        let mut one = Rlimits::default();
        one.set(kind, v);
        match one.check() {
            Ok(()) => {
                rlimits.set(kind, v);
                records.push(record(kind, json!(v), Enforcement::Rlimit));
            }
            Err(e) if opts.best_effort => {
                warnings.push(format!("limit `{kind}` not enforced: {e}"));
                records.push(record(kind, json!(v), Enforcement::None));
            }
            Err(e) => {
                return Err(refuse(
                    Ending::LaunchError(LaunchFailure::Other),
                    format!(
                        "cannot enforce limit `{kind}`: {e} (use --best-effort-limits to run anyway)"
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
            let by = cg.enforcement();
            for kind in LimitKind::CGROUP {
                if let Some(v) = l.value(kind) {
                    let how = by
                        .iter()
                        .find(|(k, _)| *k == kind)
                        .map_or(Enforcement::None, |(_, e)| *e);
                    records.push(record(kind, v, how));
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
            for kind in LimitKind::CGROUP {
                if let Some(v) = l.value(kind) {
                    records.push(record(kind, v, Enforcement::None));
                }
            }
            None
        }
    };
    if let Some(t) = plan.launch.timeout {
        records.push(record(
            LimitKind::Timeout,
            json!(t.as_secs_f64()),
            Enforcement::Supervisor,
        ));
    }
    Ok(Armed {
        rlimits,
        cgroup,
        extra_env,
        records,
        warnings,
    })
}
