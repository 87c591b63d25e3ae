//! Rendering: a checked [`Flavor`] and a [`StepInfo`] become a [`Plan`].
//!
//! Every template is rendered in the one environment of [`crate::template`] (strict
//! undefined; scripts shell-quote every interpolation); every error is located at the
//! template's own place ([`Tpl::at`]), all of them collected before rendering fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use minijinja::value::Value as JValue;

use crate::diag::Diagnostic;
use crate::home::{Home, RunDir};
use crate::manifest::{Flavor, Source};
use crate::plan::{Dirs, LaunchPlan, Plan, PreparePlan, StagePlan};
use crate::step_info::StepInfo;
use crate::template;
use crate::{cache, settings};

mod bounded;
mod checks;
mod renderer;

pub use bounded::{
    Job, check_bounded, over_budget, render_bounded, render_bounded_while, unbounded,
};
use checks::{no_entrypoint, rendered_key_parts, secrets_unprinted};
use renderer::Renderer;

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

/// Flavor + StepInfo → Plan. All errors are collected and located.
pub fn render(
    src: &Source,
    flavor: &Flavor,
    info: &StepInfo,
    at: &Where<'_>,
) -> Result<Plan, RenderError> {
    let settings = settings::resolve(src, flavor, &info.settings).map_err(RenderError)?;
    // Walked once for the checks below (each walk copies the flavor).
    let templates = flavor.templates();
    if info.entrypoint.is_empty() {
        no_entrypoint(src, &templates)?;
    }
    secrets_unprinted(src, &templates, info)?;
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
        remote: l.remote,
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
        ignored: crate::ignores::set_but_ignored(
            &crate::ignores::effective(flavor, &templates),
            info,
        ),
    })
}
