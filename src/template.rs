//! The template language of manifests: one minijinja environment (strict undefined,
//! the project's filters), shell quoting of every interpolation in a script, the render
//! context's names for the unknown-variable check, and the positions of template bytes
//! in the manifest file.
//!
//! Templates whose name ends in `.sh` (scripts) auto-escape every interpolation with
//! shell quoting — a list becomes individually quoted words, `| safe` opts out — so a
//! hostile step name or requirement can never run as shell code. Argv elements are
//! plain text and never pass through a shell.

use minijinja::value::{Value as JValue, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior};

use crate::manifest::Source;
use crate::units;
use crate::yaml::{Pos, ScalarStyle};

pub mod script;

/// Quote for POSIX `sh`: bare when only safe characters, else single-quoted.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Text of a value as plain text: none renders empty.
pub fn plain(value: &JValue) -> String {
    match value.kind() {
        ValueKind::None | ValueKind::Undefined => String::new(),
        _ => value.to_string(),
    }
}

fn quote_value(value: &JValue) -> String {
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable => value
            .try_iter()
            .map(|it| {
                it.map(|v| shell_quote(&plain(&v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
        _ => shell_quote(&plain(value)),
    }
}

/// What `| q` makes: prints as the shell-quoted value; a script quotes the value by
/// its place instead.
#[derive(Debug)]
struct Quoted(JValue);

impl minijinja::value::Object for Quoted {
    fn render(self: &std::sync::Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result
    where
        Self: Sized + 'static,
    {
        f.write_str(&quote_value(&self.0))
    }
}

fn size_arg(value: &JValue) -> Result<u64, Error> {
    if let Some(n) = value.as_i64() {
        return u64::try_from(n)
            .map_err(|_| Error::new(ErrorKind::InvalidOperation, "negative size"));
    }
    units::parse_bytes(&plain(value))
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
}

/// The values interpolated into the script being rendered, in order. The rendered text
/// holds a marker for each (`HOLE`, its index, `HOLE_END`) until [`fill_script`] quotes
/// each for the place the shell will read it in — decided on the script as it will run,
/// after `{% if %}` and `{% for %}` have made it.
#[derive(Clone, Default)]
pub struct Holes(std::sync::Arc<std::sync::Mutex<Collected>>);

/// What a script's rendering interpolated: the values to quote, and the text a `| safe`
/// value put in as it is.
#[derive(Default)]
pub struct Collected {
    pub values: Vec<JValue>,
    pub unquoted: Vec<String>,
}

impl Holes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Collected> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, v: &JValue) -> usize {
        let mut all = self.lock();
        all.values.push(v.clone());
        all.values.len() - 1
    }

    /// What was collected since the last take.
    pub fn take(&self) -> Collected {
        std::mem::take(&mut *self.lock())
    }
}

/// Ends a hole marker in a rendered script.
pub const HOLE_END: char = '\u{E001}';

/// Why a rendered script cannot be filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillError {
    /// An interpolation where the shell could run it as code.
    Refused(script::Refusal),
    /// A list where exactly one word goes.
    ListInOneWord,
    /// Marker characters from elsewhere (a `| safe` value).
    StrayMarker,
}

impl std::fmt::Display for FillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FillError::Refused(r) => write!(
                f,
                "interpolation {} in the script as rendered: the shell could run the value as code",
                r.describe()
            ),
            FillError::ListInOneWord => write!(
                f,
                "a list interpolated where one word goes (an assignment, a redirection, `case`): \
                 its items would become words of their own"
            ),
            FillError::StrayMarker => write!(
                f,
                "the rendered script holds the private-use characters U+E000/U+E001, which mark \
                 interpolations (from a `| safe` value?)"
            ),
        }
    }
}

/// A rendered script with its interpolations quoted for their places (see
/// [`script::analyze`]).
pub fn fill_script(rendered: &str, values: &[JValue]) -> Result<String, FillError> {
    use script::{HOLE, Place};
    // The markers, in order, each exactly once: anything else is not ours.
    let mut shape = String::with_capacity(rendered.len());
    let mut order = Vec::new();
    let mut rest = rendered;
    while let Some(at) = rest.find([HOLE, HOLE_END]) {
        shape.push_str(&rest[..at]);
        let tail = &rest[at..];
        let Some(body) = tail.strip_prefix(HOLE) else {
            return Err(FillError::StrayMarker);
        };
        let end = body.find(HOLE_END).ok_or(FillError::StrayMarker)?;
        let idx: usize = body[..end].parse().map_err(|_| FillError::StrayMarker)?;
        if idx != order.len() || idx >= values.len() {
            return Err(FillError::StrayMarker);
        }
        order.push(idx);
        shape.push(HOLE);
        rest = &body[end + HOLE_END.len_utf8()..];
    }
    shape.push_str(rest);
    if order.len() != values.len() {
        return Err(FillError::StrayMarker);
    }
    let verdicts = script::analyze(&shape);
    let mut out = String::with_capacity(shape.len());
    let mut pieces = shape.split(HOLE);
    out.push_str(pieces.next().unwrap_or_default());
    for ((piece, verdict), value) in pieces.zip(verdicts).zip(values) {
        let is_list = matches!(value.kind(), ValueKind::Seq | ValueKind::Iterable);
        let text = match verdict.map_err(FillError::Refused)? {
            Place::Arg | Place::Command => quote_value(value),
            Place::OneWord if is_list => return Err(FillError::ListInOneWord),
            Place::OneWord => shell_quote(&plain(value)),
            Place::Quoted if is_list => script::double_quote_escape(
                &value
                    .try_iter()
                    .map(|it| it.map(|v| plain(&v)).collect::<Vec<_>>().join(" "))
                    .unwrap_or_default(),
            ),
            Place::Quoted => script::double_quote_escape(&plain(value)),
        };
        out.push_str(&text);
        out.push_str(piece);
    }
    Ok(out)
}

/// The environment every manifest template is compiled in.
pub fn environment() -> Environment<'static> {
    environment_with(Holes::default())
}

/// [`environment`], its scripts' interpolations collected in `holes`.
/// Instructions one template may run: far above what a manifest needs (the shipped
/// ones run well under a thousand), far below what hangs (nested `range` loops).
pub const FUEL: u64 = 1_000_000;

pub fn environment_with(holes: Holes) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".sh") {
            AutoEscape::Custom("shell")
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(move |out, state: &State, value| {
        let shell = matches!(state.auto_escape(), AutoEscape::Custom("shell"));
        let quoted = value.downcast_object_ref::<Quoted>();
        let text = if shell && (!value.is_safe() || quoted.is_some()) {
            // Quoted once the script's shape says how (`fill_script`).
            let v = quoted.map_or(value, |q| &q.0);
            format!("{}{}{HOLE_END}", script::HOLE, holes.push(v))
        } else if shell {
            // `| safe`: the author's own shell text. Recorded so that `render` shows it.
            let text = plain(value);
            holes.lock().unquoted.push(text.clone());
            text
        } else {
            plain(value)
        };
        out.write_str(&text).map_err(Error::from)
    });
    // `q`: the value shell-quoted. In a script it is the value itself, quoted for the
    // place it lands in like any interpolation (inside `"…"` a pre-quoted value would
    // be live shell text).
    let q = |v: JValue| JValue::from_object(Quoted(v));
    env.add_filter("q", q);
    env.add_filter("shell_quote", q);
    // minijinja's `escape` marks its HTML-escaped output safe, which in a script would
    // skip the quoting: here it is plain text like any other value.
    let html = |v: JValue| -> String {
        plain(&v)
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;")
    };
    env.add_filter("escape", html);
    env.add_filter("e", html);
    env.add_filter("bytes", |v: JValue| size_arg(&v));
    env.add_filter("kib", |v: JValue| size_arg(&v).map(|b| b.div_ceil(1 << 10)));
    env.add_filter("mib", |v: JValue| size_arg(&v).map(|b| b.div_ceil(1 << 20)));
    env.add_filter("gib", |v: JValue| size_arg(&v).map(|b| b.div_ceil(1 << 30)));
    env.add_filter("seconds", |v: JValue| -> Result<u64, Error> {
        if let Some(n) = v.as_i64()
            && n >= 0
        {
            return Ok(n as u64);
        }
        let d = units::parse_duration(&plain(&v))
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
        Ok(d.as_secs() + u64::from(d.subsec_nanos() > 0))
    });
    // `{{ names | flags('-e') }}` → `-e A -e B`; `flags('--x=')` → `--x=A --x=B`.
    env.add_filter(
        "flags",
        |v: JValue, flag: String| -> Result<Vec<String>, Error> {
            let items = v.try_iter()?;
            Ok(items
                .flat_map(|item| match flag.strip_suffix('=') {
                    Some(_) => vec![format!("{flag}{}", plain(&item))],
                    None => vec![flag.clone(), plain(&item)],
                })
                .collect())
        },
    );
    // minijinja's own `tojson` marks its output safe (for HTML), which in a script would
    // skip shell quoting and let `$(…)` inside a JSON string run. Plain text here, so a
    // script quotes it like any other value.
    env.add_filter(
        "tojson",
        |v: JValue, indent: Option<usize>| -> Result<String, Error> {
            let json = match indent {
                Some(n) => {
                    let pad = " ".repeat(n);
                    let fmt = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
                    let mut out = Vec::new();
                    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
                    serde::Serialize::serialize(&v, &mut ser)
                        .map(|()| String::from_utf8(out).unwrap_or_default())
                }
                None => serde_json::to_string(&v),
            };
            json.map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
        },
    );
    env.add_function("on_path", on_path);
    // `{{ refuse("why") }}`: the flavor refuses the step, at render, with its own
    // words — located at the template like every render error.
    env.add_function("refuse", |why: String| -> Result<JValue, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, why))
    });
    // `x is matching("^[a-z]+$")`: a regular expression (the `regex` crate: linear
    // time whatever the pattern), over the whole value as a string.
    env.add_test(
        "matching",
        |v: JValue, pattern: String| -> Result<bool, Error> {
            let re = regex::RegexBuilder::new(&pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("`matching`: {e}")))?;
            Ok(re.is_match(&plain(&v)))
        },
    );
    env.add_filter("hash", |v: JValue| {
        let json = serde_json::to_string(&v).unwrap_or_default();
        blake3::hash(json.as_bytes()).to_hex()[..16].to_string()
    });
    env
}

/// `on_path('uv')`: whether a program of that name is on the runner's `PATH` (the
/// `env.PATH` templates see), so a flavor can prefer a faster tool when it is there.
/// It looks, never runs: only a bare program name is accepted.
fn on_path(state: &State, name: &str) -> Result<bool, Error> {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
        && !name.starts_with('.');
    if !bare {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("on_path takes a bare program name, not `{name}`"),
        ));
    }
    let path = state
        .lookup("env")
        .and_then(|env| env.get_attr("PATH").ok())
        .and_then(|p| p.as_str().map(str::to_string))
        .unwrap_or_default();
    Ok(std::env::split_paths(&path).any(|dir| {
        use std::os::unix::fs::PermissionsExt;
        dir.is_absolute()
            && std::fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }))
}

/// Filters a template may name: minijinja's and the project's (checked against the
/// environment, so the list never claims one that is not there).
const FILTER_NAMES: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "chain",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "format",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
    "zip",
    "q",
    "shell_quote",
    "bytes",
    "kib",
    "mib",
    "gib",
    "seconds",
    "flags",
    "hash",
];

const TEST_NAMES: &[&str] = &[
    "boolean",
    "defined",
    "divisibleby",
    "endingwith",
    "eq",
    "equalto",
    "even",
    "false",
    "filter",
    "float",
    "ge",
    "gt",
    "in",
    "integer",
    "iterable",
    "le",
    "lower",
    "lt",
    "mapping",
    "ne",
    "none",
    "number",
    "odd",
    "safe",
    "escaped",
    "sameas",
    "sequence",
    "startingwith",
    "string",
    "test",
    "true",
    "undefined",
    "upper",
    "containing",
    "matching",
];

/// Filters (`x | name`) and tests (`x is name`) a template names, with their byte
/// offsets: read off its `{{ }}` and `{% %}` blocks, string literals skipped.
pub fn filters_and_tests(text: &str) -> Vec<(usize, String, bool)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let ident = |i: usize| -> Option<(usize, String)> {
        let mut j = i;
        while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t' || bytes[j] == b'\n') {
            j += 1;
        }
        let start = j;
        while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
            j += 1;
        }
        (j > start).then(|| (start, text[start..j].to_string()))
    };
    let mut i = 0;
    while i + 1 < bytes.len() {
        // Bytes, not `&text[i..]`: `i` steps through multi-byte characters too.
        let open = &bytes[i..];
        let close = if open.starts_with(b"{{") {
            "}}"
        } else if open.starts_with(b"{%") {
            "%}"
        } else {
            i += 1;
            continue;
        };
        let end = tag_close(&text[i..], close).map_or(text.len(), |e| i + e);
        let mut k = i + 2;
        while k < end {
            match bytes[k] {
                q @ (b'\'' | b'"') => {
                    k += 1;
                    while k < end && bytes[k] != q {
                        k += if bytes[k] == b'\\' { 2 } else { 1 };
                    }
                    k += 1;
                }
                b'|' => {
                    if let Some((at, name)) = ident(k + 1) {
                        out.push((at, name, true));
                    }
                    k += 1;
                }
                b'i' if text[k..end].starts_with("is")
                    && (k == 0
                        || !(bytes[k - 1].is_ascii_alphanumeric() || bytes[k - 1] == b'_'))
                    && bytes.get(k + 2).is_some_and(|c| c.is_ascii_whitespace()) =>
                {
                    if let Some((at, name)) = ident(k + 2) {
                        let (at, name) = if name == "not" {
                            ident(at + 3).unwrap_or((at, name))
                        } else {
                            (at, name)
                        };
                        out.push((at, name, false));
                    }
                    k += 2;
                }
                _ => k += 1,
            }
        }
        i = end;
    }
    out
}

/// Whether `env` has a filter (or test) of this name; if not, the names it has.
pub fn known(env: &Environment<'_>, name: &str, filter: bool) -> (bool, Vec<&'static str>) {
    let exists = |n: &str| {
        let expr = if filter {
            format!("none | {n}")
        } else {
            format!("none is {n}")
        };
        match env.compile_expression(&expr).and_then(|e| e.eval(())) {
            Err(e) => !matches!(e.kind(), ErrorKind::UnknownFilter | ErrorKind::UnknownTest),
            Ok(_) => true,
        }
    };
    if exists(name) {
        return (true, Vec::new());
    }
    let names = if filter { FILTER_NAMES } else { TEST_NAMES };
    (false, names.iter().copied().filter(|n| exists(n)).collect())
}

/// If a template is exactly one `{{ expression }}`, the expression.
pub fn single_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") || inner.contains("{#")
    {
        return None;
    }
    Some(inner.trim())
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
pub const GLOBALS: &[&str] = &[
    "on_path",
    "refuse",
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

/// Byte offset of the start of line `line` (1-based) of a template.
pub fn line_offset(text: &str, line: usize) -> usize {
    text.split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum()
}

/// First occurrence of `word` in `text` not inside a longer identifier.
pub fn find_word(text: &str, word: &str) -> Option<usize> {
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

/// Where the tag that opens `rest` (`{{`, `{%` or `{#`) is closed by `close`: the offset
/// of `close` in `rest`, or `None` when it never closes. A `}}` inside one of the tag's
/// string literals (`{{ '{{.State.Pid}}' }}`) does not close it, as in minijinja's lexer.
pub fn tag_close(rest: &str, close: &str) -> Option<usize> {
    let bytes = rest.as_bytes();
    let mut i = 2;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        match (quote, bytes[i]) {
            (Some(_), b'\\') => i += 1,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            // Comments have no string literals.
            (None, c @ (b'\'' | b'"')) if close != "#}" => quote = Some(c),
            (None, _) if bytes[i..].starts_with(close.as_bytes()) => return Some(i),
            (None, _) => {}
        }
        i += 1;
    }
    None
}

/// First use of the variable `name` in a `{{ }}` or `{% %}` block of a template (not
/// in its literal text or a `{# #}` comment).
pub fn find_variable(text: &str, name: &str) -> Option<usize> {
    variable_uses(text, name)
        .into_iter()
        .next()
        .map(|(at, _)| at)
}

/// Every use of the variable `name` in the `{{ }}` and `{% %}` blocks of a template,
/// with the character that follows it (`.` when a part of it is taken).
pub fn variable_uses(text: &str, name: &str) -> Vec<(usize, Option<char>)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find('{') {
        let open = from + i;
        let rest = &text[open..];
        let close = if rest.starts_with("{{") {
            "}}"
        } else if rest.starts_with("{%") {
            "%}"
        } else {
            from = open + 1;
            continue;
        };
        let end = tag_close(rest, close).map_or(text.len(), |e| open + e);
        let block = &text[open + 2..end];
        let mut k = 0;
        while let Some(at) = find_word(&block[k..], name) {
            let at = k + at;
            out.push((open + 2 + at, block[at + name.len()..].chars().next()));
            k = at + name.len();
        }
        from = end;
    }
    out
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
        ScalarStyle::Literal => Pos {
            line: start.line + lines,
            col: start.col + col_chars,
        },
        ScalarStyle::Folded => folded_pos(src, start, before),
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

/// In a `>` block, lines are joined with one space (a blank line makes a line break):
/// the value's offsets are not the source's. Walk the block's source lines, each
/// holding its content and one separator of the value, to the one `before` ends in.
fn folded_pos(src: &Source, start: Pos, before: &str) -> Pos {
    let mut left = before.chars().count();
    let indent = start.col.saturating_sub(1);
    for (i, line) in crate::diag::source_lines(&src.text)
        .skip(start.line.saturating_sub(1))
        .enumerate()
    {
        let content: Vec<char> = line.chars().skip(indent).collect();
        if line.trim().is_empty() {
            // A blank line is the separator of the line before it.
            continue;
        }
        if left <= content.len() {
            return Pos {
                line: start.line + i,
                col: start.col + left,
            };
        }
        left -= content.len() + 1;
    }
    start
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_found_in_blocks_only() {
        let t = "# the entrypoint runs\nexec {{ entrypoint }}";
        assert_eq!(
            find_variable(t, "entrypoint"),
            Some(t.rfind("entrypoint").unwrap())
        );
        assert_eq!(find_variable("{# entrypoint #} x", "entrypoint"), None);
        assert_eq!(find_variable("{{ step.entrypoint }}", "entrypoint"), None);
        assert_eq!(
            find_variable("{% for a in entrypoint %}", "entrypoint"),
            Some(12)
        );
        assert_eq!(find_variable("{{ entrypoint_x }} {{ x", "entrypoint"), None);
    }

    #[test]
    fn quoting_is_posix_safe() {
        assert_eq!(shell_quote("requests==2.0"), "requests==2.0");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(
            shell_quote("x'; touch /tmp/pwned; echo '"),
            r"'x'\''; touch /tmp/pwned; echo '\'''"
        );
        assert_eq!(shell_quote("$(id)"), "'$(id)'");
    }

    /// A script rendered and filled in, as `render` does.
    fn script(text: &str, ctx: &minijinja::Value) -> Result<String, FillError> {
        let holes = Holes::default();
        let env = environment_with(holes.clone());
        let out = env.render_named_str("s.sh", text, ctx).unwrap();
        fill_script(&out, &holes.take().values)
    }

    #[test]
    fn scripts_quote_every_interpolation() {
        let env = environment();
        let ctx = minijinja::context! { name => "a b", pip => vec!["x;y", "z"], raw => "$HOME" };
        let out = script(
            "echo {{ name }} {{ pip }} {{ raw | safe }} {{ name | q }}",
            &ctx,
        );
        assert_eq!(out.unwrap(), "echo 'a b' 'x;y' z $HOME 'a b'");
        // Inside double quotes: escaped for them. One word: a list is refused.
        let out = script("echo \"got {{ raw }} and {{ pip }}\"", &ctx);
        assert_eq!(out.unwrap(), "echo \"got \\$HOME and x;y z\"");
        assert_eq!(script("x={{ pip }}", &ctx), Err(FillError::ListInOneWord));
        assert_eq!(
            script("echo $(( {{ name }} ))", &ctx),
            Err(FillError::Refused(script::Refusal::Arithmetic))
        );
        // A `| safe` value cannot fake a marker.
        let forged = minijinja::context! { f => format!("{}0{HOLE_END}", script::HOLE), x => "1" };
        assert_eq!(
            script("echo {{ f | safe }} {{ x }}", &forged),
            Err(FillError::StrayMarker)
        );
        let plain = env.render_named_str("s", "{{ name }}", &ctx).unwrap();
        assert_eq!(plain, "a b");
    }

    #[test]
    fn tojson_in_a_script_is_quoted_like_any_value() {
        let env = environment();
        let ctx = minijinja::context! { v => minijinja::context! { name => "$(touch PWNED) 'x'" } };
        let out = script("printf %s {{ v | tojson }}", &ctx).unwrap();
        assert_eq!(out, r#"printf %s '{"name":"$(touch PWNED) '\''x'\''"}'"#);
        let plain = env.render_named_str("s", "{{ v | tojson }}", &ctx).unwrap();
        assert_eq!(plain, r#"{"name":"$(touch PWNED) 'x'"}"#);
        let pretty = env.render_str("{{ [1] | tojson(2) }}", &ctx).unwrap();
        assert_eq!(pretty, "[\n  1\n]");
    }

    #[test]
    fn flags_pair_each_item_with_a_flag() {
        let env = environment();
        let ctx = minijinja::context! { names => vec!["A", "B"] };
        let expr = env.compile_expression("names | flags('-e')").unwrap();
        let v = expr.eval(&ctx).unwrap();
        assert_eq!(v.to_string(), r#"["-e", "A", "-e", "B"]"#);
        let expr = env.compile_expression("names | flags('--env=')").unwrap();
        assert_eq!(
            expr.eval(&ctx).unwrap().to_string(),
            r#"["--env=A", "--env=B"]"#
        );
    }

    #[test]
    fn filters_convert_units() {
        let env = environment();
        let ctx = minijinja::context! { m => 1u64 << 30, t => "1h" };
        let out = env
            .render_str(
                "{{ m | mib }} {{ m | gib }} {{ '512MiB' | bytes }} {{ t | seconds }}",
                &ctx,
            )
            .unwrap();
        assert_eq!(out, "1024 1 536870912 3600");
    }

    /// A flavor's own refusal and a regular-expression test, and a wrong pattern is an
    /// error, not a panic.
    #[test]
    fn refuse_and_matching() {
        let env = environment();
        let render = |t: &str| env.render_str(t, minijinja::context! { x => "ab-1" });
        assert_eq!(
            render("{{ x is matching('^[a-z0-9-]+$') }}").unwrap(),
            "True"
        );
        assert_eq!(
            render("{{ x is not matching('^[a-z]+$') }}").unwrap(),
            "True"
        );
        let e = render("{% if x %}{{ refuse('no ' ~ x) }}{% endif %}").unwrap_err();
        assert!(e.to_string().contains("no ab-1"), "{e}");
        let e = render("{{ x is matching('(') }}").unwrap_err();
        assert!(e.to_string().contains("`matching`"), "{e}");
    }

    /// Templates are scanned by bytes: a multi-byte character before, inside or after a
    /// tag neither panics nor hides what the tag names.
    #[test]
    fn scanning_templates_survives_multi_byte_characters() {
        let t = "… é {{ x | q }} ü {% if y is defined %}{{ '…}}…' | upper }}{% endif %}";
        let names: Vec<String> = filters_and_tests(t).into_iter().map(|f| f.1).collect();
        assert_eq!(names, ["q", "defined", "upper"]);
        let at = t.find("{{ '").unwrap();
        assert_eq!(tag_close(&t[at..], "}}"), Some("{{ '…}}…' | upper ".len()));
        assert_eq!(tag_close("{{ 'é", "}}"), None);
    }

    #[test]
    fn single_expressions_are_recognised() {
        assert_eq!(single_expression("{{ entrypoint }}"), Some("entrypoint"));
        assert_eq!(single_expression(" {{- x -}} "), Some("x"));
        assert_eq!(single_expression("{{ a }}{{ b }}"), None);
        assert_eq!(single_expression("--x={{ a }}"), None);
    }
}
