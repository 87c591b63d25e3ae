//! Cleanup of run cgroups whose runner died: a name embeds the owner's pid and start
//! time, so a live owner (even one whose pid was reused) is never touched.

use std::collections::BTreeSet;
use std::io;

use super::CgroupFs;
use super::run::{BASE, RunCgroup};
use crate::util::parse_start_time;

/// `(pid, start time)` from a run cgroup name; `None` for names that are not ours.
pub(crate) fn parse_owner(name: &str) -> Option<(i32, u64)> {
    let mut it = name.splitn(3, '-');
    let pid = it.next()?.parse().ok()?;
    let start = it.next()?.parse().ok()?;
    it.next()?;
    Some((pid, start))
}

/// Is the runner that created a cgroup still alive? Unknown counts as alive.
fn owner_alive(pid: i32, start: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => parse_start_time(&text).is_none_or(|s| s == start),
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

pub(super) fn clean_stale(fs: &CgroupFs) -> Vec<String> {
    let bases = fs
        .v1_hierarchies()
        .iter()
        .map(|h| h.dir.join(BASE))
        .chain(fs.unified().map(|u| u.join(BASE)));
    let mut stale = BTreeSet::new();
    for base in bases {
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some((pid, start)) = parse_owner(&name)
                && e.file_type().is_ok_and(|t| t.is_dir())
                && !owner_alive(pid, start)
            {
                stale.insert(name);
            }
        }
    }
    stale
        .into_iter()
        .filter(|name| RunCgroup::open_existing(fs, name).remove().is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_round_trips_through_name() {
        assert_eq!(parse_owner("12-345-run-1"), Some((12, 345)));
        assert_eq!(parse_owner("not-ours"), None);
        assert_eq!(parse_owner("12-345"), None);
        let name = RunCgroup::name_for("a/b c").unwrap();
        let (pid, start) = parse_owner(&name).unwrap();
        assert_eq!(pid as u32, std::process::id());
        assert!(owner_alive(pid, start));
        assert!(!owner_alive(pid, start + 1));
        assert!(name.ends_with("-a_b_c"), "{name}");
    }
}
