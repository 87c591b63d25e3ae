//! A computation on hostile input in a forked child under a memory and time limit, its
//! result sent back as JSON. Templates can build values that grow exponentially in a
//! few instructions (`{% set b = a ~ a %}` repeated), which no instruction budget
//! catches; a child under `RLIMIT_AS` that runs out of memory dies alone, and the
//! parent says where it was (the child notes what it is working on in a page shared
//! with the parent).
//!
//! Only for a single-threaded caller: the child of a `fork` runs Rust code (it
//! allocates), which is only sound when no other thread can hold a lock at the fork.

use std::io::Read;
use std::sync::atomic::{AtomicPtr, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What the child may use.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Address space beyond what the process holds at the fork.
    pub memory_bytes: u64,
    pub seconds: u32,
}

/// The default for rendering a manifest: far above any real plan.
pub const RENDER: Budget = Budget {
    memory_bytes: 512 << 20,
    seconds: 10,
};

/// How a bounded computation ended, if not with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exceeded {
    /// It ran out of memory (or crashed), at the last place it noted.
    Memory { at: String },
    /// It ran out of time.
    Time { at: String },
    /// It panicked (a bug): the panic's message.
    Panicked { message: String },
}

const PAGE: usize = 4096;

/// The child's exit code after a panic.
const PANICKED: i32 = 101;

/// The shared page, in the child; null elsewhere.
static NOTE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

/// Note what the computation is working on (a manifest pointer), for the error if it
/// dies there. Nothing outside a bounded child.
pub fn note(at: &str) {
    let page = NOTE.load(Ordering::Relaxed);
    if page.is_null() {
        return;
    }
    let bytes = at.as_bytes();
    let n = bytes.len().min(PAGE - 8);
    // SAFETY: the page is PAGE bytes, mapped for the child's whole life; only the
    // child's one thread writes it.
    unsafe {
        std::ptr::copy_nonoverlapping((n as u64).to_le_bytes().as_ptr(), page, 8);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), page.add(8), n);
    }
}

fn noted(page: *const u8) -> String {
    let mut len = [0u8; 8];
    // SAFETY: the page is mapped and PAGE bytes long; the child is gone.
    unsafe { std::ptr::copy_nonoverlapping(page, len.as_mut_ptr(), 8) };
    let n = (u64::from_le_bytes(len) as usize).min(PAGE - 8);
    let mut buf = vec![0u8; n];
    // SAFETY: as above.
    unsafe { std::ptr::copy_nonoverlapping(page.add(8), buf.as_mut_ptr(), n) };
    String::from_utf8_lossy(&buf).into_owned()
}

/// The address space this process holds now.
fn address_space() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |pages| pages * PAGE as u64)
}

/// Run `f` in a child under `budget`; its value, or how it exceeded the budget.
pub fn run<T, F>(budget: Budget, f: F) -> std::io::Result<Result<T, Exceeded>>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    // SAFETY: an anonymous shared mapping, unmapped below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let page = page.cast::<u8>();
    let unmap = Unmap(page);
    let (read, write) = nix::unistd::pipe()?;
    let limit = address_space() + budget.memory_bytes;
    // SAFETY: the caller is single-threaded (see the module's docs).
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            drop(read);
            NOTE.store(page, Ordering::Relaxed);
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: plain system calls on this process. Its stderr is dropped: running
            // out of memory is reported by the parent, in the manifest's words.
            unsafe {
                libc::setrlimit(libc::RLIMIT_AS, &lim);
                libc::alarm(budget.seconds);
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
                if null >= 0 {
                    libc::dup2(null, 2);
                }
            }
            let mut out = std::fs::File::from(write);
            // A panic must not unwind into the caller's code in this process.
            let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                Ok(value) => {
                    let bytes = serde_json::to_vec(&value).unwrap_or_default();
                    if std::io::Write::write_all(&mut out, &bytes).is_ok() {
                        0
                    } else {
                        1
                    }
                }
                Err(payload) => {
                    let message = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    let _ = std::io::Write::write_all(&mut out, message.as_bytes());
                    PANICKED
                }
            };
            // SAFETY: leave without running the parent's exit handlers or destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(write);
            let mut bytes = Vec::new();
            let mut from = std::fs::File::from(read);
            let _ = from.read_to_end(&mut bytes);
            let status = loop {
                match nix::sys::wait::waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other?,
                }
            };
            let at = noted(unmap.0);
            use nix::sys::wait::WaitStatus;
            match status {
                WaitStatus::Exited(_, 0) => serde_json::from_slice(&bytes)
                    .map(Ok)
                    .map_err(std::io::Error::other),
                WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGALRM, _) => {
                    Ok(Err(Exceeded::Time { at }))
                }
                WaitStatus::Exited(_, PANICKED) => Ok(Err(Exceeded::Panicked {
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                })),
                _ => Ok(Err(Exceeded::Memory { at })),
            }
        }
    }
}

struct Unmap(*mut u8);

impl Drop for Unmap {
    fn drop(&mut self) {
        // SAFETY: mapped above with this length.
        unsafe { libc::munmap(self.0.cast(), PAGE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Forking from the multi-threaded test harness is only sound in a process of its
    // own: these run as one test each under nextest (a process per test).
    #[test]
    fn a_value_comes_back_and_a_blow_up_is_reported_where_it_was() {
        let v: Result<Vec<u32>, _> = run(RENDER, || vec![1, 2, 3]).unwrap();
        assert_eq!(v, Ok(vec![1, 2, 3]));
        let blown: Result<usize, _> = run(
            Budget {
                memory_bytes: 64 << 20,
                seconds: 10,
            },
            || {
                note("/launch/env/X");
                let mut s = String::from("x");
                loop {
                    s = s.repeat(2);
                    if s.len() > 1 << 40 {
                        return s.len();
                    }
                }
            },
        )
        .unwrap();
        assert_eq!(
            blown,
            Err(Exceeded::Memory {
                at: "/launch/env/X".into()
            })
        );
        let slow: Result<u8, _> = run(
            Budget {
                memory_bytes: 64 << 20,
                seconds: 1,
            },
            || {
                note("/prepare/run/0");
                loop {
                    std::hint::spin_loop();
                }
            },
        )
        .unwrap();
        assert_eq!(
            slow,
            Err(Exceeded::Time {
                at: "/prepare/run/0".into()
            })
        );
        let bug: Result<u8, _> = run(RENDER, || panic!("a bug")).unwrap();
        assert_eq!(
            bug,
            Err(Exceeded::Panicked {
                message: "a bug".into()
            })
        );
    }
}
