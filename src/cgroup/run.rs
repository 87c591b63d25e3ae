//! The cgroup of one stage of a run (`launch`, `prepare`, `cleanup`), made under the
//! run's root ([`super::RunRoot`]): creation with limits, the descriptors a child joins
//! it by, killing the whole tree, counters, and removal — also on drop, so no exit
//! path (a panic included) leaves it behind.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::detect::Ops;
use super::{
    CgroupError, CgroupFs, Request, Stats, Version, keyed, open_procs, parse_pids, read_string, v1,
    v2, write_value,
};
use crate::limits::{Enforcement, LimitKind};

pub(crate) const CPU_PERIOD_US: u64 = 100_000;
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
const RMDIR_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest period the kernel takes (1 s), for shares too small for [`CPU_PERIOD_US`].
const LONG_CPU_PERIOD_US: u64 = 1_000_000;
/// The least quota the kernel takes (1 ms).
const MIN_CPU_QUOTA_US: u64 = 1000;

/// `(quota, period)` in µs for `cpus` cores: `quota = cpus * period`, rounded, in a
/// period of 100 ms — or of 1 s where 100 ms would need a quota under the kernel's least
/// (1 ms, below 0.01 of a core), so that what is enforced is what was asked, down to
/// [`crate::limits::MIN_CPUS`] (refused below it). The quota was raised to 1 ms in
/// 100 ms: `--cpus 0.001` gave the step 0.01 of a core and reported 0.001.
pub(crate) fn cpu_max(cpus: f64) -> (u64, u64) {
    let period = if cpus * CPU_PERIOD_US as f64 >= MIN_CPU_QUOTA_US as f64 {
        CPU_PERIOD_US
    } else {
        LONG_CPU_PERIOD_US
    };
    let quota = ((cpus * period as f64).round() as u64).max(MIN_CPU_QUOTA_US);
    (quota, period)
}

/// One stage's cgroup, in every hierarchy it needs.
#[derive(Debug)]
pub struct RunCgroup {
    ops: Ops,
    version: Version,
    /// v1 directories per controller (comounted controllers share one directory).
    memory: Option<PathBuf>,
    cpu: Option<PathBuf>,
    pids_dir: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    freezer: Option<PathBuf>,
    /// The unified-tree directory: the only one on v2, the kill/events helper on hybrid.
    unified: Option<PathBuf>,
    /// Every directory of this cgroup, each once, in creation order.
    dirs: Vec<PathBuf>,
    /// `tasks`/`cgroup.procs` of every v1 (or fallback) directory, opened before fork
    /// for `join_in_child`.
    procs: Vec<File>,
    /// The v2 directory itself, for `clone3(CLONE_INTO_CGROUP)`.
    unified_fd: Option<File>,
    oom_baseline: u64,
    enforcement: Vec<(LimitKind, Enforcement)>,
    removed: bool,
}

/// Where a stage cgroup goes: `(directory, controllers it carries)` per hierarchy, and
/// the unified directory.
pub(super) struct Parents<'a> {
    pub v1: &'a [(PathBuf, Vec<String>)],
    pub unified: Option<&'a Path>,
}

impl RunCgroup {
    /// Make `name` under each parent and write the limits. Nothing half-made is left
    /// when this fails.
    pub(super) fn create(
        fs: &CgroupFs,
        parents: &Parents<'_>,
        name: &str,
        req: &Request,
    ) -> Result<RunCgroup, CgroupError> {
        let mut rcg = RunCgroup {
            ops: fs.ops,
            version: fs.version(),
            memory: None,
            cpu: None,
            pids_dir: None,
            cpuacct: None,
            freezer: None,
            unified: None,
            dirs: Vec::new(),
            procs: Vec::new(),
            unified_fd: None,
            oom_baseline: 0,
            enforcement: Vec::new(),
            removed: false,
        };
        if let Some(cpus) = req.cpus
            && !(cpus.is_finite() && cpus > 0.0)
        {
            return Err(CgroupError::InvalidCpus {
                value: cpus,
                path: parents
                    .unified
                    .map(Path::to_path_buf)
                    .unwrap_or_default()
                    .join(name),
            });
        }
        match rcg.build(parents, name, req) {
            Ok(()) => Ok(rcg),
            Err(e) => {
                // The original error is what matters.
                let _ = rcg.remove_dirs();
                rcg.removed = true;
                Err(e)
            }
        }
    }

    fn build(
        &mut self,
        parents: &Parents<'_>,
        name: &str,
        req: &Request,
    ) -> Result<(), CgroupError> {
        match self.version {
            Version::V1 => self.build_v1(parents, name, req)?,
            Version::V2 => self.build_v2(parents, name, req)?,
        }
        // v1 hierarchies are joined through `tasks`: moving only the writing thread
        // (`0` = the child itself, single-threaded right after fork) skips the
        // kernel's global threadgroup lock, whose writer waits for an RCU grace
        // period: measured here, 0.5 ms instead of 7.5 ms (up to 19 ms) per launch.
        // The unified tree is joined at birth (`CLONE_INTO_CGROUP`), its
        // `cgroup.procs` kept for kernels without it.
        for dir in &self.dirs {
            let file = if Some(dir) == self.unified.as_ref() {
                "cgroup.procs"
            } else {
                "tasks"
            };
            self.procs.push(open_procs(&dir.join(file))?);
        }
        if let Some(u) = &self.unified {
            self.unified_fd = Some(File::open(u).map_err(|source| CgroupError::Open {
                path: u.clone(),
                source,
            })?);
        }
        self.oom_baseline = self.read_oom_kills().unwrap_or(0);
        Ok(())
    }

    fn build_v1(
        &mut self,
        parents: &Parents<'_>,
        name: &str,
        req: &Request,
    ) -> Result<(), CgroupError> {
        let has = |c: &str| {
            parents
                .v1
                .iter()
                .any(|(_, ctrls)| ctrls.iter().any(|k| k == c))
        };
        for (ctrl, wanted) in [
            ("memory", req.memory.is_some()),
            ("cpu", req.cpus.is_some()),
            ("pids", req.pids.is_some()),
        ] {
            if wanted && !has(ctrl) {
                return Err(CgroupError::ControllerMissing {
                    controller: ctrl,
                    path: PathBuf::from("/proc/self/mountinfo"),
                });
            }
        }
        for (parent, ctrls) in parents.v1 {
            let dir = parent.join(name);
            make_dir(self.ops, &dir)?;
            self.dirs.push(dir.clone());
            let carries = |c: &str| ctrls.iter().any(|k| k == c);
            if carries("memory") {
                self.memory = Some(dir.clone());
            }
            if carries("cpu") {
                self.cpu = Some(dir.clone());
            }
            if carries("pids") {
                self.pids_dir = Some(dir.clone());
            }
            if carries("cpuacct") {
                self.cpuacct = Some(dir.clone());
            }
            if carries("freezer") {
                self.freezer = Some(dir.clone());
            }
        }
        if let (Some(bytes), Some(dir)) = (req.memory, &self.memory) {
            v1::write_memory(dir, bytes)?;
            self.enforcement
                .push((LimitKind::Memory, Enforcement::CgroupV1));
        }
        if let (Some(cpus), Some(dir)) = (req.cpus, &self.cpu) {
            v1::write_cpu(dir, cpus)?;
            self.enforcement
                .push((LimitKind::Cpus, Enforcement::CgroupV1));
        }
        if let (Some(n), Some(dir)) = (req.pids, &self.pids_dir) {
            v1::write_pids(dir, n)?;
            self.enforcement
                .push((LimitKind::Pids, Enforcement::CgroupV1));
        }
        if let Some(u) = parents.unified {
            let dir = u.join(name);
            make_dir(self.ops, &dir)?;
            self.dirs.push(dir.clone());
            self.unified = Some(dir);
        }
        Ok(())
    }

    fn build_v2(
        &mut self,
        parents: &Parents<'_>,
        name: &str,
        req: &Request,
    ) -> Result<(), CgroupError> {
        let parent = parents.unified.ok_or_else(|| CgroupError::NoCgroupMount {
            path: PathBuf::from("/proc/self/mountinfo"),
        })?;
        v2::check_controllers(parent, req)?;
        let dir = parent.join(name);
        make_dir(self.ops, &dir)?;
        self.dirs.push(dir.clone());
        self.unified = Some(dir.clone());
        v2::write_limits(&dir, req)?;
        for (limit, on) in [
            (LimitKind::Memory, req.memory.is_some()),
            (LimitKind::Cpus, req.cpus.is_some()),
            (LimitKind::Pids, req.pids.is_some()),
        ] {
            if on {
                self.enforcement.push((limit, Enforcement::CgroupV2));
            }
        }
        Ok(())
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Every directory of this cgroup (v1 hierarchies, then the unified tree).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Descriptors (O_WRONLY|O_CLOEXEC) for [`super::join_in_child`]: the v1 ones, and
    /// the unified one when `with_unified` (a child not born into it).
    pub fn procs_fds(&self, with_unified: bool) -> Vec<RawFd> {
        self.dirs
            .iter()
            .zip(&self.procs)
            .filter(|(d, _)| with_unified || Some(*d) != self.unified.as_ref())
            .map(|(_, f)| f.as_raw_fd())
            .collect()
    }

    /// The unified directory's descriptor, for `clone3(CLONE_INTO_CGROUP)`.
    pub fn unified_fd(&self) -> Option<RawFd> {
        self.unified_fd.as_ref().map(|f| f.as_raw_fd())
    }

    /// How each requested limit is enforced.
    pub fn enforcement(&self) -> &[(LimitKind, Enforcement)] {
        &self.enforcement
    }

    /// Is any process still in the cgroup (or below it)?
    pub fn populated(&self) -> bool {
        if let Some(u) = &self.unified
            && let Ok(text) = read_string(&u.join("cgroup.events"))
            && let Some(p) = keyed(&text, "populated")
        {
            // On hybrid a process may have left the unified dir only; check v1 too.
            return p == 1 || (self.version == Version::V1 && !self.pids().is_empty());
        }
        !self.pids().is_empty()
    }

    /// Pids in the cgroup and its descendants, across all hierarchies, sorted.
    pub fn pids(&self) -> Vec<i32> {
        let mut all = BTreeSet::new();
        for dir in &self.dirs {
            collect_pids(dir, &mut all);
        }
        all.into_iter().collect()
    }

    /// Send `sig` to every process in the cgroup; returns how many were signalled.
    pub fn signal_all(&self, sig: Signal) -> usize {
        self.pids()
            .into_iter()
            .filter(|&p| kill(Pid::from_raw(p), sig).is_ok())
            .count()
    }

    /// SIGKILL everything, race-free (no fork can escape), and wait until empty.
    /// Returns the number of distinct processes seen and killed.
    pub fn kill_all(&self) -> Result<usize, CgroupError> {
        kill_tree(&self.dirs, self.unified.as_deref(), self.freezer.as_deref())
    }

    fn read_oom_kills(&self) -> Result<u64, CgroupError> {
        match (self.version, &self.memory, &self.unified) {
            (Version::V1, Some(mem), _) => v1::oom_kills(mem),
            (Version::V2, _, Some(dir)) => v2::oom_kills(dir),
            _ => Ok(0),
        }
    }

    /// The current memory use (for sampling where the kernel keeps no peak).
    pub fn memory_current(&self) -> Option<u64> {
        match self.version {
            Version::V1 => self.memory.as_deref().and_then(v1::memory_current),
            Version::V2 => self.unified.as_deref().and_then(v2::memory_current),
        }
    }

    /// Memory in use and CPU time used so far (ns), for the step's profile: one or two
    /// small reads, cheap enough to take often.
    pub fn usage_now(&self) -> (Option<u64>, Option<u64>) {
        let cpu = match (self.version, &self.cpuacct, &self.unified) {
            (Version::V1, Some(dir), _) => v1::cpu_total_ns(dir),
            (_, _, Some(dir)) => v2::cpu_ns(dir).2,
            _ => None,
        };
        (self.memory_current(), cpu)
    }

    /// Counters since creation; read them before [`RunCgroup::remove`].
    pub fn stats(&self) -> Stats {
        let oom_kills = self
            .read_oom_kills()
            .map_or(0, |n| n.saturating_sub(self.oom_baseline));
        let (peak_memory, cpu) = match self.version {
            Version::V1 => {
                let peak = self.memory.as_deref().and_then(v1::peak_memory);
                let cpu = match (&self.cpuacct, &self.unified) {
                    (Some(dir), _) => v1::cpu_ns(dir),
                    // No cpuacct mounted: the unified tree still accounts cpu time.
                    (None, Some(dir)) => v2::cpu_ns(dir),
                    (None, None) => (None, None, None),
                };
                (peak, cpu)
            }
            Version::V2 => match &self.unified {
                Some(dir) => (v2::peak_memory(dir), v2::cpu_ns(dir)),
                None => (None, (None, None, None)),
            },
        };
        Stats {
            oom_kills,
            peak_memory,
            cpu_user_ns: cpu.0,
            cpu_system_ns: cpu.1,
            cpu_total_ns: cpu.2,
        }
    }

    /// Kill everything, wait until empty, then remove every directory (children first).
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.removed = true;
        self.procs.clear();
        self.unified_fd = None;
        let killed = self.kill_all();
        let removed = self.remove_dirs();
        killed.and(removed.map(|_| ()))
    }

    fn remove_dirs(&mut self) -> Result<(), CgroupError> {
        self.procs.clear();
        self.unified_fd = None;
        let mut first_err = None;
        for dir in self.dirs.iter().rev() {
            if let Err(e) = rmdir_tree(self.ops, dir, true) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for RunCgroup {
    /// A cgroup nobody removed (an early return, a panic): kill and remove it now.
    fn drop(&mut self) {
        if !self.removed {
            self.removed = true;
            let _ = self.kill_all();
            let _ = self.remove_dirs();
        }
    }
}

/// SIGKILL everything under `dirs`, race-free: `cgroup.kill` where the unified tree
/// has it, else the v1 freezer (frozen, killed, thawed), else killing what is listed
/// until nothing is. Returns the number of distinct processes seen.
pub(super) fn kill_tree(
    dirs: &[PathBuf],
    unified: Option<&Path>,
    freezer: Option<&Path>,
) -> Result<usize, CgroupError> {
    let pids = || {
        let mut all = BTreeSet::new();
        for d in dirs {
            collect_pids(d, &mut all);
        }
        all
    };
    let unified_populated = || {
        unified
            .and_then(|u| read_string(&u.join("cgroup.events")).ok())
            .and_then(|t| keyed(&t, "populated"))
            == Some(1)
    };
    // The first look also serves the loop's first check below: a run whose processes
    // are all gone (the usual end) reads each `cgroup.procs` once.
    let mut first = Some(pids());
    let mut killed: BTreeSet<i32> = first.clone().unwrap_or_default();
    // Poll until no process is left; records pids seen meanwhile. `true` if empty.
    let wait_empty = |timeout: Duration, seen: &mut BTreeSet<i32>| {
        let deadline = Instant::now() + timeout;
        loop {
            let now = pids();
            if now.is_empty() && !unified_populated() {
                return true;
            }
            seen.extend(now);
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    if let Some(u) = unified {
        let kill_file = u.join("cgroup.kill");
        if kill_file.exists() {
            // What was listed before the kill says nothing of what is left after it.
            first = None;
            write_value(&kill_file, "1")?;
            if wait_empty(Duration::from_secs(1), &mut killed) {
                return Ok(killed.len());
            }
            // Something is left in a v1 hierarchy only: fall through to the freezer.
        }
    }
    let kill_listed = |killed: &mut BTreeSet<i32>| -> Result<(), CgroupError> {
        for pid in pids() {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {
                    killed.insert(pid);
                }
                Err(e) => {
                    return Err(CgroupError::Write {
                        path: PathBuf::from(format!("/proc/{pid}")),
                        value: "SIGKILL".into(),
                        source: io::Error::from(e),
                    });
                }
            }
        }
        Ok(())
    };
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        if first.take().unwrap_or_else(pids).is_empty() && !unified_populated() {
            return Ok(killed.len());
        }
        if let Some(fz) = freezer {
            // Thaw even when freezing or killing failed: never leave a frozen tree.
            let result = v1::freeze(fz).and_then(|()| kill_listed(&mut killed));
            v1::thaw(fz)?;
            result?;
        } else {
            kill_listed(&mut killed)?;
        }
        if wait_empty(Duration::from_millis(100), &mut killed) {
            return Ok(killed.len());
        }
        if Instant::now() > deadline {
            return Err(CgroupError::KillTimeout {
                path: dirs.first().cloned().unwrap_or_default(),
                pids: pids().into_iter().collect(),
            });
        }
    }
}

/// Kill everything under `root` and remove it (children first; `root` itself only when
/// `owned`): what a stale run left.
pub(super) fn remove_tree(fs: &CgroupFs, root: &Path, owned: bool) -> Result<(), CgroupError> {
    if !root.is_dir() {
        return Ok(());
    }
    let is_unified = fs
        .unified_tree()
        .is_some_and(|u| root.starts_with(&u.mount));
    let freezer = fs
        .v1_hierarchies()
        .iter()
        .find(|h| root.starts_with(&h.mount) && h.controllers.iter().any(|c| c == "freezer"))
        .map(|_| root);
    let dirs = [root.to_path_buf()];
    kill_tree(&dirs, is_unified.then_some(root), freezer)?;
    rmdir_tree(fs.ops, root, owned)
}

fn collect_pids(dir: &Path, out: &mut BTreeSet<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(parse_pids(&text));
    }
    for child in child_dirs(dir) {
        collect_pids(&child, out);
    }
}

/// The sub-directories of `dir`. A directory's link count is 2 + its sub-directories
/// (cgroupfs keeps it so, as do the usual filesystems), so the common case — a run
/// cgroup without children — costs one `stat` instead of listing its 30-odd files.
/// A link count below 2 (a filesystem that does not count) still lists.
pub(super) fn child_dirs(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata(dir).is_ok_and(|m| m.nlink() == 2) {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

pub(super) fn make_dir(ops: Ops, dir: &Path) -> Result<(), CgroupError> {
    (ops.mkdir)(dir).map_err(|source| CgroupError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

/// Make `dir` unless it exists (a shared base another runner may be making too).
pub(super) fn make_dir_if_missing(ops: Ops, dir: &Path) -> Result<(), CgroupError> {
    match (ops.mkdir)(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(CgroupError::CreateDir {
            path: dir.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Remove `dir`'s child cgroups, deepest first, and `dir` itself when `self_too`,
/// retrying EBUSY for ~2 s (a cgroup just emptied can be busy for a moment).
pub(super) fn rmdir_tree(ops: Ops, dir: &Path, self_too: bool) -> Result<(), CgroupError> {
    for child in child_dirs(dir) {
        rmdir_tree(ops, &child, true)?;
    }
    if !self_too {
        return Ok(());
    }
    let deadline = Instant::now() + RMDIR_TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        match (ops.rmdir)(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(source) => {
                return Err(CgroupError::RemoveDir {
                    path: dir.to_owned(),
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_rounds_and_small_shares_take_a_longer_period() {
        assert_eq!(cpu_max(0.5), (50_000, 100_000));
        assert_eq!(cpu_max(1.234567), (123_457, 100_000));
        assert_eq!(cpu_max(0.01), (1000, 100_000));
        // Below 0.01 of a core the quota would be under the kernel's least in 100 ms.
        assert_eq!(cpu_max(0.005), (5000, 1_000_000));
        assert_eq!(cpu_max(0.001), (1000, 1_000_000));
        assert_eq!(cpu_max(crate::limits::MIN_CPUS), (1000, 1_000_000));
    }
}
