//! The flavor manifest: serde types, and loading a file into them while keeping
//! the YAML text and its JSON-pointer → line:col index, so every later error
//! (schema, template, render) can point back at `file:line:col`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::limits::LimitKind;
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
        let too_big = || {
            read_err(std::io::Error::other(format!(
                "it is larger than {}",
                crate::units::Bytes(MAX_MANIFEST_BYTES)
            )))
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if meta.is_dir() {
            return Err(read_err(std::io::Error::other("it is a folder")));
        }
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(too_big());
        }
        // Read at most one byte past the cap: a stream (`/dev/zero`, a pipe) has no size
        // to check first.
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(
                std::fs::File::open(path).map_err(read_err)?,
                MAX_MANIFEST_BYTES + 1,
            ),
            &mut bytes,
        )
        .map_err(read_err)?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(too_big());
        }
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

/// A template (or a literal number or boolean) as written in the manifest, with its
/// place: the JSON pointer every diagnostic about it is located by. [`Flavor::from_value`]
/// sets every place once; nothing else spells a manifest pointer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tpl {
    pub value: Value,
    pub at: String,
}

impl<'de> Deserialize<'de> for Tpl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Tpl {
            value: Value::deserialize(d)?,
            at: String::new(),
        })
    }
}

impl Tpl {
    /// The template's text, if it is a string.
    pub fn text(&self) -> Option<&str> {
        self.value.as_str()
    }
}

/// Environment variables of a stage or command: name → template.
pub type Env = BTreeMap<String, Tpl>;

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
    pub env: Env,
    #[serde(default)]
    pub prepare: Option<Prepare>,
    pub launch: Launch,
    #[serde(default)]
    pub cleanup: Option<Cleanup>,
    /// Step-info fields the flavor does not use, each with the reason (see
    /// [`crate::ignores`]).
    #[serde(default)]
    pub ignores: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prepare {
    #[serde(default)]
    pub key: Option<Key>,
    #[serde(default)]
    pub env: Env,
    pub run: Vec<Command>,
    #[serde(default)]
    pub timeout: Option<Tpl>,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// The prepare cache key: one template, or a list of parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Key {
    Many(Vec<Tpl>),
    One(Tpl),
}

impl Key {
    pub fn parts(&self) -> &[Tpl] {
        match self {
            Key::Many(parts) => parts,
            Key::One(one) => std::slice::from_ref(one),
        }
    }

    fn parts_mut(&mut self) -> &mut [Tpl] {
        match self {
            Key::Many(parts) => parts,
            Key::One(one) => std::slice::from_mut(one),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    pub run: Command,
    #[serde(default)]
    pub env: Env,
    #[serde(default)]
    pub cwd: Option<Tpl>,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub timeout: Option<Tpl>,
    #[serde(default)]
    pub kill_grace: Option<Tpl>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub measured_by: crate::plan::MeasuredBy,
    /// The step runs on other machines than the runner's (see [`crate::plan::LaunchPlan::remote`]).
    #[serde(default)]
    pub remote: bool,
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
    /// Every limit of a manifest with its kind, in a fixed order.
    pub fn entries(&self) -> [(LimitKind, Option<&Tpl>); 9] {
        [
            (LimitKind::Memory, self.memory.as_ref()),
            (LimitKind::Cpus, self.cpus.as_ref()),
            (LimitKind::Gpus, self.gpus.as_ref()),
            (LimitKind::Pids, self.pids.as_ref()),
            (LimitKind::OpenFiles, self.open_files.as_ref()),
            (LimitKind::CpuTime, self.cpu_time.as_ref()),
            (LimitKind::FileSize, self.file_size.as_ref()),
            (LimitKind::Core, self.core.as_ref()),
            (LimitKind::AddressSpace, self.address_space.as_ref()),
        ]
    }

    fn entries_mut(&mut self) -> [(LimitKind, Option<&mut Tpl>); 9] {
        [
            (LimitKind::Memory, self.memory.as_mut()),
            (LimitKind::Cpus, self.cpus.as_mut()),
            (LimitKind::Gpus, self.gpus.as_mut()),
            (LimitKind::Pids, self.pids.as_mut()),
            (LimitKind::OpenFiles, self.open_files.as_mut()),
            (LimitKind::CpuTime, self.cpu_time.as_mut()),
            (LimitKind::FileSize, self.file_size.as_mut()),
            (LimitKind::Core, self.core.as_mut()),
            (LimitKind::AddressSpace, self.address_space.as_mut()),
        ]
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cleanup {
    #[serde(default)]
    pub env: Env,
    pub run: Vec<Command>,
    #[serde(default)]
    pub timeout: Option<Tpl>,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// One command of a stage, in any of its three written forms.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "Written")]
pub struct Command {
    /// The command's own place (its node in the manifest).
    pub at: String,
    pub form: Form,
    pub when: Option<Tpl>,
    pub env: Env,
    pub cwd: Option<Tpl>,
    pub timeout: Option<Tpl>,
}

/// What a command runs.
#[derive(Debug, Clone)]
pub enum Form {
    /// Run without a shell. `bare`: written as a plain list (the command node is the
    /// argument list) rather than `{argv: […]}`; `at` is the argument list's place.
    Argv {
        argv: Vec<Tpl>,
        bare: bool,
        at: String,
    },
    /// `SHELL -c SCRIPT`.
    Script { script: Tpl, shell: Option<String> },
}

/// The three forms as written: `[prog, …]`, `{argv: […], …}`, `{script: …, …}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Argv(Vec<Tpl>),
    Exec(ExecCommand),
    Script(ScriptCommand),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecCommand {
    argv: Vec<Tpl>,
    #[serde(default)]
    when: Option<Tpl>,
    #[serde(default)]
    env: Env,
    #[serde(default)]
    cwd: Option<Tpl>,
    #[serde(default)]
    timeout: Option<Tpl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptCommand {
    script: Tpl,
    #[serde(default)]
    shell: Option<String>,
    #[serde(default)]
    when: Option<Tpl>,
    #[serde(default)]
    env: Env,
    #[serde(default)]
    cwd: Option<Tpl>,
    #[serde(default)]
    timeout: Option<Tpl>,
}

impl From<Written> for Command {
    fn from(w: Written) -> Command {
        let (form, when, env, cwd, timeout) = match w {
            Written::Argv(argv) => (
                Form::Argv {
                    argv,
                    bare: true,
                    at: String::new(),
                },
                None,
                Env::new(),
                None,
                None,
            ),
            Written::Exec(c) => (
                Form::Argv {
                    argv: c.argv,
                    bare: false,
                    at: String::new(),
                },
                c.when,
                c.env,
                c.cwd,
                c.timeout,
            ),
            Written::Script(c) => (
                Form::Script {
                    script: c.script,
                    shell: c.shell,
                },
                c.when,
                c.env,
                c.cwd,
                c.timeout,
            ),
        };
        Command {
            at: String::new(),
            form,
            when,
            env,
            cwd,
            timeout,
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

/// One template string in a manifest.
#[derive(Debug, Clone)]
pub struct TemplateRef {
    /// Its place, a JSON pointer.
    pub pointer: String,
    pub text: String,
    pub kind: TemplateKind,
}

/// The stages of a flavor, as they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageName {
    Prepare,
    Launch,
    Cleanup,
}

impl StageName {
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Prepare => "prepare",
            StageName::Launch => "launch",
            StageName::Cleanup => "cleanup",
        }
    }
}

/// Every place a template can sit, visited in document order: the one walk that
/// spells manifest pointers ([`Flavor::from_value`] stores them in the [`Tpl`]s).
fn walk(flavor: &mut Flavor, visit: &mut dyn FnMut(String, &mut Tpl, TemplateKind)) {
    fn env(base: &str, env: &mut Env, visit: &mut dyn FnMut(String, &mut Tpl, TemplateKind)) {
        for (k, v) in env.iter_mut() {
            visit(
                format!("{base}/env/{}", ptr_escape(k)),
                v,
                TemplateKind::Text,
            );
        }
    }
    fn limits(
        base: &str,
        l: &mut LimitsSpec,
        visit: &mut dyn FnMut(String, &mut Tpl, TemplateKind),
    ) {
        for (kind, v) in l.entries_mut() {
            if let Some(v) = v {
                visit(
                    format!("{base}/limits/{}", kind.as_str()),
                    v,
                    TemplateKind::Text,
                );
            }
        }
    }
    fn opt(
        at: String,
        v: &mut Option<Tpl>,
        kind: TemplateKind,
        visit: &mut dyn FnMut(String, &mut Tpl, TemplateKind),
    ) {
        if let Some(v) = v {
            visit(at, v, kind);
        }
    }
    fn command(
        base: String,
        c: &mut Command,
        visit: &mut dyn FnMut(String, &mut Tpl, TemplateKind),
    ) {
        match &mut c.form {
            Form::Argv { argv, bare, at } => {
                *at = if *bare {
                    base.clone()
                } else {
                    format!("{base}/argv")
                };
                for (i, a) in argv.iter_mut().enumerate() {
                    visit(format!("{at}/{i}"), a, TemplateKind::Text);
                }
            }
            Form::Script { script, .. } => {
                visit(format!("{base}/script"), script, TemplateKind::Script)
            }
        }
        opt(
            format!("{base}/when"),
            &mut c.when,
            TemplateKind::When,
            visit,
        );
        env(&base, &mut c.env, visit);
        opt(format!("{base}/cwd"), &mut c.cwd, TemplateKind::Text, visit);
        opt(
            format!("{base}/timeout"),
            &mut c.timeout,
            TemplateKind::Text,
            visit,
        );
        c.at = base;
    }
    env("", &mut flavor.env, visit);
    if let Some(p) = &mut flavor.prepare {
        if let Some(key) = &mut p.key {
            let one = matches!(key, Key::One(_));
            for (i, part) in key.parts_mut().iter_mut().enumerate() {
                let at = if one {
                    "/prepare/key".to_string()
                } else {
                    format!("/prepare/key/{i}")
                };
                visit(at, part, TemplateKind::Key);
            }
        }
        env("/prepare", &mut p.env, visit);
        for (i, c) in p.run.iter_mut().enumerate() {
            command(format!("/prepare/run/{i}"), c, visit);
        }
        opt(
            "/prepare/timeout".into(),
            &mut p.timeout,
            TemplateKind::Text,
            visit,
        );
        limits("/prepare", &mut p.limits, visit);
    }
    let l = &mut flavor.launch;
    command("/launch/run".into(), &mut l.run, visit);
    env("/launch", &mut l.env, visit);
    opt("/launch/cwd".into(), &mut l.cwd, TemplateKind::Text, visit);
    limits("/launch", &mut l.limits, visit);
    opt(
        "/launch/timeout".into(),
        &mut l.timeout,
        TemplateKind::Text,
        visit,
    );
    opt(
        "/launch/kill_grace".into(),
        &mut l.kill_grace,
        TemplateKind::Text,
        visit,
    );
    if let Some(c) = &mut flavor.cleanup {
        env("/cleanup", &mut c.env, visit);
        for (i, cmd) in c.run.iter_mut().enumerate() {
            command(format!("/cleanup/run/{i}"), cmd, visit);
        }
        opt(
            "/cleanup/timeout".into(),
            &mut c.timeout,
            TemplateKind::Text,
            visit,
        );
        limits("/cleanup", &mut c.limits, visit);
    }
}

impl Flavor {
    /// The typed flavor of a manifest value (which must have passed the flavor schema
    /// for its errors to be located), every template placed.
    pub fn from_value(value: &Value) -> Result<Flavor, serde_json::Error> {
        let mut flavor: Flavor = serde_json::from_value(value.clone())?;
        walk(&mut flavor, &mut |at, tpl, _| tpl.at = at);
        Ok(flavor)
    }

    /// Every template string, in document order, for static checks.
    /// Every command of every stage, in order: prepare, launch, cleanup.
    pub fn commands(&self) -> impl Iterator<Item = &Command> {
        let prepare = self.prepare.iter().flat_map(|p| p.run.iter());
        let cleanup = self.cleanup.iter().flat_map(|c| c.run.iter());
        prepare
            .chain(std::iter::once(&self.launch.run))
            .chain(cleanup)
    }

    pub fn templates(&self) -> Vec<TemplateRef> {
        let mut out = Vec::new();
        walk(&mut self.clone(), &mut |at, tpl, kind| {
            if let Value::String(text) = &tpl.value {
                out.push(TemplateRef {
                    pointer: at,
                    text: text.clone(),
                    kind,
                });
            }
        });
        out
    }
}
