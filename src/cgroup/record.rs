//! Records of the cgroups of live runs, so that whoever comes next cleans up after a
//! runner that was killed: any later runner of the same user, from any cgroup, session
//! or PID namespace.
//!
//! A run writes one small file naming its cgroup roots before it creates them, and
//! holds an exclusive `flock` on it for as long as it lives. The kernel drops the lock
//! when the process dies, however it dies, so a lock anyone can take marks a dead
//! owner — no pid is compared, and a live run's cgroups are never touched. The folder
//! is per user and private (`/run/steprunner/cgroups` for root, else
//! `$XDG_RUNTIME_DIR/steprunner/cgroups`): records are not shared across users.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CgroupFs;

/// One root of a run's cgroups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    pub path: PathBuf,
    /// The directory itself is ours to remove (else its manager removes it once empty:
    /// a systemd scope).
    pub owned: bool,
    /// The device and inode of the cgroup mount `path` is under, as the recording
    /// runner saw it. A cleaner whose mount there is another directory (it is in
    /// another cgroup namespace: its `/sys/fs/cgroup` shows another subtree) would find
    /// other cgroups at the same path, or none, and must not take a missing directory
    /// for a removed one: it leaves the record to a runner that sees these cgroups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<(u64, u64)>,
}

impl Root {
    /// `path`, with the mount it is under as this runner sees it.
    pub fn new(fs: &CgroupFs, path: PathBuf, owned: bool) -> Root {
        let view = mount_view(fs, &path);
        Root { path, owned, view }
    }
}

/// The device and inode of the cgroup mount `path` is under, as seen here.
fn mount_view(fs: &CgroupFs, path: &Path) -> Option<(u64, u64)> {
    let mount = fs
        .mounts()
        .iter()
        .filter(|m| path.starts_with(m) && path != m.as_path())
        .max_by_key(|m| m.as_os_str().len())?;
    std::fs::metadata(mount).ok().map(|m| (m.dev(), m.ino()))
}

#[derive(Debug, Serialize, Deserialize)]
struct Content {
    run: String,
    roots: Vec<Root>,
}

/// The record of a live run; dropping it (the run ended) removes it.
#[derive(Debug)]
pub struct Record {
    path: PathBuf,
    file: File,
}

/// Where this user's records live.
pub fn dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/run/steprunner/cgroups");
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/run/user/{}", nix::unistd::geteuid())));
    if runtime.is_dir() {
        runtime.join("steprunner/cgroups")
    } else {
        std::env::temp_dir().join(format!("steprunner-{}/cgroups", nix::unistd::geteuid()))
    }
}

/// Make the records folder (mode 0700) and check it is ours: records name directories
/// that the cleanup kills and removes, so nobody else may write them.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let m = std::fs::symlink_metadata(d)?;
        if !m.is_dir() || m.uid() != me || m.mode() & 0o022 != 0 {
            return Err(io::Error::other(format!(
                "`{}` is not a folder of this user's that only it can write",
                d.display()
            )));
        }
    }
    Ok(())
}

impl Record {
    /// Record (and lock) the roots of run `run` in `dir`.
    pub fn create(dir: &Path, run: &str, roots: &[Root]) -> io::Result<Record> {
        ensure_dir(dir)?;
        let path = dir.join(run);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.lock()?;
        let content = Content {
            run: run.to_string(),
            roots: roots.to_vec(),
        };
        let json = serde_json::to_vec(&content).map_err(io::Error::other)?;
        if let Err(e) = file.write_all(&json) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Record { path, file })
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// A record whose owner died, with its lock now held by us.
struct Stale {
    path: PathBuf,
    content: Option<Content>,
    _lock: File,
}

fn same_file(f: &File, path: &Path) -> bool {
    match (f.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Records in `dir` whose owner is gone (their lock can be taken).
fn stale_records(dir: &Path) -> Vec<Stale> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(file) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        else {
            continue;
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) | Err(TryLockError::Error(_)) => continue,
        }
        // Another cleaner may have removed it between our open and our lock.
        if !same_file(&file, &path) {
            continue;
        }
        // A record is a few hundred bytes; anything else is not one of ours.
        let content = (file.metadata().map(|m| m.len()).unwrap_or(u64::MAX) <= 64 << 10)
            .then(|| std::fs::read(&path).ok())
            .flatten()
            .and_then(|b| serde_json::from_slice::<Content>(&b).ok());
        out.push(Stale {
            path,
            content,
            _lock: file,
        });
    }
    out
}

/// Is `root` a cgroup root a runner of this project makes — inside a mounted cgroup
/// hierarchy, named after `run` as the runner names them — and nothing else? A record
/// is data from disk: only such a directory is ever killed or removed.
fn allowed(fs: &CgroupFs, run: &str, root: &Path) -> bool {
    let in_mount = fs
        .mounts()
        .iter()
        .any(|m| root.starts_with(m) && root != m.as_path());
    in_mount && named_ours(run, root)
}

/// Is `root` a plain absolute path named as a runner names run `run`'s cgroups?
fn named_ours(run: &str, root: &Path) -> bool {
    let plain = root.is_absolute()
        && root
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    let name = root.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let ours = name == super::root::scope_unit(run) || name == super::root::run_dir_name(run);
    plain && ours && !run.is_empty() && !run.contains('/')
}

/// What a cleaner may do with a recorded root.
#[derive(Debug, PartialEq, Eq)]
enum Standing {
    /// A run's cgroup, in the mount it was made in: kill and remove it (or find it gone).
    Ours,
    /// Named as a run's cgroup, but this cleaner does not see the mount it was made in
    /// (another cgroup or mount namespace): left, with its record, to one that does.
    Elsewhere,
    /// Not a run's cgroup: never acted on.
    Never,
}

fn standing(fs: &CgroupFs, run: &str, root: &Root) -> Standing {
    if allowed(fs, run, &root.path) {
        match root.view {
            Some(v) if mount_view(fs, &root.path) != Some(v) => Standing::Elsewhere,
            _ => Standing::Ours,
        }
    } else if named_ours(run, &root.path) {
        Standing::Elsewhere
    } else {
        Standing::Never
    }
}

/// Kill everything in the cgroups of dead runners and remove them (and their records).
/// Returns the runs cleaned.
pub fn clean_stale(fs: &CgroupFs, dir: &Path) -> Vec<String> {
    let mut cleaned = Vec::new();
    for stale in stale_records(dir) {
        let mut done = true;
        if let Some(c) = &stale.content {
            for root in &c.roots {
                match standing(fs, &c.run, root) {
                    Standing::Never => {}
                    Standing::Elsewhere => done = false,
                    Standing::Ours => {
                        if super::run::remove_tree(fs, &root.path, root.owned).is_err() {
                            done = false;
                        }
                    }
                }
            }
            if done {
                cleaned.push(c.run.clone());
            }
        }
        // Kept while its cgroups could not be removed yet: the next cleaner tries again.
        if done {
            let _ = std::fs::remove_file(&stale.path);
        }
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_record_is_locked_and_a_dead_ones_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("records");
        let roots = [Root {
            path: PathBuf::from("/sys/fs/cgroup/x/steprunner-r1"),
            owned: true,
            view: None,
        }];
        let live = Record::create(&dir, "r1", &roots).unwrap();
        assert!(
            stale_records(&dir).is_empty(),
            "a live record is never stale"
        );
        // A second record of the same run cannot be made over it.
        assert!(Record::create(&dir, "r1", &roots).is_err());
        // What a SIGKILLed owner leaves: the file, with no lock on it.
        let json = serde_json::to_vec(&Content {
            run: "r2".into(),
            roots: roots.to_vec(),
        })
        .unwrap();
        std::fs::write(dir.join("r2"), json).unwrap();
        let stale = stale_records(&dir);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].path, dir.join("r2"));
        assert_eq!(stale[0].content.as_ref().unwrap().roots, roots);
        drop(stale);
        // The run ended: its record goes.
        drop(live);
        assert!(!dir.join("r1").exists());
    }

    #[test]
    fn records_only_name_our_own_cgroups() {
        let fs = CgroupFs::from_texts(
            "30 21 0:25 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
            "0::/system.slice/x.service\n",
            None,
        )
        .unwrap();
        let ok = |run: &str, p: &str| allowed(&fs, run, Path::new(p));
        assert!(ok("r1", "/sys/fs/cgroup/steprunner-r1"));
        assert!(ok("r1", "/sys/fs/cgroup/a/b/steprunner-r1"));
        assert!(ok("r1", "/sys/fs/cgroup/system.slice/steprunner-r1.scope"));
        // Anything else a record might name is left alone.
        assert!(!ok("r1", "/sys/fs/cgroup/system.slice"));
        assert!(!ok("r1", "/sys/fs/cgroup"));
        assert!(!ok("r1", "/sys/fs/cgroup/steprunner-r2"));
        assert!(!ok("r1", "/sys/fs/cgroup/x/../steprunner-r1"));
        assert!(!ok("r1", "/home/x/steprunner-r1"));
        assert!(!ok("r1", "steprunner-r1"));
        assert!(!ok("", "/sys/fs/cgroup/steprunner-"));
    }

    #[test]
    fn garbage_in_the_records_folder_is_skipped_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("records");
        ensure_dir(&dir).unwrap();
        std::fs::write(dir.join("junk"), b"\xff not json").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
        let fs = CgroupFs::from_texts(
            "30 21 0:25 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/\n",
            None,
        )
        .unwrap();
        assert!(clean_stale(&fs, &dir).is_empty());
        assert!(!dir.join("junk").exists());
        // A symbolic link is not followed, nor removed as a record.
        assert!(dir.join("link").symlink_metadata().is_ok());
    }
}
