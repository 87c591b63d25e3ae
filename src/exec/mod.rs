//! Executing a [`Plan`]: prepare (cached) → launch → cleanup, under limits, every
//! command through one primitive ([`command::run`]) and one supervise loop
//! ([`child`], deciding with [`supervise`]). Produces the [`Outcome`].
//! `execute` never sees YAML or templates.

mod arm;
mod child;
mod command;
mod launch;
mod probe;
mod progress;
mod spawn;
mod stage;
mod supervise;

use arm::arm;
pub use probe::{Probe, probe};
use stage::{Stage, StageEnd};

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Instant, SystemTime};

use crate::cache::Lease;
use crate::cgroup::{self, CgroupError, RunCgroup, RunRoot};
use crate::home::RunDir;
use crate::manifest::StageName;
use crate::plan::{Plan, PreparePlan};
use crate::report::{CacheInfo, Ending, Logs, Outcome, StageStatus, StageTiming, Stages, Status};
use crate::signals::{self, Signals};

use supervise::Stop;

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub quiet: bool,
    pub json: bool,
    pub log_limit: Option<u64>,
    pub best_effort: bool,
    pub stdin: bool,
}

/// The runner could not even start: nothing ran, nothing is left behind.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot create the run folder `{path}`")]
    RunDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
}

/// Why the step could not run, decided before or while starting it.
pub(crate) struct Refusal {
    ending: Ending,
    message: String,
}

pub(crate) fn refuse(ending: Ending, message: impl Into<String>) -> Refusal {
    Refusal {
        ending,
        message: message.into(),
    }
}

fn timing(
    start: Instant,
    status: StageStatus,
    exit_code: Option<i32>,
    commands: u32,
) -> StageTiming {
    StageTiming {
        duration_secs: start.elapsed().as_secs_f64(),
        exit_code,
        status,
        commands,
    }
}

/// Create the run folder (fresh under `runs/`, or an empty or new `--run-dir`) and
/// write `plan.json` into it. Call before [`execute`].
pub fn make_run_dir(plan: &Plan) -> Result<(), ExecError> {
    let run = RunDir::new(&plan.dirs.run);
    let err = |source| ExecError::RunDir {
        path: plan.dirs.run.clone(),
        source,
    };
    // The folders this call creates above the run folder (a fresh home's `runs/`),
    // deepest first: removed again if the run folder cannot be made.
    let made_above: Vec<&Path> = run
        .path()
        .ancestors()
        .skip(1)
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    let undo_above = || {
        for d in &made_above {
            let _ = std::fs::remove_dir(d);
        }
    };
    if let Some(parent) = run.path().parent()
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        undo_above();
        return Err(err(e));
    }
    match std::fs::create_dir(run.path()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let empty = std::fs::read_dir(run.path()).map_err(err)?.next().is_none();
            if !empty {
                return Err(err(std::io::Error::other(
                    "the folder exists and is not empty",
                )));
            }
        }
        Err(e) => {
            undo_above();
            return Err(err(e));
        }
    }
    let plan_json = serde_json::to_vec_pretty(plan).expect("plan serializes");
    let write = std::fs::create_dir_all(&plan.dirs.work)
        .and_then(|()| std::fs::write(run.plan(), plan_json))
        .and_then(|()| crate::report::reserve(&run.result_reserve()));
    if let Err(e) = write {
        // Leave nothing half-made behind.
        let _ = std::fs::remove_dir_all(run.path());
        undo_above();
        return Err(err(e));
    }
    Ok(())
}

fn remove_stage_cgroup(cgroup: Option<RunCgroup>, stage: StageName, warnings: &mut Vec<String>) {
    if let Some(cg) = cgroup
        && let Err(e) = cg.remove()
    {
        warnings.push(format!(
            "could not remove the {} stage's cgroup: {e}",
            stage.as_str()
        ));
    }
}

/// One run as it goes: what its three stages share.
struct Run<'a> {
    plan: &'a Plan,
    opts: &'a Options,
    dir: RunDir,
    /// Where the run's cgroups go, or why they cannot.
    root: Result<RunRoot, CgroupError>,
    /// The cleanup of what dead runners left, going on beside this run.
    stale: Option<std::thread::JoinHandle<Vec<String>>>,
    signals: Signals,
    /// The first signal the runner received, if any.
    cancelled: Option<i32>,
    out: Outcome,
}

impl Run<'_> {
    fn fail(&mut self, r: Refusal) {
        self.out.set_ending(r.ending);
        self.out.message = Some(r.message);
    }

    fn cancel_message(&self, s: i32, during: &str) -> Refusal {
        refuse(
            Ending::Cancelled { received: s },
            format!("cancelled by {} {during}", signals::name(s)),
        )
    }

    /// Prepare, cached: the lease it returns keeps the entry from being pruned while
    /// the step runs.
    fn prepare(&mut self, p: &PreparePlan) -> Option<Lease> {
        let start = Instant::now();
        let dir = self
            .plan
            .dirs
            .prepare
            .clone()
            .expect("a prepare stage has a cache folder");
        let lease = {
            let cancelled = &mut self.cancelled;
            let signals = &self.signals;
            Lease::acquire(
                &dir,
                || {
                    eprintln!(
                        "runner: waiting for another runner preparing `{}`",
                        dir.display()
                    )
                },
                || {
                    let got = signals.drain();
                    if let Some(s) = got.first() {
                        cancelled.get_or_insert(*s);
                    }
                    !got.is_empty()
                },
            )
        };
        let lease = match lease {
            Ok(l) => l,
            Err(e) => {
                let ending = match self.cancelled {
                    Some(s) => Ending::Cancelled { received: s },
                    None => Ending::PrepareFailed,
                };
                self.fail(refuse(ending, e.to_string()));
                return None;
            }
        };
        let hit = lease.is_complete();
        self.out.cache = Some(CacheInfo {
            hit,
            key: p.key.clone(),
            path: dir.display().to_string(),
        });
        if hit {
            self.out.stages.prepare = Some(timing(start, StageStatus::Cached, None, 0));
            lease.share();
            return Some(lease);
        }
        let (cgroup, contain) = match arm::stage(
            self.root.as_ref().ok(),
            &self.dir,
            StageName::Prepare,
            &p.limits,
            &p.capabilities,
            self.opts,
            &mut self.out.warnings,
        ) {
            Ok(s) => s,
            Err(r) => {
                self.fail(r);
                return None;
            }
        };
        let stage = Stage {
            name: StageName::Prepare,
            run_dir: &self.dir,
            env: &p.env,
            withhold: &self.plan.secret_env,
            opts: self.opts,
            cgroup: cgroup.as_ref(),
            contain: &contain,
            deadline: p.timeout.map(|t| Instant::now() + t),
            shielded: false,
        };
        // A prepare killed with its runner may have left processes writing into this
        // entry: they are gone before it is built again.
        if let Some(t) = self.stale.take() {
            let _ = t.join();
        }
        let (end, n) = match lease.begin() {
            Ok(()) => stage.run(&p.commands, &self.signals, &mut self.cancelled),
            Err(e) => (
                StageEnd::Failed {
                    at: "/prepare".into(),
                    message: e.to_string(),
                    ended: None,
                },
                0,
            ),
        };
        let (status, code) = match end {
            StageEnd::Ok => {
                let description = format!("{}\n{}\n", self.plan.flavor, p.key_parts.join("\n"));
                match lease.commit(&description) {
                    Ok(()) => (StageStatus::Ok, None),
                    Err(e) => {
                        self.fail(refuse(Ending::PrepareFailed, e.to_string()));
                        (StageStatus::Failed, None)
                    }
                }
            }
            StageEnd::Failed { message, ended, at } => {
                self.fail(refuse(
                    Ending::PrepareFailed,
                    format!("{message} (at `{at}`)"),
                ));
                (StageStatus::Failed, ended.map(|e| e.code()))
            }
            StageEnd::Stopped(Stop::TimedOut) => {
                self.fail(refuse(Ending::PrepareFailed, "prepare timed out"));
                (StageStatus::TimedOut, None)
            }
            StageEnd::Stopped(Stop::Cancelled(s)) => {
                let r = self.cancel_message(s, "during prepare");
                self.fail(r);
                (StageStatus::Cancelled, None)
            }
        };
        self.out.stages.prepare = Some(timing(start, status, code, n));
        remove_stage_cgroup(cgroup, StageName::Prepare, &mut self.out.warnings);
        lease.share();
        Some(lease)
    }

    /// Cleanup: always, with `RUNNER_STATUS` telling how the step ended.
    fn cleanup(&mut self) {
        let plan = self.plan;
        if plan.cleanup.commands.is_empty() {
            return;
        }
        let start = Instant::now();
        let mut env = plan.cleanup.env.clone();
        env.insert("RUNNER_STATUS".into(), self.out.status.as_str().to_string());
        env.insert("RUNNER_EXIT_CODE".into(), self.out.exit_code.to_string());
        // Cleanup runs whatever happened before: limits it cannot have are warnings.
        let best_effort = Options {
            best_effort: true,
            ..self.opts.clone()
        };
        let (cgroup, contain) = arm::stage(
            self.root.as_ref().ok(),
            &self.dir,
            StageName::Cleanup,
            &plan.cleanup.limits,
            &plan.cleanup.capabilities,
            &best_effort,
            &mut self.out.warnings,
        )
        .unwrap_or((None, crate::contain::Contain::none()));
        let stage = Stage {
            name: StageName::Cleanup,
            run_dir: &self.dir,
            env: &env,
            withhold: &plan.secret_env,
            opts: self.opts,
            cgroup: cgroup.as_ref(),
            contain: &contain,
            deadline: plan.cleanup.timeout.map(|t| Instant::now() + t),
            shielded: true,
        };
        let (end, n) = stage.run(&plan.cleanup.commands, &self.signals, &mut self.cancelled);
        let status = match end {
            StageEnd::Ok => StageStatus::Ok,
            StageEnd::Failed { message, .. } => {
                self.out.cleanup_error = Some(message);
                StageStatus::Failed
            }
            StageEnd::Stopped(stop) => {
                self.out.cleanup_error = Some(match stop {
                    Stop::TimedOut => "cleanup timed out".to_string(),
                    Stop::Cancelled(s) => format!("cleanup stopped by {}", signals::name(s)),
                });
                StageStatus::Stopped
            }
        };
        self.out.stages.cleanup = Some(timing(start, status, None, n));
        remove_stage_cgroup(cgroup, StageName::Cleanup, &mut self.out.warnings);
    }
}

/// What a run needs that does not depend on its plan: its signals caught, the cgroup
/// filesystem found, the run's cgroup root made (and recorded). On cgroup v1 it is made
/// while the plan renders in its bounded child ([`crate::render::render_bounded_while`]),
/// mostly on a second core; dropped unused (a plan that does not render, or is
/// refused), its root is removed.
pub struct Ready {
    signals: std::io::Result<Signals>,
    fs: Option<cgroup::CgroupFs>,
    root: Result<RunRoot, CgroupError>,
}

impl Ready {
    /// The cgroup filesystem if a run's root can be made while its plan renders: on v1,
    /// where the root goes does not depend on who else is in the runner's cgroup. On
    /// v2 it does (a runner alone in its cgroup steps into a leaf of it; one that is
    /// not asks systemd), and the render's child is there until it has exited.
    pub fn beside_render() -> Option<cgroup::CgroupFs> {
        arm::cgroup_fs()
            .ok()
            .filter(|fs| fs.version() == cgroup::Version::V1)
    }

    /// For the run `run_id`, on the cgroup filesystem `fs` (or without one).
    pub fn new(run_id: &str, fs: Result<cgroup::CgroupFs, CgroupError>) -> Ready {
        Ready {
            signals: Signals::install(),
            fs: fs.as_ref().ok().cloned(),
            root: fs.and_then(|fs| RunRoot::acquire(&fs, run_id)),
        }
    }
}

/// Run the plan in its run folder (made by [`make_run_dir`]), with what is `ready`
/// for it (else made here).
pub fn execute(
    plan: &Plan,
    secrets: &BTreeMap<String, String>,
    opts: &Options,
    ready: Option<Ready>,
) -> Result<Outcome, ExecError> {
    let started_at = crate::report::rfc3339(SystemTime::now());
    let t0 = Instant::now();
    let dir = RunDir::new(&plan.dirs.run);
    let Ready { signals, fs, root } =
        ready.unwrap_or_else(|| Ready::new(&plan.run_id, arm::cgroup_fs()));
    let signals = signals.map_err(ExecError::Signals)?;
    let out = Outcome {
        version: crate::report::VERSION,
        run_id: plan.run_id.clone(),
        run_dir: dir.path().display().to_string(),
        flavor: plan.flavor.clone(),
        step: plan.step.clone(),
        status: Status::Succeeded,
        exit_code: 0,
        signal: None,
        message: None,
        started_at,
        duration_secs: 0.0,
        stages: Stages {
            prepare: None,
            launch: None,
            cleanup: None,
        },
        cache: None,
        peak_memory_bytes: None,
        cpu_user_secs: None,
        cpu_system_secs: None,
        oom_kills: 0,
        measured_by: plan.launch.measured_by,
        client: None,
        profile: None,
        leftover_processes_killed: 0,
        limits: Vec::new(),
        logs: Logs {
            stdout: dir.stdout().display().to_string(),
            stderr: dir.stderr().display().to_string(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            truncated: false,
        },
        cleanup_error: None,
        // What the step asked for that the flavor ignores.
        warnings: plan.ignored.clone(),
        containment: None,
    };
    // What runners that died left is removed beside this run, not before it.
    let stale = fs.and_then(|fs| {
        std::thread::Builder::new()
            .name("stale cgroups".into())
            .spawn(move || cgroup::clean_stale(&fs))
            .ok()
    });
    let mut run = Run {
        plan,
        opts,
        dir,
        root,
        stale,
        signals,
        cancelled: None,
        out,
    };

    // Limits first: a limit that cannot be enforced refuses the run before anything runs.
    let armed = match arm(plan, opts, run.root.as_ref()) {
        Ok(a) => Some(a),
        Err(r) => {
            run.fail(r);
            None
        }
    };
    let _lease = match (&armed, &plan.prepare) {
        (Some(_), Some(p)) => run.prepare(p),
        _ => None,
    };
    if let Some(armed) = armed {
        run.out.limits = armed.records.clone();
        run.out.containment = Some(armed.containment.clone());
        run.out.warnings.extend(armed.warnings.iter().cloned());
        if run.out.status == Status::Succeeded && run.cancelled.is_none() {
            let start = Instant::now();
            launch::launch(&mut run, secrets, &armed);
            let status = StageStatus::from(run.out.status);
            run.out.stages.launch = Some(timing(start, status, Some(run.out.exit_code), 1));
        } else if run.out.status == Status::Succeeded {
            let s = run.cancelled.unwrap_or(libc::SIGINT);
            let r = run.cancel_message(s, "before launch");
            run.fail(r);
        }
        if let Some(cg) = armed.cgroup
            && let Err(e) = cg.remove()
        {
            run.out
                .warnings
                .push(format!("could not remove the run's cgroup: {e}"));
        }
    }
    run.cleanup();
    if let Ok(root) = &mut run.root {
        root.release();
    }
    if let Some(t) = run.stale.take() {
        let _ = t.join();
    }
    // Logs the step never wrote are not pointed at.
    for path in [&mut run.out.logs.stdout, &mut run.out.logs.stderr] {
        if !Path::new(path.as_str()).exists() {
            path.clear();
        }
    }
    run.out.duration_secs = t0.elapsed().as_secs_f64();
    Ok(run.out)
}
