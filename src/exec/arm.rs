//! Limits of the run, resolved before anything runs: where its cgroups go (its
//! [`RunRoot`], acquired once), capacity and GPU checks, rlimits checked against the
//! hard limits, the launch stage's cgroup and containment. A limit that cannot be
//! enforced refuses the run unless best effort is asked for; every limit is recorded
//! with how it is enforced and whether the step could undo it.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::{Options, Refusal, refuse};
use crate::cgroup::{self, CgroupError, CgroupFs, RunCgroup, RunRoot};
use crate::contain::{self, Contain};
use crate::limits::{self, Enforcement, LimitKind, Limits, Rlimits};
use crate::manifest::StageName;
use crate::plan::Plan;
use crate::report::{Ending, LaunchFailure, LimitRecord};

/// Everything the launch stage needs that is decided before it starts.
pub struct Armed {
    pub rlimits: Rlimits,
    pub cgroup: Option<RunCgroup>,
    pub contain: Contain,
    pub containment: contain::Report,
    pub extra_env: BTreeMap<String, String>,
    pub records: Vec<LimitRecord>,
    pub warnings: Vec<String>,
}

fn record(
    name: LimitKind,
    value: serde_json::Value,
    by: Enforcement,
    contained: bool,
) -> LimitRecord {
    LimitRecord {
        name,
        value,
        enforced_by: by,
        contained: contained && by != Enforcement::None,
    }
}

/// The cgroup filesystem of this process, or (tests) a tree under `RUNNER_CGROUP_ROOT`.
pub fn cgroup_fs() -> Result<CgroupFs, CgroupError> {
    match std::env::var_os("RUNNER_CGROUP_ROOT") {
        Some(root) => {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            CgroupFs::from_texts(&mountinfo, &own, Some(Path::new(&root)))
        }
        None => CgroupFs::detect(),
    }
}

/// An error with its ways forward, in one line for the result's message.
pub fn with_hints(e: &CgroupError) -> String {
    let mut msg = crate::diag::error_chain(e);
    for h in e.hints() {
        msg.push_str("; ");
        msg.push_str(h);
    }
    msg
}

/// The runner's files a step may not touch: what `status` and `cancel` trust.
fn protected(run: &crate::home::RunDir) -> Vec<std::path::PathBuf> {
    vec![run.plan(), run.pid()]
}

/// The cgroup limits of a stage, as the kernel will hold them.
fn request(l: &Limits) -> cgroup::Request {
    cgroup::Request {
        memory: l.memory_bytes.map(limits::whole_pages),
        cpus: l.cpus,
        pids: l.pids,
    }
}

/// What a prepare or cleanup stage runs under: its cgroup (with its limits), its
/// containment, and warnings where either could not be had. `None` for the cgroup
/// where none can be had: the stage then relies on the command's process group.
///
/// The cgroup also tracks every process a command starts, so whatever a command leaves
/// running is killed when it ends; and if the runner itself is killed mid-stage, the
/// next runner's stale cleanup kills the rest *before* it prepares again, so no orphan
/// keeps writing into a cache entry being rebuilt.
pub fn stage(
    root: Option<&RunRoot>,
    run: &crate::home::RunDir,
    stage: StageName,
    limits: &Limits,
    capabilities: &[String],
    opts: &Options,
    warnings: &mut Vec<String>,
) -> Result<(Option<RunCgroup>, Contain), Refusal> {
    let name = stage.as_str();
    limits::check_capacity(limits).map_err(|e| {
        refuse(
            Ending::LaunchError(LaunchFailure::Other),
            format!("the {name} stage's {e}"),
        )
    })?;
    let cgroup = match root.map(|r| r.create(name, &request(limits))) {
        Some(Ok(cg)) => Some(cg),
        Some(Err(e))
            if !opts.best_effort
                && limits.memory_bytes.or(limits.pids).is_some()
                && root.is_some() =>
        {
            return Err(refuse(
                Ending::LaunchError(LaunchFailure::Other),
                format!(
                    "cannot enforce the {name} stage's limits: {} (use --best-effort-limits to run anyway)",
                    with_hints(&e)
                ),
            ));
        }
        Some(Err(e)) => {
            warnings.push(format!("the {name} stage's limits are not enforced: {e}"));
            None
        }
        None => None,
    };
    let contain = match root.map(|r| Contain::prepare(r.fs(), capabilities, &protected(run))) {
        Some(Ok((c, report))) => {
            if let Some(why) = report.reason {
                warnings.push(format!("the {name} stage is not contained: {why}"));
            }
            c
        }
        Some(Err(why)) => {
            warnings.push(format!("the {name} stage is not contained: {why}"));
            Contain::none()
        }
        None => Contain::none(),
    };
    Ok((cgroup, contain))
}

/// Resolve every limit of the launch stage into something enforceable, or refuse.
pub fn arm(
    plan: &Plan,
    opts: &Options,
    root: Result<&RunRoot, &CgroupError>,
) -> Result<Armed, Refusal> {
    let l = &plan.launch.limits;
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    let mut extra_env = BTreeMap::new();
    limits::check_capacity(l)
        .map_err(|e| refuse(Ending::LaunchError(LaunchFailure::Other), e.to_string()))?;

    // Containment first: whether the step could undo a limit decides how it is recorded.
    let (contain, containment) = match root.map(|r| {
        let run = crate::home::RunDir::new(&plan.dirs.run);
        Contain::prepare(r.fs(), &plan.launch.capabilities, &protected(&run))
    }) {
        Ok(Ok((c, report))) => (c, report),
        Ok(Err(why)) => (
            Contain::none(),
            contain::Report {
                mode: "none".into(),
                contained: false,
                reason: Some(why),
            },
        ),
        Err(e) => (
            Contain::none(),
            contain::Report {
                mode: "none".into(),
                contained: false,
                reason: Some(format!(
                    "no cgroup for the run: {}",
                    crate::diag::error_chain(e)
                )),
            },
        ),
    };
    let contained = containment.contained;

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
        // The step can always reset its own environment.
        records.push(record(LimitKind::Gpus, json!(n), Enforcement::Env, false));
    }

    // rlimits: each checked on its own so best effort can keep the ones that work.
    // An unprivileged process cannot raise a hard limit; root can only when it kept
    // CAP_SYS_RESOURCE.
    let rlimits_contained = !nix::unistd::geteuid().is_root() || contained;
    let mut rlimits = Rlimits::default();
    for kind in LimitKind::RLIMITS {
        let Some(v) = l.rlimit(kind) else { continue };
        let mut one = Rlimits::default();
        one.set(kind, v);
        match one.check() {
            Ok(()) => {
                rlimits.set(kind, v);
                records.push(record(
                    kind,
                    json!(v),
                    Enforcement::Rlimit,
                    rlimits_contained,
                ));
            }
            Err(e) if opts.best_effort => {
                warnings.push(format!("limit `{kind}` not enforced: {e}"));
                records.push(record(kind, json!(v), Enforcement::None, false));
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

    let req = request(l);
    let wants_cgroup = req.memory.is_some() || req.cpus.is_some() || req.pids.is_some();
    if wants_cgroup && !contained && !opts.best_effort {
        // Without a cgroup, what stops it and the ways forward; else why the step could
        // undo its limits.
        let why = match root {
            Err(e) if !e.hints().is_empty() => {
                format!("no cgroup for the run: {}", with_hints(e))
            }
            Err(e) => format!(
                "no cgroup for the run: {} (use --best-effort-limits to run anyway)",
                crate::diag::error_chain(e)
            ),
            Ok(_) => format!(
                "{} (use --best-effort-limits to run anyway)",
                containment.reason.clone().unwrap_or_default()
            ),
        };
        return Err(refuse(
            Ending::LaunchError(LaunchFailure::Other),
            format!("cannot enforce memory/cpus/pids limits that the step cannot undo: {why}"),
        ));
    }
    let cg = root.map_err(with_hints).and_then(|r| {
        r.create(StageName::Launch.as_str(), &req)
            .map_err(|e| with_hints(&e))
    });
    let cgroup = match cg {
        Ok(cg) => {
            let by = cg.enforcement();
            for kind in LimitKind::CGROUP {
                // Memory as the cgroup holds it (whole pages), not as it was asked.
                let value = match kind {
                    LimitKind::Memory => req.memory.map(|b| json!(b)),
                    _ => l.value(kind),
                };
                if let Some(v) = value {
                    let how = by
                        .iter()
                        .find(|(k, _)| *k == kind)
                        .map_or(Enforcement::None, |(_, e)| *e);
                    records.push(record(kind, v, how, contained));
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
            let not: Vec<&str> = LimitKind::CGROUP
                .iter()
                .filter(|k| l.value(**k).is_some())
                .map(|k| k.as_str())
                .collect();
            if wants_cgroup {
                warnings.push(format!("limits not enforced: {} ({e})", not.join(", ")));
            } else {
                warnings.push(format!(
                    "no cgroup for this run ({e}): processes that leave the session are not tracked"
                ));
            }
            for kind in LimitKind::CGROUP {
                if let Some(v) = l.value(kind) {
                    records.push(record(kind, v, Enforcement::None, false));
                }
            }
            None
        }
    };
    if let Some(t) = plan.launch.timeout {
        // The supervisor is another process: the step cannot move its deadline.
        records.push(record(
            LimitKind::Timeout,
            json!(t.as_secs_f64()),
            Enforcement::Supervisor,
            true,
        ));
    }
    if !contained && let Some(why) = &containment.reason {
        warnings.push(format!("the step is not contained: {why}"));
    }
    Ok(Armed {
        rlimits,
        cgroup,
        contain,
        containment,
        extra_env,
        records,
        warnings,
    })
}
