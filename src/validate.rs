//! Validation of manifests and step info: the embedded JSON Schemas first, then
//! meaning — the flavor's settings schema is itself a valid schema whose defaults
//! satisfy it, every template compiles, and every variable a template uses exists
//! in the render context. Every finding becomes a located [`Diagnostic`].

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use serde_json::{Map, Value};

use crate::diag::Diagnostic;
use crate::manifest::{Flavor, Source, TemplateKind, TemplateRef, ptr_escape};
use crate::render;
use crate::yaml::{Pos, ScalarStyle};

mod script;

pub const FLAVOR_SCHEMA: &str = include_str!("../schemas/flavor.schema.json");
pub const STEP_INFO_SCHEMA: &str = include_str!("../schemas/step-info.schema.json");

fn compile(schema: &Value) -> Validator {
    jsonschema::draft202012::new(schema).expect("embedded schema compiles")
}

/// The embedded flavor schema, parsed once (validation and "did you mean" hints both read it).
fn flavor_schema() -> &'static Value {
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

fn schema_diagnostics(src: &Source, validator: &Validator) -> Vec<Diagnostic> {
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

pub fn check_step_info(src: &Source) -> Vec<Diagnostic> {
    schema_diagnostics(src, step_info_validator())
}

/// Everything `runner validate` checks about one manifest. On success, the typed flavor.
pub fn check_flavor(src: &Source) -> Result<Flavor, Vec<Diagnostic>> {
    let diags = schema_diagnostics(src, flavor_validator());
    if !diags.is_empty() {
        return Err(diags);
    }
    let flavor: Flavor = serde_json::from_value(src.doc.value.clone()).map_err(|e| {
        vec![Diagnostic::new(
            &src.path,
            Some(&src.text),
            src.doc.index.nearest(""),
            e.to_string(),
        )]
    })?;
    let mut diags = Vec::new();
    let at = |ptr: &str| src.doc.index.nearest(ptr);
    let settings_keys = match check_settings_schema(&flavor) {
        Ok(keys) => keys,
        Err(errs) => {
            for (ptr, msg) in errs {
                diags.push(Diagnostic::new(&src.path, Some(&src.text), at(&ptr), msg));
            }
            // Still check `settings.x` against the names declared, if they can be read:
            // an invalid schema should not also make every use of a setting an error.
            match flavor.settings.as_ref().and_then(|s| s.get("properties")) {
                Some(Value::Object(props)) => props.keys().cloned().collect(),
                Some(_) => BTreeSet::from(["*".to_string()]),
                None => BTreeSet::new(),
            }
        }
    };
    let has_prepare = flavor.prepare.is_some();
    // One environment for every template: building it (all filters) per template
    // string was 15% of `runner validate`.
    let env = render::environment();
    for t in flavor.templates() {
        check_template(&env, src, &t, &settings_keys, has_prepare, &mut diags);
    }
    if diags.is_empty() {
        Ok(flavor)
    } else {
        Err(diags)
    }
}

/// The settings schema compiles as draft 2020-12 and its defaults satisfy it.
/// Returns the declared setting names.
fn check_settings_schema(flavor: &Flavor) -> Result<BTreeSet<String>, Vec<(String, String)>> {
    let Some(schema) = &flavor.settings else {
        return Ok(BTreeSet::new());
    };
    let mut errs = Vec::new();
    if let Err(e) = jsonschema::draft202012::meta::validate(schema) {
        let ptr = format!("/settings{}", e.instance_path().as_str());
        errs.push((
            ptr,
            format!("the settings schema is not a valid JSON Schema: {e}"),
        ));
        return Err(errs);
    }
    let validator = match settings_validator(schema) {
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
                && let Ok(v) = settings_validator(sub)
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
        for e in validator.iter_errors(&Value::Object(defaults)) {
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

pub fn settings_validator(schema: &Value) -> Result<Validator, ValidationError<'static>> {
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

/// Attributes of the render context's objects, for the unknown-variable check.
pub const CONTEXT: &[(&str, Option<&[&str]>)] = &[
    (
        "step",
        Some(&[
            "name",
            "pipeline",
            "run_name",
            "run_id",
            "step_run_id",
            "parameters",
        ]),
    ),
    (
        "requirements",
        Some(&["pip", "apt", "parent_image", "environment"]),
    ),
    ("resources", Some(&["cpu_count", "gpu_count", "memory"])),
    ("settings", None),
    ("entrypoint", None),
    ("run_id", None),
    ("environment", None),
    ("env", None),
    ("dirs", Some(&["run", "prepare", "work", "source"])),
];

/// minijinja's own global functions are not context variables.
const GLOBALS: &[&str] = &[
    "range",
    "dict",
    "namespace",
    "debug",
    "loop",
    "self",
    "super",
    "varargs",
    "kwargs",
    "caller",
];

fn check_template(
    env: &minijinja::Environment<'static>,
    src: &Source,
    t: &TemplateRef,
    settings: &BTreeSet<String>,
    has_prepare: bool,
    diags: &mut Vec<Diagnostic>,
) {
    let name = if t.kind == TemplateKind::Script {
        "check.sh"
    } else {
        "check"
    };
    let tmpl = match env.template_from_named_str(name, &t.text) {
        Ok(tmpl) => tmpl,
        Err(e) => {
            let offset = e
                .range()
                .map(|r| r.start)
                .unwrap_or_else(|| line_offset(&t.text, e.line().unwrap_or(1)));
            let pos = template_pos(src, &t.pointer, &t.text, offset);
            let msg = format!("invalid template: {}", e.detail().unwrap_or("syntax error"));
            diags.push(Diagnostic::new(&src.path, Some(&src.text), pos, msg));
            return;
        }
    };
    if t.kind == TemplateKind::Script {
        for (offset, context) in script::unsafe_interpolations(&t.text) {
            let pos = template_pos(src, &t.pointer, &t.text, offset);
            let msg = format!(
                "interpolation {} in a script: its value would be quoted twice and could run as shell code",
                context.describe()
            );
            diags.push(
                Diagnostic::new(&src.path, Some(&src.text), pos, msg).with_hint(
                    "script interpolations are shell-quoted already: write `{{ x }}` as a bare word, or `{{ x | safe }}` for trusted shell text",
                ),
            );
        }
    }
    let mut vars: Vec<String> = tmpl.undeclared_variables(true).into_iter().collect();
    vars.sort();
    for var in vars {
        let mut parts = var.split('.');
        let root = parts.next().unwrap_or_default();
        let attr = parts.next();
        if GLOBALS.contains(&root) {
            continue;
        }
        let problem = match CONTEXT.iter().find(|(n, _)| *n == root) {
            None => {
                let roots: Vec<&str> = CONTEXT.iter().map(|(n, _)| *n).collect();
                let hint = closest(root, &roots).map(|b| format!("did you mean `{b}`?"));
                Some((format!("unknown variable `{root}`"), hint.or_else(|| Some(format!("the context has: {}", roots.join(", "))))))
            }
            Some(("dirs", _)) if t.kind == TemplateKind::Key && attr == Some("prepare") => Some((
                "the prepare key cannot use `dirs.prepare`: the cache folder is named after the key".to_string(),
                None,
            )),
            Some(("dirs", _)) if !has_prepare && attr == Some("prepare") => Some((
                "`dirs.prepare` is only defined when the flavor has a `prepare` stage".to_string(),
                None,
            )),
            Some(("settings", _)) => match attr {
                // `*`: the settings schema is unreadable, its names unknown.
                Some(a) if !settings.contains(a) && !settings.contains("*") => {
                    let declared: Vec<&str> = settings.iter().map(String::as_str).collect();
                    let hint = closest(a, &declared)
                        .map(|b| format!("did you mean `settings.{b}`?"))
                        .unwrap_or_else(|| {
                            if declared.is_empty() {
                                "declare it under `settings.properties`".to_string()
                            } else {
                                format!("declared settings: {}", declared.join(", "))
                            }
                        });
                    Some((format!("unknown setting `{a}`"), Some(hint)))
                }
                _ => None,
            },
            Some((_, Some(attrs))) => match attr {
                Some(a) if !attrs.contains(&a) => {
                    let hint = closest(a, attrs)
                        .map(|b| format!("did you mean `{root}.{b}`?"))
                        .unwrap_or_else(|| format!("`{root}` has: {}", attrs.join(", ")));
                    Some((format!("unknown variable `{root}.{a}`"), Some(hint)))
                }
                _ => None,
            },
            Some(_) => None,
        };
        if let Some((msg, hint)) = problem {
            let needle = match attr {
                Some(a) => format!("{root}.{a}"),
                None => root.to_string(),
            };
            let offset = find_word(&t.text, &needle)
                .or_else(|| find_word(&t.text, root))
                .unwrap_or(0);
            let pos = template_pos(src, &t.pointer, &t.text, offset);
            let mut d = Diagnostic::new(&src.path, Some(&src.text), pos, msg);
            if let Some(h) = hint {
                d = d.with_hint(h);
            }
            diags.push(d);
        }
    }
}

/// Byte offset of the start of line `line` (1-based) of a template.
fn line_offset(text: &str, line: usize) -> usize {
    text.split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum()
}

/// First occurrence of `word` in `text` not inside a longer identifier.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(i) = text[from..].find(word) {
        let at = from + i;
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        if !before.is_some_and(|c| ident(c) || c == '.') && !after.is_some_and(ident) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// Position in the file of byte `offset` inside the template string at `pointer`.
pub fn template_pos(src: &Source, pointer: &str, text: &str, offset: usize) -> Pos {
    let Some((start, style)) = src.doc.index.scalar(pointer) else {
        return src.doc.index.nearest(pointer);
    };
    let before = &text[..offset.min(text.len())];
    let lines = before.matches('\n').count();
    let last_line = before.rsplit('\n').next().unwrap_or("");
    let col_chars = last_line.chars().count();
    // `start` is the first character of the content (after the opening quote, if any).
    match style {
        ScalarStyle::Literal | ScalarStyle::Folded => Pos {
            line: start.line + lines,
            col: start.col + col_chars,
        },
        ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted if lines == 0 => {
            let line = crate::diag::source_lines(&src.text)
                .nth(start.line.saturating_sub(1))
                .unwrap_or("");
            let content: String = line.chars().skip(start.col.saturating_sub(1)).collect();
            Pos {
                line: start.line,
                col: start.col + source_chars(&content, style, col_chars),
            }
        }
        ScalarStyle::Plain if lines == 0 => Pos {
            line: start.line,
            col: start.col + col_chars,
        },
        _ => start,
    }
}

/// How many source characters of a quoted scalar's content hold its first `decoded`
/// characters: `''` in single quotes and `\` escapes in double quotes are longer than
/// the character they stand for.
fn source_chars(content: &str, style: ScalarStyle, decoded: usize) -> usize {
    let mut chars = content.chars().peekable();
    let mut used = 0;
    for _ in 0..decoded {
        let width = match (style, chars.next()) {
            (ScalarStyle::SingleQuoted, Some('\'')) if chars.peek() == Some(&'\'') => 2,
            (ScalarStyle::DoubleQuoted, Some('\\')) => match chars.peek() {
                Some('x') => 4,
                Some('u') => 6,
                Some('U') => 10,
                _ => 2,
            },
            (_, Some(_)) => 1,
            (_, None) => break,
        };
        for _ in 1..width {
            chars.next();
        }
        used += width;
    }
    used
}

/// The closest candidate within a small edit distance, for "did you mean".
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Read and check one manifest file, returning every diagnostic.
pub fn check_file(path: &Path) -> Result<(Source, Flavor), Vec<Diagnostic>> {
    let src = Source::read(path).map_err(|e| vec![load_diagnostic(path, &e)])?;
    let flavor = check_flavor(&src)?;
    Ok((src, flavor))
}

/// As [`check_file`], but a file whose exact text already passed every check with this
/// very binary skips them (it is still parsed, and its settings are still checked when
/// rendered). `stamps` holds one empty file per such text, named by the BLAKE3 hash of
/// the runner's identity (version, and the executable's device, inode, size and mtime,
/// so a rebuilt runner checks again) and the text. Compiling the flavor schema and
/// every template was 2.8 ms of a 14 ms launch. `runner validate` always checks.
///
/// A file checked in full comes back with a [`Stamp`] to [`Stamp::write`] once the
/// caller has used it (a run that could not even get its folder leaves nothing).
pub fn check_file_remembered(
    path: &Path,
    stamps: &Path,
) -> Result<(Source, Flavor, Option<Stamp>), Vec<Diagnostic>> {
    let src = Source::read(path).map_err(|e| vec![load_diagnostic(path, &e)])?;
    let stamp = stamp_name(&src.text).map(|name| stamps.join(name));
    if let Some(stamp) = &stamp
        && stamp.exists()
        && let Ok(flavor) = serde_json::from_value::<Flavor>(src.doc.value.clone())
    {
        return Ok((src, flavor, None));
    }
    let flavor = check_flavor(&src)?;
    Ok((src, flavor, stamp.map(Stamp)))
}

/// Where [`check_file_remembered`] keeps its stamps under a runner home.
pub fn stamps_dir(home: &Path) -> std::path::PathBuf {
    home.join("validated")
}

/// Proof that a manifest text passed [`check_flavor`], not yet recorded.
#[derive(Debug)]
pub struct Stamp(std::path::PathBuf);

impl Stamp {
    /// Record it. Best effort: a home that cannot be written only costs the next
    /// launch the checks.
    pub fn write(self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::create_dir_all(dir).and_then(|()| std::fs::File::create(&self.0));
        }
    }
}

/// Remove the stamps of [`check_file_remembered`] made more than `older_than` ago (their
/// texts are then checked in full once more); returns how many (would be) removed.
pub fn prune_stamps(stamps: &Path, older_than: std::time::Duration, dry_run: bool) -> usize {
    let Ok(entries) = std::fs::read_dir(stamps) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    entries
        .flatten()
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= older_than)
        })
        .filter(|e| dry_run || std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// The stamp of a manifest text that passed [`check_flavor`]; `None` (never remembered)
/// if the running executable cannot be identified.
fn stamp_name(text: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let exe = std::fs::metadata("/proc/self/exe").ok()?;
    let mut h = blake3::Hasher::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    for n in [
        exe.dev(),
        exe.ino(),
        exe.size(),
        exe.mtime() as u64,
        exe.mtime_nsec() as u64,
    ] {
        h.update(&n.to_le_bytes());
    }
    h.update(text.as_bytes());
    Some(h.finalize().to_hex().to_string())
}

pub fn load_diagnostic(path: &Path, e: &crate::manifest::LoadError) -> Diagnostic {
    use crate::manifest::LoadError;
    match e {
        LoadError::Yaml { text, source, .. } => Diagnostic::new(
            path,
            Some(text),
            source.pos,
            format!("invalid YAML: {}", source.message),
        ),
        other => Diagnostic::new(
            path,
            None,
            Pos { line: 1, col: 1 },
            crate::diag::error_chain(other),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every property of the embedded schemas is documented, so editors show help.
    #[test]
    fn every_schema_property_has_a_description() {
        fn walk(root: &Value, node: &Value, at: &str, missing: &mut Vec<String>) {
            match node {
                Value::Object(m) => {
                    if let Some(Value::Object(props)) = m.get("properties") {
                        for (name, sub) in props {
                            let target = sub
                                .get("$ref")
                                .and_then(Value::as_str)
                                .and_then(|r| root.pointer(r.trim_start_matches('#')));
                            let documented = sub.get("description").is_some()
                                || target.is_some_and(|t| t.get("description").is_some());
                            if !documented {
                                missing.push(format!("{at}/properties/{name}"));
                            }
                        }
                    }
                    for (k, v) in m {
                        walk(root, v, &format!("{at}/{k}"), missing);
                    }
                }
                Value::Array(a) => {
                    for (i, v) in a.iter().enumerate() {
                        walk(root, v, &format!("{at}/{i}"), missing);
                    }
                }
                _ => {}
            }
        }
        for text in [FLAVOR_SCHEMA, STEP_INFO_SCHEMA] {
            let schema: Value = serde_json::from_str(text).unwrap();
            let mut missing = Vec::new();
            walk(&schema, &schema, "", &mut missing);
            assert!(missing.is_empty(), "undocumented: {missing:?}");
            assert!(jsonschema::draft202012::meta::is_valid(&schema));
        }
    }

    #[test]
    fn hints_pick_near_names() {
        assert_eq!(closest("nmae", &["name", "pipeline"]), Some("name"));
        assert_eq!(closest("zzzzzz", &["name", "pipeline"]), None);
    }

    #[test]
    fn words_match_whole_identifiers() {
        assert_eq!(
            find_word("{{ xstep.name }} {{ step.name }}", "step.name"),
            Some(20)
        );
        assert_eq!(find_word("{{ step.names }}", "step.name"), None);
    }

    #[test]
    fn template_positions_in_quoted_scalars() {
        let text = "a: \"{{ x }}\"\nb: 'it''s {{ y }}'\nc: \"\\t{{ z }}\"\n";
        let src = Source::parse(Path::new("m.yaml"), text.to_string()).unwrap();
        let at = |ptr: &str, word: &str| {
            let Value::String(t) = src.doc.value.pointer(ptr).unwrap() else {
                panic!()
            };
            let pos = template_pos(&src, ptr, t, t.find(word).unwrap());
            (pos.line, pos.col)
        };
        assert_eq!(at("/a", "x"), (1, 8));
        assert_eq!(at("/b", "y"), (2, 14));
        assert_eq!(at("/c", "z"), (3, 10));
    }

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
