//! A flavor's own settings: its `settings:` JSON Schema is checked once (a valid draft
//! 2020-12 schema whose defaults satisfy it), and the settings of a step (its info
//! file's `settings:` and `--set`) are resolved against it — defaults applied, every
//! error located at the setting's declaration in the manifest.

use std::collections::BTreeSet;

use jsonschema::Validator;
use jsonschema::error::{ValidationError, ValidationErrorKind};
use serde_json::{Map, Value};

use crate::diag::{Diagnostic, closest};
use crate::manifest::{Flavor, Source, ptr_escape};

/// Where a step's settings come from, for hints.
const FROM: &str = "settings come from `--set KEY=VALUE` and the step info's `settings:`";

/// The settings schema compiles as draft 2020-12 and its defaults satisfy it.
/// Returns the declared setting names, or `(pointer, message)` errors.
pub fn check_schema(flavor: &Flavor) -> Result<BTreeSet<String>, Vec<(String, String)>> {
    let Some(schema) = &flavor.settings else {
        return Ok(BTreeSet::new());
    };
    let mut errs = Vec::new();
    if let Err(e) = jsonschema::draft202012::meta::validate(schema) {
        let at = e.instance_path().as_str().to_string();
        let ptr = format!("/settings{at}");
        // The common slip, `type: strin`: name the types rather than the meta-schema.
        let message = match schema.pointer(&at) {
            Some(serde_json::Value::String(t)) if at.ends_with("/type") => {
                const TYPES: [&str; 7] = [
                    "string", "number", "integer", "boolean", "array", "object", "null",
                ];
                let mean = crate::diag::closest(t, &TYPES)
                    .map(|b| format!(" (did you mean `{b}`?)"))
                    .unwrap_or_default();
                format!(
                    "unknown type `{t}` in the settings schema{mean}; JSON Schema's types: {}",
                    TYPES.join(", ")
                )
            }
            _ => format!("the settings schema is not a valid JSON Schema: {e}"),
        };
        errs.push((ptr, message));
        return Err(errs);
    }
    let whole = match validator(schema) {
        Ok(v) => v,
        Err(e) => {
            errs.push((
                "/settings".to_string(),
                format!("the settings schema does not compile: {e}"),
            ));
            return Err(errs);
        }
    };
    let props = schema.get("properties").and_then(Value::as_object);
    let mut keys = BTreeSet::new();
    if let Some(props) = props {
        for (name, sub) in props {
            keys.insert(name.clone());
            if let Some(default) = sub.get("default")
                && let Ok(v) = validator(sub)
            {
                for e in v.iter_errors(default) {
                    errs.push((
                        format!("/settings/properties/{}/default", ptr_escape(name)),
                        format!("default of setting `{name}` does not satisfy its schema: {e}"),
                    ));
                }
            }
        }
    }
    let defaults = apply_defaults(schema, Map::new());
    if errs.is_empty() {
        for e in whole.iter_errors(&Value::Object(defaults)) {
            let missing = matches!(e.kind(), ValidationErrorKind::Required { .. });
            if !missing {
                errs.push((
                    "/settings".to_string(),
                    format!("the settings defaults are not valid: {e}"),
                ));
            }
        }
    }
    if errs.is_empty() { Ok(keys) } else { Err(errs) }
}

fn validator(schema: &Value) -> Result<Validator, ValidationError<'static>> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(schema)
}

/// Fill `default`s of declared properties, recursively into objects.
pub fn apply_defaults(schema: &Value, mut given: Map<String, Value>) -> Map<String, Value> {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return given;
    };
    for (name, sub) in props {
        match given.get_mut(name) {
            Some(Value::Object(inner)) if sub.get("properties").is_some() => {
                let filled = apply_defaults(sub, std::mem::take(inner));
                *inner = filled;
            }
            Some(_) => {}
            None => {
                if let Some(d) = sub.get("default") {
                    given.insert(name.clone(), d.clone());
                } else if sub.get("properties").is_some() {
                    let filled = apply_defaults(sub, Map::new());
                    if !filled.is_empty() {
                        given.insert(name.clone(), Value::Object(filled));
                    }
                }
            }
        }
    }
    given
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

/// The step's settings checked against the flavor's schema, defaults applied. `flavor`
/// must have passed the manifest checks (`validate::check_flavor`). Errors are located
/// at the declaration of the setting they are about (or at `settings:`).
pub fn resolve(
    src: &Source,
    flavor: &Flavor,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<Diagnostic>> {
    // At the key that declares the setting (`name:`), not at its schema's first line.
    let at = |ptr: &str, msg: String, hint: String| {
        let pos = src
            .doc
            .index
            .key(ptr)
            .unwrap_or_else(|| src.doc.index.nearest(ptr));
        Diagnostic::new(&src.path, Some(&src.text), pos, msg).with_hint(hint)
    };
    let Some(schema) = &flavor.settings else {
        return if given.is_empty() {
            Ok(Map::new())
        } else {
            Err(given
                .keys()
                .map(|k| {
                    at(
                        "/name",
                        format!(
                            "setting `{k}`: flavor `{}` declares no settings",
                            flavor.name
                        ),
                        FROM.to_string(),
                    )
                })
                .collect())
        };
    };
    let props = schema.get("properties").and_then(Value::as_object);
    let mut given = given.clone();
    // `--set python=3.11` parses as a number: keep the text where the schema wants a string.
    if let Some(props) = props {
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
    let filled = apply_defaults(schema, given);
    // The defaults alone already passed the flavor check (`validate::check_flavor`,
    // which every caller runs first) but for `required` settings. With nothing given
    // and nothing required, checking again would only cost compiling the schema
    // (2.3 ms, most of a launch's validation time: the meta-schema is built first).
    if nothing_given && !mentions_required(schema) {
        return Ok(filled);
    }
    let checker = validator(schema).map_err(|e| {
        vec![at(
            "/settings",
            format!("the settings schema does not compile: {e}"),
            FROM.to_string(),
        )]
    })?;
    let declared: Vec<&str> = props
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let value = Value::Object(filled);
    let errors: Vec<Diagnostic> = checker
        .iter_errors(&value)
        .flat_map(|e| describe(&e, &declared))
        .map(|(ptr, msg, hint)| at(&ptr, msg, hint))
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    match value {
        Value::Object(m) => Ok(m),
        _ => unreachable!("settings are built as an object"),
    }
}

/// `(manifest pointer, message, hint)` for one error of a step's settings.
fn describe(e: &ValidationError<'_>, declared: &[&str]) -> Vec<(String, String, String)> {
    let path: Vec<&str> = e
        .instance_path()
        .as_str()
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let declaration = |name: &str| format!("/settings/properties/{}", ptr_escape(name));
    match e.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } if path.is_empty() => unexpected
            .iter()
            .map(|u| {
                let hint = match closest(u, declared) {
                    Some(best) => format!("did you mean `{best}`? {FROM}"),
                    None if declared.is_empty() => FROM.to_string(),
                    None => format!("declared settings: {}; {FROM}", declared.join(", ")),
                };
                (
                    "/settings/properties".to_string(),
                    format!("unknown setting `{u}`"),
                    hint,
                )
            })
            .collect(),
        ValidationErrorKind::Required { property } if path.is_empty() => {
            let name = property.as_str().unwrap_or_default();
            vec![(
                declaration(name),
                format!("setting `{name}` is required"),
                FROM.to_string(),
            )]
        }
        _ if path.is_empty() => vec![("/settings".into(), e.to_string(), FROM.to_string())],
        _ => vec![(
            declaration(path[0]),
            format!("setting `{}`: {e}", path.join(".")),
            FROM.to_string(),
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_nested_objects() {
        let schema = serde_json::json!({"properties": {"a": {"default": 1}, "b": {"properties": {"c": {"default": "x"}}}}});
        let filled = apply_defaults(&schema, Map::new());
        assert_eq!(
            Value::Object(filled),
            serde_json::json!({"a": 1, "b": {"c": "x"}})
        );
    }
}
