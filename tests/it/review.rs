//! Reviewing flavors: `runner test` (flavor test cases, golden plans) and `runner diff`.

use std::path::Path;

use crate::common::{IGNORES_ALL, Runner, root, runner};

/// Every shipped flavor's cases pass.
#[test]
fn shipped_flavor_cases_pass() {
    let out = runner(["test"]);
    out.expect_code(0);
    let passed = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("PASS "))
        .count();
    let cases = std::fs::read_dir(root().join("manifests/tests"))
        .unwrap()
        .filter(|e| {
            let e = e.as_ref().unwrap();
            e.file_name().to_string_lossy().ends_with(".case.yaml")
        })
        .count();
    assert!(cases >= 12, "every shipped flavor has cases");
    assert_eq!(passed, cases, "{}", out.stdout);
    for flavor in [
        "local",
        "venv",
        "docker",
        "slurm",
        "kubernetes",
        "sagemaker",
        "vertex",
    ] {
        assert!(
            out.stdout.contains(&format!("PASS    {flavor}-")),
            "no case for {flavor}: {}",
            out.stdout
        );
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const MANIFEST: &str = "version: 1\nname: t\nsettings:\n  type: object\n  properties:\n    \
    pids: {type: integer, default: 4096}\nlaunch:\n  run: [\"{{ entrypoint }}\"]\n  limits:\n    \
    pids: \"{{ settings.pids }}\"\n";

/// A manifest change shows as a plan diff, fails the case (exit 1), and `--update`
/// takes it; a failed assertion says what was found; a case file that is itself wrong
/// is exit 2.
#[test]
fn a_changed_plan_fails_with_a_readable_diff_until_updated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "t.yaml", &format!("{MANIFEST}{IGNORES_ALL}"));
    write(
        d,
        "pids.case.yaml",
        "manifest: t.yaml\ninfo:\n  entrypoint: [\"true\"]\ngolden: pids.plan.yaml\n\
         expect:\n  - {at: launch.limits.pids, equals: 4096}\n",
    );
    let run = |args: &[&str]| Runner::new().arg("test").args(args).arg(d).run();
    // No golden yet: a failure that says how to make it.
    let out = run(&[]);
    out.expect_code(1);
    assert!(out.stdout.contains("no golden plan at"), "{}", out.stdout);
    run(&["--update"]).expect_code(0);
    run(&[]).expect_code(0);

    write(
        d,
        "t.yaml",
        &format!("{}{IGNORES_ALL}", MANIFEST.replace("4096", "8192")),
    );
    let out = run(&[]);
    out.expect_code(1);
    assert!(out.stdout.contains("FAIL    pids"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("`launch.limits.pids` is 8192, not 4096"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("--- golden\n"), "{}", out.stdout);
    assert!(out.stdout.contains("-    pids: 4096\n"), "{}", out.stdout);
    assert!(out.stdout.contains("+    pids: 8192\n"), "{}", out.stdout);
    assert!(
        out.stderr.contains("1 case: 0 passed, 1 failed"),
        "{}",
        out.stderr
    );
    // In a pull request: one annotation per failure.
    let out = run(&["--format", "github"]);
    out.expect_code(1);
    assert!(
        out.stdout.starts_with("::error file=") && out.stdout.contains("title=runner test pids::"),
        "{}",
        out.stdout
    );
    let out = run(&["--format", "json"]);
    let results = out.json();
    assert_eq!(results[0]["verdict"], "failed");
    assert!(
        results[0]["diff"]
            .as_str()
            .unwrap()
            .contains("+    pids: 8192")
    );

    // A wrong case file is not a failing flavor.
    write(d, "bad.case.yaml", "manifest: t.yaml\nexpekt: []\n");
    let out = run(&[]);
    out.expect_code(2);
    assert!(out.stdout.contains("INVALID bad"), "{}", out.stdout);
    assert!(
        out.stdout.contains("unknown field `expekt`"),
        "{}",
        out.stdout
    );
}

/// A case may require the flavor to refuse a step, at a place and with a message.
#[test]
fn a_refusal_is_a_case_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "t.yaml", &format!("{MANIFEST}{IGNORES_ALL}"));
    let case = |refused: &str| {
        write(
            d,
            "r.case.yaml",
            &format!(
                "manifest: t.yaml\ninfo:\n  settings: {{pids: x}}\n  entrypoint: [\"true\"]\nrefused: {refused}\n"
            ),
        );
        Runner::new().arg("test").arg(d.join("r.case.yaml")).run()
    };
    case("{at: \"t.yaml:6\", message: \"setting `pids`\"}").expect_code(0);
    let out = case("{at: \"t.yaml:9\"}");
    out.expect_code(1);
    assert!(out.stdout.contains("refused at "), "{}", out.stdout);
    assert!(out.stdout.contains("not at t.yaml:9"), "{}", out.stdout);
}
