//! SIGINT, SIGTERM and SIGHUP to the runner become bytes on a pipe (the
//! self-pipe trick), so the one supervise loop can `poll` for them beside the
//! child's pidfd. Handlers are installed without `SA_RESTART`: a blocking wait
//! (such as a cache lock) returns `EINTR` and can notice a cancel. Dropping
//! [`Signals`] puts the previous handlers back before the pipe closes, so a late
//! signal never writes into a descriptor number that something else reuses.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    // SAFETY: only async-signal-safe calls: errno save/restore and write(2).
    unsafe {
        let saved = *libc::__errno_location();
        let fd = WRITE_FD.load(Ordering::Relaxed);
        if fd >= 0 {
            let b = sig as u8;
            libc::write(fd, (&b as *const u8).cast(), 1);
        }
        *libc::__errno_location() = saved;
    }
}

pub struct Signals {
    read: OwnedFd,
    _write: OwnedFd,
    previous: Vec<(Signal, SigAction)>,
}

pub const FORWARDED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

impl Signals {
    pub fn install() -> io::Result<Signals> {
        use nix::fcntl::OFlag;
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        WRITE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::empty(),
            SigSet::empty(),
        );
        let mut previous = Vec::new();
        for sig in FORWARDED {
            // SAFETY: the handler only makes async-signal-safe calls (see `on_signal`).
            match unsafe { sigaction(sig, &action) } {
                Ok(old) => previous.push((sig, old)),
                Err(e) => {
                    restore(&previous);
                    WRITE_FD.store(-1, Ordering::Relaxed);
                    return Err(e.into());
                }
            }
        }
        Ok(Signals {
            read,
            _write: write,
            previous,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Signals received since the last call, in order.
    pub fn drain(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = nix::unistd::read(&self.read, &mut buf) {
            out.extend(buf[..n].iter().map(|&b| i32::from(b)));
        }
        out
    }
}

fn restore(previous: &[(Signal, SigAction)]) {
    for (sig, old) in previous {
        // SAFETY: putting back a disposition that was installed before ours.
        let _ = unsafe { sigaction(*sig, old) };
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        restore(&self.previous);
        WRITE_FD.store(-1, Ordering::Relaxed);
    }
}

/// A signal's name, `SIGTERM`; `signal 70` for a number without one.
pub fn name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_go_back_when_dropped() {
        let before = unsafe {
            sigaction(
                Signal::SIGHUP,
                &SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty()),
            )
        }
        .unwrap();
        let signals = Signals::install().unwrap();
        assert!(WRITE_FD.load(Ordering::Relaxed) >= 0);
        drop(signals);
        assert_eq!(WRITE_FD.load(Ordering::Relaxed), -1);
        // The disposition is the default again, not our handler.
        let now = unsafe { sigaction(Signal::SIGHUP, &before) }.unwrap();
        assert_eq!(now.handler(), SigHandler::SigDfl);
    }

    #[test]
    fn names() {
        assert_eq!(name(libc::SIGKILL), "SIGKILL");
        assert_eq!(name(70), "signal 70");
    }
}
