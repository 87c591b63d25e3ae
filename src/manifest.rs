//! The flavor manifest: serde types, and loading a file into them while keeping
//! the YAML text and its JSON-pointer → line:col index, so every later error
//! (schema, template, render) can point back at `file:line:col`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::yaml::{self, Doc};

/// A manifest file as read from disk: its text, its parsed value and position index.
pub struct Source {
    pub path: PathBuf,
    pub text: String,
    pub doc: Doc,
}

/// Why a file could not even be parsed as YAML.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not UTF-8 text")]
    NotUtf8 { path: PathBuf },
    #[error("{source}")]
    Yaml {
        path: PathBuf,
        text: String,
        #[source]
        source: yaml::YamlError,
    },
}

/// Largest manifest accepted: manifests are reviewed by people, not generated blobs.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

impl Source {
    pub fn read(path: &Path) -> Result<Source, LoadError> {
        let read_err = |source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(read_err(std::io::Error::other(format!(
                "file is larger than {} bytes",
                MAX_MANIFEST_BYTES
            ))));
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        let text = String::from_utf8(bytes).map_err(|_| LoadError::NotUtf8 {
            path: path.to_path_buf(),
        })?;
        Source::parse(path, text)
    }

    pub fn parse(path: &Path, text: String) -> Result<Source, LoadError> {
        match yaml::load(&text) {
            Ok(doc) => Ok(Source {
                path: path.to_path_buf(),
                text,
                doc,
            }),
            Err(source) => Err(LoadError::Yaml {
                path: path.to_path_buf(),
                text,
                source,
            }),
        }
    }
}

/// A template or a literal number, as written in the manifest.
pub type Tpl = Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flavor {
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub settings: Option<Value>,
    #[serde(default)]
    pub env: BTreeMap<String, Tpl>,
    #[serde(default)]
    pub prepare: Option<Prepare>,
    pub launch: Launch,
    #[serde(default)]
    pub cleanup: Option<Cleanup>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prepare {
    #[serde(default)]
    pub key: Option<Key>,
    #[serde(default)]
    pub env: BTreeMap<String, Tpl>,
    pub run: Vec<Command>,
    #[serde(default)]
    pub timeout: Option<Tpl>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Key {
    One(String),
    Many(Vec<Tpl>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    pub run: Command,
    #[serde(default)]
    pub env: BTreeMap<String, Tpl>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub timeout: Option<Tpl>,
    #[serde(default)]
    pub kill_grace: Option<Tpl>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    pub memory: Option<Tpl>,
    pub cpus: Option<Tpl>,
    pub gpus: Option<Tpl>,
    pub pids: Option<Tpl>,
    pub open_files: Option<Tpl>,
    pub cpu_time: Option<Tpl>,
    pub file_size: Option<Tpl>,
    pub core: Option<Tpl>,
    pub address_space: Option<Tpl>,
}

impl LimitsSpec {
    /// Every limit with its manifest key, in a fixed order.
    pub fn entries(&self) -> [(&'static str, &Option<Tpl>); 9] {
        [
            ("memory", &self.memory),
            ("cpus", &self.cpus),
            ("gpus", &self.gpus),
            ("pids", &self.pids),
            ("open_files", &self.open_files),
            ("cpu_time", &self.cpu_time),
            ("file_size", &self.file_size),
            ("core", &self.core),
            ("address_space", &self.address_space),
        ]
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cleanup {
    #[serde(default)]
    pub env: BTreeMap<String, Tpl>,
    pub run: Vec<Command>,
    #[serde(default)]
    pub timeout: Option<Tpl>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Command {
    Argv(Vec<Tpl>),
    Exec(ExecCommand),
    Script(ScriptCommand),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecCommand {
    pub argv: Vec<Tpl>,
    #[serde(default)]
    pub when: Option<Value>,
    #[serde(default)]
    pub env: BTreeMap<String, Tpl>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub timeout: Option<Tpl>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptCommand {
    pub script: String,
    #[serde(default)]
    pub shell: Option<String>,
    #[serde(default)]
    pub when: Option<Value>,
    #[serde(default)]
    pub env: BTreeMap<String, Tpl>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub timeout: Option<Tpl>,
}

/// The parts of a command every form shares, borrowed.
pub struct CommandParts<'a> {
    pub when: Option<&'a Value>,
    pub env: &'a BTreeMap<String, Tpl>,
    pub cwd: Option<&'a String>,
    pub timeout: Option<&'a Tpl>,
}

impl Command {
    pub fn parts(&self) -> CommandParts<'_> {
        static EMPTY: BTreeMap<String, Tpl> = BTreeMap::new();
        match self {
            Command::Argv(_) => CommandParts {
                when: None,
                env: &EMPTY,
                cwd: None,
                timeout: None,
            },
            Command::Exec(c) => CommandParts {
                when: c.when.as_ref(),
                env: &c.env,
                cwd: c.cwd.as_ref(),
                timeout: c.timeout.as_ref(),
            },
            Command::Script(c) => CommandParts {
                when: c.when.as_ref(),
                env: &c.env,
                cwd: c.cwd.as_ref(),
                timeout: c.timeout.as_ref(),
            },
        }
    }

    /// JSON pointer suffix of the argv list inside this command's node.
    pub fn argv(&self) -> Option<(&[Tpl], &'static str)> {
        match self {
            Command::Argv(a) => Some((a, "")),
            Command::Exec(c) => Some((&c.argv, "/argv")),
            Command::Script(_) => None,
        }
    }
}

/// RFC 6901 escaping of one pointer segment.
pub fn ptr_escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// How a template string is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// Plain text: argv elements, env values, cwd, limits, durations.
    Text,
    /// A `script:`: interpolations shell-quoted.
    Script,
    /// A prepare key part: cannot use `dirs.prepare`.
    Key,
    /// A `when:` condition.
    When,
}

/// One template string in a manifest, with its JSON pointer.
#[derive(Debug, Clone)]
pub struct TemplateRef {
    pub pointer: String,
    pub text: String,
    pub kind: TemplateKind,
}

impl Flavor {
    /// Every template string, in document order, for static checks.
    pub fn templates(&self) -> Vec<TemplateRef> {
        let mut out = Vec::new();
        let mut push = |pointer: String, v: &Value, kind: TemplateKind| {
            if let Value::String(s) = v {
                out.push(TemplateRef {
                    pointer,
                    text: s.clone(),
                    kind,
                });
            }
        };
        let env = |base: &str,
                   env: &BTreeMap<String, Tpl>,
                   push: &mut dyn FnMut(String, &Value, TemplateKind)| {
            for (k, v) in env {
                push(
                    format!("{base}/env/{}", ptr_escape(k)),
                    v,
                    TemplateKind::Text,
                );
            }
        };
        fn command(base: &str, c: &Command, push: &mut dyn FnMut(String, &Value, TemplateKind)) {
            if let Some((argv, suffix)) = c.argv() {
                for (i, a) in argv.iter().enumerate() {
                    push(format!("{base}{suffix}/{i}"), a, TemplateKind::Text);
                }
            }
            if let Command::Script(s) = c {
                push(
                    format!("{base}/script"),
                    &Value::String(s.script.clone()),
                    TemplateKind::Script,
                );
            }
            let p = c.parts();
            if let Some(w) = p.when {
                push(format!("{base}/when"), w, TemplateKind::When);
            }
            for (k, v) in p.env {
                push(
                    format!("{base}/env/{}", ptr_escape(k)),
                    v,
                    TemplateKind::Text,
                );
            }
            if let Some(cwd) = p.cwd {
                push(
                    format!("{base}/cwd"),
                    &Value::String(cwd.clone()),
                    TemplateKind::Text,
                );
            }
            if let Some(t) = p.timeout {
                push(format!("{base}/timeout"), t, TemplateKind::Text);
            }
        }
        env("", &self.env, &mut push);
        if let Some(p) = &self.prepare {
            match &p.key {
                Some(Key::One(s)) => push(
                    "/prepare/key".into(),
                    &Value::String(s.clone()),
                    TemplateKind::Key,
                ),
                Some(Key::Many(parts)) => {
                    for (i, part) in parts.iter().enumerate() {
                        push(format!("/prepare/key/{i}"), part, TemplateKind::Key);
                    }
                }
                None => {}
            }
            env("/prepare", &p.env, &mut push);
            for (i, c) in p.run.iter().enumerate() {
                command(&format!("/prepare/run/{i}"), c, &mut push);
            }
            if let Some(t) = &p.timeout {
                push("/prepare/timeout".into(), t, TemplateKind::Text);
            }
        }
        let l = &self.launch;
        command("/launch/run", &l.run, &mut push);
        env("/launch", &l.env, &mut push);
        if let Some(cwd) = &l.cwd {
            push(
                "/launch/cwd".into(),
                &Value::String(cwd.clone()),
                TemplateKind::Text,
            );
        }
        for (name, v) in l.limits.entries() {
            if let Some(v) = v {
                push(format!("/launch/limits/{name}"), v, TemplateKind::Text);
            }
        }
        if let Some(t) = &l.timeout {
            push("/launch/timeout".into(), t, TemplateKind::Text);
        }
        if let Some(t) = &l.kill_grace {
            push("/launch/kill_grace".into(), t, TemplateKind::Text);
        }
        if let Some(c) = &self.cleanup {
            env("/cleanup", &c.env, &mut push);
            for (i, cmd) in c.run.iter().enumerate() {
                command(&format!("/cleanup/run/{i}"), cmd, &mut push);
            }
            if let Some(t) = &c.timeout {
                push("/cleanup/timeout".into(), t, TemplateKind::Text);
            }
        }
        out
    }
}
