//! The ZenML integration's own tests (pytest, `integrations/zenml/tests`) against a real
//! ZenML, run with the `runner` built here. `.ci/engines/zenml.sh start` provides the
//! Python with ZenML in `STEPRUNNER_ZENML_PYTHON`; without it the test fails under
//! `CI=true` and skips, saying so, otherwise.

use std::process::Command;

use crate::common::root;

#[test]
fn zenml_integration_passes_its_tests_against_a_real_zenml() {
    let Some(python) = std::env::var_os("STEPRUNNER_ZENML_PYTHON").filter(|p| !p.is_empty()) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "STEPRUNNER_ZENML_PYTHON is not set and CI=true forbids skipping: \
             run `eval \"$(bash .ci/engines/zenml.sh start)\"` first"
        );
        eprintln!(
            "skipped: STEPRUNNER_ZENML_PYTHON is not set (`bash .ci/engines/zenml.sh start`)"
        );
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
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", python.to_string_lossy()));
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
