//! The ZenML integration's own tests (pytest, `integrations/zenml/tests`) against a real
//! ZenML, run with the `runner` built here. `.ci/engines/zenml.sh start` provides the
//! Python with ZenML in `STEPRUNNER_ZENML_PYTHON`; without it the test fails under
//! `CI=true` and skips, saying so, otherwise.

use std::process::Command;

use crate::common::root;

/// The Python with ZenML, or skip (fail under `CI=true`).
fn zenml_python() -> Option<String> {
    crate::common::engine_var("STEPRUNNER_ZENML_PYTHON", "zenml")
}

/// The uv the ZenML engine installed, or skip (fail under `CI=true`).
fn uv() -> Option<String> {
    crate::common::engine_var("STEPRUNNER_UV", "zenml")
}

#[test]
#[cfg_attr(
    skip_engine_zenml,
    ignore = "needs ZenML: eval \"$(bash .ci/engines/zenml.sh start)\""
)]
fn zenml_integration_passes_its_tests_against_a_real_zenml() {
    let Some(python) = zenml_python() else {
        return;
    };
    let runner = assert_cmd::cargo::cargo_bin("runner");
    let out = Command::new(&python)
        .args(["-m", "pytest", "integrations/zenml/tests", "-q", "-rs"])
        .args(["-p", "no:cacheprovider"])
        .current_dir(root())
        .env("STEPRUNNER_RUNNER", &runner)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{python}`: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pytest failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // Passing is not enough: under CI nothing may have been skipped.
    if std::env::var("CI").as_deref() == Ok("true") {
        assert!(
            !stdout.contains(" skipped"),
            "pytest skipped tests under CI=true\n{stdout}"
        );
    }
    eprintln!("{}", stdout.lines().last().unwrap_or_default());
}

/// The venv flavor's `inherit_packages`, on the ZenML engine's Python (a virtualenv
/// holding ZenML and pytest), with each installer: the step imports ZenML from there
/// and `tabulate` from its own cached environment. With pip a requirement already met
/// there (`pytest`) is not installed again; uv's resolver only sees the environment's
/// own packages, so it installs it again (as the setting's description says).
#[test]
#[cfg_attr(
    skip_engine_zenml,
    ignore = "needs ZenML: eval \"$(bash .ci/engines/zenml.sh start)\""
)]
fn venv_inherits_the_packages_of_its_python_with_pip_and_uv() {
    use crate::common::Runner;
    let (Some(python), Some(uv)) = (zenml_python(), uv()) else {
        return;
    };
    let python = std::path::PathBuf::from(python);
    let engine_venv = python.parent().and_then(|b| b.parent()).unwrap().to_owned();
    let uv_dir = std::path::Path::new(&uv).parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        uv_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for installer in ["pip", "uv"] {
        let home = tempfile::tempdir().unwrap();
        let out = Runner::new()
            .env("RUNNER_HOME", home.path())
            .env("PATH", &path)
            .args(["launch", "--json", "-q", "manifests/venv.yaml"])
            .arg("--set")
            .arg(format!("installer={installer}"))
            .arg("--set")
            .arg(format!("python={}", python.display()))
            .args(["--set", "inherit_packages=true"])
            .args(["-r", "tabulate==0.9.0", "-r", "pytest", "--", "python", "-c"])
            .arg("import tabulate, zenml, pytest; print(tabulate.__file__); print(zenml.__file__); print(pytest.__file__)")
            .run();
        out.expect_code(0);
        let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(result["status"], "succeeded", "{installer}");
        let printed = std::fs::read_to_string(result["logs"]["stdout"].as_str().unwrap()).unwrap();
        let files: Vec<&str> = printed.lines().collect();
        assert_eq!(files.len(), 3, "{installer}: {printed}");
        let cache = home.path().join("cache");
        assert!(
            std::path::Path::new(files[0]).starts_with(&cache),
            "{installer}: tabulate is installed in the step's environment: {printed}"
        );
        assert!(
            std::path::Path::new(files[1]).starts_with(&engine_venv),
            "{installer}: zenml is inherited from {}: {printed}",
            engine_venv.display()
        );
        if installer == "pip" {
            assert!(
                std::path::Path::new(files[2]).starts_with(&engine_venv),
                "pip: pytest, already there, is not installed again: {printed}"
            );
        }
    }
}

/// `installer: auto`, the venv flavor's default: the README's step gets an environment
/// made by uv when uv is on PATH, and by pip's `venv` when it is not.
#[test]
#[cfg_attr(
    skip_engine_zenml,
    ignore = "needs uv: eval \"$(bash .ci/engines/zenml.sh start)\""
)]
fn venv_auto_uses_uv_when_on_path_and_pip_without() {
    use crate::common::Runner;
    let Some(uv) = uv() else {
        return;
    };
    let uv_dir = std::path::Path::new(&uv).parent().unwrap().to_owned();
    // The system's programs, without any uv of its own.
    let system = "/usr/local/bin:/usr/bin:/bin";
    assert!(
        !std::env::split_paths(system).any(|d| d.join("uv").exists()),
        "this test needs a system PATH without uv"
    );
    for (path, made_by_uv) in [
        (format!("{}:{system}", uv_dir.display()), true),
        (system.to_string(), false),
    ] {
        let home = tempfile::tempdir().unwrap();
        let out = Runner::new()
            .env("RUNNER_HOME", home.path())
            .env("PATH", &path)
            .args(["launch", "--json", "-q", "manifests/venv.yaml"])
            .args(["--info", "examples/hello/step.yaml"])
            .run();
        out.expect_code(0);
        let result = out.json();
        assert_eq!(result["status"], "succeeded");
        let cfg = std::fs::read_dir(home.path().join("cache"))
            .unwrap()
            .flatten()
            .map(|e| e.path().join("venv/pyvenv.cfg"))
            .find(|p| p.exists())
            .expect("a cached environment");
        let cfg = std::fs::read_to_string(cfg).unwrap();
        assert_eq!(cfg.contains("\nuv = "), made_by_uv, "PATH={path}: {cfg}");
    }
}

/// `pip install` is how ZenML users install: the `steprunner` wheel (maturin, the
/// repository's `pyproject.toml`) puts a `runner` of this version beside the
/// integration's Python, and the integration finds it there with nothing configured
/// and no `runner` on PATH.
#[test]
#[cfg_attr(
    skip_engine_zenml,
    ignore = "needs ZenML: eval \"$(bash .ci/engines/zenml.sh start)\""
)]
fn the_runner_wheel_is_installed_with_the_integration_and_found_unconfigured() {
    let Some(python) = zenml_python() else {
        return;
    };
    let out = Command::new(&python)
        .args(["-c", "from importlib.metadata import version\nfrom steprunner_zenml.runner import find_runner\nprint(version('steprunner'))\nprint(find_runner())"])
        .env_remove("STEPRUNNER_RUNNER")
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(env!("CARGO_PKG_VERSION")),
        "the wheel's version"
    );
    let found = std::path::PathBuf::from(lines.next().expect("a runner path"));
    let bin = std::path::Path::new(&python)
        .parent()
        .expect("the venv's bin");
    assert_eq!(
        found.parent(),
        Some(bin),
        "found {found:?}, not the wheel's"
    );
    let version = Command::new(&found)
        .arg("--version")
        .output()
        .expect("the wheel's runner runs");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("runner {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The integration README's install-and-run block, as written: in a fresh folder, a
/// fresh virtualenv from the system's `python3`, `pip install` of ZenML, the runner
/// wheel (built by maturin) and the integration from this checkout, `zenml init`, the
/// registration, and the example pipeline. Only what a new user has is given: `HOME`
/// (a fresh one; rustup's and cargo's homes kept, for the wheel's build) and
/// `STEPRUNNER`. pip's cache is kept beside the ZenML engine's virtualenv.
#[test]
#[cfg_attr(
    skip_engine_zenml,
    ignore = "needs ZenML: eval \"$(bash .ci/engines/zenml.sh start)\""
)]
fn the_integration_readme_works_as_written_in_a_fresh_project() {
    let Some(python) = zenml_python() else {
        return;
    };
    if !crate::common::needs_root() {
        return;
    }
    let readme = std::fs::read_to_string(root().join("integrations/zenml/README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the README's first sh block");
    assert!(
        block.contains("pip install") && block.contains("python run.py"),
        "{block}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let real_home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let keep = |name: &str, default: &str| {
        std::env::var(name).unwrap_or_else(|_| format!("{real_home}/{default}"))
    };
    let cache = std::path::Path::new(&python)
        .ancestors()
        .nth(3)
        .unwrap()
        .join("pip-cache");
    let path: Vec<String> = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.contains("/venv/") && !d.is_empty())
        .map(str::to_string)
        .collect();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", block])
        .current_dir(tmp.path())
        .env_clear()
        .env("PATH", path.join(":"))
        .env("HOME", &home)
        .env("RUSTUP_HOME", keep("RUSTUP_HOME", ".rustup"))
        .env("CARGO_HOME", keep("CARGO_HOME", ".cargo"))
        .env("PIP_CACHE_DIR", &cache)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_PROGRESS_BAR", "off")
        .env("ZENML_ANALYTICS_OPT_IN", "false")
        .env("STEPRUNNER", root())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    use crate::common::tail;
    assert!(
        out.status.success(),
        "the README's block failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        tail(&stdout),
        tail(&stderr)
    );
    // What run.py prints: the run's status, the model loaded back, the runner's folder.
    let line = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line:\n{}", tail(&stdout)))
            .to_string()
    };
    assert!(line("run training-").ends_with(": completed"), "{stdout}");
    let model: serde_json::Value = serde_json::from_str(&line("model: ")).unwrap();
    assert_eq!(model["rows"], 200.0, "{model}");
    assert!(
        (model["slope"].as_f64().unwrap() - 3.0).abs() < 0.2,
        "{model}"
    );
    // The step ran through the runner installed by the wheel, under its limits.
    let run_dir = std::path::PathBuf::from(line("runner run folder: "));
    assert!(run_dir.starts_with(&home), "{}", run_dir.display());
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["status"], "succeeded", "{result}");
    let memory = crate::common::limit(&result, "memory");
    assert_eq!(memory["value"], 512_000_000u64, "{memory}");
    let stdout_log = std::fs::read_to_string(run_dir.join("stdout.log")).unwrap();
    assert!(stdout_log.contains("parameter"), "{stdout_log}");
    let venv_runner = tmp.path().join("my-project/.venv/bin/runner");
    assert!(
        venv_runner.exists(),
        "the wheel's runner is in the virtualenv"
    );
    assert!(
        crate::common::processes_with(&run_dir.display().to_string()).is_empty(),
        "a process of the run is left"
    );
}
