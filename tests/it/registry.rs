//! `runner flavor register | list | show`, launching by name, `runner cache list | prune`.

use crate::common::Runner;

fn run(home: &std::path::Path, args: &[&str]) -> crate::common::Output {
    Runner::new().env("RUNNER_HOME", home).args(args).run()
}

/// A file in the working directory named like a flavor does not silently win over the
/// registered flavor: a bare name means a registered flavor, `./NAME` the file.
#[test]
fn a_bare_name_is_a_registered_flavor_never_a_file_of_that_name() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    run(h, &["flavor", "register", "manifests/local.yaml"]).expect_code(0);
    let cwd = tempfile::tempdir().unwrap();
    let mut text =
        std::fs::read_to_string(crate::common::root().join("manifests/venv.yaml")).unwrap();
    text = text.replace("name: venv", "name: impostor");
    std::fs::write(cwd.path().join("local"), &text).unwrap();
    std::fs::write(cwd.path().join("other"), &text).unwrap();
    let by_name = Runner::new()
        .env("RUNNER_HOME", h)
        .current_dir(cwd.path())
        .args(["render", "local", "--format", "json", "--", "true"])
        .run();
    by_name.expect_code(0);
    assert_eq!(by_name.json()["flavor"], "local", "the registered flavor");
    let as_file = Runner::new()
        .env("RUNNER_HOME", h)
        .current_dir(cwd.path())
        .args(["render", "./local", "--format", "json", "--", "true"])
        .run();
    as_file.expect_code(0);
    assert_eq!(
        as_file.json()["flavor"],
        "impostor",
        "the file, asked for as one"
    );
    let unregistered = Runner::new()
        .env("RUNNER_HOME", h)
        .current_dir(cwd.path())
        .args(["render", "other", "--", "true"])
        .run();
    unregistered.expect_code(2);
    assert!(
        unregistered.stderr.contains("write `./other`"),
        "{}",
        unregistered.stderr
    );
}

#[test]
fn registered_flavors_launch_by_name() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let reg = run(h, &["flavor", "register", "manifests/local.yaml"]);
    reg.expect_code(0);
    assert!(
        reg.stderr.contains("registered flavor `local`"),
        "{}",
        reg.stderr
    );
    run(h, &["flavor", "register", "manifests/local.yaml"]).expect_code(0);

    let changed = h.join("local2.yaml");
    let text = std::fs::read_to_string("manifests/local.yaml")
        .unwrap()
        .replace("description: Run", "description: Changed, run");
    std::fs::write(&changed, text).unwrap();
    let clash = run(h, &["flavor", "register", changed.to_str().unwrap()]);
    clash.expect_code(2);
    assert!(
        clash.stderr.contains("already registered") && clash.stderr.contains("--force"),
        "{}",
        clash.stderr
    );
    run(
        h,
        &["flavor", "register", "--force", changed.to_str().unwrap()],
    )
    .expect_code(0);

    let list = run(h, &["flavor", "list"]);
    assert!(
        list.stdout.contains("local") && list.stdout.contains("Changed, run"),
        "{}",
        list.stdout
    );
    let show = run(h, &["flavor", "show", "local"]);
    show.expect_code(0);
    assert!(show.stdout.contains("Changed, run"));
    run(h, &["flavor", "show", "nope"]).expect_code(2);

    // Rendering by name uses the registered manifest.
    let r = run(h, &["render", "local", "--format", "json", "--", "true"]);
    r.expect_code(0);
    assert!(
        r.json()["manifest"]
            .as_str()
            .unwrap()
            .ends_with("flavors/local.yaml")
    );
    let missing = run(h, &["render", "nosuchflavor", "--", "true"]);
    missing.expect_code(2);
    assert!(
        missing
            .stderr
            .contains("no registered flavor named `nosuchflavor`"),
        "{}",
        missing.stderr
    );
    // A near name gets a suggestion: the registered one, or a shipped manifest.
    let near = run(h, &["render", "locl", "--", "true"]);
    near.expect_code(2);
    assert!(
        near.stderr
            .contains("did you mean the registered flavor `local`?"),
        "{}",
        near.stderr
    );
    let shipped = run(h, &["render", "venv", "--", "true"]);
    shipped.expect_code(2);
    assert!(
        shipped
            .stderr
            .contains("did you mean `manifests/venv.yaml`?"),
        "{}",
        shipped.stderr
    );

    let bad = run(
        h,
        &[
            "flavor",
            "register",
            "tests/fixtures/invalid/bad-name-pattern.yaml",
        ],
    );
    bad.expect_code(2);
    assert!(
        bad.stderr.contains("bad-name-pattern.yaml:"),
        "{}",
        bad.stderr
    );
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn cache_entries_are_listed_and_pruned() {
    if !crate::common::needs_root() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let h = home.path();
    let set = format!("out={}", out.path().display());
    run(
        h,
        &[
            "launch",
            "-q",
            "tests/fixtures/launch/staged.yaml",
            "--set",
            &set,
            "--",
            "true",
        ],
    )
    .expect_code(0);
    let list = run(h, &["cache", "list", "--json"]);
    list.expect_code(0);
    let entries = list.json();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    assert_eq!(entries[0]["flavor"], "staged");
    assert_eq!(entries[0]["complete"], true);
    assert_eq!(entries[0]["in_use"], false);
    let dry = run(h, &["cache", "prune", "--older-than", "0s", "--dry-run"]);
    assert!(
        dry.stdout.contains("would remove staged-"),
        "{}",
        dry.stdout
    );
    assert!(std::path::Path::new(entries[0]["path"].as_str().unwrap()).is_dir());
    // The launch remembered its manifest's check; `--older-than` prunes that too.
    let stamps = || std::fs::read_dir(h.join("validated")).unwrap().count();
    assert_eq!(stamps(), 1);
    assert!(
        dry.stderr
            .contains("would remove 1 remembered manifest check "),
        "{}",
        dry.stderr
    );
    assert_eq!(stamps(), 1, "a dry run removes nothing");
    let kept = run(h, &["cache", "prune", "--older-than", "1h"]);
    assert!(
        kept.stderr.contains("removed 0 remembered manifest checks"),
        "{}",
        kept.stderr
    );
    assert_eq!(stamps(), 1, "a fresh stamp is younger than an hour");
    run(h, &["cache", "prune", "--older-than", "0s"]).expect_code(0);
    assert_eq!(stamps(), 0);
    assert!(!std::path::Path::new(entries[0]["path"].as_str().unwrap()).exists());
    assert_eq!(
        run(h, &["cache", "list", "--json"]).json(),
        serde_json::json!([])
    );
    run(h, &["cache", "prune", "--max-size", "lots"]).expect_code(2);
}
