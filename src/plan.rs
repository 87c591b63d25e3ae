//! The rendered, reviewable plan: plain data (argv lists, env, cwd, limits in
//! bytes/cores/seconds, timeouts). `runner render` prints it; `execute` runs it and
//! never sees YAML or templates.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub flavor: String,
    pub manifest: PathBuf,
    pub run_id: String,
    pub step: String,
    pub dirs: Dirs,
    /// Names of the step's own environment variables passed to the launch stage; values are never shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<PreparePlan>,
    pub launch: LaunchPlan,
    #[serde(default, skip_serializing_if = "StagePlan::is_empty")]
    pub cleanup: StagePlan,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dirs {
    pub run: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<PathBuf>,
    pub work: PathBuf,
    pub source: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreparePlan {
    /// The cache key: a hash of the flavor's name, version and rendered key parts.
    pub key: String,
    pub key_parts: Vec<String>,
    /// Variables the runner sets for every command of the stage, on top of its own environment.
    pub env: BTreeMap<String, String>,
    pub commands: Vec<CommandPlan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StagePlan {
    /// Variables the runner sets for every command of the stage, on top of its own environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub commands: Vec<CommandPlan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
}

impl StagePlan {
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchPlan {
    /// Variables the runner sets for the step, on top of its own environment.
    pub env: BTreeMap<String, String>,
    pub command: CommandPlan,
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
    pub kill_grace_secs: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandPlan {
    /// Where the command is in the manifest (a JSON pointer), for messages.
    pub at: String,
    #[serde(flatten)]
    pub run: Run,
    /// This command's own variables, on top of its stage's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
    /// `when:` rendered false: the command does not run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Run {
    Script { shell: String, script: String },
    Argv { argv: Vec<String> },
}

impl CommandPlan {
    /// The argv actually executed.
    pub fn argv(&self) -> Vec<String> {
        match &self.run {
            Run::Argv { argv } => argv.clone(),
            Run::Script { shell, script } => vec![shell.clone(), "-c".into(), script.clone()],
        }
    }

    /// One line for progress messages: the argv, or a script's first line.
    pub fn display(&self) -> String {
        let text = match &self.run {
            Run::Argv { argv } => argv.join(" "),
            Run::Script { shell, script } => {
                let mut lines = script.lines().filter(|l| !l.trim().is_empty());
                let first = lines.next().unwrap_or("");
                let more = if lines.next().is_some() { " …" } else { "" };
                format!("{shell}: {first}{more}")
            }
        };
        if text.chars().count() > 120 {
            format!("{}…", text.chars().take(119).collect::<String>())
        } else {
            text
        }
    }

    /// Short form for messages: the program name.
    pub fn program(&self) -> &str {
        match &self.run {
            Run::Argv { argv } => argv.first().map(String::as_str).unwrap_or(""),
            Run::Script { shell, .. } => shell,
        }
    }
}

/// Limits in plain units. `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_space_bytes: Option<u64>,
}
