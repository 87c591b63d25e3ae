//! Starting one command: `clone3(CLONE_PIDFD | CLONE_INTO_CGROUP)`, so the child is born
//! in its cgroup (no migration, no window in which it runs outside its limits) and the
//! runner holds a pidfd from the start (no pid reuse race); `fork` and `pidfd_open`
//! where the kernel has no `clone3` (before 5.3, or 5.7 for joining at birth). A child
//! that joins its cgroups itself (cgroup v1, or none) shares the runner's memory until
//! it execs, as `posix_spawn`'s does (`clone_shared`): a fork of the runner copied its
//! page tables, took copy-on-write faults and tore the copy down at exec.
//!
//! Written here rather than through `std::process::Command`: std has neither flag, and
//! what the child does before exec is this project's — new session, cgroup join on v1,
//! containment ([`crate::contain`]), rlimits, parent-death signal — all of it decided
//! and allocated before the clone, so the child only makes system calls. The child
//! reports a failure (which step, which errno) on a close-on-exec pipe; an empty read
//! means exec succeeded.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::cgroup::{self, RunCgroup};
use crate::contain::{self, Contain};
use crate::limits::Rlimits;

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// One command to start: everything is decided before the clone.
pub struct Spec<'a> {
    pub argv: Vec<String>,
    /// Variables set on top of the runner's own environment.
    pub env: &'a BTreeMap<String, String>,
    /// Variables of the runner's own environment the command does not get (the
    /// step's secrets, in prepare and cleanup).
    pub withhold: &'a [String],
    pub cwd: &'a Path,
    /// The runner's stdin, else /dev/null.
    pub stdin: bool,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub rlimits: Option<&'a Rlimits>,
    pub cgroup: Option<&'a RunCgroup>,
    pub contain: &'a Contain,
}

/// Where starting a command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Before the child existed.
    Prepare,
    Clone,
    Session,
    JoinCgroup,
    /// A containment step (an index of [`contain::STEP_NAMES`]).
    Contain(u32),
    Rlimits,
    ParentDeath,
    Stdio,
    Chdir,
    Exec,
}

impl Step {
    fn code(self) -> u32 {
        match self {
            Step::Prepare => 0,
            Step::Clone => 1,
            Step::Session => 2,
            Step::JoinCgroup => 3,
            Step::Contain(i) => 100 + i,
            Step::Rlimits => 4,
            Step::ParentDeath => 5,
            Step::Stdio => 6,
            Step::Chdir => 7,
            Step::Exec => 8,
        }
    }

    fn from_code(c: u32) -> Step {
        match c {
            1 => Step::Clone,
            2 => Step::Session,
            3 => Step::JoinCgroup,
            4 => Step::Rlimits,
            5 => Step::ParentDeath,
            6 => Step::Stdio,
            7 => Step::Chdir,
            8 => Step::Exec,
            c if c >= 100 => Step::Contain(c - 100),
            _ => Step::Prepare,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{}", describe(*.step, .program, .cwd))]
pub struct SpawnError {
    pub step: Step,
    pub program: String,
    pub cwd: PathBuf,
    #[source]
    pub source: io::Error,
}

fn describe(step: Step, program: &str, cwd: &Path) -> String {
    match step {
        Step::Prepare | Step::Exec => format!("cannot run `{program}`"),
        Step::Clone => "cannot start a process".to_string(),
        Step::Session => "cannot give the command its own session".to_string(),
        Step::JoinCgroup => "the command cannot join its cgroup".to_string(),
        Step::Contain(i) => format!(
            "cannot contain the command ({})",
            contain::STEP_NAMES.get(i as usize).unwrap_or(&"?")
        ),
        Step::Rlimits => "cannot set the command's rlimits".to_string(),
        Step::ParentDeath => "cannot tie the command to the runner's life".to_string(),
        Step::Stdio => "cannot connect the command's input and output".to_string(),
        Step::Chdir => format!("cannot change into `{}`", cwd.display()),
    }
}

impl SpawnError {
    /// The OS error number, if any.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

pub struct Spawned {
    pub pid: i32,
    pub pidfd: OwnedFd,
}

fn cstring(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The executable for `prog` with the child's `PATH`, as `execvp` would find it: a
/// path with a slash as it is (relative to the child's cwd), else the first
/// executable file on `PATH`.
fn resolve(prog: &str, path: Option<&OsString>, cwd: &Path) -> io::Result<PathBuf> {
    use nix::unistd::{AccessFlags, access};
    if prog.contains('/') {
        return Ok(PathBuf::from(prog));
    }
    if prog.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    let default = OsString::from("/usr/local/bin:/usr/bin:/bin");
    let mut denied = false;
    for dir in std::env::split_paths(path.unwrap_or(&default)) {
        let dir = if dir.as_os_str().is_empty() {
            cwd.to_path_buf()
        } else {
            cwd.join(dir)
        };
        let candidate = dir.join(prog);
        if candidate.is_file() {
            if access(&candidate, AccessFlags::X_OK).is_ok() {
                return Ok(candidate);
            }
            denied = true;
        }
    }
    Err(io::Error::from_raw_os_error(if denied {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

/// What the child needs, all of it allocated before the clone.
struct ChildCtx<'a> {
    exe: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: CString,
    stdin: Option<RawFd>,
    stdout: RawFd,
    stderr: RawFd,
    /// v1 `tasks` (and a fallback `cgroup.procs`) to write `0` into.
    join: Vec<RawFd>,
    rlimits: Option<&'a Rlimits>,
    contain: &'a Contain,
    parent: libc::pid_t,
    report: RawFd,
}

pub fn spawn(spec: Spec<'_>) -> Result<Spawned, SpawnError> {
    let program = spec.argv.first().cloned().unwrap_or_default();
    let fail = |step: Step, source: io::Error| SpawnError {
        step,
        program: program.clone(),
        cwd: spec.cwd.to_path_buf(),
        source,
    };
    let prepare = |e: io::Error| fail(Step::Prepare, e);
    // The child's environment: the runner's, with the command's variables over it.
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for k in spec.withhold {
        env.remove(&OsString::from(k));
    }
    for (k, v) in spec.env {
        env.insert(k.into(), v.into());
    }
    let exe = resolve(&program, env.get(&OsString::from("PATH")), spec.cwd)
        .map_err(|e| fail(Step::Exec, e))?;
    let exe = cstring(exe.into_os_string().into_vec()).map_err(prepare)?;
    let args: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| cstring(a.clone().into_bytes()))
        .collect::<Result<_, _>>()
        .map_err(prepare)?;
    let vars: Vec<CString> = env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstring(kv)
        })
        .collect::<Result<_, _>>()
        .map_err(prepare)?;
    let null_terminated = |v: &[CString]| {
        v.iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<_>>()
    };
    let devnull = if spec.stdin {
        None
    } else {
        Some(
            std::fs::File::open("/dev/null")
                .map(OwnedFd::from)
                .map_err(prepare)?,
        )
    };
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| prepare(e.into()))?;
    let into = spec.cgroup.and_then(|c| c.unified_fd());
    let ctx = |join_unified: bool| ChildCtx {
        exe: exe.clone(),
        argv: null_terminated(&args),
        envp: null_terminated(&vars),
        cwd: CString::new(spec.cwd.as_os_str().as_bytes()).unwrap_or_default(),
        stdin: devnull.as_ref().map(AsRawFd::as_raw_fd),
        stdout: spec.stdout.as_raw_fd(),
        stderr: spec.stderr.as_raw_fd(),
        join: spec
            .cgroup
            .map(|c| c.procs_fds(join_unified))
            .unwrap_or_default(),
        rlimits: spec.rlimits,
        contain: spec.contain,
        parent: std::process::id() as libc::pid_t,
        report: report_w.as_raw_fd(),
    };
    let born_in = ctx(false);
    let mut pidfd: RawFd = -1;
    let blocked = Blocked::all();
    // Where nothing joins at birth, the child shares this memory until it execs.
    let mut pid = -1;
    if into.is_none() {
        // SAFETY: the child runs only `child_main` on `born_in`, which outlives it
        // here: this thread is suspended until the child has exec'd or exited.
        pid = unsafe { clone_shared(&born_in, &mut pidfd) };
    }
    if pid < 0 {
        // SAFETY: clone3 without CLONE_VM is a fork; the child runs only `child_main`.
        pid = unsafe { clone3(&mut pidfd, into) };
    }
    let mut joined_ctx = None;
    if pid < 0 && into.is_some() {
        // A kernel without CLONE_INTO_CGROUP (before 5.7): join through cgroup.procs.
        joined_ctx = Some(ctx(true));
        // SAFETY: as above.
        pid = unsafe { clone3(&mut pidfd, None) };
    }
    let use_ctx = joined_ctx.as_ref().unwrap_or(&born_in);
    if pid == 0 {
        // SAFETY: in the child: only system calls on what `use_ctx` holds.
        unsafe { child_main(use_ctx) }
    }
    if pid < 0 {
        let clone_err = io::Error::last_os_error();
        if !matches!(
            clone_err.raw_os_error(),
            Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::E2BIG)
        ) {
            return Err(fail(Step::Clone, clone_err));
        }
        // No clone3 at all (before 5.3): fork, and join the unified tree by writing.
        let forked = ctx(true);
        // SAFETY: fork; the child runs only `child_main`.
        pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: in the child, as above.
            unsafe { child_main(&forked) }
        }
        if pid < 0 {
            return Err(fail(Step::Clone, io::Error::last_os_error()));
        }
        pidfd = -1;
    }
    drop(blocked);
    drop(report_w);
    drop(devnull);
    // The parent's copies of the child's output pipes close here.
    drop(spec.stdout);
    drop(spec.stderr);
    // An empty read: exec succeeded (the pipe closed with it). Else the step and errno.
    let mut buf = [0u8; 8];
    let n = read_full(report_r.as_raw_fd(), &mut buf);
    if n == 8 {
        let step = Step::from_code(u32::from_ne_bytes(buf[..4].try_into().expect("4 bytes")));
        let errno = i32::from_ne_bytes(buf[4..].try_into().expect("4 bytes"));
        // SAFETY: reaping our own child, which exits right after reporting.
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
            if pidfd >= 0 {
                libc::close(pidfd);
            }
        }
        return Err(fail(step, io::Error::from_raw_os_error(errno)));
    }
    let pidfd = if pidfd >= 0 {
        // SAFETY: a fresh descriptor from CLONE_PIDFD, owned by us.
        unsafe { OwnedFd::from_raw_fd(pidfd) }
    } else {
        match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                // SAFETY: killing and reaping our own child.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(fail(Step::Clone, e));
            }
        }
    };
    Ok(Spawned { pid, pidfd })
}

fn read_full(fd: RawFd, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the rest of a local buffer.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n > 0 {
            got += n as usize;
        } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    got
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open on our own child, which is not reaped yet; no wrapper exists.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by us.
    Ok(unsafe { OwnedFd::from_raw_fd(raw as RawFd) })
}

/// The child's stack while it shares the runner's memory: what `child_main` needs,
/// many times over.
const SHARED_STACK: usize = 256 << 10;

/// Clone a child that shares this process's memory until it execs (`CLONE_VM |
/// CLONE_VFORK`, as `posix_spawn` does), on a stack of its own below a guard page: no
/// copy of the runner's page tables to make, no copy-on-write faults in the child, no
/// copy to tear down at exec. glibc's `clone` runs `child_main` on that stack;
/// `clone3`, which alone can join a cgroup at birth, has no wrapper that can, so a
/// child born into its cgroup is cloned as a fork. -1 on failure (errno set), and the
/// caller clones as a fork.
///
/// # Safety
///
/// `ctx` must be what `child_main` may run on, and signals blocked in this thread
/// ([`Blocked`]): none of the runner's handlers may run in the child.
unsafe fn clone_shared(ctx: &ChildCtx<'_>, pidfd: &mut RawFd) -> libc::pid_t {
    extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `ChildCtx` of `clone_shared`, whose caller is suspended
        // until this child has exec'd or exited.
        unsafe { child_main(&*arg.cast::<ChildCtx<'_>>()) }
    }
    // SAFETY: a fresh private mapping, unmapped below once the child has left it; its
    // lowest page is made inaccessible, so an overflow faults instead of writing below.
    unsafe {
        let page = crate::limits::page_size() as usize;
        let len = SHARED_STACK + page;
        let stack = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if stack == libc::MAP_FAILED {
            return -1;
        }
        if libc::mprotect(stack, page, libc::PROT_NONE) != 0 {
            libc::munmap(stack, len);
            return -1;
        }
        let pid = libc::clone(
            entry,
            stack.cast::<u8>().add(len).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            (ctx as *const ChildCtx<'_>).cast_mut().cast(),
            pidfd as *mut RawFd,
        );
        let errno = *libc::__errno_location();
        libc::munmap(stack, len);
        *libc::__errno_location() = errno;
        pid
    }
}

/// Every signal blocked in this thread until dropped: a child starts with them
/// blocked, and unblocks them once the runner's handlers are gone from it.
struct Blocked(libc::sigset_t);

impl Blocked {
    fn all() -> Blocked {
        // SAFETY: sigset_t is plain data; pthread_sigmask only writes `before`.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut before: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before);
            Blocked(before)
        }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // SAFETY: putting back the mask this thread had.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// `clone3` as a fork: the child returns 0, the parent the child's pid (and its pidfd
/// in `pidfd`), -1 on failure (errno set). `into`: the cgroup to be born in.
unsafe fn clone3(pidfd: &mut RawFd, into: Option<RawFd>) -> libc::pid_t {
    // SAFETY: a zeroed clone_args is valid; every pointer in it outlives the call.
    unsafe {
        let mut args: libc::clone_args = std::mem::zeroed();
        args.flags = libc::CLONE_PIDFD as u64;
        args.pidfd = pidfd as *mut RawFd as u64;
        args.exit_signal = libc::SIGCHLD as u64;
        if let Some(fd) = into {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = fd as u64;
        }
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        ) as libc::pid_t
    }
}

/// The child, between clone and exec. Only async-signal-safe system calls: no
/// allocation, no locks (another thread of the runner may have held any when it
/// cloned).
unsafe fn child_main(ctx: &ChildCtx<'_>) -> ! {
    // SAFETY: system calls on descriptors and buffers that `ctx` keeps alive.
    unsafe {
        let fail = |step: Step, errno: i32| -> ! {
            let mut buf = [0u8; 8];
            buf[..4].copy_from_slice(&step.code().to_ne_bytes());
            buf[4..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(ctx.report, buf.as_ptr().cast(), 8);
            libc::_exit(127)
        };
        let errno = || *libc::__errno_location();
        // The runner's handlers write into its memory and its signal pipe: the
        // command gets the default for those, and for SIGPIPE (which the runner
        // ignores), before any signal is unblocked.
        for sig in crate::signals::FORWARDED {
            libc::signal(sig as libc::c_int, libc::SIG_DFL);
        }
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if libc::setsid() < 0 {
            fail(Step::Session, errno());
        }
        if let Err(e) = cgroup::join_in_child(&ctx.join) {
            fail(Step::JoinCgroup, e as i32);
        }
        if let Err((step, e)) = ctx.contain.apply_in_child() {
            fail(Step::Contain(step), e);
        }
        if let Some(r) = ctx.rlimits
            && let Err(e) = r.apply_in_child()
        {
            fail(Step::Rlimits, e as i32);
        }
        // Last before exec: a change of credentials would clear it.
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(Step::ParentDeath, errno());
        }
        if libc::getppid() != ctx.parent {
            // The runner died before the parent-death signal was armed.
            libc::_exit(137);
        }
        for (from, to) in [(ctx.stdin, 0), (Some(ctx.stdout), 1), (Some(ctx.stderr), 2)] {
            let Some(from) = from else { continue };
            let ok = if from == to {
                // Already in place: only the close-on-exec flag must go.
                libc::fcntl(from, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(from, to) == to
            };
            if !ok {
                fail(Step::Stdio, errno());
            }
        }
        if !ctx.cwd.as_bytes().is_empty() && libc::chdir(ctx.cwd.as_ptr()) != 0 {
            fail(Step::Chdir, errno());
        }
        libc::execve(ctx.exe.as_ptr(), ctx.argv.as_ptr(), ctx.envp.as_ptr());
        fail(Step::Exec, errno())
    }
}
