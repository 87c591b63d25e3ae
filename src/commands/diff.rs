//! `runner diff`: what changes in what runs. Every flavor test case rendered at two
//! revisions (`--git BASE [HEAD]`, the files read with `git show`, nothing checked
//! out; HEAD defaults to the working tree), or one step info through two manifests
//! (`OLD NEW`); their plans compared field by field, the risky changes first.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use steprunner::cases;
use steprunner::cli::{DiffFormat, StepArgs};
use steprunner::plandiff::{self, Change};
use steprunner::step_info::StepInfo;

use super::{CliError, Exit, plural};

/// One case at both sides.
#[derive(serde::Serialize)]
struct CaseDiff {
    case: String,
    file: PathBuf,
    manifest: Option<PathBuf>,
    /// `changed`, `unchanged`, `added` (no such case at the base), `removed`, or
    /// `error` (the case cannot be read at one side).
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    changes: Vec<Change>,
}

/// `a/b/../c` → `a/c`, without touching the filesystem (git paths).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

fn git(root: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    String::from_utf8(out.stdout).map_err(|_| "git printed non-UTF-8 text".to_string())
}

/// A side of the comparison: a revision, or the working tree.
struct Side<'a> {
    root: &'a Path,
    rev: Option<&'a str>,
}

impl Side<'_> {
    fn name(&self) -> &str {
        self.rev.unwrap_or("working tree")
    }

    fn read(&self, p: &Path) -> Result<String, String> {
        let rel = normalize(p);
        match self.rev {
            None => cases::working_tree(&self.root.join(&rel)),
            Some(rev) => {
                let spec = format!("{rev}:{}", rel.display());
                let text = git(self.root, &["show", &spec])
                    .map_err(|e| format!("`{}` at {rev}: {e}", rel.display()))?;
                if text.len() as u64 > steprunner::manifest::MAX_MANIFEST_BYTES {
                    return Err(format!("`{}` at {rev} is too large", rel.display()));
                }
                Ok(text)
            }
        }
    }

    /// The case files this side has under `dirs` (paths relative to the root).
    fn cases(&self, dirs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
        match self.rev {
            None => {
                let abs: Vec<PathBuf> = dirs.iter().map(|d| self.root.join(d)).collect();
                let found = cases::find(&abs).map_err(|e| e.to_string())?;
                Ok(found
                    .into_iter()
                    .filter_map(|f| f.strip_prefix(self.root).ok().map(Path::to_path_buf))
                    .collect())
            }
            Some(rev) => {
                let mut args = vec!["ls-tree", "-r", "--name-only", rev, "--"];
                let dirs_s: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                args.extend(dirs_s.iter().map(String::as_str));
                Ok(git(self.root, &args)?
                    .lines()
                    .map(PathBuf::from)
                    .filter(|p| p.to_string_lossy().ends_with(".case.yaml"))
                    .collect())
            }
        }
    }
}

fn case_name(p: &Path) -> String {
    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("case");
    n.strip_suffix(".case.yaml").unwrap_or(n).to_string()
}

/// Both sides' plans of one case, compared.
fn compare(
    file: &Path,
    base: &Side<'_>,
    head: &Side<'_>,
    at_base: bool,
    at_head: bool,
) -> CaseDiff {
    let mut d = CaseDiff {
        case: case_name(file),
        file: file.to_path_buf(),
        manifest: None,
        status: "unchanged",
        error: None,
        changes: Vec::new(),
    };
    let mut manifest = None;
    let mut plan = |side: &Side<'_>| -> Result<Value, String> {
        let (m, plan) = cases::plan_of(file, &|p| side.read(p))?;
        manifest = Some(normalize(&m));
        // A refusal is a plan of its own: what the flavor says instead of running.
        Ok(plan.unwrap_or_else(|e| serde_json::json!({"refused": e})))
    };
    let (old, new) = match (at_base, at_head) {
        (true, true) => (plan(base), plan(head)),
        (false, true) => {
            d.status = "added";
            (Ok(Value::Null), plan(head))
        }
        (true, false) => {
            d.status = "removed";
            (plan(base), Ok(Value::Null))
        }
        (false, false) => return d,
    };
    d.manifest = manifest;
    match (old, new) {
        // A new or a removed case: its status says it all.
        (Ok(_), Ok(_)) if d.status != "unchanged" => {}
        (Ok(o), Ok(n)) => {
            d.changes = plandiff::diff(&o, &n);
            if d.status == "unchanged" && !d.changes.is_empty() {
                d.status = "changed";
            }
        }
        (Err(e), _) => {
            d.status = "error";
            d.error = Some(format!("at {}: {e}", base.name()));
        }
        (_, Err(e)) => {
            d.status = "error";
            d.error = Some(format!("at {}: {e}", head.name()));
        }
    }
    d
}

pub fn diff(
    git_revs: &[String],
    manifests: &[PathBuf],
    cases_dirs: &[PathBuf],
    step: &StepArgs,
    format: DiffFormat,
) -> Result<Exit, CliError> {
    let (title, diffs) = match (git_revs, manifests) {
        ([base, rest @ ..], []) if rest.len() <= 1 => {
            let cwd = std::env::current_dir()
                .map_err(|e| CliError::runner(format!("cannot read the current directory: {e}")))?;
            let root = git(&cwd, &["rev-parse", "--show-toplevel"])
                .map_err(|e| CliError::invalid(format!("not in a git repository: {e}")))?;
            let root = PathBuf::from(root.trim());
            for rev in git_revs {
                git(
                    &root,
                    &[
                        "rev-parse",
                        "--verify",
                        "--quiet",
                        &format!("{rev}^{{commit}}"),
                    ],
                )
                .map_err(|_| CliError::invalid(format!("`{rev}` is not a revision here")))?;
            }
            // Case folders relative to the repository's root.
            let cwd_rel = cwd
                .canonicalize()
                .ok()
                .and_then(|c| {
                    Some(
                        c.strip_prefix(root.canonicalize().ok()?)
                            .ok()?
                            .to_path_buf(),
                    )
                })
                .unwrap_or_default();
            let dirs: Vec<PathBuf> = cases_dirs
                .iter()
                .map(|d| normalize(&cwd_rel.join(d)))
                .collect();
            let base = Side {
                root: &root,
                rev: Some(base),
            };
            let head = Side {
                root: &root,
                rev: rest.first().map(String::as_str),
            };
            let in_base = base.cases(&dirs).map_err(CliError::invalid)?;
            let in_head = head.cases(&dirs).map_err(CliError::invalid)?;
            let mut all: Vec<PathBuf> = in_base.iter().chain(&in_head).cloned().collect();
            all.sort();
            all.dedup();
            if all.is_empty() {
                return Err(CliError::invalid(format!(
                    "no test cases in {} at either side",
                    dirs.iter().map(|d| format!("`{}`", d.display())).collect::<Vec<_>>().join(", ")
                ))
                .hint("`runner diff` compares the plans of flavor test cases (`*.case.yaml`, see `runner test`)"));
            }
            let diffs = all
                .iter()
                .map(|f| compare(f, &base, &head, in_base.contains(f), in_head.contains(f)))
                .collect();
            (format!("{} → {}", base.name(), head.name()), diffs)
        }
        ([], [old, new]) => {
            let info = StepInfo::resolve(step.info.as_deref(), &step.overrides())
                .map_err(|e| CliError::invalid(e.to_string()))?;
            let plan = |m: &Path| -> Result<Value, CliError> {
                let src = steprunner::manifest::Source::read(m)
                    .map_err(|e| CliError::invalid(steprunner::diag::error_chain(&e)))?;
                Ok(match cases::render_fixed(&src, &info) {
                    Ok((_, p)) => serde_json::to_value(&p).unwrap_or(Value::Null),
                    Err(d) => serde_json::json!({"refused": d.first().map(|d| d.message.clone())}),
                })
            };
            let changes = plandiff::diff(&plan(old)?, &plan(new)?);
            let d = CaseDiff {
                case: "step".into(),
                file: new.clone(),
                manifest: Some(new.clone()),
                status: if changes.is_empty() {
                    "unchanged"
                } else {
                    "changed"
                },
                error: None,
                changes,
            };
            (format!("{} → {}", old.display(), new.display()), vec![d])
        }
        _ => {
            return Err(CliError::invalid(
                "give `--git BASE [HEAD]` (every test case at two revisions) or two manifests `OLD NEW`",
            ));
        }
    };
    print(&title, &diffs, format);
    Ok(if diffs.iter().any(|d| d.status == "error") {
        Exit::Invalid
    } else {
        Exit::Success
    })
}

/// `changed, 3 changes`; `added`.
fn what(d: &CaseDiff) -> String {
    match d.status {
        "changed" => format!(
            "changed, {} change{}",
            d.changes.len(),
            plural(d.changes.len())
        ),
        s => s.to_string(),
    }
}

fn risky(d: &CaseDiff) -> Vec<&'static str> {
    let mut r: Vec<&'static str> = d
        .changes
        .iter()
        .filter_map(|c| c.risk.map(|r| r.describe()))
        .collect();
    r.dedup();
    r
}

fn print(title: &str, diffs: &[CaseDiff], format: DiffFormat) {
    let changed: Vec<&CaseDiff> = diffs.iter().filter(|d| d.status != "unchanged").collect();
    let n_risky: usize = diffs
        .iter()
        .map(|d| d.changes.iter().filter(|c| c.risk.is_some()).count())
        .sum();
    // Risky cases first, then the others that change, in path order.
    let mut order = changed.clone();
    order.sort_by_key(|d| (risky(d).is_empty(), d.status == "error", d.file.clone()));
    match format {
        DiffFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(diffs).expect("diffs serialize")
        ),
        DiffFormat::Human => {
            println!("runner diff: {title}");
            for d in &order {
                let risk = risky(d);
                let note = if risk.is_empty() {
                    String::new()
                } else {
                    format!(" ! {}", risk.join("; "))
                };
                println!("{} ({}): {}{note}", d.case, d.file.display(), what(d));
                if let Some(e) = &d.error {
                    println!("    {e}");
                }
                for c in &d.changes {
                    print!("{}", plandiff::show(c, "    "));
                }
            }
            summary(diffs, false, &mut |line| println!("{line}"));
            eprintln!(
                "runner diff: {} of {} case{} change what runs; {n_risky} risky change{}",
                changed.len(),
                diffs.len(),
                plural(diffs.len()),
                plural(n_risky)
            );
        }
        DiffFormat::Markdown => {
            println!("### `runner diff`: {title}\n");
            println!(
                "**{} of {} cases change what runs; {n_risky} risky change{}.**\n",
                changed.len(),
                diffs.len(),
                plural(n_risky)
            );
            println!("| manifest | cases | changed | risky |\n|---|---|---|---|");
            summary(diffs, true, &mut |line| println!("{line}"));
            println!();
            for d in &order {
                let risk = risky(d);
                let flag = if risk.is_empty() {
                    String::new()
                } else {
                    format!(" ⚠️ {}", risk.join("; "))
                };
                println!(
                    "<details><summary><code>{}</code>: {}{flag}</summary>\n",
                    d.case,
                    what(d)
                );
                println!("```diff");
                if let Some(e) = &d.error {
                    println!("! {e}");
                }
                for c in &d.changes {
                    print!("{}", plandiff::show(c, ""));
                }
                println!("```\n</details>\n");
            }
        }
    }
}

/// One line per manifest: its cases, how many change, how many risky changes (a table
/// row in markdown).
fn summary(diffs: &[CaseDiff], markdown: bool, out: &mut dyn FnMut(String)) {
    let mut by: std::collections::BTreeMap<String, (usize, usize, usize)> = Default::default();
    for d in diffs {
        let m = d
            .manifest
            .as_ref()
            .map_or("?".into(), |m| m.display().to_string());
        let e = by.entry(m).or_default();
        e.0 += 1;
        e.1 += usize::from(d.status != "unchanged");
        e.2 += d.changes.iter().filter(|c| c.risk.is_some()).count();
    }
    for (m, (cases, changed, risky)) in by {
        out(if markdown {
            format!("| `{m}` | {cases} | {changed} | {risky} |")
        } else {
            format!("{m}: {changed} of {cases} cases change, {risky} risky")
        });
    }
}
