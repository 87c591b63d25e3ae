//! The launch stage: the step itself, through [`command::run`] with its stdout and
//! stderr kept apart, then how it ended — from the supervisor (timeout, cancel), the
//! kernel's OOM counter, the engine's own report, or its exit status.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::Run;
use super::arm::Armed;
use super::child::{self, Ended, Step};
use super::command::{self, Job, Output, StartError};
use super::supervise::{Policy, Stop};
use crate::logs::{Live, LogSpec};
use crate::report::{Ending, LaunchFailure};
use crate::signals;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineOutcome {
    status: String,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    message: Option<String>,
}

/// The engine's own report (`$RUNNER_ENGINE_OUTCOME`), if the launch command wrote one:
/// what only the engine knows, a container's OOM kill or a cluster job's TIMEOUT.
fn engine_outcome(path: &Path, warnings: &mut Vec<String>) -> Option<(Ending, Option<String>)> {
    let text = std::fs::read(path).ok()?;
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

/// Run the step and record how it ended in `run.out`.
pub(super) fn launch(run: &mut Run<'_>, secrets: &BTreeMap<String, String>, armed: &Armed) {
    let plan = run.plan;
    let opts = run.opts;
    let c = &plan.launch.command;
    let cgroup = armed.cgroup.as_ref();
    let live_out = match (opts.quiet, opts.json) {
        (true, _) => Live::None,
        (false, true) => Live::Stderr,
        (false, false) => Live::Stdout,
    };
    let live_err = if opts.quiet { Live::None } else { Live::Stderr };
    let mut env = plan.launch.env.clone();
    env.extend(c.env.clone());
    env.extend(secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(armed.extra_env.clone());
    let deadline = plan.launch.deadline();
    let job = Job {
        argv: c.argv(),
        env: &env,
        withhold: &[],
        cwd: &c.cwd,
        stdin: opts.stdin,
        output: Output::Split {
            stdout: LogSpec {
                path: run.dir.stdout(),
                limit: opts.log_limit,
                live: live_out,
            },
            stderr: LogSpec {
                path: run.dir.stderr(),
                limit: opts.log_limit,
                live: live_err,
            },
        },
        rlimits: Some(&armed.rlimits),
        cgroup,
        contain: &armed.contain,
        policy: Policy {
            deadline: deadline.map(|t| std::time::Instant::now() + t),
            kill_grace: plan.launch.kill_grace,
            shielded: false,
        },
        log_wait: Duration::from_secs(10),
    };
    let out = &mut run.out;
    let finished = match command::run(job, &run.signals, &mut run.cancelled) {
        Ok(f) => f,
        Err(StartError::Spawn(e)) if e.step == Step::Exec => {
            let (why, what) = match e.errno() {
                Some(libc::ENOENT) => (LaunchFailure::NotFound, "not found"),
                Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EISDIR) => {
                    (LaunchFailure::NotExecutable, "not executable")
                }
                _ => (LaunchFailure::Other, "could not start"),
            };
            out.set_ending(Ending::LaunchError(why));
            out.message = Some(format!("`{}` {what}: {}", c.program(), e.source));
            return;
        }
        Err(e) => {
            out.set_ending(Ending::LaunchError(LaunchFailure::Other));
            out.message = Some(crate::diag::error_chain(&e));
            return;
        }
    };
    for (stats, bytes, name) in [
        (&finished.logs[0], &mut out.logs.stdout_bytes, "stdout"),
        (&finished.logs[1], &mut out.logs.stderr_bytes, "stderr"),
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
    let w = finished.waited;
    out.leftover_processes_killed = w.leftovers_killed as u64;
    match cgroup.map(|cg| cg.stats()) {
        Some(s) => {
            out.oom_kills = s.oom_kills;
            out.peak_memory_bytes = s.peak_memory;
            out.cpu_user_secs = s.cpu_user_ns.map(|n| n as f64 / 1e9);
            out.cpu_system_secs = s.cpu_system_ns.map(|n| n as f64 / 1e9);
        }
        None => out.peak_memory_bytes = Some(w.rusage.ru_maxrss as u64 * 1024),
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
                deadline.unwrap_or_default().as_secs_f64()
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
    let (ending, message) = match (
        w.stopped,
        engine_outcome(&run.dir.engine_outcome(), &mut out.warnings),
    ) {
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
