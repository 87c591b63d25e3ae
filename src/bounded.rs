//! A computation on hostile input in a forked child under a memory and time limit, its
//! result sent back as JSON. Templates can build values that grow exponentially in a
//! few instructions (`{% set b = a ~ a %}` repeated), which no instruction budget
//! catches; a child under `RLIMIT_AS` that runs out of memory dies alone, and the
//! parent says where it was (the child notes what it is working on in a page shared
//! with the parent).
//!
//! Only for a single-threaded caller: the child of a `fork` runs Rust code (it
//! allocates), which is only sound when no other thread can hold a lock at the fork.
//! (The threads this module leaves to reap a finished child only wait: they hold no
//! lock.)

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

/// Run `f` in a child under `budget`; its value, or how it exceeded the budget. The
/// child is gone when this returns.
pub fn run<T, F>(budget: Budget, f: F) -> std::io::Result<Result<T, Exceeded>>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    one(budget, f, None)
}

/// [`run`], with `meanwhile` run in this process while the child computes (on another
/// core, where there is one): its value beside the child's. Not run if there is no
/// child (the fork failed). The child may still be exiting when this returns (a
/// thread reaps it).
pub fn run_while<T, F, M, R>(
    budget: Budget,
    f: F,
    meanwhile: M,
) -> std::io::Result<(Result<T, Exceeded>, R)>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
    M: FnOnce() -> R,
{
    let mut meanwhile = Some(meanwhile);
    let mut value = None;
    let outcome = one(
        budget,
        f,
        Some(&mut || value = meanwhile.take().map(|m| m())),
    )?;
    let value = value.unwrap_or_else(|| unreachable!("the parent ran it after the fork"));
    Ok((outcome, value))
}

/// One item in one child.
fn one<T, F>(
    budget: Budget,
    f: F,
    meanwhile: Option<&mut dyn FnMut()>,
) -> std::io::Result<Result<T, Exceeded>>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    let f = std::cell::Cell::new(Some(f));
    let once = |_: &()| match f.take() {
        Some(f) => f(),
        None => unreachable!("one item, one call"),
    };
    let Served { mut done, died } = serve(budget, &[()], &once, meanwhile)?;
    Ok(match died {
        Some(e) => Err(e),
        None => done.remove(0),
    })
}

/// Run `f` on each of `items`, in as few children as the items allow: a child goes
/// through the items in order, each under the whole `budget` (the alarm is set again
/// for each, the memory is the child's), and sends each value back as it has it. An
/// item a child dies on after other items is tried again alone in a fresh child
/// before it is blamed, so what an item is told never depends on the items before it
/// (a child's heap keeps some of what they used). The outcomes, in the items' order.
///
/// One fork per item cost 2 ms on a 2-core VM (the fork, then the child's
/// copy-on-write faults), three times the check of a manifest itself.
pub fn run_each<I, T, F>(
    budget: Budget,
    items: &[I],
    f: F,
) -> std::io::Result<Vec<Result<T, Exceeded>>>
where
    T: Serialize + DeserializeOwned,
    F: Fn(&I) -> T,
{
    let mut outcomes = Vec::with_capacity(items.len());
    let mut alone = false;
    while outcomes.len() < items.len() {
        let from = outcomes.len();
        let to = if alone { from + 1 } else { items.len() };
        let Served { done, died } = serve(budget, &items[from..to], &f, None)?;
        let first = done.is_empty();
        outcomes.extend(done);
        alone = false;
        if let Some(e) = died {
            // Time is the item's own (its alarm was its alone); memory may not be.
            if first || matches!(e, Exceeded::Time { .. }) {
                outcomes.push(Err(e));
            } else {
                alone = true;
            }
        }
    }
    Ok(outcomes)
}

/// What a child sends back for an item: a tag, the length, the bytes.
const VALUE: u8 = 0;
const PANIC: u8 = 1;

/// What one child did with its items.
struct Served<T> {
    /// The outcomes of the items it finished, in order.
    done: Vec<Result<T, Exceeded>>,
    /// How it ended on the next one, if it did not finish them all.
    died: Option<Exceeded>,
}

/// One child over `items`; `meanwhile`, if any, runs in the parent while the child
/// works, on another core, and the child is then reaped aside (the caller that waits
/// for nothing meanwhile also waits for the child to be gone).
fn serve<I, T, F>(
    budget: Budget,
    items: &[I],
    f: &F,
    meanwhile: Option<&mut dyn FnMut()>,
) -> std::io::Result<Served<T>>
where
    T: Serialize + DeserializeOwned,
    F: Fn(&I) -> T,
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
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
                if null >= 0 {
                    libc::dup2(null, 2);
                }
            }
            let mut out = std::fs::File::from(write);
            let mut code = 0;
            for item in items {
                note("");
                // SAFETY: a plain system call on this process.
                unsafe { libc::alarm(budget.seconds) };
                // A panic must not unwind into the caller's code in this process.
                let (tag, bytes) =
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(item))) {
                        Ok(value) => (VALUE, serde_json::to_vec(&value).unwrap_or_default()),
                        Err(payload) => {
                            let message = payload
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            (PANIC, message.into_bytes())
                        }
                    };
                let mut frame = Vec::with_capacity(5 + bytes.len());
                frame.push(tag);
                frame.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                frame.extend_from_slice(&bytes);
                if std::io::Write::write_all(&mut out, &frame).is_err() {
                    code = 1;
                    break;
                }
            }
            // SAFETY: leave without running the parent's exit handlers or destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(write);
            let aside = meanwhile.is_some();
            if let Some(meanwhile) = meanwhile {
                elsewhere(child);
                meanwhile();
            }
            let mut from = std::io::BufReader::new(std::fs::File::from(read));
            let mut done = Vec::new();
            let mut bad = None;
            while done.len() < items.len() {
                let mut head = [0u8; 5];
                if from.read_exact(&mut head).is_err() {
                    break;
                }
                let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
                let mut bytes = vec![0u8; len];
                if from.read_exact(&mut bytes).is_err() {
                    break;
                }
                done.push(if head[0] == PANIC {
                    Err(Exceeded::Panicked {
                        message: String::from_utf8_lossy(&bytes).into_owned(),
                    })
                } else {
                    match serde_json::from_slice(&bytes) {
                        Ok(value) => Ok(value),
                        Err(e) => {
                            bad = Some(e);
                            break;
                        }
                    }
                });
            }
            drop(from);
            if aside && bad.is_none() && done.len() == items.len() {
                // All is back, so how the child ends no longer matters; its exit (the
                // teardown of its copy of this process's memory) takes longer than
                // the rest of the wait did. It is reaped on a thread of its own.
                reap_aside(child);
                return Ok(Served { done, died: None });
            }
            let status = reap(child)?;
            if let Some(e) = bad {
                return Err(std::io::Error::other(e));
            }
            if done.len() == items.len() {
                return Ok(Served { done, died: None });
            }
            let at = noted(unmap.0);
            use nix::sys::wait::WaitStatus;
            let died = match status {
                WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGALRM, _) => {
                    Exceeded::Time { at }
                }
                _ => Exceeded::Memory { at },
            };
            Ok(Served {
                done,
                died: Some(died),
            })
        }
    }
}

/// Wait for the child to end.
fn reap(child: nix::unistd::Pid) -> nix::Result<nix::sys::wait::WaitStatus> {
    loop {
        match nix::sys::wait::waitpid(child, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// [`reap`] on a thread that does nothing else (it holds no lock a later fork could
/// inherit); here if no thread can be started.
fn reap_aside(child: nix::unistd::Pid) {
    let aside = std::thread::Builder::new()
        .name("reap".into())
        .spawn(move || {
            let _ = reap(child);
        });
    if aside.is_err() {
        let _ = reap(child);
    }
}

/// Keep the child off this core, where this process may run on others: the scheduler
/// tends to queue a new child behind its parent, where it would wait for whatever
/// the parent does meanwhile. Best effort.
fn elsewhere(child: nix::unistd::Pid) {
    // SAFETY: plain system calls with cpu_set_t values we own; CPU_* touch only them.
    unsafe {
        let here = libc::sched_getcpu();
        let mut others: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if here < 0 || libc::sched_getaffinity(0, size, &mut others) != 0 {
            return;
        }
        libc::CPU_CLR(here as usize, &mut others);
        if libc::CPU_COUNT(&others) > 0 {
            libc::sched_setaffinity(child.as_raw(), size, &others);
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

    /// Items share a child, each with its own outcome in order; one that dies does not
    /// take the items after it, and one that only dies because of what the items
    /// before it left in the child's heap is not blamed.
    #[test]
    fn items_share_a_child_and_each_is_judged_alone() {
        #[derive(Debug)]
        enum Item {
            Value(u32),
            Leak(usize),
            Take(usize),
            Double,
            Spin,
            Bug,
        }
        let mib = 1usize << 20;
        let items = [
            Item::Value(1),
            Item::Double,
            Item::Leak(40 * mib),
            Item::Take(40 * mib),
            Item::Spin,
            Item::Bug,
            Item::Value(2),
        ];
        let budget = Budget {
            memory_bytes: 64 << 20,
            seconds: 1,
        };
        let outcomes: Vec<Result<u64, Exceeded>> = run_each(budget, &items, |item| {
            note(&format!("{item:?}"));
            match item {
                Item::Value(v) => u64::from(*v),
                // Mapped directly: malloc may serve it from address space an arena of
                // the (threaded) test process reserved before the fork.
                Item::Leak(n) | Item::Take(n) => {
                    // SAFETY: a fresh anonymous mapping, unmapped below unless leaked.
                    let p = unsafe {
                        libc::mmap(
                            std::ptr::null_mut(),
                            *n,
                            libc::PROT_READ | libc::PROT_WRITE,
                            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                            -1,
                            0,
                        )
                    };
                    if p == libc::MAP_FAILED {
                        // What an allocation that fails does.
                        std::process::abort();
                    }
                    // SAFETY: the mapping is `n` bytes, written page by page.
                    let pages = (0..*n)
                        .step_by(4096)
                        .map(|i| unsafe { p.cast::<u8>().add(i).write(1) })
                        .count();
                    if matches!(item, Item::Take(_)) {
                        // SAFETY: mapped above with this length.
                        unsafe { libc::munmap(p, *n) };
                    }
                    pages as u64
                }
                Item::Double => {
                    let mut s = String::from("x");
                    while s.len() < 1 << 40 {
                        s = s.repeat(2);
                    }
                    s.len() as u64
                }
                Item::Spin => loop {
                    std::hint::spin_loop();
                },
                Item::Bug => panic!("bug {}", 7),
            }
        })
        .unwrap();
        let pages = (40 * mib / 4096) as u64;
        assert_eq!(
            outcomes,
            vec![
                Ok(1),
                Err(Exceeded::Memory {
                    at: "Double".into()
                }),
                Ok(pages),
                Ok(pages),
                Err(Exceeded::Time { at: "Spin".into() }),
                Err(Exceeded::Panicked {
                    message: "bug 7".into()
                }),
                Ok(2),
            ]
        );
    }
}
