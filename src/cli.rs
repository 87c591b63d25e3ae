//! Command-line interface: clap derive types only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::diag::Format;

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

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Check manifests: YAML syntax, the flavor schema, the settings schema, templates and variables
    Validate {
        /// Manifest files, or folders searched for `*.yaml` / `*.yml`
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// `human` (with source lines), `github` (pull-request annotations) or `json`
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Print the fully rendered plan a launch would run
    Render {
        /// A manifest file, or the name of a registered flavor
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
        manifest: String,
        #[command(flatten)]
        step: StepArgs,
        #[command(flatten)]
        opts: LaunchArgs,
    },
    /// Print an embedded JSON Schema
    Schema {
        #[arg(value_enum)]
        which: SchemaKind,
    },
    /// Print shell completions
    Completions {
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
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,
    /// Number of GPUs
    #[arg(long, value_name = "N")]
    pub gpus: Option<u32>,
    /// Memory: bytes, or KB MB GB TB (decimal), KiB MiB GiB TiB (binary), e.g. `512MiB`
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// A flavor setting (repeatable); `a.b=c` sets nested values
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Pass the runner's environment variable NAME to the step (repeatable); its value is never printed
    #[arg(long = "env", value_name = "NAME")]
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
    #[arg(long, value_name = "BYTES")]
    pub log_limit: Option<String>,
    /// Run even when a limit cannot be enforced; the result records what was
    #[arg(long)]
    pub best_effort_limits: bool,
    /// Give the step the runner's stdin (default: /dev/null)
    #[arg(long)]
    pub stdin: bool,
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
}

impl StepArgs {
    pub fn overrides(&self) -> crate::step_info::Overrides {
        crate::step_info::Overrides {
            step: self.step.clone(),
            pipeline: self.pipeline.clone(),
            requirements: self.requirements.clone(),
            cpus: self.cpus.clone(),
            gpus: self.gpus,
            memory: self.memory.clone(),
            set: self.set.clone(),
            source: self.source.clone(),
            env: self.env.clone(),
            entrypoint: self.entrypoint.clone(),
        }
    }
}
