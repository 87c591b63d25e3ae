//! The renderer: one manifest's templates rendered in one environment, each error
//! located at its template and collected.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use minijinja::value::{Value as JValue, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde_json::Value;

use crate::diag::Diagnostic;
use crate::limits::{LimitKind, Limits};
use crate::manifest::{Command, Env, Form, LimitsSpec, Source, Tpl};
use crate::plan::{CommandPlan, Run};
use crate::template::{self, plain, single_expression, template_pos};
use crate::units;

use super::DEFAULT_STAGE_PIDS;

pub(super) struct Renderer<'a> {
    pub(super) src: &'a Source,
    pub(super) jenv: Environment<'static>,
    /// What the scripts being rendered interpolate.
    pub(super) holes: template::Holes,
    /// How many values the last script rendered interpolated.
    pub(super) interpolated: usize,
    /// The text `| safe` put unquoted into the last script rendered.
    pub(super) unquoted: Vec<String>,
    pub(super) ctx: JValue,
    pub(super) cwd: PathBuf,
    pub(super) diags: Vec<Diagnostic>,
}

impl Renderer<'_> {
    /// A minijinja error in `tpl`; `base`: where the source minijinja saw starts in the
    /// template's text (an expression inside `{{ }}`).
    pub(super) fn fail(&mut self, tpl: &Tpl, base: usize, err: &Error) {
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

    pub(super) fn error(&mut self, at: &str, msg: String) {
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
    pub(super) fn exec_sizes(
        &mut self,
        stage: &str,
        env: &BTreeMap<String, String>,
        cmds: &[CommandPlan],
    ) {
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
    pub(super) fn text(&mut self, tpl: &Tpl, script: bool) -> Option<String> {
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
    pub(super) fn expression(&mut self, tpl: &Tpl, expr: &str) -> Option<JValue> {
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
    pub(super) fn argv(&mut self, at: &str, items: &[Tpl]) -> Vec<String> {
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

    pub(super) fn when(&mut self, tpl: &Tpl) -> bool {
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

    pub(super) fn env(&mut self, env: &Env, into: &mut BTreeMap<String, String>) {
        for (k, v) in env {
            if let Some(s) = self.text(v, false) {
                into.insert(k.clone(), s);
            }
        }
    }

    pub(super) fn duration(&mut self, tpl: Option<&Tpl>) -> Option<Duration> {
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

    pub(super) fn command(&mut self, c: &Command) -> CommandPlan {
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

    pub(super) fn limit<T>(
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
    pub(super) fn limits(&mut self, lim: &LimitsSpec) -> Limits {
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
    pub(super) fn stage_limits(&mut self, lim: &LimitsSpec) -> Limits {
        let mut l = self.limits(lim);
        if lim.pids.is_none() {
            l.pids = Some(DEFAULT_STAGE_PIDS);
        }
        l
    }

    /// The prepare stage's commands and environment (`base` is the flavor's `env`).
    pub(super) fn prepare_stage(
        &mut self,
        p: &crate::manifest::Prepare,
        mut env: BTreeMap<String, String>,
    ) -> (BTreeMap<String, String>, Vec<CommandPlan>) {
        self.env(&p.env, &mut env);
        let commands = p.run.iter().map(|c| self.command(c)).collect();
        (env, commands)
    }
}
