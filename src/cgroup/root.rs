//! Where one run's cgroups go: the run's root, acquired once before anything runs, with
//! the stage cgroups (`launch`, `prepare`, `cleanup`) made under it.
//!
//! cgroup v2 is used the way it asks to be: a process only manages a subtree delegated
//! to it, and a cgroup that distributes resources to children holds no process itself
//! (the "no internal processes" rule). So, in order:
//!
//! - **Delegated:** this process is alone in a cgroup delegated to it (the main process
//!   of a `Delegate=yes` service, the first process of a container with its own cgroup
//!   namespace): it moves itself into a leaf, `steprunner-supervisor`, and makes the run
//!   as `steprunner-RUN` beside it; at the end it moves back.
//! - **Beside:** this process is in a leaf of a subtree delegated to its unit, and the
//!   unit's own cgroup holds no process (a `Delegate=yes` service with
//!   `DelegateSubgroup=`, or one whose main process moved itself into a leaf; under
//!   systemd's user manager alike; a container whose init did the same at the root of
//!   its cgroup namespace): the run is `steprunner-RUN` in that cgroup, beside the
//!   caller's leaf. Nothing moves and no manager is asked: the fast path.
//! - **Scope:** under systemd, anywhere else (a service without `Delegate=`, a login
//!   session, an unprivileged user): it asks the manager (the system's for root, the
//!   user's otherwise) for a transient scope `steprunner-RUN.scope` with `Delegate=yes`
//!   holding this process, moves into its leaf `supervisor`, and the stage cgroups are
//!   the scope's other children. systemd removes the scope when the run's last process
//!   is gone.
//! - **Unmanaged:** without systemd, root makes `steprunner-RUN` at the top of the
//!   hierarchy (where the rule does not apply) and stays where it is.
//!
//! Anything else is a clear error naming the cause and the ways forward. On cgroup v1
//! the run's root is `steprunner-RUN` under this process's own cgroup in each
//! hierarchy, as v1 allows. A run's root is its own: no shared parent is made or
//! removed, so concurrent runs never race on one.
//!
//! Every root is recorded ([`super::record`]) before its cgroups exist, so a runner
//! that dies leaves nothing that the next one does not remove.

use std::path::{Path, PathBuf};

use super::detect::Ops;
use super::record::{Record, Root};
use super::run::{Parents, RunCgroup, make_dir, make_dir_if_missing, rmdir_tree};
use super::systemd::{self, Manager};
use super::{CgroupError, CgroupFs, Request, Version, parse_pids, read_string, v2, write_value};

/// The cgroup of a run outside systemd: `steprunner-RUN`.
pub fn run_dir_name(run: &str) -> String {
    format!("steprunner-{run}")
}

/// The systemd unit of a run's scope: `steprunner-RUN.scope`.
pub fn scope_unit(run: &str) -> String {
    format!("{}.scope", run_dir_name(run))
}

/// v1 controllers a run's cgroups are made in (where mounted).
const V1_CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];

/// The leaf this process moves into inside a cgroup it is delegated.
const SUPERVISOR: &str = "steprunner-supervisor";
/// The leaf it moves into inside its own scope.
const SCOPE_SUPERVISOR: &str = "supervisor";

/// How the run's cgroups were placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    V1,
    Delegated,
    Beside,
    Scope(Manager),
    Unmanaged,
}

impl Placement {
    pub fn describe(self) -> &'static str {
        match self {
            Placement::V1 => "cgroup v1, under the runner's own cgroups",
            Placement::Delegated => "cgroup v2, in the cgroup delegated to the runner",
            Placement::Beside => {
                "cgroup v2, beside the runner in the subtree delegated to its unit"
            }
            Placement::Scope(Manager::System) => {
                "cgroup v2, in a delegated scope of the system's systemd"
            }
            Placement::Scope(Manager::User) => {
                "cgroup v2, in a delegated scope of the user's systemd"
            }
            Placement::Unmanaged => "cgroup v2, under the hierarchy's root",
        }
    }
}

/// Where this process went to leave a delegated cgroup free for children.
#[derive(Debug)]
struct Moved {
    /// The cgroup it came from (and returns to).
    home: PathBuf,
    /// The leaf it is in.
    leaf: PathBuf,
    /// Controllers it enabled in `home` (to disable again).
    enabled: Vec<&'static str>,
}

/// One run's cgroup root.
#[derive(Debug)]
pub struct RunRoot {
    fs: CgroupFs,
    placement: Placement,
    /// v1: the run's directory in each hierarchy, with its controllers.
    v1: Vec<(PathBuf, Vec<String>)>,
    /// v2: the run's directory; on hybrid hosts without a freezer, the unified tree's.
    unified: Option<PathBuf>,
    /// The run's directories are ours to remove (not a scope's).
    owned: bool,
    moved: Option<Moved>,
    record: Option<Record>,
    released: bool,
}

fn pid() -> String {
    std::process::id().to_string()
}

/// Is `dir` this process's alone?
fn alone_in(dir: &Path) -> bool {
    read_string(&dir.join("cgroup.procs"))
        .map(|t| parse_pids(&t) == [std::process::id() as i32])
        .unwrap_or(false)
}

/// Delegated to us: writable by us, and (under systemd) marked delegated by it, or, for
/// a unit of our own user manager, `Delegate=yes` by its word.
fn delegated(dir: &Path, systemd: bool) -> bool {
    use nix::unistd::{AccessFlags, access};
    let writable = ["cgroup.procs", "cgroup.subtree_control"]
        .iter()
        .all(|f| access(&dir.join(f), AccessFlags::W_OK).is_ok())
        && access(dir, AccessFlags::W_OK).is_ok();
    if !writable {
        return false;
    }
    if !systemd {
        return true;
    }
    // systemd marks the cgroups it delegates (`Delegate=yes`) with this attribute.
    if ["trusted.delegate", "user.delegate"]
        .iter()
        .any(|a| xattr(dir, a).is_some_and(|v| v == b"1"))
    {
        return true;
    }
    // The user manager of systemd 252 marks nothing: a unit in its tree is asked about.
    let uid = nix::unistd::geteuid();
    let in_users_tree = dir
        .to_str()
        .is_some_and(|p| p.contains(&format!("/user@{uid}.service/")));
    match unit_name(dir) {
        Some(unit) if !uid.is_root() && in_users_tree => {
            systemd::unit_delegated(Manager::User, unit).unwrap_or(false)
        }
        _ => false,
    }
}

/// The systemd unit whose cgroup `dir` is, by its name (`*.service`, `*.scope`).
fn unit_name(dir: &Path) -> Option<&str> {
    dir.file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.ends_with(".service") || n.ends_with(".scope"))
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: getxattr with valid NUL-terminated strings and a buffer of the given length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

/// The cgroup of this process's unit, when this process is in a leaf below it, the unit
/// is delegated and its cgroup holds no process: where a run can go beside the caller.
///
/// Under systemd the unit's cgroup is the nearest `*.service` or `*.scope` at or above
/// this process's, and it must be delegated (see [`delegated`]; a manager's own tree,
/// such as `user@UID.service`, is its manager's: the walk stops at the first unit).
/// Without systemd only the root of a cgroup namespace qualifies (a container's own
/// cgroup), never the real root (that is [`Placement::Unmanaged`]).
pub(super) fn beside(u: &super::detect::Unified, systemd: bool) -> Option<PathBuf> {
    let unit = if systemd {
        u.dir
            .ancestors()
            .take_while(|d| d.starts_with(&u.mount) && *d != u.mount)
            .find(|d| unit_name(d).is_some())?
            .to_path_buf()
    } else {
        if real_root(&u.mount) {
            return None;
        }
        u.mount.clone()
    };
    let empty = read_string(&unit.join("cgroup.procs")).is_ok_and(|t| parse_pids(&t).is_empty());
    (unit != u.dir && empty && delegated(&unit, systemd)).then_some(unit)
}

/// Enable what of `wanted` is available in `dir`'s `cgroup.subtree_control`; returns
/// what this call enabled.
fn enable(dir: &Path, wanted: &[&'static str]) -> Result<Vec<&'static str>, CgroupError> {
    let available = read_string(&dir.join("cgroup.controllers"))?;
    let enabled = read_string(&dir.join("cgroup.subtree_control"))?;
    let has = |text: &str, c: &str| {
        text.split_whitespace()
            .any(|x| x.trim_start_matches('+') == c)
    };
    let new: Vec<&'static str> = wanted
        .iter()
        .copied()
        .filter(|c| has(&available, c) && !has(&enabled, c))
        .collect();
    if !new.is_empty() {
        let line: Vec<String> = new.iter().map(|c| format!("+{c}")).collect();
        write_value(&dir.join("cgroup.subtree_control"), &line.join(" "))?;
    }
    Ok(new)
}

/// Move this process into the cgroup `dir`.
fn move_self(dir: &Path) -> Result<(), CgroupError> {
    write_value(&dir.join("cgroup.procs"), &pid())
}

/// The hierarchy root as seen here is the real root (which alone has no `cgroup.type`).
fn real_root(mount: &Path) -> bool {
    !mount.join("cgroup.type").exists()
}

impl RunRoot {
    /// Acquire the root of run `run`'s cgroups (see the module's notes).
    pub fn acquire(fs: &CgroupFs, run: &str) -> Result<RunRoot, CgroupError> {
        let mut root = RunRoot {
            fs: fs.clone(),
            placement: Placement::V1,
            v1: Vec::new(),
            unified: None,
            owned: true,
            moved: None,
            record: None,
            released: false,
        };
        match root.place(run) {
            Ok(()) => Ok(root),
            Err(e) => {
                root.release();
                Err(e)
            }
        }
    }

    fn record(&mut self, run: &str, roots: Vec<Root>) -> Result<(), CgroupError> {
        let dir = self.fs.records.clone();
        let rec = Record::create(&dir, run, &roots).map_err(|source| CgroupError::Record {
            path: dir.join(run),
            source,
        })?;
        self.record = Some(rec);
        Ok(())
    }

    /// The run's own v2 directory `dir`: recorded, made, its controllers enabled.
    fn own_run_dir(
        &mut self,
        run: &str,
        dir: PathBuf,
        placement: Placement,
    ) -> Result<(), CgroupError> {
        self.record(run, vec![Root::new(&self.fs, dir.clone(), true)])?;
        make_dir(self.fs.ops, &dir)?;
        enable(&dir, &v2::WANTED)?;
        self.unified = Some(dir);
        self.placement = placement;
        Ok(())
    }

    fn place(&mut self, run: &str) -> Result<(), CgroupError> {
        let ops = self.fs.ops;
        if self.fs.version() == Version::V1 {
            // Only the hierarchies whose controllers a run uses: others, such as
            // cpuset, refuse a task until they are configured.
            let mut roots = Vec::new();
            for h in self.fs.v1_hierarchies() {
                if h.controllers
                    .iter()
                    .any(|c| V1_CONTROLLERS.contains(&c.as_str()))
                {
                    roots.push((h.dir.join(run_dir_name(run)), h.controllers.clone()));
                }
            }
            let has_freezer = roots.iter().any(|(_, c)| c.iter().any(|c| c == "freezer"));
            // On hybrid, the unified tree offers `cgroup.kill` — but joining it costs the
            // slow `cgroup.procs` migration. The v1 freezer kills just as race-free, so the
            // unified tree is used only when there is no freezer.
            let unified = (!has_freezer)
                .then(|| self.fs.unified().map(|u| u.join(run_dir_name(run))))
                .flatten();
            let mut recorded: Vec<Root> = roots
                .iter()
                .map(|(p, _)| Root::new(&self.fs, p.clone(), true))
                .collect();
            recorded.extend(unified.iter().map(|p| Root::new(&self.fs, p.clone(), true)));
            self.record(run, recorded)?;
            for dir in roots.iter().map(|(p, _)| p).chain(unified.iter()) {
                make_dir(ops, dir)?;
            }
            self.v1 = roots;
            self.unified = unified;
            self.placement = Placement::V1;
            return Ok(());
        }
        let u = self
            .fs
            .unified_tree()
            .cloned()
            .ok_or_else(|| CgroupError::NoCgroupMount {
                path: PathBuf::from("/proc/self/mountinfo"),
            })?;
        if alone_in(&u.dir) && delegated(&u.dir, self.fs.systemd) {
            // Ours alone: step into a leaf, and keep the run beside it.
            let leaf = u.dir.join(SUPERVISOR);
            make_dir_if_missing(ops, &leaf)?;
            move_self(&leaf)?;
            self.moved = Some(Moved {
                home: u.dir.clone(),
                leaf,
                enabled: Vec::new(),
            });
            let enabled = enable(&u.dir, &v2::WANTED)?;
            if let Some(m) = &mut self.moved {
                m.enabled = enabled;
            }
            return self.own_run_dir(run, u.dir.join(run_dir_name(run)), Placement::Delegated);
        }
        if let Some(unit) = beside(&u, self.fs.systemd) {
            // Controllers enabled here stay: other runs beside this one may use them,
            // and disabling one a child uses would fail or lift its limits.
            enable(&unit, &v2::WANTED)?;
            return self.own_run_dir(run, unit.join(run_dir_name(run)), Placement::Beside);
        }
        if self.fs.systemd {
            let manager = Manager::for_me();
            let unit = scope_unit(run);
            let path =
                systemd::start_delegated_scope(manager, &unit, &format!("steprunner run {run}"))
                    .map_err(|source| CgroupError::Systemd {
                        own: u.dir.clone(),
                        source,
                    })?;
            let dir = u.mount.join(path.trim_start_matches('/'));
            self.owned = false;
            self.record(run, vec![Root::new(&self.fs, dir.clone(), false)])?;
            let leaf = dir.join(SCOPE_SUPERVISOR);
            make_dir(ops, &leaf)?;
            move_self(&leaf)?;
            enable(&dir, &v2::WANTED)?;
            self.unified = Some(dir);
            self.placement = Placement::Scope(manager);
            return Ok(());
        }
        if nix::unistd::geteuid().is_root() && real_root(&u.mount) {
            enable(&u.mount, &v2::WANTED)?;
            return self.own_run_dir(run, u.mount.join(run_dir_name(run)), Placement::Unmanaged);
        }
        Err(CgroupError::NotDelegated {
            path: u.dir.clone(),
            reason: if alone_in(&u.dir) {
                "it is not writable by this user, and systemd is not running to delegate one"
            } else {
                "other processes are in it (a cgroup that holds processes cannot have limited children), and systemd is not running to delegate one"
            },
        })
    }

    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// The controllers the run's cgroups can use.
    pub fn subtree_controllers(&self) -> Vec<String> {
        match &self.unified {
            Some(dir) if self.fs.version() == Version::V2 => {
                read_string(&dir.join("cgroup.subtree_control"))
                    .map(|t| {
                        t.split_whitespace()
                            .map(|c| c.trim_start_matches('+').to_string())
                            .collect()
                    })
                    .unwrap_or_default()
            }
            _ => {
                let mut all: Vec<String> = self.v1.iter().flat_map(|(_, c)| c.clone()).collect();
                all.sort();
                all.dedup();
                all
            }
        }
    }

    /// The cgroup filesystem the root is on.
    pub fn fs(&self) -> &CgroupFs {
        &self.fs
    }

    /// Make the stage cgroup `name` (`launch`, `prepare`, `cleanup`) with limits `req`.
    pub fn create(&self, name: &str, req: &Request) -> Result<RunCgroup, CgroupError> {
        let parents = Parents {
            v1: &self.v1,
            unified: self.unified.as_deref(),
        };
        RunCgroup::create(&self.fs, &parents, name, req)
    }

    /// Remove the run's cgroups (its stage cgroups must be gone), move back where this
    /// process came from, and drop the record.
    pub fn release(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let ops = self.fs.ops;
        let ours: Vec<PathBuf> = self
            .v1
            .iter()
            .map(|(p, _)| p.clone())
            .chain(self.unified.clone())
            .collect();
        let mut all_gone = true;
        for dir in &ours {
            // A scope's own directory is systemd's; the leaf we are in goes with it.
            if rmdir_tree_except(ops, dir, self.owned).is_err() {
                all_gone = false;
            }
        }
        if let Some(m) = self.moved.take() {
            let off: Vec<String> = m.enabled.iter().map(|c| format!("-{c}")).collect();
            if !off.is_empty() {
                let _ = write_value(&m.home.join("cgroup.subtree_control"), &off.join(" "));
            }
            if move_self(&m.home).is_ok() {
                let _ = (ops.rmdir)(&m.leaf);
            }
        }
        if all_gone {
            self.record = None;
        } else if let Some(r) = self.record.take() {
            // Leave the record for the next runner's cleanup (our lock goes with us).
            std::mem::forget(r);
        }
    }
}

/// `rmdir_tree`, keeping the scope's supervisor leaf (this process is in it) when the
/// directory is not ours.
fn rmdir_tree_except(ops: Ops, dir: &Path, owned: bool) -> Result<(), CgroupError> {
    if owned {
        return rmdir_tree(ops, dir, true);
    }
    for child in super::run::child_dirs(dir) {
        if child.file_name().is_some_and(|n| n == SCOPE_SUPERVISOR) {
            continue;
        }
        rmdir_tree(ops, &child, true)?;
    }
    Ok(())
}

impl Drop for RunRoot {
    fn drop(&mut self) {
        self.release();
    }
}
