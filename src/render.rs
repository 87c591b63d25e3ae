//! Rendering: a checked [`Flavor`] and a [`StepInfo`] become a [`Plan`].
//!
//! One minijinja environment with strict undefined behaviour. Templates whose
//! name ends in `.sh` (scripts) auto-escape every interpolation with shell
//! quoting — a list becomes individually quoted words, `| safe` opts out — so a
//! hostile step name or requirement can never run as shell code. Argv elements
//! are plain text and never pass through a shell.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::value::{Value as JValue, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior};
use serde_json::{Map, Value};

use crate::diag::Diagnostic;
use crate::manifest::{Command, Flavor, Key, Source, Tpl};
use crate::plan::{CommandPlan, Dirs, LaunchPlan, Limits, Plan, PreparePlan, Run, StagePlan};
use crate::step_info::StepInfo;
use crate::units;
use crate::validate;

pub const DEFAULT_KILL_GRACE_SECS: f64 = 10.0;
pub const DEFAULT_CLEANUP_TIMEOUT_SECS: f64 = 300.0;

/// Quote for POSIX `sh`: bare when only safe characters, else single-quoted.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Text of a value as plain text: none renders empty.
fn plain(value: &JValue) -> String {
    match value.kind() {
        ValueKind::None | ValueKind::Undefined => String::new(),
        _ => value.to_string(),
    }
}

fn quote_value(value: &JValue) -> String {
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable => value
            .try_iter()
            .map(|it| {
                it.map(|v| shell_quote(&plain(&v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
        _ => shell_quote(&plain(value)),
    }
}

fn size_arg(value: &JValue) -> Result<u64, Error> {
    if let Some(n) = value.as_i64() {
        return u64::try_from(n)
            .map_err(|_| Error::new(ErrorKind::InvalidOperation, "negative size"));
    }
    units::parse_bytes(&plain(value))
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
}

/// The environment every manifest template is compiled in.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".sh") {
            AutoEscape::Custom("shell")
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(|out, state: &State, value| {
        let text = if matches!(state.auto_escape(), AutoEscape::Custom("shell")) && !value.is_safe()
        {
            quote_value(value)
        } else {
            plain(value)
        };
        out.write_str(&text).map_err(Error::from)
    });
    let q = |v: JValue| JValue::from_safe_string(quote_value(&v));
    env.add_filter("q", q);
    env.add_filter("shell_quote", q);
    env.add_filter("bytes", |v: JValue| size_arg(&v));
    env.add_filter("kib", |v: JValue| size_arg(&v).map(|b| b.div_ceil(1 << 10)));
    env.add_filter("mib", |v: JValue| size_arg(&v).map(|b| b.div_ceil(1 << 20)));
    env.add_filter("gib", |v: JValue| size_arg(&v).map(|b| b.div_ceil(1 << 30)));
    env.add_filter("seconds", |v: JValue| -> Result<u64, Error> {
        let secs = match v.as_i64() {
            Some(n) if n >= 0 => n as f64,
            _ => units::parse_duration(&plain(&v))
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?,
        };
        Ok(secs.ceil() as u64)
    });
    // `{{ names | flags('-e') }}` → `-e A -e B`; `flags('--x=')` → `--x=A --x=B`.
    env.add_filter(
        "flags",
        |v: JValue, flag: String| -> Result<Vec<String>, Error> {
            let items = v.try_iter()?;
            Ok(items
                .flat_map(|item| match flag.strip_suffix('=') {
                    Some(_) => vec![format!("{flag}{}", plain(&item))],
                    None => vec![flag.clone(), plain(&item)],
                })
                .collect())
        },
    );
    // minijinja's own `tojson` marks its output safe (for HTML), which in a script would
    // skip shell quoting and let `$(…)` inside a JSON string run. Plain text here, so a
    // script quotes it like any other value.
    env.add_filter(
        "tojson",
        |v: JValue, indent: Option<usize>| -> Result<String, Error> {
            let json = match indent {
                Some(n) => {
                    let pad = " ".repeat(n);
                    let fmt = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
                    let mut out = Vec::new();
                    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
                    serde::Serialize::serialize(&v, &mut ser)
                        .map(|()| String::from_utf8(out).unwrap_or_default())
                }
                None => serde_json::to_string(&v),
            };
            json.map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
        },
    );
    env.add_filter("hash", |v: JValue| {
        let json = serde_json::to_string(&v).unwrap_or_default();
        blake3::hash(json.as_bytes()).to_hex()[..16].to_string()
    });
    env
}

/// If a template is exactly one `{{ expression }}`, the expression.
fn single_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") || inner.contains("{#")
    {
        return None;
    }
    Some(inner.trim())
}

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the manifest does not render")]
    Located(Vec<Diagnostic>),
    #[error("invalid settings for flavor `{flavor}`:\n{}", .errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Settings { flavor: String, errors: Vec<String> },
}

/// What a render needs besides the manifest and step info.
pub struct Where<'a> {
    /// `$RUNNER_HOME`: `runs/` and `cache/` live here.
    pub home: &'a Path,
    /// The run folder (`--run-dir`), else `home/runs/<run id>`.
    pub run_dir: Option<PathBuf>,
    pub run_id: String,
    /// The runner's working directory: default cwd and base of relative paths.
    pub cwd: PathBuf,
    /// The runner's own environment (`env` in templates).
    pub env: BTreeMap<String, String>,
}

struct Renderer<'a> {
    src: &'a Source,
    jenv: Environment<'static>,
    ctx: JValue,
    cwd: PathBuf,
    diags: Vec<Diagnostic>,
}

impl Renderer<'_> {
    /// `base`: where the source minijinja saw starts in `text` (an expression inside `{{ }}`).
    fn fail(&mut self, pointer: &str, text: Option<&str>, base: usize, err: &Error) {
        // The exact span when minijinja knows it, else the start of the line.
        let offset = text
            .and_then(|t| {
                err.range()
                    .map(|r| base + r.start)
                    .filter(|&o| o <= t.len())
                    .or_else(|| {
                        err.line()
                            .map(|l| t.split_inclusive('\n').take(l - 1).map(str::len).sum())
                    })
            })
            .unwrap_or(0);
        let pos = match text {
            Some(t) => validate::template_pos(self.src, pointer, t, offset),
            None => self.src.doc.index.nearest(pointer),
        };
        let mut msg = err
            .detail()
            .map(str::to_string)
            .unwrap_or_else(|| err.kind().to_string());
        if err.kind() == ErrorKind::UndefinedError {
            msg = format!("undefined value: {msg}");
        }
        self.diags.push(Diagnostic::new(
            &self.src.path,
            Some(&self.src.text),
            pos,
            msg,
        ));
    }

    fn error(&mut self, pointer: &str, msg: String) {
        let pos = self.src.doc.index.nearest(pointer);
        self.diags.push(Diagnostic::new(
            &self.src.path,
            Some(&self.src.text),
            pos,
            msg,
        ));
    }

    /// The kernel refuses to start a program when one of its arguments or variables
    /// (with its NUL) is over 32 pages (`MAX_ARG_STRLEN`, 128 KiB with 4 KiB pages):
    /// say so here, at the command, rather than fail at exec after preparing.
    fn exec_sizes(&mut self, stage: &str, env: &BTreeMap<String, String>, cmds: &[CommandPlan]) {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let max = 32 * page;
        let too_long = |what: String, len: usize| {
            format!(
                "{what} is {len} bytes once rendered; the kernel refuses to start a program \
                 with a single argument or variable of {max} bytes or more"
            )
        };
        // A variable reaches the program as `NAME=VALUE`.
        let vars = |r: &mut Self, at: &str, env: &BTreeMap<String, String>| {
            for (k, v) in env {
                let len = k.len() + 1 + v.len();
                if len + 1 > max {
                    r.error(at, too_long(format!("variable `{k}`"), len));
                }
            }
        };
        vars(self, &format!("{stage}/env"), env);
        for c in cmds.iter().filter(|c| !c.skipped) {
            vars(self, &c.at, &c.env);
            for (i, a) in c.argv().iter().enumerate() {
                if a.len() + 1 > max {
                    let what = match (&c.run, i) {
                        (Run::Script { .. }, 2) => "the script".to_string(),
                        _ => format!("argument {i} of `{}`", c.program()),
                    };
                    self.error(&c.at, too_long(what, a.len()));
                }
            }
        }
    }

    /// A text template (or a literal number) → string.
    fn text(&mut self, pointer: &str, v: &Tpl, name_suffix: &str) -> Option<String> {
        let text = match v {
            Value::String(s) => s,
            Value::Null => return Some(String::new()),
            other => return Some(other.to_string()),
        };
        let name = format!("{pointer}{name_suffix}");
        match self.jenv.render_named_str(&name, text, &self.ctx) {
            Ok(s) if s.contains('\0') => {
                self.error(
                    pointer,
                    "renders a value containing a NUL byte, which no command can receive".into(),
                );
                None
            }
            Ok(s) => Some(s),
            Err(e) => {
                self.fail(pointer, Some(text), 0, &e);
                None
            }
        }
    }

    /// `expr` is a slice of `text` (see [`single_expression`]).
    fn expression(&mut self, pointer: &str, text: &str, expr: &str) -> Option<JValue> {
        let base = (expr.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
        let compiled = match self.jenv.compile_expression(expr) {
            Ok(c) => c,
            Err(e) => {
                self.fail(pointer, Some(text), base, &e);
                return None;
            }
        };
        match compiled.eval(&self.ctx) {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(pointer, Some(text), base, &e);
                None
            }
        }
    }

    /// An argv element: one `{{ list }}` expands in place; none adds nothing.
    fn argv(&mut self, base: &str, items: &[Tpl]) -> Vec<String> {
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let pointer = format!("{base}/{i}");
            if let Value::String(text) = item
                && let Some(expr) = single_expression(text)
            {
                let Some(v) = self.expression(&pointer, text, expr) else {
                    continue;
                };
                match v.kind() {
                    ValueKind::None => {}
                    ValueKind::Seq | ValueKind::Iterable => {
                        if let Ok(it) = v.try_iter() {
                            out.extend(it.map(|x| plain(&x)));
                        }
                    }
                    _ => out.push(plain(&v)),
                }
                continue;
            }
            if let Some(s) = self.text(&pointer, item, "") {
                out.push(s);
            }
        }
        if out.iter().any(|a| a.contains('\0')) {
            self.error(
                base,
                "an argument contains a NUL byte, which no command can receive".into(),
            );
        }
        out
    }

    fn when(&mut self, pointer: &str, v: &Value) -> bool {
        match v {
            Value::Bool(b) => *b,
            Value::String(text) => {
                if let Some(expr) = single_expression(text) {
                    return self
                        .expression(pointer, text, expr)
                        .is_some_and(|v| v.is_true());
                }
                let s = self.text(pointer, v, "").unwrap_or_default();
                !matches!(s.trim(), "" | "false" | "False" | "0" | "none" | "None")
            }
            _ => true,
        }
    }

    fn env(
        &mut self,
        base: &str,
        env: &BTreeMap<String, Tpl>,
        into: &mut BTreeMap<String, String>,
    ) {
        for (k, v) in env {
            let pointer = format!("{base}/env/{}", crate::manifest::ptr_escape(k));
            if let Some(s) = self.text(&pointer, v, "") {
                into.insert(k.clone(), s);
            }
        }
    }

    fn duration(&mut self, pointer: &str, v: Option<&Tpl>) -> Option<f64> {
        let s = self.text(pointer, v?, "")?;
        let s = s.trim();
        if s.is_empty() || s == "none" {
            return None;
        }
        match units::parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(pointer, e.to_string());
                None
            }
        }
    }

    fn path(&self, s: &str) -> PathBuf {
        self.cwd.join(s)
    }

    fn command(&mut self, base: &str, c: &Command) -> CommandPlan {
        let parts = c.parts();
        let mut env = BTreeMap::new();
        self.env(base, parts.env, &mut env);
        let skipped = parts
            .when
            .is_some_and(|w| !self.when(&format!("{base}/when"), w));
        let run = match c {
            Command::Script(s) => Run::Script {
                shell: s.shell.clone().unwrap_or_else(|| "sh".into()),
                script: self
                    .text(
                        &format!("{base}/script"),
                        &Value::String(s.script.clone()),
                        ".sh",
                    )
                    .unwrap_or_default(),
            },
            _ => {
                let (argv, suffix) = c.argv().expect("argv command");
                let argv = self.argv(&format!("{base}{suffix}"), argv);
                if argv.is_empty() && !skipped {
                    self.error(base, "the command renders to an empty argument list".into());
                }
                Run::Argv { argv }
            }
        };
        let cwd = match parts.cwd {
            Some(cwd) => self
                .text(&format!("{base}/cwd"), &Value::String(cwd.clone()), "")
                .map(|s| self.path(&s))
                .unwrap_or_default(),
            None => self.cwd.clone(),
        };
        let timeout_secs = self.duration(&format!("{base}/timeout"), parts.timeout);
        CommandPlan {
            at: base.to_string(),
            run,
            env,
            cwd,
            timeout_secs,
            skipped,
        }
    }

    fn limit<T>(
        &mut self,
        name: &str,
        v: &Option<Tpl>,
        parse: fn(&str) -> Result<T, units::UnitError>,
    ) -> Option<T> {
        let pointer = format!("/launch/limits/{name}");
        let s = self.text(&pointer, v.as_ref()?, "")?;
        let s = s.trim();
        if s.is_empty() || matches!(s, "none" | "None" | "null") {
            return None;
        }
        match parse(s) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(&pointer, format!("limit `{name}`: {e}"));
                None
            }
        }
    }
}

/// Does a schema use `required`/`dependentRequired` anywhere (or name a property so)?
fn mentions_required(schema: &Value) -> bool {
    match schema {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k == "required" || k == "dependentRequired" || mentions_required(v)),
        Value::Array(a) => a.iter().any(mentions_required),
        _ => false,
    }
}

/// Settings from the step info, checked against the flavor's schema with defaults applied.
/// `flavor` must have passed [`validate::check_flavor`].
pub fn settings(
    flavor: &Flavor,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, RenderError> {
    let Some(schema) = &flavor.settings else {
        if given.is_empty() {
            return Ok(Map::new());
        }
        return Err(RenderError::Settings {
            flavor: flavor.name.clone(),
            errors: given
                .keys()
                .map(|k| format!("setting `{k}`: this flavor declares no settings"))
                .collect(),
        });
    };
    let mut given = given.clone();
    // `--set python=3.11` parses as a number: keep the text where the schema wants a string.
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in given.iter_mut() {
            let wants_string = props
                .get(k)
                .and_then(|p| p.get("type"))
                .and_then(Value::as_str)
                == Some("string");
            if wants_string && !v.is_string() && !v.is_object() && !v.is_array() && !v.is_null() {
                *v = Value::String(v.to_string());
            }
        }
    }
    let nothing_given = given.is_empty();
    let filled = validate::apply_defaults(schema, given);
    // The defaults alone already passed the flavor check (`validate::check_flavor`,
    // which every caller runs first) but for `required` settings. With nothing given
    // and nothing required, checking again would only cost compiling the schema
    // (2.3 ms, most of a launch's validation time: the meta-schema is built first).
    if nothing_given && !mentions_required(schema) {
        return Ok(filled);
    }
    let validator = validate::settings_validator(schema).map_err(|e| RenderError::Settings {
        flavor: flavor.name.clone(),
        errors: vec![e.to_string()],
    })?;
    let value = Value::Object(filled);
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| {
            let path = e
                .instance_path()
                .as_str()
                .trim_start_matches('/')
                .replace('/', ".");
            match e.kind() {
                jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                    format!(
                        "unknown setting {}",
                        unexpected
                            .iter()
                            .map(|u| format!("`{u}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    format!(
                        "setting `{}` is required",
                        property.as_str().unwrap_or_default()
                    )
                }
                _ if path.is_empty() => e.to_string(),
                _ => format!("setting `{path}`: {e}"),
            }
        })
        .collect();
    if !errors.is_empty() {
        return Err(RenderError::Settings {
            flavor: flavor.name.clone(),
            errors,
        });
    }
    match value {
        Value::Object(m) => Ok(m),
        _ => unreachable!(),
    }
}

/// Flavor + StepInfo → Plan. All errors are collected and located.
pub fn render(
    src: &Source,
    flavor: &Flavor,
    info: &StepInfo,
    at: &Where<'_>,
) -> Result<Plan, RenderError> {
    let settings = settings(flavor, &info.settings)?;
    let run_dir = at
        .run_dir
        .clone()
        .unwrap_or_else(|| at.home.join("runs").join(&at.run_id));
    let source = info
        .source
        .as_ref()
        .map(|s| at.cwd.join(s))
        .unwrap_or_else(|| at.cwd.clone());
    let mut dirs = Dirs {
        work: run_dir.join("work"),
        run: run_dir,
        prepare: None,
        source,
    };
    let mut context = serde_json::json!({
        "step": info.step,
        "requirements": info.requirements,
        "resources": info.resources,
        "settings": settings,
        "entrypoint": info.entrypoint,
        "run_id": at.run_id,
        "environment": info.environment.keys().collect::<Vec<_>>(),
        "env": at.env,
        "dirs": {"run": dirs.run, "work": dirs.work, "source": dirs.source},
    });
    let mut r = Renderer {
        src,
        jenv: environment(),
        ctx: JValue::from_serialize(&context),
        cwd: at.cwd.clone(),
        diags: Vec::new(),
    };

    // The prepare key first: it names the cache folder that `dirs.prepare` points at.
    let mut prepare_key = None;
    if let Some(p) = &flavor.prepare {
        let parts: Vec<String> = match &p.key {
            Some(Key::One(s)) => r
                .text("/prepare/key", &Value::String(s.clone()), "")
                .into_iter()
                .collect(),
            Some(Key::Many(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| r.text(&format!("/prepare/key/{i}"), v, ""))
                .collect(),
            None => Vec::new(),
        };
        let key = cache_key(flavor, &parts, p.key.is_none().then_some(&p.run));
        let dir = at.home.join("cache").join(format!("{}-{key}", flavor.name));
        context["dirs"]["prepare"] = serde_json::json!(dir);
        dirs.prepare = Some(dir);
        r.ctx = JValue::from_serialize(&context);
        prepare_key = Some((key, parts));
    }

    let mut base_env = BTreeMap::new();
    r.env("", &flavor.env, &mut base_env);
    let runner_env = |stage: &str| {
        let mut e = BTreeMap::new();
        e.insert("RUNNER_RUN_ID".to_string(), at.run_id.clone());
        e.insert("RUNNER_RUN_DIR".to_string(), dirs.run.display().to_string());
        e.insert(
            "RUNNER_WORK_DIR".to_string(),
            dirs.work.display().to_string(),
        );
        e.insert(
            "RUNNER_SOURCE_DIR".to_string(),
            dirs.source.display().to_string(),
        );
        e.insert("RUNNER_STEP".to_string(), info.step.name.clone());
        e.insert("RUNNER_STAGE".to_string(), stage.to_string());
        e.insert(
            "RUNNER_ENGINE_OUTCOME".to_string(),
            dirs.run
                .join(crate::exec::ENGINE_OUTCOME)
                .display()
                .to_string(),
        );
        if let Some(p) = &dirs.prepare {
            e.insert("RUNNER_PREPARE_DIR".to_string(), p.display().to_string());
        }
        e
    };

    let prepare = match (&flavor.prepare, prepare_key) {
        (Some(p), Some((key, key_parts))) => {
            let mut env = runner_env("prepare");
            env.extend(base_env.clone());
            r.env("/prepare", &p.env, &mut env);
            let commands = p
                .run
                .iter()
                .enumerate()
                .map(|(i, c)| r.command(&format!("/prepare/run/{i}"), c))
                .collect();
            let timeout_secs = r.duration("/prepare/timeout", p.timeout.as_ref());
            Some(PreparePlan {
                key,
                key_parts,
                env,
                commands,
                timeout_secs,
            })
        }
        _ => None,
    };

    let l = &flavor.launch;
    let mut env = runner_env("launch");
    env.extend(base_env.clone());
    r.env("/launch", &l.env, &mut env);
    let mut command = r.command("/launch/run", &l.run);
    if let Some(cwd) = &l.cwd
        && let Some(s) = r.text("/launch/cwd", &Value::String(cwd.clone()), "")
    {
        command.cwd = r.path(&s);
    }
    if command.skipped {
        r.error(
            "/launch/run/when",
            "the launch command cannot be skipped".into(),
        );
    }
    let lim = &l.limits;
    let limits = Limits {
        memory_bytes: r.limit("memory", &lim.memory, units::parse_bytes),
        cpus: r.limit("cpus", &lim.cpus, units::parse_cpus),
        gpus: r
            .limit("gpus", &lim.gpus, units::parse_count)
            .map(|g| g.min(u32::MAX as u64) as u32),
        pids: r.limit("pids", &lim.pids, units::parse_count),
        open_files: r.limit("open_files", &lim.open_files, units::parse_count),
        cpu_time_secs: r
            .limit("cpu_time", &lim.cpu_time, units::parse_duration)
            .map(|s| s.ceil() as u64),
        file_size_bytes: r.limit("file_size", &lim.file_size, units::parse_bytes),
        core_bytes: r.limit("core", &lim.core, units::parse_bytes).or(Some(0)),
        address_space_bytes: r.limit("address_space", &lim.address_space, units::parse_bytes),
    };
    let launch = LaunchPlan {
        env,
        timeout_secs: r.duration("/launch/timeout", l.timeout.as_ref()),
        kill_grace_secs: r
            .duration("/launch/kill_grace", l.kill_grace.as_ref())
            .unwrap_or(DEFAULT_KILL_GRACE_SECS),
        command,
        limits,
    };

    let cleanup = match &flavor.cleanup {
        Some(c) => {
            let mut env = runner_env("cleanup");
            env.extend(base_env);
            r.env("/cleanup", &c.env, &mut env);
            StagePlan {
                env,
                commands: c
                    .run
                    .iter()
                    .enumerate()
                    .map(|(i, cmd)| r.command(&format!("/cleanup/run/{i}"), cmd))
                    .collect(),
                timeout_secs: r
                    .duration("/cleanup/timeout", c.timeout.as_ref())
                    .or(Some(DEFAULT_CLEANUP_TIMEOUT_SECS)),
            }
        }
        None => StagePlan::default(),
    };

    if let Some(p) = &prepare {
        r.exec_sizes("/prepare", &p.env, &p.commands);
    }
    r.exec_sizes(
        "/launch",
        &launch.env,
        std::slice::from_ref(&launch.command),
    );
    r.exec_sizes("/cleanup", &cleanup.env, &cleanup.commands);

    if !r.diags.is_empty() {
        return Err(RenderError::Located(r.diags));
    }
    Ok(Plan {
        flavor: flavor.name.clone(),
        manifest: src.path.clone(),
        run_id: at.run_id.clone(),
        step: info.step.name.clone(),
        dirs,
        secret_env: info.environment.keys().cloned().collect(),
        prepare,
        launch,
        cleanup,
    })
}

/// Hash of the flavor's name and version and the rendered key parts (or, without a
/// `key`, the prepare commands themselves): 16 hex digits of BLAKE3.
fn cache_key(flavor: &Flavor, parts: &[String], commands: Option<&Vec<Command>>) -> String {
    let mut h = blake3::Hasher::new();
    for field in [flavor.name.as_str(), &flavor.version.to_string()] {
        h.update(&(field.len() as u64).to_le_bytes());
        h.update(field.as_bytes());
    }
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    if let Some(cmds) = commands {
        h.update(format!("{cmds:?}").as_bytes());
    }
    h.finalize().to_hex()[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_is_posix_safe() {
        assert_eq!(shell_quote("requests==2.0"), "requests==2.0");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(
            shell_quote("x'; touch /tmp/pwned; echo '"),
            r"'x'\''; touch /tmp/pwned; echo '\'''"
        );
        assert_eq!(shell_quote("$(id)"), "'$(id)'");
    }

    #[test]
    fn scripts_quote_every_interpolation() {
        let env = environment();
        let ctx = minijinja::context! { name => "a b", pip => vec!["x;y", "z"], raw => "$HOME" };
        let out = env
            .render_named_str(
                "s.sh",
                "echo {{ name }} {{ pip }} {{ raw | safe }} {{ name | q }}",
                &ctx,
            )
            .unwrap();
        assert_eq!(out, "echo 'a b' 'x;y' z $HOME 'a b'");
        let plain = env.render_named_str("s", "{{ name }}", &ctx).unwrap();
        assert_eq!(plain, "a b");
    }

    #[test]
    fn tojson_in_a_script_is_quoted_like_any_value() {
        let env = environment();
        let ctx = minijinja::context! { v => minijinja::context! { name => "$(touch PWNED) 'x'" } };
        let out = env
            .render_named_str("s.sh", "printf %s {{ v | tojson }}", &ctx)
            .unwrap();
        assert_eq!(out, r#"printf %s '{"name":"$(touch PWNED) '\''x'\''"}'"#);
        let plain = env.render_named_str("s", "{{ v | tojson }}", &ctx).unwrap();
        assert_eq!(plain, r#"{"name":"$(touch PWNED) 'x'"}"#);
        let pretty = env.render_str("{{ [1] | tojson(2) }}", &ctx).unwrap();
        assert_eq!(pretty, "[\n  1\n]");
    }

    #[test]
    fn flags_pair_each_item_with_a_flag() {
        let env = environment();
        let ctx = minijinja::context! { names => vec!["A", "B"] };
        let expr = env.compile_expression("names | flags('-e')").unwrap();
        let v = expr.eval(&ctx).unwrap();
        assert_eq!(v.to_string(), r#"["-e", "A", "-e", "B"]"#);
        let expr = env.compile_expression("names | flags('--env=')").unwrap();
        assert_eq!(
            expr.eval(&ctx).unwrap().to_string(),
            r#"["--env=A", "--env=B"]"#
        );
    }

    #[test]
    fn filters_convert_units() {
        let env = environment();
        let ctx = minijinja::context! { m => 1u64 << 30, t => "1h" };
        let out = env
            .render_str(
                "{{ m | mib }} {{ m | gib }} {{ '512MiB' | bytes }} {{ t | seconds }}",
                &ctx,
            )
            .unwrap();
        assert_eq!(out, "1024 1 536870912 3600");
    }

    #[test]
    fn single_expressions_are_recognised() {
        assert_eq!(single_expression("{{ entrypoint }}"), Some("entrypoint"));
        assert_eq!(single_expression(" {{- x -}} "), Some("x"));
        assert_eq!(single_expression("{{ a }}{{ b }}"), None);
        assert_eq!(single_expression("--x={{ a }}"), None);
    }
}
