//! The runner on a real cgroup v2 host: a Debian 12 guest with systemd as PID 1 and
//! the unified hierarchy, booted under QEMU (`.ci/engines/guest.sh` makes its image and
//! prints `STEPRUNNER_GUEST`). The built `runner`, the shipped manifests and
//! `tests/guest/suite.py` go in on a second disk; the suite runs every case as root in
//! a system service and as an unprivileged user, and its results come back on that
//! disk. One boot serves every test here: the first to take the lock boots, the
//! others read its results (kept beside the target folder, keyed by what went in).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{root, tail};

/// How long a boot and the whole suite may take under emulation.
const BOOT_TIMEOUT: Duration = Duration::from_secs(25 * 60);

fn guest() -> PathBuf {
    match std::env::var_os("STEPRUNNER_GUEST").filter(|g| !g.is_empty()) {
        Some(g) => PathBuf::from(g),
        None => panic!(
            "STEPRUNNER_GUEST is not set: `eval \"$(bash .ci/engines/guest.sh start)\"` makes the cgroup v2 guest"
        ),
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_into(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
}

/// The payload disk's folder: the runner (without its debug information), manifests,
/// the suite. Returns a key naming exactly what went in.
fn payload(dir: &Path, mode: &str) -> String {
    let runner = assert_cmd::cargo::cargo_bin("runner");
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(dir.join("runner"))
        .arg(&runner));
    let mut key = blake3::Hasher::new();
    key.update(mode.as_bytes());
    key.update(&std::fs::read(dir.join("runner")).unwrap());
    for f in ["local.yaml", "venv.yaml"] {
        let src = root().join("manifests").join(f);
        copy_into(&src, &dir.join("manifests").join(f));
        key.update(&std::fs::read(&src).unwrap());
    }
    for f in ["suite.py", "guest_user.py", "run", "bench_guest.py"] {
        let src = root().join("tests/guest").join(f);
        if src.exists() {
            copy_into(&src, &dir.join(f));
            key.update(&std::fs::read(&src).unwrap());
        }
    }
    std::fs::write(dir.join("mode"), mode).unwrap();
    key.finalize().to_hex()[..16].to_string()
}

/// Boot once per payload (across the test processes of one run) and return the file
/// `name` the guest wrote to `/payload/out`, with the console output.
pub fn guest_output(mode: &str, name: &str) -> (Value, String) {
    let guest = guest();
    let cache = root().join("target/guest");
    std::fs::create_dir_all(&cache).unwrap();
    let work = tempfile::tempdir_in(&cache).unwrap();
    let payload_dir = work.path().join("payload");
    std::fs::create_dir_all(&payload_dir).unwrap();
    let key = payload(&payload_dir, mode);
    let lock = std::fs::File::create(cache.join("boot.lock")).unwrap();
    lock.lock().unwrap();
    let result = cache.join(format!("{mode}-{key}.json"));
    let console_file = cache.join(format!("{mode}-{key}.console"));
    if let (Ok(r), Ok(c)) = (
        std::fs::read_to_string(&result),
        std::fs::read_to_string(&console_file),
    ) {
        return (serde_json::from_str(&r).unwrap(), c);
    }
    let t0 = Instant::now();
    let status = Command::new("bash")
        .arg(root().join(".ci/engines/guest.sh"))
        .arg("boot")
        .arg(&payload_dir)
        .arg(work.path())
        .env("STEPRUNNER_ENGINES_DIR", guest.parent().unwrap())
        .env("GUEST_TIMEOUT", BOOT_TIMEOUT.as_secs().to_string())
        .status()
        .expect("guest.sh runs");
    let console = std::fs::read_to_string(work.path().join("console.log")).unwrap_or_default();
    assert!(
        status.success(),
        "booting the guest failed ({status}) after {:?}; console:\n{}",
        t0.elapsed(),
        tail(&console)
    );
    let Ok(text) = std::fs::read_to_string(work.path().join("out").join(name)) else {
        panic!("the guest wrote no `{name}`; console:\n{}", tail(&console));
    };
    let value: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("`{name}` is not JSON ({e}): {text}"));
    std::fs::write(&console_file, &console).unwrap();
    std::fs::write(&result, &text).unwrap();
    (value, console)
}

fn results() -> &'static (Value, String) {
    static R: OnceLock<(Value, String)> = OnceLock::new();
    R.get_or_init(|| guest_output("suite", "results.json"))
}

/// Assert that `case` passed for each of `users` (`root`, `user`), printing its details.
#[track_caller]
fn passed(case: &str, users: &[&str]) {
    let (r, console) = results();
    for user in users {
        let found = r
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["case"] == case && c["user"] == *user);
        let Some(c) = found else {
            panic!(
                "case `{case}` did not run as {user}; console:\n{}",
                tail(console)
            );
        };
        println!("{user} {case}: {} ({}s)", c["detail"], c["secs"]);
        assert_eq!(
            c["passed"],
            true,
            "{user} {case}: {}\nconsole:\n{}",
            c["detail"],
            tail(console)
        );
    }
}

const BOTH: &[&str] = &["root", "user"];

#[test]
#[cfg_attr(
    skip_engine_guest,
    ignore = "needs the cgroup v2 guest: eval \"$(bash .ci/engines/guest.sh start)\""
)]
fn guest_every_limit_of_the_local_and_venv_flavors_is_enforced_by_cgroup_v2() {
    passed("every_limit_is_enforced_by_cgroup_v2", BOTH);
}

#[test]
#[cfg_attr(
    skip_engine_guest,
    ignore = "needs the cgroup v2 guest: eval \"$(bash .ci/engines/guest.sh start)\""
)]
fn guest_memory_limit_oom_kills_and_counts_from_memory_events() {
    passed("memory_limit_oom_kills_from_memory_events", BOTH);
}

#[test]
#[cfg_attr(
    skip_engine_guest,
    ignore = "needs the cgroup v2 guest: eval \"$(bash .ci/engines/guest.sh start)\""
)]
fn guest_half_a_cpu_gets_half_the_cpu_time() {
    passed("half_a_cpu_gets_half_the_cpu_time", BOTH);
}

#[test]
#[cfg_attr(
    skip_engine_guest,
    ignore = "needs the cgroup v2 guest: eval \"$(bash .ci/engines/guest.sh start)\""
)]
fn guest_fork_bomb_is_contained() {
    passed("a_fork_bomb_is_contained_by_pids", BOTH);
}

#[test]
#[cfg_attr(
    skip_engine_guest,
    ignore = "needs the cgroup v2 guest: eval \"$(bash .ci/engines/guest.sh start)\""
)]
fn guest_timeout_kills_a_setsid_escapee_ignoring_term() {
    passed(
        "a_setsid_escapee_ignoring_term_is_killed_at_the_timeout",
        BOTH,
    );
}

#[test]
#[cfg_attr(
    skip_engine_guest,
    ignore = "needs the cgroup v2 guest: eval \"$(bash .ci/engines/guest.sh start)\""
)]
fn guest_a_step_cannot_raise_its_limits_or_leave_its_cgroup() {
    passed("a_step_cannot_raise_its_limits_or_leave_its_cgroup", BOTH);
    passed("a_step_that_hides_is_still_killed_at_the_timeout", BOTH);
}

#[test]
#[cfg_attr(
    skip_engine_guest,
    ignore = "needs the cgroup v2 guest: eval \"$(bash .ci/engines/guest.sh start)\""
)]
fn guest_a_killed_runner_is_cleaned_up_by_the_next_one() {
    passed(
        "a_killed_runner_is_cleaned_up_by_the_next_one_from_another_cgroup",
        BOTH,
    );
    passed(
        "a_live_run_is_never_touched_from_another_pid_namespace",
        &["root"],
    );
}

#[test]
#[cfg_attr(
    skip_engine_guest,
    ignore = "needs the cgroup v2 guest: eval \"$(bash .ci/engines/guest.sh start)\""
)]
fn guest_parallel_launches_leave_nothing() {
    passed("concurrent_launches_all_succeed_and_leave_nothing", BOTH);
}

#[test]
#[cfg_attr(
    skip_engine_guest,
    ignore = "needs the cgroup v2 guest: eval \"$(bash .ci/engines/guest.sh start)\""
)]
fn guest_a_container_with_its_own_cgroup_namespace_works_the_same() {
    passed(
        "in_a_container_like_namespace_the_runner_uses_its_own_cgroup",
        &["root"],
    );
}

/// A `Delegate=yes` service whose process sits in a leaf: the run goes beside it, no
/// manager is asked, and limits hold (doctor names the placement).
#[test]
#[cfg_attr(
    skip_engine_guest,
    ignore = "needs the cgroup v2 guest: eval \"$(bash .ci/engines/guest.sh start)\""
)]
fn guest_in_a_leaf_of_a_delegated_service_the_run_goes_beside_it() {
    passed(
        "beside_its_leaf_in_a_delegated_service_no_manager_is_asked",
        BOTH,
    );
}

#[test]
#[cfg_attr(
    skip_engine_guest,
    ignore = "needs the cgroup v2 guest: eval \"$(bash .ci/engines/guest.sh start)\""
)]
fn guest_doctor_reports_what_this_host_can_enforce() {
    passed("doctor_says_what_can_be_enforced", BOTH);
}

/// Every case the suite has ran, and ran for everyone it is for: a case added to the
/// suite and not checked here (or not run) fails this test.
#[test]
#[cfg_attr(
    skip_engine_guest,
    ignore = "needs the cgroup v2 guest: eval \"$(bash .ci/engines/guest.sh start)\""
)]
fn guest_suite_ran_every_case() {
    let (r, console) = results();
    let suite = std::fs::read_to_string(root().join("tests/guest/suite.py")).unwrap();
    let here = std::fs::read_to_string(root().join("tests/it/guest.rs")).unwrap();
    let mut declared = Vec::new();
    let mut lines = suite.lines().peekable();
    while let Some(l) = lines.next() {
        if l.starts_with("@case")
            && let Some(def) = lines.peek()
            && let Some(name) = def.strip_prefix("def ").and_then(|d| d.split('(').next())
        {
            declared.push((name.to_string(), l.contains("root_only")));
        }
    }
    assert!(declared.len() >= 10, "{declared:?}");
    for (name, root_only) in &declared {
        assert!(
            here.contains(&format!("\"{name}\"")),
            "suite case `{name}` is not checked by tests/it/guest.rs"
        );
        let users: &[&str] = if *root_only { &["root"] } else { BOTH };
        for u in users {
            assert!(
                r.as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["case"] == name.as_str() && c["user"] == *u),
                "`{name}` did not run as {u}; console:\n{}",
                tail(console)
            );
        }
    }
}
