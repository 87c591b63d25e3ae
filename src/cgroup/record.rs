//! Records of the cgroups of live runs, so that whoever comes next cleans up after a
//! runner that was killed: any later runner of the same user, from any cgroup, session
//! or PID namespace.
//!
//! A run writes one small file naming its cgroup roots before it creates them, and
//! holds a lock on its first byte for as long as it lives (an open-file-description
//! lock, `F_OFD_SETLK`). The kernel drops the lock when the process dies, however it
//! dies, so a lock anyone can take marks a dead owner — no pid is compared, and a live
//! run's cgroups are never touched. A cleaner holds the second byte while it looks at
//! a record and cleans up after it: a second cleaner waits for the first instead of
//! taking a record being cleaned for a live run's (the launch that comes next then
//! finds the dead run's cgroups gone, whoever removed them). The folder
//! is per user and private (`/run/steprunner/cgroups` for root, else
//! `$XDG_RUNTIME_DIR/steprunner/cgroups`): records are not shared across users.

use std::fs::{File, OpenOptions};
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

/// The cgroup mount `path` is under (inside, not the mount itself), as seen here.
fn mount_of<'f>(fs: &'f CgroupFs, path: &Path) -> Option<&'f Path> {
    fs.mounts()
        .iter()
        .filter(|m| path.starts_with(m) && path != m.as_path())
        .max_by_key(|m| m.as_os_str().len())
        .map(PathBuf::as_path)
}

/// The device and inode of the cgroup mount `path` is under, as seen here.
fn mount_view(fs: &CgroupFs, path: &Path) -> Option<(u64, u64)> {
    let m = std::fs::metadata(mount_of(fs, path)?).ok()?;
    Some((m.dev(), m.ino()))
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
    /// Held open: the run's lock on the record lives as long as this file.
    _lock: File,
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
        // Made whole and locked under a name cleaners pass over, then linked into
        // place: a cleaner never sees a record that is not yet locked or not yet
        // written (it took an empty, unlocked one for garbage and removed it, and the
        // run then had no record when it was killed).
        let new = dir.join(format!(".{run}.new"));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&new)?;
        let made = (|| {
            if !lock_byte(&file, LIVE)? {
                return Err(io::Error::other("a new record is locked by someone else"));
            }
            let content = Content {
                run: run.to_string(),
                roots: roots.to_vec(),
            };
            file.write_all(&serde_json::to_vec(&content).map_err(io::Error::other)?)?;
            // Not over another record of the same run.
            std::fs::hard_link(&new, &path)
        })();
        let _ = std::fs::remove_file(&new);
        made?;
        Ok(Record { path, _lock: file })
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        // The lock goes when the file is closed, after the removal.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The byte of a record its run holds while it lives.
const LIVE: i64 = 0;
/// The byte a cleaner holds while it looks at the record and cleans after its run.
const CLEANING: i64 = 1;

/// Take the write lock on byte `byte` of `file` (an open-file-description lock: tied
/// to this open file, not to the process, so two opens in one process conflict too),
/// without waiting. Whether it was free.
fn lock_byte(file: &File, byte: i64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let fl = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: byte,
        l_len: 1,
        l_pid: 0,
    };
    loop {
        // SAFETY: `fl` is a valid flock for the duration of the call.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EACCES) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// How long a cleaner waits for another one to be done with a record: far more than
/// removing a run's cgroups takes (each is retried for ~2 s when busy).
const CLEANER_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

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

/// The record at `path`, if its owner is gone: with its cleaning lock (and its run's)
/// held by us. A record another cleaner holds is waited for, up to [`CLEANER_WAIT`].
fn take_stale(path: &Path) -> Option<Stale> {
    let (mut file, meta) =
        crate::util::open_regular(OpenOptions::new().read(true).write(true), path).ok()?;
    let deadline = std::time::Instant::now() + CLEANER_WAIT;
    while !lock_byte(&file, CLEANING).ok()? {
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Its run is alive.
    if !lock_byte(&file, LIVE).ok()? {
        return None;
    }
    // Another cleaner may have removed it before we had it.
    if !same_file(&file, path) {
        return None;
    }
    // A record is a few hundred bytes; anything else is not one of ours. Read from
    // the file just checked (records are written before they have their name).
    let mut bytes = Vec::new();
    let content = (meta.len() <= 64 << 10)
        .then(|| std::io::Read::read_to_end(&mut file, &mut bytes).ok())
        .flatten()
        .and_then(|_| serde_json::from_slice::<Content>(&bytes).ok());
    Some(Stale {
        path: path.to_path_buf(),
        content,
        _lock: file,
    })
}

/// The records in `dir`, in name order (every cleaner goes through them in the same
/// order), and the records being made (`.RUN.new`), also in name order.
fn record_paths(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut records, mut making) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (records, making);
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let name = e.file_name();
        let name = name.as_encoded_bytes();
        if !name.starts_with(b".") {
            records.push(e.path());
        } else if name.ends_with(b".new") {
            making.push(e.path());
        }
    }
    records.sort();
    making.sort();
    (records, making)
}

/// How old a record being made (`.RUN.new`) with no runner holding it must be to be
/// taken for abandoned: its runner was killed between making the file and giving it
/// its name, which takes microseconds.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Remove a record being made that its runner abandoned. Such a file names no cgroup
/// that exists (a run makes its cgroups only once its record has its name), or is a
/// second name of a record (its runner died between the link and the removal), which
/// is cleaned through that name: the file is only removed, never acted on.
fn remove_abandoned(path: &Path) {
    // Looked at before any lock is taken: a runner making its record is never held up.
    let age = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    if age.is_none_or(|a| a < ABANDONED_AFTER) {
        return;
    }
    if let Some(taken) = take_stale(path) {
        let _ = std::fs::remove_file(&taken.path);
    }
}

/// Records in `dir` whose owner is gone (their lock can be taken).
#[cfg(test)]
fn stale_records(dir: &Path) -> Vec<Stale> {
    record_paths(dir)
        .0
        .iter()
        .filter_map(|p| take_stale(p))
        .collect()
}

/// Is `root` a cgroup root a runner of this project makes — inside a mounted cgroup
/// hierarchy, named after `run` as the runner names them — and nothing else? A record
/// is data from disk: only such a directory is ever killed or removed.
fn allowed(fs: &CgroupFs, run: &str, root: &Path) -> bool {
    mount_of(fs, root).is_some() && named_ours(run, root)
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
    let (records, making) = record_paths(dir);
    // One at a time: a cleaner never holds one record while it waits for another.
    for stale in records.iter().filter_map(|p| take_stale(p)) {
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
    // After the records: a second name of one is removed once the record was cleaned.
    for path in &making {
        remove_abandoned(path);
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A records folder of a test's own (gone with the returned guard).
    fn records_dir() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("records");
        ensure_dir(&dir).unwrap();
        (tmp, dir)
    }

    /// A runner at the root of a cgroup v2 mount.
    fn unified_root() -> CgroupFs {
        CgroupFs::from_texts(
            "30 21 0:25 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/\n",
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_live_record_is_locked_and_a_dead_ones_is_not() {
        let (_tmp, dir) = records_dir();
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

    /// A cleaner that finds another cleaner at a dead run's record waits for it, and
    /// does not take the record for a live run's and go on: the launch it cleans for
    /// then finds the dead run cleaned up, whoever did it.
    #[test]
    fn a_cleaner_waits_for_another_at_the_same_record() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (_tmp, dir) = records_dir();
        let json = serde_json::to_vec(&Content {
            run: "dead".into(),
            roots: Vec::new(),
        })
        .unwrap();
        std::fs::write(dir.join("dead"), json).unwrap();
        // The first cleaner has it.
        let first = take_stale(&dir.join("dead")).expect("a dead run's record is stale");
        let released = std::sync::Arc::new(AtomicBool::new(false));
        let second = {
            let (dir, released) = (dir.clone(), released.clone());
            std::thread::spawn(move || {
                let found = stale_records(&dir).len();
                (found, released.load(Ordering::SeqCst))
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        // It is done: the record goes, then its locks.
        std::fs::remove_file(&first.path).unwrap();
        released.store(true, Ordering::SeqCst);
        drop(first);
        let (found, after_release) = second.join().unwrap();
        assert!(after_release, "the second cleaner waited for the first");
        assert_eq!(found, 0, "and found the record gone");

        // A live run's record is not waited for: its cleaning byte is free.
        let live = Record::create(&dir, "live", &[]).unwrap();
        assert!(stale_records(&dir).is_empty());
        drop(live);
    }

    /// A cleaner that runs while records are made never takes one for garbage: each
    /// record is there, whole and locked, from the moment it has its name. (A record
    /// was made empty and unlocked, then locked and written; a cleaner in between
    /// removed it, and its run, killed later, left its cgroups with no record.)
    #[test]
    fn records_being_made_are_never_cleaned_away() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (_tmp, dir) = records_dir();
        let fs = unified_root();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let cleaner = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    clean_stale(&fs, &dir);
                }
            })
        };
        let mut lost = 0;
        for i in 0..3000 {
            let run = format!("r{i}");
            let rec = Record::create(&dir, &run, &[]).unwrap();
            let text = std::fs::read(dir.join(&run)).unwrap_or_default();
            if serde_json::from_slice::<Content>(&text).is_err() {
                lost += 1;
            }
            drop(rec);
        }
        stop.store(true, Ordering::Relaxed);
        cleaner.join().unwrap();
        assert_eq!(
            lost, 0,
            "records removed or read half-made while being made"
        );
        // Nothing is left: no record, no record being made.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    /// A runner killed while it made its record leaves `.RUN.new`; cleaners remove it
    /// once it is old and no runner holds it, and touch nothing else.
    #[test]
    fn records_abandoned_while_being_made_are_removed() {
        let (_tmp, dir) = records_dir();
        let fs = unified_root();
        let long_ago = std::time::SystemTime::now() - 2 * ABANDONED_AFTER;
        let make = |name: &str, old: bool| {
            let f = File::create(dir.join(name)).unwrap();
            if old {
                f.set_modified(long_ago).unwrap();
            }
            f
        };
        make(".killed.new", true);
        make(".making.new", false);
        make(".other", true);
        // A runner that has held its file for long (stopped, say): its lock says so.
        let held = make(".held.new", true);
        assert!(lock_byte(&held, LIVE).unwrap());
        // Killed between the link and the removal: two names of one dead record.
        std::fs::write(
            dir.join("linked"),
            serde_json::to_vec(&Content {
                run: "linked".into(),
                roots: Vec::new(),
            })
            .unwrap(),
        )
        .unwrap();
        std::fs::hard_link(dir.join("linked"), dir.join(".linked.new")).unwrap();
        File::open(dir.join("linked"))
            .unwrap()
            .set_modified(long_ago)
            .unwrap();

        assert_eq!(clean_stale(&fs, &dir), ["linked"]);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".held.new", ".making.new", ".other"]);
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
        let (_tmp, dir) = records_dir();
        std::fs::write(dir.join("junk"), b"\xff not json").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
        let fs = unified_root();
        assert!(clean_stale(&fs, &dir).is_empty());
        assert!(!dir.join("junk").exists());
        // A symbolic link is not followed, nor removed as a record.
        assert!(dir.join("link").symlink_metadata().is_ok());
    }
}
