//! The prepare and cleanup stages: their commands run in order, each through
//! [`command::run`], with stdout and stderr merged into one log per command.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::child::Ended;
use super::command::{self, Job, Output};
use super::supervise::{Policy, Stop};
use super::{Options, progress};
use crate::cgroup::RunCgroup;
use crate::contain::Contain;
use crate::home::RunDir;
use crate::logs::{Live, LogSpec};
use crate::manifest::StageName;
use crate::plan::CommandPlan;
use crate::signals::{self, Signals};

/// Grace between SIGTERM and SIGKILL for prepare and cleanup commands.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Runs the commands of the prepare or cleanup stage.
pub struct Stage<'a> {
    pub name: StageName,
    pub run_dir: &'a RunDir,
    pub env: &'a BTreeMap<String, String>,
    /// The step's secrets: in the runner's environment, not for this stage.
    pub withhold: &'a [String],
    pub opts: &'a Options,
    /// Where the stage's commands run (see [`super::arm::stage`]).
    pub cgroup: Option<&'a RunCgroup>,
    pub contain: &'a Contain,
    pub deadline: Option<Instant>,
    /// Cleanup: it runs after a cancel; only a further signal stops it.
    pub shielded: bool,
}

pub enum StageEnd {
    Ok,
    Failed {
        /// The failing command's place in the manifest.
        at: String,
        message: String,
        ended: Option<Ended>,
    },
    Stopped(Stop),
}

impl Stage<'_> {
    /// Run `cmds` in order until one fails; returns how it ended and how many ran.
    pub fn run(
        &self,
        cmds: &[CommandPlan],
        signals: &Signals,
        cancelled: &mut Option<i32>,
    ) -> (StageEnd, u32) {
        let name = self.name.as_str();
        let mut ran = 0;
        // Commands are numbered by their place in the manifest, 1-based, alike in the
        // progress lines, their log's name (`prepare.2.log`) and a failure's message.
        let total = cmds.len();
        let spin = !self.opts.quiet && progress::interactive();
        for (i, c) in cmds.iter().enumerate() {
            let number = i + 1;
            if c.skipped {
                if !self.opts.quiet {
                    eprintln!("runner: {name} {number}/{total} skipped (its `when` is false)");
                }
                continue;
            }
            if let Some(s) = *cancelled
                && !self.shielded
            {
                return (StageEnd::Stopped(Stop::Cancelled(s)), ran);
            }
            ran += 1;
            let log = self.run_dir.stage_log(name, number);
            let label = format!("{name} {number}/{total} `{}`", c.display());
            if !self.opts.quiet && !spin {
                eprintln!("runner: {label}");
            }
            let live = if self.opts.quiet || spin {
                Live::None
            } else {
                Live::Stderr
            };
            let mut env = self.env.clone();
            env.extend(c.env.clone());
            let cmd_deadline = c.timeout.map(|t| Instant::now() + t);
            let spinner = spin.then(|| progress::Spinner::start(label.clone()));
            let job = Job {
                argv: c.argv(),
                env: &env,
                withhold: self.withhold,
                cwd: &c.cwd,
                stdin: false,
                output: Output::Merged(LogSpec {
                    path: log.clone(),
                    limit: self.opts.log_limit,
                    live,
                }),
                rlimits: None,
                cgroup: self.cgroup,
                contain: self.contain,
                policy: Policy {
                    deadline: [self.deadline, cmd_deadline].into_iter().flatten().min(),
                    kill_grace: KILL_GRACE,
                    shielded: self.shielded,
                },
                sampler: None,
                log_wait: Duration::from_secs(5),
            };
            let result = command::run(job, signals, cancelled);
            let ok = matches!(&result, Ok(f) if f.waited.stopped.is_none() && f.waited.ended == Ended::Exited(0));
            if let Some(s) = spinner {
                s.finish(ok);
                if !ok {
                    // The output was not shown live: show how it ended.
                    eprintln!("{}", progress::tail(&log, 20));
                }
            }
            let finished = match result {
                Ok(f) => f,
                Err(e) => {
                    let message = crate::diag::error_chain(&e);
                    let end = StageEnd::Failed {
                        at: c.at.clone(),
                        message,
                        ended: None,
                    };
                    return (end, ran);
                }
            };
            if let Some(stop) = finished.waited.stopped {
                return (StageEnd::Stopped(stop), ran);
            }
            let ended = finished.waited.ended;
            if ended != Ended::Exited(0) {
                let how = match ended {
                    Ended::Exited(n) => format!("exited {n}"),
                    Ended::Signaled(s) => format!("was killed by {}", signals::name(s)),
                };
                let message = format!(
                    "{name} command {number} `{}` {how}; see `{}`",
                    c.program(),
                    log.display()
                );
                let end = StageEnd::Failed {
                    at: c.at.clone(),
                    message,
                    ended: Some(ended),
                };
                return (end, ran);
            }
        }
        (StageEnd::Ok, ran)
    }
}
