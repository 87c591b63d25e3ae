//! The embedded JSON Schemas (`schemas/`): the flavor manifest, step info and result.
//! Checking a document against one turns each schema error into a located
//! [`Diagnostic`] that says what is wrong in the manifest's terms ("unknown key `x`
//! (did you mean `y`?)") rather than the schema's.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
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

fn step_info_schema() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(|| serde_json::from_str(STEP_INFO_SCHEMA).expect("embedded schema is JSON"))
}

fn step_info_validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| compile(step_info_schema()))
}

/// One schema finding, before it is located.
struct Found {
    pointer: String,
    /// Point at the key (`name:`) rather than at the value.
    at_key: bool,
    message: String,
    hint: Option<String>,
}

fn found(pointer: String, at_key: bool, message: String) -> Found {
    Found {
        pointer,
        at_key,
        message,
        hint: None,
    }
}

/// A JSON pointer as people write the place: `/launch/limits` → `launch.limits`.
fn dotted(ptr: &str) -> String {
    ptr.trim_start_matches('/').replace('/', ".")
}

/// Where a schema error is, as a JSON pointer, and what to say about it.
fn describe(err: &ValidationError<'_>, instance: &Value, root: &Value, out: &mut Vec<Found>) {
    let ptr = err.instance_path().as_str().to_string();
    match err.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let schema_path = err.schema_path().as_str();
            let allowed = known_keys(root, schema_path);
            let names: Vec<&str> = allowed.iter().flatten().map(String::as_str).collect();
            for key in unexpected {
                let mut f = found(
                    format!("{ptr}/{}", ptr_escape(key)),
                    true,
                    format!("unknown key `{key}`"),
                );
                if let Some(best) = closest(key, &names) {
                    f.message.push_str(&format!(" (did you mean `{best}`?)"));
                } else if let Some(parent) = ptr.rsplit_once('/').map(|(p, _)| p)
                    && keys_at(root, parent).is_some_and(|up| up.iter().any(|k| k == key))
                {
                    let home = if parent.is_empty() {
                        "at the top level".to_string()
                    } else {
                        format!("in `{}`", dotted(parent))
                    };
                    f.hint = Some(format!(
                        "`{key}` belongs one level up, {home}: indent it like `{}`",
                        dotted(&ptr).rsplit('.').next().unwrap_or_default()
                    ));
                } else if !names.is_empty() {
                    let here = if ptr.is_empty() {
                        "the top level".to_string()
                    } else {
                        format!("`{}`", dotted(&ptr))
                    };
                    f.hint = Some(format!("{here} has: {}", names.join(", ")));
                }
                out.push(f);
            }
        }
        ValidationErrorKind::OneOfNotValid { context } => {
            // The only `oneOf` in the flavor schema is a command: explain with the branch
            // the value looks like instead of "not valid under any schema".
            let value = instance.pointer(&ptr).unwrap_or(&Value::Null);
            if let Value::Array(items) = value
                && items.iter().any(|i| i.is_array() || i.is_object())
            {
                // A list of commands where one command goes (`launch.run`).
                let mut f = found(
                    ptr.clone(),
                    false,
                    format!("`{}` is one command, not a list of commands", dotted(&ptr)),
                );
                f.hint = Some(
                    "write `run: [prog, arg, …]`, `run: {argv: [prog, arg, …]}` or `run: {script: …}`; only `prepare.run` and `cleanup.run` take a list of commands"
                        .to_string(),
                );
                out.push(f);
                return;
            }
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
                        describe(e, instance, root, out);
                    }
                }
                None => out.push(found(
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
            out.push(found(ptr, true, format!("missing required key `{name}`")));
        }
        ValidationErrorKind::Constant { expected_value } => {
            let found_value = instance.pointer(&ptr).unwrap_or(&Value::Null);
            let mut f = found(
                ptr.clone(),
                false,
                format!(
                    "`{}` must be `{expected_value}`, not `{found_value}`",
                    dotted(&ptr)
                ),
            );
            if ptr == "/version" {
                f.hint = Some(format!(
                    "`version: {expected_value}` is the manifest format this runner reads"
                ));
            }
            out.push(f);
        }
        ValidationErrorKind::Type { kind } => {
            let value = instance.pointer(&ptr).unwrap_or(&Value::Null);
            let types: Vec<&str> = match kind {
                TypeKind::Single(t) => vec![t.as_str()],
                TypeKind::Multiple(set) => set.iter().map(|t| t.as_str()).collect(),
            };
            out.push(found(
                ptr.clone(),
                false,
                format!(
                    "`{}` must be {}, not {}",
                    dotted(&ptr),
                    one_of(&types),
                    a_kind(value)
                ),
            ));
        }
        ValidationErrorKind::MinItems { limit } => {
            let what = if *limit == 1 {
                "at least one item".to_string()
            } else {
                format!("at least {limit} items")
            };
            let mut f = found(
                ptr.clone(),
                false,
                format!("`{}` is empty: it needs {what}", dotted(&ptr)),
            );
            if ptr.ends_with("/run") {
                f.hint = Some(
                    "a command is a program and its arguments, e.g. `run: [\"{{ entrypoint }}\"]`"
                        .to_string(),
                );
            }
            out.push(f);
        }
        // The only names a schema here constrains are those of environment variables.
        ValidationErrorKind::PropertyNames { error }
            if let ValidationErrorKind::Pattern { pattern } = error.kind() =>
        {
            let name = error.instance().as_str().unwrap_or_default();
            let key = format!("{ptr}/{}", name.replace('~', "~0").replace('/', "~1"));
            let mut f = found(
                key,
                true,
                format!(
                    "{} in `{}` is not an environment variable name",
                    Value::String(name.to_string()),
                    dotted(&ptr)
                ),
            );
            f.hint = Some(format!(
                "names are letters, digits and `_`, not starting with a digit (`{pattern}`)"
            ));
            out.push(f);
        }
        ValidationErrorKind::Pattern { pattern } if ptr == "/name" => {
            let value = instance.pointer(&ptr).unwrap_or(&Value::Null);
            let mut f = found(
                ptr.clone(),
                false,
                format!("flavor name {value} is not a valid name"),
            );
            f.hint = Some(format!(
                "a name is lowercase letters, digits, `.`, `_` and `-`, at most 63, starting \
                 with a letter or digit (`{pattern}`); it names the cache entries and `launch NAME`"
            ));
            out.push(f);
        }
        _ => out.push(found(ptr, false, err.to_string())),
    }
}

/// `a string`, `a string or null`, `a boolean, a number or a string`.
fn one_of(types: &[&str]) -> String {
    // `null` last: "a string or null".
    let mut types = types.to_vec();
    types.sort_by_key(|t| *t == "null");
    let named: Vec<String> = types
        .iter()
        .map(|t| match *t {
            "null" => "null".to_string(),
            "integer" => "an integer".to_string(),
            "array" => "a list".to_string(),
            "object" => "a mapping".to_string(),
            t => format!("a {t}"),
        })
        .collect();
    match named.as_slice() {
        [] => "something else".to_string(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// What a value is, in the manifest's words: `a list`, `a mapping`, `the number 42`.
fn a_kind(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", Value::String(s.clone())),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a mapping".to_string(),
    }
}

/// Property names allowed at a schema location, for "did you mean" hints.
fn known_keys(root: &Value, schema_path: &str) -> Option<Vec<String>> {
    let parent = schema_path.strip_suffix("/additionalProperties")?;
    let obj = resolve_schema_path(root, parent)?;
    Some(
        obj.get("properties")?
            .as_object()?
            .keys()
            .cloned()
            .collect(),
    )
}

/// Property names the schema allows for the object at an instance pointer, following
/// `properties`, `items` and `$ref`s from the root: where a key belongs.
fn keys_at(root: &Value, ptr: &str) -> Option<Vec<String>> {
    fn deref<'a>(root: &'a Value, mut v: &'a Value) -> Option<&'a Value> {
        // A `$ref` chain is short in our schemas; bounded all the same.
        for _ in 0..8 {
            match v
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix('#'))
            {
                Some(target) => v = root.pointer(target)?,
                None => break,
            }
        }
        Some(v)
    }
    let mut cur = deref(root, root)?;
    for seg in ptr.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        let next = cur
            .get("properties")
            .and_then(|p| p.get(&seg))
            .or_else(|| cur.get("items"))?;
        cur = deref(root, next)?;
    }
    Some(
        cur.get("properties")?
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

fn diagnostics(src: &Source, validator: &Validator, root: &Value) -> Vec<Diagnostic> {
    let mut all = Vec::new();
    for err in validator.iter_errors(&src.doc.value) {
        describe(&err, &src.doc.value, root, &mut all);
    }
    all.into_iter()
        .map(|f| {
            let pos = if f.at_key {
                src.doc.index.key(&f.pointer)
            } else {
                None
            }
            .unwrap_or_else(|| src.doc.index.nearest(&f.pointer));
            let d = Diagnostic::new(&src.path, Some(&src.text), pos, f.message);
            match f.hint {
                Some(h) => d.with_hint(h),
                None => d,
            }
        })
        .collect()
}

/// Schema errors of a step-info document.
pub fn check_step_info(src: &Source) -> Vec<Diagnostic> {
    diagnostics(src, step_info_validator(), step_info_schema())
}

/// Schema errors of a flavor manifest.
pub fn check_flavor(src: &Source) -> Vec<Diagnostic> {
    diagnostics(src, flavor_validator(), flavor_schema())
}
