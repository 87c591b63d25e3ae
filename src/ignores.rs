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

/// Where the templates use the objects the [`FIELDS`] are in (`resources`,
/// `requirements`): each template's uses of each, found in one scan per object rather
/// than two per field (the `ignores:` check was a sixth of `runner validate`'s time).
pub struct Uses<'t> {
    /// For each template, each use of an object: its byte offset, and the object.
    per_template: Vec<(&'t TemplateRef, Vec<(usize, &'static str)>)>,
}

impl<'t> Uses<'t> {
    /// The uses in `templates` (the flavor's, [`Flavor::templates`]).
    pub fn new(templates: &'t [TemplateRef]) -> Uses<'t> {
        let mut objects: Vec<&'static str> = FIELDS
            .iter()
            .map(|f| f.split_once('.').map_or(*f, |(p, _)| p))
            .collect();
        objects.dedup();
        let per_template = templates
            .iter()
            .map(|t| {
                let mut uses: Vec<(usize, &'static str)> = objects
                    .iter()
                    .flat_map(|o| {
                        crate::template::variable_uses(&t.text, o)
                            .into_iter()
                            .map(move |(at, _)| (at, *o))
                    })
                    .collect();
                uses.sort_unstable();
                (t, uses)
            })
            .collect();
        Uses { per_template }
    }

    /// A template's first use of `field`: the field itself, or the object it is in
    /// used whole (`{{ resources | tojson }}`). The template and the byte offset in it.
    pub fn first_use(&self, field: &str) -> Option<(&'t TemplateRef, usize)> {
        let (object, part) = field.split_once('.').unwrap_or((field, ""));
        let ident = |c: char| c.is_alphanumeric() || c == '_';
        self.per_template.iter().find_map(|(t, uses)| {
            uses.iter()
                .filter(|(_, o)| *o == object)
                .find(|(at, _)| {
                    let rest = &t.text[at + object.len()..];
                    match rest.strip_prefix('.') {
                        // A part of it: this field's, and no longer name.
                        Some(after) => after
                            .strip_prefix(part)
                            .is_some_and(|end| !part.is_empty() && !end.starts_with(ident)),
                        None => true,
                    }
                })
                .map(|(at, _)| (*t, *at))
        })
    }
}

/// What the flavor ignores: what it declares, and what no template uses although it
/// declares nothing for it (which `runner validate` reports).
/// `templates` are the flavor's ([`Flavor::templates`]).
pub fn effective(flavor: &Flavor, templates: &[TemplateRef]) -> BTreeMap<String, String> {
    let mut out = flavor.ignores.clone();
    let uses = Uses::new(templates);
    for field in FIELDS {
        if !out.contains_key(*field) && uses.first_use(field).is_none() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::TemplateKind;

    /// The first use as it was found before [`Uses`]: two scans of each template per
    /// field.
    fn first_use_by_scans<'t>(
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

    /// One scan per object finds what two scans per field found, on tricky templates
    /// and on every template of the shipped flavors.
    #[test]
    fn uses_are_found_as_by_a_scan_per_field() {
        let tricky = [
            "{{ resources.cpu_count }}",
            "{{ resources.cpu_counts }} {{ resources.memory }}",
            "{{ resources | tojson }} {{ resources.gpu_count }}",
            "{{ resources . cpu_count }}",
            "{{ xresources.cpu_count }} {{ a.resources.memory }}",
            "resources.cpu_count outside {{ 1 }} {# resources #}",
            "{% if requirements.pip %}{{ requirements.pip | join(' ') }}{% endif %}",
            "{{ requirements.parent_image or requirements.environment }}",
            "{{ requirements['apt'] }} {{ requirements.apt_x }}",
            "{{ '{{ resources }}' }} {{ resources.memory",
            "{{ resources.memory}}{{resources.cpu_count}}",
            "{% set r = resources %}{{ r.memory }}",
            "{{ resources.gpu_count.x }} é{{ resources.gpu_countë }}",
        ];
        let mut sets: Vec<Vec<TemplateRef>> = tricky
            .iter()
            .map(|t| {
                vec![TemplateRef {
                    pointer: "/launch/run/0".into(),
                    text: (*t).into(),
                    kind: TemplateKind::Text,
                }]
            })
            .collect();
        sets.push(
            tricky
                .iter()
                .enumerate()
                .map(|(i, t)| TemplateRef {
                    pointer: format!("/launch/run/{i}"),
                    text: (*t).into(),
                    kind: TemplateKind::Text,
                })
                .collect(),
        );
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let src = crate::manifest::Source::read(&path).unwrap();
                let flavor = crate::validate::check_flavor(&src).unwrap();
                sets.push(flavor.templates());
            }
        }
        let mut found = 0;
        for templates in &sets {
            let uses = Uses::new(templates);
            for field in FIELDS {
                let want = first_use_by_scans(templates, field).map(|(t, at)| (&t.pointer, at));
                let got = uses.first_use(field).map(|(t, at)| (&t.pointer, at));
                assert_eq!(
                    got,
                    want,
                    "{field} in {:?}",
                    templates.iter().map(|t| &t.text).collect::<Vec<_>>()
                );
                found += usize::from(got.is_some());
            }
        }
        assert!(found > 40, "the cases use fields: {found}");
    }
}
