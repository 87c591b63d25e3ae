//! Flavor test cases (`runner test`): a step info rendered through a manifest, and
//! what must hold in the plan — a committed golden plan, assertions on its fields, or
//! the error the flavor refuses the step with.
//!
//! ```yaml
//! # manifests/tests/slurm-gpu.case.yaml
//! manifest: ../slurm.yaml          # relative to this file
//! info:                            # a step info as `--info` takes it, or a file name
//!   resources: {gpu_count: 2}
//!   entrypoint: [python3, train.py]
//! golden: slurm-gpu.plan.yaml      # the whole plan, as `runner render` prints it
//! expect:
//!   - {at: launch.command.script, contains: "--gres=gpu:2"}
//!   - {at: launch.command.script, lacks: "--partition"}
//!   - {at: launch.limits.memory_bytes, equals: 536870912}
//! # or: refused: {at: "slurm.yaml:40", message: "…"}
//! ```
//!
//! Cases render the same everywhere: a fixed home (`/runner-home`), run id, working
//! directory (`/src`, the default source folder) and environment (a `PATH` of no
//! programs), so a golden plan is the same on every machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::home::Home;
use crate::manifest::{Flavor, Source};
use crate::plan::Plan;
use crate::render::Where;
use crate::step_info::StepInfo;

/// A case file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    manifest: PathBuf,
    #[serde(default)]
    info: Option<Value>,
    #[serde(default)]
    golden: Option<PathBuf>,
    #[serde(default)]
    expect: Vec<Expect>,
    #[serde(default)]
    refused: Option<Refused>,
}

/// One assertion on a plan field (a dotted path; list items by their index).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    at: String,
    #[serde(default)]
    equals: Option<Value>,
    #[serde(default)]
    contains: Option<Value>,
    #[serde(default)]
    lacks: Option<Value>,
    #[serde(default)]
    absent: Option<bool>,
}

/// The flavor must refuse the step: its first error is at `FILE:LINE` (the file's name
/// or its end, `slurm.yaml:40`) and says `message`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Refused {
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// How a case came out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    Failed,
    /// The case file itself is wrong (it cannot say whether the flavor is right).
    Invalid,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    pub case: String,
    pub file: PathBuf,
    pub manifest: Option<PathBuf>,
    pub verdict: Verdict,
    /// What did not hold, one line each.
    pub failures: Vec<String>,
    /// A mismatching golden plan: a unified diff, golden (`-`) to rendered (`+`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The golden file was written (`--update`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub updated: bool,
}

/// Case files under `paths` (files as given; folders walked for `*.case.yaml`), sorted.
pub fn find(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> std::io::Result<()> {
        if depth > 16 {
            return Ok(());
        }
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out, depth + 1)?;
            } else if is_case(&p) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out, 0)?;
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A flavor test file: a case (`*.case.yaml`) or a golden plan (`*.plan.yaml`). Folder
/// walks for manifests (`runner validate DIR`) leave them out.
pub fn is_test_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    [".case.yaml", ".case.yml", ".plan.yaml", ".plan.yml"]
        .iter()
        .any(|s| name.ends_with(s))
}

fn is_case(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".case.yaml") || name.ends_with(".case.yml")
}

/// The fixed place every case renders at.
pub const HOME: &str = "/runner-home";
pub const CWD: &str = "/src";
pub const RUN_ID: &str = "20260101T000000-case-00000000";

/// A case read, with its manifest and step info.
struct Loaded {
    spec: CaseFile,
    manifest: PathBuf,
    src: Source,
    info: StepInfo,
}

/// Reads a file of a case (the case, its manifest, its step info): from the working
/// tree, or from a git revision (`runner diff`).
pub type Reader<'a> = &'a dyn Fn(&Path) -> Result<String, String>;

/// [`Reader`] of the working tree, with the input caps of every manifest read.
pub fn working_tree(p: &Path) -> Result<String, String> {
    Source::read(p)
        .map(|s| s.text)
        .map_err(|e| crate::diag::error_chain(&e))
}

fn load(file: &Path, read: Reader<'_>) -> Result<Loaded, String> {
    let text = read(file)?;
    let case = Source::parse(file, text).map_err(|e| crate::diag::error_chain(&e))?;
    if let Some(d) = crate::validate::hidden_characters(&case).first() {
        return Err(located(d));
    }
    let spec: CaseFile = serde_json::from_value(case.doc.value.clone())
        .map_err(|e| format!("not a test case: {e}"))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let manifest = base.join(&spec.manifest);
    let info = match &spec.info {
        None => StepInfo::parse(file, "{}".into()),
        Some(Value::String(f)) => {
            let f = base.join(f);
            let text = read(&f)?;
            if let Some(d) = crate::validate::hidden_characters_in(&f, &text).first() {
                return Err(located(d));
            }
            StepInfo::parse(&f, text)
        }
        Some(v) => StepInfo::parse(file, v.to_string()),
    };
    let info = match info {
        Ok(i) => i,
        Err(crate::step_info::InfoError::Invalid(d)) => {
            let why = d.first().map(|d| d.message.clone()).unwrap_or_default();
            return Err(format!("its step info is invalid: {why}"));
        }
        Err(e) => return Err(format!("its step info: {}", crate::diag::error_chain(&e))),
    };
    let src =
        Source::parse(&manifest, read(&manifest)?).map_err(|e| crate::diag::error_chain(&e))?;
    Ok(Loaded {
        spec,
        manifest,
        src,
        info,
    })
}

/// The plan a case renders to (as JSON), read through `read`: its manifest's, or the
/// error its manifest refuses the step with. `Err` when the case itself cannot be read.
pub fn plan_of(file: &Path, read: Reader<'_>) -> Result<(PathBuf, Result<Value, String>), String> {
    let l = load(file, read)?;
    let plan = render_fixed(&l.src, &l.info)
        .map(|(_, p)| serde_json::to_value(&p).unwrap_or(Value::Null))
        .map_err(|d| d.first().map(located).unwrap_or_default());
    Ok((l.manifest, plan))
}

/// Render `info` through the manifest at the fixed place (see the module's note): the
/// checked flavor and its plan.
pub fn render_fixed(
    src: &Source,
    info: &StepInfo,
) -> Result<(Flavor, Plan), Vec<crate::diag::Diagnostic>> {
    let flavor = crate::validate::check_flavor(src)?;
    let home = Home::new(HOME);
    let at = Where {
        home: &home,
        run_dir: None,
        run_id: RUN_ID.into(),
        cwd: PathBuf::from(CWD),
        env: BTreeMap::from([
            ("PATH".into(), "/nonexistent/runner-test/bin".into()),
            ("HOME".into(), "/home/runner".into()),
        ]),
    };
    let plan = crate::render::render_bounded(src, &flavor, info, &at).map_err(|e| e.0)?;
    Ok((flavor, plan))
}

/// The plan as `runner render` prints it (YAML), for golden files and diffs.
pub fn plan_yaml(plan: &Plan) -> String {
    plan.to_yaml().unwrap_or_else(|e| format!("# {e}\n"))
}

/// Run one case; with `update`, (re)write its golden plan instead of comparing.
pub fn run(file: &Path, update: bool, policy: Option<&crate::policy::Policy>) -> CaseResult {
    let name = file.file_name().and_then(|s| s.to_str()).unwrap_or("case");
    let case = name
        .strip_suffix(".case.yaml")
        .or_else(|| name.strip_suffix(".case.yml"))
        .unwrap_or(name)
        .to_string();
    let mut out = CaseResult {
        case,
        file: file.to_path_buf(),
        manifest: None,
        verdict: Verdict::Passed,
        failures: Vec::new(),
        diff: None,
        updated: false,
    };
    let invalid = |mut out: CaseResult, why: String| {
        out.verdict = Verdict::Invalid;
        out.failures.push(why);
        out
    };
    let Loaded {
        spec,
        manifest,
        src,
        info,
    } = match load(file, &working_tree) {
        Ok(l) => l,
        Err(why) => return invalid(out, why),
    };
    let base = file.parent().unwrap_or(Path::new("."));
    out.manifest = Some(manifest);
    match (render_fixed(&src, &info), &spec.refused) {
        (Ok((flavor, plan)), None) => {
            if let Some(p) = policy {
                for d in p.check_plan(&src, &flavor, &info, &plan) {
                    out.failures.push(located(&d));
                }
            }
            let value = serde_json::to_value(&plan).unwrap_or(Value::Null);
            for e in &spec.expect {
                if let Some(f) = check(&value, e) {
                    out.failures.push(f);
                }
            }
            if let Some(g) = &spec.golden {
                golden(&mut out, &base.join(g), &plan_yaml(&plan), update);
            }
            if spec.golden.is_none() && spec.expect.is_empty() {
                return invalid(
                    out,
                    "it expects nothing: give `golden:`, `expect:` or `refused:`".into(),
                );
            }
        }
        (Ok(_), Some(_)) => out
            .failures
            .push("the flavor should refuse this step, and renders it".into()),
        (Err(diags), None) => {
            let first = diags.first();
            out.failures.push(format!(
                "the flavor refuses this step: {}",
                first.map_or(String::new(), located)
            ));
        }
        (Err(diags), Some(r)) => {
            let first = diags.first();
            let at = first.map(located).unwrap_or_default();
            if let Some(want) = &r.at {
                let where_ = first.map(|d| format!("{}:{}", d.file.display(), d.line));
                if !where_
                    .as_deref()
                    .is_some_and(|w| w.ends_with(want.as_str()))
                {
                    out.failures.push(format!("refused at {at}, not at {want}"));
                }
            }
            if let Some(want) = &r.message
                && !first.is_some_and(|d| d.message.contains(want.as_str()))
            {
                out.failures
                    .push(format!("refused with {at}, which does not say `{want}`"));
            }
        }
    }
    if !out.failures.is_empty() && out.verdict == Verdict::Passed {
        out.verdict = Verdict::Failed;
    }
    out
}

fn located(d: &crate::diag::Diagnostic) -> String {
    format!("{}:{}:{}: {}", d.file.display(), d.line, d.col, d.message)
}

/// Compare with (or, updating, write) the golden plan.
fn golden(out: &mut CaseResult, path: &Path, rendered: &str, update: bool) {
    let current = std::fs::read_to_string(path).ok();
    if current.as_deref() == Some(rendered) {
        return;
    }
    if update {
        match crate::util::write_file_atomic(path, rendered.as_bytes()) {
            Ok(()) => out.updated = true,
            Err(e) => out
                .failures
                .push(format!("cannot write {}: {e}", path.display())),
        }
        return;
    }
    match current {
        None => out.failures.push(format!(
            "no golden plan at {} (`runner test --update` writes it)",
            path.display()
        )),
        Some(old) => {
            out.failures.push(format!(
                "the plan differs from {} (`--update` takes the new one)",
                path.display()
            ));
            let diff = similar::TextDiff::from_lines(old.as_str(), rendered)
                .unified_diff()
                .context_radius(3)
                .header("golden", "rendered")
                .to_string();
            out.diff = Some(diff);
        }
    }
}

/// The value at a dotted path (`launch.command.argv.0`).
fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |v, key| match v {
        Value::Object(m) => m.get(key),
        Value::Array(a) => a.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// Whether `hay` holds `needle`: a substring of a string, an item of a list (or a
/// substring of one of its strings), a key of an object.
fn holds(hay: &Value, needle: &Value) -> bool {
    match (hay, needle) {
        (Value::String(h), Value::String(n)) => h.contains(n.as_str()),
        (Value::Array(items), n) => items.iter().any(|i| i == n || holds(i, n)),
        (Value::Object(m), Value::String(n)) => m.contains_key(n),
        (h, n) => h == n,
    }
}

/// What is wrong with `e` in `plan`, if anything.
fn check(plan: &Value, e: &Expect) -> Option<String> {
    let got = lookup(plan, &e.at).filter(|v| !v.is_null());
    let show = |v: &Value| crate::util::shorten(&v.to_string(), 200);
    if let Some(absent) = e.absent {
        return match (absent, got) {
            (true, Some(v)) => Some(format!("`{}` should be absent, and is {}", e.at, show(v))),
            (false, None) => Some(format!("`{}` should be there, and is absent", e.at)),
            _ => None,
        };
    }
    if e.equals.is_none() && e.contains.is_none() && e.lacks.is_none() {
        return Some(format!(
            "`{}`: the expectation says nothing (`equals`, `contains`, `lacks` or `absent`)",
            e.at
        ));
    }
    let Some(v) = got else {
        if e.lacks.is_some() && e.equals.is_none() && e.contains.is_none() {
            return None;
        }
        return Some(format!("`{}` is absent", e.at));
    };
    if let Some(want) = &e.equals
        && v != want
    {
        return Some(format!("`{}` is {}, not {}", e.at, show(v), show(want)));
    }
    if let Some(want) = &e.contains
        && !holds(v, want)
    {
        return Some(format!(
            "`{}` does not contain {}: {}",
            e.at,
            show(want),
            show(v)
        ));
    }
    if let Some(want) = &e.lacks
        && holds(v, want)
    {
        return Some(format!("`{}` contains {}: {}", e.at, show(want), show(v)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expect(v: Value) -> Expect {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn expectations_hold_or_say_why_not() {
        let plan = json!({"launch": {"command": {"argv": ["sbatch", "--gres=gpu:2"], "script": null},
                          "limits": {"memory_bytes": 512}}});
        let ok = [
            json!({"at": "launch.command.argv", "contains": "--gres=gpu:2"}),
            json!({"at": "launch.command.argv.0", "equals": "sbatch"}),
            json!({"at": "launch.command.argv", "lacks": "--partition"}),
            json!({"at": "launch.command.script", "absent": true}),
            json!({"at": "launch.limits.memory_bytes", "equals": 512}),
            json!({"at": "launch.nothing", "lacks": "x"}),
        ];
        for e in ok {
            assert_eq!(check(&plan, &expect(e.clone())), None, "{e}");
        }
        let bad = [
            (
                json!({"at": "launch.command.argv", "contains": "--gres=gpu:4"}),
                "does not contain",
            ),
            (
                json!({"at": "launch.limits.memory_bytes", "equals": 1024}),
                "is 512, not 1024",
            ),
            (
                json!({"at": "launch.command.argv", "lacks": "sbatch"}),
                "contains \"sbatch\"",
            ),
            (
                json!({"at": "launch.limits", "absent": true}),
                "should be absent",
            ),
            (json!({"at": "prepare", "equals": 1}), "is absent"),
            (json!({"at": "launch"}), "says nothing"),
        ];
        for (e, says) in bad {
            let got = check(&plan, &expect(e.clone())).unwrap_or_default();
            assert!(got.contains(says), "{e}: {got}");
        }
    }
}
