//! `runner launch` end to end: real steps under real limits. These tests create
//! cgroups, so they need root; with `CI=true` they fail instead of skipping.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Output, Runner, limit, root, runner};
pub(crate) use crate::common::{needs_root, processes_with, spawn_runner, wait_for};

/// `runner launch --json -q ARGS…`: the output and the parsed result.
pub(crate) fn launch(args: &[&str]) -> (Output, Value) {
    launch_with(Runner::new(), args)
}

pub(crate) fn launch_with(r: Runner, args: &[&str]) -> (Output, Value) {
    let out = r.arg("launch").arg("--json").arg("-q").args(args).run();
    let result = out.json();
    (out, result)
}

/// Cgroup folders of a run, in every hierarchy.
pub(crate) fn cgroups_of(run_id: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, run_id: &str, out: &mut Vec<PathBuf>) {
        if depth == 0 {
            return;
        }
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            // A run's root: `steprunner-RUN`, or a systemd scope `steprunner-RUN.scope`.
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.as_deref() == Some(&format!("steprunner-{run_id}"))
                || name.as_deref() == Some(&format!("steprunner-{run_id}.scope"))
            {
                out.push(p.clone());
            }
            walk(&p, depth - 1, run_id, out);
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), 6, run_id, &mut out);
    out
}

pub(crate) fn run_id(result: &Value) -> &str {
    result["run_id"].as_str().expect("run_id")
}

#[track_caller]
pub(crate) fn assert_nothing_left(result: &Value, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let procs = processes_with(marker);
        if procs.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes of the step are still alive: {procs:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = cgroups_of(run_id(result));
    assert!(left.is_empty(), "cgroups of the run are left: {left:?}");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn exit_codes_pass_through() {
    if !needs_root() {
        return;
    }
    let (out, r) = launch(&[
        "manifests/local.yaml",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    out.expect_code(3);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["exit_code"], 3);
    let run = PathBuf::from(r["logs"]["stdout"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    assert_eq!(std::fs::read(run.join("stdout.log")).unwrap(), b"out\n");
    assert_eq!(std::fs::read(run.join("stderr.log")).unwrap(), b"err\n");
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(run.join("result.json")).unwrap()).unwrap();
    assert_eq!(on_disk, r, "result.json and --json agree");
    assert!(out.stderr.contains("runner: failed in "), "{}", out.stderr);

    let (out, r) = launch(&["manifests/local.yaml", "--", "true"]);
    out.expect_code(0);
    assert_eq!(r["status"], "succeeded");
}

/// The runner blocks every signal while it starts a step, and catches INT, TERM and
/// HUP: the step must begin with nothing blocked, and with none of those (nor the
/// SIGPIPE the runner ignores) ignored.
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn a_step_starts_with_no_signal_blocked_and_the_runners_own_not_ignored() {
    if !needs_root() {
        return;
    }
    let (out, r) = launch(&[
        "manifests/local.yaml",
        "--",
        "grep",
        "-E",
        "^Sig(Blk|Ign):",
        "/proc/self/status",
    ]);
    out.expect_code(0);
    let log = std::fs::read_to_string(r["logs"]["stdout"].as_str().unwrap()).unwrap();
    let mask = |name: &str| {
        let line = log
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {log:?}"));
        u64::from_str_radix(line.trim(), 16).unwrap()
    };
    assert_eq!(mask("SigBlk:"), 0, "{log}");
    let ignored = mask("SigIgn:");
    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGPIPE, libc::SIGTERM] {
        assert_eq!(ignored & (1 << (sig - 1)), 0, "signal {sig} ignored: {log}");
    }
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn not_found_is_127_and_not_executable_126() {
    if !needs_root() {
        return;
    }
    let (out, r) = launch(&["manifests/local.yaml", "--", "/nonexistent/train"]);
    out.expect_code(127);
    assert_eq!(r["status"], "launch_error");
    assert!(r["message"].as_str().unwrap().contains("not found"), "{r}");

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("train.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let (out, r) = launch(&["manifests/local.yaml", "--", script.to_str().unwrap()]);
    out.expect_code(126);
    assert_eq!(r["status"], "launch_error");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn oom_killed_at_the_memory_limit() {
    if !needs_root() {
        return;
    }
    let alloc = "b = bytearray(256 << 20); print(len(b))";
    let (out, r) = launch(&[
        "manifests/local.yaml",
        "--memory",
        "64MiB",
        "--",
        "python3",
        "-c",
        alloc,
    ]);
    out.expect_code(137);
    assert_eq!(r["status"], "oom_killed");
    assert_eq!(r["message"], "OOM-killed at the memory limit of 64.0 MiB");
    assert!(r["oom_kills"].as_u64().unwrap() >= 1, "{r}");
    let peak = r["peak_memory_bytes"].as_u64().unwrap();
    assert!(
        peak > 48 << 20 && peak <= 65 << 20,
        "peak {peak} should be about the 64 MiB limit"
    );
    assert_eq!(limit(&r, "memory")["enforced_by"], "cgroup-v1");
    assert_nothing_left(&r, "bytearray(256 << 20)");

    let (out, r) = launch(&[
        "manifests/local.yaml",
        "--memory",
        "512MiB",
        "--",
        "python3",
        "-c",
        alloc,
    ]);
    out.expect_code(0);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["oom_kills"], 0);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn fork_bomb_is_contained_by_pids() {
    if !needs_root() {
        return;
    }
    let bomb = r#"
import os, sys, time
children = 0
try:
    for _ in range(10000):
        if os.fork() == 0:
            time.sleep(600)  # forkbomb-marker-7731
            os._exit(0)
        children += 1
except OSError as e:
    print("fork failed after", children, "children:", e)
    sys.exit(1)
"#;
    let (out, r) = launch(&[
        "manifests/local.yaml",
        "--set",
        "pids=32",
        "--",
        "python3",
        "-c",
        bomb,
    ]);
    out.expect_code(1);
    assert_eq!(r["status"], "failed");
    assert_eq!(limit(&r, "pids")["value"], 32);
    let log = std::fs::read_to_string(r["logs"]["stdout"].as_str().unwrap()).unwrap();
    let children: u32 = log
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or(9999);
    assert!(children < 32, "the pids limit stops forking: {log}");
    assert!(
        r["leftover_processes_killed"].as_u64().unwrap() >= u64::from(children.min(1)),
        "{r}"
    );
    assert_nothing_left(&r, "forkbomb-marker-7731");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn cpu_quota_halves_cpu_time() {
    if !needs_root() {
        return;
    }
    let busy = "import time\nt = time.time()\nwhile time.time() - t < 2: pass";
    let (out, r) = launch(&[
        "manifests/local.yaml",
        "--cpus",
        "0.5",
        "--",
        "python3",
        "-c",
        busy,
    ]);
    out.expect_code(0);
    let cpu = r["cpu_user_secs"].as_f64().unwrap() + r["cpu_system_secs"].as_f64().unwrap();
    let wall = r["stages"]["launch"]["duration_secs"].as_f64().unwrap();
    let ratio = cpu / wall;
    // A quota is a ceiling: a loaded machine lowers the ratio, only a missing
    // quota raises it (to about 1.0 on an idle core).
    assert!(
        ratio <= 0.65,
        "cpu {cpu}s over wall {wall}s = {ratio}: more than the 0.5 quota"
    );
    assert!(
        ratio >= 0.05,
        "cpu {cpu}s over wall {wall}s: cpu time not reported"
    );
    assert_eq!(limit(&r, "cpus")["value"], 0.5);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn open_files_limit_applies_inside_the_step() {
    if !needs_root() {
        return;
    }
    let probe = r#"
import os
fds = []
try:
    while True:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    print(max(fds) + 1, e.errno)
"#;
    let (out, r) = launch(&[
        "manifests/local.yaml",
        "--set",
        "open_files=16",
        "--",
        "python3",
        "-c",
        probe,
    ]);
    out.expect_code(0);
    let log = std::fs::read_to_string(r["logs"]["stdout"].as_str().unwrap()).unwrap();
    assert_eq!(
        log.trim(),
        format!("16 {}", libc::EMFILE),
        "the 17th descriptor fails with EMFILE"
    );
    assert_eq!(limit(&r, "open_files")["enforced_by"], "rlimit");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn timeout_kills_the_whole_tree_including_setsid_escapees() {
    if !needs_root() {
        return;
    }
    let step = "setsid sleep 1000.4242 & trap '' TERM; echo started; while :; do sleep 0.1; done";
    let (out, r) = launch(&[
        "manifests/local.yaml",
        "--set",
        "timeout=1s",
        "--set",
        "kill_grace=1s",
        "--",
        "sh",
        "-c",
        step,
    ]);
    out.expect_code(124);
    assert_eq!(r["status"], "timed_out");
    assert_eq!(limit(&r, "timeout")["enforced_by"], "supervisor");
    assert_nothing_left(&r, "sleep 1000.4242");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn sigint_cancels_runs_cleanup_and_leaves_nothing() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let ready = out.path().join("ready");
    let step = format!("touch {}; exec sleep 1000.5151", ready.display());
    let set = format!("out={}", out.path().display());
    let child = spawn_runner(
        home.path(),
        &[
            "tests/fixtures/launch/staged.yaml",
            "--set",
            &set,
            "--",
            "sh",
            "-c",
            &step,
        ],
    );
    wait_for(&ready, Duration::from_secs(30));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(r["status"], "cancelled");
    assert_eq!(
        std::fs::read_to_string(out.path().join("cleanup")).unwrap(),
        "cancelled 130\n"
    );
    assert_eq!(r["stages"]["cleanup"]["status"], "ok");
    assert_nothing_left(&r, "sleep 1000.5151");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn a_sigkilled_runner_takes_its_step_along_and_the_next_run_removes_its_cgroup() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let ready = out.path().join("ready");
    let step = format!("touch {}; exec sleep 1000.6161", ready.display());
    let mut child = spawn_runner(
        home.path(),
        &["manifests/local.yaml", "--", "sh", "-c", &step],
    );
    wait_for(&ready, Duration::from_secs(30));
    let runs: Vec<_> = std::fs::read_dir(home.path().join("runs"))
        .unwrap()
        .flatten()
        .collect();
    let first_run = runs[0].file_name().to_string_lossy().into_owned();
    assert!(
        !cgroups_of(&first_run).is_empty(),
        "the step runs in its cgroup"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with("sleep 1000.6161").is_empty() {
        assert!(Instant::now() < deadline, "the step outlived its runner");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The dead runner could not remove its cgroup; the next run does.
    let (out, _) = launch_with(
        Runner::new().env("RUNNER_HOME", home.path()),
        &["manifests/local.yaml", "--", "true"],
    );
    out.expect_code(0);
    assert_eq!(
        cgroups_of(&first_run),
        Vec::<PathBuf>::new(),
        "the stale cgroup is removed"
    );
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn logs_1gib_each_on_stdout_and_stderr_are_exact() {
    if !needs_root() {
        return;
    }
    let step = "head -c 1073741824 /dev/zero & head -c 1073741824 /dev/zero >&2; wait";
    let (out, r) = launch(&["manifests/local.yaml", "--", "sh", "-c", step]);
    out.expect_code(0);
    assert_eq!(r["logs"]["stdout_bytes"], 1u64 << 30);
    assert_eq!(r["logs"]["stderr_bytes"], 1u64 << 30);
    for key in ["stdout", "stderr"] {
        let path = r["logs"][key].as_str().unwrap();
        assert_eq!(
            std::fs::metadata(path).unwrap().len(),
            1 << 30,
            "{key}.log is complete"
        );
    }
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn log_limit_keeps_head_and_tail() {
    if !needs_root() {
        return;
    }
    let step = "seq 1 100000";
    let (out, r) = launch(&[
        "manifests/local.yaml",
        "--log-limit",
        "1000",
        "--",
        "sh",
        "-c",
        step,
    ]);
    out.expect_code(0);
    let log = std::fs::read_to_string(r["logs"]["stdout"].as_str().unwrap()).unwrap();
    assert!(log.starts_with("1\n2\n3\n"), "{log}");
    assert!(log.ends_with("99999\n100000\n"), "{log}");
    assert!(log.contains("bytes omitted]"), "{log}");
    assert_eq!(r["logs"]["truncated"], true);
    assert_eq!(
        r["logs"]["stdout_bytes"], 588895,
        "the total counts every byte the step wrote"
    );
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn unenforceable_limits_refuse_unless_best_effort() {
    if !needs_root() {
        return;
    }
    // A cgroup root that exists but cannot be written: cgroups unavailable.
    let fake = tempfile::tempdir().unwrap();
    let ro = fake.path().join("cgroup");
    std::fs::create_dir(&ro).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "none"])
        .arg(&ro)
        .status()
        .unwrap();
    assert!(status.success(), "mount a read-only tmpfs");
    let r1 = launch_with(
        Runner::new().env("RUNNER_CGROUP_ROOT", &ro),
        &["manifests/local.yaml", "--memory", "64MiB", "--", "true"],
    );
    let r2 = launch_with(
        Runner::new().env("RUNNER_CGROUP_ROOT", &ro),
        &[
            "manifests/local.yaml",
            "--best-effort-limits",
            "--memory",
            "64MiB",
            "--",
            "true",
        ],
    );
    let _ = Command::new("umount").arg(&ro).status();
    let (out, r) = r1;
    out.expect_code(125);
    assert_eq!(r["status"], "launch_error");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("--best-effort-limits"),
        "{r}"
    );
    assert!(r["stages"]["launch"].is_null(), "the step did not start");
    let (out, r) = r2;
    out.expect_code(0);
    assert_eq!(limit(&r, "memory")["enforced_by"], "none");
    assert_eq!(limit(&r, "memory")["contained"], false);
    assert!(!r["warnings"].as_array().unwrap().is_empty(), "{r}");
    // The summary line itself says what was not enforced.
    assert!(
        out.stderr.contains("NOT enforced: memory"),
        "{}",
        out.stderr
    );
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn results_match_the_result_schema() {
    if !needs_root() {
        return;
    }
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schemas/result.schema.json")).unwrap(),
    )
    .unwrap();
    let v = jsonschema::draft202012::new(&schema).unwrap();
    for args in [
        &["manifests/local.yaml", "--", "true"][..],
        &["manifests/local.yaml", "--", "sh", "-c", "exit 4"][..],
        &["manifests/local.yaml", "--", "/nonexistent"][..],
    ] {
        let (_, r) = launch(args);
        let errors: Vec<String> = v.iter_errors(&r).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{r}");
    }
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn failed_prepare_is_not_cached_and_cleanup_still_runs() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let set = format!("out={}", out.path().display());
    let args = [
        "tests/fixtures/launch/staged.yaml",
        "--set",
        &set,
        "--set",
        "fail_prepare=true",
        "--",
        "true",
    ];
    let (o, r) = launch_with(Runner::new().env("RUNNER_HOME", home.path()), &args);
    o.expect_code(125);
    assert_eq!(r["status"], "prepare_failed");
    assert_eq!(r["stages"]["prepare"]["exit_code"], 7);
    // The failed command is the manifest's second: numbered 2 in the message and its log.
    let log = PathBuf::from(r["run_dir"].as_str().unwrap()).join("prepare.2.log");
    let message = r["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "prepare command 2 `sh` exited 7; see `{}`",
            log.display()
        )),
        "{message}"
    );
    assert!(log.exists(), "{message}");
    assert_eq!(
        std::fs::read_to_string(out.path().join("cleanup")).unwrap(),
        "prepare_failed 125\n"
    );
    let (o, r) = launch_with(Runner::new().env("RUNNER_HOME", home.path()), &args);
    o.expect_code(125);
    assert_eq!(r["cache"]["hit"], false, "a failed prepare is never reused");
    assert_eq!(
        std::fs::read_to_string(out.path().join("prepare-count")).unwrap(),
        "prepared\nprepared\n"
    );
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn concurrent_launches_with_one_key_prepare_once() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let set = format!("out={}", out.path().display());
    let children: Vec<_> = (0..8)
        .map(|_| {
            spawn_runner(
                home.path(),
                &[
                    "tests/fixtures/launch/staged.yaml",
                    "--set",
                    &set,
                    "--set",
                    "prepare_sleep=1",
                    "--",
                    "sh",
                    "-c",
                    "cat \"$READY\"",
                ],
            )
        })
        .collect();
    let mut hits = 0;
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        hits += usize::from(r["cache"]["hit"] == true);
        let log = std::fs::read_to_string(r["logs"]["stdout"].as_str().unwrap()).unwrap();
        assert_eq!(log, "ready\n");
    }
    assert_eq!(
        std::fs::read_to_string(out.path().join("prepare-count")).unwrap(),
        "prepared\n",
        "prepare ran once"
    );
    assert_eq!(hits, 7);
}

/// Steps that use a warm cache entry run together: each waits until all three have
/// started, which only happens if none waits for another's step to end (they were
/// serialized behind an exclusive lock, printing "waiting for another runner").
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn steps_sharing_a_warm_entry_run_together() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let set = format!("out={}", out.path().display());
    let base = ["tests/fixtures/launch/staged.yaml", "--set", &set, "--"];
    let warm = spawn_runner(home.path(), &[&base[..], &["true"]].concat());
    assert!(warm.wait_with_output().unwrap().status.success());
    let meet = format!(
        "touch {dir}/started-$RUNNER_RUN_ID; i=0; \
         while [ \"$(ls {dir} | grep -c '^started-')\" -lt 3 ]; do \
           i=$((i + 1)); [ $i -gt 300 ] && exit 9; sleep 0.1; done",
        dir = out.path().display()
    );
    let children: Vec<_> = (0..3)
        .map(|_| spawn_runner(home.path(), &[&base[..], &["sh", "-c", &meet]].concat()))
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{stderr}");
        assert!(!stderr.contains("waiting for another runner"), "{stderr}");
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["cache"]["hit"], true);
    }
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn an_engine_outcome_file_reports_what_only_the_engine_knows() {
    if !needs_root() {
        return;
    }
    // A container client exits 137 without the runner's cgroup seeing an OOM kill:
    // the flavor's launch command says what happened.
    let step = r#"echo '{"status": "oom_killed", "message": "container OOM-killed"}' > "$RUNNER_ENGINE_OUTCOME"; exit 137"#;
    let (out, r) = launch(&["manifests/local.yaml", "--", "sh", "-c", step]);
    out.expect_code(137);
    assert_eq!(r["status"], "oom_killed");
    assert_eq!(r["message"], "container OOM-killed");

    let step = r#"echo '{"status": "bogus"}' > "$RUNNER_ENGINE_OUTCOME"; exit 3"#;
    let (out, r) = launch(&["manifests/local.yaml", "--", "sh", "-c", step]);
    out.expect_code(3);
    assert!(
        r["warnings"].to_string().contains("unknown status `bogus`"),
        "{r}"
    );

    // What a hostile step can leave there instead: a FIFO (a read would wait for a
    // writer forever), an endless device, a file far larger than any report. The run
    // ends as the step did, the report ignored with a warning.
    for (leave, why) in [
        (r#"mkfifo "$RUNNER_ENGINE_OUTCOME""#, "not a regular file"),
        (
            r#"ln -s /dev/zero "$RUNNER_ENGINE_OUTCOME""#,
            "ignored the engine's report",
        ),
        (
            r#"head -c 3000000 /dev/zero | tr '\0' ' ' > "$RUNNER_ENGINE_OUTCOME""#,
            "larger than 1048576 bytes",
        ),
    ] {
        let step = format!("{leave}; exit 4");
        let (out, r) = launch(&["manifests/local.yaml", "--", "sh", "-c", &step]);
        out.expect_code(4);
        assert_eq!(r["status"], "failed", "{leave}: {r}");
        let warnings = r["warnings"].to_string();
        assert!(
            warnings.contains("ignored the engine's report") && warnings.contains(why),
            "{leave}: {warnings}"
        );
    }
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn prepare_progress_is_a_spinner_on_a_terminal_and_plain_lines_elsewhere() {
    if !needs_root() {
        return;
    }
    use steprunner::template::shell_quote as q;
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("runner");
    let set = format!("out={}", out.path().display());
    // Two step names, two cache keys: both runs prepare.
    let args = |step: &str| {
        let mut a: Vec<String> = ["launch", "tests/fixtures/launch/staged.yaml", "--set", &set]
            .map(String::from)
            .to_vec();
        a.extend(["--set", "prepare_sleep=0.3", "--step", step, "--", "true"].map(String::from));
        a
    };
    // `script` gives the runner a pseudo-terminal as its stderr.
    let line = std::iter::once(q(bin.to_str().unwrap()))
        .chain(args("tty").iter().map(|a| q(a)))
        .collect::<Vec<_>>()
        .join(" ");
    let tty = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir(root())
        .env("RUNNER_HOME", home.path())
        .stdin(Stdio::null())
        .output()
        .expect("script(1) from util-linux");
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{shown}");
    assert!(shown.contains("\r\x1b[2K"), "redrawn in place: {shown:?}");
    assert!(
        shown.contains("✓ prepare 1/2 `sh: sleep 0.3 …`"),
        "{shown:?}"
    );

    let plain = Runner::new()
        .env("RUNNER_HOME", home.path())
        .args(args("plain"))
        .run();
    plain.expect_code(0);
    assert!(
        plain
            .stderr
            .contains("runner: prepare 1/2 `sh: sleep 0.3 …`\n"),
        "{}",
        plain.stderr
    );
    assert!(
        !plain.stderr.contains('\r'),
        "no terminal codes when not a terminal"
    );
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn gpus_are_selected_from_detected_devices_and_overasking_is_refused() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("gpus.txt");
    std::fs::write(
        &info,
        "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaaaaaa-0000-0000-0000-000000000000)\n\
         GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-bbbbbbbb-0000-0000-0000-000000000000)\n",
    )
    .unwrap();
    let step = [
        "--",
        "sh",
        "-c",
        "echo \"$CUDA_VISIBLE_DEVICES|$NVIDIA_VISIBLE_DEVICES\"",
    ];
    let args: Vec<&str> = ["manifests/local.yaml", "--gpus", "2"]
        .into_iter()
        .chain(step)
        .collect();
    let (out, r) = launch_with(Runner::new().env("RUNNER_GPU_INFO", &info), &args);
    out.expect_code(0);
    let log = std::fs::read_to_string(r["logs"]["stdout"].as_str().unwrap()).unwrap();
    assert_eq!(log, "0,1|0,1\n");
    assert_eq!(limit(&r, "gpus")["enforced_by"], "env");

    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let (out, r) = launch_with(
        Runner::new().env("RUNNER_GPU_INFO", &info),
        &[
            "manifests/local.yaml",
            "--gpus",
            "3",
            "--",
            "sh",
            "-c",
            &touch,
        ],
    );
    out.expect_code(125);
    assert_eq!(r["status"], "launch_error");
    assert!(r["message"].as_str().unwrap().contains('3'), "{r}");
    assert!(!marker.exists(), "nothing ran");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn resources_above_the_machine_are_refused_before_anything_runs() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    // The most a cgroup takes is enforced.
    let (out, r) = launch(&[
        "manifests/local.yaml",
        "--set",
        "pids=4194304",
        "--",
        "true",
    ]);
    out.expect_code(0);
    assert_eq!(limit(&r, "pids")["value"], 4194304);
    // Above the machine or a kernel, or below the least a cgroup enforces.
    for flag in [
        ["--memory", "64TiB"],
        ["--cpus", "4096"],
        ["--cpus", "0.0005"],
        ["--memory", "1000"],
        ["--set", "pids=4194305"],
    ] {
        let (out, r) = launch(&[
            "manifests/local.yaml",
            flag[0],
            flag[1],
            "--",
            "sh",
            "-c",
            &touch,
        ]);
        out.expect_code(125);
        assert_eq!(r["status"], "launch_error", "{r}");
        assert!(!marker.exists(), "nothing ran for {flag:?}");
        if flag[1] == "0.0005" {
            assert_eq!(
                r["message"],
                "cpus limit of 0.0005 is below the 0.001 of a core a cgroup can enforce"
            );
        }
        if flag[1] == "pids=4194305" {
            assert_eq!(
                r["message"],
                "pids limit of 4194305 exceeds the 4194304 processes a kernel can have at once (a cgroup refuses more)"
            );
        }
        if flag[1] == "1000" {
            let message = r["message"].as_str().unwrap();
            assert!(
                message.starts_with("memory limit of 1000 B is below one page ("),
                "{message}"
            );
        }
    }
}

/// A launch makes its cgroups (and their record) while its plan renders; a plan that
/// then does not render, or is refused by a policy, leaves neither behind: no
/// directory in any cgroup hierarchy, no record, whatever the reason.
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn a_plan_that_is_not_run_leaves_no_cgroup_and_no_record() {
    if !needs_root() {
        return;
    }
    let named = |path: &std::path::Path, name: &str| {
        path.file_name()
            .is_some_and(|f| f.to_string_lossy().contains(name))
    };
    let cases: [(&str, &[&str]); 3] = [
        ("zzbomb", &["tests/fixtures/bombs/chained-sets.yaml"]),
        (
            "zzparsecs",
            &["tests/fixtures/render-invalid/memory-parsecs.yaml"],
        ),
        (
            "zzpolicy",
            &[
                "manifests/local.yaml",
                "--policy",
                "examples/policy/policy.yaml",
                "--cpus",
                "32",
            ],
        ),
    ];
    for (step, args) in cases {
        let step = format!("{step}{}", std::process::id());
        let out = runner(
            ["launch", "--step", step.as_str()]
                .into_iter()
                .chain(args.iter().copied())
                .chain(["--", "true"]),
        );
        out.expect_code(2);
        let mut left = Vec::new();
        let mut todo = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
        while let Some(dir) = todo.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    if named(&path, &step) {
                        left.push(path.clone());
                    }
                    todo.push(path);
                }
            }
        }
        for entry in std::fs::read_dir("/run/steprunner/cgroups")
            .into_iter()
            .flatten()
            .flatten()
        {
            if named(&entry.path(), &step) {
                left.push(entry.path());
            }
        }
        assert!(left.is_empty(), "{step}: {left:?}\n{}", out.stderr);
    }
}

/// A memory limit that is not a whole number of pages is held by the kernel rounded
/// down to whole pages; the result lists what the step's cgroup holds (it listed the
/// bytes asked for, which the step never had).
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn a_memory_limit_is_listed_as_the_cgroup_holds_it() {
    if !needs_root() {
        return;
    }
    let show = "d=$(find /sys/fs/cgroup/memory/ -type d -path \"*/steprunner-$RUNNER_RUN_ID/launch\"); \
                cat \"$d/memory.limit_in_bytes\"";
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .unwrap()
        .unwrap() as u64;
    let (out, r) = launch(&[
        "manifests/local.yaml",
        "--memory",
        "100MB",
        "--",
        "sh",
        "-c",
        show,
    ]);
    out.expect_code(0);
    let held: u64 = std::fs::read_to_string(r["logs"]["stdout"].as_str().unwrap())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(held, 100_000_000 - 100_000_000 % page, "{r}");
    assert_eq!(limit(&r, "memory")["value"], held, "{r}");
    assert_eq!(limit(&r, "memory")["enforced_by"], "cgroup-v1");
}

/// A share of a core too small for the usual 100 ms period (under 0.01: its quota
/// would be under the kernel's least, 1 ms) is enforced as asked, in a period of 1 s:
/// the step's cgroup holds `--cpus 0.005` as 5 ms in 1 s (it held 1 ms in 100 ms,
/// twice the share asked for, while the result listed 0.005).
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn a_small_share_of_a_core_is_enforced_as_asked() {
    if !needs_root() {
        return;
    }
    // The step finds its own cgroup in the (read-only) cpu hierarchy and prints it.
    let show = "d=$(find /sys/fs/cgroup/cpu/ -type d -path \"*/steprunner-$RUNNER_RUN_ID/launch\"); \
                cat \"$d/cpu.cfs_quota_us\" \"$d/cpu.cfs_period_us\"";
    let (out, r) = launch(&[
        "manifests/local.yaml",
        "--cpus",
        "0.005",
        "--",
        "sh",
        "-c",
        show,
    ]);
    out.expect_code(0);
    let logged = std::fs::read_to_string(r["logs"]["stdout"].as_str().unwrap()).unwrap();
    assert_eq!(logged, "5000\n1000000\n", "{r}");
    assert_eq!(limit(&r, "cpus")["value"], 0.005);
    assert_eq!(limit(&r, "cpus")["enforced_by"], "cgroup-v1");
}

/// `-- python train.py` works with `--source DIR`: the step runs in its source folder.
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn the_step_runs_in_its_source_folder() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.sh"), "pwd\n").unwrap();
    let (out, r) = launch(&[
        "manifests/local.yaml",
        "--source",
        dir.path().to_str().unwrap(),
        "--",
        "sh",
        "train.sh",
    ]);
    out.expect_code(0);
    let stdout = std::fs::read_to_string(r["logs"]["stdout"].as_str().unwrap()).unwrap();
    let real = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(stdout.trim_end(), real.to_str().unwrap());
}

/// `runner launch ARGS…` with stderr on a terminal `cols` wide: what it drew there.
fn on_a_terminal(cols: u16, env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    use std::io::Read;
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("a pseudo-terminal");
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("runner"));
    cmd.current_dir(root())
        .env("RUNNER_HOME", home.path())
        .env("TERM", "xterm")
        .env_remove("RUNNER_PROGRESS")
        .envs(env.iter().copied())
        .arg("launch")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::from(pty.slave));
    let mut child = cmd.spawn().expect("runner starts");
    // Only the child holds the terminal now: reading ends (EIO) when it exits.
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let mut drawn = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        drawn.extend_from_slice(&buf[..n]);
    }
    let code = child.wait().unwrap().code().unwrap_or(-1);
    (code, String::from_utf8_lossy(&drawn).into_owned())
}

/// On a narrow terminal every spinner frame fits in one line (a wrapped frame leaves a
/// stale line each redraw); `TERM=dumb` and `RUNNER_PROGRESS=plain` get plain lines.
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn progress_fits_the_terminal_and_can_be_plain() {
    if !needs_root() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let set_out = format!("out={}", out.path().display());
    let args = [
        "tests/fixtures/launch/staged.yaml",
        "--set",
        &set_out,
        "--set",
        "prepare_sleep=0.5",
        "--",
        "true",
    ];
    let (code, drawn) = on_a_terminal(40, &[], &args);
    assert_eq!(code, 0, "{drawn}");
    assert!(
        drawn.contains('⠋') && drawn.contains("✓ prepare 1/2"),
        "{drawn:?}"
    );
    assert!(drawn.contains("prepare 2/2 skipped"), "{drawn:?}");
    // A frame is what follows a `\r`, up to the next `\r` or line break.
    let frames: Vec<&str> = drawn
        .split(['\r', '\n'])
        .map(|f| f.trim_start_matches("\x1b[2K"))
        .filter(|f| f.starts_with(['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏', '✓']))
        .collect();
    assert!(frames.len() >= 3, "{drawn:?}");
    for f in &frames {
        assert!(
            f.chars().count() < 40,
            "a frame wider than the terminal: {f:?}"
        );
    }
    for env in [("TERM", "dumb"), ("RUNNER_PROGRESS", "plain")] {
        let (code, drawn) = on_a_terminal(40, &[env], &args);
        assert_eq!(code, 0, "{drawn}");
        assert!(!drawn.contains("\x1b[2K"), "{env:?}: {drawn:?}");
        assert!(
            drawn.contains("runner: prepare 1/2 `"),
            "{env:?}: {drawn:?}"
        );
    }
}

/// On a terminal the runner's own `error:` is coloured like clap's; `NO_COLOR` and
/// `TERM=dumb` turn it off. (Refused before anything runs: no root needed.)
#[test]
fn errors_are_coloured_on_a_terminal_only() {
    let (code, drawn) = on_a_terminal(80, &[], &["nope.yaml", "--", "true"]);
    assert_eq!(code, 2, "{drawn}");
    assert!(
        drawn.starts_with("\x1b[1;31merror:\x1b[0m cannot read `nope.yaml`"),
        "{drawn:?}"
    );
    for env in [("NO_COLOR", "1"), ("TERM", "dumb")] {
        let (code, drawn) = on_a_terminal(80, &[env], &["nope.yaml", "--", "true"]);
        assert_eq!(code, 2, "{drawn}");
        assert!(
            drawn.starts_with("error: cannot read `nope.yaml`"),
            "{env:?}: {drawn:?}"
        );
    }
}

/// An error too long for the terminal is broken to fit it (80 columns at most), its
/// later lines under the text after `error:` or `= hint:`: clap's own errors (a bad
/// `--memory`), the runner's (a manifest's diagnostic) alike. In a pipe or a log the
/// same error stays whole on one line, for `grep`. (Refused before anything runs: no
/// root needed.)
#[test]
fn errors_fit_the_terminal_and_stay_whole_elsewhere() {
    let cases: [(u16, &[&str]); 3] = [
        (
            80,
            &[
                "manifests/local.yaml",
                "--memory",
                "12parsecs",
                "--",
                "true",
            ],
        ),
        (50, &["manifests/local.yaml", "--set", "x=1", "--", "true"]),
        (120, &["manifests/local.yaml", "--set", "x=1", "--", "true"]),
    ];
    for (cols, args) in cases {
        let (code, drawn) = on_a_terminal(cols, &[("NO_COLOR", "1")], args);
        assert_eq!(code, 2, "{drawn}");
        let drawn = drawn.replace("\r\n", "\n");
        let width = usize::from(cols).min(80);
        assert!(
            drawn.lines().all(|l| l.chars().count() <= width),
            "{cols} columns:\n{drawn}"
        );
        let piped = runner(std::iter::once("launch").chain(args.iter().copied()));
        piped.expect_code(2);
        assert!(
            piped.stderr.lines().any(|l| l.chars().count() > width),
            "the piped error is one long line:\n{}",
            piped.stderr
        );
        // The same words, only broken differently.
        assert_eq!(
            drawn.split_whitespace().collect::<Vec<_>>(),
            piped.stderr.split_whitespace().collect::<Vec<_>>(),
            "{cols} columns"
        );
    }
}

/// As a user who may not make cgroups (nobody, on this host's root-owned hierarchy):
/// the refusal names the OS's reason and the ways forward before anything runs, in
/// lines of 80 columns; with `--best-effort-limits` the step runs and the summary line
/// itself names the limit that was not enforced.
#[test]
#[cfg_attr(skip_root, ignore = "needs root (to become another user)")]
fn an_unprivileged_user_is_told_why_and_what_to_do() {
    use std::os::unix::process::CommandExt;
    if !needs_root() {
        return;
    }
    let home = crate::common::home_for_anyone();
    let as_nobody = |extra: &[&str]| {
        let out = Command::new(assert_cmd::cargo::cargo_bin("runner"))
            .current_dir(root())
            .env("RUNNER_HOME", home.path())
            .env("NO_COLOR", "1")
            .env_remove("XDG_RUNTIME_DIR")
            .args(["launch", "manifests/local.yaml", "--memory", "64MiB"])
            .args(extra)
            .args(["--", "true"])
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = as_nobody(&[]);
    assert_eq!(code, Some(125), "{stderr}");
    for want in [
        "cannot enforce memory/cpus/pids",
        "Permission denied (os error 13)",
        "run as root",
        "`runner doctor`",
        "`--best-effort-limits`",
    ] {
        // The summary is wrapped: compare with its lines joined.
        let joined = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(joined.contains(want), "no `{want}` in: {stderr}");
    }
    for line in stderr
        .lines()
        .filter(|l| !l.trim_start().starts_with("run "))
    {
        assert!(
            line.chars().count() <= 80,
            "wider than 80 columns: {line:?}"
        );
    }

    let (code, stderr) = as_nobody(&["--best-effort-limits"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("NOT enforced: memory, pids"),
        "the summary names what was not enforced: {stderr}"
    );
}

/// A step that fills the disk its run folder is on still gets its result written
/// (into the space set aside when the run started), not a run that reads `lost`; and
/// a symlink it plants where a temporary could go is never written through.
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn a_full_disk_or_planted_links_do_not_lose_the_result() {
    if !needs_root() {
        return;
    }
    let mnt = tempfile::tempdir().unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount a small tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(mnt.path());
    let victim = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(victim.path(), "untouched").unwrap();
    let run = mnt.path().join("run");
    let script = format!(
        "for i in $(seq 0 64); do ln -s {v} \"$RUNNER_RUN_DIR/result.json.tmp.$PPID.$i\"; done; \
         dd if=/dev/zero of=\"$RUNNER_WORK_DIR/fill\" bs=64k 2>/dev/null; echo full",
        v = victim.path().display()
    );
    let (out, r) = launch(&[
        "manifests/local.yaml",
        "--run-dir",
        run.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    out.expect_code(0);
    assert_eq!(r["status"], "succeeded");
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(run.join("result.json")).unwrap()).unwrap();
    assert_eq!(on_disk["status"], "succeeded");
    assert_eq!(std::fs::read_to_string(victim.path()).unwrap(), "untouched");
    let st = crate::common::runner(["status", run.to_str().unwrap(), "--json"]);
    assert_eq!(st.json()["state"], "finished");
}

/// A step name is data on the terminal too: its escape sequences (a window title, a
/// screen clear, a right-to-left override) are shown escaped in the progress line, on a
/// terminal and in plain lines alike, never obeyed.
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn escape_sequences_in_a_step_name_are_shown_not_obeyed() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("named.yaml");
    std::fs::write(
        &manifest,
        "version: 1\nname: named\nprepare:\n  run:\n    - [echo, \"{{ step.name }}\"]\n\
         launch:\n  run: [\"{{ entrypoint }}\"]\n",
    )
    .unwrap();
    let hostile = "t\x1b]0;owned\x07\x1b[2J\u{202e}x";
    let args = [manifest.to_str().unwrap(), "--step", hostile, "--", "true"];
    let escaped = "echo t\\x1b]0;owned\\x07\\x1b[2J\\u{202e}x";
    let (code, drawn) = on_a_terminal(200, &[], &args);
    assert_eq!(code, 0, "{drawn:?}");
    assert!(drawn.contains(escaped), "{drawn:?}");
    assert!(
        !drawn.contains("\x1b]0;") && !drawn.contains('\u{202e}'),
        "{drawn:?}"
    );
    let plain = Runner::new().arg("launch").args(args).run();
    plain.expect_code(0);
    let line = format!("runner: prepare 1/1 `{escaped}`\n");
    assert!(plain.stderr.contains(&line), "{:?}", plain.stderr);
}

/// With `measured_by: engine` the result's numbers are the step's as the engine
/// reported them, or null: never the client's, which are reported apart. What the
/// engine gets wrong is a warning and left out.
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn an_engines_client_is_never_reported_as_its_step() {
    if !needs_root() {
        return;
    }
    let m = "tests/fixtures/launch/engine.yaml";
    let report = r#"{"status": "oom_killed", "peak_memory_bytes": 167772160,
        "cpu_user_secs": 1.5, "cpu_system_secs": 0.25,
        "limits": [{"name": "memory", "value": 134217728, "contained": true},
                   {"name": "cpus", "value": 1.5}]}"#;
    let step = format!("echo '{report}' > \"$RUNNER_ENGINE_OUTCOME\"; exit 137");
    let (out, r) = launch(&[m, "--", "sh", "-c", &step]);
    out.expect_code(137);
    assert_eq!(r["status"], "oom_killed", "{r}");
    assert_eq!(r["measured_by"], "engine");
    assert_eq!(r["peak_memory_bytes"], 167772160);
    assert_eq!(r["cpu_user_secs"], 1.5);
    assert_eq!(r["oom_kills"], 1, "the engine saw the step OOM-killed: {r}");
    let client = &r["client"];
    assert!(client["peak_memory_bytes"].as_u64().unwrap() > 0, "{r}");
    assert_ne!(client["peak_memory_bytes"], r["peak_memory_bytes"]);
    let limits = r["limits"].as_array().unwrap();
    let memory = limits.iter().find(|l| l["name"] == "memory").expect("{r}");
    assert_eq!(memory["enforced_by"], "engine");
    assert_eq!(memory["value"], 134217728);
    assert_eq!(memory["contained"], true);
    let cpus = limits.iter().find(|l| l["name"] == "cpus").expect("{r}");
    assert_eq!(
        cpus["contained"], false,
        "not contained unless the engine says so"
    );
    assert!(
        out.stderr.contains("peak memory 160.0 MiB (by the engine)"),
        "{}",
        out.stderr
    );

    // No report: unknown, and said so; the client's use is still not the step's.
    let (out, r) = launch(&[m, "--", "true"]);
    out.expect_code(0);
    assert_eq!(r["peak_memory_bytes"], Value::Null, "{r}");
    assert_eq!(r["cpu_user_secs"], Value::Null, "{r}");
    assert!(r["client"]["cpu_user_secs"].is_number(), "{r}");
    assert!(
        out.stderr
            .contains("the engine reported no memory or CPU use"),
        "{}",
        out.stderr
    );

    // A wrong report: what is wrong is left out, with a warning.
    let report = r#"{"cpu_user_secs": -1, "limits": [{"name": "memory", "value": "lots"}]}"#;
    let step = format!("echo '{report}' > \"$RUNNER_ENGINE_OUTCOME\"");
    let (out, r) = launch(&[m, "--", "sh", "-c", &step]);
    out.expect_code(0);
    assert_eq!(r["cpu_user_secs"], Value::Null, "{r}");
    assert!(!r["limits"].to_string().contains("lots"), "{r}");
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains("`cpu_user_secs`: not a time"), "{r}");
    assert!(warnings.contains("`memory` limit"), "{r}");

    // The runner measures a step that runs here: an engine's numbers are not taken.
    let step = r#"echo '{"peak_memory_bytes": 1}' > "$RUNNER_ENGINE_OUTCOME""#;
    let (out, r) = launch(&["manifests/local.yaml", "--", "sh", "-c", step]);
    out.expect_code(0);
    assert_eq!(r["measured_by"], "runner");
    assert_ne!(r["peak_memory_bytes"], 1, "{r}");
    assert_eq!(r["client"], Value::Null);
    assert!(
        r["warnings"]
            .to_string()
            .contains("ignored what the engine measured"),
        "{r}"
    );
}

/// What a step asks for and the flavor ignores is said: a warning on stderr and in the
/// result, with the flavor's reason, also for a field the flavor declares nothing
/// for. A field the step leaves unset is not mentioned.
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn what_the_flavor_ignores_is_said_at_launch() {
    if !needs_root() {
        return;
    }
    let (out, r) = launch(&["manifests/local.yaml", "-r", "six==1.16.0", "--", "true"]);
    out.expect_code(0);
    let said = "the flavor ignores `requirements.pip` (six==1.16.0): the step runs with the \
                packages of this machine";
    let warnings = r["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{r}");
    assert!(warnings[0].as_str().unwrap().starts_with(said), "{r}");
    assert!(
        out.stderr
            .starts_with("runner: warning: the flavor ignores `requirements.pip`")
    );
    assert!(out.stderr.contains("1 warning"), "{}", out.stderr);
    // Declared nothing, used nowhere: still said.
    let (out, r) = launch(&[
        "tests/fixtures/launch/engine.yaml",
        "--gpus",
        "0",
        "--memory",
        "64MiB",
        "--",
        "true",
    ]);
    out.expect_code(0);
    assert!(
        r["warnings"]
            .to_string()
            .contains("ignores `resources.memory` (64.0 MiB): no template"),
        "{r}"
    );
    assert!(
        !r["warnings"].to_string().contains("gpu"),
        "0 GPUs is not asking: {r}"
    );
}

/// `--strict` refuses such a step before any work: exit 2, no run folder.
#[test]
fn strict_refuses_what_the_flavor_ignores_before_any_work() {
    let r = Runner::new();
    let home = r.home().to_path_buf();
    let out = r
        .args([
            "launch",
            "--strict",
            "manifests/local.yaml",
            "-r",
            "six",
            "--",
            "true",
        ])
        .run();
    out.expect_code(2);
    assert!(
        out.stderr
            .starts_with("error: the step asks for what the flavor `local` ignores"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("hint: the flavor ignores `requirements.pip` (six)")
    );
    let runs = std::fs::read_dir(home.join("runs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(runs, 0, "a run folder was made");
    // A reviewer sees it in the plan.
    let out = Runner::new()
        .args([
            "render",
            "--format",
            "json",
            "manifests/local.yaml",
            "-r",
            "six",
            "--",
            "true",
        ])
        .run();
    out.expect_code(0);
    let ignored = &out.json()["ignored"];
    assert!(
        ignored[0]
            .as_str()
            .unwrap()
            .contains("`requirements.pip` (six)"),
        "{ignored}"
    );
}
