//! The supervise loop's decisions, as a small pure state machine: given the time and
//! the signals the runner received, when to ask the command's tree to stop (SIGTERM),
//! when to kill it (SIGKILL), and why it was stopped. The loop in [`super::child`]
//! only waits for what this asks it to wait for and does what it says.

use std::time::{Duration, Instant};

/// Why the runner stopped a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Its own deadline passed.
    TimedOut,
    /// The runner received this signal.
    Cancelled(i32),
}

/// What to do to the command's tree now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGTERM to the whole tree: the grace period starts.
    Terminate,
    /// SIGKILL to the whole tree.
    Kill,
}

/// The rules one command is supervised by.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub deadline: Option<Instant>,
    pub kill_grace: Duration,
    /// Cleanup: a first cancel does not stop the command, only a further signal does.
    pub shielded: bool,
}

#[derive(Debug)]
pub struct Supervisor {
    policy: Policy,
    stopped: Option<Stop>,
    kill_at: Option<Instant>,
    killed: bool,
}

impl Supervisor {
    pub fn new(policy: Policy) -> Supervisor {
        Supervisor {
            policy,
            stopped: None,
            kill_at: None,
            killed: false,
        }
    }

    /// Why the command was stopped, if it was.
    pub fn stopped(&self) -> Option<Stop> {
        self.stopped
    }

    /// The time passed `now`: a deadline or the end of a grace period may have come.
    pub fn tick(&mut self, now: Instant) -> Option<Action> {
        if let Some(at) = self.kill_at
            && now >= at
            && !self.killed
        {
            self.killed = true;
            return Some(Action::Kill);
        }
        if self.stopped.is_none()
            && let Some(d) = self.policy.deadline
            && now >= d
        {
            self.stopped = Some(Stop::TimedOut);
            self.kill_at = Some(now + self.policy.kill_grace);
            return Some(Action::Terminate);
        }
        None
    }

    /// The runner received `sig`. `cancelled` is the run's first cancel, shared by every
    /// command of the run: set here when this is the first.
    pub fn signal(
        &mut self,
        sig: i32,
        cancelled: &mut Option<i32>,
        now: Instant,
    ) -> Option<Action> {
        let first = cancelled.is_none();
        // `runner cancel` sends SIGTERM; several at once (or again) are one cancel, and
        // neither cut a grace period nor a cleanup short. Insisting is another signal
        // (a second Ctrl-C) or SIGKILL.
        if !first && sig == libc::SIGTERM && *cancelled == Some(libc::SIGTERM) {
            return None;
        }
        if first {
            *cancelled = Some(sig);
        }
        if self.policy.shielded && first {
            // Cleanup still runs after a cancel; only a further signal stops it.
            return None;
        }
        if self.stopped.is_none() && !self.policy.shielded {
            self.stopped = Some(Stop::Cancelled(sig));
            self.kill_at = Some(now + self.policy.kill_grace);
            return Some(Action::Terminate);
        }
        // A second signal: no more grace.
        self.stopped.get_or_insert(Stop::Cancelled(sig));
        if self.killed {
            return None;
        }
        self.killed = true;
        Some(Action::Kill)
    }

    /// When the loop must look again (a deadline or the end of a grace), if ever.
    pub fn wake_at(&self) -> Option<Instant> {
        [
            self.kill_at.filter(|_| !self.killed),
            self.policy.deadline.filter(|_| self.stopped.is_none()),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    fn supervisor(deadline: Option<Duration>, shielded: bool, t0: Instant) -> Supervisor {
        Supervisor::new(Policy {
            deadline: deadline.map(|d| t0 + d),
            kill_grace: GRACE,
            shielded,
        })
    }

    #[test]
    fn a_deadline_terminates_then_kills_after_the_grace() {
        let t0 = Instant::now();
        let mut s = supervisor(Some(Duration::from_secs(5)), false, t0);
        assert_eq!(s.wake_at(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(s.tick(t0 + Duration::from_secs(4)), None);
        assert_eq!(s.tick(t0 + Duration::from_secs(5)), Some(Action::Terminate));
        assert_eq!(s.stopped(), Some(Stop::TimedOut));
        assert_eq!(s.wake_at(), Some(t0 + Duration::from_secs(15)));
        assert_eq!(s.tick(t0 + Duration::from_secs(14)), None);
        assert_eq!(s.tick(t0 + Duration::from_secs(15)), Some(Action::Kill));
        assert_eq!(s.wake_at(), None);
        assert_eq!(s.tick(t0 + Duration::from_secs(99)), None);
    }

    #[test]
    fn no_deadline_never_wakes() {
        let t0 = Instant::now();
        let mut s = supervisor(None, false, t0);
        assert_eq!(s.wake_at(), None);
        assert_eq!(s.tick(t0 + Duration::from_secs(1 << 30)), None);
        assert_eq!(s.stopped(), None);
    }

    #[test]
    fn a_signal_cancels_with_grace_and_a_second_one_kills_at_once() {
        let t0 = Instant::now();
        let mut cancelled = None;
        let mut s = supervisor(Some(Duration::from_secs(60)), false, t0);
        assert_eq!(
            s.signal(libc::SIGINT, &mut cancelled, t0),
            Some(Action::Terminate)
        );
        assert_eq!(cancelled, Some(libc::SIGINT));
        assert_eq!(s.stopped(), Some(Stop::Cancelled(libc::SIGINT)));
        // The deadline no longer matters; the grace does.
        assert_eq!(s.wake_at(), Some(t0 + GRACE));
        assert_eq!(
            s.signal(libc::SIGTERM, &mut cancelled, t0 + Duration::from_secs(1)),
            Some(Action::Kill)
        );
        // The first signal stays the reason.
        assert_eq!(s.stopped(), Some(Stop::Cancelled(libc::SIGINT)));
        assert_eq!(cancelled, Some(libc::SIGINT));
        assert_eq!(s.signal(libc::SIGTERM, &mut cancelled, t0), None);
        assert_eq!(s.tick(t0 + GRACE), None);
    }

    #[test]
    fn a_cancel_before_the_deadline_is_not_a_timeout() {
        let t0 = Instant::now();
        let mut cancelled = None;
        let mut s = supervisor(Some(Duration::from_secs(1)), false, t0);
        s.signal(libc::SIGHUP, &mut cancelled, t0);
        assert_eq!(s.tick(t0 + Duration::from_secs(2)), None);
        assert_eq!(s.stopped(), Some(Stop::Cancelled(libc::SIGHUP)));
    }

    #[test]
    fn cleanup_ignores_the_first_cancel_and_dies_on_the_second() {
        let t0 = Instant::now();
        let mut cancelled = None;
        let mut s = supervisor(None, true, t0);
        assert_eq!(s.signal(libc::SIGINT, &mut cancelled, t0), None);
        assert_eq!(cancelled, Some(libc::SIGINT));
        assert_eq!(s.stopped(), None);
        assert_eq!(
            s.signal(libc::SIGINT, &mut cancelled, t0),
            Some(Action::Kill)
        );
        assert_eq!(s.stopped(), Some(Stop::Cancelled(libc::SIGINT)));
    }

    /// Concurrent `runner cancel`s: one cancel. The step keeps its grace period and
    /// cleanup runs to its end.
    #[test]
    fn repeated_sigterms_are_one_cancel() {
        let t0 = Instant::now();
        let mut cancelled = None;
        let mut s = supervisor(None, false, t0);
        assert_eq!(
            s.signal(libc::SIGTERM, &mut cancelled, t0),
            Some(Action::Terminate)
        );
        for _ in 0..5 {
            assert_eq!(s.signal(libc::SIGTERM, &mut cancelled, t0), None);
        }
        assert_eq!(s.tick(t0 + GRACE), Some(Action::Kill));
        let mut cleanup = supervisor(None, true, t0);
        for _ in 0..5 {
            assert_eq!(cleanup.signal(libc::SIGTERM, &mut cancelled, t0), None);
        }
        assert_eq!(cleanup.stopped(), None);
        // Insisting is another signal.
        assert_eq!(
            cleanup.signal(libc::SIGINT, &mut cancelled, t0),
            Some(Action::Kill)
        );
    }

    #[test]
    fn cleanup_after_a_cancel_dies_on_the_next_signal() {
        let t0 = Instant::now();
        // The run was cancelled before cleanup started.
        let mut cancelled = Some(libc::SIGTERM);
        let mut s = supervisor(None, true, t0);
        assert_eq!(
            s.signal(libc::SIGINT, &mut cancelled, t0),
            Some(Action::Kill)
        );
        assert_eq!(cancelled, Some(libc::SIGTERM));
    }

    #[test]
    fn cleanup_still_has_its_deadline() {
        let t0 = Instant::now();
        let mut s = supervisor(Some(Duration::from_secs(3)), true, t0);
        assert_eq!(s.tick(t0 + Duration::from_secs(3)), Some(Action::Terminate));
        assert_eq!(s.stopped(), Some(Stop::TimedOut));
    }
}
