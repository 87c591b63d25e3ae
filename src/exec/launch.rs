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
use crate::limits::{Enforcement, LimitKind};
use crate::logs::{Live, LogSpec};
use crate::plan::MeasuredBy;
use crate::profile::{Profile, Sampler};
use crate::report::{Ending, LaunchFailure, LimitRecord, Usage};
use crate::signals;

/// What a launch command whose engine knows more than its client writes to
/// `$RUNNER_ENGINE_OUTCOME` (every field optional): how the step ended, what it used,
/// and the limits the engine applied to it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineOutcome {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    peak_memory_bytes: Option<u64>,
    #[serde(default)]
    cpu_user_secs: Option<f64>,
    #[serde(default)]
    cpu_system_secs: Option<f64>,
    #[serde(default)]
    oom_kills: Option<u64>,
    #[serde(default)]
    limits: Vec<EngineLimit>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineLimit {
    name: LimitKind,
    value: serde_json::Value,
    /// The step could not undo it (no privilege over its container's cgroup).
    #[serde(default)]
    contained: bool,
    /// The engine only schedules it: nothing holds the step to it.
    #[serde(default)]
    scheduled_only: bool,
}

impl EngineOutcome {
    /// The engine's own report, if the launch command wrote one; what is wrong in it
    /// is a warning and left out, never taken.
    fn read(path: &Path, warnings: &mut Vec<String>) -> Option<EngineOutcome> {
        let text = match crate::util::read_run_file(path, 1 << 20) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warnings.push(format!(
                    "ignored the engine's report `{}`: {e}",
                    path.display()
                ));
                return None;
            }
        };
        let mut parsed: EngineOutcome = match serde_json::from_slice(&text) {
            Ok(p) => p,
            Err(e) => {
                warnings.push(format!("ignored `{}`: {e}", path.display()));
                return None;
            }
        };
        let finite = |x: &mut Option<f64>, name: &str, warnings: &mut Vec<String>| {
            if x.is_some_and(|v| !v.is_finite() || v < 0.0) {
                warnings.push(format!("ignored the engine's `{name}`: not a time"));
                *x = None;
            }
        };
        finite(&mut parsed.cpu_user_secs, "cpu_user_secs", warnings);
        finite(&mut parsed.cpu_system_secs, "cpu_system_secs", warnings);
        parsed.limits.retain(|l| {
            let ok = match (&l.value, l.name) {
                (serde_json::Value::Array(ids), LimitKind::Gpus) => {
                    ids.iter().all(|i| i.is_string() || i.is_u64())
                }
                (serde_json::Value::Number(n), _) => n.as_f64().is_some_and(|v| v >= 0.0),
                _ => false,
            };
            if !ok {
                warnings.push(format!(
                    "ignored the engine's `{}` limit: its value is not a size or count",
                    l.name.as_str()
                ));
            }
            ok
        });
        Some(parsed)
    }

    /// How the step ended, by the engine's word: what only it knows, a container's OOM
    /// kill or a cluster job's TIMEOUT.
    fn ending(&self, path: &Path, warnings: &mut Vec<String>) -> Option<(Ending, Option<String>)> {
        let ending = match self.status.as_deref()? {
            "oom_killed" => Ending::OomKilled { signal: None },
            "timed_out" => Ending::TimedOut { signal: None },
            "succeeded" => Ending::Exited(0),
            "failed" => Ending::Exited(self.exit_code.filter(|c| *c != 0).unwrap_or(1)),
            other => {
                warnings.push(format!(
                    "ignored `{}`: unknown status `{other}`",
                    path.display()
                ));
                return None;
            }
        };
        Some((ending, self.message.clone()))
    }

    fn measured(&self) -> bool {
        self.peak_memory_bytes.is_some()
            || self.cpu_user_secs.is_some()
            || self.cpu_system_secs.is_some()
            || self.oom_kills.is_some()
            || !self.limits.is_empty()
    }
}

/// The kernel's peak, or where it keeps none (cgroup v2 before Linux 5.19) the highest
/// sample of the profile, with the warning that says it is one.
fn peak_or_sampled(
    kernel: Option<u64>,
    profile: Option<&Profile>,
) -> (Option<u64>, Option<String>) {
    match (
        kernel,
        profile.and_then(|p| p.peak().map(|m| (m, p.interval_secs))),
    ) {
        (Some(k), _) => (Some(k), None),
        (None, Some((sampled, every))) => (
            Some(sampled),
            Some(format!(
                "peak memory is sampled (this kernel keeps no `memory.peak`): the highest use \
                 seen in samples every {every}s or less, a lower bound"
            )),
        ),
        (None, None) => (None, None),
    }
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
    // The step's profile, sampled from its cgroup; a client's use is not the step's.
    let mut sampler = (cgroup.is_some() && plan.launch.measured_by == MeasuredBy::Runner)
        .then(|| Sampler::new(std::time::Instant::now()));
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
        sampler: sampler.as_mut(),
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
    // What the runner measured: the launch command's tree, in its cgroup.
    let mut here = Usage::default();
    let mut oom_kills_here = 0;
    let profile = sampler
        .map(Sampler::finish)
        .filter(|p| !p.memory_bytes.is_empty());
    match cgroup.map(|cg| cg.stats()) {
        Some(s) => {
            oom_kills_here = s.oom_kills;
            let (peak, said) = peak_or_sampled(s.peak_memory, profile.as_ref());
            here.peak_memory_bytes = peak;
            out.warnings.extend(said);
            here.cpu_user_secs = s.cpu_user_ns.map(|n| n as f64 / 1e9);
            here.cpu_system_secs = s.cpu_system_ns.map(|n| n as f64 / 1e9);
        }
        None => here.peak_memory_bytes = Some(w.rusage.ru_maxrss as u64 * 1024),
    }
    if here.cpu_user_secs.is_none() {
        here.cpu_user_secs = Some(child::rusage_secs(w.rusage.ru_utime));
        here.cpu_system_secs = Some(child::rusage_secs(w.rusage.ru_stime));
    }
    let engine_path = run.dir.engine_outcome();
    let engine = EngineOutcome::read(&engine_path, &mut out.warnings);
    match (plan.launch.measured_by, &engine) {
        (MeasuredBy::Runner, e) => {
            if e.as_ref().is_some_and(EngineOutcome::measured) {
                out.warnings.push(
                    "ignored what the engine measured: the flavor's launch is measured by the \
                     runner (`measured_by: engine` takes it)"
                        .into(),
                );
            }
            out.oom_kills = oom_kills_here;
            out.peak_memory_bytes = here.peak_memory_bytes;
            out.cpu_user_secs = here.cpu_user_secs;
            out.cpu_system_secs = here.cpu_system_secs;
            out.profile = profile;
        }
        // The step ran elsewhere: its numbers are the engine's or unknown, and what the
        // runner measured is its client's.
        (MeasuredBy::Engine, e) => {
            let e = e.as_ref();
            out.peak_memory_bytes = e.and_then(|e| e.peak_memory_bytes);
            out.cpu_user_secs = e.and_then(|e| e.cpu_user_secs);
            out.cpu_system_secs = e.and_then(|e| e.cpu_system_secs);
            // An engine that says the step was OOM-killed saw at least one kill.
            let said_oom = e.is_some_and(|e| e.status.as_deref() == Some("oom_killed"));
            out.oom_kills = e
                .and_then(|e| e.oom_kills)
                .unwrap_or(u64::from(said_oom))
                .max(u64::from(said_oom));
            for l in e.map(|e| e.limits.as_slice()).unwrap_or_default() {
                out.limits.push(LimitRecord {
                    name: l.name,
                    value: l.value.clone(),
                    enforced_by: if l.scheduled_only {
                        Enforcement::Scheduler
                    } else {
                        Enforcement::Engine
                    },
                    contained: l.contained && !l.scheduled_only,
                });
            }
            out.client = Some(here);
        }
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
        (None, ended) if oom_kills_here > 0 && ended != Ended::Exited(0) => {
            // As the result lists it: as the cgroup held it.
            let limit = crate::report::limit_value(out, LimitKind::Memory)
                .and_then(serde_json::Value::as_u64)
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
    let engine_ending = engine
        .as_ref()
        .and_then(|e| e.ending(&engine_path, &mut out.warnings));
    let (ending, message) = match (w.stopped, engine_ending) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_kernel_peak_the_sampled_one_is_taken_and_said() {
        let p = Profile {
            interval_secs: 0.2,
            memory_bytes: vec![5, 90, 40],
            cpu_secs: vec![0.0, 0.1, 0.2],
        };
        assert_eq!(peak_or_sampled(Some(100), Some(&p)), (Some(100), None));
        let (peak, said) = peak_or_sampled(None, Some(&p));
        assert_eq!(peak, Some(90));
        let said = said.expect("a warning");
        assert!(said.contains("sampled") && said.contains("0.2s"), "{said}");
        assert_eq!(peak_or_sampled(None, None), (None, None));
    }
}
