//! Validation of manifests: the embedded flavor schema first ([`crate::schemas`]),
//! then meaning — the flavor's settings schema is itself a valid schema whose defaults
//! satisfy it ([`crate::settings`]), every template compiles, and every variable a
//! template uses exists in the render context ([`crate::template`]). Every finding
//! becomes a located [`Diagnostic`].

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::diag::{Diagnostic, closest};
use crate::manifest::{Flavor, Source, TemplateKind, TemplateRef};
use crate::template::{self, CONTEXT, GLOBALS, find_word, line_offset, template_pos};
use crate::{schemas, settings};

/// A trial render with a made-up step (required settings given a value of their
/// type): a template that runs away (an endless loop, a value doubling in a loop) is
/// an error of the manifest whatever the step, found here rather than at launch.
/// Only such errors are reported; the rest depend on the step. For each manifest, in
/// order; many manifests share a bounded child ([`crate::render::check_bounded`]).
pub fn trial_renders(manifests: &[(&Source, &Flavor)]) -> Vec<Vec<Diagnostic>> {
    let home = crate::home::Home::new("/nonexistent/steprunner-trial");
    let at = crate::render::Where {
        home: &home,
        run_dir: None,
        run_id: "20260101T000000-trial-00000000".into(),
        cwd: std::path::PathBuf::from("/"),
        env: std::collections::BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
    };
    let infos: Vec<_> = manifests.iter().map(|(_, f)| trial_step(f)).collect();
    let jobs: Vec<crate::render::Job<'_>> = manifests
        .iter()
        .zip(&infos)
        .filter_map(|((src, flavor), info)| Some((*src, *flavor, info.as_ref()?, &at)))
        .collect();
    let mut outcomes = crate::render::check_bounded(&jobs).into_iter();
    infos
        .iter()
        .map(|info| match info.as_ref().map(|_| outcomes.next()) {
            // A trial that could not be bounded is said, not taken for a pass.
            Some(Some(Err(e))) => {
                e.0.into_iter()
                    .filter(|d| crate::render::over_budget(d) || crate::render::unbounded(d))
                    .collect()
            }
            _ => Vec::new(),
        })
        .collect()
}

/// The made-up step of a trial render: required settings without a default get a
/// value of their type.
fn trial_step(flavor: &Flavor) -> Option<crate::step_info::StepInfo> {
    use crate::step_info::{Overrides, StepInfo};
    let mut set = Vec::new();
    if let Some(Value::Object(props)) = flavor.settings.as_ref().and_then(|s| s.get("properties")) {
        let required: Vec<&str> = flavor
            .settings
            .as_ref()
            .and_then(|s| s.get("required"))
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (name, schema) in props {
            if schema.get("default").is_some() || !required.contains(&name.as_str()) {
                continue;
            }
            let sample = match schema.get("enum").and_then(Value::as_array) {
                Some(options) if !options.is_empty() => options[0].clone(),
                _ => match schema.get("type").and_then(Value::as_str) {
                    Some("integer" | "number") => Value::from(1),
                    Some("boolean") => Value::Bool(false),
                    Some("array") => Value::Array(Vec::new()),
                    Some("object") => Value::Object(Default::default()),
                    _ => Value::from("x"),
                },
            };
            set.push(format!("{name}={sample}"));
        }
    }
    StepInfo::resolve(
        None,
        &Overrides {
            step: Some("trial".into()),
            requirements: vec!["requests".into()],
            cpus: Some(1.0),
            memory: Some(1 << 30),
            entrypoint: vec!["true".into()],
            set,
            ..Default::default()
        },
    )
    .ok()
}

/// What review needs beyond what a launch needs: every step-info field is used by a
/// template or declared ignored, and never both. (A launch takes an undeclared unused
/// field as ignored, and tells a step that sets it.)
pub fn check_review(src: &Source, flavor: &Flavor) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    check_ignores(src, flavor, &mut diags);
    diags
}

fn check_ignores(src: &Source, flavor: &Flavor, diags: &mut Vec<Diagnostic>) {
    let templates = flavor.templates();
    let uses = crate::ignores::Uses::new(&templates);
    let mut undeclared = Vec::new();
    for field in crate::ignores::FIELDS {
        let used = uses.first_use(field);
        let ignored = flavor.ignores.contains_key(*field);
        let d = match (used, ignored) {
            (None, false) => {
                undeclared.push(format!("`{field}`"));
                continue;
            }
            (Some((t, offset)), true) => {
                let pos = template_pos(src, &t.pointer, &t.text, offset);
                Diagnostic::new(
                    &src.path,
                    Some(&src.text),
                    pos,
                    format!("`{field}` is declared ignored, but this template uses it"),
                )
                .with_hint(format!(
                    "remove `{field}` from `ignores:`, or stop using it"
                ))
            }
            _ => continue,
        };
        diags.push(d);
    }
    if let Some(first) = undeclared.first() {
        let what = match undeclared.len() {
            1 => format!("the step-info field {first}"),
            n => format!("{n} step-info fields"),
        };
        diags.insert(
            0,
            Diagnostic::new(
                &src.path,
                Some(&src.text),
                src.doc.index.nearest("/launch"),
                format!(
                    "the flavor neither uses nor ignores {what}: what a step sets there would \
                     be dropped without a word ({})",
                    undeclared.join(", ")
                ),
            )
            .with_hint(format!(
                "use each in a template, or declare why not: `ignores: {{{}: REASON}}`",
                undeclared[0].trim_matches('`')
            )),
        );
    }
}

/// The names of the characters a manifest most likely hides something with.
fn char_name(c: char) -> &'static str {
    match c {
        '\u{202a}' => "LEFT-TO-RIGHT EMBEDDING",
        '\u{202b}' => "RIGHT-TO-LEFT EMBEDDING",
        '\u{202c}' => "POP DIRECTIONAL FORMATTING",
        '\u{202d}' => "LEFT-TO-RIGHT OVERRIDE",
        '\u{202e}' => "RIGHT-TO-LEFT OVERRIDE",
        '\u{2066}' => "LEFT-TO-RIGHT ISOLATE",
        '\u{2067}' => "RIGHT-TO-LEFT ISOLATE",
        '\u{2068}' => "FIRST STRONG ISOLATE",
        '\u{2069}' => "POP DIRECTIONAL ISOLATE",
        '\u{200e}' => "LEFT-TO-RIGHT MARK",
        '\u{200f}' => "RIGHT-TO-LEFT MARK",
        '\u{061c}' => "ARABIC LETTER MARK",
        '\u{200b}' => "ZERO WIDTH SPACE",
        '\u{200c}' => "ZERO WIDTH NON-JOINER",
        '\u{200d}' => "ZERO WIDTH JOINER",
        '\u{2060}' => "WORD JOINER",
        '\u{feff}' => "ZERO WIDTH NO-BREAK SPACE",
        '\u{2028}' => "LINE SEPARATOR",
        '\u{2029}' => "PARAGRAPH SEPARATOR",
        '\r' => "CARRIAGE RETURN (not before a line feed)",
        _ => "a control or invisible character",
    }
}

/// What review sees is what runs: a character that is not shown as itself (a
/// bidirectional override that reorders a line, a zero-width character, a control
/// character, a carriage return that sends the cursor back over a line) makes what a
/// reviewer reads differ from what runs — the "Trojan Source" attack. Refused
/// wherever it is, comments included: a value that needs one writes it as an escape,
/// which shows. Tabs, line ends and a byte-order mark that opens the file are not
/// hidden. The first on each line, at most 10. For every reviewed file: manifests,
/// flavor test cases, policies.
pub fn hidden_characters(src: &Source) -> Vec<Diagnostic> {
    hidden_characters_in(&src.path, &src.text)
}

/// [`hidden_characters`] of the text of `path`.
pub fn hidden_characters_in(path: &Path, text: &str) -> Vec<Diagnostic> {
    if text.chars().all(crate::util::is_shown_in_lines) {
        return Vec::new();
    }
    let mut diags = Vec::new();
    let (mut line, mut col) = (1, 1);
    let mut flagged_line = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let crlf = c == '\r' && chars.peek().is_some_and(|(_, n)| *n == '\n');
        let opening_bom = c == '\u{feff}' && at == 0;
        let hidden = !(crate::util::is_shown_in_lines(c) || crlf || opening_bom);
        if hidden && flagged_line != line {
            flagged_line = line;
            diags.push(
                Diagnostic::new(
                    path,
                    Some(text),
                    crate::yaml::Pos { line, col },
                    format!(
                        "hidden character U+{:04X} ({}): review would not see what runs",
                        c as u32,
                        char_name(c)
                    ),
                )
                .with_hint(format!(
                    "remove it; a value that needs it escapes it in double quotes: `\"\\u{:04x}\"`",
                    c as u32
                )),
            );
            if diags.len() == 10 {
                break;
            }
        }
        // A carriage return alone ends a line, for YAML and for the source lines shown.
        if c == '\n' || (c == '\r' && chars.peek().is_none_or(|(_, n)| *n != '\n')) {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    diags
}

/// Everything `runner validate` checks about one manifest. On success, the typed flavor.
pub fn check_flavor(src: &Source) -> Result<Flavor, Vec<Diagnostic>> {
    let mut diags = hidden_characters(src);
    diags.extend(schemas::check_flavor(src));
    if !diags.is_empty() {
        return Err(diags);
    }
    let flavor = Flavor::from_value(&src.doc.value).map_err(|e| {
        vec![Diagnostic::new(
            &src.path,
            Some(&src.text),
            src.doc.index.nearest(""),
            e.to_string(),
        )]
    })?;
    let mut diags = Vec::new();
    let at = |ptr: &str| src.doc.index.nearest(ptr);
    let settings_keys = match settings::check_schema(&flavor) {
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
    let env = template::environment();
    for t in flavor.templates() {
        check_template(&env, src, &t, &settings_keys, has_prepare, &mut diags);
    }
    for c in flavor.commands() {
        check_command(src, c, &mut diags);
    }
    if let Some(when) = &flavor.launch.run.when {
        diags.push(
            Diagnostic::new(
                &src.path,
                Some(&src.text),
                src.doc.index.nearest(&when.at),
                "`when:` on the launch command: the step's command always runs",
            )
            .with_hint("`when:` chooses among prepare and cleanup commands; a launch that depends on a setting is written in the command (a script's `if`)"),
        );
    }
    if diags.is_empty() {
        Ok(flavor)
    } else {
        Err(diags)
    }
}

/// Where a command's interpolations may go, for the shell it runs in (see
/// `template::script`): every refusal located at its `{{`.
fn check_command(src: &Source, c: &crate::manifest::Command, diags: &mut Vec<Diagnostic>) {
    use crate::manifest::Form;
    use template::script;
    let mut push = |pointer: &str, text: &str, offset: usize, msg: String, hint: &str| {
        let pos = template_pos(src, pointer, text, offset);
        diags.push(Diagnostic::new(&src.path, Some(&src.text), pos, msg).with_hint(hint));
    };
    match &c.form {
        Form::Script { script: tpl, shell } => {
            let Some(text) = tpl.text() else { return };
            let shell = shell.as_deref().unwrap_or("sh");
            if let Some(at) = text.find([script::HOLE, '\u{E001}']) {
                push(
                    &tpl.at,
                    text,
                    at,
                    "a script may not hold the private-use characters U+E000 and U+E001 (the runner marks interpolations with them)".into(),
                    "remove the character",
                );
                return;
            }
            let mut from = 0;
            while let Some(open) = text[from..].find("{%") {
                let open = from + open;
                // An unclosed tag is the template's own error, reported where it compiles.
                let Some(end) = crate::template::tag_close(&text[open..], "%}") else {
                    break;
                };
                let end = open + end + 2;
                let tag = &text[open..end];
                if script::tag_refused(tag) {
                    push(
                        &tpl.at,
                        text,
                        open,
                        format!(
                            "template tag `{}` in a script: its output would not be quoted",
                            tag.trim()
                        ),
                        "in scripts use `{% if %}`, `{% for %}` and `{% set x = … %}`; build text in the expression (`{{ a ~ b }}`) instead",
                    );
                }
                from = end;
            }
            let (holes, offsets) = script::holes_of_template(text);
            if offsets.is_empty() {
                return;
            }
            if !script::quotable_shell(shell) {
                push(
                    &tpl.at,
                    text,
                    offsets[0],
                    format!(
                        "an interpolation in a `shell: {shell}` script: the runner quotes values for sh and bash only"
                    ),
                    "use `shell: sh` or `shell: bash`, or pass the value in an environment variable (`env:`)",
                );
                return;
            }
            for (verdict, offset) in script::analyze(&holes).into_iter().zip(offsets) {
                if let Err(r) = verdict {
                    push(
                        &tpl.at,
                        text,
                        offset,
                        format!(
                            "script interpolation {}: the shell could run the value as code",
                            r.describe()
                        ),
                        r.hint(),
                    );
                }
            }
        }
        Form::Argv { argv, .. } => {
            let texts: Vec<&str> = argv.iter().map(|t| t.text().unwrap_or("")).collect();
            if let Some(k) = script::argv_command_string(&texts)
                && let Some(offset) = texts[k].find("{{")
            {
                push(
                    &argv[k].at,
                    texts[k],
                    offset,
                    "interpolation in the command string of a shell's `-c`: it is a script, and an argv element is never quoted".into(),
                    "write it as `script:`, which quotes what it interpolates; or pass the value after the command string, which reads it as \"$1\": `[sh, -c, 'echo \"$1\"', sh, '{{ x }}']`",
                );
            }
        }
    }
}

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
    for (offset, name, filter) in template::filters_and_tests(&t.text) {
        let (exists, names) = template::known(env, &name, filter);
        if exists {
            continue;
        }
        let what = if filter { "filter" } else { "test" };
        let hint = match closest(&name, &names) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("the {what}s: {}", names.join(", ")),
        };
        let pos = template_pos(src, &t.pointer, &t.text, offset);
        diags.push(
            Diagnostic::new(
                &src.path,
                Some(&src.text),
                pos,
                format!("unknown {what} `{name}`"),
            )
            .with_hint(hint),
        );
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

/// Read and check one manifest file, returning every diagnostic.
pub fn check_file(path: &Path) -> Result<(Source, Flavor), Vec<Diagnostic>> {
    let src = Source::read(path).map_err(|e| vec![load_diagnostic(path, &e)])?;
    let flavor = check_manifest(&src)?;
    Ok((src, flavor))
}

/// [`check_flavor`], saying so when the file is step info rather than a manifest.
pub fn check_manifest(src: &Source) -> Result<Flavor, Vec<Diagnostic>> {
    check_flavor(src).map_err(|diags| step_info_instead(src).unwrap_or(diags))
}

/// A step-info file given where a manifest goes: one error that says so, instead of
/// every key it lacks and has.
fn step_info_instead(src: &Source) -> Option<Vec<Diagnostic>> {
    let Value::Object(top) = &src.doc.value else {
        return None;
    };
    let info_keys = [
        "step",
        "requirements",
        "resources",
        "entrypoint",
        "settings",
        "environment",
    ];
    let looks_like_info = !top.contains_key("launch")
        && !top.contains_key("version")
        && top
            .keys()
            .all(|k| info_keys.contains(&k.as_str()) || k == "source")
        && !top.is_empty();
    looks_like_info.then(|| {
        vec![
            Diagnostic::new(
                &src.path,
                Some(&src.text),
                src.doc.index.nearest(""),
                "this looks like step info, not a flavor manifest",
            )
            .with_hint(
                "pass step info with `--info FILE` to `runner launch` or `runner render`; `runner schema step-info` describes it",
            ),
        ]
    })
}

/// What usually causes a YAML error, said in a manifest's terms.
fn yaml_hint(message: &str) -> Option<&'static str> {
    if message.contains("mapping values are not allowed") {
        Some(
            "a `: ` inside a plain value starts a mapping: quote the whole value, e.g. `script: 'echo a: b'`",
        )
    } else {
        None
    }
}

pub fn load_diagnostic(path: &Path, e: &crate::manifest::LoadError) -> Diagnostic {
    use crate::manifest::LoadError;
    match e {
        LoadError::Yaml { text, source, .. } => {
            let d = Diagnostic::new(
                path,
                Some(text),
                source.pos,
                format!("invalid YAML: {}", source.message),
            );
            match yaml_hint(&source.message) {
                Some(h) => d.with_hint(h),
                None => d,
            }
        }
        other => Diagnostic::file(path, crate::diag::error_chain(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where [`hidden_characters`] points, and at what.
    fn hidden(text: &str) -> Vec<(usize, usize, String)> {
        let src = Source::parse(Path::new("m.yaml"), text.to_string()).unwrap();
        hidden_characters(&src)
            .into_iter()
            .map(|d| (d.line, d.col, d.message))
            .collect()
    }

    #[test]
    fn characters_review_would_not_see_are_found_where_they_are() {
        // Line ends, CRLF included, tabs and an opening byte-order mark are not hidden.
        assert!(hidden("\u{feff}a: 1\r\nb: \"\tx\"\r\n# é 漢字 ok\n").is_empty());
        let found = hidden(
            "a: 1 # x\u{202e}y\u{2066}z\nb: \"q\u{200b}\"\n# cr\r# over it\nc: \"\u{feff}\"\n",
        );
        let at: Vec<(usize, usize)> = found.iter().map(|(l, c, _)| (*l, *c)).collect();
        // The first on each line, columns in characters; a lone CR ends its line.
        assert_eq!(at, [(1, 9), (2, 6), (3, 5), (5, 5)]);
        assert!(
            found[0].2.contains("U+202E (RIGHT-TO-LEFT OVERRIDE)"),
            "{}",
            found[0].2
        );
        assert!(
            found[1].2.contains("U+200B (ZERO WIDTH SPACE)"),
            "{}",
            found[1].2
        );
        assert!(
            found[2].2.contains("U+000D (CARRIAGE RETURN"),
            "{}",
            found[2].2
        );
        assert!(found[3].2.contains("U+FEFF"), "{}", found[3].2);
        // At most 10.
        let many: String = (0..50).map(|i| format!("k{i}: \"\u{2067}\"\n")).collect();
        assert_eq!(hidden(&many).len(), 10);
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
}
