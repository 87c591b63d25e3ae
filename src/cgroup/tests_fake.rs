//! Tests on a fake cgroupfs tree in a temporary directory (v2 delegated and unmanaged,
//! v1 with a nested memory path and comounted `cpu,cpuacct`, hybrid), plus
//! `from_texts` on real-looking samples.
//!
//! A fake tree has no kernel behind it: its [`Ops`] give a new directory the control
//! files of its parent (as cgroupfs would give it its own) and delete them before
//! removing it. Runs are recorded in the test's own folder.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{CgroupError, CgroupFs, Ops, Placement, Request, RunRoot, Version};
use crate::limits::{Enforcement, LimitKind};

fn fake_mkdir(dir: &Path) -> io::Result<()> {
    fs::create_dir(dir)?;
    let parent = dir.parent().expect("a parent");
    for e in fs::read_dir(parent)?.flatten() {
        if e.file_type()?.is_file() {
            let name = e.file_name();
            let content = match name.to_str() {
                Some("cgroup.procs" | "tasks" | "cgroup.subtree_control") => String::new(),
                _ => fs::read_to_string(e.path())?,
            };
            fs::write(dir.join(name), content)?;
        }
    }
    Ok(())
}

fn fake_rmdir(dir: &Path) -> io::Result<()> {
    if dir.exists() {
        for e in fs::read_dir(dir)?.flatten() {
            if e.file_type()?.is_file() {
                fs::remove_file(e.path())?;
            }
        }
    }
    fs::remove_dir(dir)
}

const FAKE: Ops = Ops {
    mkdir: fake_mkdir,
    rmdir: fake_rmdir,
};

/// `from_texts` under `tmp`, with fake directories and records in `tmp/records`.
fn fake_fs(mountinfo: &str, cgroup: &str, tmp: &Path) -> CgroupFs {
    CgroupFs::from_texts(mountinfo, cgroup, Some(tmp))
        .unwrap()
        .with_ops(FAKE)
        .with_records(&tmp.join("records"))
}

fn put(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        fs::write(dir.join(name), content).unwrap();
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

const V2_MOUNTINFO: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
29 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
30 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
";
const V2_CGROUP: &str = "0::/user.slice/user-1000.slice/session-2.scope\n";

/// This VM's layout: separate v1 mounts, nested memory path, empty unified tree.
const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/5742f39a
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

/// Classic v1 (Debian 10 / older Docker hosts): comounted `cpu,cpuacct`, no unified tree,
/// optional fields before the separator.
const V1_MOUNTINFO: &str = "\
25 21 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,name=systemd
29 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
31 25 0:29 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,pids
32 25 0:30 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,freezer
";
const V1_CGROUP: &str = "\
6:freezer:/ci/job
5:pids:/ci/job
4:memory:/process_api/abc/nested
2:cpu,cpuacct:/ci/job
1:name=systemd:/ci/job
";

#[test]
fn from_texts_v2_only() {
    let fs = CgroupFs::from_texts(V2_MOUNTINFO, V2_CGROUP, None).unwrap();
    assert_eq!(fs.version(), Version::V2);
    assert_eq!(
        fs.unified().unwrap(),
        Path::new("/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope")
    );
    assert!(fs.v1_hierarchies().is_empty());
}

#[test]
fn from_texts_hybrid_this_vm() {
    let fs = CgroupFs::from_texts(HYBRID_MOUNTINFO, HYBRID_CGROUP, None).unwrap();
    assert_eq!(fs.version(), Version::V1);
    assert_eq!(
        fs.v1_dir("memory").unwrap(),
        Path::new("/sys/fs/cgroup/memory/process_api/5742f39a")
    );
    assert_eq!(fs.v1_dir("cpu").unwrap(), Path::new("/sys/fs/cgroup/cpu"));
    assert_eq!(
        fs.v1_dir("cpuacct").unwrap(),
        Path::new("/sys/fs/cgroup/cpuacct")
    );
    assert_eq!(fs.unified().unwrap(), Path::new("/sys/fs/cgroup/unified"));
    assert!(fs.v1_dir("systemd").is_none() && fs.v1_dir("name=systemd").is_none());
    assert_eq!(fs.v1_hierarchies().len(), 6);
}

#[test]
fn from_texts_v1_comounted_with_prefix() {
    let fs = CgroupFs::from_texts(V1_MOUNTINFO, V1_CGROUP, Some(Path::new("/tmp/x"))).unwrap();
    assert_eq!(fs.version(), Version::V1);
    assert!(fs.unified().is_none());
    let cpu = fs.v1_dir("cpu").unwrap();
    assert_eq!(cpu, Path::new("/tmp/x/sys/fs/cgroup/cpu,cpuacct/ci/job"));
    assert_eq!(fs.v1_dir("cpuacct").unwrap(), cpu, "comounted is one dir");
    assert_eq!(
        fs.v1_dir("memory").unwrap(),
        Path::new("/tmp/x/sys/fs/cgroup/memory/process_api/abc/nested")
    );
}

#[test]
fn from_texts_container_mount_root_and_escapes() {
    let mi = "1 0 0:1 /docker/abc /sys/fs/cgroup/my\\040mem ro - cgroup cgroup rw,memory\n";
    let fs = CgroupFs::from_texts(mi, "3:memory:/docker/abc\n", None).unwrap();
    assert_eq!(
        fs.v1_dir("memory").unwrap(),
        Path::new("/sys/fs/cgroup/my mem")
    );
}

#[test]
fn from_texts_without_cgroups_is_an_error() {
    let mi = "30 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n";
    let err = CgroupFs::from_texts(mi, "", None).unwrap_err();
    assert!(matches!(err, CgroupError::NoCgroupMount { .. }), "{err}");
    let err = CgroupFs::from_texts("garbage", "", None).unwrap_err();
    assert!(err.to_string().contains("/proc/self/mountinfo"), "{err}");
}

const V2_FILES: &[(&str, &str)] = &[
    ("cgroup.subtree_control", ""),
    ("cgroup.procs", ""),
    ("cgroup.events", "populated 0\nfrozen 0\n"),
    ("cgroup.kill", ""),
    ("memory.max", "max"),
    ("memory.swap.max", "max"),
    ("memory.oom.group", "0"),
    ("memory.events", "low 0\nhigh 0\nmax 7\noom 3\noom_kill 2\n"),
    ("memory.peak", "0"),
    ("memory.current", "0"),
    ("cpu.max", "max 100000"),
    ("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"),
    ("pids.max", "max"),
];

/// A fake v2 tree at `<tmp>/sys/fs/cgroup`, this process in
/// `user.slice/user-1000.slice/session-2.scope` (alone in it when `alone`).
fn fake_v2(tmp: &Path, controllers: &str, alone: bool) -> (CgroupFs, PathBuf, PathBuf) {
    let fs = fake_fs(V2_MOUNTINFO, V2_CGROUP, tmp);
    let mount = fs.unified_tree().unwrap().mount.clone();
    // The real root has no `cgroup.type`.
    put(&mount, &[("cgroup.controllers", controllers)]);
    put(&mount, V2_FILES);
    let own = fs.unified().unwrap().to_owned();
    put(
        &own,
        &[
            ("cgroup.controllers", controllers),
            ("cgroup.type", "domain"),
        ],
    );
    put(&own, V2_FILES);
    let me = std::process::id().to_string();
    put(
        &own,
        &[("cgroup.procs", if alone { &me } else { "1\n4242\n" })],
    );
    (fs, mount, own)
}

#[test]
fn v2_in_a_cgroup_of_its_own_the_runner_steps_into_a_leaf() {
    let tmp = tempfile::tempdir().unwrap();
    let (fs, _, own) = fake_v2(tmp.path(), "cpuset cpu io memory pids", true);
    let mut root = RunRoot::acquire(&fs, "r1").unwrap();
    assert_eq!(root.placement(), Placement::Delegated);
    // It moved itself into a leaf, so its cgroup can hand controllers to children.
    let leaf = own.join("steprunner-supervisor");
    assert_eq!(
        read(&leaf.join("cgroup.procs")),
        std::process::id().to_string()
    );
    assert_eq!(
        read(&own.join("cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
    let run = own.join("steprunner-r1");
    assert_eq!(
        read(&run.join("cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
    let req = Request {
        memory: Some(64 << 20),
        cpus: Some(1.5),
        pids: Some(20),
    };
    let rcg = root.create("launch", &req).unwrap();
    let dir = run.join("launch");
    assert_eq!(rcg.dirs(), std::slice::from_ref(&dir));
    assert_eq!(read(&dir.join("memory.max")), "67108864");
    assert_eq!(read(&dir.join("memory.swap.max")), "0");
    assert_eq!(read(&dir.join("memory.oom.group")), "1");
    assert_eq!(read(&dir.join("cpu.max")), "150000 100000");
    assert_eq!(read(&dir.join("pids.max")), "20");
    // A share too small for a 100 ms period gets a 1 s one.
    let small = Request {
        cpus: Some(0.005),
        ..Request::default()
    };
    let prep = root.create("prepare", &small).unwrap();
    assert_eq!(read(&run.join("prepare").join("cpu.max")), "5000 1000000");
    prep.remove().unwrap();
    assert_eq!(
        rcg.enforcement(),
        [
            (LimitKind::Memory, Enforcement::CgroupV2),
            (LimitKind::Cpus, Enforcement::CgroupV2),
            (LimitKind::Pids, Enforcement::CgroupV2)
        ]
    );
    // Born into the cgroup through its directory; nothing to write after the fork.
    assert!(rcg.unified_fd().is_some());
    assert!(rcg.procs_fds(false).is_empty());
    assert_eq!(rcg.procs_fds(true).len(), 1);
    // The run is recorded while it lives.
    assert!(tmp.path().join("records/r1").exists());

    // Counters move after creation: the oom delta is taken from the baseline (2).
    put(
        &dir,
        &[
            ("memory.events", "low 0\nhigh 0\nmax 9\noom 5\noom_kill 5\n"),
            ("memory.peak", "1048576\n"),
            (
                "cpu.stat",
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n",
            ),
            ("cgroup.procs", "4242\n"),
        ],
    );
    let stats = rcg.stats();
    assert_eq!(stats.oom_kills, 3);
    assert_eq!(stats.peak_memory, Some(1 << 20));
    assert_eq!(stats.cpu_user_ns, Some(1_000_000));
    assert_eq!(stats.cpu_system_ns, Some(500_000));
    assert_eq!(stats.cpu_total_ns, Some(1_500_000));
    assert_eq!(rcg.pids(), [4242]);
    assert!(!rcg.populated(), "cgroup.events is authoritative on v2");
    put(
        &dir,
        &[("cgroup.procs", ""), ("cgroup.events", "populated 1\n")],
    );
    assert!(rcg.populated());
    put(&dir, &[("cgroup.events", "populated 0\n")]);
    assert_eq!(rcg.kill_all().unwrap(), 0);
    assert_eq!(
        read(&dir.join("cgroup.kill")),
        "1",
        "v2 kills with cgroup.kill"
    );
    rcg.remove().unwrap();
    assert!(!dir.exists(), "stage cgroup removed");
    root.release();
    assert!(
        !run.exists() && !own.join("steprunner").exists(),
        "run root removed"
    );
    // Back where it came from, controllers handed back, leaf gone.
    assert_eq!(
        read(&own.join("cgroup.procs")),
        std::process::id().to_string()
    );
    assert_eq!(
        read(&own.join("cgroup.subtree_control")),
        "-memory -cpu -pids"
    );
    assert!(!leaf.exists());
    assert!(!tmp.path().join("records/r1").exists(), "record removed");
}

#[test]
fn v2_without_systemd_root_makes_its_subtree_at_the_top() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (the top of a hierarchy is root's)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (fs, mount, own) = fake_v2(tmp.path(), "cpu memory pids", false);
    let root = RunRoot::acquire(&fs, "r2").unwrap();
    assert_eq!(root.placement(), Placement::Unmanaged);
    assert_eq!(
        read(&mount.join("cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
    let rcg = root.create("prepare", &Request::default()).unwrap();
    assert_eq!(rcg.dirs(), [mount.join("steprunner-r2/prepare")]);
    // The runner stays where it is; other processes' cgroups are not touched.
    assert_eq!(read(&own.join("cgroup.procs")), "1\n4242");
    assert_eq!(read(&own.join("cgroup.subtree_control")), "");
    drop(rcg);
    drop(root);
    assert!(
        !mount.join("steprunner").exists(),
        "dropping removes everything"
    );
}

#[test]
fn v2_missing_controller_is_an_error_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (fs, _, own) = fake_v2(tmp.path(), "cpu memory", true);
    let root = RunRoot::acquire(&fs, "r3").unwrap();
    let req = Request {
        pids: Some(10),
        ..Request::default()
    };
    let err = root.create("launch", &req).unwrap_err();
    match &err {
        CgroupError::ControllerMissing { controller, path } => {
            assert_eq!(*controller, "pids");
            assert_eq!(path, &own.join("steprunner-r3"));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("`pids`"), "{err}");
    assert!(!own.join("steprunner-r3/launch").exists());
}

#[test]
fn v2_shared_with_other_processes_and_no_systemd_is_a_clear_error() {
    if nix::unistd::geteuid().is_root() {
        // Root makes its own subtree at the top instead (the test above).
        eprintln!("skipped: as root the top of the hierarchy is used");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (fs, _, own) = fake_v2(tmp.path(), "cpu memory pids", false);
    let err = RunRoot::acquire(&fs, "r4").unwrap_err();
    assert!(matches!(err, CgroupError::NotDelegated { .. }), "{err}");
    assert!(err.to_string().contains(own.to_str().unwrap()), "{err}");
    assert!(!err.hints().is_empty());
}

/// Mark `dir` delegated the way systemd does for `Delegate=yes` (its user-namespace
/// variant: a test cannot set `trusted.*`).
fn mark_delegated(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: setxattr with NUL-terminated strings and a one-byte value.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            c"user.delegate".as_ptr(),
            b"1".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr: {}", io::Error::last_os_error());
}

/// A fake v2 tree with this process in `cgroup` (below `/sys/fs/cgroup`) among other
/// processes, every directory from the root down to it with control files and no
/// process of its own.
fn fake_v2_in(tmp: &Path, cgroup: &str) -> (CgroupFs, PathBuf) {
    let mut fs = fake_fs(V2_MOUNTINFO, &format!("0::/{cgroup}\n"), tmp);
    fs.systemd = true;
    let u = fs.unified_tree().unwrap().clone();
    for d in u.dir.ancestors().take_while(|d| d.starts_with(&u.mount)) {
        put(d, &[("cgroup.controllers", "cpu io memory pids")]);
        put(d, V2_FILES);
        if d != u.mount {
            put(d, &[("cgroup.type", "domain")]);
        }
    }
    put(
        &u.dir,
        &[("cgroup.procs", &format!("1\n{}\n", std::process::id()))],
    );
    (fs, u.mount)
}

#[test]
fn v2_in_a_leaf_of_its_delegated_unit_the_run_goes_beside_it_and_nothing_moves() {
    if super::systemd::booted() {
        // A regression would ask this host's systemd for a scope and move the test.
        eprintln!("skipped: systemd runs here (the fake tree must not reach it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (fs, mount) = fake_v2_in(tmp.path(), "system.slice/ci.service/main");
    let unit = mount.join("system.slice/ci.service");
    mark_delegated(&unit);
    let own = fs.unified().unwrap().to_owned();
    let procs = read(&own.join("cgroup.procs"));
    let mut root = RunRoot::acquire(&fs, "r5").unwrap();
    assert_eq!(root.placement(), Placement::Beside);
    let run = unit.join("steprunner-r5");
    assert_eq!(
        read(&unit.join("cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
    assert_eq!(
        read(&run.join("cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
    let rcg = root
        .create(
            "launch",
            &Request {
                memory: Some(64 << 20),
                cpus: None,
                pids: Some(20),
            },
        )
        .unwrap();
    assert_eq!(rcg.dirs(), [run.join("launch")]);
    assert_eq!(read(&run.join("launch/memory.max")), "67108864");
    // Born into it through clone3: the runner itself stays where it is.
    assert!(rcg.unified_fd().is_some());
    assert_eq!(read(&own.join("cgroup.procs")), procs);
    assert!(tmp.path().join("records/r5").exists());
    rcg.remove().unwrap();
    root.release();
    assert!(!run.exists(), "run root removed");
    assert_eq!(read(&own.join("cgroup.procs")), procs, "nobody moved");
    // What other runs beside it may use stays enabled.
    assert_eq!(
        read(&unit.join("cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
    assert!(!tmp.path().join("records/r5").exists(), "record removed");
}

#[test]
fn only_a_delegated_unit_of_its_own_with_no_process_is_used_beside_the_caller() {
    let beside = |cgroup: &str, mark: &[&str], busy: Option<&str>, systemd: bool| {
        let tmp = tempfile::tempdir().unwrap();
        let (mut fs, mount) = fake_v2_in(tmp.path(), cgroup);
        fs.systemd = systemd;
        for m in mark {
            mark_delegated(&mount.join(m));
        }
        if let Some(b) = busy {
            put(&mount.join(b), &[("cgroup.procs", "4242\n")]);
        }
        super::root::beside(fs.unified_tree().unwrap(), fs.systemd)
            .map(|p| p.strip_prefix(&mount).unwrap().display().to_string())
    };
    let ci = "system.slice/ci.service";
    assert_eq!(
        beside("system.slice/ci.service/main", &[ci], None, true).as_deref(),
        Some(ci)
    );
    assert_eq!(
        beside("system.slice/ci.service/a/b", &[ci], None, true).as_deref(),
        Some(ci)
    );
    // Not delegated; its cgroup holds a process; the caller is in the unit's own cgroup.
    assert_eq!(
        beside("system.slice/ci.service/main", &[], None, true),
        None
    );
    assert_eq!(
        beside("system.slice/ci.service/main", &[ci], Some(ci), true),
        None
    );
    assert_eq!(beside(ci, &[ci], None, true), None);
    // A user manager's tree is its manager's: a unit below it must be delegated itself.
    let app = "user.slice/user-1000.slice/user@1000.service/app.slice/x.service/leaf";
    assert_eq!(
        beside(
            app,
            &["user.slice/user-1000.slice/user@1000.service"],
            None,
            true
        ),
        None
    );
    // Without systemd only a cgroup namespace's root qualifies, never the real root.
    assert_eq!(
        beside("system.slice/ci.service/main", &[ci], None, false),
        None
    );
}

/// A fake v1 tree laid out like `V1_MOUNTINFO` + `V1_CGROUP`, plus an optional unified tree.
fn fake_v1(tmp: &Path, with_unified: bool) -> (CgroupFs, [PathBuf; 4]) {
    let mut mi = V1_MOUNTINFO.to_owned();
    let mut cg = V1_CGROUP.to_owned();
    if with_unified {
        mi.push_str("41 25 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n");
        cg.push_str("0::/\n");
    }
    let fs = fake_fs(&mi, &cg, tmp);
    let mem = fs.v1_dir("memory").unwrap().to_owned();
    put(
        &mem,
        &[
            ("cgroup.procs", ""),
            ("tasks", ""),
            ("memory.limit_in_bytes", "9223372036854771712"),
            ("memory.memsw.limit_in_bytes", "9223372036854771712"),
            ("memory.swappiness", "60"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
            ),
            ("memory.max_usage_in_bytes", "0"),
            ("memory.usage_in_bytes", "0"),
        ],
    );
    let cpu = fs.v1_dir("cpu").unwrap().to_owned();
    put(
        &cpu,
        &[
            ("cgroup.procs", ""),
            ("tasks", ""),
            ("cpu.cfs_period_us", "100000"),
            ("cpu.cfs_quota_us", "-1"),
            ("cpuacct.usage", "0"),
            ("cpuacct.stat", "user 0\nsystem 0\n"),
        ],
    );
    let pids = fs.v1_dir("pids").unwrap().to_owned();
    put(
        &pids,
        &[("cgroup.procs", ""), ("tasks", ""), ("pids.max", "max")],
    );
    let freezer = fs.v1_dir("freezer").unwrap().to_owned();
    put(
        &freezer,
        &[
            ("cgroup.procs", ""),
            ("tasks", ""),
            ("freezer.state", "THAWED"),
        ],
    );
    if let Some(u) = fs.unified() {
        put(
            u,
            &[
                ("cgroup.procs", ""),
                ("cgroup.events", "populated 0\nfrozen 0\n"),
                ("cgroup.kill", ""),
            ],
        );
    }
    (fs, [mem, cpu, pids, freezer])
}

#[test]
fn v1_create_writes_limits_in_nested_and_comounted_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let (fs, [mem, cpu, pids, freezer]) = fake_v1(tmp.path(), false);
    let req = Request {
        memory: Some(64 << 20),
        cpus: Some(0.5),
        pids: Some(20),
    };
    let root = RunRoot::acquire(&fs, "r1").unwrap();
    assert_eq!(root.placement(), Placement::V1);
    let rcg = root.create("launch", &req).unwrap();
    let leaf = |d: &Path| d.join("steprunner-r1/launch");
    assert_eq!(
        rcg.dirs(),
        [leaf(&cpu), leaf(&mem), leaf(&pids), leaf(&freezer)],
        "cpu,cpuacct is one dir, created once; in the order of the mounts"
    );
    assert_eq!(read(&leaf(&mem).join("memory.limit_in_bytes")), "67108864");
    assert_eq!(
        read(&leaf(&mem).join("memory.memsw.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(read(&leaf(&mem).join("memory.swappiness")), "0");
    assert_eq!(read(&leaf(&cpu).join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&leaf(&cpu).join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&leaf(&pids).join("pids.max")), "20");
    assert_eq!(
        rcg.procs_fds(false).len(),
        4,
        "joined through `tasks` in each"
    );
    assert!(rcg.unified_fd().is_none());
    assert_eq!(
        rcg.enforcement(),
        [
            (LimitKind::Memory, Enforcement::CgroupV1),
            (LimitKind::Cpus, Enforcement::CgroupV1),
            (LimitKind::Pids, Enforcement::CgroupV1)
        ]
    );
    put(
        &leaf(&mem),
        &[
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n",
            ),
            ("memory.max_usage_in_bytes", "67108864\n"),
        ],
    );
    put(
        &leaf(&cpu),
        &[
            ("cpuacct.usage", "2000000000\n"),
            ("cpuacct.stat", "user 150\nsystem 50\n"),
        ],
    );
    let stats = rcg.stats();
    assert_eq!(stats.oom_kills, 1, "delta from the baseline of 3");
    assert_eq!(stats.peak_memory, Some(64 << 20));
    assert_eq!(stats.cpu_total_ns, Some(2_000_000_000));
    // USER_HZ is 100 on Linux: 150 ticks = 1.5 s.
    assert_eq!(stats.cpu_user_ns, Some(1_500_000_000));
    assert_eq!(stats.cpu_system_ns, Some(500_000_000));
    assert!(!rcg.populated());
    put(&leaf(&pids), &[("cgroup.procs", "77\n78\n")]);
    assert!(rcg.populated(), "cgroup.procs counts without cgroup.events");
    assert_eq!(rcg.pids(), [77, 78]);
    put(&leaf(&pids), &[("cgroup.procs", "")]);
    let dirs = rcg.dirs().to_vec();
    rcg.remove().unwrap();
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    drop(root);
    assert!(!mem.join("steprunner-r1").exists() && mem.exists() && cpu.exists());
}

#[test]
fn v1_hybrid_with_a_freezer_leaves_the_unified_tree_alone() {
    // Joining the unified tree costs a slow `cgroup.procs` migration; the v1 freezer
    // kills just as race-free, so a hybrid host with a freezer uses v1 only, joined
    // through `tasks`.
    let tmp = tempfile::tempdir().unwrap();
    let (fs, [mem, _, _, freezer]) = fake_v1(tmp.path(), true);
    let root = RunRoot::acquire(&fs, "r1").unwrap();
    let rcg = root.create("launch", &Request::default()).unwrap();
    assert!(
        !fs.unified().unwrap().join("steprunner").exists(),
        "no unified-tree cgroup"
    );
    assert_eq!(rcg.procs_fds(true).len(), 4, "the 4 v1 dirs, no unified");
    assert!(rcg.enforcement().is_empty());
    assert!(!rcg.populated());
    // Nothing requested, yet memory counters are there.
    assert_eq!(rcg.stats().oom_kills, 0);
    rcg.kill_all().unwrap();
    assert_eq!(
        read(&freezer.join("steprunner-r1/launch/freezer.state")),
        "THAWED",
        "the freezer is left thawed"
    );
    drop(rcg);
    drop(root);
    assert!(!mem.join("steprunner-r1").exists());
}

#[test]
fn v1_requested_controller_missing_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mi: String = V1_MOUNTINFO
        .lines()
        .filter(|l| !l.contains("cpu,cpuacct"))
        .map(|l| format!("{l}\n"))
        .collect();
    let fs = fake_fs(&mi, V1_CGROUP, tmp.path());
    for h in fs.v1_hierarchies() {
        put(&h.dir, &[("tasks", ""), ("cgroup.procs", "")]);
    }
    let root = RunRoot::acquire(&fs, "r1").unwrap();
    let req = Request {
        cpus: Some(1.0),
        ..Request::default()
    };
    let err = root.create("launch", &req).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::ControllerMissing {
                controller: "cpu",
                ..
            }
        ),
        "{err}"
    );
    let bad = Request {
        cpus: Some(f64::NAN),
        ..Request::default()
    };
    let err = root.create("launch", &bad).unwrap_err();
    assert!(matches!(err, CgroupError::InvalidCpus { .. }), "{err}");
}

/// A cleaner that does not see the mounts a dead run's cgroups were made in (in
/// another cgroup namespace the same path shows another subtree, or nothing) leaves
/// them and their record to a cleaner that does, instead of taking a directory it
/// cannot see for one removed; that cleaner then removes them.
#[test]
fn a_cleaner_in_another_view_leaves_a_dead_runs_cgroups_to_one_that_sees_them() {
    use super::record::Root;
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let (fs, [mem, cpu, pids, freezer]) = fake_v1(tmp.path(), false);
    let dirs = [&mem, &cpu, &pids, &freezer];
    let write = |run: &str, roots: Vec<Root>| {
        fs::write(
            tmp.path().join("records").join(run),
            serde_json::json!({"run": run, "roots": roots}).to_string(),
        )
        .unwrap();
    };
    fs::create_dir_all(tmp.path().join("records")).unwrap();
    // What the dead runners saw: mounts that are other directories than ours.
    let other = fs::metadata(tmp.path()).map(|m| (m.dev(), m.ino())).ok();
    let seen_there = |path: PathBuf| Root {
        view: other,
        ..Root::new(&fs, path, true)
    };
    for d in dirs {
        fs::create_dir_all(d.join("steprunner-here/launch")).unwrap();
    }
    write(
        "here",
        dirs.iter()
            .map(|d| seen_there(d.join("steprunner-here")))
            .collect(),
    );
    // Its cgroups are not at these paths in our view at all.
    write(
        "unseen",
        dirs.iter()
            .map(|d| seen_there(d.join("steprunner-unseen")))
            .collect(),
    );
    // Named as a run's cgroup, in a mount we do not have.
    write(
        "unmounted",
        vec![Root {
            path: tmp.path().join("elsewhere/steprunner-unmounted"),
            owned: true,
            view: other,
        }],
    );
    assert!(super::clean_stale(&fs).is_empty());
    for run in ["here", "unseen", "unmounted"] {
        assert!(
            tmp.path().join("records").join(run).exists(),
            "the record of `{run}` is kept for a cleaner that sees its cgroups"
        );
    }
    for d in dirs {
        assert!(d.join("steprunner-here/launch").is_dir(), "{}", d.display());
    }
    // Recorded as we see the mounts: ours to remove.
    write(
        "here",
        dirs.iter()
            .map(|d| Root::new(&fs, d.join("steprunner-here"), true))
            .collect(),
    );
    assert_eq!(super::clean_stale(&fs), ["here"]);
    for d in dirs {
        assert!(!d.join("steprunner-here").exists(), "{}", d.display());
    }
    assert!(!tmp.path().join("records/here").exists());
}

#[test]
fn stale_runs_are_removed_and_live_ones_and_strangers_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (fs, [mem, cpu, pids, freezer]) = fake_v1(tmp.path(), false);
    let live = RunRoot::acquire(&fs, "live").unwrap();
    // What a runner killed mid-run leaves: its cgroups, and its record with no lock.
    for d in [&mem, &cpu, &pids, &freezer] {
        fs::create_dir_all(d.join("steprunner-dead/launch")).unwrap();
    }
    let roots: Vec<serde_json::Value> = [&mem, &cpu, &pids, &freezer]
        .iter()
        .map(|d| serde_json::json!({"path": d.join("steprunner-dead"), "owned": true}))
        .chain(std::iter::once(
            // A record naming something that is not a run's cgroup is not obeyed.
            serde_json::json!({"path": mem.clone(), "owned": true}),
        ))
        .collect();
    fs::write(
        tmp.path().join("records/dead"),
        serde_json::json!({"run": "dead", "roots": roots}).to_string(),
    )
    .unwrap();
    put(&mem.join("steprunner-not-ours"), &[]);
    assert_eq!(super::clean_stale(&fs), ["dead"]);
    for d in [&mem, &cpu, &pids, &freezer] {
        assert!(!d.join("steprunner-dead").exists(), "{}", d.display());
        assert!(
            d.join("steprunner-live").exists(),
            "a live run is never touched"
        );
    }
    assert!(mem.exists() && mem.join("steprunner-not-ours").exists());
    assert!(!tmp.path().join("records/dead").exists());
    assert!(tmp.path().join("records/live").exists());
    drop(live);
}

#[test]
fn version_of_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let (fs, ..) = fake_v1(tmp.path(), true);
    assert_eq!(fs.version(), Version::V1);
}
