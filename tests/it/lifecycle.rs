//! The asynchronous run lifecycle: `launch --detach`, `status`, `wait`, `cancel`,
//! `logs`, `ps`, and secrets that never show. Needs root (cgroups).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Runner, needs_root, processes_with};

fn alive(marker: &str) -> bool {
    !processes_with(marker).is_empty()
}

/// `runner ARGS…` with RUNNER_HOME = `home`.
fn runner(home: &Path, args: &[&str]) -> crate::common::Output {
    Runner::new().env("RUNNER_HOME", home).args(args).run()
}

fn detach(home: &Path, args: &[&str]) -> String {
    let mut all = vec!["launch", "--detach", "--json"];
    all.extend_from_slice(args);
    let out = runner(home, &all);
    out.expect_code(0);
    let v: Value = out.json();
    assert!(Path::new(v["run_dir"].as_str().unwrap()).is_dir());
    v["run_id"].as_str().unwrap().to_string()
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn detached_run_can_be_watched_waited_for_and_listed() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let id = detach(
        home.path(),
        &[
            "manifests/local.yaml",
            "--",
            "sh",
            "-c",
            "echo one; sleep 1; echo two; exit 4",
        ],
    );
    let st = runner(home.path(), &["status", &id, "--json"]);
    st.expect_code(0);
    assert!(
        matches!(st.json()["state"].as_str(), Some("running" | "finished")),
        "{}",
        st.stdout
    );

    let logs = runner(home.path(), &["logs", "--follow", &id]);
    logs.expect_code(0);
    assert_eq!(
        logs.stdout, "one\ntwo\n",
        "follow prints everything, then stops when the run ends"
    );

    let w = runner(home.path(), &["wait", &id, "--json"]);
    w.expect_code(4);
    assert_eq!(w.json()["status"], "failed");

    let st = runner(home.path(), &["status", &id[..24], "--json"]).json();
    assert_eq!(st["state"], "finished");
    assert_eq!(st["result"]["exit_code"], 4);

    let ps = runner(home.path(), &["ps", "--json"]).json();
    assert_eq!(ps[0]["run_id"], id.as_str());
    assert_eq!(ps[0]["status"], "failed");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn cancel_stops_a_detached_step_runs_cleanup_and_leaves_nothing() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let set = format!("out={}", out.path().display());
    let id = detach(
        home.path(),
        &[
            "tests/fixtures/launch/staged.yaml",
            "--set",
            &set,
            "--",
            "sh",
            "-c",
            "trap '' TERM; sleep 1000.8181",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !alive("sleep 1000.8181") {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    runner(home.path(), &["cancel", &id]).expect_code(0);
    let st = runner(home.path(), &["status", &id, "--json"]).json();
    assert_eq!(st["state"], "finished");
    assert_eq!(st["result"]["status"], "cancelled");
    assert_eq!(st["result"]["exit_code"], 143);
    assert_eq!(
        std::fs::read_to_string(out.path().join("cleanup")).unwrap(),
        "cancelled 143\n"
    );
    assert!(!alive("sleep 1000.8181"), "the step is gone");
    // Cancelling a finished run is harmless.
    runner(home.path(), &["cancel", &id]).expect_code(0);
}

/// Start `sleep SECS` detached, wait for it to run in its cgroups, and SIGKILL its
/// supervisor. The run's id.
fn kill_the_supervisor_of(home: &Path, secs: &str) -> String {
    let id = detach(home, &["manifests/local.yaml", "--", "sleep", secs]);
    let pid_file = home.join("runs").join(&id).join("supervisor.pid");
    let pid: i32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Killed while its step runs (in its cgroups).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !alive(&format!("sleep {secs}")) {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !crate::launch::cgroups_of(&id).is_empty(),
        "the run has cgroups"
    );
    // SAFETY: killing the supervisor this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    id
}

/// Wait (5 s at most) for `sleep SECS`, whose supervisor was killed, to be gone.
fn step_gone_with_its_supervisor(secs: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(&format!("sleep {secs}")) {
        assert!(
            Instant::now() < deadline,
            "the step outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn a_dead_supervisor_is_reported_as_lost_not_running() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let id = kill_the_supervisor_of(home.path(), "1000.9191");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = runner(home.path(), &["status", &id, "--json"]).json();
        if st["state"] == "lost" {
            break;
        }
        assert!(Instant::now() < deadline, "still {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let w = runner(home.path(), &["wait", &id]);
    w.expect_code(125);
    assert!(w.stderr.contains("is lost"), "{}", w.stderr);
    // Nothing to cancel: said, and not a success.
    let c = runner(home.path(), &["cancel", &id]);
    c.expect_code(125);
    assert!(c.stderr.contains("is lost"), "{}", c.stderr);
    step_gone_with_its_supervisor("1000.9191");
    // The next launch removes the dead run's cgroups: nothing is left behind.
    runner(
        home.path(),
        &["launch", "-q", "manifests/local.yaml", "--", "true"],
    )
    .expect_code(0);
    let left = crate::launch::cgroups_of(&id);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Remount, in a new mount and cgroup namespace, each cgroup hierarchy given as
/// `MOUNT|TYPE|OPTIONS` (up to `--`), then run the rest.
const REMOUNT: &str = r#"set -eu
while [ "$1" != -- ]; do
  m=${1%%|*}; rest=${1#*|}; type=${rest%%|*}; opts=${rest#*|}
  umount -l "$m"
  if [ "$type" = cgroup2 ]; then mount -t cgroup2 none "$m"
  else mount -t cgroup -o "$opts" none "$m"; fi
  shift
done
shift
exec "$@"
"#;

/// A runner in another cgroup namespace, where the paths a dead run recorded show
/// another subtree, finds the run's record (the records folder is the same): it
/// leaves the record and the cgroups it cannot see to a runner that sees them, and the
/// next launch on the host removes everything. (Taking a directory missing from its
/// view for one removed, it dropped the record, and the cgroups stayed for good.)
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn a_runner_in_another_cgroup_namespace_leaves_a_dead_runs_cgroups_to_the_host() {
    use std::os::unix::process::CommandExt;
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let id = kill_the_supervisor_of(home.path(), "1000.9292");
    step_gone_with_its_supervisor("1000.9292");
    let record = Path::new("/run/steprunner/cgroups").join(&id);
    assert!(record.is_file(), "the dead run is recorded");
    let left = crate::launch::cgroups_of(&id);
    assert!(!left.is_empty(), "the dead run left cgroups");

    // The hierarchies a run uses, each with a fresh cgroup the namespace is rooted at.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut specs = Vec::new();
    let mut roots = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount = left.split(' ').nth(4).unwrap_or_default();
        let mut r = right.split(' ');
        let (kind, opts) = (r.next().unwrap_or_default(), r.nth(1).unwrap_or_default());
        let opts: Vec<&str> = opts
            .split(',')
            .filter(|o| *o != "rw" && *o != "ro")
            .collect();
        let used = ["memory", "cpu", "cpuacct", "pids", "freezer"];
        if kind == "cgroup2" || (kind == "cgroup" && opts.iter().any(|o| used.contains(o))) {
            specs.push(format!("{mount}|{kind}|{}", opts.join(",")));
            roots.push(Path::new(mount).join(format!("steprunner-viewtest-{id}")));
        }
    }
    let procs: Vec<std::ffi::CString> = roots
        .iter()
        .map(|r| {
            std::fs::create_dir(r).unwrap();
            std::ffi::CString::new(r.join("cgroup.procs").into_os_string().into_encoded_bytes())
                .unwrap()
        })
        .collect();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-m", "-C", "sh", "-c", REMOUNT, "sh"])
        .args(&specs)
        .arg("--")
        .arg(assert_cmd::cargo::cargo_bin("runner"))
        .args(["launch", "-q", "manifests/local.yaml", "--", "true"])
        .env("RUNNER_HOME", home.path());
    // SAFETY: between fork and exec only open, write and close, on paths made before
    // the fork. Writing `0` moves the writer.
    unsafe {
        cmd.pre_exec(move || {
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the runner in the namespace: {stderr}"
    );
    for r in &roots {
        std::fs::remove_dir(r).unwrap_or_else(|e| panic!("{}: {e}", r.display()));
    }
    assert!(
        record.is_file(),
        "the record is left to a runner that sees the cgroups"
    );
    assert_eq!(
        crate::launch::cgroups_of(&id),
        left,
        "and so are the cgroups"
    );

    runner(
        home.path(),
        &["launch", "-q", "manifests/local.yaml", "--", "true"],
    )
    .expect_code(0);
    let left = crate::launch::cgroups_of(&id);
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!record.exists(), "the record is removed with them");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn wait_gives_up_after_its_timeout_and_the_run_goes_on() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let id = detach(home.path(), &["manifests/local.yaml", "--", "sleep", "3"]);
    let w = runner(home.path(), &["wait", &id, "--timeout", "0.2s"]);
    // Not 124: that is a step that timed out.
    w.expect_code(75);
    assert_eq!(
        runner(home.path(), &["status", &id, "--json"]).json()["state"],
        "running"
    );
    runner(home.path(), &["cancel", &id]).expect_code(0);
}

#[test]
fn unknown_runs_are_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let out = runner(home.path(), &["status", "nope"]);
    out.expect_code(2);
    assert!(out.stderr.contains("no run `nope`"), "{}", out.stderr);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn secret_values_never_show_only_names_do() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let secret = "s3cr3t-value-4711";
    let step = [
        "manifests/local.yaml",
        "--env",
        "STEP_TOKEN",
        "--",
        "sh",
        "-c",
        "test ${#STEP_TOKEN} -eq 17 && test \"${STEP_TOKEN%4711}\" != \"$STEP_TOKEN\"",
    ];
    let render = Runner::new()
        .env("RUNNER_HOME", home.path())
        .env("STEP_TOKEN", secret)
        .arg("render")
        .args(step)
        .run();
    render.expect_code(0);
    assert!(
        render.stdout.contains("STEP_TOKEN"),
        "the name is shown: {}",
        render.stdout
    );
    assert!(!render.stdout.contains(secret) && !render.stderr.contains(secret));

    let out = Runner::new()
        .env("RUNNER_HOME", home.path())
        .env("STEP_TOKEN", secret)
        .args(["launch", "--json"])
        .args(step)
        .run();
    out.expect_code(0); // the step saw the value
    assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret));
    let run = Path::new(out.json()["logs"]["stdout"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    for f in ["plan.json", "result.json"] {
        let text = std::fs::read_to_string(run.join(f)).unwrap();
        assert!(!text.contains(secret), "{f} holds the secret");
    }

    let missing = Runner::new()
        .env("RUNNER_HOME", home.path())
        .args([
            "render",
            "manifests/local.yaml",
            "--env",
            "NOT_SET_ANYWHERE",
            "--",
            "true",
        ])
        .run();
    missing.expect_code(2);
    assert!(
        missing.stderr.contains("--env `NOT_SET_ANYWHERE`"),
        "{}",
        missing.stderr
    );
}

/// Set every file of a run folder (and the folder) to have last changed `ago`.
fn age_run(home: &Path, id: &str, ago: Duration) {
    let when = std::time::SystemTime::now() - ago;
    let dir = home.join("runs").join(id);
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if e.path().is_file() {
            let f = std::fs::File::options()
                .append(true)
                .open(e.path())
                .unwrap();
            f.set_modified(when).unwrap();
        }
    }
}

/// While a run prepares, `logs` shows the prepare command's output (announced on
/// stderr), `status` and `ps` say which command runs and for how long; after a failed
/// prepare `logs` still shows what it printed.
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn a_preparing_run_shows_its_stage_logs_and_elapsed_time() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let manifest = out.path().join("chatty.yaml");
    std::fs::write(
        &manifest,
        "version: 1\nname: chatty\nprepare:\n  key: [\"{{ step.name }}\"]\n  run:\n    \
         - script: echo resolving; sleep 1.5; echo installed\n    - script: echo second; \
         exit 3\nlaunch:\n  run: [\"{{ entrypoint }}\"]\n",
    )
    .unwrap();
    let id = detach(home.path(), &[manifest.to_str().unwrap(), "--", "true"]);
    let dir = home.path().join("runs").join(&id);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("prepare.1.log").exists() {
        assert!(Instant::now() < deadline, "prepare never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));

    let st = runner(home.path(), &["status", &id]);
    st.expect_code(0);
    let shown = st.stdout.trim_end();
    assert!(
        shown.starts_with(&format!("{id}: running · prepare 1 · ")),
        "{shown}"
    );
    let json = runner(home.path(), &["status", &id, "--json"]).json();
    assert_eq!(
        json["phase"],
        serde_json::json!({"stage": "prepare", "command": 1})
    );
    assert!(json["elapsed_secs"].as_f64().unwrap() > 0.0, "{json}");
    let ps = runner(home.path(), &["ps"]);
    let row = ps.stdout.lines().nth(1).expect("a row");
    assert!(row.contains("running · prepare 1"), "{}", ps.stdout);
    assert!(
        !row.trim_end().ends_with('-'),
        "a running run has a duration: {row}"
    );
    for line in ps.stdout.lines() {
        assert!(
            line.chars().count() <= 80,
            "wider than 80 columns: {line:?}"
        );
    }

    // Following from here prints prepare's output, then ends with the run.
    let logs = runner(home.path(), &["logs", "--follow", &id]);
    logs.expect_code(0);
    assert_eq!(logs.stdout, "resolving\ninstalled\nsecond\n");
    let p1 = dir.join("prepare.1.log");
    let p2 = dir.join("prepare.2.log");
    assert_eq!(
        logs.stderr,
        format!(
            "runner: prepare 1 (`{}`)\nrunner: prepare 2 (`{}`)\n",
            p1.display(),
            p2.display()
        )
    );
    let st = runner(home.path(), &["status", &id, "--json"]).json();
    assert_eq!(st["result"]["status"], "prepare_failed");
    // The result points at logs that exist: the step never started, so none of its own.
    for (name, path) in st["result"]["logs"].as_object().unwrap() {
        if let Some(p) = path.as_str().filter(|p| !p.is_empty()) {
            assert!(Path::new(p).exists(), "logs.{name}: {p} does not exist");
        }
    }
    // Afterwards, without --follow: the same bytes.
    let again = runner(home.path(), &["logs", &id]);
    again.expect_code(0);
    assert_eq!(again.stdout, logs.stdout);
}

/// `runs prune --older-than` removes what ended that long ago (finished or lost), and
/// never a running run or a recent one; a bare number is refused.
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn runs_prune_removes_old_runs_only() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let launch = |args: &[&str]| {
        let mut all = vec!["launch", "--json", "-q", "manifests/local.yaml", "--"];
        all.extend_from_slice(args);
        let out = runner(home.path(), &all);
        out.expect_code(0);
        out.json()["run_id"].as_str().unwrap().to_string()
    };
    let old = launch(&["true"]);
    let recent = launch(&["true"]);
    let running = detach(
        home.path(),
        &["manifests/local.yaml", "--", "sleep", "1000.4242"],
    );
    // A lost run: a plan, no supervisor, no result.
    let lost = "20200101T000000-lost-00000000";
    std::fs::create_dir_all(home.path().join("runs").join(lost)).unwrap();
    std::fs::write(home.path().join("runs").join(lost).join("plan.json"), "{}").unwrap();
    let two_days = Duration::from_secs(2 * 86_400);
    age_run(home.path(), &old, two_days);
    age_run(home.path(), lost, two_days);
    age_run(home.path(), &running, two_days);

    let bare = runner(home.path(), &["runs", "prune", "--older-than", "1"]);
    bare.expect_code(2);
    assert!(
        bare.stderr.contains("age `1` has no unit"),
        "{}",
        bare.stderr
    );

    let dry = runner(
        home.path(),
        &["runs", "prune", "--older-than", "1d", "--dry-run"],
    );
    dry.expect_code(0);
    assert!(
        home.path().join("runs").join(&old).exists(),
        "a dry run removes nothing"
    );

    let out = runner(
        home.path(),
        &["runs", "prune", "--older-than", "1d", "--json"],
    );
    out.expect_code(0);
    let mut removed: Vec<String> = out
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["run_id"].as_str().unwrap().to_string())
        .collect();
    removed.sort();
    let mut expected = vec![old.clone(), lost.to_string()];
    expected.sort();
    assert_eq!(removed, expected);
    let left: Vec<String> = std::fs::read_dir(home.path().join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut left_sorted = left.clone();
    left_sorted.sort();
    let mut want = vec![recent.clone(), running.clone()];
    want.sort();
    assert_eq!(left_sorted, want, "nothing half-removed is left: {left:?}");
    runner(home.path(), &["cancel", &running]).expect_code(0);
}

/// A secret (`--env NAME`, `environment:` in the step info) reaches the step's command
/// and nothing else: not prepare, not cleanup, in the foreground and detached alike;
/// and a template may not print one.
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn secrets_reach_the_step_only() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.yaml");
    std::fs::write(
        &manifest,
        "version: 1\nname: secrets\nprepare:\n  run:\n    - script: env > \"$RUNNER_WORK_DIR/../prepare.env\"\n\
         launch:\n  run: [\"{{ entrypoint }}\"]\ncleanup:\n  run:\n    - script: env > \"$RUNNER_RUN_DIR/cleanup.env\"\n",
    )
    .unwrap();
    let info = dir.path().join("info.json");
    std::fs::write(&info, r#"{"environment": {"FILE_SECRET": "f1le-s3cret"}}"#).unwrap();
    let step = ["sh", "-c", "env > \"$RUNNER_RUN_DIR/step.env\""];
    for detached in [false, true] {
        let home = tempfile::tempdir().unwrap();
        let mut args = vec!["launch", "--json", "-q"];
        if detached {
            args.push("--detach");
        }
        args.extend([manifest.to_str().unwrap(), "--info", info.to_str().unwrap()]);
        args.extend(["--env", "CLI_SECRET", "--"]);
        args.extend(step);
        let out = Runner::new()
            .env("RUNNER_HOME", home.path())
            .env("CLI_SECRET", "cl1-s3cret")
            .args(&args)
            .run();
        out.expect_code(0);
        let id = out.json()["run_id"].as_str().unwrap().to_string();
        runner(home.path(), &["wait", &id]).expect_code(0);
        let run = home.path().join("runs").join(&id);
        let read =
            |f: &str| std::fs::read_to_string(run.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let step_env = read("step.env");
        assert!(
            step_env.contains("CLI_SECRET=cl1-s3cret"),
            "detached={detached}"
        );
        assert!(
            step_env.contains("FILE_SECRET=f1le-s3cret"),
            "detached={detached}"
        );
        for stage in ["prepare.env", "cleanup.env"] {
            let env = read(stage);
            assert!(
                !env.contains("s3cret"),
                "detached={detached}: {stage} got a secret:\n{env}"
            );
        }
    }
    // Printing one in a template is refused before anything runs.
    let printing = dir.path().join("p.yaml");
    std::fs::write(
        &printing,
        "version: 1\nname: printing\nlaunch:\n  run: [echo, \"{{ env.CLI_SECRET }}\"]\n",
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = Runner::new()
        .env("RUNNER_HOME", home.path())
        .env("CLI_SECRET", "cl1-s3cret")
        .args([
            "render",
            printing.to_str().unwrap(),
            "--env",
            "CLI_SECRET",
            "--",
            "x",
        ])
        .run();
    out.expect_code(2);
    assert!(
        out.stderr.starts_with(
            "error: `env.CLI_SECRET` is one of the step's secrets: a template may not print it\n"
        ),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("cl1-s3cret") && !out.stdout.contains("cl1-s3cret"));
}

/// Six `runner cancel`s at once are one cancel: each returns 0, the step gets its
/// grace, and cleanup runs to its end (a second SIGTERM used to cut it short).
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn concurrent_cancels_never_cut_cleanup_short() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.yaml");
    std::fs::write(
        &manifest,
        "version: 1\nname: slowclean\nlaunch:\n  run: [\"{{ entrypoint }}\"]\n  kill_grace: 5s\n\
         cleanup:\n  run:\n    - script: sleep 1; echo cleaned > \"$RUNNER_RUN_DIR/cleaned\"\n",
    )
    .unwrap();
    for round in 0..3 {
        let home = tempfile::tempdir().unwrap();
        let id = detach(
            home.path(),
            &[
                manifest.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                "trap 'sleep 0.5; exit 0' TERM; sleep 1000.5151 & wait",
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !alive("sleep 1000.5151") {
            assert!(Instant::now() < deadline, "the step never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let cancels: Vec<_> = (0..6)
            .map(|_| {
                let (h, id) = (home.path().to_path_buf(), id.clone());
                std::thread::spawn(move || runner(&h, &["cancel", &id]).code)
            })
            .collect();
        for c in cancels {
            assert_eq!(c.join().unwrap(), 0, "round {round}");
        }
        let st = runner(home.path(), &["status", &id, "--json"]).json();
        assert_eq!(st["result"]["status"], "cancelled", "round {round}: {st}");
        assert_eq!(
            st["result"]["stages"]["cleanup"]["status"], "ok",
            "round {round}: {st}"
        );
        assert_eq!(st["result"]["cleanup_error"], Value::Null, "round {round}");
        let cleaned = home.path().join("runs").join(&id).join("cleaned");
        assert_eq!(std::fs::read_to_string(cleaned).unwrap(), "cleaned\n");
    }
}

/// The run folder's files the runner trusts are not the step's to change: a step that
/// points `supervisor.pid` elsewhere (at pid 1) and deletes `plan.json` neither
/// redirects `cancel` nor hides the run.
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn the_step_cannot_redirect_cancel_or_hide_its_run() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let attack = "d=\"$RUNNER_RUN_DIR\"; \
        (echo '1 1' > \"$d/supervisor.pid\") 2>/dev/null && echo wrote-pid >> \"$RUNNER_WORK_DIR/got\"; \
        rm -f \"$d/plan.json\" 2>/dev/null && echo removed-plan >> \"$RUNNER_WORK_DIR/got\"; \
        (echo x > \"$d/p\" && mv -f \"$d/p\" \"$d/supervisor.pid\") 2>/dev/null && echo replaced-pid >> \"$RUNNER_WORK_DIR/got\"; \
        touch \"$RUNNER_WORK_DIR/ready\"; sleep 1000.6262";
    let id = detach(
        home.path(),
        &["manifests/local.yaml", "--", "sh", "-c", attack],
    );
    let run = home.path().join("runs").join(&id);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !run.join("work/ready").exists() {
        assert!(Instant::now() < deadline, "the step never got ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = std::fs::read_to_string(run.join("work/got")).unwrap_or_default();
    assert_eq!(got, "", "the step changed the runner's files");
    let ps = runner(home.path(), &["ps", "--json"]).json();
    assert_eq!(ps[0]["run_id"], id.as_str(), "the run is listed");
    runner(home.path(), &["cancel", &id]).expect_code(0);
    let st = runner(home.path(), &["status", &id, "--json"]).json();
    assert_eq!(st["result"]["status"], "cancelled", "{st}");
    assert!(!alive("sleep 1000.6262"));
}

/// The run folder is the step's to write in: a log it replaced with a FIFO (which an
/// open for reading would wait on forever) or with a link to `/dev/zero` (endless)
/// does not hang or flood `runner logs` and `runner status` afterwards.
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn logs_the_step_replaced_do_not_hang_or_flood_their_readers() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let attack = "d=\"$RUNNER_RUN_DIR\"; echo before; \
        rm -f \"$d/stdout.log\" && mkfifo \"$d/stdout.log\"; \
        rm -f \"$d/stderr.log\" && ln -s /dev/zero \"$d/stderr.log\"";
    let out = runner(
        home.path(),
        &[
            "launch",
            "--json",
            "-q",
            "manifests/local.yaml",
            "--",
            "sh",
            "-c",
            attack,
        ],
    );
    out.expect_code(0);
    let id = out.json()["run_id"].as_str().unwrap().to_string();
    let run = home.path().join("runs").join(&id);
    assert!(
        std::fs::symlink_metadata(run.join("stdout.log")).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_fifo()
        })
    );
    let bin = assert_cmd::cargo::cargo_bin("runner");
    for args in [
        vec!["logs", &id],
        vec!["logs", "--stderr", &id],
        vec!["status", &id],
    ] {
        let o = std::process::Command::new("timeout")
            .arg("30")
            .arg(&bin)
            .args(&args)
            .env("RUNNER_HOME", home.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_ne!(o.status.code(), Some(124), "`runner {args:?}` hung");
        assert!(
            o.stdout.len() < 4096,
            "`runner {args:?}`: {} bytes",
            o.stdout.len()
        );
    }
}
