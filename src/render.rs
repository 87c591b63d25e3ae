//! Rendering: a checked [`Flavor`] and a [`StepInfo`] become a [`Plan`].
//!
//! Every template is rendered in the one environment of [`crate::template`] (strict
//! undefined; scripts shell-quote every interpolation); every error is located at the
//! template's own place ([`Tpl::at`]), all of them collected before rendering fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use minijinja::value::{Value as JValue, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde_json::Value;

use crate::diag::Diagnostic;
use crate::home::{Home, RunDir};
use crate::limits::{LimitKind, Limits};
use crate::manifest::{Command, Env, Flavor, Form, LimitsSpec, Source, Tpl};
use crate::plan::{CommandPlan, Dirs, LaunchPlan, Plan, PreparePlan, Run, StagePlan};
use crate::step_info::StepInfo;
use crate::template::{self, plain, single_expression, template_pos};
use crate::{cache, settings, units};

pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_CLEANUP_TIMEOUT: Duration = Duration::from_secs(300);
/// Processes a prepare or cleanup stage may have at once unless its manifest says.
pub const DEFAULT_STAGE_PIDS: u64 = 8192;

/// Why rendering failed: every error, located in the manifest.
#[derive(Debug, thiserror::Error)]
#[error("the manifest does not render")]
pub struct RenderError(pub Vec<Diagnostic>);

/// What a render needs besides the manifest and step info.
pub struct Where<'a> {
    /// `$RUNNER_HOME`: `runs/` and `cache/` live here.
    pub home: &'a Home,
    /// The run folder (`--run-dir`), else `home/runs/<run id>`.
    pub run_dir: Option<PathBuf>,
    pub run_id: String,
    /// The runner's working directory: the default source folder, and the base of a
    /// relative one.
    pub cwd: PathBuf,
    /// The runner's own environment (`env` in templates).
    pub env: BTreeMap<String, String>,
}

struct Renderer<'a> {
    src: &'a Source,
    jenv: Environment<'static>,
    /// What the scripts being rendered interpolate.
    holes: template::Holes,
    /// How many values the last script rendered interpolated.
    interpolated: usize,
    /// The text `| safe` put unquoted into the last script rendered.
    unquoted: Vec<String>,
    ctx: JValue,
    cwd: PathBuf,
    diags: Vec<Diagnostic>,
}

impl Renderer<'_> {
    /// A minijinja error in `tpl`; `base`: where the source minijinja saw starts in the
    /// template's text (an expression inside `{{ }}`).
    fn fail(&mut self, tpl: &Tpl, base: usize, err: &Error) {
        let pos = match tpl.text() {
            Some(t) => {
                // The exact span when minijinja knows it, else the start of the line.
                let offset = err
                    .range()
                    .map(|r| base + r.start)
                    .filter(|&o| o <= t.len())
                    .or_else(|| err.line().map(|l| template::line_offset(t, l)))
                    .unwrap_or(0);
                template_pos(self.src, &tpl.at, t, offset)
            }
            None => self.src.doc.index.nearest(&tpl.at),
        };
        let mut msg = err
            .detail()
            .map(str::to_string)
            .unwrap_or_else(|| err.kind().to_string());
        if err.kind() == ErrorKind::UndefinedError {
            msg = format!("undefined value: {msg}");
        }
        if err.kind() == ErrorKind::OutOfFuel {
            msg = format!(
                "this template ran more than {} instructions: a loop or recursion without \
                 a useful end?",
                template::FUEL
            );
        }
        self.diags.push(Diagnostic::new(
            &self.src.path,
            Some(&self.src.text),
            pos,
            msg,
        ));
    }

    fn error(&mut self, at: &str, msg: String) {
        let pos = self.src.doc.index.nearest(at);
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
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4096, |p| p.max(4096) as usize);
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

    /// A text template (or a literal number) → string; `script` quotes interpolations.
    fn text(&mut self, tpl: &Tpl, script: bool) -> Option<String> {
        crate::bounded::note(&tpl.at);
        let text = match &tpl.value {
            Value::String(s) => s,
            Value::Null => return Some(String::new()),
            other => return Some(other.to_string()),
        };
        let name = if script {
            format!("{}.sh", tpl.at)
        } else {
            tpl.at.clone()
        };
        self.holes.take();
        let rendered = self.jenv.render_named_str(&name, text, &self.ctx);
        let collected = self.holes.take();
        let values = collected.values;
        self.interpolated = values.len();
        self.unquoted = collected.unquoted;
        let rendered = match rendered {
            Ok(s) if script => match template::fill_script(&s, &values) {
                Ok(filled) => Ok(filled),
                Err(e) => {
                    self.error(&tpl.at, e.to_string());
                    return None;
                }
            },
            other => other,
        };
        match rendered {
            Ok(s) if s.contains('\0') => {
                self.error(
                    &tpl.at,
                    "renders a value containing a NUL byte, which no command can receive".into(),
                );
                None
            }
            Ok(s) => Some(s),
            Err(e) => {
                self.fail(tpl, 0, &e);
                None
            }
        }
    }

    /// `expr` is a slice of the template's text (see [`single_expression`]).
    fn expression(&mut self, tpl: &Tpl, expr: &str) -> Option<JValue> {
        crate::bounded::note(&tpl.at);
        let text = tpl.text().unwrap_or_default();
        let base = (expr.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
        let result = self
            .jenv
            .compile_expression(expr)
            .and_then(|c| c.eval(&self.ctx));
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(tpl, base, &e);
                None
            }
        }
    }

    /// An argv element: one `{{ list }}` expands in place; none adds nothing.
    fn argv(&mut self, at: &str, items: &[Tpl]) -> Vec<String> {
        let mut out = Vec::new();
        for item in items {
            if let Some(text) = item.text()
                && let Some(expr) = single_expression(text)
            {
                let Some(v) = self.expression(item, expr) else {
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
            if let Some(s) = self.text(item, false) {
                out.push(s);
            }
        }
        if out.iter().any(|a| a.contains('\0')) {
            self.error(
                at,
                "an argument contains a NUL byte, which no command can receive".into(),
            );
        }
        out
    }

    fn when(&mut self, tpl: &Tpl) -> bool {
        match &tpl.value {
            Value::Bool(b) => *b,
            Value::String(text) => {
                if let Some(expr) = single_expression(text) {
                    return self.expression(tpl, expr).is_some_and(|v| v.is_true());
                }
                let s = self.text(tpl, false).unwrap_or_default();
                !matches!(s.trim(), "" | "false" | "False" | "0" | "none" | "None")
            }
            _ => true,
        }
    }

    fn env(&mut self, env: &Env, into: &mut BTreeMap<String, String>) {
        for (k, v) in env {
            if let Some(s) = self.text(v, false) {
                into.insert(k.clone(), s);
            }
        }
    }

    fn duration(&mut self, tpl: Option<&Tpl>) -> Option<Duration> {
        let tpl = tpl?;
        let s = self.text(tpl, false)?;
        let s = s.trim();
        if s.is_empty() || s == "none" {
            return None;
        }
        match units::parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(&tpl.at, e.to_string());
                None
            }
        }
    }

    fn command(&mut self, c: &Command) -> CommandPlan {
        let mut env = BTreeMap::new();
        self.env(&c.env, &mut env);
        let skipped = c.when.as_ref().is_some_and(|w| !self.when(w));
        let mut unquoted = Vec::new();
        let run = match &c.form {
            Form::Script { script, shell } => {
                let shell = shell.clone().unwrap_or_else(|| "sh".into());
                let text = self.text(script, true).unwrap_or_default();
                unquoted = std::mem::take(&mut self.unquoted);
                if self.interpolated > 0 && !template::script::quotable_shell(&shell) {
                    self.error(
                        &script.at,
                        format!(
                            "an interpolation in a `shell: {shell}` script: the runner quotes \
                             values for sh and bash only"
                        ),
                    );
                }
                Run::Script {
                    shell,
                    script: text,
                }
            }
            Form::Argv { argv, at, .. } => {
                let argv = self.argv(at, argv);
                if argv.is_empty() && !skipped {
                    self.error(
                        &c.at,
                        "the command renders to an empty argument list".into(),
                    );
                }
                Run::Argv { argv }
            }
        };
        let cwd = match &c.cwd {
            Some(cwd) => self
                .text(cwd, false)
                .map(|s| self.cwd.join(s))
                .unwrap_or_default(),
            None => self.cwd.clone(),
        };
        let timeout = self.duration(c.timeout.as_ref());
        CommandPlan {
            at: c.at.clone(),
            run,
            env,
            cwd,
            timeout,
            skipped,
            unquoted,
        }
    }

    fn limit<T>(
        &mut self,
        kind: LimitKind,
        tpl: Option<&Tpl>,
        parse: fn(&str) -> Result<T, units::UnitError>,
    ) -> Option<T> {
        let tpl = tpl?;
        let s = self.text(tpl, false)?;
        let s = s.trim();
        if s.is_empty() || matches!(s, "none" | "None" | "null") {
            return None;
        }
        match parse(s) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(&tpl.at, format!("limit `{kind}`: {e}"));
                None
            }
        }
    }

    /// A stage's limits; `core` is 0 unless set (no core dumps of steps).
    fn limits(&mut self, lim: &LimitsSpec) -> Limits {
        Limits {
            memory_bytes: self.limit(LimitKind::Memory, lim.memory.as_ref(), units::parse_bytes),
            cpus: self.limit(LimitKind::Cpus, lim.cpus.as_ref(), units::parse_cpus),
            gpus: self
                .limit(LimitKind::Gpus, lim.gpus.as_ref(), units::parse_count)
                .map(|g| g.min(u64::from(u32::MAX)) as u32),
            pids: self.limit(LimitKind::Pids, lim.pids.as_ref(), units::parse_count),
            open_files: self.limit(
                LimitKind::OpenFiles,
                lim.open_files.as_ref(),
                units::parse_count,
            ),
            cpu_time_secs: self
                .limit(
                    LimitKind::CpuTime,
                    lim.cpu_time.as_ref(),
                    units::parse_duration,
                )
                .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
            file_size_bytes: self.limit(
                LimitKind::FileSize,
                lim.file_size.as_ref(),
                units::parse_bytes,
            ),
            core_bytes: self
                .limit(LimitKind::Core, lim.core.as_ref(), units::parse_bytes)
                .or(Some(0)),
            address_space_bytes: self.limit(
                LimitKind::AddressSpace,
                lim.address_space.as_ref(),
                units::parse_bytes,
            ),
        }
    }

    /// A prepare or cleanup stage's limits: as written, with a pids limit by default.
    fn stage_limits(&mut self, lim: &LimitsSpec) -> Limits {
        let mut l = self.limits(lim);
        if lim.pids.is_none() {
            l.pids = Some(DEFAULT_STAGE_PIDS);
        }
        l
    }

    /// The prepare stage's commands and environment (`base` is the flavor's `env`).
    fn prepare_stage(
        &mut self,
        p: &crate::manifest::Prepare,
        mut env: BTreeMap<String, String>,
    ) -> (BTreeMap<String, String>, Vec<CommandPlan>) {
        self.env(&p.env, &mut env);
        let commands = p.run.iter().map(|c| self.command(c)).collect();
        (env, commands)
    }
}

/// For a prepare without `key:`, what it runs — every command's argv (or shell and
/// script), its own variables, its working directory, whether it is skipped, and the
/// stage's variables — as key parts: the cache entry is then shared exactly by steps
/// whose prepare runs the same thing.
fn rendered_key_parts(env: &BTreeMap<String, String>, commands: &[CommandPlan]) -> Vec<String> {
    let mut parts = vec!["env".to_string()];
    parts.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    for c in commands {
        parts.push(format!("command {}", c.at));
        match &c.run {
            Run::Argv { argv } => {
                parts.push("argv".into());
                parts.extend(argv.iter().cloned());
            }
            Run::Script { shell, script } => {
                parts.extend(["script".into(), shell.clone(), script.clone()]);
            }
        }
        parts.push(format!("cwd {}", c.cwd.display()));
        parts.push(format!("skipped {}", c.skipped));
        parts.extend(c.env.iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts
}

/// The step's secrets (`--env NAME`, `environment:`) reach its command's environment
/// only: a template that prints one (`{{ env.NAME }}`) would put its value in
/// `plan.json`, an argument list and `render`'s output. Refused, located.
fn secrets_unprinted(src: &Source, flavor: &Flavor, info: &StepInfo) -> Result<(), RenderError> {
    let mut diags = Vec::new();
    for t in flavor.templates() {
        for name in info.environment.keys() {
            let found = template::find_word(&t.text, &format!("env.{name}")).or_else(|| {
                [format!("env['{name}']"), format!("env[\"{name}\"]")]
                    .iter()
                    .find_map(|w| t.text.find(w.as_str()))
            });
            if let Some(offset) = found {
                diags.push(
                    Diagnostic::new(
                        &src.path,
                        Some(&src.text),
                        template_pos(src, &t.pointer, &t.text, offset),
                        format!(
                            "`env.{name}` is one of the step's secrets: a template may not print it"
                        ),
                    )
                    .with_hint(format!(
                        "the step gets `{name}` in its environment; a script reads it as \"${name}\""
                    )),
                );
            }
        }
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(RenderError(diags))
    }
}

/// A launch that runs the entrypoint needs one: without it, say so before any work
/// (a prepare that builds an image for a step that was never named).
fn no_entrypoint(src: &Source, flavor: &Flavor) -> Result<(), RenderError> {
    let uses = flavor.templates().into_iter().find_map(|t| {
        let at = template::find_variable(&t.text, "entrypoint")?;
        t.pointer.starts_with("/launch/").then_some((t, at))
    });
    match uses {
        None => Ok(()),
        Some((t, offset)) => Err(RenderError(vec![
            Diagnostic::new(
                &src.path,
                Some(&src.text),
                template_pos(src, &t.pointer, &t.text, offset),
                "no entrypoint: give the step's command after `--`",
            )
            .with_hint(
                "e.g. `runner launch MANIFEST -- python3 train.py`; the launch runs the \
                 entrypoint here",
            ),
        ])),
    }
}

/// Whether a render error is about the template's own cost (instructions, memory,
/// time), whatever the step: what `runner validate`'s trial render reports.
pub fn over_budget(d: &Diagnostic) -> bool {
    d.message.starts_with("this template ran more than")
        || d.message
            .starts_with("rendering this template took more than")
}

/// A diagnostic as it crosses from the bounded child (with its source line).
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    file: PathBuf,
    line: usize,
    col: usize,
    message: String,
    hint: Option<String>,
    source_line: Option<String>,
}

/// [`render`] in a child process under [`crate::bounded::RENDER`]: templates that
/// would take all memory or time end in a located error instead. For single-threaded
/// callers (the command line), see [`crate::bounded`].
pub fn render_bounded(
    src: &Source,
    flavor: &Flavor,
    info: &StepInfo,
    at: &Where<'_>,
) -> Result<Plan, RenderError> {
    use crate::bounded::{self, Exceeded};
    let outcome = bounded::run(bounded::RENDER, || {
        render(src, flavor, info, at).map_err(|e| {
            e.0.into_iter()
                .map(|d| Wire {
                    file: d.file,
                    line: d.line,
                    col: d.col,
                    message: d.message,
                    hint: d.hint,
                    source_line: d.source_line,
                })
                .collect::<Vec<_>>()
        })
    });
    let located = |at: &str, message: String| {
        RenderError(vec![
            Diagnostic::new(&src.path, Some(&src.text), src.doc.index.nearest(at), message)
                .with_hint("a template builds its value from the step's data; one that grows without bound (doubling in a loop, recursion) is refused"),
        ])
    };
    match outcome {
        Ok(Ok(Ok(plan))) => Ok(plan),
        Ok(Ok(Err(wire))) => Err(RenderError(
            wire.into_iter()
                .map(|w| Diagnostic {
                    file: w.file,
                    line: w.line,
                    col: w.col,
                    message: w.message,
                    hint: w.hint,
                    source_line: w.source_line,
                })
                .collect(),
        )),
        Ok(Err(Exceeded::Memory { at })) => Err(located(
            &at,
            format!(
                "rendering this template took more than {} of memory",
                crate::units::Bytes(bounded::RENDER.memory_bytes)
            ),
        )),
        Ok(Err(Exceeded::Time { at })) => Err(located(
            &at,
            format!(
                "rendering this template took more than {} s",
                bounded::RENDER.seconds
            ),
        )),
        Ok(Err(Exceeded::Panicked { message })) => Err(RenderError(vec![Diagnostic::file(
            &src.path,
            format!("internal error while rendering (a bug; please report it): {message}"),
        )])),
        // The child could not be made: render here (no bound, but no worse than before).
        Err(_) => render(src, flavor, info, at),
    }
}

/// Flavor + StepInfo → Plan. All errors are collected and located.
pub fn render(
    src: &Source,
    flavor: &Flavor,
    info: &StepInfo,
    at: &Where<'_>,
) -> Result<Plan, RenderError> {
    let settings = settings::resolve(src, flavor, &info.settings).map_err(RenderError)?;
    if info.entrypoint.is_empty() {
        no_entrypoint(src, flavor)?;
    }
    secrets_unprinted(src, flavor, info)?;
    let run = at
        .run_dir
        .clone()
        .map(RunDir::new)
        .unwrap_or_else(|| at.home.run(&at.run_id));
    // The step's code: where its commands run unless they say otherwise. A given
    // folder must exist, and is used as its real path (`dirs.source`, cache keys).
    let source = match &info.source {
        Some(s) => {
            let given = at.cwd.join(s);
            std::fs::canonicalize(&given).map_err(|e| {
                RenderError(vec![Diagnostic::file(
                    &given,
                    format!("the step's source folder cannot be used: {e}"),
                )
                .with_hint("`--source DIR` (or `source:` in the step info) names the step's code; it must exist")])
            })?
        }
        None => at.cwd.clone(),
    };
    let mut dirs = Dirs {
        work: run.work(),
        run: run.path().to_path_buf(),
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
        // Without the step's secrets: their values never reach a template.
        "env": at.env.iter().filter(|(k, _)| !info.environment.contains_key(*k)).collect::<BTreeMap<_, _>>(),
        "dirs": {"run": dirs.run, "work": dirs.work, "source": dirs.source},
    });
    let holes = template::Holes::default();
    let mut r = Renderer {
        src,
        jenv: template::environment_with(holes.clone()),
        holes: holes.clone(),
        interpolated: 0,
        unquoted: Vec::new(),
        ctx: JValue::from_serialize(&context),
        cwd: dirs.source.clone(),
        diags: Vec::new(),
    };

    // The prepare key first: it names the cache folder that `dirs.prepare` points at.
    let mut prepare_key = None;
    if let Some(p) = &flavor.prepare {
        let parts: Vec<String> = match &p.key {
            Some(key) => key
                .parts()
                .iter()
                .filter_map(|part| r.text(part, false))
                .collect(),
            None => {
                // What the stage runs, rendered with a stand-in for the folder the key
                // names; errors are reported by the real render below.
                let mut ctx = context.clone();
                ctx["dirs"]["prepare"] = serde_json::json!("<prepare>");
                let mut probe = Renderer {
                    src,
                    jenv: template::environment_with(holes.clone()),
                    holes: holes.clone(),
                    interpolated: 0,
                    unquoted: Vec::new(),
                    ctx: JValue::from_serialize(&ctx),
                    cwd: dirs.source.clone(),
                    diags: Vec::new(),
                };
                let mut env = BTreeMap::new();
                probe.env(&flavor.env, &mut env);
                let (env, commands) = probe.prepare_stage(p, env);
                rendered_key_parts(&env, &commands)
            }
        };
        let key = cache::key(&flavor.name, flavor.version, &parts);
        let dir = at.home.cache_entry(&flavor.name, &key);
        context["dirs"]["prepare"] = serde_json::json!(dir);
        dirs.prepare = Some(dir);
        r.ctx = JValue::from_serialize(&context);
        prepare_key = Some((key, parts));
    }

    let mut base_env = BTreeMap::new();
    r.env(&flavor.env, &mut base_env);
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
            run.engine_outcome().display().to_string(),
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
            let (env, commands) = r.prepare_stage(p, env);
            let timeout = r.duration(p.timeout.as_ref());
            let limits = r.stage_limits(&p.limits);
            Some(PreparePlan {
                key,
                key_parts,
                env,
                commands,
                timeout,
                limits,
                capabilities: p.capabilities.clone(),
            })
        }
        _ => None,
    };

    let l = &flavor.launch;
    let mut env = runner_env("launch");
    env.extend(base_env.clone());
    r.env(&l.env, &mut env);
    let mut command = r.command(&l.run);
    if let Some(cwd) = &l.cwd
        && let Some(s) = r.text(cwd, false)
    {
        command.cwd = r.cwd.join(s);
    }
    if command.skipped {
        let at = l.run.when.as_ref().map_or(l.run.at.as_str(), |w| &w.at);
        r.error(at, "the launch command cannot be skipped".into());
    }
    let limits = r.limits(&l.limits);
    let launch = LaunchPlan {
        env,
        timeout: r.duration(l.timeout.as_ref()),
        kill_grace: r
            .duration(l.kill_grace.as_ref())
            .unwrap_or(DEFAULT_KILL_GRACE),
        command,
        limits,
        capabilities: l.capabilities.clone(),
        measured_by: l.measured_by,
    };

    let cleanup = match &flavor.cleanup {
        Some(c) => {
            let mut env = runner_env("cleanup");
            env.extend(base_env);
            r.env(&c.env, &mut env);
            StagePlan {
                env,
                commands: c.run.iter().map(|cmd| r.command(cmd)).collect(),
                timeout: r
                    .duration(c.timeout.as_ref())
                    .or(Some(DEFAULT_CLEANUP_TIMEOUT)),
                limits: r.stage_limits(&c.limits),
                capabilities: c.capabilities.clone(),
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
        return Err(RenderError(r.diags));
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
        ignored: crate::ignores::set_but_ignored(&crate::ignores::effective(flavor), info),
    })
}
