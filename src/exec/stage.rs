//! The prepare and cleanup stages: commands run in order, each supervised by the
//! same loop as the step, with stdout and stderr merged into one log per command.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::child::{self, Ended, Spec, Stop, Supervision};
use super::{Options, join_pump, progress};
use crate::cgroup::RunCgroup;
use crate::logs::{self, Live, LogSpec};
use crate::plan::CommandPlan;
use crate::signals::{self, Signals};

/// Runs commands of the prepare and cleanup stages: output merged into one log per command.
pub struct Stage<'a> {
    pub name: &'static str,
    pub run_dir: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub opts: &'a Options,
    /// Where the stage's commands run (see [`super::arm::stage_cgroup`]).
    pub cgroup: Option<&'a RunCgroup>,
}

pub enum StageEnd {
    Ok,
    Failed {
        at: String,
        message: String,
        ended: Option<Ended>,
    },
    Stopped(Stop),
}

impl Stage<'_> {
    pub fn run(
        &self,
        cmds: &[CommandPlan],
        signals: &Signals,
        cancelled: &mut Option<i32>,
        deadline: Option<Instant>,
        shielded: bool,
    ) -> (StageEnd, u32) {
        let mut ran = 0;
        let total = cmds.iter().filter(|c| !c.skipped).count();
        let spin = !self.opts.quiet && progress::interactive();
        for (i, c) in cmds.iter().enumerate() {
            if c.skipped {
                continue;
            }
            if cancelled.is_some() && !shielded {
                return (
                    StageEnd::Stopped(Stop::Cancelled(cancelled.unwrap_or(libc::SIGINT))),
                    ran,
                );
            }
            ran += 1;
            let log = self.run_dir.join(format!("{}.{i}.log", self.name));
            let label = format!("{} {ran}/{total} `{}`", self.name, c.display());
            if !self.opts.quiet && !spin {
                eprintln!("runner: {label}");
            }
            // One pipe for both stdout and stderr: the command's output, merged, in one log.
            let pipe = child::pipe().and_then(|(r, w)| w.try_clone().map(|w2| (r, w, w2)));
            let (read, write, write2) = match pipe {
                Ok(p) => p,
                Err(e) => {
                    return (
                        StageEnd::Failed {
                            at: c.at.clone(),
                            message: format!("cannot create a pipe: {e}"),
                            ended: None,
                        },
                        ran,
                    );
                }
            };
            let live = if self.opts.quiet || spin {
                Live::None
            } else {
                Live::Stderr
            };
            let pump = match logs::pump(
                read,
                LogSpec {
                    path: log.clone(),
                    limit: self.opts.log_limit,
                    live,
                },
            ) {
                Ok(p) => p,
                Err(e) => {
                    return (
                        StageEnd::Failed {
                            at: c.at.clone(),
                            message: e.to_string(),
                            ended: None,
                        },
                        ran,
                    );
                }
            };
            let mut env = self.env.clone();
            env.extend(c.env.clone());
            let spawned = child::spawn(Spec {
                argv: c.argv(),
                env: &env,
                cwd: &c.cwd,
                stdin: false,
                stdout: write,
                stderr: write2,
                rlimits: None,
                cgroup: self.cgroup,
            });
            let child = match spawned {
                Ok(ch) => ch,
                Err(e) => {
                    let _ = join_pump(pump, Duration::from_secs(2));
                    return (
                        StageEnd::Failed {
                            at: c.at.clone(),
                            message: format!("cannot run `{}`: {e}", c.program()),
                            ended: None,
                        },
                        ran,
                    );
                }
            };
            let cmd_deadline = c
                .timeout_secs
                .map(|t| Instant::now() + Duration::from_secs_f64(t));
            let deadline = [deadline, cmd_deadline].into_iter().flatten().min();
            let spinner = spin.then(|| progress::Spinner::start(label.clone()));
            let waited = child.supervise(
                self.cgroup,
                Supervision {
                    signals,
                    deadline,
                    kill_grace: Duration::from_secs(5),
                    cancelled,
                    shielded,
                },
            );
            let _ = join_pump(pump, Duration::from_secs(5));
            let ok = waited.stopped.is_none() && waited.ended == Ended::Exited(0);
            if let Some(s) = spinner {
                s.finish(ok);
                if !ok {
                    // The output was not shown live: show how it ended.
                    eprintln!("{}", progress::tail(&log, 20));
                }
            }
            if let Some(stop) = waited.stopped {
                return (StageEnd::Stopped(stop), ran);
            }
            match waited.ended {
                Ended::Exited(0) => {}
                ended => {
                    let how = match ended {
                        Ended::Exited(n) => format!("exited {n}"),
                        Ended::Signaled(s) => format!("was killed by {}", signals::name(s)),
                    };
                    return (
                        StageEnd::Failed {
                            at: c.at.clone(),
                            message: format!(
                                "{} command `{}` {how}; see `{}`",
                                self.name,
                                c.program(),
                                log.display()
                            ),
                            ended: Some(ended),
                        },
                        ran,
                    );
                }
            }
        }
        (StageEnd::Ok, ran)
    }
}
