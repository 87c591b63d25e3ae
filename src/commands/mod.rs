//! The commands of the `runner` binary, one module each. A command returns
//! `Result<Exit, CliError>`: its exit code, or an error that [`CliError::print`]
//! shows in the one format every error has (`error: …`, then `= hint: …` lines, or
//! located diagnostics).

mod cache;
mod check;
mod diff;
mod flavor;
mod launch;
mod runs;

use std::process::ExitCode;

use steprunner::cli::{Cmd, RunsCmd, SchemaKind};
use steprunner::diag::{self, Diagnostic, Format};
use steprunner::schemas;

/// How `runner` exits (README, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// Invalid manifest, step info or usage.
    Invalid,
    /// `wait --timeout` gave up: the run goes on.
    StillRunning,
    /// What was checked does not hold (`runner test`: a case failed).
    Failed,
    /// The runner itself could not do its work.
    Runner,
    /// The step's own exit code (0 to 255), from its result.
    Step(u8),
}

impl Exit {
    pub const INVALID: u8 = 2;
    /// `EX_TEMPFAIL`: not a timed-out step (124); asking again later may succeed.
    pub const STILL_RUNNING: u8 = 75;
    pub const RUNNER: u8 = 125;

    /// The exit of a step whose result says `code`.
    pub fn step(code: i32) -> Exit {
        Exit::Step(code.clamp(0, 255) as u8)
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(match e {
            Exit::Success => 0,
            Exit::Invalid => Exit::INVALID,
            Exit::StillRunning => Exit::STILL_RUNNING,
            Exit::Failed => 1,
            Exit::Runner => Exit::RUNNER,
            Exit::Step(n) => n,
        })
    }
}

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// Located diagnostics about a manifest or step info (exit 2).
    Diagnostics(Vec<Diagnostic>),
    /// The input is wrong (exit 2).
    Invalid { message: String, hints: Vec<String> },
    /// The runner could not do its work (exit 125).
    Runner { message: String, hints: Vec<String> },
}

impl CliError {
    pub fn invalid(message: impl Into<String>) -> CliError {
        CliError::Invalid {
            message: message.into(),
            hints: Vec::new(),
        }
    }

    pub fn runner(message: impl Into<String>) -> CliError {
        CliError::Runner {
            message: message.into(),
            hints: Vec::new(),
        }
    }

    /// The same error with one more `= hint:` line.
    pub fn hint(mut self, hint: impl Into<String>) -> CliError {
        match &mut self {
            CliError::Invalid { hints, .. } | CliError::Runner { hints, .. } => {
                hints.push(hint.into())
            }
            CliError::Diagnostics(_) => {}
        }
        self
    }

    pub fn exit(&self) -> Exit {
        match self {
            CliError::Diagnostics(_) | CliError::Invalid { .. } => Exit::Invalid,
            CliError::Runner { .. } => Exit::Runner,
        }
    }

    /// Print on stderr, for people.
    pub fn print(&self) {
        match self {
            CliError::Diagnostics(d) => diag::emit(d, Format::Human),
            CliError::Invalid { message, hints } | CliError::Runner { message, hints } => {
                let mut text = format!("error: {message}\n");
                for h in hints {
                    text.push_str(&format!("  = hint: {h}\n"));
                }
                diag::eprint_styled(&text);
            }
        }
    }
}

/// `error: the error: its source: …` for an error with sources.
pub fn chain(e: &dyn std::error::Error) -> String {
    diag::error_chain(e)
}

/// Run one command.
pub fn run(cmd: Cmd) -> Result<Exit, CliError> {
    match cmd {
        Cmd::Validate {
            paths,
            format,
            policy,
        } => check::validate(&paths, format, policy.as_deref()),
        Cmd::Diff {
            git,
            manifests,
            cases,
            step,
            format,
        } => diff::diff(&git, &manifests, &cases, &step, format),
        Cmd::Test {
            paths,
            update,
            format,
            policy,
        } => check::test(&paths, update, format, policy.as_deref()),
        Cmd::Render {
            manifest,
            step,
            format,
            run_dir,
        } => check::render(&manifest, &step, format, run_dir),
        Cmd::Launch {
            manifest,
            step,
            opts,
        } => launch::launch(&manifest, &step, &opts),
        Cmd::Supervise { dir, opts } => launch::supervise(&dir, &opts),
        Cmd::Status { run, json } => runs::status(&run, json),
        Cmd::Wait { run, json, timeout } => runs::wait(&run, json, timeout),
        Cmd::Cancel { run, no_wait } => runs::cancel(&run, no_wait),
        Cmd::Logs {
            run,
            follow,
            stderr,
        } => runs::logs(&run, follow, stderr),
        Cmd::Ps { json, all } => runs::ps(json, all),
        Cmd::Show { run, svg, json } => runs::show(&run, svg.as_deref(), json),
        Cmd::Runs {
            command:
                RunsCmd::Prune {
                    older_than,
                    dry_run,
                    json,
                },
        } => runs::prune(older_than, dry_run, json),
        Cmd::Cache { command } => cache::run(command),
        Cmd::Doctor { json } => {
            let report = steprunner::doctor::examine();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("the report serializes")
                );
            } else {
                print!("{}", steprunner::doctor::human(&report));
            }
            Ok(if report.ready {
                Exit::Success
            } else {
                Exit::Step(1)
            })
        }
        Cmd::Flavor { command } => flavor::run(command),
        Cmd::Schema { which } => {
            print!(
                "{}",
                match which {
                    SchemaKind::Flavor => schemas::FLAVOR_SCHEMA,
                    SchemaKind::StepInfo => schemas::STEP_INFO_SCHEMA,
                    SchemaKind::Result => schemas::RESULT_SCHEMA,
                    SchemaKind::Policy => steprunner::policy::POLICY_SCHEMA,
                }
            );
            Ok(Exit::Success)
        }
        Cmd::Completions { shell } => {
            // The hook calls the binary as it was called here (`runner` on PATH).
            let bin = std::env::args().next().unwrap_or_else(|| "runner".into());
            steprunner::complete::write_hook(shell, &bin, &mut std::io::stdout())
                .map_err(|e| CliError::runner(format!("cannot print the completions: {e}")))?;
            Ok(Exit::Success)
        }
    }
}

/// `1 thing`, `2 things`.
pub fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
