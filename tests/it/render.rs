//! `runner render`: render-time errors, snapshots of the plans of the shipped
//! manifests, the JSON plan, settings and step-info errors, and shell safety of
//! `script:` interpolation (rendered scripts are executed to prove it).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::common::{Output, Runner, check_first_diagnostic, fixtures, root, runner};

const RENDER_INVALID: &str = "tests/fixtures/render-invalid";

#[test]
fn each_render_invalid_fixture_reports_its_first_diagnostic() {
    let files = fixtures(RENDER_INVALID);
    assert!(!files.is_empty());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let out = runner([
                "render".as_ref(),
                f.as_os_str(),
                "--".as_ref(),
                "true".as_ref(),
            ]);
            check_first_diagnostic(f, &out).err()
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Render-time fixtures are valid manifests: the error only shows with values.
#[test]
fn render_invalid_fixtures_pass_validate() {
    runner(["validate", RENDER_INVALID]).expect_code(0);
}

/// Escape a literal for a regex (only the characters the regex syntax gives meaning).
fn escape(literal: &str) -> String {
    let mut out = String::new();
    for c in literal.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Render and snapshot stdout with machine-specific parts replaced.
fn snapshot_render(name: &str, args: &[&str]) {
    snapshot_render_filtered(name, args, &[]);
}

/// [`snapshot_render`] with more `(regex, replacement)` filters, applied last.
fn snapshot_render_filtered(name: &str, args: &[&str], extra: &[(&str, &str)]) {
    // A PATH of no programs: what flavors find on it (`on_path('uv')`) is the same on
    // every machine.
    const PATH: &str = "/nonexistent/steprunner-snapshot/bin";
    let r = Runner::new().env("PATH", PATH);
    let home = r.home().to_path_buf();
    let out = r.arg("render").args(args).run();
    out.expect_code(0);
    let filters: Vec<(String, String)> = vec![
        // Strings over 80 characters are printed folded (`>-` + newline); how many are
        // depends on the length of the paths below, so unfold them first.
        (r">-\n\s+".to_string(), String::new()),
        (escape(PATH), "[PATH]".into()),
    ];
    let mut filters = filters;
    for (dir, label) in [(home, "[RUNNER_HOME]"), (root(), "[CWD]")] {
        if let Ok(canonical) = dir.canonicalize() {
            filters.push((escape(&canonical.display().to_string()), label.into()));
        }
        filters.push((escape(&dir.display().to_string()), label.into()));
    }
    filters.push((
        r"\d{8}T\d{6}-[a-z0-9-]+-[0-9a-f]{8}".into(),
        "[RUN_ID]".into(),
    ));
    // Cloud job names end with the run id's last 8 hex digits.
    filters.push((
        r"(runner-[a-z0-9-]+-)[0-9a-f]{8}\b".into(),
        "${1}[SHORT_RUN_ID]".into(),
    ));
    filters.extend(
        extra
            .iter()
            .map(|(re, with)| (re.to_string(), with.to_string())),
    );
    let mut settings = insta::Settings::clone_current();
    for (re, with) in &filters {
        settings.add_filter(re, with.as_str());
    }
    settings.set_description(format!("runner render {}", args.join(" ")));
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_snapshot!(name, out.stdout));
}

#[test]
fn render_local() {
    snapshot_render(
        "render_local",
        &["manifests/local.yaml", "--info", "examples/hello/step.yaml"],
    );
}

#[test]
fn render_local_with_flags() {
    snapshot_render(
        "render_local_with_flags",
        &[
            "manifests/local.yaml",
            "--info",
            "examples/hello/step.yaml",
            "--memory",
            "1GiB",
            "--cpus",
            "0.5",
            "-r",
            "requests==2.32.3",
            "--set",
            "pids=64",
        ],
    );
}

#[test]
fn render_venv() {
    snapshot_render(
        "render_venv",
        &["manifests/venv.yaml", "--info", "examples/hello/step.yaml"],
    );
}

#[test]
fn render_venv_with_flags() {
    snapshot_render(
        "render_venv_with_flags",
        &[
            "manifests/venv.yaml",
            "--info",
            "examples/hello/step.yaml",
            "--memory",
            "1GiB",
            "--cpus",
            "0.5",
            "-r",
            "requests==2.32.3",
            "--set",
            "installer=uv",
        ],
    );
}

/// The docker flavor's cache key names the source folder, an absolute path that differs
/// between machines: the key (also the image's tag) is filtered.
const DOCKER_KEY: (&str, &str) = (r"\b[0-9a-f]{16}\b", "[KEY]");

#[test]
fn render_docker() {
    snapshot_render_filtered(
        "render_docker",
        &[
            "manifests/docker.yaml",
            "--info",
            "examples/hello/step.yaml",
        ],
        &[DOCKER_KEY],
    );
}

#[test]
fn render_docker_with_requirements() {
    snapshot_render_filtered(
        "render_docker_with_requirements",
        &[
            "manifests/docker.yaml",
            "--info",
            "tests/fixtures/docker/step.yaml",
            "--memory",
            "1GiB",
            "--cpus",
            "1.5",
            "--env",
            "HOME",
            "--set",
            "build_network=host",
            "--set",
            "network=host",
        ],
        &[DOCKER_KEY],
    );
}

#[test]
fn render_kubernetes() {
    snapshot_render(
        "render_kubernetes",
        &[
            "manifests/kubernetes.yaml",
            "--info",
            "examples/hello/step.yaml",
            "--gpus",
            "1",
            "--set",
            "image=registry.example/hello:1",
            "--set",
            "namespace=ml",
        ],
    );
}

#[test]
fn render_sagemaker() {
    snapshot_render(
        "render_sagemaker",
        &[
            "manifests/sagemaker.yaml",
            "--info",
            "examples/hello/step.yaml",
            "--set",
            "image=123456789012.dkr.ecr.eu-west-1.amazonaws.com/hello:1",
            "--set",
            "instance_type=ml.m5.large",
            "--set",
            "role_arn=arn:aws:iam::123456789012:role/sagemaker",
            "--set",
            "output_path=s3://bucket/out",
        ],
    );
}

#[test]
fn render_vertex() {
    snapshot_render(
        "render_vertex",
        &[
            "manifests/vertex.yaml",
            "--info",
            "examples/hello/step.yaml",
            "--set",
            "image=europe-docker.pkg.dev/proj/hello:1",
            "--set",
            "machine_type=n1-standard-4",
        ],
    );
}

#[test]
fn render_slurm() {
    snapshot_render(
        "render_slurm",
        &["manifests/slurm.yaml", "--info", "examples/hello/step.yaml"],
    );
}

#[test]
fn render_slurm_with_flags() {
    snapshot_render(
        "render_slurm_with_flags",
        &[
            "manifests/slurm.yaml",
            "--info",
            "examples/hello/step.yaml",
            "--step",
            "x'; touch PWNED; '",
            "--memory",
            "1GiB",
            "--cpus",
            "1.5",
            "--gpus",
            "1",
            "--set",
            "partition=gpu",
            "--set",
            "account=ml team",
            "--set",
            "time_limit=2:00:00",
            "--set",
            "extra_args=[\"--qos=high\", \"--constraint=a100\"]",
        ],
    );
}

#[test]
fn json_plan_has_parsed_limits() {
    let out = runner([
        "render",
        "manifests/venv.yaml",
        "--info",
        "examples/hello/step.yaml",
        "--memory",
        "1GiB",
        "--cpus",
        "0.5",
        "-r",
        "requests==2.32.3",
        "--set",
        "installer=uv",
        "--format",
        "json",
    ]);
    out.expect_code(0);
    let plan = out.json();
    assert_eq!(
        plan["launch"]["limits"]["memory_bytes"],
        json!(1_073_741_824u64)
    );
    assert_eq!(plan["launch"]["limits"]["cpus"], json!(0.5));
    assert_eq!(
        plan["launch"]["command"]["argv"],
        json!(["python3", "examples/hello/train.py"])
    );
    // `--set installer=uv` picks the uv commands; `-r` feeds the install after `--`.
    let cmds = plan["prepare"]["commands"]
        .as_array()
        .expect("prepare commands");
    let run: Vec<&Value> = cmds
        .iter()
        .filter(|c| c["skipped"] != json!(true))
        .collect();
    assert_eq!(run.len(), 2, "{cmds:#?}");
    assert_eq!(run[0]["argv"][0], "uv");
    let install = run[1]["argv"].as_array().expect("argv");
    assert_eq!(install.last(), Some(&json!("requests==2.32.3")));
    assert_eq!(install[install.len() - 2], "--");
    // The run folder is under RUNNER_HOME.
    let run_dir = plan["dirs"]["run"].as_str().expect("dirs.run");
    assert!(Path::new(run_dir).starts_with(out.home.path()), "{run_dir}");
}

#[test]
fn a_setting_outside_its_enum_is_named() {
    let out = runner(["render", "manifests/venv.yaml", "--set", "installer=conda"]);
    out.expect_code(2);
    assert!(out.stderr.contains("`installer`"), "{}", out.stderr);
    assert!(out.stderr.contains("conda"), "{}", out.stderr);
    assert!(out.stdout.is_empty());
}

/// With nothing given, required settings are still asked for (the defaults-only fast
/// path must not skip them), on a second render too (validation remembered).
#[test]
fn a_required_setting_is_asked_for_when_nothing_is_given() {
    let home = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = Runner::new()
            .env("RUNNER_HOME", home.path())
            .args(["render", "manifests/vertex.yaml"])
            .run();
        out.expect_code(2);
        assert!(
            out.stderr.contains("setting `machine_type` is required"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn an_unknown_setting_is_named() {
    let out = runner(["render", "manifests/venv.yaml", "--set", "nope=1"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("unknown setting `nope`"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_bad_memory_flag_lists_the_accepted_forms() {
    let out = runner(["render", "manifests/venv.yaml", "--memory", "12parsecs"]);
    out.expect_code(2);
    for form in [
        "`12parsecs`",
        "KB MB GB TB PB",
        "KiB MiB GiB TiB PiB",
        "512MiB",
    ] {
        assert!(out.stderr.contains(form), "no `{form}` in:\n{}", out.stderr);
    }
}

/// `runner render manifests/local.yaml --info FILE` with `text` in FILE: the folder
/// (kept while it is used), FILE, and what the runner did.
fn render_info(text: &str) -> (tempfile::TempDir, std::path::PathBuf, crate::common::Output) {
    let dir = tempfile::tempdir().expect("tempdir");
    let info = dir.path().join("step.yaml");
    std::fs::write(&info, text).expect("write step info");
    let out = runner([
        "render".as_ref(),
        "manifests/local.yaml".as_ref(),
        "--info".as_ref(),
        info.as_os_str(),
    ]);
    (dir, info, out)
}

#[test]
fn a_step_info_of_the_wrong_type_is_located() {
    let (_dir, info, out) = render_info("step:\n  name: hello\nresources:\n  cpu_count: many\n");
    out.expect_code(2);
    let want = format!("--> {}:4:14", info.display());
    assert!(
        out.stderr.contains(&want),
        "no `{want}` in:\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("\"many\""), "{}", out.stderr);
}

/// A variable name that is not one (`X=Y` would reach the step as `X` with the value
/// `Y=…`; an empty name as `=…`) is refused before anything runs, at its key, in a
/// step info and in `--env`.
#[test]
fn environment_names_that_are_not_names_are_refused_at_their_key() {
    let (_dir, info, out) = render_info(
        "entrypoint: [\"true\"]\nenvironment:\n  GOOD: \"1\"\n  \"X=Y\": \"2\"\n\
         requirements:\n  environment: {\"\": \"3\", \"a/b\": \"4\"}\n",
    );
    out.expect_code(2);
    for (at, name, map) in [
        ("4:3", "\"X=Y\"", "`environment`"),
        ("6:17", "\"\"", "`requirements.environment`"),
        ("6:26", "\"a/b\"", "`requirements.environment`"),
    ] {
        let want = format!(
            "error: {name} in {map} is not an environment variable name\n  --> {}:{at}\n",
            info.display()
        );
        assert!(
            out.stderr.contains(&want),
            "no `{want}` in:\n{}",
            out.stderr
        );
    }
    assert_eq!(out.stderr.matches("error: ").count(), 3, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "no plan: {}", out.stdout);

    let out = runner([
        "render",
        "manifests/local.yaml",
        "--env",
        "X=Y",
        "--",
        "true",
    ]);
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("invalid value 'X=Y' for '--env <NAME>': not an environment variable name"),
        "{}",
        out.stderr
    );
}

/// A `--set` key is a path of nested settings: one of 10,000 levels overflowed the
/// stack (the runner aborted); it is refused, as is an empty part, and a deep but
/// bounded one renders.
#[test]
fn set_keys_nest_a_bounded_number_of_levels() {
    let deep = vec!["a"; 10_000].join(".");
    let out = runner([
        "render",
        "manifests/local.yaml",
        "--set",
        &format!("{deep}=1"),
        "--",
        "true",
    ]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("at most 64 of them, none empty"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.len() < 400, "the key is cut: {}", out.stderr);
    let out = runner([
        "render",
        "manifests/local.yaml",
        "--set",
        "a..b=1",
        "--",
        "true",
    ]);
    out.expect_code(2);
    assert!(out.stderr.contains("none empty"), "{}", out.stderr);

    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("deep.yaml");
    std::fs::write(
        &manifest,
        "version: 1\nname: deep\nsettings:\n  type: object\nlaunch:\n  \
         run: [\"echo\", \"{{ settings | tojson }}\"]\n",
    )
    .expect("write manifest");
    let key = vec!["a"; 64].join(".");
    let value = format!("{}{}", "[".repeat(120), "]".repeat(120));
    let out = runner([
        "render".as_ref(),
        manifest.as_os_str(),
        "--set".as_ref(),
        format!("{key}={value}").as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        "--".as_ref(),
        "true".as_ref(),
    ]);
    out.expect_code(0);
    let plan = out.json();
    let arg = plan["launch"]["command"]["argv"][1]
        .as_str()
        .unwrap_or_default();
    assert!(arg.starts_with(&"{\"a\":".repeat(64)), "{arg}");
}

// ---- shell safety of `script:` ----

const STEP: &str = "x'; touch PWNED; echo '";
const PIP: [&str; 2] = ["$(touch PWNED2)", "`touch PWNED3`"];
const NOTE: &str = "a\nb; touch PWNED4";

/// A flavor whose prepare and cleanup scripts print hostile values.
const HOSTILE: &str = r#"version: 1
name: hostile
prepare:
  key: ["{{ requirements.pip | join(' ') }}"]
  run:
    - script: |
        printf '%s\n' {{ step.name }}
        printf '%s\n' {{ requirements.pip }}
        printf '%s\n' {{ step.parameters.note }}
launch:
  run: ["{{ entrypoint }}"]
cleanup:
  run:
    - script: "printf '[%s]' {{ step.name }} {{ step.parameters.note }}"
"#;

/// The same, opting out of quoting with `| safe`: the value runs as shell code.
const UNSAFE: &str = r#"version: 1
name: unsafe
launch:
  run: ["{{ entrypoint }}"]
cleanup:
  run:
    - script: |
        printf '%s\n' {{ step.parameters.note | safe }}
"#;

/// Write `manifest` and a step info with `note` into `dir`, render, return the plan.
fn render_in(dir: &Path, manifest: &str, note: &str) -> Value {
    let m = dir.join("flavor.yaml");
    std::fs::write(&m, manifest).expect("write manifest");
    let info = dir.join("step.json");
    let step = json!({"step": {"name": "ignored", "parameters": {"note": note}}});
    std::fs::write(&info, step.to_string()).expect("write step info");
    let mut args: Vec<PathBuf> = vec![
        "render".into(),
        m,
        "--info".into(),
        info,
        "--step".into(),
        STEP.into(),
        "--format".into(),
        "json".into(),
    ];
    for p in PIP {
        args.extend(["-r".into(), p.into()]);
    }
    args.extend(["--".into(), "true".into()]);
    let out: Output = runner(&args);
    out.expect_code(0);
    out.json()
}

/// Run a rendered script the way the plan says (`SHELL -c SCRIPT`) in `cwd`; its stdout.
fn execute(command: &Value, cwd: &Path) -> String {
    let shell = command["shell"].as_str().expect("a script command");
    let script = command["script"].as_str().expect("a script command");
    let out = std::process::Command::new(shell)
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .output()
        .expect("run the shell");
    assert!(
        out.status.success(),
        "script failed: {script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn pwned(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("PWNED") || n == "CONTROL")
        .collect()
}

#[test]
fn hostile_values_in_scripts_stay_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    let plan = render_in(dir.path(), HOSTILE, NOTE);

    let prepare = &plan["prepare"]["commands"][0];
    let printed = execute(prepare, &work);
    let expected = format!("{STEP}\n{}\n{}\n{NOTE}\n", PIP[0], PIP[1]);
    assert_eq!(printed, expected, "script:\n{}", prepare["script"]);

    let cleanup = &plan["cleanup"]["commands"][0];
    let printed = execute(cleanup, &work);
    assert_eq!(
        printed,
        format!("[{STEP}][{NOTE}]"),
        "script:\n{}",
        cleanup["script"]
    );

    assert_eq!(
        pwned(&work),
        Vec::<String>::new(),
        "a hostile value ran as shell code"
    );
    assert_eq!(pwned(dir.path()), Vec::<String>::new());
}

/// Positive control: without quoting the same harness does see the injection, so the
/// test above could fail.
#[test]
fn safe_opts_out_of_quoting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    let plan = render_in(dir.path(), UNSAFE, "$(touch CONTROL)");
    let cleanup = &plan["cleanup"]["commands"][0];
    assert_eq!(cleanup["script"], "printf '%s\\n' $(touch CONTROL)");
    // The plan says which text went in unquoted: a reviewer sees it as code.
    assert_eq!(cleanup["unquoted"], serde_json::json!(["$(touch CONTROL)"]));
    execute(cleanup, &work);
    assert_eq!(pwned(&work), vec!["CONTROL".to_string()]);
}

/// Commands run in the step's source folder unless they say otherwise, and the folder
/// is used by its real path: a symlink given as `--source` renders as its target.
#[test]
fn commands_run_in_the_real_source_folder() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("code");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = runner([
        "render",
        "manifests/local.yaml",
        "--source",
        link.to_str().unwrap(),
        "--format",
        "json",
        "--",
        "python3",
        "train.py",
    ]);
    out.expect_code(0);
    let plan = out.json();
    let real = std::fs::canonicalize(&real).unwrap();
    assert_eq!(plan["dirs"]["source"], json!(real));
    assert_eq!(plan["launch"]["command"]["cwd"], json!(real));
}

/// A source folder that does not exist is named, before anything is rendered.
#[test]
fn a_missing_source_folder_is_named() {
    let out = runner([
        "render",
        "manifests/local.yaml",
        "--source",
        "/nonexistent/code",
        "--",
        "true",
    ]);
    out.expect_code(2);
    assert_eq!(
        out.stderr,
        "error: the step's source folder cannot be used: No such file or directory (os \
         error 2)\n  --> /nonexistent/code\n  = hint: `--source DIR` (or `source:` in the \
         step info) names the step's code; it must exist\n"
    );
}

/// A launch without its step's command stops before any work (the docker flavor would
/// build an image first) and says where the command goes.
#[test]
fn no_entrypoint_is_named_before_any_work() {
    let out = runner(["launch", "manifests/docker.yaml"]);
    out.expect_code(2);
    assert_eq!(
        out.stderr,
        "error: no entrypoint: give the step's command after `--`\n  --> \
         manifests/docker.yaml:192:39\n    |\n192 |           \"$STEPRUNNER_IMAGE\" \"$@\" {{ \
         entrypoint }}\n    |                                       ^\n    = hint: e.g. `runner launch MANIFEST -- python3 train.py`; the \
         launch runs the entrypoint here\n"
    );
    let left: Vec<_> = std::fs::read_dir(out.home.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing is written: {left:?}");
}

/// A step's command given without `--` gets clap's error and a tip that shows it.
#[test]
fn a_forgotten_double_dash_gets_a_tip() {
    for sub in ["launch", "render"] {
        let out = runner([
            sub,
            "manifests/local.yaml",
            "--cpus",
            "1",
            "python3",
            "-c",
            "1",
        ]);
        out.expect_code(2);
        assert_eq!(
            out.stderr,
            format!(
                "error: unexpected argument 'python3' found\n\n  tip: the step's command \
                 goes after `--`: `runner {sub} MANIFEST [OPTIONS] -- python3 …`\n\nUsage: \
                 runner {sub} [OPTIONS] <MANIFEST> [-- <ENTRYPOINT>...]\n\nFor more \
                 information, try '--help'.\n"
            )
        );
    }
    // Other commands keep clap's own words.
    let out = runner(["status", "a", "b"]);
    out.expect_code(2);
    assert!(
        !out.stderr.contains("tip: the step's command"),
        "{}",
        out.stderr
    );
}

/// The venv flavor's `installer: auto` (the default) picks uv when the runner's PATH
/// has it, pip otherwise, and keys the environment by what it picked.
#[test]
fn venv_auto_picks_uv_when_it_is_on_path() {
    let bin = tempfile::tempdir().unwrap();
    let path = bin.path().display().to_string();
    let plan = || {
        let out = Runner::new()
            .env("PATH", &path)
            .args([
                "render",
                "manifests/venv.yaml",
                "-r",
                "tabulate",
                "--format",
                "json",
            ])
            .args(["--", "python3", "-c", "1"])
            .run();
        out.expect_code(0);
        let plan = out.json();
        let programs: Vec<String> = plan["prepare"]["commands"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["skipped"] != json!(true))
            .map(|c| {
                c["argv"][0]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        (plan["prepare"]["key_parts"][0].clone(), programs)
    };
    assert_eq!(
        plan(),
        (json!("pip"), vec!["python3".into(), "python".into()])
    );
    // Not executable: not a program on PATH.
    let uv = bin.path().join("uv");
    std::fs::write(&uv, "#!/bin/sh\n").unwrap();
    assert_eq!(plan().0, json!("pip"));
    std::fs::set_permissions(&uv, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert_eq!(plan(), (json!("uv"), vec!["uv".into(), "uv".into()]));
}

/// `on_path` looks a bare name up; anything else is refused, located.
#[test]
fn on_path_takes_bare_names_only() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.yaml");
    std::fs::write(
        &m,
        "version: 1\nname: m\nlaunch:\n  run: [\"{{ entrypoint }}\"]\n  env:\n    \
         X: \"{{ on_path('../bin/sh') }}\"\n",
    )
    .unwrap();
    let out = runner(["render", m.to_str().unwrap(), "--", "true"]);
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("on_path takes a bare program name, not `../bin/sh`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("m.yaml:6:"), "{}", out.stderr);
}

/// Huge durations anywhere are refused before anything runs, never a panic: in the
/// manifest, through a setting, and on the command line.
#[test]
fn huge_durations_are_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("t.yaml");
    std::fs::write(
        &m,
        "version: 1\nname: t\nlaunch:\n  run: [\"{{ entrypoint }}\"]\n  timeout: 1e300\n  \
         kill_grace: 1e30\n",
    )
    .unwrap();
    let out = runner([
        "launch".as_ref(),
        m.as_os_str(),
        "--".as_ref(),
        "true".as_ref(),
    ]);
    out.expect_code(2);
    assert!(
        out.stderr
            .starts_with("error: duration `1e+300` is too long: at most 100 years\n"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("t.yaml:5:12"), "{}", out.stderr);
    let runs: Vec<_> = std::fs::read_dir(out.home.path()).unwrap().collect();
    assert!(runs.is_empty(), "no run folder: {runs:?}");

    let out = runner([
        "render",
        "tests/fixtures/launch/staged.yaml",
        "--set",
        "out=/tmp",
        "--set",
        "kill_grace=1e300",
        "--",
        "true",
    ]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("is too long: at most 100 years"),
        "{}",
        out.stderr
    );
    for args in [
        &["wait", "x", "--timeout", "1e300"][..],
        &["wait", "x", "--timeout", "1e19"],
        &["cache", "prune", "--older-than", "1e19"],
        &["runs", "prune", "--older-than", "1e300d"],
    ] {
        let out = runner(args);
        out.expect_code(2);
        assert!(
            out.stderr.starts_with("error: invalid value"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

/// The property behind "errors come before work": a manifest that validates, given
/// step info that is valid for it (its required settings set, any requirements,
/// resources and names, hostile ones included), always renders. Whatever render could
/// still refuse would be found only at launch, after validation said yes.
#[test]
fn every_valid_manifest_renders_with_every_valid_step() {
    let mut manifests: Vec<PathBuf> = ["manifests", "tests/fixtures/launch"]
        .iter()
        .flat_map(|d| crate::common::fixtures(d))
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 10, "{manifests:?}");
    let steps = [
        json!({}),
        json!({"step": {"name": "x'; touch /tmp/PWNED; '"}, "requirements": {"pip": ["$(id)", "a b"]}}),
        json!({"requirements": {"pip": ["requests==2.32.3"], "apt": ["curl"], "parent_image": "python:3.11",
               "environment": {"A": "1"}}, "resources": {"cpu_count": 0.5, "memory": 268435456}}),
        json!({"resources": {"cpu_count": 3, "gpu_count": 1, "memory": "2GiB"}}),
        json!({"resources": {"gpu_count": 0}, "step": {"name": "Train Model", "pipeline": "p",
               "parameters": {"lr": 0.1, "layers": [1, 2]}}}),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for m in &manifests {
        let src = steprunner::manifest::Source::read(m).unwrap();
        // Values of the right type for the settings the manifest requires.
        let mut settings = serde_json::Map::new();
        if let Some(props) = src
            .doc
            .value
            .pointer("/settings/properties")
            .and_then(Value::as_object)
        {
            let required: Vec<&str> = src
                .doc
                .value
                .pointer("/settings/required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for (name, schema) in props {
                if !required.contains(&name.as_str()) {
                    continue;
                }
                let v = match schema.get("enum").and_then(Value::as_array) {
                    Some(e) => e[0].clone(),
                    None => match schema.get("type").and_then(Value::as_str) {
                        Some("integer" | "number") => json!(1),
                        Some("boolean") => json!(false),
                        Some("array") => json!([]),
                        _ if name.ends_with("_path") => json!("s3://bucket/out"),
                        _ if name.ends_with("_arn") => json!("arn:aws:iam::1:role/r"),
                        // A value the service takes (the flavor checks its form).
                        _ if name == "instance_type" => json!("ml.m5.large"),
                        _ => json!("x"),
                    },
                };
                settings.insert(name.clone(), v);
            }
        }
        if m.ends_with("staged.yaml") || m.ends_with("slow-prepare.yaml") {
            settings.insert("out".into(), json!(dir.path()));
        }
        for (k, step) in steps.iter().enumerate() {
            let mut info = step.clone();
            info["settings"] = Value::Object(settings.clone());
            let path = dir.path().join(format!("info-{k}.json"));
            std::fs::write(&path, info.to_string()).unwrap();
            let out = Runner::new()
                .args([
                    "render".as_ref(),
                    m.as_os_str(),
                    "--info".as_ref(),
                    path.as_os_str(),
                ])
                .args(["--", "python3", "train.py"])
                .run();
            if out.code != 0 {
                failures.push(format!("{} with {info}:\n{}", m.display(), out.stderr));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Where the system refuses the child process a render is bounded in (a user at its
/// process limit), the render is refused with the cause and exit 125 — never done
/// without the bound, where a hostile template could take all memory — and
/// `runner validate` says its trial render could not be made rather than passing it.
#[test]
#[cfg_attr(skip_root, ignore = "needs root (to become another user)")]
fn a_render_that_cannot_be_bounded_is_refused_not_done_unbounded() {
    use std::os::unix::process::CommandExt;
    if !crate::common::needs_root() {
        return;
    }
    let home = crate::common::home_for_anyone();
    let at_process_limit = |args: &[&str]| {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("runner"));
        cmd.current_dir(root())
            .env("RUNNER_HOME", home.path())
            .env("NO_COLOR", "1")
            .args(args)
            .uid(65534)
            .gid(65534);
        // SAFETY: only setrlimit, between fork and exec. The runner is then the one
        // process its user may have: it cannot fork.
        unsafe {
            cmd.pre_exec(|| {
                let one = libc::rlimit {
                    rlim_cur: 1,
                    rlim_max: 1,
                };
                if libc::setrlimit(libc::RLIMIT_NPROC, &one) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        };
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) =
        at_process_limit(&["render", "manifests/local.yaml", "--", "true"]);
    assert_eq!(code, Some(125), "{stdout}{stderr}");
    assert_eq!(stdout, "", "no plan is printed");
    for want in [
        "cannot render under a memory and time bound",
        "Resource temporarily unavailable",
        "ulimit -u",
    ] {
        assert!(stderr.contains(want), "no `{want}` in: {stderr}");
    }
    let (code, stdout, stderr) = at_process_limit(&["validate", "manifests/local.yaml"]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot render under a memory and time bound"),
        "{stdout}{stderr}"
    );
}
