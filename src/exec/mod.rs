//! Executing a [`Plan`]: prepare (cached) → launch → cleanup, under limits, with
//! one supervise loop for every command ([`child`]). Produces the [`Outcome`].
//! `execute` never sees YAML or templates.

mod arm;
mod child;
mod progress;
mod stage;

use arm::{arm, stage_cgroup};
use stage::{Stage, StageEnd};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::cache::Lease;
use crate::cgroup::RunCgroup;
use crate::limits::Rlimits;
use crate::logs::{self, Live, LogSpec, LogStats};
use crate::plan::Plan;
use crate::report::{CacheInfo, Ending, LaunchFailure, Logs, Outcome, StageTiming, Stages, Status};
use crate::signals::{self, Signals};

use child::{Ended, Spec, Stop, Supervision, Waited};

/// File in the run folder where a launch command may report what only its engine
/// knows (a container's OOM kill, a cluster job's TIMEOUT): `{"status": "oom_killed"
/// | "timed_out" | "failed" | "succeeded", "exit_code": N, "message": "…"}`.
pub const ENGINE_OUTCOME: &str = "engine-outcome.json";

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineOutcome {
    status: String,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    message: Option<String>,
}

/// The engine's own report, if the launch command wrote one.
fn engine_outcome(run: &Path, warnings: &mut Vec<String>) -> Option<(Ending, Option<String>)> {
    let path = run.join(ENGINE_OUTCOME);
    let text = std::fs::read(&path).ok()?;
    let parsed: EngineOutcome = match serde_json::from_slice(&text) {
        Ok(p) => p,
        Err(e) => {
            warnings.push(format!("ignored `{}`: {e}", path.display()));
            return None;
        }
    };
    let ending = match parsed.status.as_str() {
        "oom_killed" => Ending::OomKilled { signal: None },
        "timed_out" => Ending::TimedOut { signal: None },
        "succeeded" => Ending::Exited(0),
        "failed" => Ending::Exited(parsed.exit_code.filter(|c| *c != 0).unwrap_or(1)),
        other => {
            warnings.push(format!(
                "ignored `{}`: unknown status `{other}`",
                path.display()
            ));
            return None;
        }
    };
    Some((ending, parsed.message))
}

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
        path: PathBuf,
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

/// Join a log pump, giving up after `wait` if something outside our reach still holds the pipe.
pub(crate) fn join_pump(p: logs::LogPump, wait: Duration) -> Option<LogStats> {
    p.join_timeout(wait).and_then(Result::ok)
}

fn timing(start: Instant, status: &str, exit_code: Option<i32>, commands: u32) -> StageTiming {
    StageTiming {
        duration_secs: start.elapsed().as_secs_f64(),
        exit_code,
        status: status.to_string(),
        commands,
    }
}

/// Create the run folder (fresh under `runs/`, or an empty or new `--run-dir`) and
/// write `plan.json` into it. Call before [`execute`].
pub fn make_run_dir(plan: &Plan) -> Result<(), ExecError> {
    let err = |source| ExecError::RunDir {
        path: plan.dirs.run.clone(),
        source,
    };
    // The folders this call creates above the run folder (a fresh home's `runs/`),
    // deepest first: removed again if the run folder cannot be made.
    let made_above: Vec<&Path> = plan
        .dirs
        .run
        .ancestors()
        .skip(1)
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    let undo_above = || {
        for d in &made_above {
            let _ = std::fs::remove_dir(d);
        }
    };
    if let Some(parent) = plan.dirs.run.parent()
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        undo_above();
        return Err(err(e));
    }
    match std::fs::create_dir(&plan.dirs.run) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let empty = std::fs::read_dir(&plan.dirs.run)
                .map_err(err)?
                .next()
                .is_none();
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
        .and_then(|()| std::fs::write(plan.dirs.run.join("plan.json"), plan_json));
    if let Err(e) = write {
        // Leave nothing half-made behind.
        let _ = std::fs::remove_dir_all(&plan.dirs.run);
        undo_above();
        return Err(err(e));
    }
    Ok(())
}

fn remove_stage_cgroup(cgroup: Option<RunCgroup>, stage: &str, warnings: &mut Vec<String>) {
    if let Some(cg) = cgroup
        && let Err(e) = cg.remove()
    {
        warnings.push(format!("could not remove the {stage} stage's cgroup: {e}"));
    }
}

/// Run the plan in its run folder (made by [`make_run_dir`]).
pub fn execute(
    plan: &Plan,
    secrets: &BTreeMap<String, String>,
    opts: &Options,
) -> Result<Outcome, ExecError> {
    let started_at = crate::report::rfc3339(SystemTime::now());
    let t0 = Instant::now();
    let signals = Signals::install().map_err(ExecError::Signals)?;
    let mut cancelled: Option<i32> = None;
    let run = &plan.dirs.run;
    let mut out = Outcome {
        version: crate::report::VERSION,
        run_id: plan.run_id.clone(),
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
        leftover_processes_killed: 0,
        limits: Vec::new(),
        logs: Logs {
            stdout: run.join("stdout.log").display().to_string(),
            stderr: run.join("stderr.log").display().to_string(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            truncated: false,
        },
        cleanup_error: None,
        warnings: Vec::new(),
    };
    let fail = |out: &mut Outcome, r: Refusal| {
        out.set_ending(r.ending);
        out.message = Some(r.message);
    };

    // Limits first: a limit that cannot be enforced refuses the run before anything runs.
    let armed = match arm(plan, opts) {
        Ok(a) => Some(a),
        Err(r) => {
            fail(&mut out, r);
            None
        }
    };

    // Prepare, cached.
    let mut _lease: Option<Lease> = None;
    if let (true, Some(p)) = (armed.is_some(), &plan.prepare) {
        let start = Instant::now();
        let dir = plan
            .dirs
            .prepare
            .clone()
            .expect("a prepare stage has a cache folder");
        let lease = Lease::acquire(
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
        );
        match lease {
            Err(e) => {
                let ending = match cancelled {
                    Some(s) => Ending::Cancelled { received: s },
                    None => Ending::PrepareFailed,
                };
                fail(&mut out, refuse(ending, e.to_string()));
            }
            Ok(lease) => {
                let hit = lease.is_complete();
                out.cache = Some(CacheInfo {
                    hit,
                    key: p.key.clone(),
                    path: dir.display().to_string(),
                });
                if hit {
                    out.stages.prepare = Some(timing(start, "cached", None, 0));
                } else {
                    let cgroup = stage_cgroup(plan, "prepare");
                    let stage = Stage {
                        name: "prepare",
                        run_dir: run,
                        env: &p.env,
                        opts,
                        cgroup: cgroup.as_ref(),
                    };
                    let deadline = p
                        .timeout_secs
                        .map(|t| Instant::now() + Duration::from_secs_f64(t));
                    let (end, n) = match lease.begin() {
                        Ok(()) => stage.run(&p.commands, &signals, &mut cancelled, deadline, false),
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
                        StageEnd::Ok => match lease.commit(&format!(
                            "{}\n{}\n",
                            plan.flavor,
                            p.key_parts.join("\n")
                        )) {
                            Ok(()) => ("ok", None),
                            Err(e) => {
                                fail(&mut out, refuse(Ending::PrepareFailed, e.to_string()));
                                ("failed", None)
                            }
                        },
                        StageEnd::Failed { message, ended, at } => {
                            fail(
                                &mut out,
                                refuse(Ending::PrepareFailed, format!("{message} (at `{at}`)")),
                            );
                            (
                                "failed",
                                ended.map(|e| match e {
                                    Ended::Exited(n) => n,
                                    Ended::Signaled(s) => 128 + s,
                                }),
                            )
                        }
                        StageEnd::Stopped(Stop::TimedOut) => {
                            fail(&mut out, refuse(Ending::PrepareFailed, "prepare timed out"));
                            ("timed_out", None)
                        }
                        StageEnd::Stopped(Stop::Cancelled(s)) => {
                            fail(
                                &mut out,
                                refuse(
                                    Ending::Cancelled { received: s },
                                    format!("cancelled by {} during prepare", signals::name(s)),
                                ),
                            );
                            ("cancelled", None)
                        }
                    };
                    out.stages.prepare = Some(timing(start, status, code, n));
                    remove_stage_cgroup(cgroup, "prepare", &mut out.warnings);
                }
                lease.share();
                _lease = Some(lease);
            }
        }
    }

    // Launch.
    let mut cgroup_to_remove = None;
    if let Some(armed) = armed {
        out.limits = armed.records;
        out.warnings.extend(armed.warnings);
        if out.status == Status::Succeeded && cancelled.is_none() {
            let start = Instant::now();
            launch(
                plan,
                secrets,
                opts,
                &armed.extra_env,
                &armed.rlimits,
                armed.cgroup.as_ref(),
                &signals,
                &mut cancelled,
                &mut out,
            );
            out.stages.launch = Some(timing(start, out.status.as_str(), Some(out.exit_code), 1));
        } else if out.status == Status::Succeeded {
            let s = cancelled.unwrap_or(libc::SIGINT);
            fail(
                &mut out,
                refuse(
                    Ending::Cancelled { received: s },
                    format!("cancelled by {} before launch", signals::name(s)),
                ),
            );
        }
        cgroup_to_remove = armed.cgroup;
    }
    if let Some(cg) = cgroup_to_remove
        && let Err(e) = cg.remove()
    {
        out.warnings
            .push(format!("could not remove the run's cgroup: {e}"));
    }

    // Cleanup: always.
    if !plan.cleanup.commands.is_empty() {
        let start = Instant::now();
        let mut env = plan.cleanup.env.clone();
        env.insert("RUNNER_STATUS".into(), out.status.as_str().to_string());
        env.insert("RUNNER_EXIT_CODE".into(), out.exit_code.to_string());
        let cgroup = stage_cgroup(plan, "cleanup");
        let stage = Stage {
            name: "cleanup",
            run_dir: run,
            env: &env,
            opts,
            cgroup: cgroup.as_ref(),
        };
        let deadline = plan
            .cleanup
            .timeout_secs
            .map(|t| Instant::now() + Duration::from_secs_f64(t));
        let (end, n) = stage.run(
            &plan.cleanup.commands,
            &signals,
            &mut cancelled,
            deadline,
            true,
        );
        let status = match end {
            StageEnd::Ok => "ok",
            StageEnd::Failed { message, .. } => {
                out.cleanup_error = Some(message);
                "failed"
            }
            StageEnd::Stopped(stop) => {
                out.cleanup_error = Some(match stop {
                    Stop::TimedOut => "cleanup timed out".to_string(),
                    Stop::Cancelled(s) => format!("cleanup stopped by {}", signals::name(s)),
                });
                "stopped"
            }
        };
        out.stages.cleanup = Some(timing(start, status, None, n));
        remove_stage_cgroup(cgroup, "cleanup", &mut out.warnings);
    }
    out.duration_secs = t0.elapsed().as_secs_f64();
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn launch(
    plan: &Plan,
    secrets: &BTreeMap<String, String>,
    opts: &Options,
    extra_env: &BTreeMap<String, String>,
    rlimits: &Rlimits,
    cgroup: Option<&RunCgroup>,
    signals: &Signals,
    cancelled: &mut Option<i32>,
    out: &mut Outcome,
) {
    let run = &plan.dirs.run;
    let c = &plan.launch.command;
    let pipes = child::pipe().and_then(|o| child::pipe().map(|e| (o, e)));
    let ((out_r, out_w), (err_r, err_w)) = match pipes {
        Ok(p) => p,
        Err(e) => {
            out.set_ending(Ending::LaunchError(LaunchFailure::Other));
            out.message = Some(format!("cannot create pipes: {e}"));
            return;
        }
    };
    let live_out = match (opts.quiet, opts.json) {
        (true, _) => Live::None,
        (false, true) => Live::Stderr,
        (false, false) => Live::Stdout,
    };
    let live_err = if opts.quiet { Live::None } else { Live::Stderr };
    let pumps = logs::pump(
        out_r,
        LogSpec {
            path: run.join("stdout.log"),
            limit: opts.log_limit,
            live: live_out,
        },
    )
    .and_then(|o| {
        logs::pump(
            err_r,
            LogSpec {
                path: run.join("stderr.log"),
                limit: opts.log_limit,
                live: live_err,
            },
        )
        .map(|e| (o, e))
    });
    let (pump_out, pump_err) = match pumps {
        Ok(p) => p,
        Err(e) => {
            out.set_ending(Ending::LaunchError(LaunchFailure::Other));
            out.message = Some(e.to_string());
            return;
        }
    };
    let mut env = plan.launch.env.clone();
    env.extend(c.env.clone());
    env.extend(secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(extra_env.clone());
    let spawned = child::spawn(Spec {
        argv: c.argv(),
        env: &env,
        cwd: &c.cwd,
        stdin: opts.stdin,
        stdout: out_w,
        stderr: err_w,
        rlimits: Some(rlimits),
        cgroup,
    });
    let waited: Option<Waited> = match spawned {
        Ok(ch) => {
            let timeout = [plan.launch.timeout_secs, c.timeout_secs]
                .into_iter()
                .flatten()
                .reduce(f64::min);
            let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t));
            Some(ch.supervise(
                cgroup,
                Supervision {
                    signals,
                    deadline,
                    kill_grace: Duration::from_secs_f64(plan.launch.kill_grace_secs),
                    cancelled,
                    shielded: false,
                },
            ))
        }
        Err(e) => {
            let (why, what) = match e.raw_os_error() {
                Some(libc::ENOENT) => (LaunchFailure::NotFound, "not found"),
                Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EISDIR) => {
                    (LaunchFailure::NotExecutable, "not executable")
                }
                _ => (LaunchFailure::Other, "could not start"),
            };
            out.set_ending(Ending::LaunchError(why));
            out.message = Some(format!("`{}` {what}: {e}", c.program()));
            None
        }
    };
    let so = join_pump(pump_out, Duration::from_secs(10));
    let se = join_pump(pump_err, Duration::from_secs(10));
    for (stats, bytes, name) in [
        (&so, &mut out.logs.stdout_bytes, "stdout"),
        (&se, &mut out.logs.stderr_bytes, "stderr"),
    ] {
        match stats {
            Some(s) => {
                *bytes = s.bytes;
                out.logs.truncated |= s.truncated;
            }
            None => out.warnings.push(format!(
                "the {name} log may be incomplete: a process outside the run still held the pipe"
            )),
        }
    }
    let Some(w) = waited else { return };
    out.leftover_processes_killed = w.leftovers_killed as u64;
    let stats = cgroup.map(|cg| cg.stats());
    match &stats {
        Some(s) => {
            out.oom_kills = s.oom_kills;
            out.peak_memory_bytes = s.peak_memory;
            out.cpu_user_secs = s.cpu_user_ns.map(|n| n as f64 / 1e9);
            out.cpu_system_secs = s.cpu_system_ns.map(|n| n as f64 / 1e9);
        }
        None => {
            out.peak_memory_bytes = Some(w.rusage.ru_maxrss as u64 * 1024);
            out.cpu_user_secs = Some(child::rusage_secs(w.rusage.ru_utime));
            out.cpu_system_secs = Some(child::rusage_secs(w.rusage.ru_stime));
        }
    }
    if out.cpu_user_secs.is_none() {
        out.cpu_user_secs = Some(child::rusage_secs(w.rusage.ru_utime));
        out.cpu_system_secs = Some(child::rusage_secs(w.rusage.ru_stime));
    }
    let killer = match w.ended {
        Ended::Signaled(s) => Some(s),
        Ended::Exited(_) => None,
    };
    let (ending, message) = match (w.stopped, w.ended) {
        (Some(Stop::TimedOut), _) => (
            Ending::TimedOut { signal: killer },
            Some(format!(
                "timed out after {}s",
                plan.launch.timeout_secs.or(c.timeout_secs).unwrap_or(0.0)
            )),
        ),
        (Some(Stop::Cancelled(s)), _) => (
            Ending::Cancelled { received: s },
            Some(format!("cancelled by {}", signals::name(s))),
        ),
        // The kernel's counter, not the exit code, says whether memory ran out.
        (None, ended) if out.oom_kills > 0 && ended != Ended::Exited(0) => {
            let limit = plan
                .launch
                .limits
                .memory_bytes
                .map(|b| format!(" of {}", crate::units::Bytes(b)))
                .unwrap_or_default();
            (
                Ending::OomKilled { signal: killer },
                Some(format!("OOM-killed at the memory limit{limit}")),
            )
        }
        (None, Ended::Exited(n)) => (Ending::Exited(n), None),
        (None, Ended::Signaled(s)) => (
            Ending::Signaled(s),
            Some(format!("killed by {}", signals::name(s))),
        ),
    };
    // What the engine reported wins over what its client process exited with,
    // unless the runner itself stopped the step.
    let (ending, message) = match (w.stopped, engine_outcome(run, &mut out.warnings)) {
        (None, Some((e, m))) => (e, m.or(message)),
        _ => (ending, message),
    };
    if out.oom_kills > 0 && ending == Ending::Exited(0) {
        out.warnings.push(format!(
            "{} process(es) of the step were OOM-killed, but the step succeeded",
            out.oom_kills
        ));
    }
    out.set_ending(ending);
    out.message = message;
}
