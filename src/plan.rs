//! The rendered, reviewable plan: plain data (argv lists, env, cwd, limits in
//! bytes/cores/seconds, timeouts). `runner render` prints it; `execute` runs it and
//! never sees YAML or templates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits::Limits;

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
    /// What the step asked for that the flavor ignores, with the flavor's reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
}

impl Plan {
    /// The plan as `runner render` prints it and golden plans hold it (YAML). A
    /// character of the step's that would not show as itself (a bidirectional override
    /// in a step name, a zero-width space in a requirement) is shown escaped
    /// (`\u{202e}`): the YAML printer escapes control characters only, and what a
    /// reviewer reads is what runs. `--format json` keeps every character as it is.
    pub fn to_yaml(&self) -> Result<String, String> {
        let s = serde_saphyr::to_string(self).map_err(|e| e.to_string())?;
        let mut s = crate::util::printable_lines(&s).into_owned();
        if !s.ends_with('\n') {
            s.push('\n');
        }
        Ok(s)
    }
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
    #[serde(
        default,
        rename = "timeout_secs",
        with = "secs::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// What every command of the stage runs under.
    #[serde(default)]
    pub limits: Limits,
    /// Capabilities kept beyond the contained default (as root).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StagePlan {
    /// Variables the runner sets for every command of the stage, on top of its own environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub commands: Vec<CommandPlan>,
    #[serde(
        default,
        rename = "timeout_secs",
        with = "secs::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// What every command of the stage runs under.
    #[serde(default)]
    pub limits: Limits,
    /// Capabilities kept beyond the contained default (as root).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
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
    #[serde(
        default,
        rename = "timeout_secs",
        with = "secs::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    #[serde(rename = "kill_grace_secs", with = "secs")]
    pub kill_grace: Duration,
    /// Capabilities kept beyond the contained default (as root).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Who measures the step: the runner (it runs here), or the engine the launch
    /// command is a client of.
    #[serde(default, skip_serializing_if = "MeasuredBy::is_runner")]
    pub measured_by: MeasuredBy,
    /// The step runs on other machines than the runner's (a cluster, a cloud service):
    /// what it reads and writes must be reachable from there. A caller such as the
    /// ZenML integration refuses a stack that only this machine can reach.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remote: bool,
}

/// Who measured a step's peak memory, CPU time and OOM kills.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasuredBy {
    /// The step ran here, in the runner's cgroup.
    #[default]
    Runner,
    /// The launch command is a client of the engine that ran the step (a container, a
    /// cluster job): the step's numbers are the engine's report, or unknown.
    Engine,
}

impl MeasuredBy {
    pub fn is_runner(&self) -> bool {
        *self == MeasuredBy::Runner
    }
}

impl LaunchPlan {
    /// The step's deadline: the stage's or its command's timeout, whichever is shorter.
    pub fn deadline(&self) -> Option<Duration> {
        [self.timeout, self.command.timeout]
            .into_iter()
            .flatten()
            .min()
    }
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
    #[serde(
        default,
        rename = "timeout_secs",
        with = "secs::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// `when:` rendered false: the command does not run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// What `| safe` put into the script unquoted, in order: shell code the manifest
    /// vouches for, listed so that a reviewer sees every piece of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unquoted: Vec<String>,
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
        // A step's name or requirement may hold escape sequences: shown, never obeyed.
        crate::util::shorten(&crate::util::printable(&text), 120)
    }

    /// Short form for messages: the program name.
    pub fn program(&self) -> &str {
        match &self.run {
            Run::Argv { argv } => argv.first().map(String::as_str).unwrap_or(""),
            Run::Script { shell, .. } => shell,
        }
    }
}

/// Durations as seconds (a float) in the plan's JSON and YAML forms.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }

    pub mod opt {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<f64>::deserialize(d)?
                .map(|secs| Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}
