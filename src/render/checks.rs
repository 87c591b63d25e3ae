//! Checks of a render that are not one template's: secrets never printed, an
//! entrypoint where the launch needs one, a prepare's key from what it runs.

use std::collections::BTreeMap;

use crate::diag::Diagnostic;
use crate::manifest::{Source, TemplateRef};
use crate::plan::{CommandPlan, Run};
use crate::step_info::StepInfo;
use crate::template::{self, template_pos};

use super::RenderError;

/// For a prepare without `key:`, what it runs — every command's argv (or shell and
/// script), its own variables, its working directory, whether it is skipped, and the
/// stage's variables — as key parts: the cache entry is then shared exactly by steps
/// whose prepare runs the same thing.
pub(super) fn rendered_key_parts(
    env: &BTreeMap<String, String>,
    commands: &[CommandPlan],
) -> Vec<String> {
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
pub(super) fn secrets_unprinted(
    src: &Source,
    templates: &[TemplateRef],
    info: &StepInfo,
) -> Result<(), RenderError> {
    let mut diags = Vec::new();
    for t in templates {
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
pub(super) fn no_entrypoint(src: &Source, templates: &[TemplateRef]) -> Result<(), RenderError> {
    let uses = templates.iter().find_map(|t| {
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
