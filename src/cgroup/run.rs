//! The cgroup of one run: creation with limits, joining, killing, counters, removal,
//! and the naming (pid + start time) that `stale` relies on.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::limits::{Enforcement, LimitKind};

use super::{
    CgroupError, CgroupFs, Request, Stats, Version, keyed, open_procs, parse_pids, read_string, v1,
    v2, write_value,
};

/// Sub-directory of the runner's own cgroup that holds run cgroups.
pub(crate) const BASE: &str = "steprunner";
pub(crate) const CPU_PERIOD_US: u64 = 100_000;
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
const RMDIR_TIMEOUT: Duration = Duration::from_secs(2);

/// v1 controllers a run cgroup is created in (when mounted).
const V1_CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];

/// `quota = cpus * period`, rounded, at least 1000 µs (the kernel minimum is 1 ms).
pub(crate) fn cpu_quota(cpus: f64) -> u64 {
    ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000)
}

/// One run's cgroup, in every hierarchy it needs.
#[derive(Debug)]
pub struct RunCgroup {
    name: String,
    version: Version,
    /// v1 directories per controller (comounted controllers share one directory).
    memory: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    freezer: Option<PathBuf>,
    /// The unified-tree directory: the only one on v2, the kill/events helper on hybrid.
    unified: Option<PathBuf>,
    /// Every directory of this run, each once, in creation order.
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of every directory, opened before fork for `join_in_child`.
    procs: Vec<File>,
    oom_baseline: u64,
    enforcement: Vec<(LimitKind, Enforcement)>,
}

impl RunCgroup {
    /// `<pid>-<start time>-<run id>`: lets `clean_stale` tell a live owner from a dead one
    /// even if the pid is reused.
    pub fn name_for(run_id: &str) -> Result<String, CgroupError> {
        let path = Path::new("/proc/self/stat");
        let start = crate::util::parse_start_time(&read_string(path)?).ok_or_else(|| {
            CgroupError::Parse {
                path: path.to_owned(),
                detail: "no start time field".into(),
            }
        })?;
        Ok(format!(
            "{}-{start}-{}",
            std::process::id(),
            sanitize(run_id)
        ))
    }

    /// Create `<own cgroup>/steprunner/<name>` everywhere needed and write the limits.
    pub fn create(fs: &CgroupFs, run_id: &str, req: &Request) -> Result<RunCgroup, CgroupError> {
        Self::create_named(fs, &Self::name_for(run_id)?, req)
    }

    /// As [`RunCgroup::create`] with a ready-made name (tests, callers with own naming).
    pub fn create_named(
        fs: &CgroupFs,
        name: &str,
        req: &Request,
    ) -> Result<RunCgroup, CgroupError> {
        let mut rcg = Self::empty(fs, name);
        match rcg.build(fs, req) {
            Ok(()) => Ok(rcg),
            Err(e) => {
                // Leave nothing half-made behind; the original error is what matters.
                let _ = rcg.rmdir_all();
                Err(e)
            }
        }
    }

    fn empty(fs: &CgroupFs, name: &str) -> RunCgroup {
        RunCgroup {
            name: name.to_owned(),
            version: fs.version(),
            memory: None,
            cpuacct: None,
            freezer: None,
            unified: None,
            dirs: Vec::new(),
            procs: Vec::new(),
            oom_baseline: 0,
            enforcement: Vec::new(),
        }
    }

    fn build(&mut self, fs: &CgroupFs, req: &Request) -> Result<(), CgroupError> {
        if let Some(cpus) = req.cpus
            && !(cpus.is_finite() && cpus > 0.0)
        {
            return Err(CgroupError::InvalidCpus {
                value: cpus,
                path: self.leaf_hint(fs),
            });
        }
        match self.version {
            Version::V1 => self.build_v1(fs, req)?,
            Version::V2 => self.build_v2(fs, req)?,
        }
        // v1 hierarchies are joined through `tasks`: moving only the writing thread
        // (`0` = the child itself, single-threaded right after fork) skips the
        // kernel's global threadgroup lock, whose writer waits for an RCU grace
        // period: measured here, 0.5 ms instead of 7.5 ms (up to 19 ms) per launch.
        // The unified tree only has `cgroup.procs`.
        for dir in &self.dirs {
            let file = if Some(dir) == self.unified.as_ref() {
                "cgroup.procs"
            } else {
                "tasks"
            };
            self.procs.push(open_procs(&dir.join(file))?);
        }
        self.oom_baseline = self.read_oom_kills().unwrap_or(0);
        Ok(())
    }

    fn leaf_hint(&self, fs: &CgroupFs) -> PathBuf {
        let own = fs
            .unified()
            .or_else(|| fs.v1_hierarchies().first().map(|h| h.dir.as_path()))
            .unwrap_or(Path::new("/sys/fs/cgroup"));
        own.join(BASE).join(&self.name)
    }

    fn build_v1(&mut self, fs: &CgroupFs, req: &Request) -> Result<(), CgroupError> {
        let required = |c: &str| match c {
            "memory" => req.memory.is_some(),
            "cpu" => req.cpus.is_some(),
            "pids" => req.pids.is_some(),
            _ => false,
        };
        // Check every requested controller before creating anything.
        if let Some(ctrl) = V1_CONTROLLERS
            .into_iter()
            .find(|c| required(c) && fs.v1_dir(c).is_none())
        {
            return Err(CgroupError::ControllerMissing {
                controller: ctrl,
                path: PathBuf::from("/proc/self/mountinfo"),
            });
        }
        let mut by_ctrl: Vec<(&str, PathBuf)> = Vec::new();
        for ctrl in V1_CONTROLLERS {
            let Some(own) = fs.v1_dir(ctrl) else {
                continue;
            };
            let dir = own.join(BASE).join(&self.name);
            if !self.dirs.contains(&dir) {
                make_dir(&dir)?;
                self.dirs.push(dir.clone());
            }
            by_ctrl.push((ctrl, dir));
        }
        let dir_of = |c: &str| {
            by_ctrl
                .iter()
                .find(|(k, _)| *k == c)
                .map(|(_, d)| d.clone())
        };
        self.memory = dir_of("memory");
        self.cpuacct = dir_of("cpuacct");
        self.freezer = dir_of("freezer");
        // On hybrid, the unified tree offers `cgroup.kill` — but joining it costs the
        // slow `cgroup.procs` migration. The v1 freezer kills just as race-free, so the
        // unified tree is used only when there is no freezer.
        if self.freezer.is_none()
            && let Some(own) = fs.unified()
        {
            let dir = own.join(BASE).join(&self.name);
            make_dir(&dir)?;
            self.dirs.push(dir.clone());
            self.unified = Some(dir);
        }
        if let (Some(bytes), Some(dir)) = (req.memory, dir_of("memory")) {
            v1::write_memory(&dir, bytes)?;
            self.enforcement
                .push((LimitKind::Memory, Enforcement::CgroupV1));
        }
        if let (Some(cpus), Some(dir)) = (req.cpus, dir_of("cpu")) {
            v1::write_cpu(&dir, cpus)?;
            self.enforcement
                .push((LimitKind::Cpus, Enforcement::CgroupV1));
        }
        if let (Some(n), Some(dir)) = (req.pids, dir_of("pids")) {
            v1::write_pids(&dir, n)?;
            self.enforcement
                .push((LimitKind::Pids, Enforcement::CgroupV1));
        }
        Ok(())
    }

    fn build_v2(&mut self, fs: &CgroupFs, req: &Request) -> Result<(), CgroupError> {
        let own = fs.unified().ok_or_else(|| CgroupError::NoCgroupMount {
            path: PathBuf::from("/proc/self/mountinfo"),
        })?;
        let (wanted, required) = v2::controllers_for(req);
        v2::enable_controllers(own, &wanted, &required)?;
        let base = own.join(BASE);
        make_dir_if_missing(&base)?;
        v2::enable_controllers(&base, &wanted, &required)?;
        let dir = base.join(&self.name);
        make_dir(&dir)?;
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

    /// Handle on an existing run cgroup (for `clean_stale`): whatever directories exist.
    pub(super) fn open_existing(fs: &CgroupFs, name: &str) -> RunCgroup {
        let mut rcg = Self::empty(fs, name);
        for h in fs.v1_hierarchies() {
            let dir = h.dir.join(BASE).join(name);
            if dir.is_dir() {
                let has = |c: &str| h.controllers.iter().any(|k| k == c);
                if has("memory") {
                    rcg.memory = Some(dir.clone());
                }
                if has("cpuacct") {
                    rcg.cpuacct = Some(dir.clone());
                }
                if has("freezer") {
                    rcg.freezer = Some(dir.clone());
                }
                rcg.dirs.push(dir);
            }
        }
        if let Some(own) = fs.unified() {
            let dir = own.join(BASE).join(name);
            if dir.is_dir() {
                rcg.dirs.push(dir.clone());
                rcg.unified = Some(dir);
            }
        }
        rcg
    }

    #[cfg(test)]
    pub fn version(&self) -> Version {
        self.version
    }

    #[cfg(test)]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every directory of this run (v1 hierarchies, then the unified tree).
    #[cfg(test)]
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// `cgroup.procs` fds (O_WRONLY|O_CLOEXEC) for [`super::join_in_child`].
    pub fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(|f| f.as_raw_fd()).collect()
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
        let mut killed: BTreeSet<i32> = self.pids().into_iter().collect();
        if let Some(u) = &self.unified {
            let kill_file = u.join("cgroup.kill");
            if kill_file.exists() {
                write_value(&kill_file, "1")?;
                if self.wait_empty(Duration::from_secs(1), &mut killed) {
                    return Ok(killed.len());
                }
                // Something is left in a v1 hierarchy only: fall through to the freezer.
            }
        }
        let deadline = Instant::now() + KILL_TIMEOUT;
        loop {
            if self.pids().is_empty() {
                return Ok(killed.len());
            }
            if let Some(fz) = &self.freezer {
                // Thaw even when freezing or killing failed: never leave a frozen tree.
                let result = v1::freeze(fz).and_then(|()| self.kill_listed(&mut killed));
                v1::thaw(fz)?;
                result?;
            } else {
                self.kill_listed(&mut killed)?;
            }
            if self.wait_empty(Duration::from_millis(100), &mut killed) {
                return Ok(killed.len());
            }
            if Instant::now() > deadline {
                return Err(CgroupError::KillTimeout {
                    path: self.dirs.first().cloned().unwrap_or_default(),
                    pids: self.pids(),
                });
            }
        }
    }

    fn kill_listed(&self, killed: &mut BTreeSet<i32>) -> Result<(), CgroupError> {
        for pid in self.pids() {
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
    }

    /// Poll until no process is left; records pids seen meanwhile. `true` if empty.
    fn wait_empty(&self, timeout: Duration, seen: &mut BTreeSet<i32>) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.pids();
            if pids.is_empty() && !self.unified_populated() {
                return true;
            }
            seen.extend(pids);
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn unified_populated(&self) -> bool {
        self.unified
            .as_ref()
            .and_then(|u| read_string(&u.join("cgroup.events")).ok())
            .and_then(|t| keyed(&t, "populated"))
            == Some(1)
    }

    fn read_oom_kills(&self) -> Result<u64, CgroupError> {
        match (self.version, &self.memory, &self.unified) {
            (Version::V1, Some(mem), _) => v1::oom_kills(mem),
            (Version::V2, _, Some(dir)) => v2::oom_kills(dir),
            _ => Ok(0),
        }
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
        self.procs.clear();
        let killed = self.kill_all();
        let removed = self.rmdir_all();
        killed.and(removed)
    }

    fn rmdir_all(&mut self) -> Result<(), CgroupError> {
        self.procs.clear();
        let mut first_err = None;
        for dir in self.dirs.iter().rev() {
            if let Err(e) = rmdir_tree(dir) {
                first_err.get_or_insert(e);
                continue;
            }
            // Drop the shared `steprunner` parent once the last run is gone; another
            // runner creating a sibling right now makes this fail harmlessly.
            if let Some(base) = dir.parent() {
                #[cfg(test)]
                super::tests_fake::clear_if_fake_and_childless(base);
                let _ = std::fs::remove_dir(base);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
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
fn child_dirs(dir: &Path) -> Vec<PathBuf> {
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

fn make_dir(dir: &Path) -> Result<(), CgroupError> {
    let err = |source| CgroupError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    // The shared parent may vanish under us when another runner removes it: retry.
    for _ in 0..5 {
        if let Some(parent) = dir.parent() {
            make_dir_if_missing(parent)?;
        }
        match std::fs::create_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            r => {
                r.map_err(err)?;
                #[cfg(test)]
                super::tests_fake::populate_if_fake(dir);
                return Ok(());
            }
        }
    }
    std::fs::create_dir(dir).map_err(err)
}

fn make_dir_if_missing(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(CgroupError::CreateDir {
            path: dir.to_owned(),
            source: e,
        }),
        Err(_) => Ok(()),
        Ok(()) => {
            #[cfg(test)]
            super::tests_fake::populate_if_fake(dir);
            Ok(())
        }
    }
}

/// Remove `dir` and any child cgroups, deepest first, retrying EBUSY for ~2 s.
fn rmdir_tree(dir: &Path) -> Result<(), CgroupError> {
    for child in child_dirs(dir) {
        rmdir_tree(&child)?;
    }
    #[cfg(test)]
    super::tests_fake::clear_if_fake(dir);
    let deadline = Instant::now() + RMDIR_TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        match std::fs::remove_dir(dir) {
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

/// Keep run ids path-safe and short: `[A-Za-z0-9_.]`, others become `_`.
fn sanitize(run_id: &str) -> String {
    let s: String = run_id
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_rounds_and_has_a_floor() {
        assert_eq!(cpu_quota(0.5), 50_000);
        assert_eq!(cpu_quota(1.234567), 123_457);
        assert_eq!(cpu_quota(0.001), 1000);
    }
}
