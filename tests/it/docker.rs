//! The `docker` flavor (`manifests/docker.yaml`) end to end against a real Docker
//! engine, found through `STEPRUNNER_DOCKER_HOST` (set by
//! `eval "$(bash .ci/engines/docker.sh start)"`); with `CI=true` a missing engine fails
//! the tests instead of skipping them. Hostile input is checked against a fake `docker`
//! that records its arguments, so every value can be compared byte for byte.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::{Output, Runner, needs_root, processes_with, root};

const MANIFEST: &str = "manifests/docker.yaml";

/// The engine's address, or `None` (after saying so) when no engine was started.
fn docker_host() -> Option<String> {
    crate::common::engine_var("STEPRUNNER_DOCKER_HOST", "docker")
}

/// `docker ARGS…` against the test engine: its trimmed stdout, or `None` when it failed.
fn docker(host: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the docker client runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A step with its own source folder; the images built for it are removed on drop.
struct Step {
    host: String,
    /// As given to `--step`.
    name: String,
    /// The name as the flavor puts it in the image's repository: `[a-z0-9-]`.
    repo: String,
    source: TempDir,
}

impl Step {
    fn new(host: &str, name: &str) -> Step {
        Step::named(host, name, name)
    }

    fn named(host: &str, name: &str, repo: &str) -> Step {
        let source = tempfile::Builder::new()
            .prefix("docker-step-")
            .tempdir()
            .expect("source folder");
        std::fs::write(
            source.path().join("main.py"),
            "import os\nprint('hello from', os.getcwd())\n",
        )
        .expect("write main.py");
        Step {
            host: host.to_string(),
            name: name.to_string(),
            repo: repo.to_string(),
            source,
        }
    }

    fn runner(&self) -> Runner {
        Runner::new().env("DOCKER_HOST", &self.host)
    }

    /// The flavor's image repository for this step.
    fn repository(&self) -> String {
        format!("steprunner/{}", self.repo)
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        let fmt = "{{.Repository}}:{{.Tag}}";
        let listed = docker(
            &self.host,
            &["image", "ls", "--format", fmt, &self.repository()],
        );
        for image in listed.unwrap_or_default().lines() {
            let _ = docker(&self.host, &["rmi", "--force", image]);
        }
    }
}

/// `runner launch --json -q MANIFEST --step NAME --source DIR ARGS…`.
fn launch(step: &Step, r: Runner, args: &[&str]) -> (Output, Value) {
    let out = r
        .args(["launch", "--json", "-q", MANIFEST, "--step", &step.name])
        .arg("--source")
        .arg(step.source.path())
        .args(args)
        .run();
    let result = out.json();
    (out, result)
}

fn log(result: &Value, which: &str) -> String {
    let path = result["logs"][which].as_str().expect("log path");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// No container of this run exists any more, running or not.
#[track_caller]
fn assert_no_container(host: &str, result: &Value) {
    let run_id = result["run_id"].as_str().expect("run_id");
    let label = format!("label=org.steprunner.run-id={run_id}");
    let left = docker(host, &["ps", "--all", "--quiet", "--filter", &label]).expect("docker ps");
    assert_eq!(left, "", "containers of run {run_id} are left");
}

fn image_id(host: &str, image: &str) -> Option<String> {
    docker(host, &["image", "inspect", "--format", "{{.Id}}", image])
}

/// The image the run used: `steprunner/NAME:KEY`.
fn image_of(step: &Step, result: &Value) -> String {
    let key = result["cache"]["key"].as_str().expect("cache key");
    format!("{}:{key}", step.repository())
}

#[test]
#[cfg_attr(
    skip_engine_docker,
    ignore = "needs a Docker engine: eval \"$(bash .ci/engines/docker.sh start)\""
)]
fn docker_step_output_and_exit_codes_pass_through() {
    let Some(host) = docker_host() else { return };
    let step = Step::new(&host, "docker-it-exit");

    let (out, r) = launch(&step, step.runner(), &["--", "python3", "main.py"]);
    out.expect_code(0);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["cache"]["hit"], false);
    assert_eq!(
        log(&r, "stdout"),
        "hello from /app\n",
        "the step ran in /app"
    );
    assert_no_container(&host, &r);

    let step_cmd = "echo out; echo err >&2; exit 3";
    let (out, r) = launch(&step, step.runner(), &["--", "sh", "-c", step_cmd]);
    out.expect_code(3);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(log(&r, "stdout"), "out\n");
    assert_eq!(log(&r, "stderr"), "err\n");
    assert_no_container(&host, &r);
}

/// The result's numbers are the container's, not its `docker run` client's: a step
/// that holds 160 MiB reports a peak within 20 % of it, and its CPU limit as Docker
/// applied it; the client's own use is reported apart, and is far smaller.
#[test]
#[cfg_attr(
    skip_engine_docker,
    ignore = "needs a Docker engine: eval \"$(bash .ci/engines/docker.sh start)\""
)]
fn docker_reports_the_containers_use_not_its_clients() {
    let Some(host) = docker_host() else { return };
    let step = Step::new(&host, "docker-it-usage");
    let hold = "import time; b = bytearray(160 << 20); time.sleep(0.3)";
    let args = [
        "--memory", "512MiB", "--cpus", "1.5", "--", "python3", "-c", hold,
    ];
    let (out, r) = launch(&step, step.runner(), &args);
    out.expect_code(0);
    assert_eq!(r["measured_by"], "engine");
    let peak = r["peak_memory_bytes"]
        .as_u64()
        .expect("the engine measured a peak") as f64;
    let held = (160u64 << 20) as f64;
    assert!(peak >= held && peak <= held * 1.2, "peak {peak}: {r}");
    assert!(r["cpu_system_secs"].as_f64().unwrap() > 0.0, "{r}");
    let client = r["client"]["peak_memory_bytes"]
        .as_u64()
        .expect("client measured");
    assert!(
        (client as f64) < held / 2.0,
        "the client is not the step: {r}"
    );
    let limits = r["limits"].as_array().unwrap();
    let cpus = limits
        .iter()
        .find(|l| l["name"] == "cpus")
        .expect("cpus listed");
    assert_eq!(cpus["value"], 1.5);
    assert_eq!(cpus["enforced_by"], "engine");
    assert_no_container(&host, &r);

    // `measure: false`: nothing from inside the container, and the result says so.
    let args = ["--set", "measure=false", "--", "true"];
    let (out, r) = launch(&step, step.runner(), &args);
    out.expect_code(0);
    assert_eq!(r["peak_memory_bytes"], Value::Null, "{r}");
    assert!(r["client"]["peak_memory_bytes"].is_u64(), "{r}");
    assert_no_container(&host, &r);
}

#[test]
#[cfg_attr(
    skip_engine_docker,
    ignore = "needs a Docker engine: eval \"$(bash .ci/engines/docker.sh start)\""
)]
fn docker_oom_killed_container_is_reported() {
    let Some(host) = docker_host() else { return };
    let step = Step::new(&host, "docker-it-oom");
    let alloc = "b = bytearray(256 << 20); print(len(b))";
    let (out, r) = launch(
        &step,
        step.runner(),
        &["--memory", "64MiB", "--", "python3", "-c", alloc],
    );
    out.expect_code(137);
    assert_eq!(r["status"], "oom_killed");
    assert!(
        r["message"].as_str().unwrap_or_default().contains("OOM"),
        "{r}"
    );
    assert_eq!(log(&r, "stdout"), "", "the allocation never finished");
    // The container's own numbers: its kill counted, its peak at its limit, and the
    // memory limit as Docker enforced it.
    assert_eq!(r["measured_by"], "engine");
    assert!(r["oom_kills"].as_u64().unwrap() >= 1, "{r}");
    let peak = r["peak_memory_bytes"]
        .as_u64()
        .expect("the engine measured a peak");
    assert!(peak > 60 << 20 && peak <= 64 << 20, "peak {peak}: {r}");
    let memory = crate::common::limit(&r, "memory");
    assert_eq!(memory["value"], 64 << 20);
    assert_eq!(memory["enforced_by"], "engine");
    assert_eq!(memory["contained"], true);
    assert_no_container(&host, &r);

    // Positive control: the same step fits in 512 MiB.
    let (out, r) = launch(
        &step,
        step.runner(),
        &["--memory", "512MiB", "--", "python3", "-c", alloc],
    );
    out.expect_code(0);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(log(&r, "stdout"), format!("{}\n", 256 << 20));
    assert_no_container(&host, &r);
}

#[test]
#[cfg_attr(
    skip_engine_docker,
    ignore = "needs a Docker engine: eval \"$(bash .ci/engines/docker.sh start)\""
)]
fn docker_unchanged_step_reuses_its_image_and_rebuilds_a_deleted_one() {
    let Some(host) = docker_host() else { return };
    // A hostile step name: the image name is sanitized, nothing runs as shell code.
    let step = Step::named(
        &host,
        "Docker-IT-Cache'; touch PWNED; echo '$(id)",
        "docker-it-cache---touch-pwned--echo----id",
    );
    let home = tempfile::tempdir().expect("RUNNER_HOME");
    let in_home = || step.runner().env("RUNNER_HOME", home.path());
    let args = ["--", "python3", "main.py"];

    let (out, first) = launch(&step, in_home(), &args);
    out.expect_code(0);
    assert_eq!(first["cache"]["hit"], false);
    assert_eq!(first["stages"]["prepare"]["status"], "ok");
    let image = image_of(&step, &first);
    let id = image_id(&host, &image).unwrap_or_else(|| panic!("`{image}` was built"));

    let (out, second) = launch(&step, in_home(), &args);
    out.expect_code(0);
    assert_eq!(second["cache"]["hit"], true);
    assert_eq!(second["stages"]["prepare"]["status"], "cached");
    assert_eq!(image_of(&step, &second), image);
    assert_eq!(
        image_id(&host, &image).as_deref(),
        Some(id.as_str()),
        "same image"
    );
    assert_eq!(log(&second, "stdout"), "hello from /app\n");

    // The cache entry outlives its image: launch builds it again from the cached Dockerfile.
    docker(&host, &["rmi", "--force", &image]).expect("remove the image");
    let (out, third) = launch(&step, in_home(), &args);
    out.expect_code(0);
    assert_eq!(third["cache"]["hit"], true);
    assert!(
        log(&third, "stderr").contains("is gone although its cache entry is complete"),
        "{}",
        log(&third, "stderr")
    );
    assert_eq!(log(&third, "stdout"), "hello from /app\n");
    assert!(image_id(&host, &image).is_some(), "`{image}` is back");

    for r in [&first, &second, &third] {
        assert_no_container(&host, r);
    }
    let pwned: Vec<_> = [root(), step.source.path().to_path_buf()]
        .iter()
        .filter(|d| d.join("PWNED").exists())
        .cloned()
        .collect();
    assert!(
        pwned.is_empty(),
        "the step name ran as shell code: {pwned:?}"
    );
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[cfg_attr(
    skip_engine_docker,
    ignore = "needs a Docker engine: eval \"$(bash .ci/engines/docker.sh start)\""
)]
fn docker_cancel_stops_the_container() {
    let Some(host) = docker_host() else { return };
    let step = Step::new(&host, "docker-it-cancel");
    let home = tempfile::tempdir().expect("RUNNER_HOME");
    let marker = "sleep 1000.7373";
    let child = Command::new(assert_cmd::cargo::cargo_bin("runner"))
        .current_dir(root())
        .env("RUNNER_HOME", home.path())
        .env("DOCKER_HOST", &host)
        .args(["launch", "--json", "-q", MANIFEST, "--step", &step.name])
        .arg("--source")
        .arg(step.source.path())
        .args(["--", "sh", "-c", &format!("{marker}; echo not cancelled")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runner starts");

    // The run folder names the run; its container is `runner-RUN_ID`.
    let runs = home.path().join("runs");
    let mut run_id = String::new();
    wait_until("the run folder", || {
        let first = std::fs::read_dir(&runs)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok);
        if let Some(e) = first {
            run_id = e.file_name().to_string_lossy().into_owned();
        }
        !run_id.is_empty()
    });
    let container = format!("runner-{run_id}");
    wait_until("the container running the step", || {
        docker(
            &host,
            &["inspect", "--format", "{{.State.Running}}", &container],
        )
        .as_deref()
            == Some("true")
            && !processes_with(marker).is_empty()
    });

    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().expect("runner ends");
    let r: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no result JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(output.status.code(), Some(130), "{r}");
    assert_eq!(r["status"], "cancelled");
    assert_eq!(r["run_id"], run_id.as_str());
    assert_eq!(r["stages"]["cleanup"]["status"], "ok", "{r}");
    assert_no_container(&host, &r);
    assert_eq!(
        docker(&host, &["inspect", &container]),
        None,
        "`{container}` is gone"
    );
    wait_until("the step's processes to end", || {
        processes_with(marker).is_empty()
    });
    assert!(!log(&r, "stdout").contains("not cancelled"));
}

// ---- hostile input, against a fake `docker` ----

/// Records each invocation's arguments (NUL-separated) in `$FAKE_DOCKER_OUT/SUBCOMMAND`
/// and answers like an engine on which everything succeeds and nothing is OOM-killed.
const FAKE_DOCKER: &str = r#"#!/bin/sh
sub=$1
[ "$sub" = image ] && sub="image-$2"
printf '%s\0' "$@" > "$FAKE_DOCKER_OUT/$sub"
case "$sub" in
inspect) echo false ;;
run) echo "ran in the fake engine" ;;
esac
exit 0
"#;

const STEP_NAME: &str = "x'; touch PWNED1; echo '";

fn hostile_info() -> Value {
    json!({
        "step": {"name": STEP_NAME},
        "requirements": {
            "pip": ["$(touch PWNED2)", "a\nRUN touch /PWNED3", "x\"]\nRUN [\"touch\", \"/PWNED4"],
            "apt": ["-oAPT::Update::Pre-Invoke::=touch /PWNED5", "trailing\\", "`touch PWNED6`"],
            "parent_image": "evil\nRUN touch /PWNED7",
            "environment": {"MODE": "v'; touch PWNED8; echo '"}
        },
        "entrypoint": ["sh", "-c", "echo $(touch PWNED9)"]
    })
}

fn recorded(dir: &Path, sub: &str) -> Vec<String> {
    let bytes = std::fs::read(dir.join(sub))
        .unwrap_or_else(|e| panic!("the fake docker never ran `{sub}`: {e}"));
    let text = String::from_utf8(bytes).expect("utf-8 arguments");
    text.split_terminator('\0').map(str::to_string).collect()
}

fn pwned_in(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for d in dirs {
        for e in std::fs::read_dir(d).expect("list").flatten() {
            if e.file_name().to_string_lossy().starts_with("PWNED") {
                found.push(e.path());
            }
        }
    }
    for i in 1..=9 {
        let p = PathBuf::from(format!("/PWNED{i}"));
        if p.exists() {
            found.push(p);
        }
    }
    found
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn docker_hostile_values_stay_data() {
    if !needs_root() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (bin, calls, cwd, source) = (
        tmp.path().join("bin"),
        tmp.path().join("calls"),
        tmp.path().join("cwd"),
        tmp.path().join("src"),
    );
    for d in [&bin, &calls, &cwd, &source] {
        std::fs::create_dir(d).expect("mkdir");
    }
    let fake = bin.join("docker");
    std::fs::write(&fake, FAKE_DOCKER).expect("write the fake docker");
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&fake)
        .status()
        .expect("chmod");
    let info = tmp.path().join("step.json");
    let given = hostile_info();
    std::fs::write(&info, given.to_string()).expect("write step info");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let out = Runner::new()
        .current_dir(&cwd)
        .env("PATH", &path)
        .env("FAKE_DOCKER_OUT", &calls)
        .arg("launch")
        .args(["--json", "-q"])
        .arg(root().join(MANIFEST))
        .arg("--info")
        .arg(&info)
        .arg("--source")
        .arg(&source)
        .run();
    out.expect_code(0);
    let r = out.json();
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(log(&r, "stdout"), "ran in the fake engine\n");

    // The Dockerfile the prepare command wrote: every line a fixed instruction; the
    // values only inside JSON arrays, exactly as given; the parent image not at all.
    let cache = PathBuf::from(r["cache"]["path"].as_str().expect("cache path"));
    let dockerfile = std::fs::read_to_string(cache.join("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = dockerfile.lines().collect();
    assert_eq!(lines.len(), 9, "{dockerfile}");
    assert_eq!(lines[1..3], ["ARG BASE_IMAGE", "FROM ${BASE_IMAGE}"]);
    assert_eq!(lines[3], r#"RUN ["apt-get", "update"]"#);
    assert!(lines[5].starts_with("RUN python3 -m pip --version "));
    assert_eq!(lines[7..], ["COPY . /app", "WORKDIR /app"]);
    for (line, list) in [(lines[4], "apt"), (lines[6], "pip")] {
        let json = line.strip_prefix("RUN ").expect("a RUN instruction");
        let argv: Vec<String> = serde_json::from_str(json).expect("exec form is a JSON array");
        let dash = argv
            .iter()
            .position(|a| a == "--")
            .expect("`--` ends options");
        assert_eq!(
            json!(argv[dash + 1..]),
            given["requirements"][list],
            "{line}"
        );
    }
    assert!(!dockerfile.contains("evil"), "{dockerfile}");

    // What `docker build` and `docker run` received, argument by argument.
    let build = recorded(&calls, "build");
    let base = format!(
        "BASE_IMAGE={}",
        given["requirements"]["parent_image"].as_str().unwrap()
    );
    assert!(build.contains(&base), "{build:?}");
    let tag = &build[build.iter().position(|a| a == "--tag").expect("--tag") + 1];
    let key = r["cache"]["key"].as_str().unwrap();
    assert_eq!(tag, &format!("steprunner/x---touch-pwned1--echo:{key}"));
    assert_eq!(build.last().map(PathBuf::from), Some(source.clone()));

    let run = recorded(&calls, "run");
    let env_at = run.iter().position(|a| a == "-e").expect("-e");
    assert_eq!(run[env_at + 1], "MODE=v'; touch PWNED8; echo '");
    let image_at = run.iter().position(|a| a == tag).expect("the image");
    // The measuring wrapper, then the entrypoint as its arguments, untouched.
    let wrapper = &run[image_at + 1..image_at + 5];
    assert_eq!([&wrapper[0], &wrapper[1], &wrapper[3]], ["sh", "-c", "sh"]);
    assert!(
        wrapper[2].starts_with("rm -f /tmp/.steprunner-usage\n"),
        "{wrapper:?}"
    );
    assert_eq!(
        json!(run[image_at + 5..]),
        given["entrypoint"],
        "the entrypoint follows the wrapper untouched"
    );
    assert_eq!(recorded(&calls, "rm")[..2], ["rm", "--force"]);

    let left = pwned_in(&[cwd, source, root(), tmp.path().to_path_buf()]);
    assert!(left.is_empty(), "a hostile value ran as code: {left:?}");
}
