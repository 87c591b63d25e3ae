//! `runner validate` on the invalid-manifest corpus and the shipped manifests, its
//! output formats, and the rest of the command-line surface (`schema`, `completions`,
//! `--help`).

use std::path::Path;

use crate::common::{Runner, check_first_diagnostic, fixtures, root, runner};

const INVALID: &str = "tests/fixtures/invalid";

#[test]
fn corpus_is_large_enough() {
    let n = fixtures(INVALID).len();
    assert!(n >= 32, "only {n} fixtures in {INVALID}");
}

/// Each fixture alone: exit 2, and the first diagnostic is at the header's `LINE:COL`
/// with the header's text. Every mismatch is listed, by fixture, before failing.
#[test]
fn each_invalid_fixture_reports_its_first_diagnostic() {
    let failures: Vec<String> = fixtures(INVALID)
        .iter()
        .filter_map(|f| {
            check_first_diagnostic(f, &runner(["validate".as_ref(), f.as_os_str()])).err()
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} fixture(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// One run over the folder reports every file, not just the first bad one.
#[test]
fn validating_the_folder_reports_every_file() {
    let files = fixtures(INVALID);
    let out = runner(["validate", INVALID]);
    out.expect_code(2);
    let located = out
        .stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("--> "))
        .count();
    assert!(
        located >= files.len(),
        "{located} diagnostics for {} files\n{}",
        files.len(),
        out.stderr
    );
    for f in &files {
        let want = format!("--> {}:", f.display());
        assert!(
            out.stderr.contains(&want),
            "no diagnostic for {}",
            f.display()
        );
    }
    assert!(
        out.stderr
            .contains(&format!("checked {} manifests", files.len())),
        "{}",
        out.stderr
    );
}

#[test]
fn shipped_manifests_are_valid() {
    let out = runner(["validate", "manifests/"]);
    out.expect_code(0);
    assert!(out.stderr.contains("all valid"), "{}", out.stderr);
    assert!(
        out.stdout.is_empty(),
        "stdout is for data only: {}",
        out.stdout
    );
}

#[test]
fn github_format_annotates_file_line_col() {
    let f = format!("{INVALID}/unknown-key-limits-typo.yaml");
    let out = runner(["validate", "--format", "github", &f]);
    out.expect_code(2);
    let line = out.stdout.lines().next().unwrap_or_default();
    let rest = line
        .strip_prefix(&format!("::error file={f},"))
        .unwrap_or_else(|| panic!("not an annotation for {f}: {line:?}"));
    let (props, message) = rest.split_once("::").expect("`::` before the message");
    let props: Vec<(&str, &str)> = props
        .split(',')
        .map(|p| p.split_once('=').expect("key=value"))
        .collect();
    assert_eq!(props, [("line", "7"), ("col", "5")], "{line}");
    assert!(message.starts_with("unknown key `memroy`"), "{line}");
    // The hint rides along, escaped onto the same line.
    assert!(message.contains("(did you mean `memory`?)"), "{line}");
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
}

#[test]
fn json_format_lists_located_diagnostics() {
    let out = runner(["validate", "--format", "json", INVALID]);
    out.expect_code(2);
    let diags = out.json();
    let diags = diags.as_array().expect("a JSON array");
    assert!(diags.len() >= fixtures(INVALID).len());
    for d in diags {
        assert!(
            d["file"].as_str().is_some_and(|f| f.starts_with(INVALID)),
            "{d}"
        );
        assert!(d["line"].as_u64().is_some_and(|l| l >= 1), "{d}");
        assert!(d["col"].as_u64().is_some_and(|c| c >= 1), "{d}");
        assert!(d["message"].as_str().is_some_and(|m| !m.is_empty()), "{d}");
    }
    let first = diags
        .iter()
        .find(|d| d["file"] == format!("{INVALID}/var-step-nmae.yaml"))
        .expect("a diagnostic for var-step-nmae.yaml");
    assert_eq!(
        (first["line"].as_u64(), first["col"].as_u64()),
        (Some(7), Some(20))
    );
    assert_eq!(first["hint"], "did you mean `step.name`?");
}

#[test]
fn json_format_on_valid_manifests_is_an_empty_array() {
    let out = runner(["validate", "--format", "json", "manifests/"]);
    out.expect_code(0);
    assert_eq!(out.json(), serde_json::json!([]));
}

#[test]
fn schemas_print_as_json_and_match_the_committed_files() {
    for (kind, file) in [
        ("flavor", "schemas/flavor.schema.json"),
        ("step-info", "schemas/step-info.schema.json"),
        ("result", "schemas/result.schema.json"),
    ] {
        let out = runner(["schema", kind]);
        out.expect_code(0);
        let printed = out.json();
        assert_eq!(
            printed["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{kind}"
        );
        let committed = std::fs::read_to_string(root().join(file)).expect("schema file");
        assert_eq!(
            out.stdout, committed,
            "`runner schema {kind}` differs from {file}"
        );
    }
}

/// The flavor schema accepts every shipped manifest (`validate` checks it first).
#[test]
fn the_flavor_schema_accepts_every_shipped_manifest() {
    let manifests: Vec<_> = std::fs::read_dir(root().join("manifests"))
        .expect("manifests folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    assert!(manifests.len() >= 2);
    for m in manifests {
        let rel = Path::new("manifests").join(m.file_name().expect("name"));
        runner(["validate".as_ref(), rel.as_os_str()]).expect_code(0);
    }
}

#[test]
fn completions_know_run_ids_and_flavors_and_not_hidden_commands() {
    let hook = runner(["completions", "bash"]);
    hook.expect_code(0);
    assert!(hook.stdout.contains("COMPLETE=\"bash\""), "{}", hook.stdout);
    assert!(
        hook.stdout.contains("complete -o nospace"),
        "{}",
        hook.stdout
    );

    let home = tempfile::tempdir().unwrap();
    let id = "20261201T000000-train-0123abcd";
    std::fs::create_dir_all(home.path().join("runs").join(id)).unwrap();
    std::fs::write(home.path().join("runs").join(id).join("plan.json"), "{}").unwrap();
    Runner::new()
        .env("RUNNER_HOME", home.path())
        .args(["flavor", "register", "manifests/local.yaml"])
        .run()
        .expect_code(0);
    // What the bash hook asks: the words so far, and which one is being completed.
    let complete = |index: &str, words: &[&str]| -> Vec<String> {
        let out = Runner::new()
            .env("RUNNER_HOME", home.path())
            .env("COMPLETE", "bash")
            .env("_CLAP_IFS", "\n")
            .env("_CLAP_COMPLETE_INDEX", index)
            .arg("--")
            .args(words)
            .run();
        out.expect_code(0);
        out.stdout.lines().map(str::to_string).collect()
    };
    let commands = complete("1", &["runner", ""]);
    assert!(commands.contains(&"launch".to_string()), "{commands:?}");
    assert!(!commands.contains(&"supervise".to_string()), "{commands:?}");
    assert!(complete("2", &["runner", "logs", ""]).contains(&id.to_string()));
    assert_eq!(complete("2", &["runner", "status", "2026"]), [id]);
    let manifests = complete("2", &["runner", "launch", "lo"]);
    assert!(
        manifests.iter().any(|c| c.starts_with("local")),
        "{manifests:?}"
    );
    let files = complete("2", &["runner", "launch", "manifests/lo"]);
    assert_eq!(files, ["manifests/local.yaml"]);
    assert!(
        complete("3", &["runner", "flavor", "show", ""])
            .iter()
            .any(|c| c.starts_with("local"))
    );
}

#[test]
fn help_mentions_each_command_and_its_key_flags() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--help"],
            &["validate", "render", "launch", "schema", "completions"],
        ),
        (&["validate", "--help"], &["--format", "github", "json"]),
        (
            &["render", "--help"],
            &[
                "--info",
                "--step",
                "--requirement",
                "--cpus",
                "--memory",
                "--gpus",
                "--set",
                "--format",
                "--run-dir",
            ],
        ),
        (
            &["launch", "--help"],
            &[
                "--info",
                "--json",
                "--run-dir",
                "--best-effort-limits",
                "--log-limit",
            ],
        ),
        (&["schema", "--help"], &["flavor", "step-info", "result"]),
        (&["completions", "--help"], &["bash", "zsh", "fish"]),
    ];
    for (args, words) in cases {
        let out = runner(*args);
        out.expect_code(0);
        for w in *words {
            assert!(
                out.stdout.contains(w),
                "`runner {}` does not mention `{w}`:\n{}",
                args.join(" "),
                out.stdout
            );
        }
    }
}

/// `launch`/`render` remember a manifest text that passed every check (a stamp under
/// `$RUNNER_HOME/validated`), and check any other text in full: an edit that breaks
/// the manifest after a successful render is still a located error, and the stamp of
/// the good text does not vouch for it.
#[test]
fn remembered_validation_checks_every_new_text() {
    use crate::common::Runner;
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("flavor.yaml");
    let good = std::fs::read_to_string(root().join("manifests/local.yaml")).unwrap();
    let render = || {
        Runner::new()
            .env("RUNNER_HOME", home.path())
            .args([
                "render".as_ref(),
                manifest.as_os_str(),
                "--".as_ref(),
                "true".as_ref(),
            ])
            .run()
    };
    let stamps = || {
        std::fs::read_dir(home.path().join("validated"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    std::fs::write(&manifest, &good).unwrap();
    render().expect_code(0);
    assert_eq!(stamps(), 1, "a checked text is remembered");
    render().expect_code(0);
    assert_eq!(stamps(), 1, "the same text is not stamped twice");

    let broken = good.replace("{{ entrypoint }}", "{{ step.nmae }}");
    assert_ne!(broken, good);
    std::fs::write(&manifest, &broken).unwrap();
    for _ in 0..2 {
        let out = render();
        out.expect_code(2);
        assert!(
            out.stderr.contains("did you mean `step.name`"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("flavor.yaml:"), "{}", out.stderr);
    }
    assert_eq!(stamps(), 1, "a failing text is never remembered");
}

/// A folder with no manifest is an error, not "0 manifests: all valid"; JSON
/// manifests in a folder are checked as they are when named.
#[test]
fn folders_without_manifests_say_so_and_json_manifests_count() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let out = runner(["validate", dir.path().to_str().unwrap()]);
    out.expect_code(2);
    assert_eq!(
        out.stderr,
        format!(
            "error: no manifests in `{}`: no *.yaml, *.yml or *.json file in it or below\n",
            dir.path().display()
        )
    );
    std::fs::write(
        dir.path().join("broken.json"),
        "{\"version\": 1, \"name\": \"j\", \"launch\": {\"run\": 3}}\n",
    )
    .unwrap();
    let out = runner(["validate", dir.path().to_str().unwrap()]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("broken.json:1:"),
        "the JSON file was checked: {}",
        out.stderr
    );
    assert!(
        out.stderr
            .ends_with("checked 1 manifest: 1 error in 1 file\n"),
        "{}",
        out.stderr
    );
}

/// What a reviewer reads for each invalid fixture, exactly: the message, the location,
/// the source line with its caret, the hint, and the closing count.
#[test]
fn each_invalid_fixture_reads_as_its_snapshot() {
    for f in fixtures(INVALID) {
        let out = runner(["validate".as_ref(), f.as_os_str()]);
        out.expect_code(2);
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_suffix(name);
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings.bind(|| insta::assert_snapshot!("invalid", out.stderr));
    }
}

/// Templates that run away (an endless loop, values doubling in a loop, a macro
/// calling itself twice per level, chained doubling sets) end in a located error at
/// `validate` and at `render`, instead of taking the machine's memory or time.
#[test]
fn runaway_templates_end_in_located_errors() {
    let bombs = fixtures("tests/fixtures/bombs");
    assert_eq!(bombs.len(), 4);
    let mut failures = Vec::new();
    for f in &bombs {
        for cmd in ["validate", "render"] {
            let mut args: Vec<&std::ffi::OsStr> = vec![cmd.as_ref(), f.as_os_str()];
            if cmd == "render" {
                args.extend([std::ffi::OsStr::new("--"), std::ffi::OsStr::new("true")]);
            }
            let out = runner(args);
            if let Err(e) = check_first_diagnostic(f, &out) {
                failures.push(format!("{cmd}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// One `runner validate` of a folder where each runaway template sits between valid
/// manifests (their trial renders share bounded children): each runaway gets its own
/// located error, and every manifest after one is still checked, and found valid.
#[test]
fn runaway_templates_among_valid_ones_are_each_found_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let bombs = fixtures("tests/fixtures/bombs");
    let mut want = Vec::new();
    for (i, bomb) in bombs.iter().enumerate() {
        for (j, valid) in ["local", "venv"].iter().enumerate() {
            std::fs::copy(
                root().join(format!("manifests/{valid}.yaml")),
                dir.path().join(format!("{i}{j}-{valid}.yaml")),
            )
            .unwrap();
        }
        let name = format!("{i}2-{}", bomb.file_name().unwrap().to_string_lossy());
        let copy = dir.path().join(&name);
        std::fs::copy(root().join(bomb), &copy).unwrap();
        let e = crate::common::expectation(&root().join(bomb));
        want.push((
            format!("{}:{}:{}", copy.display(), e.line, e.col),
            e.message,
        ));
    }
    std::fs::copy(
        root().join("manifests/local.yaml"),
        dir.path().join("9-local.yaml"),
    )
    .unwrap();
    let out = runner(["validate".as_ref(), dir.path().as_os_str()]);
    out.expect_code(2);
    let found: Vec<(&str, &str)> = out
        .stderr
        .lines()
        .zip(out.stderr.lines().skip(1))
        .filter_map(|(message, at)| {
            Some((
                at.trim_start().strip_prefix("--> ")?,
                message.strip_prefix("error: ")?,
            ))
        })
        .collect();
    // Each bomb also lacks `ignores:` (a review finding); no valid manifest has any.
    let runaway: Vec<_> = found
        .iter()
        .filter(|(_, message)| message.contains("more than"))
        .collect();
    assert_eq!(runaway.len(), want.len(), "{}", out.stderr);
    for ((at, message), (want_at, want_message)) in runaway.into_iter().zip(&want) {
        assert_eq!(at, want_at, "{}", out.stderr);
        assert!(message.contains(want_message.as_str()), "{}", out.stderr);
    }
    assert!(
        found.iter().all(|(at, _)| at.contains("-nested-")
            || at.contains("-chained-")
            || at.contains("-macro-")
            || at.contains("-namespace-")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .ends_with("checked 13 manifests: 8 errors in 4 files\n"),
        "{}",
        out.stderr
    );
}

/// Input caps hold for streams, alias expansion is bounded by bytes, and a folder walk
/// survives a symlink loop.
#[test]
fn streams_aliases_and_symlink_loops_are_bounded() {
    let out = runner([
        "render",
        "manifests/local.yaml",
        "--info",
        "/dev/zero",
        "--",
        "true",
    ]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("it is larger than 4.0 MiB"),
        "{}",
        out.stderr
    );

    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "version: 1\nname: a\nlaunch:\n  run: [\"{{{{ entrypoint }}}}\"]\n  env:\n    \
         BIG: &big \"{}\"\n",
        "x".repeat(1 << 20)
    );
    for i in 0..3000 {
        text.push_str(&format!("    V{i}: *big\n"));
    }
    let bomb = dir.path().join("alias.yaml");
    std::fs::write(&bomb, text).unwrap();
    let out = runner(["validate".as_ref(), bomb.as_os_str()]);
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("aliases expand to more than 16 MiB of text"),
        "{}",
        out.stderr
    );

    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("a")).unwrap();
    std::os::unix::fs::symlink(&tree, tree.join("a/up")).unwrap();
    std::fs::copy("manifests/local.yaml", tree.join("local.yaml")).unwrap();
    let out = runner(["validate".as_ref(), tree.as_os_str()]);
    out.expect_code(0);
    assert_eq!(out.stderr, "checked 1 manifest: all valid\n");
}
