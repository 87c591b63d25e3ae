//! The embedded JSON Schemas (`schemas/`): the flavor manifest, step info and result.
//! Checking a document against one turns each schema error into a located
//! [`Diagnostic`] that says what is wrong in the manifest's terms ("unknown key `x`
//! (did you mean `y`?)") rather than the schema's.

use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use crate::diag::{Diagnostic, closest};
use crate::manifest::{Source, ptr_escape};

pub const FLAVOR_SCHEMA: &str = include_str!("../schemas/flavor.schema.json");
pub const STEP_INFO_SCHEMA: &str = include_str!("../schemas/step-info.schema.json");
/// The committed JSON Schema of the result (`report::Outcome`).
pub const RESULT_SCHEMA: &str = include_str!("../schemas/result.schema.json");

fn compile(schema: &Value) -> Validator {
    jsonschema::draft202012::new(schema).expect("embedded schema compiles")
}

/// The embedded flavor schema, parsed once (validation and "did you mean" hints both read it).
pub(crate) fn flavor_schema() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(|| serde_json::from_str(FLAVOR_SCHEMA).expect("embedded schema is JSON"))
}

fn flavor_validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| compile(flavor_schema()))
}

fn step_info_validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| {
        compile(&serde_json::from_str(STEP_INFO_SCHEMA).expect("embedded schema is JSON"))
    })
}

/// Where a schema error is, as a JSON pointer, and what to say about it.
fn describe(err: &ValidationError<'_>, instance: &Value, out: &mut Vec<(String, bool, String)>) {
    let ptr = err.instance_path().as_str().to_string();
    match err.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            for key in unexpected {
                let allowed = known_keys(err.schema_path().as_str());
                let mut msg = format!("unknown key `{key}`");
                let names: Vec<&str> = allowed.iter().flatten().map(String::as_str).collect();
                if let Some(best) = closest(key, &names) {
                    msg.push_str(&format!(" (did you mean `{best}`?)"));
                }
                out.push((format!("{ptr}/{}", ptr_escape(key)), true, msg));
            }
        }
        ValidationErrorKind::OneOfNotValid { context } => {
            // The only `oneOf` in the flavor schema is a command: explain with the branch
            // the value looks like instead of "not valid under any schema".
            let value = instance.pointer(&ptr).unwrap_or(&Value::Null);
            let branch = match value {
                Value::Array(_) => Some(0),
                Value::Object(m) if m.contains_key("script") => Some(2),
                Value::Object(m) if m.contains_key("argv") => Some(1),
                _ => None,
            };
            match branch
                .and_then(|b| context.get(b))
                .filter(|errs| !errs.is_empty())
            {
                Some(errs) => {
                    for e in errs {
                        describe(e, instance, out);
                    }
                }
                None => out.push((
                    ptr,
                    false,
                    "expected a command: a list of arguments, `{argv: [...]}` or `{script: ...}`"
                        .to_string(),
                )),
            }
        }
        ValidationErrorKind::Required { property } => {
            // Point at the key that holds the incomplete mapping (`launch:`), not at
            // whatever key happens to come first inside it.
            let name = property.as_str().unwrap_or_default();
            out.push((ptr, true, format!("missing required key `{name}`")));
        }
        ValidationErrorKind::Constant { expected_value } => {
            let found = instance.pointer(&ptr).unwrap_or(&Value::Null);
            out.push((
                ptr,
                false,
                format!("expected `{expected_value}`, found `{found}`"),
            ));
        }
        _ => out.push((ptr, false, err.to_string())),
    }
}

/// Property names allowed at a schema location, for "did you mean" hints.
fn known_keys(schema_path: &str) -> Option<Vec<String>> {
    let parent = schema_path.strip_suffix("/additionalProperties")?;
    let obj = resolve_schema_path(flavor_schema(), parent)?;
    Some(
        obj.get("properties")?
            .as_object()?
            .keys()
            .cloned()
            .collect(),
    )
}

/// Follow a schema path through `$ref`s (the error's path names the keywords, not the target).
fn resolve_schema_path<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = root;
    for seg in path.split('/').skip(1) {
        if seg == "$ref" {
            let target = cur.get("$ref")?.as_str()?.strip_prefix('#')?;
            cur = root.pointer(target)?;
            continue;
        }
        let seg = seg.replace("~1", "/").replace("~0", "~");
        cur = match cur {
            Value::Object(m) => m.get(&seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn diagnostics(src: &Source, validator: &Validator) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    for err in validator.iter_errors(&src.doc.value) {
        describe(&err, &src.doc.value, &mut found);
    }
    found
        .into_iter()
        .map(|(ptr, is_key, msg)| {
            let pos = if is_key {
                src.doc.index.key(&ptr)
            } else {
                None
            }
            .unwrap_or_else(|| src.doc.index.nearest(&ptr));
            Diagnostic::new(&src.path, Some(&src.text), pos, msg)
        })
        .collect()
}

/// Schema errors of a step-info document.
pub fn check_step_info(src: &Source) -> Vec<Diagnostic> {
    diagnostics(src, step_info_validator())
}

/// Schema errors of a flavor manifest.
pub fn check_flavor(src: &Source) -> Vec<Diagnostic> {
    diagnostics(src, flavor_validator())
}
