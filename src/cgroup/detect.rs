//! Where this process's cgroups live: parses `/proc/self/mountinfo` (which hierarchies
//! are mounted where, v1 controller lists from the super options, `cgroup2` for the
//! unified tree) and `/proc/self/cgroup` (our path inside each hierarchy).

use std::path::{Path, PathBuf};

use super::{CgroupError, Version};

/// One mounted v1 hierarchy (possibly comounted controllers, e.g. `cpu,cpuacct`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub controllers: Vec<String>,
    /// This process's own cgroup directory in the hierarchy.
    pub dir: PathBuf,
    /// Where the hierarchy is mounted.
    pub mount: PathBuf,
}

/// The unified (v2) hierarchy as this process sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unified {
    /// This process's own cgroup directory.
    pub dir: PathBuf,
    /// Where the hierarchy is mounted: its root as this process sees it (the real root,
    /// or the root of a cgroup namespace).
    pub mount: PathBuf,
    /// Mounted with `nsdelegate`: a cgroup namespace is a delegation boundary, so a
    /// process inside one cannot change its namespace root's limits or leave it.
    pub nsdelegate: bool,
}

/// How cgroup directories are made and removed: `mkdir(2)`/`rmdir(2)` on cgroupfs,
/// where the kernel gives a new directory its control files. Tests of file formats on
/// a fake tree pass their own, which also write those files.
#[derive(Clone, Copy, Debug)]
pub struct Ops {
    pub mkdir: fn(&Path) -> std::io::Result<()>,
    pub rmdir: fn(&Path) -> std::io::Result<()>,
}

impl Ops {
    pub const KERNEL: Ops = Ops {
        mkdir: |p| std::fs::create_dir(p),
        rmdir: |p| std::fs::remove_dir(p),
    };
}

/// Where cgroups live for this process.
#[derive(Clone, Debug)]
pub struct CgroupFs {
    version: Version,
    /// v1 hierarchies that carry controllers (named ones like `name=systemd` are skipped).
    v1: Vec<V1Hierarchy>,
    /// The unified (v2) tree: the whole story on v2, an extra on hybrid.
    unified: Option<Unified>,
    /// Every mount point of a cgroup filesystem (v1 and v2, named ones too): what a
    /// contained step sees read-only.
    mounts: Vec<PathBuf>,
    pub(crate) ops: Ops,
    /// systemd manages this tree (and can be asked for a delegated scope).
    pub(crate) systemd: bool,
    /// Where runs record their cgroups (see `record`).
    pub(crate) records: PathBuf,
}

const MOUNTINFO: &str = "/proc/self/mountinfo";
const PROC_SELF_CGROUP: &str = "/proc/self/cgroup";

impl CgroupFs {
    /// Detect from `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn detect() -> Result<CgroupFs, CgroupError> {
        let mountinfo = super::read_string(Path::new(MOUNTINFO))?;
        let cgroup = super::read_string(Path::new(PROC_SELF_CGROUP))?;
        Self::from_texts(&mountinfo, &cgroup, None)
    }

    /// Parse given texts; mount points are taken relative to `root_prefix` when given
    /// (fake trees in tests, `RUNNER_CGROUP_ROOT`-style overrides).
    pub fn from_texts(
        mountinfo: &str,
        proc_self_cgroup: &str,
        root_prefix: Option<&Path>,
    ) -> Result<CgroupFs, CgroupError> {
        let own = parse_proc_cgroup(proc_self_cgroup);
        let mut v1: Vec<V1Hierarchy> = Vec::new();
        let mut unified = None;
        let mut mounts = Vec::new();
        for (lineno, line) in mountinfo.lines().enumerate() {
            let Some(m) = parse_mount_line(line) else {
                if line.trim().is_empty() {
                    continue;
                }
                return Err(CgroupError::Parse {
                    path: PathBuf::from(MOUNTINFO),
                    detail: format!("line {}: `{line}`", lineno + 1),
                });
            };
            let mountpoint = match root_prefix {
                Some(prefix) => prefix.join(m.mountpoint.trim_start_matches('/')),
                None => PathBuf::from(&m.mountpoint),
            };
            if matches!(m.fstype, "cgroup" | "cgroup2") && !mounts.contains(&mountpoint) {
                mounts.push(mountpoint.clone());
            }
            match m.fstype {
                "cgroup2" if unified.is_none() => {
                    let path = own.unified.as_deref().unwrap_or("/");
                    unified = Some(Unified {
                        dir: own_dir(&mountpoint, m.root, path),
                        nsdelegate: m.super_opts.split(',').any(|o| o == "nsdelegate"),
                        mount: mountpoint,
                    });
                }
                "cgroup" => {
                    let controllers = v1_controllers(m.super_opts);
                    if controllers.is_empty()
                        || v1.iter().any(|h| h.controllers.contains(&controllers[0]))
                    {
                        continue;
                    }
                    let path = own
                        .v1
                        .iter()
                        .find(|(ctrls, _)| ctrls.contains(&controllers[0]))
                        .map_or("/", |(_, p)| p.as_str());
                    v1.push(V1Hierarchy {
                        dir: own_dir(&mountpoint, m.root, path),
                        controllers,
                        mount: mountpoint,
                    });
                }
                _ => {}
            }
        }
        let version = match (v1.is_empty(), unified.is_some()) {
            (false, _) => Version::V1,
            (true, true) => Version::V2,
            (true, false) => {
                return Err(CgroupError::NoCgroupMount {
                    path: PathBuf::from(MOUNTINFO),
                });
            }
        };
        Ok(CgroupFs {
            version,
            v1,
            unified,
            mounts,
            ops: Ops::KERNEL,
            // A tree under a prefix is a test's, never systemd's.
            systemd: root_prefix.is_none() && super::systemd::booted(),
            records: super::record::dir(),
        })
    }

    /// The same hierarchies, recording runs in `dir` (tests).
    pub fn with_records(mut self, dir: &Path) -> CgroupFs {
        self.records = dir.to_path_buf();
        self
    }

    /// The same hierarchies, with directories made and removed by `ops` (a fake tree).
    pub fn with_ops(mut self, ops: Ops) -> CgroupFs {
        self.ops = ops;
        self
    }

    /// Every cgroup filesystem mount point.
    pub fn mounts(&self) -> &[PathBuf] {
        &self.mounts
    }

    /// The unified hierarchy, with its mount and options.
    pub fn unified_tree(&self) -> Option<&Unified> {
        self.unified.as_ref()
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Own directory in the unified tree (v2, or the extra tree of a hybrid host).
    pub fn unified(&self) -> Option<&Path> {
        self.unified.as_ref().map(|u| u.dir.as_path())
    }

    /// Own directory in the v1 hierarchy carrying `controller`.
    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.dir.as_path())
    }

    pub fn v1_hierarchies(&self) -> &[V1Hierarchy] {
        &self.v1
    }
}

/// Our paths from `/proc/self/cgroup`: v1 `(controllers, path)` pairs and the v2 path.
#[derive(Default)]
struct OwnPaths {
    v1: Vec<(Vec<String>, String)>,
    unified: Option<String>,
}

fn parse_proc_cgroup(text: &str) -> OwnPaths {
    let mut own = OwnPaths::default();
    for line in text.lines() {
        // "hierarchy-id:controller-list:path"; the path may itself contain ':'.
        let mut it = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            own.unified = Some(path.to_owned());
        } else {
            let ctrls = ctrls
                .split(',')
                .filter(|c| !c.starts_with("name="))
                .map(str::to_owned)
                .collect::<Vec<_>>();
            if !ctrls.is_empty() {
                own.v1.push((ctrls, path.to_owned()));
            }
        }
    }
    own
}

struct MountLine<'a> {
    root: &'a str,
    mountpoint: String,
    fstype: &'a str,
    super_opts: &'a str,
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_mount_line(line: &str) -> Option<MountLine<'_>> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    Some(MountLine {
        root: fields.get(3)?,
        mountpoint: unescape(fields.get(4)?),
        fstype: fields.get(sep + 1)?,
        super_opts: fields.get(sep + 3).copied().unwrap_or(""),
    })
}

/// Undo mountinfo's octal escapes (`\040` for space etc.).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Controllers from v1 super options such as `rw,cpu,cpuacct` (mount flags dropped).
fn v1_controllers(super_opts: &str) -> Vec<String> {
    const NOT_CONTROLLERS: &[&str] = &[
        "rw",
        "ro",
        "xattr",
        "clone_children",
        "noprefix",
        "cpuset_v2_mode",
        "all",
        "none",
        "favordynmods",
    ];
    super_opts
        .split(',')
        .filter(|o| !o.is_empty() && !o.contains('=') && !NOT_CONTROLLERS.contains(o))
        .map(str::to_owned)
        .collect()
}

/// `mountpoint` + our `path` made relative to the mount's `root` (a mount may show
/// only a subtree of the hierarchy, e.g. inside a container without cgroupns).
fn own_dir(mountpoint: &Path, root: &str, path: &str) -> PathBuf {
    let rel = if root == "/" {
        path
    } else {
        path.strip_prefix(root).unwrap_or("/")
    };
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        mountpoint.to_owned()
    } else {
        mountpoint.join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/x\04"), r"/x\04");
    }

    #[test]
    fn controllers_from_super_opts() {
        assert_eq!(v1_controllers("rw,cpu,cpuacct"), ["cpu", "cpuacct"]);
        assert!(v1_controllers("rw,xattr,name=systemd").is_empty());
    }

    #[test]
    fn own_dir_strips_mount_root() {
        let mp = Path::new("/sys/fs/cgroup/memory");
        assert_eq!(own_dir(mp, "/", "/a/b"), mp.join("a/b"));
        assert_eq!(own_dir(mp, "/a", "/a/b"), mp.join("b"));
        assert_eq!(own_dir(mp, "/", "/"), mp);
        assert_eq!(own_dir(mp, "/other", "/a/b"), mp);
    }
}
