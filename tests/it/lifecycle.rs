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

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn a_dead_supervisor_is_reported_as_lost_not_running() {
    if !needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let id = detach(
        home.path(),
        &["manifests/local.yaml", "--", "sleep", "1000.9191"],
    );
    let pid_file = home.path().join("runs").join(&id).join("supervisor.pid");
    let pid: i32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: killing the supervisor this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
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
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive("sleep 1000.9191") {
        assert!(
            Instant::now() < deadline,
            "the step outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
    w.expect_code(124);
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
