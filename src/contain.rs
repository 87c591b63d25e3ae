//! Containment: what a command's child does between fork and exec so that the command
//! cannot lift its own limits or leave its cgroup — also as root.
//!
//! - **Root** (with `CAP_SYS_ADMIN`): a mount namespace in which every cgroup
//!   filesystem is read-only (on cgroup v2, a fresh read-only `cgroup2` mount of the
//!   step's own cgroup namespace, so tools that read their limits from
//!   `/sys/fs/cgroup` see the step's), a cgroup namespace rooted at the step's cgroup
//!   (v2: with `nsdelegate` the kernel refuses its root's limit files and any move out
//!   of it, whatever the path), and a bounding set cut down to an allowlist (Docker's
//!   default capabilities, plus what the manifest asks for): without `CAP_SYS_ADMIN`
//!   nothing can be remounted, without `CAP_SYS_PTRACE` (and with fewer capabilities
//!   than the runner) no other process's `/proc/PID/root` leads to a writable mount,
//!   without `CAP_SYS_RESOURCE` no hard rlimit can be raised. `no_new_privs` too.
//! - **Anyone else** on cgroup v2: a user namespace mapping only their own uid and
//!   gid, with a cgroup namespace rooted at the step's cgroup: the step is the same
//!   user, with no capabilities, and `nsdelegate` forbids the rest.
//!
//! Everything is decided and allocated before the fork ([`Contain::prepare`]);
//! [`Contain::apply_in_child`] makes only system calls.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::cgroup::CgroupFs;

/// Capabilities a contained root step keeps: Docker's default set.
pub const KEPT: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SYS_CHROOT",
    "MKNOD",
    "AUDIT_WRITE",
    "SETFCAP",
];

/// Every capability by name (`capabilities(7)`), numbered.
pub const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Capabilities with which a step could undo its containment: kept only when a
/// manifest asks, and then its limits are not reported as contained.
pub const UNDOING: &[&str] = &["SYS_ADMIN", "SYS_PTRACE", "SYS_RESOURCE", "SYS_MODULE"];

fn bit(name: &str) -> Option<u32> {
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

/// What the step's containment is, for the result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// How: `root` (mount and cgroup namespaces, capabilities cut down), `user-namespace`
    /// (an unprivileged step), or `none`.
    pub mode: String,
    /// The step cannot raise its limits or leave its cgroup.
    pub contained: bool,
    /// Why not, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a child does before exec, decided before the fork.
#[derive(Debug, Default)]
pub struct Contain {
    unshare: libc::c_int,
    /// Every cgroup filesystem mount point, to remount read-only.
    read_only: Vec<CString>,
    /// The v2 mount point, to mount the step's own cgroup namespace's view on.
    fresh_cgroup2: Option<CString>,
    /// Bounding-set capabilities to drop (root).
    drop_caps: Vec<u32>,
    /// `/proc/self/{setgroups,uid_map,gid_map}` contents (user namespace).
    maps: Option<[CString; 3]>,
    /// The runner's own files in the run folder (the plan, the supervisor's pid): each
    /// bound read-only onto itself, so the step can neither change nor remove them.
    protect: Vec<CString>,
    no_new_privs: bool,
}

/// Which step of containment failed in the child, for the parent's message.
pub const STEP_NAMES: [&str; 8] = [
    "unshare",
    "make mounts private",
    "remount cgroup filesystems read-only",
    "mount the step's cgroup view",
    "drop capabilities",
    "map the user's ids",
    "set no_new_privs",
    "protect the runner's files in the run folder",
];

impl Contain {
    /// No containment.
    pub fn none() -> Contain {
        Contain::default()
    }

    /// Containment for a step under `fs`, keeping the extra capabilities `keep`, with
    /// the files `protect` read-only (those that exist). `Err` with the reason when
    /// this host and user offer none.
    pub fn prepare(
        fs: &CgroupFs,
        keep: &[String],
        protect: &[PathBuf],
    ) -> Result<(Contain, Report), String> {
        let (mut c, report) = Self::namespaces(fs, keep)?;
        c.unshare |= libc::CLONE_NEWNS;
        c.protect = protect
            .iter()
            .filter(|p| p.is_file())
            .filter_map(|p| CString::new(p.as_os_str().as_bytes()).ok())
            .collect();
        Ok((c, report))
    }

    fn namespaces(fs: &CgroupFs, keep: &[String]) -> Result<(Contain, Report), String> {
        let v2 = fs.version() == crate::cgroup::Version::V2;
        let nsdelegate = fs.unified_tree().is_some_and(|u| u.nsdelegate);
        let root = nix::unistd::geteuid().is_root() && has_cap(bit("SYS_ADMIN").unwrap_or(21));
        let cstr = |p: &Path| CString::new(p.as_os_str().as_bytes()).ok();
        if root {
            let mut c = Contain {
                unshare: libc::CLONE_NEWNS | if v2 { libc::CLONE_NEWCGROUP } else { 0 },
                no_new_privs: true,
                ..Contain::default()
            };
            let unified = fs.unified_tree().map(|u| u.mount.clone());
            for m in fs.mounts() {
                if v2 && Some(m) == unified.as_ref() {
                    c.fresh_cgroup2 = cstr(m);
                } else if let Some(s) = cstr(m) {
                    c.read_only.push(s);
                }
            }
            let mut undone = Vec::new();
            for (i, name) in NAMES.iter().enumerate() {
                let kept = KEPT.contains(name) || keep.iter().any(|k| k == name);
                if !kept {
                    c.drop_caps.push(i as u32);
                } else if UNDOING.contains(name) {
                    undone.push(*name);
                }
            }
            let report = Report {
                mode: "root".into(),
                contained: undone.is_empty(),
                reason: (!undone.is_empty()).then(|| {
                    format!(
                        "the manifest keeps capability {} for the step",
                        undone.join(", ")
                    )
                }),
            };
            return Ok((c, report));
        }
        if !v2 {
            return Err("on cgroup v1 only root can contain a step".into());
        }
        if !nsdelegate {
            return Err(
                "the cgroup2 filesystem is not mounted with `nsdelegate`, so a cgroup namespace does not stop the step"
                    .into(),
            );
        }
        let uid = nix::unistd::geteuid();
        let gid = nix::unistd::getegid();
        let map = |s: String| CString::new(s).expect("no NUL in a number");
        let c = Contain {
            unshare: libc::CLONE_NEWUSER | libc::CLONE_NEWCGROUP,
            maps: Some([
                map("deny".into()),
                map(format!("{uid} {uid} 1\n")),
                map(format!("{gid} {gid} 1\n")),
            ]),
            no_new_privs: true,
            ..Contain::default()
        };
        let report = Report {
            mode: "user-namespace".into(),
            contained: true,
            reason: None,
        };
        Ok((c, report))
    }

    pub fn is_none(&self) -> bool {
        self.unshare == 0 && self.drop_caps.is_empty() && !self.no_new_privs
    }

    /// In the child, after it joined its cgroup and before it execs. Async-signal-safe:
    /// system calls only, on buffers made before the fork. On failure, the step that
    /// failed (an index of [`STEP_NAMES`]) and the errno.
    pub fn apply_in_child(&self) -> Result<(), (u32, i32)> {
        let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        // SAFETY (for every call below): plain system calls with pointers to
        // NUL-terminated strings and structs owned by `self`, alive until exec.
        unsafe {
            if self.unshare != 0 && libc::unshare(self.unshare) != 0 {
                return Err((0, errno()));
            }
            if let Some([setgroups, uid_map, gid_map]) = &self.maps {
                for (path, content) in [
                    (c"/proc/self/setgroups", setgroups),
                    (c"/proc/self/uid_map", uid_map),
                    (c"/proc/self/gid_map", gid_map),
                ] {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err((5, errno()));
                    }
                    let bytes = content.as_bytes();
                    let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
                    libc::close(fd);
                    if n != bytes.len() as isize {
                        return Err((5, errno()));
                    }
                }
            }
            if self.unshare & libc::CLONE_NEWNS != 0 {
                // Nothing done here may reach the host's mounts.
                if libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err((1, errno()));
                }
                for mp in &self.read_only {
                    if remount_read_only(mp).is_err() {
                        return Err((2, errno()));
                    }
                }
                for file in &self.protect {
                    if libc::mount(
                        file.as_ptr(),
                        file.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                        || remount_read_only(file).is_err()
                    {
                        return Err((7, errno()));
                    }
                }
                if let Some(mp) = &self.fresh_cgroup2 {
                    // The step's own cgroup as the root of what it sees; read-only. The
                    // host's view goes first: cgroup2 is one filesystem, which the kernel
                    // will not mount on top of itself.
                    if libc::umount2(mp.as_ptr(), libc::MNT_DETACH) != 0 {
                        return Err((3, errno()));
                    }
                    let flags =
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                    if libc::mount(
                        c"cgroup2".as_ptr(),
                        mp.as_ptr(),
                        c"cgroup2".as_ptr(),
                        flags,
                        c"nsdelegate".as_ptr().cast(),
                    ) != 0
                    {
                        return Err((3, errno()));
                    }
                }
            }
            if !self.drop_caps.is_empty() {
                for &cap in &self.drop_caps {
                    // An unknown capability (an older kernel) is not there to drop.
                    if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0
                        && *libc::__errno_location() != libc::EINVAL
                    {
                        return Err((4, errno()));
                    }
                }
                if libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                    && *libc::__errno_location() != libc::EINVAL
                {
                    return Err((4, errno()));
                }
                // The inheritable set must not carry what the bounding set dropped.
                if clear_inheritable().is_err() {
                    return Err((4, errno()));
                }
            }
            if self.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err((6, errno()));
            }
        }
        Ok(())
    }
}

/// `MS_BIND | MS_REMOUNT | MS_RDONLY`, keeping the mount's other flags (a flag left
/// out would be refused as an attempt to lift it).
unsafe fn remount_read_only(mp: &CString) -> Result<(), ()> {
    // SAFETY: statvfs and mount with a NUL-terminated path and a local struct.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(mp.as_ptr(), &mut st) != 0 {
            return Err(());
        }
        let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        for (vfs, ms) in [
            (libc::ST_NOSUID, libc::MS_NOSUID),
            (libc::ST_NODEV, libc::MS_NODEV),
            (libc::ST_NOEXEC, libc::MS_NOEXEC),
            (libc::ST_NOATIME, libc::MS_NOATIME),
            (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
            (libc::ST_RELATIME, libc::MS_RELATIME),
        ] {
            if st.f_flag & vfs != 0 {
                flags |= ms;
            }
        }
        if libc::mount(
            std::ptr::null(),
            mp.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        ) != 0
        {
            return Err(());
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

fn capget() -> Option<[CapData; 2]> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills two version-3 data structs for the calling thread.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    (r == 0).then_some(data)
}

/// Is `cap` in this process's effective set?
fn has_cap(cap: u32) -> bool {
    capget().is_some_and(|d| d[(cap / 32) as usize].effective & (1 << (cap % 32)) != 0)
}

/// Empty the inheritable set (async-signal-safe: two system calls on the stack).
fn clear_inheritable() -> Result<(), ()> {
    let mut data = capget().ok_or(())?;
    for d in &mut data {
        d.inheritable = 0;
    }
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    // SAFETY: capset with the sets capget returned, inheritable emptied.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if r == 0 { Ok(()) } else { Err(()) }
}

/// The named capabilities, for the schema and errors.
pub fn is_capability(name: &str) -> bool {
    NAMES.contains(&name)
}

/// Paths for messages.
pub fn describe_mounts(c: &Contain) -> Vec<PathBuf> {
    c.read_only
        .iter()
        .chain(c.fresh_cgroup2.iter())
        .map(|s| PathBuf::from(std::ffi::OsStr::from_bytes(s.as_bytes())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowlist_names_real_capabilities_and_keeps_none_that_undo_containment() {
        for k in KEPT {
            assert!(is_capability(k), "{k}");
            assert!(!UNDOING.contains(k), "{k}");
        }
        assert_eq!(bit("SYS_ADMIN"), Some(21));
        assert_eq!(bit("SYS_PTRACE"), Some(19));
        assert_eq!(bit("SYS_RESOURCE"), Some(24));
        assert_eq!(bit("CHECKPOINT_RESTORE"), Some(40));
    }
}
