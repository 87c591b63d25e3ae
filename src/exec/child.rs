//! A started command, and the one loop that waits for it.
//!
//! The child ([`super::spawn`]) has its own session (so its whole process group can be
//! signalled), `PR_SET_PDEATHSIG` (it dies if the runner dies), is in its cgroup and
//! under its rlimits and containment before it execs — so no instruction of the step
//! runs outside its limits. The loop `poll`s the child's pidfd and the
//! signal pipe, and does what [`Supervisor`] decides: SIGTERM to the whole tree,
//! then SIGKILL to the whole tree (the cgroup, where there is one, also catches
//! processes that left the session with `setsid`).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

pub use super::spawn::{SpawnError, Spec, Step};
use super::supervise::{Action, Policy, Stop, Supervisor};
use crate::cgroup::RunCgroup;
use crate::profile::Sampler;
use crate::signals::Signals;

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

impl Ended {
    /// The shell's convention: the exit code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            Ended::Exited(n) => n,
            Ended::Signaled(s) => 128 + s,
        }
    }
}

#[derive(Debug)]
pub struct Waited {
    pub ended: Ended,
    pub stopped: Option<Stop>,
    pub rusage: libc::rusage,
    /// Processes still alive after the command ended, killed by the runner.
    pub leftovers_killed: usize,
}

/// A pipe whose read end the runner keeps and whose write end the child gets.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

pub struct Child {
    pub pid: i32,
    pidfd: OwnedFd,
    cgroup_present: bool,
}

/// Start the command of `spec` (see [`super::spawn`]).
pub fn spawn(spec: Spec<'_>) -> Result<Child, SpawnError> {
    let cgroup_present = spec.cgroup.is_some();
    let s = super::spawn::spawn(spec)?;
    Ok(Child {
        pid: s.pid,
        pidfd: s.pidfd,
        cgroup_present,
    })
}

/// Reap our child with its resource usage (nix's `waitpid` does not return it).
fn wait4(pid: i32) -> (i32, libc::rusage) {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value of the plain C struct.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 on our own child, with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return (status, rusage);
        }
    }
}

/// Signal everything the command started: its process group, and its cgroup.
fn signal_tree(pid: i32, cgroup: Option<&RunCgroup>, sig: Signal) {
    if let Some(cg) = cgroup {
        cg.signal_all(sig);
    }
    let _ = killpg(Pid::from_raw(pid), sig);
}

fn kill_tree(pid: i32, cgroup: Option<&RunCgroup>) -> usize {
    let group = killpg(Pid::from_raw(pid), Signal::SIGKILL).is_ok();
    match cgroup {
        Some(cg) => cg.kill_all().unwrap_or(0),
        None => usize::from(group),
    }
}

impl Child {
    /// The one supervise loop: wait for the exit, a deadline or a signal, and do what
    /// the [`Supervisor`] decides. `cancelled` is the run's first cancel.
    pub fn supervise(
        self,
        cgroup: Option<&RunCgroup>,
        policy: Policy,
        mut sampler: Option<&mut Sampler>,
        signals: &Signals,
        cancelled: &mut Option<i32>,
    ) -> Waited {
        // Sampling needs a cgroup to read.
        if cgroup.is_none() {
            sampler = None;
        }
        let mut sup = Supervisor::new(policy);
        let act = |action: Option<Action>| match action {
            Some(Action::Terminate) => signal_tree(self.pid, cgroup, Signal::SIGTERM),
            Some(Action::Kill) => {
                kill_tree(self.pid, cgroup);
            }
            None => {}
        };
        loop {
            let now = Instant::now();
            act(sup.tick(now));
            if let (Some(s), Some(cg)) = (sampler.as_deref_mut(), cgroup)
                && now >= s.due()
            {
                let (memory, cpu) = cg.usage_now();
                s.sample(now, memory, cpu);
            }
            let wake = [sup.wake_at(), sampler.as_deref().map(Sampler::due)]
                .into_iter()
                .flatten()
                .min();
            let timeout = match wake {
                Some(t) => {
                    let ms = t
                        .saturating_duration_since(Instant::now())
                        .as_millis()
                        .saturating_add(1);
                    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32)
                        .unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            let mut fds = [
                PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.fd(), PollFlags::POLLIN),
            ];
            // EINTR (a signal arrived) is what the signal pipe is for. Any other error
            // cannot happen with two valid descriptors; should it, the loop cannot wait
            // any more: kill the tree and fall back to a blocking wait.
            if let Err(e) = poll(&mut fds, timeout)
                && e != nix::errno::Errno::EINTR
            {
                kill_tree(self.pid, cgroup);
                break;
            }
            let exited = fds[0].revents().is_some_and(|r| !r.is_empty());
            for sig in signals.drain() {
                act(sup.signal(sig, cancelled, Instant::now()));
            }
            if exited {
                break;
            }
        }
        let (status, rusage) = wait4(self.pid);
        let ended = if libc::WIFSIGNALED(status) {
            Ended::Signaled(libc::WTERMSIG(status))
        } else {
            Ended::Exited(libc::WEXITSTATUS(status))
        };
        // Whatever the command left running dies with it.
        let leftovers_killed = match (self.cgroup_present, cgroup) {
            (true, Some(cg)) if cg.populated() => cg.kill_all().unwrap_or(0),
            (true, _) => 0,
            _ => usize::from(killpg(Pid::from_raw(self.pid), Signal::SIGKILL).is_ok()),
        };
        Waited {
            ended,
            stopped: sup.stopped(),
            rusage,
            leftovers_killed,
        }
    }
}

pub fn rusage_secs(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}
