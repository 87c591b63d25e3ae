//! Tests against the machine's real cgroups: real children, real limits, real kills.
//!
//! They run as root (or when `CI=true`, where not being root is a failure, not a skip)
//! and are serialized: they share the runner's own cgroup and time cpu use.

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::{CgroupFs, Request, RunCgroup, RunRoot, join_in_child};
use crate::limits::Rlimits;

/// Should real-resource tests run? Root: yes. `CI=true` without root: panic.
pub(crate) fn real_tests_enabled(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if std::env::var("CI").is_ok_and(|v| v == "true") && !root {
        panic!("{test}: CI=true but not running as root, real limit tests cannot run");
    }
    if !root {
        eprintln!("skipping {test}: needs root");
    }
    root
}

/// Held for the whole test: real tests run one at a time.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The real interpreter, not a pyenv shim (a shim forks helpers that count against
/// `pids.max` and memory).
pub(crate) fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 runs");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
}

/// Spawn `cmd` inside `rcg` (when given) with `rl` applied. (The runner's own spawn
/// is tested through the binary; here the cgroup is joined by writing.)
pub(crate) fn spawn(rcg: Option<&RunCgroup>, rl: &Rlimits, cmd: &mut Command) -> Child {
    let fds = rcg.map(|r| r.procs_fds(true)).unwrap_or_default();
    let rl = rl.clone();
    // SAFETY: the closure only calls async-signal-safe functions (write, setrlimit) on
    // data allocated before fork; io::Error::from_raw_os_error does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            join_in_child(&fds).map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            rl.apply_in_child()
                .map_err(|e| io::Error::from_raw_os_error(e as i32))
        });
    }
    cmd.stdin(Stdio::null()).spawn().expect("spawn")
}

/// SIGKILLs the processes a test started when the test ends, passed or not, so that a
/// broken `join_in_child`/`kill_all` cannot leave them running.
#[derive(Default)]
struct Reaper(Vec<i32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Wait up to 10 s for `child` to be killed by a signal; kill it ourselves otherwise.
fn wait_signal(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.signal();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} was not killed", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn fs() -> CgroupFs {
    CgroupFs::detect().expect("cgroups detected")
}

/// A run root of its own for one test, and its stage cgroup `launch` with `req`.
fn stage(fs: &CgroupFs, req: &Request) -> (RunRoot, RunCgroup) {
    let run = format!(
        "test-{}-{}",
        std::process::id(),
        crate::util::new_run_id("real")
    );
    let root = RunRoot::acquire(fs, &run).expect("a run root");
    let rcg = root.create("launch", req).expect("a stage cgroup");
    (root, rcg)
}

fn gone(dirs: &[std::path::PathBuf]) {
    for d in dirs {
        assert!(!d.exists(), "`{}` left behind", d.display());
    }
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn real_memory_limit_oom_kills_and_is_counted() {
    if !real_tests_enabled("real_memory_limit_oom_kills_and_is_counted") {
        return;
    }
    let _g = serial();
    let req = Request {
        memory: Some(64 << 20),
        ..Request::default()
    };
    let (_root, rcg) = stage(&fs(), &req);
    assert!(
        rcg.enforcement()
            .contains(&(crate::limits::LimitKind::Memory, rcg_kind(&rcg)))
    );
    let mut child = spawn(
        Some(&rcg),
        &Rlimits::default(),
        Command::new(python()).args(["-c", "b = b'x' * (256 << 20); print(len(b))"]),
    );
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "expected SIGKILL, got {status:?}");
    let stats = rcg.stats();
    eprintln!("memory test stats: {stats:?}");
    assert!(stats.oom_kills >= 1, "{stats:?}");
    let peak = stats.peak_memory.expect("peak memory");
    assert!(peak <= 64 << 20 && peak > 16 << 20, "peak {peak}");
    let dirs = rcg.dirs().to_vec();
    rcg.remove().unwrap();
    gone(&dirs);
}

fn rcg_kind(rcg: &RunCgroup) -> crate::limits::Enforcement {
    match rcg.version() {
        super::Version::V1 => crate::limits::Enforcement::CgroupV1,
        super::Version::V2 => crate::limits::Enforcement::CgroupV2,
    }
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn real_pids_limit_makes_fork_fail() {
    if !real_tests_enabled("real_pids_limit_makes_fork_fail") {
        return;
    }
    let _g = serial();
    let req = Request {
        pids: Some(20),
        ..Request::default()
    };
    let (_root, rcg) = stage(&fs(), &req);
    let script = "\
import os, time
kids, err = [], None
for _ in range(60):
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        os.close(1)  # let the test read stdout to EOF without waiting for us
        time.sleep(10)
        os._exit(0)
    kids.append(pid)
print(len(kids), err)
";
    let child = spawn(
        Some(&rcg),
        &Rlimits::default(),
        Command::new(python())
            .args(["-c", script])
            .stdout(Stdio::piped()),
    );
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let forked: usize = it.next().unwrap().parse().unwrap();
    assert_eq!(it.next(), Some("11"), "fork must fail with EAGAIN: {text}");
    assert!((1..20).contains(&forked), "forked {forked}");
    // The sleeping grandchildren are still in the cgroup: removal must kill them.
    assert_eq!(rcg.pids().len(), forked);
    let dirs = rcg.dirs().to_vec();
    rcg.remove().unwrap();
    gone(&dirs);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn real_cpu_quota_halves_cpu_time() {
    if !real_tests_enabled("real_cpu_quota_halves_cpu_time") {
        return;
    }
    let _g = serial();
    let req = Request {
        cpus: Some(0.5),
        ..Request::default()
    };
    let (_root, rcg) = stage(&fs(), &req);
    let start = Instant::now();
    let mut child = spawn(
        Some(&rcg),
        &Rlimits::default(),
        Command::new(python()).args([
            "-c",
            "import time\nend = time.time() + 2\nwhile time.time() < end: pass",
        ]),
    );
    assert!(child.wait().unwrap().success());
    let wall = start.elapsed().as_nanos() as f64;
    let stats = rcg.stats();
    let total = stats.cpu_total_ns.expect("cpu total") as f64;
    let ratio = total / wall;
    eprintln!("cpu test: {stats:?}, wall {wall} ns, ratio {ratio:.3}");
    // A quota is a ceiling: a loaded machine lowers the ratio, only a missing quota
    // raises it (to about 1.0 on an idle core).
    assert!(
        ratio <= 0.65,
        "cpu/wall = {ratio:.3}: more than the 0.5 quota"
    );
    assert!(ratio >= 0.05, "cpu/wall = {ratio:.3}: cpu time not counted");
    assert!(stats.cpu_user_ns.is_some_and(|u| u > 0), "{stats:?}");
    rcg.remove().unwrap();
}

fn proc_gone_or_zombie(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'),
    }
}

/// Start a `sleep 1000` that escaped by double fork + setsid; returns its pid.
fn escaped_sleep(rcg: &RunCgroup, pidfile: &Path) -> i32 {
    let inner = format!("sleep 1000 & echo $! > {}", pidfile.display());
    let mut child = spawn(
        Some(rcg),
        &Rlimits::default(),
        Command::new("sh").args(["-c", "setsid sh -c \"$0\" &", &inner]),
    );
    assert!(child.wait().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid file");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn real_kill_all_catches_double_forked_setsid_sleep() {
    if !real_tests_enabled("real_kill_all_catches_double_forked_setsid_sleep") {
        return;
    }
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (_root, rcg) = stage(&fs(), &Request::default());
    let sleep = escaped_sleep(&rcg, &tmp.path().join("pid"));
    let _reaper = Reaper(vec![sleep]);
    assert!(rcg.populated());
    assert!(rcg.pids().contains(&sleep), "{:?}", rcg.pids());
    let killed = rcg.kill_all().unwrap();
    assert!(killed >= 1, "killed {killed}");
    assert!(proc_gone_or_zombie(sleep), "sleep {sleep} survived");
    assert!(!rcg.populated());
    assert!(rcg.pids().is_empty());
    let dirs = rcg.dirs().to_vec();
    rcg.remove().unwrap();
    gone(&dirs);
}

/// The v1 path of `kill_all` (freezer, SIGKILL each pid, thaw), with the unified tree
/// hidden so `cgroup.kill` cannot do the work.
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn real_kill_all_with_v1_freezer_only() {
    if !real_tests_enabled("real_kill_all_with_v1_freezer_only") {
        return;
    }
    let _g = serial();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let v1_only: String = mountinfo
        .lines()
        .filter(|l| !l.contains(" - cgroup2 "))
        .map(|l| format!("{l}\n"))
        .collect();
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let fs = CgroupFs::from_texts(&v1_only, &cgroup, None).unwrap();
    if fs.version() != super::Version::V1 || fs.v1_dir("freezer").is_none() {
        eprintln!("skipping: no v1 freezer on this machine");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_root, rcg) = stage(&fs, &Request::default());
    assert!(
        rcg.dirs()
            .iter()
            .all(|d| !d.starts_with("/sys/fs/cgroup/unified"))
    );
    let sleep = escaped_sleep(&rcg, &tmp.path().join("pid"));
    // A forking loop too: the freezer must stop it from outrunning the kills. Bounded
    // (500 short sleeps) so that a broken join cannot turn it into a fork bomb.
    let mut forker = spawn(
        Some(&rcg),
        &Rlimits::default(),
        Command::new("sh").args([
            "-c",
            "i=0; while [ $i -lt 500 ]; do sleep 60 & i=$((i+1)); sleep 0.01; done; wait",
        ]),
    );
    let _reaper = Reaper(vec![sleep, forker.id() as i32]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(rcg.populated());
    let killed = rcg.kill_all().unwrap();
    assert!(killed >= 3, "killed {killed}");
    assert!(proc_gone_or_zombie(sleep));
    assert_eq!(wait_signal(&mut forker), Some(9));
    assert!(rcg.pids().is_empty() && !rcg.populated());
    let freezer = rcg.dirs().iter().find(|d| d.join("freezer.state").exists());
    let state = std::fs::read_to_string(freezer.unwrap().join("freezer.state")).unwrap();
    assert_eq!(state.trim(), "THAWED", "never left frozen");
    let dirs = rcg.dirs().to_vec();
    rcg.remove().unwrap();
    gone(&dirs);
}
