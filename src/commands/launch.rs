//! `runner launch` (in the foreground, or `--detach`ed under its own supervisor) and
//! the hidden `runner supervise` that a detached launch leaves running.

use std::collections::BTreeMap;
use std::path::Path;

use steprunner::cli::{LaunchArgs, StepArgs};
use steprunner::home::RunDir;
use steprunner::plan::Plan;
use steprunner::{exec, report, runs};

use super::check::{load, render_plan, render_plan_while};
use super::{CliError, Exit, chain};

fn options(args: &LaunchArgs) -> exec::Options {
    exec::Options {
        quiet: args.quiet,
        json: args.json,
        log_limit: args.log_limit,
        best_effort: args.best_effort_limits,
        stdin: args.stdin,
    }
}

fn not_started(e: &dyn std::error::Error) -> CliError {
    CliError::runner(chain(e)).hint("the step was not started")
}

pub fn launch(manifest: &str, step: &StepArgs, args: &LaunchArgs) -> Result<Exit, CliError> {
    let loaded = load(manifest, step)?;
    // A launch in the foreground on cgroup v1 makes its cgroups while the plan renders;
    // a detached one leaves them to its supervisor.
    let (plan, ready) = match exec::Ready::beside_render().filter(|_| !args.detach) {
        Some(fs) => {
            let (plan, ready) = render_plan_while(&loaded, args.run_dir.clone(), |run_id| {
                exec::Ready::new(run_id, Ok(fs))
            })?;
            (plan, Some(ready))
        }
        None => (render_plan(&loaded, args.run_dir.clone())?, None),
    };
    // Before any work: the organisation's rules, and what the step asks for and will
    // not get.
    if let Some(policy) = steprunner::policy::Policy::from_arg(args.policy.as_deref())
        .map_err(CliError::Diagnostics)?
    {
        let broken = policy.check_plan(&loaded.source, &loaded.flavor, &loaded.info, &plan);
        if !broken.is_empty() {
            return Err(CliError::Diagnostics(broken));
        }
    }
    if args.strict && !plan.ignored.is_empty() {
        let mut e = CliError::invalid(format!(
            "the step asks for what the flavor `{}` ignores (`--strict`)",
            plan.flavor
        ));
        for i in &plan.ignored {
            e = e.hint(i.clone());
        }
        return Err(e);
    }
    for i in &plan.ignored {
        eprintln!("{}", steprunner::report::warning_line(i));
    }
    exec::make_run_dir(&plan).map_err(|e| not_started(&e))?;
    if let Some(stamp) = loaded.stamp {
        stamp.write();
    }
    if args.detach {
        return detach(&plan, &loaded.info.environment, args);
    }
    let _ = runs::write_pid(&RunDir::new(&plan.dirs.run), std::process::id() as i32);
    run_and_report(&plan, &loaded.info.environment, &options(args), ready)
}

/// The detached supervisor: run the plan in `dir` and write its result.
pub fn supervise(dir: &Path, args: &LaunchArgs) -> Result<Exit, CliError> {
    let mut opts = options(args);
    opts.quiet = true;
    opts.json = false;
    let plan = runs::read_plan(&RunDir::new(dir)).map_err(|e| CliError::runner(chain(&e)))?;
    // Recorded here too (the launching caller records it as well, maybe a moment later):
    // the file must be there before the step starts, to be protected from it.
    let _ = runs::write_pid(&RunDir::new(dir), std::process::id() as i32);
    // The step's own variables reach this process through its environment only.
    let secrets = plan
        .secret_env
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
        .collect();
    run_and_report(&plan, &secrets, &opts, None)
}

/// Execute a plan whose run folder exists, write `result.json`, print, and exit with
/// the step's code.
fn run_and_report(
    plan: &Plan,
    secrets: &BTreeMap<String, String>,
    opts: &exec::Options,
    ready: Option<exec::Ready>,
) -> Result<Exit, CliError> {
    let outcome = match exec::execute(plan, secrets, opts, ready) {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&plan.dirs.run);
            return Err(not_started(&e));
        }
    };
    let result_path = RunDir::new(&plan.dirs.run).result();
    if let Err(e) = report::write_atomic(&result_path, &outcome) {
        eprintln!(
            "warning: cannot write `{}`: {}",
            result_path.display(),
            chain(&e)
        );
    }
    eprintln!("{}", report::summary(&outcome));
    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcome).expect("outcome serializes")
        );
    }
    Ok(Exit::step(outcome.exit_code))
}

/// Start a supervisor for the run and return at once.
fn detach(
    plan: &Plan,
    secrets: &BTreeMap<String, String>,
    args: &LaunchArgs,
) -> Result<Exit, CliError> {
    use std::os::unix::process::CommandExt;
    let run = RunDir::new(&plan.dirs.run);
    let spawned = std::env::current_exe().and_then(|exe| {
        let log = std::fs::File::create(run.supervisor_log())?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("supervise").arg(run.path());
        if let Some(l) = args.log_limit {
            cmd.arg("--log-limit").arg(l.to_string());
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
                nix::unistd::setsid()?;
                Ok(())
            });
        }
        cmd.spawn()
    });
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(run.path());
            return Err(CliError::runner(format!(
                "cannot start the supervisor: {e}"
            )));
        }
    };
    if let Err(e) = runs::write_pid(&run, child.id() as i32) {
        eprintln!("warning: cannot record the supervisor's pid: {e}");
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"run_id": plan.run_id, "run_dir": run.path()})
        );
    } else {
        println!("{}", plan.run_id);
        eprintln!(
            "runner: started `{}`; `runner wait {}` waits for it, `runner logs -f {}` follows it",
            plan.run_id, plan.run_id, plan.run_id
        );
    }
    Ok(Exit::Success)
}
