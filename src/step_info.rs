//! The step's run info, requirements and resources: read from `--info FILE`
//! (JSON or YAML, checked against `schemas/step-info.schema.json`), then
//! overridden by flags. Units are parsed here, once: memory in bytes, cpus in cores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::diag::Diagnostic;
use crate::manifest::{LoadError, Source};
use crate::units;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepMeta {
    #[serde(default = "default_step_name")]
    pub name: String,
    #[serde(default)]
    pub pipeline: Option<String>,
    #[serde(default)]
    pub run_name: Option<String>,
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    pub step_run_id: Option<String>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

fn default_step_name() -> String {
    "step".to_string()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Requirements {
    #[serde(default)]
    pub pip: Vec<String>,
    #[serde(default)]
    pub apt: Vec<String>,
    #[serde(default)]
    pub parent_image: Option<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
}

/// Resources with units already parsed: memory in bytes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Resources {
    pub cpu_count: Option<f64>,
    pub gpu_count: Option<u32>,
    pub memory: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StepInfo {
    pub step: StepMeta,
    pub requirements: Requirements,
    pub resources: Resources,
    pub settings: Map<String, Value>,
    /// Passed to the step's process; may hold secrets, so only names are ever shown.
    #[serde(skip)]
    pub environment: BTreeMap<String, String>,
    pub entrypoint: Vec<String>,
    pub source: Option<PathBuf>,
}

/// The file form, before units are parsed.
#[derive(Deserialize)]
struct RawInfo {
    #[serde(default)]
    step: Option<StepMeta>,
    #[serde(default)]
    requirements: Requirements,
    #[serde(default)]
    resources: RawResources,
    #[serde(default)]
    settings: Map<String, Value>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    entrypoint: Vec<String>,
    #[serde(default)]
    source: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
struct RawResources {
    cpu_count: Option<f64>,
    gpu_count: Option<u32>,
    memory: Option<Value>,
}

/// Step info given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub step: Option<String>,
    pub pipeline: Option<String>,
    pub requirements: Vec<String>,
    /// Cores.
    pub cpus: Option<f64>,
    pub gpus: Option<u32>,
    /// Bytes.
    pub memory: Option<u64>,
    pub set: Vec<String>,
    pub source: Option<PathBuf>,
    /// Names of the runner's variables passed to the step.
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("invalid step info")]
    Invalid(Vec<Diagnostic>),
    #[error("--set `{0}`: expected KEY=VALUE")]
    Set(String),
    #[error(
        "--set `{0}`: a key is names joined by `.` (`a.b.c`), at most {MAX_SET_DEPTH} of them, none empty"
    )]
    SetKey(String),
    #[error("--env `{0}`: not set in the runner's environment")]
    Env(String),
    #[error("invalid step name: {0}")]
    Name(&'static str),
}

/// Longest step name accepted. The name reaches every command as `RUNNER_STEP`, and
/// Linux refuses to exec with any one variable or argument over 128 KiB; a name this
/// long is a mistake or an attack, and is refused before anything runs.
pub const MAX_STEP_NAME_BYTES: usize = 4096;

impl StepInfo {
    /// Read `--info FILE` (if any) and apply the flags over it.
    pub fn resolve(info: Option<&Path>, flags: &Overrides) -> Result<StepInfo, InfoError> {
        let mut out = match info {
            Some(path) => Self::read(path)?,
            None => StepInfo {
                step: StepMeta {
                    name: default_step_name(),
                    ..Default::default()
                },
                ..Default::default()
            },
        };
        out.apply(flags)?;
        check_name(&out.step.name)?;
        Ok(out)
    }

    pub fn read(path: &Path) -> Result<StepInfo, InfoError> {
        Self::from_source(&Source::read(path)?)
    }

    /// Step info from text already read (`path` only names it in diagnostics).
    pub fn parse(path: &Path, text: String) -> Result<StepInfo, InfoError> {
        Self::from_source(&Source::parse(path, text)?)
    }

    fn from_source(src: &Source) -> Result<StepInfo, InfoError> {
        let path = src.path.as_path();
        let diags = crate::schemas::check_step_info(src);
        if !diags.is_empty() {
            return Err(InfoError::Invalid(diags));
        }
        let raw: RawInfo = serde_json::from_value(src.doc.value.clone()).map_err(|e| {
            InfoError::Invalid(vec![Diagnostic::new(
                path,
                Some(&src.text),
                src.doc.index.nearest(""),
                e.to_string(),
            )])
        })?;
        let memory = match &raw.resources.memory {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => Some(units::parse_bytes(s).map_err(|e| {
                InfoError::Invalid(vec![Diagnostic::new(
                    path,
                    Some(&src.text),
                    src.doc.index.nearest("/resources/memory"),
                    e.to_string(),
                )])
            })?),
            Some(_) => None,
        };
        Ok(StepInfo {
            step: raw.step.unwrap_or_else(|| StepMeta {
                name: default_step_name(),
                ..Default::default()
            }),
            requirements: raw.requirements,
            resources: Resources {
                cpu_count: raw.resources.cpu_count,
                gpu_count: raw.resources.gpu_count,
                memory,
            },
            settings: raw.settings,
            environment: raw.environment,
            entrypoint: raw.entrypoint,
            source: raw.source,
        })
    }

    fn apply(&mut self, f: &Overrides) -> Result<(), InfoError> {
        if let Some(s) = &f.step {
            self.step.name = s.clone();
        }
        if let Some(p) = &f.pipeline {
            self.step.pipeline = Some(p.clone());
        }
        if !f.requirements.is_empty() {
            self.requirements.pip = f.requirements.clone();
        }
        if let Some(c) = f.cpus {
            self.resources.cpu_count = Some(c);
        }
        if let Some(g) = f.gpus {
            self.resources.gpu_count = Some(g);
        }
        if let Some(m) = f.memory {
            self.resources.memory = Some(m);
        }
        for kv in &f.set {
            let (key, value) = kv
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| InfoError::Set(kv.clone()))?;
            // Each part is a level of nesting that everything after reads recursively.
            if key.split('.').count() > MAX_SET_DEPTH || key.split('.').any(str::is_empty) {
                return Err(InfoError::SetKey(crate::util::shorten(kv, 81)));
            }
            set_path(&mut self.settings, key, parse_set_value(value));
        }
        for name in &f.env {
            let value = std::env::var(name).map_err(|_| InfoError::Env(name.clone()))?;
            self.environment.insert(name.clone(), value);
        }
        if let Some(s) = &f.source {
            self.source = Some(s.clone());
        }
        if !f.entrypoint.is_empty() {
            self.entrypoint = f.entrypoint.clone();
        }
        Ok(())
    }
}

/// A step name any command can receive: a NUL byte or an over-long name would only fail
/// later, at exec, as "could not start".
fn check_name(name: &str) -> Result<(), InfoError> {
    if name.contains('\0') {
        return Err(InfoError::Name("it contains a NUL byte"));
    }
    if name.len() > MAX_STEP_NAME_BYTES {
        return Err(InfoError::Name("it is too long (more than 4096 bytes)"));
    }
    Ok(())
}

/// `--set` values: JSON scalars and arrays/objects when they parse as such, else the raw string.
/// Whether a JSON number should stay a string is decided against the settings schema later.
fn parse_set_value(raw: &str) -> Value {
    match serde_json::from_str::<Value>(raw) {
        Ok(v) => v,
        Err(_) => Value::String(raw.to_string()),
    }
}

/// How many `.`-joined parts a `--set` key may have: far more than any flavor's
/// settings nest, and with the value's own nesting (at most serde_json's 128) well
/// within the depth a step-info file may have.
pub const MAX_SET_DEPTH: usize = 64;

/// `a.b=c` sets nested objects.
fn set_path(map: &mut Map<String, Value>, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            map.insert(key.to_string(), value);
        }
        Some((head, rest)) => {
            let entry = map
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(inner) = entry {
                set_path(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_builds_nested_settings_and_keeps_strings() {
        let mut s = Map::new();
        set_path(&mut s, "a.b", parse_set_value("3"));
        set_path(&mut s, "name", parse_set_value("x y"));
        set_path(&mut s, "flag", parse_set_value("true"));
        assert_eq!(
            Value::Object(s),
            json!({"a": {"b": 3}, "name": "x y", "flag": true})
        );
    }

    #[test]
    fn flags_override_and_parse_units() {
        let mut info = StepInfo::default();
        info.apply(&Overrides {
            step: Some("train".into()),
            memory: Some(3 << 29),
            cpus: Some(0.5),
            requirements: vec!["requests".into()],
            entrypoint: vec!["python".into(), "-m".into(), "train".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(info.step.name, "train");
        assert_eq!(info.resources.memory, Some(3 << 29));
        assert_eq!(info.resources.cpu_count, Some(0.5));
        assert_eq!(info.requirements.pip, vec!["requests"]);
        assert_eq!(info.entrypoint, vec!["python", "-m", "train"]);
    }

    #[test]
    fn step_names_with_nul_or_over_4_kib_are_refused() {
        for (name, why) in [
            ("a\0b".to_string(), "NUL byte"),
            ("x".repeat(MAX_STEP_NAME_BYTES + 1), "too long"),
        ] {
            let flags = Overrides {
                step: Some(name),
                ..Default::default()
            };
            let err = StepInfo::resolve(None, &flags).unwrap_err().to_string();
            assert!(err.starts_with("invalid step name: "), "{err}");
            assert!(err.contains(why), "{err}");
        }
        let ok = Overrides {
            step: Some("x".repeat(MAX_STEP_NAME_BYTES)),
            ..Default::default()
        };
        assert!(StepInfo::resolve(None, &ok).is_ok());
    }
}
