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
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const MARKER: &str = ".steprunner-complete";

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

fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Lease {
    /// Lock the entry exclusively. When another runner holds it, call `waiting`
    /// once and block; `cancelled` is asked after each interruption by a signal.
    pub fn acquire(
        dir: &Path,
        waiting: impl FnOnce(),
        mut cancelled: impl FnMut() -> bool,
    ) -> Result<Lease, CacheError> {
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        let lp = lock_path(dir);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lp)
            .map_err(io_err(&lp))?;
        if flock(&lock, libc::LOCK_EX | libc::LOCK_NB).is_err() {
            waiting();
            loop {
                match flock(&lock, libc::LOCK_EX) {
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
        Ok(Lease {
            dir: dir.to_path_buf(),
            lock,
        })
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
        let _ = flock(&self.lock, libc::LOCK_SH);
        let _ = self.lock.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
