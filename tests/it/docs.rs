//! What the documentation shows works as shown: every manifest in a README validates,
//! and the README's command that runs a real step does run one.

use std::path::{Path, PathBuf};

use crate::common::{Runner, needs_root, root};

/// The documents a new user reads.
const DOCS: &[&str] = &[
    "README.md",
    "integrations/zenml/README.md",
    "examples/zenml/README.md",
    ".ci/engines/README.md",
    "fuzz/README.md",
];

/// Fenced ```yaml blocks that are flavor manifests (they have `version:` and `launch:`),
/// with the line each starts on.
fn manifests_in(doc: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut block: Option<(usize, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        let fence = line.trim_start();
        match &mut block {
            None if fence.starts_with("```yaml") || fence.starts_with("```yml") => {
                block = Some((i + 2, String::new()));
            }
            Some((start, text)) if fence.starts_with("```") => {
                if text.lines().any(|l| l.starts_with("version:"))
                    && text.lines().any(|l| l.starts_with("launch:"))
                {
                    out.push((*start, std::mem::take(text)));
                }
                block = None;
            }
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn every_manifest_in_the_docs_validates() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    for doc in DOCS {
        let path = root().join(doc);
        let Ok(text) = std::fs::read_to_string(&path) else {
            panic!("{doc} is listed but missing");
        };
        for (line, manifest) in manifests_in(&text) {
            // Named after where it is, so a failure points at the document.
            let name = format!("{}-line-{line}.yaml", doc.replace('/', "_"));
            let file: PathBuf = dir.path().join(&name);
            std::fs::write(&file, &manifest).unwrap();
            let out = Runner::new().args(["validate"]).arg(&file).run();
            assert_eq!(
                out.code, 0,
                "the manifest at {doc}:{line} does not validate:\n{}",
                out.stderr
            );
            checked.push(format!("{doc}:{line}"));
        }
    }
    // The README's own example must be among them: an extractor that finds nothing
    // would pass this test vacuously.
    assert!(
        checked.iter().any(|c| c.starts_with("README.md:")),
        "no manifest found in README.md: {checked:?}"
    );
}

/// The README's first command, as written: `cargo run --release -- launch
/// manifests/venv.yaml --info examples/hello/step.yaml` (with the binary the tests built).
#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn the_readme_step_runs_end_to_end() {
    if !needs_root() {
        return;
    }
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let command = readme
        .lines()
        .find(|l| l.starts_with("cargo run --release -- launch"))
        .expect("the README shows the command that runs a real step");
    let args: Vec<&str> = command
        .trim_start_matches("cargo run --release -- ")
        .split_whitespace()
        .collect();
    assert_eq!(args[0], "launch", "{command}");
    let out = Runner::new().args(&args).arg("--json").run();
    out.expect_code(0);
    let r = out.json();
    assert_eq!(r["status"], "succeeded", "{r}");
    let stdout = std::fs::read_to_string(r["logs"]["stdout"].as_str().unwrap()).unwrap();
    assert!(
        !stdout.trim().is_empty(),
        "the example step printed nothing"
    );
    for name in ["memory", "cpus"] {
        let l = crate::common::limit(&r, name);
        assert!(
            l["enforced_by"].as_str().unwrap().starts_with("cgroup"),
            "{l}"
        );
    }
    assert!(Path::new(r["logs"]["stdout"].as_str().unwrap()).exists());
}
