//! Spawning one command and the single supervise loop that waits for it.
//!
//! The child gets its own session (so its whole process group can be signalled),
//! `PR_SET_PDEATHSIG` (it dies if the runner dies), joins the run's cgroup and
//! takes its rlimits in `pre_exec` — before it execs, so no instruction of the
//! step runs outside its limits. The loop `poll`s the child's pidfd and the
//! signal pipe: a deadline or a signal sends SIGTERM to the whole tree, waits
//! `kill_grace`, then SIGKILLs the whole tree (the cgroup, where there is one,
//! also catches processes that left the session with `setsid`).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::cgroup::{self, RunCgroup};
use crate::limits::Rlimits;
use crate::signals::Signals;

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Its own deadline passed.
    TimedOut,
    /// The runner received this signal.
    Cancelled(i32),
}

#[derive(Debug)]
pub struct Waited {
    pub ended: Ended,
    pub stopped: Option<Stop>,
    pub rusage: libc::rusage,
    /// Processes still alive after the command ended, killed by the runner.
    pub leftovers_killed: usize,
}

pub struct Spec<'a> {
    pub argv: Vec<String>,
    pub env: &'a BTreeMap<String, String>,
    pub cwd: &'a std::path::Path,
    pub stdin: bool,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub rlimits: Option<&'a Rlimits>,
    pub cgroup: Option<&'a RunCgroup>,
}

/// A pipe whose read end the runner keeps and whose write end the child gets.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds owned by us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub struct Child {
    pub pid: i32,
    pidfd: OwnedFd,
    cgroup_present: bool,
}

pub fn spawn(spec: Spec<'_>) -> io::Result<Child> {
    let (prog, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::other("empty command"))?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .envs(spec.env)
        .current_dir(spec.cwd)
        .stdin(if spec.stdin {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::from(spec.stdout))
        .stderr(Stdio::from(spec.stderr));
    let fds: Vec<RawFd> = spec.cgroup.map(|c| c.procs_fds()).unwrap_or_default();
    let rlimits = spec.rlimits.cloned();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls: setsid, prctl, getppid, write (join_in_child),
    // setrlimit. It does not allocate: `fds` and `rlimits` were built before fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            if libc::getppid() != parent {
                // The runner died before PDEATHSIG was armed.
                libc::_exit(137);
            }
            cgroup::join_in_child(&fds).map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            if let Some(r) = &rlimits {
                r.apply_in_child()
                    .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(cmd); // closes the parent's copies of the write ends
    let pid = child.id() as i32;
    // SAFETY: pidfd_open on our own child, which is not reaped yet.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if raw < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return Err(e);
    }
    // SAFETY: a fresh fd owned by us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok(Child {
        pid,
        pidfd,
        cgroup_present: spec.cgroup.is_some(),
    })
}

/// Signal everything the command started: its process group, and its cgroup.
fn signal_tree(pid: i32, cgroup: Option<&RunCgroup>, sig: Signal) {
    if let Some(cg) = cgroup {
        cg.signal_all(sig);
    }
    // SAFETY: kill(2) on our child's process group.
    unsafe {
        libc::kill(-pid, sig as i32);
    }
}

fn kill_tree(pid: i32, cgroup: Option<&RunCgroup>) -> usize {
    // SAFETY: kill(2) on our child's process group.
    let group = unsafe { libc::kill(-pid, libc::SIGKILL) } == 0;
    match cgroup {
        Some(cg) => cg.kill_all().unwrap_or(0),
        None => usize::from(group),
    }
}

/// What the supervise loop should do about signals to the runner.
pub struct Supervision<'a> {
    pub signals: &'a Signals,
    pub deadline: Option<Instant>,
    pub kill_grace: Duration,
    /// A cancel that arrived before this command started (cleanup runs anyway).
    pub cancelled: &'a mut Option<i32>,
    /// Ignore cancels (cleanup): only a second signal kills.
    pub shielded: bool,
}

impl Child {
    /// The one supervise loop: wait for exit, a deadline or a signal.
    pub fn supervise(self, cgroup: Option<&RunCgroup>, sup: Supervision<'_>) -> Waited {
        let mut stopped: Option<Stop> = None;
        let mut kill_at: Option<Instant> = None;
        let mut killed = false;
        loop {
            let now = Instant::now();
            if let Some(at) = kill_at
                && now >= at
                && !killed
            {
                kill_tree(self.pid, cgroup);
                killed = true;
            }
            if stopped.is_none()
                && let Some(d) = sup.deadline
                && now >= d
            {
                stopped = Some(Stop::TimedOut);
                signal_tree(self.pid, cgroup, Signal::SIGTERM);
                kill_at = Some(now + sup.kill_grace);
            }
            let next = [
                kill_at.filter(|_| !killed),
                sup.deadline.filter(|_| stopped.is_none()),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout_ms = match next {
                Some(t) => {
                    t.saturating_duration_since(now)
                        .as_millis()
                        .min(i32::MAX as u128) as i32
                        + 1
                }
                None => -1,
            };
            let mut fds = [
                libc::pollfd {
                    fd: self.pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: sup.signals.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: poll on two valid pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    // Should not happen; fall back to a blocking wait after killing.
                    kill_tree(self.pid, cgroup);
                }
            }
            for sig in sup.signals.drain() {
                let first = sup.cancelled.is_none();
                if first {
                    *sup.cancelled = Some(sig);
                }
                if sup.shielded && first {
                    // Cleanup still runs after a cancel; only a further signal stops it.
                    continue;
                }
                if stopped.is_none() && !sup.shielded {
                    stopped = Some(Stop::Cancelled(sig));
                    signal_tree(self.pid, cgroup, Signal::SIGTERM);
                    kill_at = Some(Instant::now() + sup.kill_grace);
                } else {
                    // A second signal: no more grace.
                    stopped.get_or_insert(Stop::Cancelled(sig));
                    kill_at = Some(Instant::now());
                }
            }
            if fds[0].revents != 0 {
                break;
            }
        }
        let mut status = 0;
        // SAFETY: zeroed rusage is valid; wait4 on our own child.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: as above.
            let r = unsafe { libc::wait4(self.pid, &mut status, 0, &mut rusage) };
            if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
        }
        let ended = if libc::WIFSIGNALED(status) {
            Ended::Signaled(libc::WTERMSIG(status))
        } else {
            Ended::Exited(libc::WEXITSTATUS(status))
        };
        // Whatever the command left running dies with it.
        let leftovers_killed = if self.cgroup_present {
            cgroup
                .map(|cg| {
                    if cg.populated() {
                        cg.kill_all().unwrap_or(0)
                    } else {
                        0
                    }
                })
                .unwrap_or(0)
        } else {
            // SAFETY: kill(2) on the (possibly empty) process group of our child.
            usize::from(unsafe { libc::kill(-self.pid, libc::SIGKILL) } == 0)
        };
        Waited {
            ended,
            stopped,
            rusage,
            leftovers_killed,
        }
    }
}

pub fn rusage_secs(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}
