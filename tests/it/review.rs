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
    // Every shipped manifest, so that a new flavor cannot come without cases.
    let flavors: Vec<String> = std::fs::read_dir(root().join("manifests"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".yaml").map(str::to_owned)
        })
        .collect();
    assert!(flavors.len() >= 8, "{flavors:?}");
    for flavor in flavors {
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

/// What a reviewer reads is what runs, in every reviewed file: a case or a policy
/// holding a hidden character is refused where it is, and a golden plan shows a
/// step's hidden character escaped (its JSON form keeps it as it is).
#[test]
fn reviewed_files_hide_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "t.yaml", &format!("{MANIFEST}{IGNORES_ALL}"));
    write(
        d,
        "h.case.yaml",
        "manifest: t.yaml\ninfo:\n  entrypoint: [\"true\"]  # \u{202e}looks fine\n\
         expect:\n  - {at: launch.limits.pids, equals: 4096}\n",
    );
    // `runner test CASE` refuses it (exit 2), at `FILE:AT` with `what`.
    let refused = |case: &str, file: &str, at: &str, what: &str| {
        let out = Runner::new().arg("test").arg(d.join(case)).run();
        out.expect_code(2);
        let want = format!("{}:{at}: hidden character {what}", d.join(file).display());
        assert!(out.stdout.contains(&want), "no `{want}` in {}", out.stdout);
    };
    refused(
        "h.case.yaml",
        "h.case.yaml",
        "3:27",
        "U+202E (RIGHT-TO-LEFT OVERRIDE)",
    );

    // A case's step info in a file of its own is reviewed too.
    write(
        d,
        "info.yaml",
        "entrypoint: [\"true\"]\nstep: {name: a\u{200b}b}\n",
    );
    write(
        d,
        "i.case.yaml",
        "manifest: t.yaml\ninfo: info.yaml\nexpect:\n  - {at: launch.limits.pids, equals: 4096}\n",
    );
    refused(
        "i.case.yaml",
        "info.yaml",
        "2:15",
        "U+200B (ZERO WIDTH SPACE)",
    );

    write(d, "policy.yaml", "version: 1\nrules: []\n# \u{2066}note\n");
    let out = Runner::new()
        .args(["validate", "--policy"])
        .arg(d.join("policy.yaml"))
        .arg(d.join("t.yaml"))
        .run();
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("hidden character U+2066 (LEFT-TO-RIGHT ISOLATE)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("policy.yaml:3:3"), "{}", out.stderr);

    write(
        d,
        "g.case.yaml",
        "manifest: t.yaml\ninfo:\n  step: {name: \"ok\\u202egnp.exe\"}\n  entrypoint: [\"true\"]\n\
         golden: g.plan.yaml\n",
    );
    Runner::new()
        .args(["test", "--update"])
        .arg(d.join("g.case.yaml"))
        .run()
        .expect_code(0);
    let golden = std::fs::read_to_string(d.join("g.plan.yaml")).unwrap();
    assert!(golden.contains("step: ok\\u{202e}gnp.exe\n"), "{golden}");
    assert!(
        golden
            .chars()
            .all(|c| c == '\n' || !c.is_control() && c != '\u{202e}'),
        "{golden}"
    );
}

/// `git …` in `dir`, as a test's own committer.
fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A commit that changes a manifest shows exactly that change in the plans of its
/// cases, the risky ones named, and nothing else; the base is read with git, nothing
/// checked out (the working tree is left as it is).
#[test]
fn diff_at_two_revisions_shows_what_changes_in_what_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("manifests/tests")).unwrap();
    let manifest = |memory: &str, extra: &str| {
        format!(
            "version: 1\nname: t\nlaunch:\n  run:\n    script: |\n      echo start{extra}\n      \
             exec \"$@\"\n  limits:\n    memory: {memory}\n    pids: 100\n{IGNORES_ALL}"
        )
    };
    write(&d.join("manifests"), "t.yaml", &manifest("256MiB", ""));
    write(&d.join("manifests"), "other.yaml", &manifest("64MiB", ""));
    for (case, m) in [("t", "t"), ("other", "other")] {
        write(
            &d.join("manifests/tests"),
            &format!("{case}.case.yaml"),
            &format!(
                "manifest: ../{m}.yaml\ninfo:\n  entrypoint: [\"true\"]\nexpect:\n  - {{at: launch.limits.pids, equals: 100}}\n"
            ),
        );
    }
    git(d, &["init", "-q"]);
    git(d, &["add", "."]);
    git(d, &["commit", "-q", "-m", "base"]);
    // The change under review: more memory, and shell text put in unquoted.
    write(
        &d.join("manifests"),
        "t.yaml",
        &manifest("1GiB", " {{ 'x' | safe }}"),
    );
    let run = |args: &[&str]| Runner::new().current_dir(d).arg("diff").args(args).run();
    let out = run(&["--git", "HEAD"]);
    out.expect_code(0);
    let text = &out.stdout;
    assert!(
        text.starts_with("runner diff: HEAD → working tree\n"),
        "{text}"
    );
    assert!(
        text.contains("launch.limits.memory_bytes: 268435456 → 1073741824  ! a limit is raised"),
        "{text}"
    );
    assert!(text.contains("! shell text is put in unquoted"), "{text}");
    assert!(text.contains("  - echo start\n"), "{text}");
    assert!(text.contains("  + echo start x\n"), "{text}");
    assert!(
        !text.contains("other ("),
        "an unchanged case is not listed: {text}"
    );
    assert!(
        text.contains("manifests/other.yaml: 0 of 1 cases change, 0 risky"),
        "{text}"
    );
    assert!(
        out.stderr
            .contains("1 of 2 cases change what runs; 2 risky changes"),
        "{}",
        out.stderr
    );

    // Committed, the same change between two revisions; as a pull-request comment.
    git(d, &["commit", "-q", "-am", "more memory"]);
    let out = run(&["--git", "HEAD~1", "HEAD", "--format", "markdown"]);
    out.expect_code(0);
    assert!(
        out.stdout.starts_with("### `runner diff`: HEAD~1 → HEAD\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("| `manifests/t.yaml` | 1 | 1 | 2 |"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("⚠️ a limit is raised"),
        "{}",
        out.stdout
    );
    let out = run(&["--git", "HEAD~1", "HEAD", "--format", "json"]);
    let cases = out.json();
    let t = cases
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["case"] == "t")
        .unwrap();
    assert_eq!(t["status"], "changed");
    assert_eq!(t["changes"][0]["risk"], "limit_raised");
    // Nothing changes between a revision and itself.
    let out = run(&["--git", "HEAD", "HEAD"]);
    assert!(
        out.stderr.contains("0 of 2 cases change what runs"),
        "{}",
        out.stderr
    );
    run(&["--git", "no-such-rev"]).expect_code(2);
}

/// One policy file, the same rules: what `validate` finds in the manifests, `test` in
/// the cases' plans and `launch` in the step's plan, before any work (no run folder,
/// no cache entry); `$RUNNER_POLICY` is the same as `--policy`.
#[test]
fn a_policy_is_enforced_alike_by_validate_test_and_launch() {
    let policy = "examples/policy/policy.yaml";
    let out = runner(["validate", "--policy", policy, "manifests/"]);
    out.expect_code(2);
    for f in ["kubernetes", "sagemaker", "vertex"] {
        assert!(
            out.stderr.contains(&format!(
                "error: policy: flavor `{f}` is not allowed\n  --> manifests/{f}.yaml:3:7"
            )),
            "{}",
            out.stderr
        );
    }
    assert!(
        out.stderr
            .contains("the rule is at examples/policy/policy.yaml:16:5"),
        "{}",
        out.stderr
    );
    runner(["validate", "manifests/"]).expect_code(0);

    let out = runner(["test", "--policy", policy]);
    out.expect_code(1);
    assert!(
        out.stdout.contains("policy: the step must set `account` (`--set account=…`): jobs are charged to a project account"),
        "{}",
        out.stdout
    );

    // Launch: refused before prepare, exit 2, nothing made.
    for how in ["flag", "env"] {
        let r = Runner::new();
        let home = r.home().to_path_buf();
        let r = match how {
            "flag" => r.args(["launch", "--policy", policy]),
            _ => r.env("RUNNER_POLICY", policy).arg("launch"),
        };
        let out = r
            .args(["manifests/venv.yaml", "--memory", "100GiB", "--", "true"])
            .run();
        out.expect_code(2);
        assert!(
            out.stderr.starts_with(
                "error: policy: the step asks for 100.0 GiB of memory, over 64.0 GiB: more than \
                 64 GiB needs the platform team's approval\n  --> manifests/venv.yaml:"
            ),
            "{how}: {}",
            out.stderr
        );
        for made in ["runs", "cache"] {
            assert!(!home.join(made).exists(), "{how}: `{made}` was made");
        }
    }
    // A wrong policy is an error in the policy file, not a pass.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p.yaml",
        "version: 1\nrules:\n  - max_mem: 1GiB\n",
    );
    let out = runner([
        "validate".as_ref(),
        "--policy".as_ref(),
        dir.path().join("p.yaml").as_os_str(),
        "manifests/local.yaml".as_ref(),
    ]);
    out.expect_code(2);
    assert!(out.stderr.contains("p.yaml:3:5"), "{}", out.stderr);
}
