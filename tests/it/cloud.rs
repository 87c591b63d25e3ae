//! The cloud flavors (`kubernetes`, `sagemaker`, `vertex`) end to end against fake
//! `kubectl`, `aws` and `gcloud` programs (`tests/fixtures/fakes/`) put first on PATH.
//! The fakes refuse (exit 2) any argument they do not expect and play back a scenario:
//! success, failure with an exit code, OOM, timeout, or a job that never ends. Each test
//! checks what a user sees (exit code, result JSON, `stdout.log`) and what the fake was
//! asked to do (its call log and the job spec it received).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::{Output, Runner, root};

const ENTRYPOINT: [&str; 4] = ["python3", "train.py", "--epochs", "3 4"];
const OUTPUT: &str = "fake job ran: [\"python3\", \"train.py\", \"--epochs\", \"3 4\"]\n";
const LAST_LINE: &str = "epoch 1/1: loss 0.25\n";

/// One cloud flavor: its manifest, the settings the tests give it, its CLI.
struct Flavor {
    manifest: &'static str,
    settings: &'static [&'static str],
    cli: &'static str,
}

const KUBERNETES: Flavor = Flavor {
    manifest: "manifests/kubernetes.yaml",
    settings: &[
        "namespace=ml",
        "image=registry.example/train:1",
        "service_account=trainer",
        "timeout=1h",
        "poll_interval=1s",
    ],
    cli: "kubectl",
};

const SAGEMAKER: Flavor = Flavor {
    manifest: "manifests/sagemaker.yaml",
    settings: &[
        "image=123456789012.dkr.ecr.eu-west-1.amazonaws.com/train:1",
        "instance_type=ml.g5.xlarge",
        "role_arn=arn:aws:iam::123456789012:role/sagemaker",
        "output_path=s3://bucket/out",
        "region=eu-west-1",
        "timeout=1h",
        "poll_interval=1s",
    ],
    cli: "aws",
};

const VERTEX: Flavor = Flavor {
    manifest: "manifests/vertex.yaml",
    settings: &[
        "image=europe-docker.pkg.dev/proj/train:1",
        "machine_type=g2-standard-8",
        "accelerator_type=NVIDIA_L4",
        "region=europe-west4",
        "project=proj-1",
        "timeout=1h",
        "poll_interval=1s",
    ],
    cli: "gcloud",
};

/// A fake CLI's state folder and the environment that points the runner at the fakes.
struct Fake {
    dir: TempDir,
    /// Where the runner runs: a hostile value that ran as shell code would leave files here.
    cwd: TempDir,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            dir: tempfile::tempdir().expect("fake state folder"),
            cwd: tempfile::tempdir().expect("working folder"),
        }
    }

    fn path_env() -> String {
        let fakes = root().join("tests/fixtures/fakes");
        format!(
            "{}:{}",
            fakes.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    fn env(&self, scenario: &str) -> Vec<(String, String)> {
        vec![
            ("PATH".into(), Fake::path_env()),
            ("FAKE_DIR".into(), self.dir.path().display().to_string()),
            ("FAKE_SCENARIO".into(), scenario.into()),
            ("FAKE_EXIT_CODE".into(), "42".into()),
            ("FAKE_POLLS".into(), "1".into()),
        ]
    }

    /// Every invocation of a fake, in order.
    fn calls(&self) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(self.dir.path().join("calls.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("a call log line"))
            .collect()
    }

    /// What the fake was asked to create: the Job, or the training/custom job request.
    fn received(&self, name: &str) -> Value {
        let path = self.dir.path().join(name);
        let text =
            std::fs::read(&path).unwrap_or_else(|e| panic!("the fake received no `{name}`: {e}"));
        serde_json::from_slice(&text).expect("the fake saved JSON")
    }

    fn pwned(&self) -> Vec<String> {
        std::fs::read_dir(self.cwd.path())
            .expect("list the working folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }
}

fn args(flavor: &Flavor, extra: &[&str]) -> Vec<String> {
    let mut out = vec![root().join(flavor.manifest).display().to_string()];
    for s in flavor.settings {
        out.extend(["--set".to_string(), s.to_string()]);
    }
    out.extend(extra.iter().map(|s| s.to_string()));
    out.push("--".into());
    out.extend(ENTRYPOINT.iter().map(|s| s.to_string()));
    out
}

/// `runner launch --json -q` of `flavor` in `scenario`: output, result, run folder.
fn launch(
    fake: &Fake,
    flavor: &Flavor,
    scenario: &str,
    extra: &[&str],
) -> (Output, Value, PathBuf) {
    let mut r = Runner::new().current_dir(fake.cwd.path());
    for (k, v) in fake.env(scenario) {
        r = r.env(k, v);
    }
    let out = r
        .args(["launch", "--json", "-q"])
        .args(args(flavor, extra))
        .run();
    let result = out.json();
    let run = Path::new(result["logs"]["stdout"].as_str().expect("stdout log"))
        .parent()
        .expect("run folder")
        .to_path_buf();
    (out, result, run)
}

fn stdout_log(run: &Path) -> String {
    std::fs::read_to_string(run.join("stdout.log")).expect("stdout.log")
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `runner-train-model-XXXXXXXX`, the last part being the end of the run id.
#[track_caller]
fn assert_job_name(name: &str, result: &Value) {
    let run_id = result["run_id"].as_str().expect("run_id");
    assert_eq!(
        name,
        format!("runner-train-model-{}", &run_id[run_id.len() - 8..])
    );
}

/// The result of a scenario, checked the same way for every flavor.
#[track_caller]
fn assert_outcome(scenario: &str, out: &Output, r: &Value, run: &Path) {
    let (code, status) = match scenario {
        "success" => (0, "succeeded"),
        "failure" => (42, "failed"),
        "oom" => (137, "oom_killed"),
        "timeout" => (124, "timed_out"),
        _ => unreachable!(),
    };
    out.expect_code(code);
    assert_eq!(r["status"], status, "{r:#}");
    assert_eq!(r["exit_code"], code, "{r:#}");
    let log = stdout_log(run);
    if scenario == "success" {
        assert_eq!(log, format!("{OUTPUT}{LAST_LINE}"));
    } else if scenario != "timeout" {
        assert_eq!(log, OUTPUT);
    }
    let message = r["message"].as_str().unwrap_or_default();
    let expect = match scenario {
        "success" => "completed",
        "failure" => "42",
        "oom" => "memory",
        _ => "",
    };
    assert!(
        message.contains(expect),
        "message `{message}` lacks `{expect}`"
    );
    assert_eq!(r["stages"]["cleanup"]["status"], "ok", "{r:#}");
}

// ---- kubernetes ----

fn kubernetes(scenario: &str) {
    let fake = Fake::new();
    let (out, r, run) = launch(
        &fake,
        &KUBERNETES,
        scenario,
        &[
            "--step",
            "Train Model",
            "--memory",
            "512MiB",
            "--cpus",
            "1.5",
            "--gpus",
            "1",
        ],
    );
    assert_outcome(scenario, &out, &r, &run);

    let job = fake.received("job.json");
    let name = job["metadata"]["name"].as_str().expect("name").to_string();
    assert_job_name(&name, &r);
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(run.join("job.json")).expect("job.json in the run"))
            .expect("JSON");
    assert_eq!(
        on_disk, job,
        "the Job file in the run folder is what was applied"
    );
    assert_eq!(job["metadata"]["namespace"], "ml");
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 3600);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "trainer");
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "registry.example/train:1");
    assert_eq!(c["command"], json!(ENTRYPOINT));
    let want = json!({"cpu": "1500m", "memory": "512Mi", "nvidia.com/gpu": "1"});
    assert_eq!(c["resources"], json!({"requests": want, "limits": want}));

    let kube = |rest: &[&str]| {
        let mut v = strings(&["kubectl", "--namespace", "ml"]);
        v.extend(strings(rest));
        v
    };
    let job_file = run.join("job.json").display().to_string();
    let conditions =
        r#"jsonpath={range .status.conditions[?(@.status=="True")]}{.type}={.reason}{" "}{end}"#;
    let mut want = vec![
        kube(&["apply", "-f", &job_file]),
        kube(&[
            "logs",
            "-f",
            &format!("job/{name}"),
            "--pod-running-timeout=600s",
        ]),
        // FAKE_POLLS=1: the first look sees the Job running.
        kube(&["get", "job", &name, "-o", conditions]),
        kube(&["get", "job", &name, "-o", conditions]),
    ];
    if matches!(scenario, "failure" | "oom") {
        want.push(kube(&[
            "get",
            "pods",
            "-l",
            &format!("job-name={name}"),
            "-o",
            "jsonpath={range .items[*]}{.status.containerStatuses[0].state.terminated.exitCode}={.status.containerStatuses[0].state.terminated.reason}{\" \"}{end}",
        ]));
    }
    want.push(kube(&[
        "delete",
        "job",
        &name,
        "--ignore-not-found",
        "--wait=false",
    ]));
    assert_eq!(fake.calls(), want);
}

#[test]
fn kubernetes_success() {
    kubernetes("success");
}

#[test]
fn kubernetes_failure_passes_the_exit_code_through() {
    kubernetes("failure");
}

#[test]
fn kubernetes_oom() {
    kubernetes("oom");
}

#[test]
fn kubernetes_timeout() {
    kubernetes("timeout");
}

#[test]
fn kubernetes_environment_comes_from_a_secret_never_the_job_file() {
    let fake = Fake::new();
    let secret = "s3cr3t-value-7781";
    let mut r = Runner::new()
        .current_dir(fake.cwd.path())
        .env("WANDB_API_KEY", secret);
    for (k, v) in fake.env("success") {
        r = r.env(k, v);
    }
    // Without a Secret to read it from, nothing is submitted.
    let out = r
        .args(["launch", "--json", "-q", "--env", "WANDB_API_KEY"])
        .args(args(&KUBERNETES, &[]))
        .run();
    out.expect_code(2);
    let r = out.json();
    assert_eq!(r["status"], "failed");
    let message = r["message"].as_str().unwrap_or_default();
    assert!(message.contains("set `env_from_secret`"), "{r:#}");
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());

    let mut r = Runner::new()
        .current_dir(fake.cwd.path())
        .env("WANDB_API_KEY", secret);
    for (k, v) in fake.env("success") {
        r = r.env(k, v);
    }
    let out = r
        .args(["launch", "--json", "-q", "--env", "WANDB_API_KEY"])
        .args(args(
            &KUBERNETES,
            &["--set", "env_from_secret=train-secrets"],
        ))
        .run();
    out.expect_code(0);
    let job = fake.received("job.json");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "train-secrets", "key": "WANDB_API_KEY"}}}])
    );
    assert!(!job.to_string().contains(secret));
}

// ---- sagemaker ----

fn sagemaker(scenario: &str) {
    let fake = Fake::new();
    let (out, r, run) = launch(&fake, &SAGEMAKER, scenario, &["--step", "Train Model"]);
    assert_outcome(scenario, &out, &r, &run);

    let req = fake.received("request.json");
    let name = req["TrainingJobName"].as_str().expect("name").to_string();
    assert_job_name(&name, &r);
    assert_eq!(
        req["AlgorithmSpecification"],
        json!({
            "ContainerArguments": ["train.py", "--epochs", "3 4"],
            "ContainerEntrypoint": ["python3"],
            "TrainingImage": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/train:1",
            "TrainingInputMode": "File",
        })
    );
    assert_eq!(
        req["ResourceConfig"],
        json!({"InstanceCount": 1, "InstanceType": "ml.g5.xlarge", "VolumeSizeInGB": 30})
    );
    assert_eq!(
        req["StoppingCondition"],
        json!({"MaxRuntimeInSeconds": 3600})
    );
    assert_eq!(req["RoleArn"], "arn:aws:iam::123456789012:role/sagemaker");
    assert_eq!(
        req["OutputDataConfig"],
        json!({"S3OutputPath": "s3://bucket/out"})
    );

    let calls = fake.calls();
    let region = strings(&["aws", "--region", "eu-west-1"]);
    for c in &calls {
        assert_eq!(c[..3], region[..], "{c:?}");
    }
    let ops: Vec<String> = calls.iter().map(|c| c[4].clone()).collect();
    let poll = |q: &str| {
        let mut v = region.clone();
        v.extend(strings(&[
            "sagemaker",
            "describe-training-job",
            "--training-job-name",
            &name,
            "--query",
            q,
            "--output",
            "text",
        ]));
        v
    };
    assert_eq!(calls[1], poll("[TrainingJobStatus, SecondaryStatus]"));
    let mut logs = region.clone();
    logs.extend(strings(&[
        "logs",
        "filter-log-events",
        "--log-group-name",
        "/aws/sagemaker/TrainingJobs",
        "--log-stream-name-prefix",
        &format!("{name}/"),
        "--query",
        "events[].[message]",
        "--output",
        "text",
    ]));
    assert_eq!(calls[3], logs);
    let mut want = strings(&[
        "create-training-job",
        "describe-training-job",
        "describe-training-job",
        "filter-log-events",
    ]);
    if scenario != "success" {
        assert_eq!(calls[4], poll("FailureReason"));
        want.push("describe-training-job".into());
    }
    // Cleanup looks, sees the job ended, and stops nothing.
    assert_eq!(calls.last(), Some(&poll("TrainingJobStatus")));
    want.push("describe-training-job".into());
    assert_eq!(ops, want);
}

#[test]
fn sagemaker_success() {
    sagemaker("success");
}

#[test]
fn sagemaker_failure_passes_the_exit_code_through() {
    sagemaker("failure");
}

#[test]
fn sagemaker_oom() {
    sagemaker("oom");
}

#[test]
fn sagemaker_timeout() {
    sagemaker("timeout");
}

// ---- vertex ----

fn vertex(scenario: &str) {
    let fake = Fake::new();
    let (out, r, run) = launch(
        &fake,
        &VERTEX,
        scenario,
        &["--step", "Train Model", "--gpus", "2"],
    );
    assert_outcome(scenario, &out, &r, &run);

    let req = fake.received("request.json");
    assert_job_name(req["displayName"].as_str().expect("display name"), &r);
    assert_eq!(req["region"], "europe-west4");
    assert_eq!(
        req["jobSpec"],
        json!({
            "scheduling": {"timeout": "3600s"},
            "workerPoolSpecs": [{
                "containerSpec": {
                    "command": ENTRYPOINT,
                    "env": [],
                    "imageUri": "europe-docker.pkg.dev/proj/train:1",
                },
                "machineSpec": {
                    "acceleratorCount": 2,
                    "acceleratorType": "NVIDIA_L4",
                    "machineType": "g2-standard-8",
                },
                "replicaCount": 1,
            }],
        })
    );

    let job = "projects/123456789012/locations/europe-west4/customJobs/4242";
    let gc = |rest: &[&str]| {
        let mut v = strings(&["gcloud", "--project", "proj-1"]);
        v.extend(strings(rest));
        v
    };
    let describe = |fmt: &str| {
        gc(&[
            "ai",
            "custom-jobs",
            "describe",
            job,
            "--region=europe-west4",
            &format!("--format={fmt}"),
        ])
    };
    let mut want = vec![
        gc(&[
            "ai",
            "custom-jobs",
            "create",
            "--region=europe-west4",
            &format!("--display-name={}", req["displayName"].as_str().unwrap()),
            &format!("--config={}", run.join("custom-job.json").display()),
            "--format=value(name)",
        ]),
        describe("value(state)"),
        describe("value(state)"),
        gc(&[
            "logging",
            "read",
            "resource.type=ml_job AND resource.labels.job_id=4242",
            "--order=asc",
            "--format=value(textPayload)",
        ]),
    ];
    if scenario != "success" {
        want.push(describe("value(error.code)"));
        want.push(describe("value(error.message)"));
    }
    // Cleanup looks, sees the job ended, and cancels nothing.
    want.push(describe("value(state)"));
    assert_eq!(fake.calls(), want);
}

#[test]
fn vertex_success() {
    vertex("success");
}

#[test]
fn vertex_failure_passes_the_exit_code_through() {
    vertex("failure");
}

#[test]
fn vertex_oom() {
    vertex("oom");
}

#[test]
fn vertex_timeout() {
    vertex("timeout");
}

// ---- hostile values ----

const STEP: &str = "x'; touch PWNED1; echo '$(touch PWNED2)`touch PWNED3`";
const NOTE: &str = "a\"b'c $(touch PWNED4) \\n";
const IMAGE: &str = "img:1 $(touch PWNED5)";

/// A hostile step name, requirement, environment value and image: the job spec the fake
/// parses is valid JSON holding them verbatim, and none ran as shell code.
fn hostile(flavor: &Flavor, spec: &str) -> Value {
    let fake = Fake::new();
    let info = fake.cwd.path().join("step.json");
    let step = json!({
        "requirements": {"parent_image": IMAGE, "environment": {"NOTE": NOTE}},
    });
    std::fs::write(&info, step.to_string()).expect("write step info");
    let info = info.display().to_string();
    let (out, r, _) = launch(
        &fake,
        flavor,
        "success",
        &["--info", &info, "--step", STEP, "-r", "$(touch PWNED6)"],
    );
    out.expect_code(0);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(
        fake.pwned(),
        vec!["step.json".to_string()],
        "a hostile value ran as shell code"
    );
    let got = fake.received(spec);
    let name = match flavor.cli {
        "kubectl" => got["metadata"]["name"].clone(),
        "aws" => got["TrainingJobName"].clone(),
        _ => got["displayName"].clone(),
    };
    let run_id = r["run_id"].as_str().unwrap();
    assert_eq!(
        name,
        format!(
            "runner-x-touch-pwned1-echo-touch-pwned2-touch-pwned3-{}",
            &run_id[run_id.len() - 8..]
        )
    );
    got
}

#[test]
fn kubernetes_hostile_values_stay_data() {
    let job = hostile(&KUBERNETES, "job.json");
    assert_eq!(job["metadata"]["annotations"]["steprunner/step"], STEP);
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], IMAGE);
    assert_eq!(c["env"], json!([{"name": "NOTE", "value": NOTE}]));
}

#[test]
fn sagemaker_hostile_values_stay_data() {
    let req = hostile(&SAGEMAKER, "request.json");
    assert_eq!(req["AlgorithmSpecification"]["TrainingImage"], IMAGE);
    assert_eq!(req["Environment"], json!({"NOTE": NOTE}));
}

#[test]
fn vertex_hostile_values_stay_data() {
    let req = hostile(&VERTEX, "request.json");
    let c = &req["jobSpec"]["workerPoolSpecs"][0]["containerSpec"];
    assert_eq!(c["imageUri"], IMAGE);
    assert_eq!(c["env"], json!([{"name": "NOTE", "value": NOTE}]));
}

// ---- cancel ----

/// SIGINT to the runner while it polls a job that never ends: the runner reports
/// `cancelled` (130) and cleanup deletes, stops or cancels the job. Returns the calls.
fn cancel(flavor: &Flavor, poll: &str) -> Vec<Vec<String>> {
    let fake = Fake::new();
    let home = tempfile::tempdir().expect("RUNNER_HOME");
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("runner"));
    cmd.current_dir(fake.cwd.path())
        .env("RUNNER_HOME", home.path())
        .args(["launch", "--json", "-q"])
        .args(args(flavor, &["--step", "Train Model"]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in fake.env("running") {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("runner starts");
    // Wait for the first status poll (a guard against hanging, not a measurement).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fake.calls().iter().any(|c| c.iter().any(|a| a == poll)) {
        assert!(
            Instant::now() < deadline,
            "no `{poll}` call: {:?}",
            fake.calls()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().expect("runner ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    let r: Value = serde_json::from_slice(&output.stdout).expect("result JSON");
    assert_eq!(r["status"], "cancelled");
    assert_eq!(r["stages"]["cleanup"]["status"], "ok", "{r:#}");
    fake.calls()
}

#[test]
fn kubernetes_cancel_deletes_the_job() {
    let calls = cancel(&KUBERNETES, "get");
    let last = calls.last().expect("calls");
    assert_eq!(last[3..5], strings(&["delete", "job"])[..], "{calls:?}");
    assert!(last[5].starts_with("runner-train-model-"), "{last:?}");
}

#[test]
fn sagemaker_cancel_stops_the_job() {
    let calls = cancel(&SAGEMAKER, "describe-training-job");
    let last = calls.last().expect("calls");
    assert_eq!(
        last[3..5],
        strings(&["sagemaker", "stop-training-job"])[..],
        "{calls:?}"
    );
    assert!(last[6].starts_with("runner-train-model-"), "{last:?}");
}

#[test]
fn vertex_cancel_cancels_the_job() {
    let calls = cancel(&VERTEX, "describe");
    let last = calls.last().expect("calls");
    assert_eq!(
        last[3..7],
        strings(&[
            "ai",
            "custom-jobs",
            "cancel",
            "projects/123456789012/locations/europe-west4/customJobs/4242"
        ])[..],
        "{calls:?}"
    );
}

// ---- the services' published schemas ----

/// The Python with the Kubernetes OpenAPI schema and botocore's service models, or skip
/// (fail under CI): `eval "$(bash .ci/engines/schemas.sh start)"`.
fn schemas_python() -> Option<String> {
    crate::common::engine_var("STEPRUNNER_SCHEMAS_PYTHON", "schemas")
}

/// `check.py KIND` on `doc`: the schema's errors, one per line (empty: valid).
fn schema_errors(python: &str, kind: &str, doc: &Value) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp folder");
    let file = dir.path().join("doc.json");
    std::fs::write(&file, doc.to_string()).expect("write the document");
    let out = Command::new(python)
        .arg(root().join("tests/fixtures/contracts/check.py"))
        .arg(kind)
        .arg(&file)
        .output()
        .expect("the schema checker runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.code() {
        Some(0) => Vec::new(),
        Some(1) if !stdout.trim().is_empty() => stdout.lines().map(str::to_owned).collect(),
        other => panic!(
            "the schema checker failed ({other:?}): {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// What a contract step must end in: submitted, or refused before submit with a
/// message holding this text.
#[derive(Clone, Copy)]
enum Want {
    Submitted,
    Refused(&'static str),
}

/// Steps of every shape the tests know, hostile ones included, for a contract test.
/// Each is `(what, info file JSON, extra launch arguments, what must happen)`.
fn contract_steps(flavor: &Flavor) -> Vec<(&'static str, Value, Vec<String>, Want)> {
    let long_name = "Train ".repeat(60);
    let long_arg = "a".repeat(256);
    let many: Vec<String> = (0..99).map(|i| format!("--x{i}")).collect();
    let sagemaker = flavor.cli == "aws";
    let mut steps = vec![
        (
            "plain",
            json!({}),
            strings(&["--step", "Train Model"]),
            Want::Submitted,
        ),
        (
            "resources",
            json!({}),
            strings(&["--memory", "512MiB", "--cpus", "1.5", "--gpus", "2"]),
            Want::Submitted,
        ),
        (
            "hostile values",
            json!({"requirements": {"parent_image": IMAGE, "environment": {"NOTE": NOTE}}}),
            strings(&["--step", STEP, "-r", "$(touch PWNED6)"]),
            Want::Submitted,
        ),
        (
            "a long and non-ASCII name",
            json!({"requirements": {"environment": {"A_1": "x", "_B": ""}}}),
            strings(&["--step", &format!("{long_name}é✓")]),
            Want::Submitted,
        ),
        (
            "a long argument",
            json!({}),
            strings(&["--", "python3", &long_arg]),
            Want::Submitted,
        ),
        (
            "99 arguments",
            json!({}),
            [vec!["--".to_string(), "python3".to_string()], many].concat(),
            Want::Submitted,
        ),
        (
            "a 300-character image",
            json!({"requirements": {"parent_image": format!("registry.example/{}:1", "i".repeat(280))}}),
            Vec::new(),
            if sagemaker {
                Want::Refused("image")
            } else {
                Want::Submitted
            },
        ),
    ];
    if sagemaker {
        steps.push((
            "a 257-character argument",
            json!({}),
            strings(&["--", "python3", &"a".repeat(257)]),
            Want::Refused("256"),
        ));
        steps.push((
            "101 environment variables",
            json!({"requirements": {"environment": (0..101).map(|i| (format!("V{i}"), json!("x"))).collect::<serde_json::Map<_, _>>()}}),
            Vec::new(),
            Want::Refused("at most 100"),
        ));
    }
    if flavor.cli == "kubectl" {
        steps.push((
            "selector, tolerations, service account",
            json!({"settings": {
                "node_selector": {"pool": "gpu", "topology.kubernetes.io/zone": "eu-1a"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                    {"operator": "Exists"},
                    {"key": "spot", "value": "true", "effect": "NoExecute", "tolerationSeconds": 30},
                ],
                "env_from_secret": "train-secrets",
            }}),
            strings(&["--env", "HOME"]),
            Want::Submitted,
        ));
        steps.push((
            "a toleration without key or `Exists`",
            json!({"settings": {"tolerations": [{"value": "x"}]}}),
            Vec::new(),
            Want::Refused("needs `operator: Exists`"),
        ));
    }
    steps
}

/// Every step of [`contract_steps`] is either refused before anything is submitted
/// (exit 2, no call to the service) or sent as a document the service's published
/// schema accepts.
fn submitted_documents_match_the_schema(flavor: &Flavor, kind: &str, received: &str) {
    let Some(python) = schemas_python() else {
        return;
    };
    let mut failures = Vec::new();
    for (what, info, extra, want) in contract_steps(flavor) {
        let fake = Fake::new();
        let file = fake.cwd.path().join("step.json");
        std::fs::write(&file, info.to_string()).expect("write step info");
        let mut rest = strings(&["--info", &file.display().to_string()]);
        rest.extend(extra);
        let mut runner = Runner::new().current_dir(fake.cwd.path());
        for (k, v) in fake.env("success") {
            runner = runner.env(k, v);
        }
        // The step's own entrypoint when it gives one after `--`, else the tests' one.
        let mut argv = args(flavor, &[]);
        argv.truncate(argv.len() - ENTRYPOINT.len() - 1);
        if !rest.iter().any(|a| a == "--") {
            rest.push("--".into());
            rest.extend(strings(&ENTRYPOINT));
        }
        argv.extend(rest);
        let out = runner.args(["launch", "--json", "-q"]).args(argv).run();
        match (out.code, want) {
            (0, Want::Submitted) => {
                let doc = fake.received(received);
                let errors = schema_errors(&python, kind, &doc);
                if !errors.is_empty() {
                    failures.push(format!(
                        "{what}: submitted, the service would refuse:\n  {}",
                        errors.join("\n  ")
                    ));
                }
            }
            (2, Want::Refused(why)) if out.stderr.contains(why) => {
                assert!(
                    fake.calls().is_empty(),
                    "{what}: refused, yet the service was called: {:?}",
                    fake.calls()
                );
            }
            (code, _) => failures.push(format!(
                "{what}: exit {code}, not what was expected:\n{}{}",
                out.stdout, out.stderr
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
#[cfg_attr(
    skip_engine_schemas,
    ignore = "needs the services' schemas: eval \"$(bash .ci/engines/schemas.sh start)\""
)]
fn kubernetes_jobs_match_the_kubernetes_openapi_schema() {
    submitted_documents_match_the_schema(&KUBERNETES, "kubernetes", "job.json");
}

#[test]
#[cfg_attr(
    skip_engine_schemas,
    ignore = "needs the services' schemas: eval \"$(bash .ci/engines/schemas.sh start)\""
)]
fn sagemaker_requests_match_botocores_service_model() {
    submitted_documents_match_the_schema(&SAGEMAKER, "sagemaker", "request.json");
}

/// The checker can fail: a Job and a request the services would refuse are refused.
#[test]
#[cfg_attr(
    skip_engine_schemas,
    ignore = "needs the services' schemas: eval \"$(bash .ci/engines/schemas.sh start)\""
)]
fn the_schema_check_refuses_what_the_services_refuse() {
    let Some(python) = schemas_python() else {
        return;
    };
    let fake = Fake::new();
    let (out, _, _) = launch(&fake, &KUBERNETES, "success", &[]);
    out.expect_code(0);
    let job = fake.received("job.json");
    assert_eq!(
        schema_errors(&python, "kubernetes", &job),
        Vec::<String>::new()
    );
    let mut bad = job.clone();
    bad["spec"]["template"]["spec"]["containers"][0]["resource"] = json!({});
    bad["spec"]["backoffLimit"] = json!("none");
    let errors = schema_errors(&python, "kubernetes", &bad);
    assert!(
        errors.iter().any(|e| e.contains("resource"))
            || errors.iter().any(|e| e.contains("backoffLimit")),
        "{errors:?}"
    );

    let fake = Fake::new();
    let (out, _, _) = launch(&fake, &SAGEMAKER, "success", &[]);
    out.expect_code(0);
    let req = fake.received("request.json");
    assert_eq!(
        schema_errors(&python, "sagemaker", &req),
        Vec::<String>::new()
    );
    for (pointer, value, error) in [
        (
            "/TrainingJobName",
            json!("-starts-with-a-dash"),
            "TrainingJobName",
        ),
        ("/Environment", json!({"1BAD": "x"}), "1BAD"),
        (
            "/AlgorithmSpecification/ContainerArguments",
            json!(vec!["a"; 101]),
            "at most 100",
        ),
        (
            "/ResourceConfig/InstanceCount",
            json!("one"),
            "InstanceCount",
        ),
    ] {
        let mut bad = req.clone();
        let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
        bad.pointer_mut(if parent.is_empty() { "" } else { parent })
            .expect("the parent exists")[key] = value;
        let errors = schema_errors(&python, "sagemaker", &bad);
        assert!(
            errors.iter().any(|e| e.contains(error)),
            "{pointer}: {errors:?}"
        );
    }
}
