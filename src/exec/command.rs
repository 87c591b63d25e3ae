//! One command under supervision, start to end — the primitive every stage uses:
//! pipes and log pumps for its output, spawn, the supervise loop, then the pumps
//! joined. The step (launch) keeps stdout and stderr apart; prepare and cleanup
//! commands merge them into one log each.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::time::Duration;

use super::child::{self, SpawnError, Spec, Waited};
use super::supervise::Policy;
use crate::cgroup::RunCgroup;
use crate::contain::Contain;
use crate::limits::Rlimits;
use crate::logs::{self, LogError, LogSpec, LogStats};
use crate::profile::Sampler;
use crate::signals::Signals;

/// Where a command's output goes.
pub enum Output {
    /// stdout and stderr each to their own log.
    Split { stdout: LogSpec, stderr: LogSpec },
    /// Both into one log, in the order written.
    Merged(LogSpec),
}

/// Everything about one command, decided before it starts.
pub struct Job<'a> {
    pub argv: Vec<String>,
    /// Variables set on top of the runner's own environment.
    pub env: &'a BTreeMap<String, String>,
    /// Variables of the runner's environment it does not get.
    pub withhold: &'a [String],
    pub cwd: &'a Path,
    /// Give it the runner's stdin (else /dev/null).
    pub stdin: bool,
    pub output: Output,
    pub rlimits: Option<&'a Rlimits>,
    pub cgroup: Option<&'a RunCgroup>,
    pub contain: &'a Contain,
    pub policy: Policy,
    /// Sample the cgroup's use into this profile while the command runs.
    pub sampler: Option<&'a mut Sampler>,
    /// How long to wait for the logs once the command ended: a process outside the
    /// run's reach (a daemon it started without a cgroup) may hold the pipe.
    pub log_wait: Duration,
}

/// Why a command did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create pipes")]
    Pipe(#[source] io::Error),
    #[error(transparent)]
    Log(#[from] LogError),
    /// `exec` failed (not found, not executable), or a step before it did.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// How a command that started ended, with what its log pumps copied (in the order of
/// [`Output`]'s logs; `None` where a pump did not finish in time).
pub struct Finished {
    pub waited: Waited,
    pub logs: Vec<Option<LogStats>>,
}

/// Run `job` to its end under supervision. `cancelled` is the run's first cancel.
pub fn run(
    job: Job<'_>,
    signals: &Signals,
    cancelled: &mut Option<i32>,
) -> Result<Finished, StartError> {
    let (specs, stdout, stderr) = match job.output {
        Output::Split { stdout, stderr } => {
            let (out_r, out_w) = child::pipe().map_err(StartError::Pipe)?;
            let (err_r, err_w) = child::pipe().map_err(StartError::Pipe)?;
            (vec![(out_r, stdout), (err_r, stderr)], out_w, err_w)
        }
        Output::Merged(spec) => {
            let (r, w) = child::pipe().map_err(StartError::Pipe)?;
            let w2 = w.try_clone().map_err(StartError::Pipe)?;
            (vec![(r, spec)], w, w2)
        }
    };
    let mut pumps = Vec::with_capacity(specs.len());
    for (read, spec) in specs {
        pumps.push(logs::pump(read, spec)?);
    }
    let spawned = child::spawn(Spec {
        argv: job.argv,
        env: job.env,
        withhold: job.withhold,
        cwd: job.cwd,
        stdin: job.stdin,
        stdout,
        stderr,
        rlimits: job.rlimits,
        cgroup: job.cgroup,
        contain: job.contain,
    });
    let waited = match spawned {
        Ok(ch) => ch.supervise(job.cgroup, job.policy, job.sampler, signals, cancelled),
        Err(e) => {
            for p in pumps {
                let _ = p.join_timeout(job.log_wait);
            }
            return Err(StartError::Spawn(e));
        }
    };
    let logs = pumps
        .into_iter()
        .map(|p| p.join_timeout(job.log_wait).and_then(Result::ok))
        .collect();
    Ok(Finished { waited, logs })
}
