//! Log pumps: copy one output pipe of a step to its log file and to a live sink.
//!
//! Each pipe is drained on its own thread, so a step that fills stderr while we wait
//! on stdout can never deadlock us. The copy is byte-exact and does no per-line
//! work: large reads, the same bytes written to the live sink and to the file.
//! Memory is fixed per pump (one read buffer, plus at most [`MEMORY_RING_MAX`] for the
//! tail of a capped log; a larger tail spills to an unlinked file next to the log).
//!
//! The live sink is best effort: once writing to it fails (say `EPIPE` because
//! whoever read the runner's stdout went away) it is dropped and the file keeps
//! getting every byte. A failing log file does not stop the draining either: the
//! step is never blocked or killed because of its logs, the error comes out of
//! [`LogPump::join`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// One read's worth, and [`PIPE_SIZE`]: the pipe's pages and this buffer are copied
/// through on every byte, so together they should stay in the CPU's cache. Measured
/// on a tmpfs (1 GiB, medians, alternating): buffer and pipe of 1 MiB each 1.49 s —
/// slower than `tee`'s 8 KiB loop (1.32 s) —, 128 KiB + 256 KiB 1.00 s, 64 KiB +
/// 64 KiB 1.11 s.
const BUF_SIZE: usize = 128 << 10;
/// Pipe capacity asked for (best effort, the default is 64 KiB): fewer wake-ups of
/// both the step and the pump when output is heavy, still small enough to stay cached.
const PIPE_SIZE: i32 = 256 << 10;
/// Largest tail of a capped log kept in memory; a larger one goes to a spill file.
const MEMORY_RING_MAX: u64 = 1 << 20;

/// Where one stream goes.
#[derive(Debug)]
pub struct LogSpec {
    pub path: PathBuf,
    /// Cap on the file's size: keep the first `limit / 2` and the last
    /// `limit - limit / 2` bytes, with a one-line marker between them.
    pub limit: Option<u64>,
    pub live: Live,
}

/// Where the output is echoed as it arrives.
#[derive(Debug)]
pub enum Live {
    Stdout,
    Stderr,
    None,
    /// Any other writable descriptor (a pipe to a log shipper, a test).
    #[cfg_attr(not(test), allow(dead_code))]
    Fd(OwnedFd),
}

/// What a pump copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// Total bytes the step wrote to the pipe.
    pub bytes: u64,
    /// Bytes in the log file, the omission marker included.
    pub written: u64,
    /// The file holds only the head and tail of the output.
    pub truncated: bool,
    /// Writing to the live sink failed and it was dropped part way.
    pub live_failed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot create log file `{path}`")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write log file `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the step's output for `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the log thread for `{path}`")]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A running pump; [`LogPump::join`] waits for the pipe's end of file.
#[derive(Debug)]
pub struct LogPump {
    thread: JoinHandle<()>,
    /// The pump's result, sent when it ends: waiting with a timeout needs no extra thread.
    done: Receiver<Result<LogStats, LogError>>,
}

/// Start a thread that reads `pipe` until end of file, writing every byte to the
/// file at `spec.path` (created or truncated, mode 0644, close-on-exec) and to the
/// live sink. The file is created before this returns, so a bad path fails here.
pub fn pump(pipe: OwnedFd, spec: LogSpec) -> Result<LogPump, LogError> {
    let LogSpec { path, limit, live } = spec;
    // std opens every file with O_CLOEXEC, so no later child inherits the log.
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&path)
        .map_err(|source| LogError::Create {
            path: path.clone(),
            source,
        })?;
    // Best effort: not a pipe, or over the user's pipe quota, only costs speed.
    let _ = fcntl(&pipe, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    let live = match live {
        Live::Stdout => Some(LiveSink::Stdout(io::stdout())),
        Live::Stderr => Some(LiveSink::Stderr(io::stderr())),
        Live::Fd(fd) => Some(LiveSink::Owned(fd)),
        Live::None => None,
    };
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let sink = FileSink::new(file, path.clone(), limit);
    let (tx, done) = mpsc::sync_channel(1);
    // Allocated here, not in the pump: glibc gives a new thread an arena of its own and
    // zeroes a calloc from it by hand (32 page faults per pump before the first byte);
    // from this thread the buffer is fresh mapped memory, already zero, touched only
    // where the step's output lands.
    let buf = vec![0u8; BUF_SIZE];
    let thread = std::thread::Builder::new()
        .name(format!("log {name}"))
        .stack_size(256 * 1024)
        .spawn(move || {
            let _ = tx.send(copy(File::from(pipe), sink, live, buf));
        })
        .map_err(|source| LogError::Spawn {
            path: path.clone(),
            source,
        })?;
    Ok(LogPump { thread, done })
}

impl LogPump {
    /// Wait for end of file on the pipe and for the file to be complete.
    pub fn join(self) -> Result<LogStats, LogError> {
        let result = self.done.recv();
        if let Err(panic) = self.thread.join() {
            std::panic::resume_unwind(panic);
        }
        result.expect("a pump that did not panic sends its result")
    }

    /// As [`LogPump::join`], giving up after `wait` if something outside our reach
    /// (a daemon the step left behind) still holds the pipe open; the pump then
    /// finishes on its own.
    pub fn join_timeout(self, wait: Duration) -> Option<Result<LogStats, LogError>> {
        match self.done.recv_timeout(wait) {
            Ok(result) => {
                let _ = self.thread.join();
                Some(result)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => match self.thread.join() {
                Ok(()) => None,
                Err(panic) => std::panic::resume_unwind(panic),
            },
        }
    }
}

fn copy(
    mut pipe: File,
    mut sink: FileSink,
    mut live: Option<LiveSink>,
    mut buf: Vec<u8>,
) -> Result<LogStats, LogError> {
    let mut bytes = 0u64;
    let mut live_failed = false;
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_for(pipe.as_fd(), PollFlags::POLLIN);
                continue;
            }
            Err(source) => {
                return Err(LogError::Read {
                    path: sink.path,
                    source,
                });
            }
        };
        let chunk = &buf[..n];
        if let Some(sink) = &live
            && write_all(sink.as_fd(), chunk).is_err()
        {
            live = None;
            live_failed = true;
        }
        sink.push(chunk);
        bytes += n as u64;
    }
    let (written, truncated) = sink.finish(&mut buf)?;
    Ok(LogStats {
        bytes,
        written,
        truncated,
        live_failed,
    })
}

/// The runner's own streams are written through their descriptors, bypassing std's
/// buffering (stdout's line buffering would scan every byte for newlines).
enum LiveSink {
    Stdout(io::Stdout),
    Stderr(io::Stderr),
    Owned(OwnedFd),
}

impl LiveSink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            LiveSink::Stdout(out) => out.as_fd(),
            LiveSink::Stderr(err) => err.as_fd(),
            LiveSink::Owned(fd) => fd.as_fd(),
        }
    }
}

/// Write all of `data` to a descriptor that is not ours to reconfigure: if someone
/// made it non-blocking, wait for room instead of failing.
fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait_for(fd, PollFlags::POLLOUT),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn wait_for(fd: BorrowedFd<'_>, events: PollFlags) {
    let mut fds = [PollFd::new(fd, events)];
    let _ = poll(&mut fds, PollTimeout::NONE);
}

/// The log file, written straight through while it is under its limit, then
/// through a ring that keeps the tail.
struct FileSink {
    file: File,
    path: PathBuf,
    /// Bytes still to write before the tail ring takes over.
    head_left: u64,
    tail: Option<Ring>,
    written: u64,
    /// First write error; later writes are skipped, draining goes on.
    error: Option<io::Error>,
}

impl FileSink {
    fn new(file: File, path: PathBuf, limit: Option<u64>) -> Self {
        let (head_left, tail) = match limit {
            None => (u64::MAX, None),
            Some(limit) => (limit / 2, Some(Ring::new(limit - limit / 2))),
        };
        FileSink {
            file,
            path,
            head_left,
            tail,
            written: 0,
            error: None,
        }
    }

    fn push(&mut self, mut data: &[u8]) {
        if self.head_left > 0 {
            let n = data
                .len()
                .min(usize::try_from(self.head_left).unwrap_or(usize::MAX));
            self.write(&data[..n]);
            self.head_left -= n as u64;
            data = &data[n..];
        }
        if data.is_empty() || self.error.is_some() {
            return;
        }
        if let Some(tail) = &mut self.tail
            && let Err(e) = tail.push(data, &self.path)
        {
            self.error = Some(e);
        }
    }

    fn write(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        match self.file.write_all(data) {
            Ok(()) => self.written += data.len() as u64,
            Err(e) => self.error = Some(e),
        }
    }

    /// Write out the tail (after the marker, if anything was left out) and report
    /// the file's size and whether it was truncated.
    fn finish(mut self, buf: &mut [u8]) -> Result<(u64, bool), LogError> {
        let mut truncated = false;
        if let Some(tail) = self.tail.take()
            && self.error.is_none()
        {
            let omitted = tail.total.saturating_sub(tail.cap);
            if omitted > 0 {
                truncated = true;
                self.write(format!("\n[runner: {omitted} bytes omitted]\n").as_bytes());
            }
            let result = tail.drain(buf, |chunk| {
                self.write(chunk);
                self.error.is_none()
            });
            if let Err(e) = result {
                self.error.get_or_insert(e);
            }
        }
        match self.error {
            Some(source) => Err(LogError::Write {
                path: self.path,
                source,
            }),
            None => Ok((self.written, truncated)),
        }
    }
}

/// The last `cap` bytes of a stream.
struct Ring {
    cap: u64,
    /// Bytes pushed so far; the byte at stream offset `i` lives at `i % cap`.
    total: u64,
    store: Store,
}

enum Store {
    /// Not allocated until the head is full: most logs never get here.
    Empty,
    Memory(Vec<u8>),
    /// An unlinked file beside the log, for tails too big to keep in memory.
    File(File),
}

impl Ring {
    fn new(cap: u64) -> Self {
        Ring {
            cap,
            total: 0,
            store: Store::Empty,
        }
    }

    fn push(&mut self, data: &[u8], log: &Path) -> io::Result<()> {
        let len = data.len() as u64;
        if self.cap == 0 {
            self.total += len;
            return Ok(());
        }
        if let Store::Empty = self.store {
            self.store = if self.cap <= MEMORY_RING_MAX {
                Store::Memory(vec![0; self.cap as usize])
            } else {
                Store::File(spill_file(log)?)
            };
        }
        // Only the last `cap` bytes of a chunk can survive.
        let skip = len.saturating_sub(self.cap);
        let mut data = &data[skip as usize..];
        let mut pos = (self.total + skip) % self.cap;
        self.total += len;
        while !data.is_empty() {
            let n = data.len().min((self.cap - pos) as usize);
            match &mut self.store {
                Store::Memory(ring) => {
                    ring[pos as usize..pos as usize + n].copy_from_slice(&data[..n])
                }
                Store::File(file) => file.write_all_at(&data[..n], pos)?,
                Store::Empty => unreachable!("ring store allocated above"),
            }
            data = &data[n..];
            pos = (pos + n as u64) % self.cap;
        }
        Ok(())
    }

    /// Hand the kept bytes, oldest first, to `out` (which returns false to stop).
    fn drain(&self, buf: &mut [u8], mut out: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        let kept = self.total.min(self.cap);
        if self.cap == 0 {
            return Ok(());
        }
        let start = if self.total > self.cap {
            self.total % self.cap
        } else {
            0
        };
        // Two runs: [start, cap) then [0, start) when wrapped; [0, kept) otherwise.
        let runs = if start == 0 {
            [(0, kept), (0, 0)]
        } else {
            [(start, self.cap), (0, start)]
        };
        for (from, to) in runs {
            match &self.store {
                Store::Empty => {}
                Store::Memory(ring) => {
                    if !out(&ring[from as usize..to as usize]) {
                        return Ok(());
                    }
                }
                Store::File(file) => {
                    let mut at = from;
                    while at < to {
                        let n = buf.len().min((to - at) as usize);
                        file.read_exact_at(&mut buf[..n], at)?;
                        if !out(&buf[..n]) {
                            return Ok(());
                        }
                        at += n as u64;
                    }
                }
            }
        }
        Ok(())
    }
}

/// An anonymous file in the log's directory (same filesystem, so the tail costs the
/// disk it would have cost in the log anyway, not memory).
fn spill_file(log: &Path) -> io::Result<File> {
    let dir = match log.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let anonymous = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match anonymous {
        Ok(file) => Ok(file),
        // O_TMPFILE is not supported everywhere (older kernels, some filesystems).
        Err(_) => {
            let mut name = log.as_os_str().to_owned();
            name.push(format!(".tail.{}", std::process::id()));
            let path = PathBuf::from(name);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(file)
        }
    }
}

#[cfg(test)]
mod tests;
