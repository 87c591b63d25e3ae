//! Remembered manifest checks: `launch` and `render` keep one empty file per manifest
//! text that passed every check with this very binary (under [`Home::validated`]), so
//! the same text is then only parsed. Compiling the flavor schema and every template
//! was 2.8 ms of a 14 ms launch. `runner validate` always checks in full.

use std::path::{Path, PathBuf};

use crate::diag::Diagnostic;
use crate::home::Home;
use crate::manifest::{Flavor, Source};
use crate::validate::{check_manifest, load_diagnostic};

/// As `validate::check_file`, but a file whose exact text already passed every check with this
/// very binary skips them (it is still parsed, and its settings are still checked when
/// rendered). `stamps` holds one empty file per such text, named by the BLAKE3 hash of
/// the runner's identity (version, and the executable's device, inode, size and mtime,
/// so a rebuilt runner checks again) and the text. Compiling the flavor schema and
/// every template was 2.8 ms of a 14 ms launch. `runner validate` always checks.
///
/// A file checked in full comes back with a [`Stamp`] to [`Stamp::write`] once the
/// caller has used it (a run that could not even get its folder leaves nothing).
pub fn check_file(
    path: &Path,
    home: &Home,
) -> Result<(Source, Flavor, Option<Stamp>), Vec<Diagnostic>> {
    let stamps = home.validated();
    let src = Source::read(path).map_err(|e| vec![load_diagnostic(path, &e)])?;
    let stamp = stamp_name(&src.text).map(|name| stamps.join(name));
    if let Some(stamp) = &stamp
        && stamp.exists()
        && let Ok(flavor) = Flavor::from_value(&src.doc.value)
    {
        return Ok((src, flavor, None));
    }
    let flavor = check_manifest(&src)?;
    Ok((src, flavor, stamp.map(Stamp)))
}

/// Proof that a manifest text passed `check_flavor`, not yet recorded.
#[derive(Debug)]
pub struct Stamp(PathBuf);

impl Stamp {
    /// Record it. Best effort: a home that cannot be written only costs the next
    /// launch the checks.
    pub fn write(self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::create_dir_all(dir).and_then(|()| std::fs::File::create(&self.0));
        }
    }
}

/// Remove the stamps made more than `older_than` ago (their texts are then checked in
/// full once more); returns how many (would be) removed.
pub fn prune(home: &Home, older_than: std::time::Duration, dry_run: bool) -> usize {
    let Ok(entries) = std::fs::read_dir(home.validated()) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    entries
        .flatten()
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= older_than)
        })
        .filter(|e| dry_run || std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// The stamp of a manifest text that passed `check_flavor`; `None` (never remembered)
/// if the running executable cannot be identified.
fn stamp_name(text: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let exe = std::fs::metadata("/proc/self/exe").ok()?;
    let mut h = blake3::Hasher::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    for n in [
        exe.dev(),
        exe.ino(),
        exe.size(),
        exe.mtime() as u64,
        exe.mtime_nsec() as u64,
    ] {
        h.update(&n.to_le_bytes());
    }
    h.update(text.as_bytes());
    Some(h.finalize().to_hex().to_string())
}
