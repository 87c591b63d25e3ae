//! `runner`: run ML pipeline steps from declarative YAML flavor manifests.
//!
//! This file parses arguments, calls the command, prints diagnostics and maps
//! the outcome to the process exit code (see README.md, "Exit codes").

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use steprunner::{diag, exec, render, report, runs, units, util, validate};

mod commands;

use steprunner::cli::{Cli, Cmd, LaunchArgs, PlanFormat, SchemaKind, StepArgs};
use steprunner::diag::Format;
use steprunner::manifest::{Flavor, Source};
use steprunner::step_info::{InfoError, StepInfo};

/// Exit code for invalid manifests, step info or usage.
pub const EXIT_INVALID: u8 = 2;
/// Exit code when the runner itself could not do its work.
pub const EXIT_RUNNER: u8 = 125;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Launch { .. } | Cmd::Supervise { .. }) {
        // Printing commands end quietly when their reader goes away (`runner ps | head`).
        // `launch` keeps SIGPIPE ignored: a closed stdout must not kill a supervisor.
        // SAFETY: setting a signal disposition before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Cmd::Validate { paths, format } => validate_cmd(&paths, format),
        Cmd::Render {
            manifest,
            step,
            format,
            run_dir,
        } => render_cmd(&manifest, &step, format, run_dir),
        Cmd::Launch {
            manifest,
            step,
            opts,
        } => launch_cmd(&manifest, &step, &opts),
        Cmd::Status { run, json } => commands::status(&run, json),
        Cmd::Wait { run, json, timeout } => commands::wait(&run, json, timeout.as_deref()),
        Cmd::Cancel { run, no_wait } => commands::cancel(&run, no_wait),
        Cmd::Logs {
            run,
            follow,
            stderr,
        } => commands::logs(&run, follow, stderr),
        Cmd::Ps { json, all } => commands::ps(json, all),
        Cmd::Cache { command } => commands::cache_cmd(command),
        Cmd::Flavor { command } => commands::flavor_cmd(command),
        Cmd::Supervise { dir, opts } => match launch_opts(&opts) {
            Ok(mut o) => {
                o.quiet = true;
                o.json = false;
                commands::supervise(&dir, o)
            }
            Err(code) => code,
        },
        Cmd::Schema { which } => {
            let text = match which {
                SchemaKind::Flavor => validate::FLAVOR_SCHEMA,
                SchemaKind::StepInfo => validate::STEP_INFO_SCHEMA,
                SchemaKind::Result => report::SCHEMA,
            };
            print!("{text}");
            ExitCode::SUCCESS
        }
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "runner", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// Files named on the command line, and `*.yaml`/`*.yml` under named folders, sorted.
fn manifest_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            out.push(dir.to_path_buf());
            return;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out);
        } else {
            out.push(p.clone());
        }
    }
    out
}

fn validate_cmd(paths: &[PathBuf], format: Format) -> ExitCode {
    let files = manifest_files(paths);
    let mut all = Vec::new();
    let mut bad_files = 0;
    for f in &files {
        if let Err(diags) = validate::check_file(f) {
            bad_files += 1;
            all.extend(diags);
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
    if all.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A manifest path, or the name of a registered flavor.
fn resolve_manifest(arg: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(arg);
    if p.exists() || arg.contains('/') || arg.ends_with(".yaml") || arg.ends_with(".yml") {
        return Ok(p);
    }
    let registered = util::runner_home()
        .join("flavors")
        .join(format!("{arg}.yaml"));
    if registered.exists() {
        return Ok(registered);
    }
    Err(format!(
        "no manifest file or registered flavor named `{arg}`"
    ))
}

/// Everything before execution: load and check the manifest and step info, render.
pub struct Loaded {
    pub source: Source,
    pub flavor: Flavor,
    pub info: StepInfo,
    /// Set when the manifest was checked in full: write it once the manifest was used.
    pub stamp: Option<validate::Stamp>,
}

fn load(manifest: &str, step: &StepArgs) -> Result<Loaded, ExitCode> {
    let path = resolve_manifest(manifest).map_err(|e| {
        eprintln!("error: {e}\n  = hint: pass a path to a manifest file, or register one with `runner flavor register`");
        ExitCode::from(EXIT_INVALID)
    })?;
    let stamps = validate::stamps_dir(&util::runner_home());
    let (source, flavor, stamp) =
        validate::check_file_remembered(&path, &stamps).map_err(|diags| {
            diag::emit(&diags, Format::Human);
            ExitCode::from(EXIT_INVALID)
        })?;
    let info = StepInfo::resolve(step.info.as_deref(), &step.overrides()).map_err(|e| {
        match e {
            InfoError::Invalid(diags) => diag::emit(&diags, Format::Human),
            InfoError::Load(l) => {
                let p = step.info.as_deref().unwrap_or(Path::new("-"));
                diag::emit(&[validate::load_diagnostic(p, &l)], Format::Human)
            }
            other => eprintln!("error: {other}"),
        }
        ExitCode::from(EXIT_INVALID)
    })?;
    Ok(Loaded {
        source,
        flavor,
        info,
        stamp,
    })
}

fn render_plan(l: &Loaded, run_dir: Option<PathBuf>) -> Result<steprunner::plan::Plan, ExitCode> {
    let home = util::runner_home();
    let cwd = std::env::current_dir().map_err(|e| {
        eprintln!("error: cannot read the current directory: {e}");
        ExitCode::from(EXIT_RUNNER)
    })?;
    let at = render::Where {
        home: &home,
        run_id: util::new_run_id(&l.info.step.name),
        run_dir: run_dir.map(|d| cwd.join(d)),
        cwd,
        env: std::env::vars().collect(),
    };
    render::render(&l.source, &l.flavor, &l.info, &at).map_err(|e| {
        match e {
            render::RenderError::Located(diags) => diag::emit(&diags, Format::Human),
            other => eprintln!("error: {other}"),
        }
        ExitCode::from(EXIT_INVALID)
    })
}

fn render_cmd(
    manifest: &str,
    step: &StepArgs,
    format: PlanFormat,
    run_dir: Option<PathBuf>,
) -> ExitCode {
    let result = load(manifest, step).and_then(|l| Ok((render_plan(&l, run_dir)?, l.stamp)));
    let plan = match result {
        Ok((p, stamp)) => {
            if let Some(stamp) = stamp {
                stamp.write();
            }
            p
        }
        Err(code) => return code,
    };
    match format {
        PlanFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&plan).expect("plan serializes")
        ),
        PlanFormat::Yaml => match serde_saphyr::to_string(&plan) {
            Ok(s) if s.ends_with('\n') => print!("{s}"),
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: cannot print the plan as YAML: {e}");
                return ExitCode::from(EXIT_RUNNER);
            }
        },
    }
    ExitCode::SUCCESS
}

pub use steprunner::diag::error_chain;

fn launch_opts(args: &LaunchArgs) -> Result<exec::Options, ExitCode> {
    let log_limit = args
        .log_limit
        .as_deref()
        .map(units::parse_bytes)
        .transpose()
        .map_err(|e| {
            eprintln!("error: --log-limit: {e}");
            ExitCode::from(EXIT_INVALID)
        })?;
    Ok(exec::Options {
        quiet: args.quiet,
        json: args.json,
        log_limit,
        best_effort: args.best_effort_limits,
        stdin: args.stdin,
    })
}

fn launch_cmd(manifest: &str, step: &StepArgs, args: &LaunchArgs) -> ExitCode {
    let opts = match launch_opts(args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let loaded = match load(manifest, step) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let plan = match render_plan(&loaded, args.run_dir.clone()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Err(e) = exec::make_run_dir(&plan) {
        eprintln!(
            "error: {}\n  = hint: the step was not started",
            error_chain(&e)
        );
        return ExitCode::from(EXIT_RUNNER);
    }
    if let Some(stamp) = loaded.stamp {
        stamp.write();
    }
    if args.detach {
        return detach(&plan, &loaded.info.environment, args);
    }
    // SAFETY: getpid has no preconditions.
    let _ = runs::write_pid(&plan.dirs.run, unsafe { libc::getpid() });
    run_and_report(&plan, &loaded.info.environment, &opts)
}

/// Execute a plan whose run folder exists, write `result.json`, print, and exit with the step's code.
pub fn run_and_report(
    plan: &steprunner::plan::Plan,
    secrets: &std::collections::BTreeMap<String, String>,
    opts: &exec::Options,
) -> ExitCode {
    let outcome = match exec::execute(plan, secrets, opts) {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "error: {}\n  = hint: the step was not started",
                error_chain(&e)
            );
            let _ = std::fs::remove_dir_all(&plan.dirs.run);
            return ExitCode::from(EXIT_RUNNER);
        }
    };
    let result_path = plan.dirs.run.join(runs::RESULT_FILE);
    if let Err(e) = report::write_atomic(&result_path, &outcome) {
        eprintln!(
            "warning: cannot write `{}`: {}",
            result_path.display(),
            error_chain(&e)
        );
    }
    eprintln!("{}", report::summary(&outcome));
    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcome).expect("outcome serializes")
        );
    }
    ExitCode::from(outcome.exit_code.clamp(0, 255) as u8)
}

/// Start a supervisor for the run and return at once.
fn detach(
    plan: &steprunner::plan::Plan,
    secrets: &std::collections::BTreeMap<String, String>,
    args: &LaunchArgs,
) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let run = &plan.dirs.run;
    let spawned = std::env::current_exe().and_then(|exe| {
        let log = std::fs::File::create(run.join("supervisor.log"))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("supervise").arg(run);
        if let Some(l) = &args.log_limit {
            cmd.arg("--log-limit").arg(l);
        }
        if args.best_effort_limits {
            cmd.arg("--best-effort-limits");
        }
        // Values of the step's variables travel in the environment, never in argv or files.
        cmd.envs(secrets)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        // SAFETY: setsid is async-signal-safe; the supervisor leaves our session so a
        // closing terminal or the caller's exit does not reach it.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        cmd.spawn()
    });
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start the supervisor: {e}");
            let _ = std::fs::remove_dir_all(run);
            return ExitCode::from(EXIT_RUNNER);
        }
    };
    if let Err(e) = runs::write_pid(run, child.id() as i32) {
        eprintln!("warning: cannot record the supervisor's pid: {e}");
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"run_id": plan.run_id, "run_dir": run})
        );
    } else {
        println!("{}", plan.run_id);
        eprintln!(
            "runner: started `{}`; `runner wait {}` waits for it, `runner logs -f {}` follows it",
            plan.run_id, plan.run_id, plan.run_id
        );
    }
    ExitCode::SUCCESS
}
