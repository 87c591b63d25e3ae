//! The `slurm` flavor against a real single-node Slurm cluster: the step runs as a
//! batch job and the runner reports what the job did. Start the cluster with
//! `eval "$(bash .ci/engines/slurm.sh start)"` (it sets `SLURM_CONF` and
//! `STEPRUNNER_SLURM`); without it these tests skip, saying so, and with `CI=true`
//! they fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::{Output, Runner, limit};

const MANIFEST: &str = "manifests/slurm.yaml";

fn needs_slurm() -> bool {
    crate::common::engine_var("STEPRUNNER_SLURM", "slurm").is_some()
}

/// `runner launch --json -q MANIFEST ARGS…`: the output and the parsed result.
fn launch(args: &[&str]) -> (Output, Value) {
    let out = Runner::new()
        .args(["launch", "--json", "-q", MANIFEST])
        .args(args)
        .run();
    let result = out.json();
    (out, result)
}

fn run_dir(result: &Value) -> PathBuf {
    let stdout = result["logs"]["stdout"].as_str().expect("logs.stdout");
    Path::new(stdout)
        .parent()
        .expect("run folder")
        .to_path_buf()
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `KEY=value` from the last `scontrol show job` record the flavor saved.
fn job_field(run: &Path, key: &str) -> String {
    let record = read(run.join("slurm-job-state"));
    record
        .split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no `{key}` in the job record: {record}"))
        .to_string()
}

/// `squeue` lines (any state it lists: pending, running, completing) for a job id or name.
fn in_queue(selector: &str) -> String {
    let out = Command::new("squeue")
        .args(["--noheader", "--format=%i %j %T", selector])
        .output()
        .expect("squeue runs");
    assert!(
        out.status.success(),
        "squeue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
#[cfg_attr(
    skip_engine_slurm,
    ignore = "needs a Slurm cluster: eval \"$(bash .ci/engines/slurm.sh start)\""
)]
fn slurm_step_output_exit_code_and_resources_come_back() {
    if !needs_slurm() {
        return;
    }
    // Arguments that a shell would mangle reach the step unchanged; the last line
    // has no newline; stdout and stderr stay apart.
    let step = r#"printf '%s\n' "$@"; echo err >&2; printf 'no newline'"#;
    let (out, r) = launch(&[
        "--step",
        "train model/v1",
        "--memory",
        "100MiB",
        "--cpus",
        "1.5",
        "--",
        "sh",
        "-c",
        step,
        "sh",
        "a  b",
        "$(id)",
        "--help",
    ]);
    out.expect_code(0);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["flavor"], "slurm");
    let run = run_dir(&r);
    assert_eq!(
        read(run.join("stdout.log")),
        "a  b\n$(id)\n--help\nno newline"
    );
    assert_eq!(read(run.join("stderr.log")), "err\n");
    assert_eq!(r["logs"]["stdout_bytes"], 28);
    // The job got the step's name (made safe) and resources.
    assert_eq!(job_field(&run, "JobState"), "COMPLETED");
    assert_eq!(job_field(&run, "JobName"), "train_model_v1");
    assert_eq!(job_field(&run, "MinMemoryNode"), "100M");
    assert_eq!(job_field(&run, "NumCPUs"), "2", "1.5 CPUs ask for 2");
    assert_eq!(
        job_field(&run, "TimeLimit"),
        "01:00:00",
        "the default time limit"
    );

    let (out, r) = launch(&["--", "sh", "-c", "echo before; exit 3"]);
    out.expect_code(3);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(read(run_dir(&r).join("stdout.log")), "before\n");
    assert_eq!(job_field(&run_dir(&r), "JobState"), "FAILED");
}

#[test]
#[cfg_attr(
    skip_engine_slurm,
    ignore = "needs a Slurm cluster: eval \"$(bash .ci/engines/slurm.sh start)\""
)]
fn slurm_a_job_sbatch_refuses_is_reported() {
    if !needs_slurm() {
        return;
    }
    let (out, r) = launch(&["--set", "partition=no-such-partition", "--", "true"]);
    out.expect_code(125);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["message"], "sbatch could not submit the job");
    let stderr = read(run_dir(&r).join("stderr.log"));
    assert!(
        stderr.contains("invalid partition"),
        "sbatch says why: {stderr}"
    );
    assert_eq!(r["stages"]["cleanup"]["status"], "ok", "{r}");
}

#[test]
#[cfg_attr(
    skip_engine_slurm,
    ignore = "needs a Slurm cluster: eval \"$(bash .ci/engines/slurm.sh start)\""
)]
fn slurm_job_over_its_memory_is_oom_killed() {
    if !needs_slurm() {
        return;
    }
    let (out, r) = launch(&[
        "--memory",
        "64MiB",
        "--",
        "python3",
        "-c",
        // Not the local OOM test's text: its check for leftover processes would see ours.
        "b = bytearray(256 * 1024 * 1024); print(len(b))",
    ]);
    out.expect_code(137);
    assert_eq!(r["status"], "oom_killed", "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("OUT_OF_MEMORY"),
        "{r}"
    );
    let run = run_dir(&r);
    assert_eq!(job_field(&run, "JobState"), "OUT_OF_MEMORY");
    assert_eq!(
        read(run.join("stdout.log")),
        "",
        "the allocation never finished"
    );
    assert!(
        read(run.join("stderr.log")).contains("oom-kill event"),
        "Slurm's own note reaches stderr.log"
    );
    // The job's own counter and limit, not the poller's.
    assert_eq!(r["measured_by"], "engine");
    assert!(r["oom_kills"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(limit(&r, "memory")["value"], 64 << 20, "{r}");
}

/// The job's numbers, not its poller's: a step holding 160 MiB reports a peak within
/// 20 % of it, and the job's memory and CPU limits as Slurm's cgroups held them.
#[test]
#[cfg_attr(
    skip_engine_slurm,
    ignore = "needs a Slurm cluster: eval \"$(bash .ci/engines/slurm.sh start)\""
)]
fn slurm_reports_the_jobs_use_not_its_pollers() {
    if !needs_slurm() {
        return;
    }
    let hold = "import time; b = bytearray(160 << 20); time.sleep(0.3)";
    let (out, r) = launch(&[
        "--memory", "512MiB", "--cpus", "1", "--", "python3", "-c", hold,
    ]);
    out.expect_code(0);
    assert_eq!(r["measured_by"], "engine");
    let peak = r["peak_memory_bytes"]
        .as_u64()
        .expect("the job measured a peak") as f64;
    let held = (160u64 << 20) as f64;
    assert!(peak >= held && peak <= held * 1.2, "peak {peak}: {r}");
    let client = r["client"]["peak_memory_bytes"]
        .as_u64()
        .expect("client measured");
    assert!(
        (client as f64) < held / 2.0,
        "the poller is not the step: {r}"
    );
    let memory = limit(&r, "memory");
    assert_eq!(memory["value"], 512 << 20);
    assert_eq!(memory["enforced_by"], "engine");
    // As root the job could rewrite its cgroup's limits: not contained, and said so.
    assert_eq!(memory["contained"], nix::unistd::geteuid().as_raw() != 0);
    assert_eq!(limit(&r, "cpus")["value"], 1);
}

/// pip requirements are installed into an environment the job runs in (cached per
/// requirement set), `requirements.environment` reaches the job as data, and a
/// secret reaches it through the environment only.
#[test]
#[cfg_attr(
    skip_engine_slurm,
    ignore = "needs a Slurm cluster: eval \"$(bash .ci/engines/slurm.sh start)\""
)]
fn slurm_requirements_and_environment_reach_the_job() {
    if !needs_slurm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("PWNED");
    let info = dir.path().join("info.json");
    let hostile = format!("a b'c $(touch {})", marker.display());
    let show = "import six, os; print(six.__version__, os.environ['MODE'], os.environ['SECRET'])";
    std::fs::write(
        &info,
        serde_json::json!({
            "step": {"name": "req"},
            "requirements": {"pip": ["six==1.16.0"], "environment": {"MODE": hostile}},
            "entrypoint": ["python3", "-c", show],
        })
        .to_string(),
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let run = |expect_hit: bool| {
        let out = Runner::new()
            .env("RUNNER_HOME", home.path())
            .env("SECRET", "s3cret-value")
            .args(["launch", "--json", "-q", MANIFEST, "--info"])
            .arg(&info)
            .args(["--env", "SECRET"])
            .run();
        out.expect_code(0);
        let r = out.json();
        assert_eq!(r["cache"]["hit"], expect_hit, "{r}");
        let dir = run_dir(&r);
        assert_eq!(
            read(dir.join("stdout.log")),
            format!("1.16.0 {hostile} s3cret-value\n"),
            "the required version, not the host's"
        );
        for file in ["slurm-job-state", "plan.json", "slurm-batch.sh"] {
            assert!(
                !read(dir.join(file)).contains("s3cret"),
                "the secret is in {file}"
            );
        }
    };
    run(false);
    run(true);
    assert!(!marker.exists(), "a requirement's value ran as code");
}

/// Two nodes: one task on each; a step pinned to a node runs there.
#[test]
#[cfg_attr(
    skip_engine_slurm,
    ignore = "needs a Slurm cluster: eval \"$(bash .ci/engines/slurm.sh start)\""
)]
fn slurm_two_node_jobs_and_pinned_steps() {
    if !needs_slurm() {
        return;
    }
    let where_ = r#"echo "task $SLURM_PROCID on $SLURMD_NODENAME""#;
    let (out, r) = launch(&["--set", "nodes=2", "--", "sh", "-c", where_]);
    out.expect_code(0);
    let mut lines: Vec<String> = read(run_dir(&r).join("stdout.log"))
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(lines, ["task 0 on n1", "task 1 on n2"], "{r}");
    assert_eq!(job_field(&run_dir(&r), "NumNodes"), "2");

    let (out, r) = launch(&["--set", "nodelist=n2", "--", "sh", "-c", where_]);
    out.expect_code(0);
    assert_eq!(read(run_dir(&r).join("stdout.log")), "task 0 on n2\n");
    assert_eq!(job_field(&run_dir(&r), "BatchHost"), "n2");
}

/// Slurm checks time limits about every 30 s and counts them in minutes, so this
/// job ends 60 to 90 s after it starts.
#[test]
#[cfg_attr(
    skip_engine_slurm,
    ignore = "needs a Slurm cluster: eval \"$(bash .ci/engines/slurm.sh start)\""
)]
fn slurm_job_over_its_time_limit_is_timed_out() {
    if !needs_slurm() {
        return;
    }
    let (out, r) = launch(&["--set", "time_limit=1", "--", "sleep", "600"]);
    out.expect_code(124);
    assert_eq!(r["status"], "timed_out", "{r}");
    let run = run_dir(&r);
    assert_eq!(job_field(&run, "JobState"), "TIMEOUT");
    assert_eq!(job_field(&run, "TimeLimit"), "00:01:00");
    assert!(
        read(run.join("stderr.log")).contains("DUE TO TIME LIMIT"),
        "Slurm's own note reaches stderr.log"
    );
}

/// Start `runner launch` in the background on the slurm flavor.
fn spawn_runner(home: &Path, args: &[&str]) -> std::process::Child {
    crate::common::spawn_runner(home, &[&[MANIFEST], args].concat())
}

/// A step that says it runs, then ignores SIGTERM and sleeps: Slurm must SIGKILL it.
fn stubborn_step(ready: &Path) -> String {
    format!(
        "trap '' TERM; touch {}; while :; do sleep 1; done",
        ready.display()
    )
}

#[test]
#[cfg_attr(
    skip_engine_slurm,
    ignore = "needs a Slurm cluster: eval \"$(bash .ci/engines/slurm.sh start)\""
)]
fn slurm_cancelling_the_runner_cancels_the_job() {
    if !needs_slurm() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ready = tmp.path().join("ready");
    let name = format!("cancel-{}", std::process::id());
    let step = stubborn_step(&ready);
    let child = spawn_runner(home.path(), &["--step", &name, "--", "sh", "-c", &step]);
    // Jobs start on Slurm's schedule: allow a minute.
    crate::common::wait_for(&ready, Duration::from_secs(60));
    assert_ne!(in_queue(&format!("--name={name}")), "", "the job runs");
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
    assert_eq!(r["stages"]["cleanup"]["status"], "ok", "{r}");
    assert_eq!(
        read(run_dir(&r).join("stderr.log")),
        "",
        "nothing but the step's output in its log"
    );
    let job = read(run_dir(&r).join("slurm-job-id"));
    assert_eq!(in_queue(&format!("--jobs={}", job.trim())), "");
    assert_eq!(in_queue(&format!("--name={name}")), "", "no job is left");
}

/// The runner's own timeout (queueing included) cancels the job, whether it still
/// waits in the queue or already runs.
#[test]
#[cfg_attr(
    skip_engine_slurm,
    ignore = "needs a Slurm cluster: eval \"$(bash .ci/engines/slurm.sh start)\""
)]
fn slurm_runner_timeout_cancels_the_job() {
    if !needs_slurm() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("runner-timeout-{}", std::process::id());
    let step = stubborn_step(&tmp.path().join("ready"));
    let child = spawn_runner(
        home.path(),
        &[
            "--step",
            &name,
            "--set",
            "timeout=5s",
            "--",
            "sh",
            "-c",
            &step,
        ],
    );
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(r["status"], "timed_out");
    assert_eq!(r["stages"]["cleanup"]["status"], "ok", "{r}");
    assert_eq!(in_queue(&format!("--name={name}")), "", "no job is left");
}

/// When `scontrol` keeps failing (the controller is gone) the launch stops waiting
/// after 60 looks instead of hanging, and cleanup still cancels the job.
#[test]
#[cfg_attr(
    skip_engine_slurm,
    ignore = "needs a Slurm cluster: eval \"$(bash .ci/engines/slurm.sh start)\""
)]
fn slurm_a_lost_controller_ends_the_wait_and_the_job() {
    if !needs_slurm() {
        return;
    }
    let fake = tempfile::tempdir().unwrap();
    let scontrol = fake.path().join("scontrol");
    std::fs::write(
        &scontrol,
        "#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &scontrol,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let name = format!("lost-controller-{}", std::process::id());
    let out = Runner::new()
        .env("PATH", path)
        .args(["launch", "--json", "-q", MANIFEST, "--step", &name])
        .args(["--set", "poll_interval=0.1", "--", "sleep", "600"])
        .run();
    out.expect_code(125);
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r["status"], "failed");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("lost the Slurm controller"),
        "{r}"
    );
    assert!(
        read(run_dir(&r).join("stderr.log")).contains("Unable to contact"),
        "the last error reaches stderr.log"
    );
    assert_eq!(r["stages"]["cleanup"]["status"], "ok", "{r}");
    assert_eq!(in_queue(&format!("--name={name}")), "", "no job is left");
}
