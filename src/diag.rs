//! Located diagnostics: one error about one place in one file, and the three ways
//! they are printed — for people (with the source line and a caret), for CI
//! annotations (`::error file=…,line=…,col=…::`) and as JSON for tools.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::yaml::Pos;

/// The lines of a text as YAML counts them: `\n`, `\r\n` and a lone `\r` each end a
/// line, so line numbers from the parser and the snippet shown agree. (`str::lines`
/// ignores a lone `\r`: the fuzzer found diagnostics pointing at line 123 of a file
/// that `str::lines` saw as 5 lines, shown without their source line.)
/// Like `split('\n')`, the line after a final line break is yielded (empty).
pub fn source_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\n', '\r']) {
            None => {
                rest = None;
                Some(s)
            }
            Some(i) => {
                let next = if s[i..].starts_with("\r\n") {
                    i + 2
                } else {
                    i + 1
                };
                rest = Some(&s[next..]);
                Some(&s[..i])
            }
        }
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The source line, for the human format.
    #[serde(skip)]
    pub source_line: Option<String>,
}

impl Diagnostic {
    pub fn new(file: &Path, text: Option<&str>, pos: Pos, message: impl Into<String>) -> Self {
        let source_line = text.and_then(|t| {
            source_lines(t)
                .nth(pos.line.saturating_sub(1))
                .map(str::to_string)
        });
        Diagnostic {
            file: file.to_path_buf(),
            line: pos.line,
            col: pos.col,
            message: message.into(),
            hint: None,
            source_line,
        }
    }

    /// About a whole file (it cannot be read): no line and column, shown as `--> FILE`;
    /// `line` and `col` are 0.
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line: 0,
            col: 0,
            message: message.into(),
            hint: None,
            source_line: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The human form:
    ///
    /// ```text
    /// error: unknown variable `step.nmae`
    ///   --> manifests/x.yaml:12:9
    ///    |
    /// 12 |     - "{{ step.nmae }}"
    ///    |         ^
    ///    = hint: ...
    /// ```
    ///
    /// What the manifest or the step put in a message, a path or the source line is
    /// printed escaped where it would not show as itself ([`printable`]): no escape
    /// sequence, bidirectional override or line break of theirs reaches the terminal.
    pub fn human(&self) -> String {
        use crate::util::printable;
        let mut out = String::new();
        let _ = writeln!(out, "error: {}", printable(&self.message));
        let file = self.file.display().to_string();
        if self.line == 0 {
            let _ = writeln!(out, "  --> {}", printable(&file));
        } else {
            let _ = writeln!(out, "  --> {}:{}:{}", printable(&file), self.line, self.col);
        }
        let hint = self.hint.as_deref().map(printable);
        if let Some(src) = &self.source_line {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            // Tabs would misalign the caret: show them as single spaces; escapes take
            // the room they take before the caret too.
            let shown_char = |c: char| if c == '\t' { ' ' } else { c };
            let line: String = src.chars().map(shown_char).collect();
            let before: String = line.chars().take(self.col.saturating_sub(1)).collect();
            let shown = printable(&line);
            let caret_at = printable(&before)
                .chars()
                .count()
                .min(shown.chars().count());
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{num} | {shown}");
            let _ = writeln!(out, "{pad} | {}^", " ".repeat(caret_at));
            if let Some(h) = &hint {
                let _ = writeln!(out, "{pad} = hint: {h}");
            }
        } else if let Some(h) = &hint {
            let _ = writeln!(out, "  = hint: {h}");
        }
        out
    }

    /// A GitHub Actions workflow command; `%`, CR, LF, `,` and `:` escaped as the format requires.
    pub fn github(&self) -> String {
        fn prop(s: &str) -> String {
            s.replace('%', "%25")
                .replace('\r', "%0D")
                .replace('\n', "%0A")
                .replace(':', "%3A")
                .replace(',', "%2C")
        }
        fn data(s: &str) -> String {
            s.replace('%', "%25")
                .replace('\r', "%0D")
                .replace('\n', "%0A")
        }
        let mut msg = self.message.clone();
        if let Some(h) = &self.hint {
            msg.push_str(&format!("\nhint: {h}"));
        }
        if self.line == 0 {
            return format!(
                "::error file={}::{}",
                prop(&self.file.display().to_string()),
                data(&msg)
            );
        }
        format!(
            "::error file={},line={},col={}::{}",
            prop(&self.file.display().to_string()),
            self.line,
            self.col,
            data(&msg)
        )
    }
}

/// An error with its sources, on one line: `cannot read `x`: No such file or directory`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg.push_str(&format!(": {s}"));
        cur = s.source();
    }
    msg
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Github,
    Json,
}

/// Print `text` (lines starting `error:`, `  = hint:`) on stderr. On a terminal, its
/// long labelled lines are broken to fit 80 columns (or a narrower terminal) and the
/// labels are in clap's colours (bold red `error:`, bold `hint:`) where it can show
/// them: not under `NO_COLOR`, nor `TERM=dumb`. Elsewhere (a log, a pipe) each
/// message stays on one line, whole for `grep`.
pub fn eprint_styled(text: &str) {
    let Some(width) = crate::wrap::stderr_width() else {
        eprint!("{text}");
        return;
    };
    let text = crate::wrap::labelled(text, width);
    let plain = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
        || std::env::var("TERM").is_ok_and(|t| t == "dumb");
    if plain {
        eprint!("{text}");
    } else {
        eprint!("{}", styled(&text));
    }
}

/// `text` with its `error:` and `hint:` labels in colour.
fn styled(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| {
            if let Some(rest) = line.strip_prefix("error:") {
                format!("\x1b[1;31merror:\x1b[0m{rest}")
            } else if let Some(at) = crate::wrap::label_at(line, "= hint:") {
                let (head, rest) = line.split_at(at + 2);
                format!("{head}\x1b[1mhint:\x1b[0m{}", &rest[5..])
            } else {
                line.to_string()
            }
        })
        .collect()
}

/// Print all diagnostics in one format to stdout (json, github) or stderr (human).
pub fn emit(diags: &[Diagnostic], format: Format) {
    match format {
        Format::Human => {
            let text: String = diags.iter().map(Diagnostic::human).collect();
            eprint_styled(&text);
        }
        Format::Github => {
            for d in diags {
                println!("{}", d.github());
            }
        }
        Format::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(diags).expect("diagnostics serialize")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing of the manifest's reaches the terminal unescaped: not in the message,
    /// the path, the source line or the hint; the caret still points at the column.
    #[test]
    fn human_escapes_what_would_not_show_as_itself() {
        let text = "a: \"\u{1b}[2J\u{202e}x\"\n";
        let d = Diagnostic::new(
            Path::new("m\u{1b}]0;t\u{7}.yaml"),
            Some(text),
            Pos { line: 1, col: 10 },
            "unknown key `k\u{1b}[31m`\nerror: forged",
        )
        .with_hint("see \u{9b}1m");
        let shown = d.human();
        assert!(
            shown.chars().all(|c| c == '\n' || crate::util::is_shown(c)),
            "{shown:?}"
        );
        assert_eq!(
            shown,
            "error: unknown key `k\\x1b[31m`\\nerror: forged\n  --> m\\x1b]0;t\\x07.yaml:1:10\n  |\n\
             1 | a: \"\\x1b[2J\\u{202e}x\"\n  |                    ^\n  = hint: see \\u{9b}1m\n"
        );
    }

    #[test]
    fn labels_are_coloured_and_nothing_else_changes() {
        let text = "error: bad\n  --> m.yaml:1:1\n   = hint: quote it\nerror: again\n";
        let shown = styled(text);
        assert_eq!(
            shown,
            "\x1b[1;31merror:\x1b[0m bad\n  --> m.yaml:1:1\n   = \x1b[1mhint:\x1b[0m quote \
             it\n\x1b[1;31merror:\x1b[0m again\n"
        );
        // A source line that happens to hold the words is left alone.
        assert_eq!(
            styled("3 | x: error: = hint: y\n"),
            "3 | x: error: = hint: y\n"
        );
    }

    #[test]
    fn hints_pick_near_names() {
        assert_eq!(closest("nmae", &["name", "pipeline"]), Some("name"));
        assert_eq!(closest("zzzzzz", &["name", "pipeline"]), None);
    }

    #[test]
    fn lines_end_where_yaml_ends_them() {
        assert_eq!(
            source_lines("a\rb\r\nc\nd").collect::<Vec<_>>(),
            ["a", "b", "c", "d"]
        );
        assert_eq!(source_lines("a\n").collect::<Vec<_>>(), ["a", ""]);
        assert_eq!(source_lines("a\r").collect::<Vec<_>>(), ["a", ""]);
        assert_eq!(source_lines("").collect::<Vec<_>>(), [""]);
    }

    /// Inputs the fuzzer found (`fuzz/`, all three targets): after lone `\r`s, a YAML
    /// error was located on a line `str::lines` does not have, printed with no snippet.
    #[test]
    fn errors_after_lone_carriage_returns_show_their_line() {
        for (name, bytes) in [
            (
                "manifest",
                &include_bytes!("../tests/fixtures/fuzz/manifest-lone-cr")[..],
            ),
            (
                "step-info",
                include_bytes!("../tests/fixtures/fuzz/step-info-lone-cr"),
            ),
            (
                "yaml",
                include_bytes!("../tests/fixtures/fuzz/yaml-lone-cr"),
            ),
            // A lone `\r` at the very end: the error is on the empty line after it.
            (
                "manifest-2",
                include_bytes!("../tests/fixtures/fuzz/manifest-final-cr"),
            ),
            (
                "step-info-2",
                include_bytes!("../tests/fixtures/fuzz/step-info-final-cr"),
            ),
            (
                "yaml-2",
                include_bytes!("../tests/fixtures/fuzz/yaml-final-cr"),
            ),
        ] {
            let text = std::str::from_utf8(bytes).unwrap();
            let path = Path::new(name);
            let diags = match crate::manifest::Source::parse(path, text.to_string()) {
                Err(crate::manifest::LoadError::Yaml { source, .. }) => {
                    vec![Diagnostic::new(
                        path,
                        Some(text),
                        source.pos,
                        source.message,
                    )]
                }
                Err(other) => panic!("{name}: {other}"),
                Ok(src) => crate::schemas::check_step_info(&src),
            };
            assert!(!diags.is_empty(), "{name}: no error");
            for d in diags {
                assert!(
                    d.source_line.is_some(),
                    "{name}: {}:{} has no source line",
                    d.line,
                    d.col
                );
                assert!(d.line <= source_lines(text).count(), "{name}");
            }
        }
        let text = "ste\rp: {nam]e:,\u{1f}";
        let err = crate::yaml::load(text).unwrap_err();
        let d = Diagnostic::new(Path::new("s.yaml"), Some(text), err.pos, err.message);
        assert_eq!(
            (d.line, d.source_line.as_deref()),
            (2, Some("p: {nam]e:,\u{1f}"))
        );
    }

    #[test]
    fn human_points_at_the_column() {
        let text = "a: 1\nlaunch:\n  run: [\"{{ step.nmae }}\"]\n";
        let d = Diagnostic::new(
            Path::new("m.yaml"),
            Some(text),
            Pos { line: 3, col: 9 },
            "unknown variable `step.nmae`",
        )
        .with_hint("did you mean `step.name`?");
        assert_eq!(
            d.human(),
            "error: unknown variable `step.nmae`\n  --> m.yaml:3:9\n  |\n3 |   run: [\"{{ step.nmae }}\"]\n  |         ^\n  = hint: did you mean `step.name`?\n"
        );
    }

    #[test]
    fn github_escapes_properties_and_data() {
        let d = Diagnostic::new(
            Path::new("dir,x/m:1.yaml"),
            None,
            Pos { line: 2, col: 5 },
            "bad 100%\nvalue",
        );
        assert_eq!(
            d.github(),
            "::error file=dir%2Cx/m%3A1.yaml,line=2,col=5::bad 100%25%0Avalue"
        );
    }
}
