//! Control groups for one run: where cgroups live ([`CgroupFs`]), the run's root
//! ([`RunRoot`]: delegated, a systemd scope, or a subtree of its own), the stage
//! cgroups under it ([`RunCgroup`]) that enforce memory/cpu/pids limits, are joined by
//! the child before it execs, kill the whole tree, report counters and are removed
//! afterwards, and the records by which a later runner cleans up after a dead one.
//!
//! Version-specific file formats live in `v1` and `v2`; mount detection in `detect`;
//! placement in `root`; the stage lifecycle in `run`; asking systemd in `systemd`;
//! records and stale cleanup in `record`.

mod detect;
mod record;
mod root;
mod run;
pub mod systemd;
mod v1;
mod v2;

#[cfg(test)]
mod tests_fake;
#[cfg(test)]
pub(crate) mod tests_real;

use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

pub use detect::{CgroupFs, Ops, Unified, V1Hierarchy};
pub use root::{Placement, RunRoot};
pub use run::RunCgroup;

/// Kill and remove what runners that died left (see `record`); returns the runs cleaned.
pub fn clean_stale(fs: &CgroupFs) -> Vec<String> {
    record::clean_stale(fs, &fs.records)
}

/// Which cgroup interface enforces limits. A hybrid host reports `V1` (controllers are
/// there) and additionally exposes its unified tree through [`CgroupFs::unified`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Limits requested for one run; `None` means "not limited".
#[derive(Default, Clone, Debug)]
pub struct Request {
    /// Bytes.
    pub memory: Option<u64>,
    /// Fractional cores, e.g. `0.5`.
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
}

/// Counters of a run, read before its cgroup is removed.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// OOM kills since the cgroup was created.
    pub oom_kills: u64,
    pub peak_memory: Option<u64>,
    pub cpu_user_ns: Option<u64>,
    pub cpu_system_ns: Option<u64>,
    pub cpu_total_ns: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("failed to read `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write `{value}` to `{path}`")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to open `{path}`")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to create cgroup `{path}`")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to remove cgroup `{path}`")]
    RemoveDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unexpected content in `{path}`: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("no cgroup filesystem is mounted according to `{path}`")]
    NoCgroupMount { path: PathBuf },
    #[error("controller `{controller}` is not available for `{path}`")]
    ControllerMissing {
        controller: &'static str,
        path: PathBuf,
    },
    #[error("processes still in `{path}` after killing: {pids:?}")]
    KillTimeout { path: PathBuf, pids: Vec<i32> },
    #[error("invalid cpus value {value} for `{path}`: must be a positive finite number")]
    InvalidCpus { value: f64, path: PathBuf },
    #[error("cannot record the run's cgroups in `{path}`")]
    Record {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the cgroup `{own}` is not delegated to this process, and asking systemd for a scope failed"
    )]
    Systemd {
        own: PathBuf,
        #[source]
        source: systemd::SystemdError,
    },
    #[error("cannot make cgroups under `{path}`: {reason}")]
    NotDelegated { path: PathBuf, reason: &'static str },
}

impl CgroupError {
    /// Ways forward, for errors that have them.
    pub fn hints(&self) -> Vec<&'static str> {
        match self {
            CgroupError::Systemd { .. } | CgroupError::NotDelegated { .. } => vec![
                "as a user without root: `loginctl enable-linger $USER` keeps your systemd user manager running, which can delegate cgroups",
                "or run the runner inside a delegated scope: `systemd-run --user --scope -p Delegate=yes runner launch …`",
                "or `--best-effort-limits` runs without these limits (the result says so)",
                "`runner doctor` shows what this host and user can enforce",
            ],
            CgroupError::ControllerMissing { .. } => vec![
                "`runner doctor` shows which controllers are delegated here",
                "or `--best-effort-limits` runs without these limits (the result says so)",
            ],
            CgroupError::CreateDir { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                vec![
                    "these cgroups belong to root: run as root, or as a user where systemd delegates cgroup v2 to you (`runner doctor` says whether this host does)",
                    "or `--best-effort-limits` runs without these limits (the result says so)",
                ]
            }
            _ => Vec::new(),
        }
    }
}

pub(crate) fn read_string(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Write `value` in one `write(2)`, as cgroupfs expects. Never creates a file; O_TRUNC
/// is ignored by cgroupfs (as with a shell's `>`) and keeps fake trees in tests honest.
pub(crate) fn write_value(path: &Path, value: &str) -> Result<(), CgroupError> {
    use std::io::Write;
    let err = |source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

/// Open a `cgroup.procs` file for the child to write into after fork.
pub(crate) fn open_procs(path: &Path) -> Result<File, CgroupError> {
    // std opens with O_CLOEXEC already; the fd must not leak into the step.
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|source| CgroupError::Open {
            path: path.to_owned(),
            source,
        })
}

/// Value of `key` in a flat-keyed file such as `memory.events` or `cpu.stat`.
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

/// Pids listed in a `cgroup.procs` text.
pub(crate) fn parse_pids(text: &str) -> Vec<i32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Join the cgroups whose `cgroup.procs` fds were opened before fork.
///
/// Async-signal-safe: meant for `pre_exec` (no allocation, no locks).
pub fn join_in_child(fds: &[RawFd]) -> Result<(), nix::errno::Errno> {
    for &fd in fds {
        // SAFETY: `write` is async-signal-safe; the buffer is a static 1-byte slice and
        // `fd` is a descriptor the parent opened and kept open across fork.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if n != 1 {
            return Err(nix::errno::Errno::last());
        }
    }
    Ok(())
}
