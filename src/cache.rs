//! The prepare cache: one folder per key under `$RUNNER_HOME/cache`, guarded by
//! a lock file beside it. An entry is complete only when its marker file exists;
//! the marker is written last (write to a temporary name, fsync, rename), so an
//! interrupted or failed prepare never leaves an entry that looks complete. The
//! folder is built in place, not renamed into place, because environments such
//! as virtualenvs embed their own absolute path.
//!
//! Locking: exclusive while checking and building; then shared while the step
//! runs, so `runner cache prune` (which takes the lock exclusively, without
//! waiting) never removes an entry in use.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const MARKER: &str = ".steprunner-complete";

/// The name of a prepare cache entry: 16 hex digits of BLAKE3 over the flavor's name
/// and version and the key's parts, each length-prefixed, so no two different lists of
/// parts hash alike.
pub fn key(flavor: &str, version: u32, parts: &[String]) -> String {
    let mut h = blake3::Hasher::new();
    for field in [flavor, &version.to_string()]
        .into_iter()
        .chain(parts.iter().map(String::as_str))
    {
        h.update(&(field.len() as u64).to_le_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().to_hex()[..16].to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot use cache entry `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("interrupted while waiting for the lock of `{0}`")]
    Interrupted(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A held lock on one cache entry.
pub struct Lease {
    pub dir: PathBuf,
    lock: File,
}

pub fn lock_path(dir: &Path) -> PathBuf {
    let mut p = dir.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// An entry's lock file, opened (`create`: made if missing) to lock. A prepare command
/// can write beside its entry: what it put at the lock's name instead — a FIFO, whose
/// open would wait for a reader forever, a symlink, a device — is an error, not a hang.
fn open_lock(path: &Path, create: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(create).truncate(false).write(true);
    crate::util::open_regular(&mut options, path).map(|(f, _)| f)
}

fn same_file(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Lease {
    /// Lock the entry: shared at once when it is complete (steps using an entry never
    /// wait for each other), else exclusively to build it. When another runner holds
    /// it exclusively (preparing it), call `waiting` once and block; `cancelled` is
    /// asked after each interruption by a signal.
    pub fn acquire(
        dir: &Path,
        waiting: impl FnOnce(),
        mut cancelled: impl FnMut() -> bool,
    ) -> Result<Lease, CacheError> {
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        let lp = lock_path(dir);
        if dir.join(MARKER).is_file()
            && let Ok(lock) = open_lock(&lp, false)
            && lock.try_lock_shared().is_ok()
            // Still the entry at the path, still complete: a shared lock keeps prune out.
            && same_file(&lock, &lp)
            && dir.join(MARKER).is_file()
        {
            let _ = lock.set_modified(std::time::SystemTime::now());
            return Ok(Lease {
                dir: dir.to_path_buf(),
                lock,
            });
        }
        let mut waiting = Some(waiting);
        loop {
            let lock = open_lock(&lp, true).map_err(io_err(&lp))?;
            if lock.try_lock().is_err() {
                if let Some(w) = waiting.take() {
                    w();
                }
                loop {
                    // flock(2): a signal ends the wait with `Interrupted`.
                    match lock.lock() {
                        Ok(()) => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                            if cancelled() {
                                return Err(CacheError::Interrupted(dir.to_path_buf()));
                            }
                        }
                        Err(e) => return Err(io_err(&lp)(e)),
                    }
                }
            }
            // `runner cache prune` unlinks the lock files of entries it removes: a lock
            // on a file no longer at the path guards nothing. Open the path again.
            if same_file(&lock, &lp) {
                let _ = lock.set_modified(std::time::SystemTime::now());
                return Ok(Lease {
                    dir: dir.to_path_buf(),
                    lock,
                });
            }
        }
    }

    pub fn is_complete(&self) -> bool {
        self.dir.join(MARKER).is_file()
    }

    /// Start building: remove whatever an earlier, unfinished attempt left.
    pub fn begin(&self) -> Result<(), CacheError> {
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        }
        std::fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))
    }

    /// Mark the entry complete: the marker is the last thing written.
    pub fn commit(&self, description: &str) -> Result<(), CacheError> {
        let tmp = self.dir.join(format!("{MARKER}.tmp"));
        let done = self.dir.join(MARKER);
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(description.as_bytes()).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &done).map_err(io_err(&done))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Keep the entry from being pruned while the step uses it, and let other runners in.
    pub fn share(&self) {
        let _ = self.lock.lock_shared();
    }
}

/// One cache entry, for `runner cache list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    /// `<flavor>-<key>`.
    pub name: String,
    pub flavor: String,
    pub key: String,
    pub path: PathBuf,
    pub size_bytes: u64,
    /// When a launch last used (or built) it, from its lock file; RFC 3339 in JSON.
    #[serde(serialize_with = "crate::util::rfc3339_opt")]
    pub last_used: Option<std::time::SystemTime>,
    pub complete: bool,
    /// A runner holds its lock now.
    pub in_use: bool,
}

/// Bytes under `path`, symlinks not followed.
pub fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

fn try_lock(path: &Path) -> Option<File> {
    let f = open_lock(path, false).ok()?;
    f.try_lock().ok()?;
    same_file(&f, path).then_some(f)
}

/// Every entry under `cache`, oldest use first.
pub fn list(cache: &Path) -> Vec<Entry> {
    let Ok(rd) = std::fs::read_dir(cache) else {
        return Vec::new();
    };
    let mut out: Vec<Entry> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .map(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (flavor, key) = match name.rsplit_once('-') {
                Some((f, k)) => (f.to_string(), k.to_string()),
                None => (name.clone(), String::new()),
            };
            let lock = lock_path(&path);
            let last_used = std::fs::metadata(&lock).and_then(|m| m.modified()).ok();
            let in_use = lock.exists() && try_lock(&lock).is_none();
            Entry {
                complete: path.join(MARKER).is_file(),
                size_bytes: dir_size(&path),
                name,
                flavor,
                key,
                path,
                last_used,
                in_use,
            }
        })
        .collect();
    out.sort_by_key(|e| e.last_used);
    out
}

/// What `prune` removes: entries unused for longer than `older_than`, then the least
/// recently used until the cache fits in `max_size`. Unfinished entries that no one
/// is building are always removed. Entries in use are never touched.
pub fn prune(
    cache: &Path,
    older_than: Option<std::time::Duration>,
    max_size: Option<u64>,
    dry_run: bool,
) -> Vec<Entry> {
    let now = std::time::SystemTime::now();
    let entries = list(cache);
    let mut total: u64 = entries.iter().map(|e| e.size_bytes).sum();
    let mut removed = Vec::new();
    for e in entries {
        let stale = older_than.is_some_and(|age| {
            e.last_used
                .is_none_or(|t| now.duration_since(t).unwrap_or_default() > age)
        });
        let too_big = max_size.is_some_and(|m| total > m);
        if !(stale || too_big || !e.complete) {
            continue;
        }
        let lock = lock_path(&e.path);
        // Hold the entry's lock while removing it, so no launch can start using it.
        let guard = if lock.exists() {
            try_lock(&lock)
        } else {
            open_lock(&lock, true).ok()
        };
        let Some(_guard) = guard else { continue };
        if !dry_run {
            if std::fs::remove_dir_all(&e.path).is_err() {
                continue;
            }
            let _ = std::fs::remove_file(&lock);
        }
        total = total.saturating_sub(e.size_bytes);
        removed.push(e);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prepare command can write beside its cache entry: a FIFO or a symlink it left
    /// at the entry's lock is a clear error for the next launch (and skipped by prune),
    /// never a wait for a reader that does not come.
    #[test]
    fn a_fifo_or_a_link_at_the_lock_is_an_error_not_a_hang() {
        let cache = tempfile::tempdir().unwrap();
        let fifo_entry = cache.path().join("venv-fifo");
        nix::unistd::mkfifo(
            &lock_path(&fifo_entry),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let link_entry = cache.path().join("venv-link");
        let elsewhere = cache.path().join("elsewhere");
        std::fs::write(&elsewhere, "").unwrap();
        std::os::unix::fs::symlink(&elsewhere, lock_path(&link_entry)).unwrap();
        for entry in [fifo_entry, link_entry] {
            let (tx, rx) = std::sync::mpsc::channel();
            let e = entry.clone();
            std::thread::spawn(move || {
                tx.send(
                    Lease::acquire(&e, || {}, || false)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                )
            });
            let got = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .expect("acquire returned (it did not wait on the FIFO)");
            assert!(got.is_err(), "{entry:?}: {got:?}");
            assert!(try_lock(&lock_path(&entry)).is_none());
        }
    }

    #[test]
    fn entry_is_complete_only_after_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache/venv-abc");
        let lease = Lease::acquire(&dir, || panic!("no one else holds it"), || false).unwrap();
        assert!(!lease.is_complete());
        lease.begin().unwrap();
        std::fs::write(dir.join("half"), "x").unwrap();
        assert!(!lease.is_complete());
        drop(lease);
        // A second attempt finds the unfinished entry and starts over.
        let lease = Lease::acquire(&dir, || panic!("released"), || false).unwrap();
        assert!(!lease.is_complete());
        lease.begin().unwrap();
        assert!(!dir.join("half").exists());
        lease.commit("venv").unwrap();
        assert!(lease.is_complete());
        assert!(!dir.join(format!("{MARKER}.tmp")).exists());
    }

    #[test]
    fn prune_removes_old_unfinished_and_oversized_entries_but_never_one_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path();
        let make = |name: &str, bytes: usize, complete: bool| {
            let l = Lease::acquire(&cache.join(name), || {}, || false).unwrap();
            l.begin().unwrap();
            std::fs::write(cache.join(name).join("data"), vec![0u8; bytes]).unwrap();
            if complete {
                l.commit(name).unwrap();
            }
            l
        };
        drop(make("venv-aaaa", 1000, true));
        drop(make("venv-bbbb", 3000, true));
        drop(make("venv-half", 10, false));
        let held = make("venv-used", 5000, true);
        held.share();
        let listed = list(cache);
        assert_eq!(listed.len(), 4);
        assert!(listed.iter().any(|e| e.name == "venv-used" && e.in_use));
        assert!(listed.iter().any(|e| e.name == "venv-half" && !e.complete));

        // Only the unfinished entry goes when nothing is old or too big.
        let gone: Vec<String> = prune(cache, None, None, false)
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(gone, vec!["venv-half"]);
        // Everything is "old" now, but the entry in use stays.
        let gone: Vec<String> = prune(cache, Some(std::time::Duration::ZERO), None, false)
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(gone.len(), 2, "{gone:?}");
        assert!(cache.join("venv-used").is_dir());
        assert!(!cache.join("venv-aaaa").exists() && !cache.join("venv-aaaa.lock").exists());
        drop(held);
        let gone = prune(cache, None, Some(0), false);
        assert_eq!(gone.len(), 1);
        assert!(list(cache).is_empty());
    }

    #[test]
    fn a_lease_on_an_unlinked_lock_file_is_not_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("e");
        let first = Lease::acquire(&dir, || {}, || false).unwrap();
        let d2 = dir.clone();
        let t = std::thread::spawn(move || {
            Lease::acquire(&d2, || {}, || false).map(|l| l.is_complete())
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        // A prune removes the entry and its lock file while the other waits.
        first.begin().unwrap();
        first.commit("x").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(lock_path(&dir)).unwrap();
        drop(first);
        // The waiter must lock the new lock file, and sees no complete entry.
        assert!(!t.join().unwrap().unwrap());
        assert!(lock_path(&dir).exists());
    }

    /// Steps using a complete entry share it: a second launch does not wait for the
    /// first's step to end (three parallel steps of 3 s took 9 s).
    #[test]
    fn a_complete_entry_is_shared_without_waiting() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("e");
        let first = Lease::acquire(&dir, || {}, || false).unwrap();
        first.begin().unwrap();
        first.commit("x").unwrap();
        first.share();
        let second =
            Lease::acquire(&dir, || panic!("a shared entry made it wait"), || false).unwrap();
        assert!(second.is_complete());
        // An unfinished entry is still built by one runner at a time.
        let other = tmp.path().join("f");
        let building = Lease::acquire(&other, || {}, || false).unwrap();
        let o2 = other.clone();
        let t = std::thread::spawn(move || {
            let waited = std::cell::Cell::new(false);
            let _lease = Lease::acquire(&o2, || waited.set(true), || false).unwrap();
            waited.get()
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(building);
        assert!(t.join().unwrap(), "the second builder waited");
        drop((first, second));
    }

    #[test]
    fn a_held_lock_makes_others_wait() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("e");
        let held = Lease::acquire(&dir, || {}, || false).unwrap();
        let d2 = dir.clone();
        let t = std::thread::spawn(move || {
            let waited = std::cell::Cell::new(false);
            let l = Lease::acquire(&d2, || waited.set(true), || false).unwrap();
            (waited.get(), l.is_complete())
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        held.begin().unwrap();
        held.commit("x").unwrap();
        drop(held);
        assert_eq!(t.join().unwrap(), (true, true));
    }
}
