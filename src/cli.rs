//! Command-line interface: clap derive types only.

use std::path::PathBuf;

use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::engine::{ArgValueCandidates, ArgValueCompleter};

use crate::complete;
use crate::diag::Format;
use crate::units;

// Units are parsed here, at the edge: every command gets bytes, cores and durations.
fn bytes(s: &str) -> Result<u64, units::UnitError> {
    units::parse_bytes(s)
}

fn memory(s: &str) -> Result<u64, units::UnitError> {
    units::parse_memory(s)
}

fn cpus(s: &str) -> Result<f64, units::UnitError> {
    units::parse_cpus(s)
}

fn duration(s: &str) -> Result<Duration, units::UnitError> {
    units::parse_duration(s)
}

fn age(s: &str) -> Result<Duration, units::UnitError> {
    units::parse_age(s)
}

/// An environment variable's name, as the step-info schema takes them.
fn env_name(s: &str) -> Result<String, String> {
    if crate::util::is_variable_name(s) {
        return Ok(s.to_string());
    }
    let hint = if s.contains('=') {
        " (`--env` takes a name only: set the variable in the runner's environment)"
    } else {
        ""
    };
    Err(format!(
        "not an environment variable name: names are letters, digits and `_`, not starting \
         with a digit{hint}"
    ))
}

#[derive(Parser, Debug)]
#[command(
    name = "runner",
    version,
    about = "Run ML pipeline steps from declarative YAML flavor manifests, under real limits",
    long_about = "Run ML pipeline steps from declarative YAML flavor manifests, under real limits.\n\n\
        A flavor manifest says how to prepare an environment for a step and how to launch it there. \
        `runner validate` and `runner render` make manifests reviewable; `runner launch` prepares, \
        runs the step under cgroup and rlimit limits, waits, and reports.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

/// How `runner diff` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffFormat {
    Human,
    Markdown,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Check manifests: YAML syntax, the flavor schema, the settings schema, templates and variables
    Validate {
        /// Manifest files, or folders searched for `*.yaml` / `*.yml` (not flavor test
        /// files: `*.case.yaml`, `*.plan.yaml`)
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// `human` (with source lines), `github` (pull-request annotations) or `json`
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Also check the manifests against this policy (default: `$RUNNER_POLICY`)
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Run flavor test cases: render each case's step info and check the plan
    Test {
        /// Case files, or folders searched for `*.case.yaml`
        #[arg(default_value = "manifests/tests")]
        paths: Vec<PathBuf>,
        /// Write each case's golden plan as rendered now, instead of comparing
        #[arg(long)]
        update: bool,
        /// `human` (with plan diffs), `github` (pull-request annotations) or `json`
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Also check every case's plan against this policy (default: `$RUNNER_POLICY`)
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Show what changes in what runs: every test case's plan at two revisions
    /// (`--git BASE [HEAD]`; HEAD defaults to the working tree), or one step through
    /// two manifests (`OLD NEW`)
    Diff {
        /// The base revision, and the head one (default: the working tree)
        #[arg(long, num_args = 1..=2, value_names = ["BASE", "HEAD"])]
        git: Vec<String>,
        /// Two manifests to compare, for the step given by the step options
        #[arg(conflicts_with = "git")]
        manifests: Vec<PathBuf>,
        /// Folders of test cases to compare (`--git`)
        #[arg(long = "cases", value_name = "DIR", default_value = "manifests/tests")]
        cases: Vec<PathBuf>,
        #[command(flatten)]
        step: StepArgs,
        /// `human`, `markdown` (a pull-request comment) or `json`
        #[arg(long, value_enum, default_value_t = DiffFormat::Human)]
        format: DiffFormat,
    },
    /// Print the fully rendered plan a launch would run
    Render {
        /// A manifest file, or the name of a registered flavor
        #[arg(add = ArgValueCompleter::new(complete::manifests))]
        manifest: String,
        #[command(flatten)]
        step: StepArgs,
        /// `yaml` for people, `json` for tools
        #[arg(long, value_enum, default_value_t = PlanFormat::Yaml)]
        format: PlanFormat,
        /// Run folder to render with (default: a new folder under `$RUNNER_HOME/runs`)
        #[arg(long, value_name = "DIR")]
        run_dir: Option<PathBuf>,
    },
    /// Prepare the environment, run the step under limits, wait, and report
    Launch {
        /// A manifest file, or the name of a registered flavor
        #[arg(add = ArgValueCompleter::new(complete::manifests))]
        manifest: String,
        #[command(flatten)]
        step: StepArgs,
        #[command(flatten)]
        opts: LaunchArgs,
    },
    /// Show whether a run is running, finished or lost
    Status {
        /// A run id (or a unique prefix), or a run folder
        #[arg(add = ArgValueCandidates::new(complete::run_ids))]
        run: String,
        /// Print JSON: `{run_id, run_dir, state, result}`
        #[arg(long)]
        json: bool,
    },
    /// Wait for a run to finish; exits with the step's exit code
    Wait {
        /// A run id (or a unique prefix), or a run folder
        #[arg(add = ArgValueCandidates::new(complete::run_ids))]
        run: String,
        /// Print the result JSON on stdout
        #[arg(long)]
        json: bool,
        /// Give up after this long (exit 75; the run goes on), e.g. `30s`
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        timeout: Option<Duration>,
    },
    /// Stop a running step like Ctrl-C: SIGTERM to its tree, grace, SIGKILL; cleanup runs
    Cancel {
        /// A run id (or a unique prefix), or a run folder
        #[arg(add = ArgValueCandidates::new(complete::run_ids))]
        run: String,
        /// Return at once instead of waiting for the run to finish
        #[arg(long)]
        no_wait: bool,
    },
    /// Show how a finished run used memory and CPU: a chart against its limits and
    /// the memory to give the step
    Show {
        /// A run id (or a unique prefix), or a run folder
        #[arg(add = ArgValueCandidates::new(complete::run_ids))]
        run: String,
        /// Also write the profile as an SVG chart to this file
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Print JSON: peak, limits, suggestion and the profile
        #[arg(long)]
        json: bool,
    },
    /// Print a run's step output
    Logs {
        /// A run id (or a unique prefix), or a run folder
        #[arg(add = ArgValueCandidates::new(complete::run_ids))]
        run: String,
        /// Keep printing new output until the run finishes
        #[arg(long, short)]
        follow: bool,
        /// The step's stderr instead of its stdout
        #[arg(long)]
        stderr: bool,
    },
    /// List runs
    Ps {
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Also list finished runs (default: running and lost ones, and the last 10)
        #[arg(long, short)]
        all: bool,
    },
    /// Remove old run folders
    Runs {
        #[command(subcommand)]
        command: RunsCmd,
    },
    /// Inspect and prune the prepare cache
    Cache {
        #[command(subcommand)]
        command: CacheCmd,
    },
    /// Register flavors by name, like a step operator's flavor registry
    Flavor {
        #[command(subcommand)]
        command: FlavorCmd,
    },
    /// Supervise a run whose folder and plan exist (used by `launch --detach`)
    #[command(hide = true)]
    Supervise {
        /// The run folder, with its `plan.json`
        #[arg(value_name = "RUN_DIR")]
        dir: PathBuf,
        #[command(flatten)]
        opts: LaunchArgs,
    },
    /// Show what this host and user can enforce, and how to fix what is missing
    Doctor {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Print an embedded JSON Schema
    Schema {
        /// Which schema: a flavor manifest, a step-info file, a launch's result, or a
        /// policy file
        #[arg(value_enum)]
        which: SchemaKind,
    },
    /// Print shell completions
    Completions {
        /// The shell to print them for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug, Clone)]
pub struct StepArgs {
    /// Step info file (JSON or YAML, see `runner schema step-info`)
    #[arg(long, value_name = "FILE")]
    pub info: Option<PathBuf>,
    /// The step's name
    #[arg(long, value_name = "NAME")]
    pub step: Option<String>,
    /// The pipeline's name
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// A pip requirement (repeatable); replaces the info file's list
    #[arg(long = "requirement", short = 'r', value_name = "REQ")]
    pub requirements: Vec<String>,
    /// CPU cores, fractional allowed (e.g. `0.5`)
    #[arg(long, value_name = "N", value_parser = cpus)]
    pub cpus: Option<f64>,
    /// Number of GPUs
    #[arg(long, value_name = "N")]
    pub gpus: Option<u32>,
    /// Memory: bytes, or KB MB GB TB PB (decimal), KiB MiB GiB TiB PiB (binary), e.g. `512MiB`
    #[arg(long, value_name = "SIZE", value_parser = memory)]
    pub memory: Option<u64>,
    /// A flavor setting (repeatable); `a.b=c` sets nested values. VALUE is read as JSON
    /// when it parses (`3`, `true`, `null`, `[1, 2]`, `"x"`), else as text; a number
    /// given for a string setting stays text
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Pass the runner's environment variable NAME to the step (repeatable); its value is never printed
    #[arg(long = "env", value_name = "NAME", value_parser = env_name)]
    pub env: Vec<String>,
    /// The step's source folder (`dirs.source`; default: the current directory)
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// The step's command (after `--`)
    #[arg(last = true, value_name = "ENTRYPOINT")]
    pub entrypoint: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct LaunchArgs {
    /// Print the result JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Do not copy the step's output to the terminal (it is still logged)
    #[arg(long, short)]
    pub quiet: bool,
    /// Run folder (default: a new folder under `$RUNNER_HOME/runs`)
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Cap each log file at this size, keeping its head and tail
    #[arg(long, value_name = "BYTES", value_parser = bytes)]
    pub log_limit: Option<u64>,
    /// Run even when a limit cannot be enforced; the result records what was
    #[arg(long)]
    pub best_effort_limits: bool,
    /// Refuse a step that asks for what the flavor ignores (its `ignores:`), instead
    /// of warning
    #[arg(long)]
    pub strict: bool,
    /// Refuse a step whose plan breaks this policy, before anything runs (default:
    /// `$RUNNER_POLICY`)
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Give the step the runner's stdin (default: /dev/null)
    #[arg(long, conflicts_with = "detach")]
    pub stdin: bool,
    /// Return at once with the run id; the run goes on under its own supervisor
    /// (see `runner status | wait | cancel | logs`)
    #[arg(long)]
    pub detach: bool,
}

#[derive(Subcommand, Debug)]
pub enum RunsCmd {
    /// Remove the folders of runs that ended this long ago (finished or lost); running
    /// runs and folders given with `--run-dir` are never touched
    Prune {
        /// Remove runs that ended at least this long ago, e.g. `7d`, `12h` (a unit is
        /// required)
        #[arg(long, value_name = "AGE", value_parser = age)]
        older_than: Duration,
        /// Only say what would be removed
        #[arg(long)]
        dry_run: bool,
        /// Print the removed runs as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CacheCmd {
    /// List cache entries: key, flavor, size, last used, whether in use
    List {
        /// Print JSON (times in RFC 3339)
        #[arg(long)]
        json: bool,
    },
    /// Remove entries unused for a while, then the least recently used until the
    /// cache fits; unfinished entries go too. Entries in use are never removed
    Prune {
        /// Remove entries not used for this long, e.g. `7d`, `12h` (a unit is
        /// required), and remembered manifest checks made this long ago
        #[arg(long, value_name = "AGE", value_parser = age)]
        older_than: Option<Duration>,
        /// Then remove the least recently used until the cache is at most this big, e.g. `10GiB`
        #[arg(long, value_name = "SIZE", value_parser = bytes)]
        max_size: Option<u64>,
        /// Only say what would be removed
        #[arg(long)]
        dry_run: bool,
        /// Print the removed entries as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum FlavorCmd {
    /// Validate a manifest and register it under its name
    Register {
        /// The manifest file
        path: PathBuf,
        /// Replace a registered flavor of the same name with other contents
        #[arg(long)]
        force: bool,
    },
    /// List registered flavors
    List {
        /// Print JSON: `[{name, description, path, invalid}]`
        #[arg(long)]
        json: bool,
    },
    /// Print a registered flavor's manifest
    Show {
        /// The flavor's name (`runner flavor list` lists them)
        #[arg(add = ArgValueCandidates::new(complete::flavors))]
        name: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanFormat {
    Yaml,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaKind {
    Flavor,
    StepInfo,
    Result,
    Policy,
}

impl StepArgs {
    pub fn overrides(&self) -> crate::step_info::Overrides {
        crate::step_info::Overrides {
            step: self.step.clone(),
            pipeline: self.pipeline.clone(),
            requirements: self.requirements.clone(),
            cpus: self.cpus,
            gpus: self.gpus,
            memory: self.memory,
            set: self.set.clone(),
            source: self.source.clone(),
            env: self.env.clone(),
            entrypoint: self.entrypoint.clone(),
        }
    }
}

/// Print a command-line error (or the help or version asked for) and exit, as clap
/// does, except that an error too wide for the terminal it goes to is printed broken
/// to fit, through the runner's own error printer ([`crate::diag::eprint_styled`]).
pub fn exit_with(e: clap::Error) -> ! {
    if e.use_stderr()
        && let Some(width) = crate::wrap::stderr_width()
    {
        let text = e.render().to_string();
        if text.lines().any(|l| l.chars().count() > width) {
            crate::diag::eprint_styled(&text);
            std::process::exit(e.exit_code());
        }
    }
    e.exit()
}

/// Tips clap cannot know to give. A word after the manifest of `launch` or `render`
/// is the step's command with its `--` forgotten: show where it goes.
pub fn with_tips(mut e: clap::Error, args: &[std::ffi::OsString]) -> clap::Error {
    let Some(ContextValue::String(word)) = e.get(ContextKind::InvalidArg).cloned() else {
        return e;
    };
    let sub = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy())
        .find(|a| !a.starts_with('-'));
    let sub = sub.as_deref();
    if e.kind() == ErrorKind::UnknownArgument
        && !word.starts_with('-')
        && matches!(sub, Some("launch" | "render"))
    {
        let sub = sub.unwrap_or_default();
        let tip = format!(
            "the step's command goes after `--`: `runner {sub} MANIFEST [OPTIONS] -- {word} …`"
        );
        e.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![tip.into()]),
        );
    }
    e
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    /// `runner X --help` explains every command and every argument it takes.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                let here = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(format!("`{here}`"));
                }
                for arg in sub.get_arguments() {
                    let id = arg.get_id().as_str();
                    if arg.get_help().is_none() && !matches!(id, "help" | "version") {
                        missing.push(format!("`{here}` argument `{id}`"));
                    }
                }
                walk(sub, &here, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "runner", &mut missing);
        assert!(missing.is_empty(), "no help text: {}", missing.join(", "));
    }
}
