//! `runner validate` and `runner render`, and what `launch` shares with them: finding
//! a manifest (a path or a registered flavor), checking it, reading the step info,
//! and rendering the plan.

use std::path::{Path, PathBuf};

use steprunner::cli::{PlanFormat, StepArgs};
use steprunner::diag::{self, Format};
use steprunner::home::Home;
use steprunner::manifest::{Flavor, Source};
use steprunner::plan::Plan;
use steprunner::render::{self, Where};
use steprunner::stamps::{self, Stamp};
use steprunner::step_info::{InfoError, StepInfo};
use steprunner::{util, validate};

use super::{CliError, Exit, plural};

/// The extensions of manifests found in folders; a file named on the command line is
/// read whatever its name (JSON is YAML).
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Files named on the command line, and manifests under named folders, sorted. A
/// folder with none is an error: checking nothing is not "all valid".
fn manifest_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    /// Each folder once, by its device and inode: a symlink loop ends the walk there.
    fn walk(dir: &Path, out: &mut Vec<PathBuf>, seen: &mut std::collections::HashSet<(u64, u64)>) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(dir)
            && !seen.insert((m.dev(), m.ino()))
        {
            return;
        }
        let Ok(rd) = std::fs::read_dir(dir) else {
            out.push(dir.to_path_buf());
            return;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out, seen);
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e))
                && !steprunner::cases::is_test_file(&p)
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let before = out.len();
            walk(p, &mut out, &mut std::collections::HashSet::new());
            if out.len() == before {
                let e = CliError::invalid(format!(
                    "no manifests in `{}`: no *.yaml, *.yml or *.json file in it or below",
                    p.display()
                ));
                let cases = steprunner::cases::find(std::slice::from_ref(p)).unwrap_or_default();
                return Err(if cases.is_empty() {
                    e
                } else {
                    e.hint(format!(
                        "it holds flavor test cases (*.case.yaml), which are not manifests: \
                         `runner test {}` runs them",
                        p.display()
                    ))
                });
            }
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// `runner test`: every case, a line each (and the diff of a mismatching plan); exit 1
/// when one fails, 2 when a case file is itself wrong.
pub fn test(
    paths: &[PathBuf],
    update: bool,
    format: Format,
    policy: Option<&Path>,
) -> Result<Exit, CliError> {
    use steprunner::cases::{self, Verdict};
    let policy = steprunner::policy::Policy::from_arg(policy).map_err(CliError::Diagnostics)?;
    let files = cases::find(paths).map_err(|e| {
        CliError::invalid(format!("cannot list the test cases: {e}"))
            .hint("`runner test [PATH…]` takes case files or folders (default `manifests/tests`)")
    })?;
    if files.is_empty() {
        return Err(CliError::invalid(format!(
            "no test cases in {}",
            paths.iter().map(|p| format!("`{}`", p.display())).collect::<Vec<_>>().join(", ")
        ))
        .hint("a case is a `*.case.yaml` file with `manifest:`, `info:` and `golden:`, `expect:` or `refused:`"));
    }
    let results: Vec<cases::CaseResult> = files
        .iter()
        .map(|f| cases::run(f, update, policy.as_ref()))
        .collect();
    let count = |v: Verdict| results.iter().filter(|r| r.verdict == v).count();
    let (passed, failed, invalid) = (
        count(Verdict::Passed),
        count(Verdict::Failed),
        count(Verdict::Invalid),
    );
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&results).expect("results serialize")
        ),
        Format::Github => {
            for r in results.iter().filter(|r| r.verdict != Verdict::Passed) {
                for f in &r.failures {
                    println!(
                        "::error file={},line=1,title=runner test {}::{}",
                        r.file.display(),
                        r.case,
                        f.replace('%', "%25").replace('\n', "%0A")
                    );
                }
            }
        }
        Format::Human => {
            for r in &results {
                let mark = match (&r.verdict, r.updated) {
                    (Verdict::Passed, true) => "UPDATED",
                    (Verdict::Passed, false) => "PASS",
                    (Verdict::Failed, _) => "FAIL",
                    (Verdict::Invalid, _) => "INVALID",
                };
                println!("{mark:<7} {} ({})", r.case, r.file.display());
                for f in &r.failures {
                    println!("        {f}");
                }
                if let Some(d) = &r.diff {
                    for line in d.lines() {
                        println!("        {line}");
                    }
                }
            }
            eprintln!(
                "runner test: {} case{}: {passed} passed, {failed} failed{}",
                results.len(),
                plural(results.len()),
                if invalid > 0 {
                    format!(", {invalid} invalid")
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(if invalid > 0 {
        Exit::Invalid
    } else if failed > 0 {
        Exit::Failed
    } else {
        Exit::Success
    })
}

/// How many manifests `validate` checks together (see there).
const TRIAL_CHUNK: usize = 256;

pub fn validate(
    paths: &[PathBuf],
    format: Format,
    policy: Option<&Path>,
) -> Result<Exit, CliError> {
    let policy = steprunner::policy::Policy::from_arg(policy).map_err(CliError::Diagnostics)?;
    let files = manifest_files(paths)?;
    let mut all = Vec::new();
    let mut bad_files = 0;
    // A chunk of manifests at a time: their trial renders share a bounded child, and
    // what is held at once stays bounded however many files there are.
    for chunk in files.chunks(TRIAL_CHUNK) {
        let checked: Vec<_> = chunk.iter().map(|f| validate::check_file(f)).collect();
        let valid: Vec<_> = checked
            .iter()
            .filter_map(|c| c.as_ref().ok().map(|(source, flavor)| (source, flavor)))
            .collect();
        let mut trials = validate::trial_renders(&valid).into_iter();
        for c in checked {
            let diags = match c {
                Err(diags) => diags,
                // Valid to launch: is it complete for review, and does a template run
                // away whatever the step?
                Ok((source, flavor)) => {
                    let mut diags = trials.next().unwrap_or_default();
                    diags.extend(validate::check_review(&source, &flavor));
                    if let Some(p) = &policy {
                        diags.extend(p.check_manifest(&source, &flavor));
                    }
                    diags
                }
            };
            if !diags.is_empty() {
                bad_files += 1;
                all.extend(diags);
            }
        }
    }
    diag::emit(&all, format);
    if format == Format::Human {
        if all.is_empty() {
            eprintln!(
                "checked {} manifest{}: all valid",
                files.len(),
                plural(files.len())
            );
        } else {
            eprintln!(
                "checked {} manifest{}: {} error{} in {} file{}",
                files.len(),
                plural(files.len()),
                all.len(),
                plural(all.len()),
                bad_files,
                plural(bad_files)
            );
        }
    }
    Ok(if all.is_empty() {
        Exit::Success
    } else {
        Exit::Invalid
    })
}

/// A manifest path, or the name of a registered flavor. A bare name (no `/`, no
/// `.yaml`/`.yml`/`.json`) only ever names a registered flavor: a file of that name in the
/// working directory never silently wins (write `./NAME` for it).
fn resolve_manifest(home: &Home, arg: &str) -> Result<PathBuf, CliError> {
    let path_like = arg.contains('/')
        || MANIFEST_EXTENSIONS
            .iter()
            .any(|e| arg.ends_with(&format!(".{e}")));
    if path_like {
        return Ok(PathBuf::from(arg));
    }
    if let Some(registered) = steprunner::registry::find(home, arg) {
        return Ok(registered);
    }
    let mut e = CliError::invalid(format!("no registered flavor named `{arg}`"));
    let shipped = PathBuf::from("manifests").join(format!("{arg}.yaml"));
    let names: Vec<String> = steprunner::registry::list(home)
        .into_iter()
        .map(|f| f.name)
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    if Path::new(arg).is_file() {
        e = e.hint(format!("to use the file `{arg}` here, write `./{arg}`"));
    }
    // Manifests in `./manifests`, as in this repository.
    let local: Vec<String> = std::fs::read_dir("manifests")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let p = e.path();
                    (p.extension()? == "yaml")
                        .then(|| p.file_stem()?.to_str().map(str::to_owned))
                        .flatten()
                })
                .collect()
        })
        .unwrap_or_default();
    let local_refs: Vec<&str> = local.iter().map(String::as_str).collect();
    if shipped.is_file() {
        e = e.hint(format!("did you mean `{}`?", shipped.display()));
    } else if let Some(best) = diag::closest(arg, &refs) {
        e = e.hint(format!("did you mean the registered flavor `{best}`?"));
    } else if let Some(best) = diag::closest(arg, &local_refs) {
        e = e.hint(format!("did you mean `manifests/{best}.yaml`?"));
    }
    Err(e.hint("pass a path to a manifest file, or register one with `runner flavor register PATH` (`runner flavor list` shows them)"))
}

/// Everything before execution: the manifest and step info, loaded and checked.
pub struct Loaded {
    pub home: Home,
    pub source: Source,
    pub flavor: Flavor,
    pub info: StepInfo,
    /// Set when the manifest was checked in full: write it once the manifest was used.
    pub stamp: Option<Stamp>,
}

pub fn load(manifest: &str, step: &StepArgs) -> Result<Loaded, CliError> {
    let home = Home::from_env();
    let path = resolve_manifest(&home, manifest)?;
    let (source, flavor, stamp) =
        stamps::check_file(&path, &home).map_err(CliError::Diagnostics)?;
    let info = StepInfo::resolve(step.info.as_deref(), &step.overrides()).map_err(|e| match e {
        InfoError::Invalid(diags) => CliError::Diagnostics(diags),
        InfoError::Load(l) => {
            let p = step.info.as_deref().unwrap_or(Path::new("-"));
            CliError::Diagnostics(vec![validate::load_diagnostic(p, &l)])
        }
        other => CliError::invalid(other.to_string()),
    })?;
    Ok(Loaded {
        home,
        source,
        flavor,
        info,
        stamp,
    })
}

pub fn render_plan(l: &Loaded, run_dir: Option<PathBuf>) -> Result<Plan, CliError> {
    render_plan_while(l, run_dir, |_| ()).map(|(plan, ())| plan)
}

/// [`render_plan`], with `meanwhile` (given the run's id) run while the plan renders
/// ([`render::render_bounded_while`]); its value is dropped with an error.
pub fn render_plan_while<R>(
    l: &Loaded,
    run_dir: Option<PathBuf>,
    meanwhile: impl FnOnce(&str) -> R,
) -> Result<(Plan, R), CliError> {
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::runner(format!("cannot read the current directory: {e}")))?;
    let at = Where {
        home: &l.home,
        run_id: util::new_run_id(&l.info.step.name),
        run_dir: run_dir.map(|d| cwd.join(d)),
        cwd,
        env: std::env::vars().collect(),
    };
    render::render_bounded_while(&l.source, &l.flavor, &l.info, &at, || meanwhile(&at.run_id))
        .map_err(|e| {
            // Not the manifest's fault: the runner's error (125), not an invalid input (2).
            match e.0.iter().find(|d| render::unbounded(d)) {
                Some(d) => {
                    CliError::runner(d.message.clone()).hint(d.hint.clone().unwrap_or_default())
                }
                None => CliError::Diagnostics(e.0),
            }
        })
}

pub fn render(
    manifest: &str,
    step: &StepArgs,
    format: PlanFormat,
    run_dir: Option<PathBuf>,
) -> Result<Exit, CliError> {
    let loaded = load(manifest, step)?;
    let plan = render_plan(&loaded, run_dir)?;
    if let Some(stamp) = loaded.stamp {
        stamp.write();
    }
    match format {
        PlanFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&plan).expect("plan serializes")
        ),
        PlanFormat::Yaml => {
            let s = plan
                .to_yaml()
                .map_err(|e| CliError::runner(format!("cannot print the plan as YAML: {e}")))?;
            print!("{s}");
        }
    }
    Ok(Exit::Success)
}
