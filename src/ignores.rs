//! No silently dropped field: every step-info field a step can set (its resources,
//! requirements, parent image, environment) is either used by one of the flavor's
//! templates or declared under `ignores:` with the reason. `validate` checks the
//! declaration against the templates; at launch a step that sets an ignored field is
//! told so in the summary and the result (or refused, with `--strict`).

use std::collections::BTreeMap;

use crate::manifest::{Flavor, TemplateRef};
use crate::step_info::StepInfo;

/// The fields a step sets that a flavor must use or ignore, by their template paths.
pub const FIELDS: &[&str] = &[
    "resources.cpu_count",
    "resources.gpu_count",
    "resources.memory",
    "requirements.pip",
    "requirements.apt",
    "requirements.parent_image",
    "requirements.environment",
];

/// A template's first use of `field`: the field itself, or the object it is in used
/// whole (`{{ resources | tojson }}`). The template and the byte offset in it.
pub fn first_use<'t>(
    templates: &'t [TemplateRef],
    field: &str,
) -> Option<(&'t TemplateRef, usize)> {
    let parent = field.split_once('.').map_or(field, |(p, _)| p);
    templates.iter().find_map(|t| {
        let own = crate::template::find_variable(&t.text, field);
        let whole = crate::template::variable_uses(&t.text, parent)
            .into_iter()
            .find(|(_, next)| *next != Some('.'))
            .map(|(at, _)| at);
        let at = own.into_iter().chain(whole).min()?;
        Some((t, at))
    })
}

/// What the flavor ignores: what it declares, and what no template uses although it
/// declares nothing for it (which `runner validate` reports).
/// `templates` are the flavor's ([`Flavor::templates`]).
pub fn effective(flavor: &Flavor, templates: &[TemplateRef]) -> BTreeMap<String, String> {
    let mut out = flavor.ignores.clone();
    for field in FIELDS {
        if !out.contains_key(*field) && first_use(templates, field).is_none() {
            out.insert(
                field.to_string(),
                "no template of the flavor uses it (and it declares no reason)".into(),
            );
        }
    }
    out
}

/// The ignored fields this step sets, each with the flavor's reason and what the step
/// asked for (shown in the warning).
pub fn set_but_ignored(ignores: &BTreeMap<String, String>, info: &StepInfo) -> Vec<String> {
    let r = &info.resources;
    let q = &info.requirements;
    let join = |v: &[String]| v.join(", ");
    let asked = |field: &str| -> Option<String> {
        match field {
            "resources.cpu_count" => r.cpu_count.map(|c| format!("{c} CPUs")),
            "resources.gpu_count" => r.gpu_count.filter(|&g| g > 0).map(|g| match g {
                1 => "1 GPU".to_string(),
                g => format!("{g} GPUs"),
            }),
            "resources.memory" => r.memory.map(|m| crate::units::Bytes(m).to_string()),
            "requirements.pip" => (!q.pip.is_empty()).then(|| join(&q.pip)),
            "requirements.apt" => (!q.apt.is_empty()).then(|| join(&q.apt)),
            "requirements.parent_image" => q.parent_image.clone(),
            "requirements.environment" => (!q.environment.is_empty())
                .then(|| q.environment.keys().cloned().collect::<Vec<_>>().join(", ")),
            _ => None,
        }
    };
    ignores
        .iter()
        .filter_map(|(field, why)| {
            let what = asked(field)?;
            Some(format!(
                "the flavor ignores `{field}` ({}): {why}",
                crate::util::printable(&what)
            ))
        })
        .collect()
}
