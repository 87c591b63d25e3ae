//! The `ray` flavor against a real two-node Ray cluster on this machine (`eval "$(bash
//! .ci/engines/ray.sh start)"` sets `STEPRUNNER_RAY_ADDRESS` and `STEPRUNNER_RAY_PYTHON`):
//! requirements and environment reach the driver, its arguments stay data, its exit
//! code comes back, a step pinned to a node runs there, one no node can hold is refused
//! before it is submitted, and cancel or timeout stops the job.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Output, Runner};

const MANIFEST: &str = "manifests/ray.yaml";

/// The cluster's dashboard address and the Python with ray, or skip (fail under CI).
fn cluster() -> Option<(String, String)> {
    let address = crate::common::engine_var("STEPRUNNER_RAY_ADDRESS", "ray")?;
    Some((
        address,
        crate::common::engine_var("STEPRUNNER_RAY_PYTHON", "ray")?,
    ))
}

/// A small source folder (it is uploaded as the job's working directory).
fn source() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ray-step-")
        .tempdir()
        .unwrap();
    std::fs::write(
        dir.path().join("main.py"),
        "import os, sys\nimport six\nprint('six', six.__version__, os.environ.get('MODE'), sys.argv[1:])\n\
         sys.exit(int(os.environ.get('CODE', '0')))\n",
    )
    .unwrap();
    dir
}

fn launch_args(address: &str, python: &str, src: &Path) -> Vec<String> {
    ["launch", "--json", "-q", MANIFEST, "--set"]
        .iter()
        .map(|s| s.to_string())
        .chain([
            format!("address={address}"),
            "--set".into(),
            format!("python={python}"),
            "--source".into(),
            src.display().to_string(),
        ])
        .collect()
}

fn run(address: &str, python: &str, src: &Path, more: &[&str]) -> (Output, Value) {
    let out = Runner::new()
        .args(launch_args(address, python, src))
        .args(more)
        .run();
    let r = out.json();
    (out, r)
}

fn run_dir(r: &Value) -> PathBuf {
    PathBuf::from(r["run_dir"].as_str().expect("run_dir"))
}

/// `GET PATH` on the dashboard, through the cluster's Python.
fn api(python: &str, address: &str, path: &str) -> Value {
    let out = Command::new(python)
        .args([
            "-c",
            "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())",
            &format!("{address}{path}"),
        ])
        .output()
        .expect("python runs");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
#[cfg_attr(
    skip_engine_ray,
    ignore = "needs a Ray cluster: eval \"$(bash .ci/engines/ray.sh start)\""
)]
fn ray_requirements_environment_arguments_and_exit_code() {
    let Some((address, python)) = cluster() else {
        return;
    };
    let src = source();
    let info = src.path().join("info.json");
    std::fs::write(
        &info,
        serde_json::json!({
            "requirements": {"pip": ["six==1.16.0"], "environment": {"MODE": "a b'c", "CODE": "3"}},
            "resources": {"cpu_count": 1, "memory": "100MiB"},
            "entrypoint": ["python3", "main.py", "x y", "$(touch PWNED)"],
        })
        .to_string(),
    )
    .unwrap();
    let (out, r) = run(
        &address,
        &python,
        src.path(),
        &["--info", info.to_str().unwrap()],
    );
    out.expect_code(3);
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["exit_code"], 3);
    let stdout = std::fs::read_to_string(run_dir(&r).join("stdout.log")).unwrap();
    assert_eq!(
        stdout, "six 1.16.0 a b'c ['x y', '$(touch PWNED)']\n",
        "the driver's output alone, the required six, arguments as data"
    );
    assert!(!src.path().join("PWNED").exists());
    // Ray schedules memory and holds the driver to nothing: the result says so.
    let memory = crate::common::limit(&r, "memory");
    assert_eq!(memory["enforced_by"], "scheduler");
    assert_eq!(memory["contained"], false);
    assert!(
        out.stderr.contains("only scheduled, NOT enforced: memory"),
        "{}",
        out.stderr
    );
    assert_eq!(r["measured_by"], "engine");
    assert_eq!(r["peak_memory_bytes"], Value::Null, "not the client's: {r}");
    // Secrets are refused: a job's environment is shown to whoever sees the cluster.
    let out = Runner::new()
        .env("TOKEN", "s3cret")
        .args(launch_args(&address, &python, src.path()))
        .args(["--env", "TOKEN", "--", "true"])
        .run();
    let r = out.json();
    out.expect_code(125);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("does not pass secrets (TOKEN)"),
        "{r}"
    );
}

/// A step pinned with a custom resource runs on the node that has it; one that no node
/// can hold is refused at once, never submitted.
#[test]
#[cfg_attr(
    skip_engine_ray,
    ignore = "needs a Ray cluster: eval \"$(bash .ci/engines/ray.sh start)\""
)]
fn ray_placement_and_a_step_that_fits_no_node() {
    let Some((address, python)) = cluster() else {
        return;
    };
    let src = source();
    let (out, r) = run(
        &address,
        &python,
        src.path(),
        &[
            "--set",
            r#"resources={"node2": 1}"#,
            "-r",
            "six",
            "--",
            "python3",
            "main.py",
        ],
    );
    out.expect_code(0);
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir(&r).join("ray-job.json")).unwrap())
            .unwrap();
    let nodes = api(&python, &address, "/nodes?view=summary");
    let node2 = nodes["data"]["summary"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["raylet"]["resourcesTotal"]["node2"].is_number())
        .map(|n| n["raylet"]["nodeId"].clone())
        .expect("a node with node2");
    assert_eq!(record["driver_node_id"], node2, "{record}");

    let t0 = Instant::now();
    let (out, r) = run(
        &address,
        &python,
        src.path(),
        &["--cpus", "8", "--", "true"],
    );
    out.expect_code(125);
    let message = r["message"].as_str().unwrap();
    assert!(
        message.contains("no node of the Ray cluster has what the step asks for (CPU 8)")
            && message.contains("the most any node has: CPU 1"),
        "{message}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "refused, not left pending"
    );
    let job = api(
        &python,
        &address,
        &format!(
            "/api/jobs/runner-{}",
            r["run_id"].as_str().unwrap().to_lowercase()
        ),
    );
    assert!(
        job.is_null() || job.get("status").is_none(),
        "it was submitted: {job}"
    );
}

/// Cancel (SIGTERM to the runner) and the runner's timeout stop the job itself.
#[test]
#[cfg_attr(
    skip_engine_ray,
    ignore = "needs a Ray cluster: eval \"$(bash .ci/engines/ray.sh start)\""
)]
fn ray_cancel_and_timeout_stop_the_job() {
    let Some((address, python)) = cluster() else {
        return;
    };
    let src = source();
    let home = tempfile::tempdir().unwrap();
    let marker = src.path().join("started");
    // A sleep no other process has: the driver, found by its command line.
    let driver = format!("600.{}1", std::process::id());
    let step = format!("touch {}; exec sleep {driver}", marker.display());
    let mut args = launch_args(&address, &python, src.path());
    args.extend(["--set", "working_dir=false", "--", "sh", "-c", &step].map(String::from));
    let child = Command::new(assert_cmd::cargo::cargo_bin("runner"))
        .current_dir(crate::common::root())
        .env("RUNNER_HOME", home.path())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the job never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["status"], "cancelled", "{r}");
    let sid = format!("runner-{}", r["run_id"].as_str().unwrap().to_lowercase());
    gone(&driver);
    let status = settled(&python, &address, &sid);
    assert!(status == "STOPPED" || status == "FAILED", "{status}");

    let driver2 = format!("600.{}2", std::process::id());
    let started = src.path().join("started2");
    let step = format!("touch {}; exec sleep {driver2}", started.display());
    let (out, r) = run(
        &address,
        &python,
        src.path(),
        &[
            "--set",
            "working_dir=false",
            "--set",
            "timeout=10s",
            "--",
            "sh",
            "-c",
            &step,
        ],
    );
    out.expect_code(124);
    assert_eq!(r["status"], "timed_out", "{r}");
    gone(&driver2);
    let sid = format!("runner-{}", r["run_id"].as_str().unwrap().to_lowercase());
    let status = settled(&python, &address, &sid);
    if started.exists() {
        assert!(status == "STOPPED" || status == "FAILED", "{status}");
    } else {
        // On a busy machine the deadline can come first: before the client submitted
        // (no such job), or while Ray set the job up (it stays PENDING, never runs).
        assert!(
            status.is_empty() || status == "PENDING" || status == "STOPPED",
            "{status}"
        );
    }
}

/// No process of the driver is left (bounded: Ray ends it asynchronously).
#[track_caller]
fn gone(driver: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !crate::common::processes_with(&format!("sleep {driver}")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the driver `sleep {driver}` still runs"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The job's status once it is no longer RUNNING (Ray stops a job asynchronously).
fn settled(python: &str, address: &str, sid: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = api(python, address, &format!("/api/jobs/{sid}"));
        let status = job["status"].as_str().unwrap_or("").to_string();
        if status != "RUNNING" || Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
