//! Where an interpolation sits in a `script:`, in shell terms.
//!
//! Scripts shell-quote every `{{ }}` (see `render.rs`), which makes a value one word of
//! plain data only where the shell reads it unquoted. Inside `'…'`, `"…"` or backticks the
//! added quotes pair up with the author's and the value's `$(…)` runs; in a `#` comment a
//! newline in the value ends the comment; in a here-document quotes are literal and `$(…)`
//! expands. This finds interpolations in those places so `validate` can refuse them.

/// A shell context in which a quoted interpolation is not safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsafe {
    SingleQuotes,
    DoubleQuotes,
    Backticks,
    Comment,
    HereDoc,
}

impl Unsafe {
    pub fn describe(self) -> &'static str {
        match self {
            Unsafe::SingleQuotes => "inside single quotes",
            Unsafe::DoubleQuotes => "inside double quotes",
            Unsafe::Backticks => "inside backticks",
            Unsafe::Comment => "inside a shell comment",
            Unsafe::HereDoc => "inside a here-document",
        }
    }
}

/// Byte offsets of `{{ … }}` interpolations in an unsafe context, with the context.
/// Expressions ending in `| safe` are the author's explicit choice and are not reported.
pub fn unsafe_interpolations(text: &str) -> Vec<(usize, Unsafe)> {
    #[derive(PartialEq)]
    enum State {
        Normal,
        Single,
        Double,
        Backtick,
        Comment,
    }
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut state = State::Normal;
    // The delimiter of a here-document whose body starts at the next line, then is being read.
    let mut heredoc: Option<(String, bool)> = None;
    let mut i = 0;
    let mut line_start = true;
    while i < bytes.len() {
        let rest = &text[i..];
        if let Some((delim, in_body)) = &mut heredoc
            && line_start
            && *in_body
        {
            let line = rest.split('\n').next().unwrap_or("");
            if line.trim_start_matches('\t') == delim.as_str() {
                heredoc = None;
            }
        }
        let in_heredoc = heredoc.as_ref().is_some_and(|(_, body)| *body);
        line_start = false;
        // Template statements and comments print nothing of their own.
        let close = if rest.starts_with("{%") {
            Some("%}")
        } else if rest.starts_with("{#") {
            Some("#}")
        } else {
            None
        };
        if let Some(close) = close {
            i += rest.find(close).map_or(rest.len(), |e| e + close.len());
            continue;
        }
        if rest.starts_with("{{") {
            let end = rest.find("}}").map_or(rest.len(), |e| e + 2);
            let expr = rest[2..end.saturating_sub(2).max(2)].trim_matches(['-', ' ', '\n', '\t']);
            let explicit = expr.ends_with("| safe") || expr.ends_with("|safe");
            let context = match state {
                _ if in_heredoc => Some(Unsafe::HereDoc),
                State::Normal => None,
                State::Single => Some(Unsafe::SingleQuotes),
                State::Double => Some(Unsafe::DoubleQuotes),
                State::Backtick => Some(Unsafe::Backticks),
                State::Comment => Some(Unsafe::Comment),
            };
            if let Some(c) = context
                && !explicit
            {
                out.push((i, c));
            }
            i += end;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        let mut step = c.len_utf8();
        if c == '\n' {
            line_start = true;
            if state == State::Comment {
                state = State::Normal;
            }
            if let Some((_, body)) = &mut heredoc {
                *body = true;
            }
        } else if in_heredoc {
            // Quotes mean nothing in a here-document body.
        } else {
            match state {
                State::Normal => match c {
                    '\\' => step += rest[1..].chars().next().map_or(0, char::len_utf8),
                    '\'' => state = State::Single,
                    '"' => state = State::Double,
                    '`' => state = State::Backtick,
                    '#' if i == 0 || bytes[i - 1].is_ascii_whitespace() => state = State::Comment,
                    '<' if rest.starts_with("<<") && !rest.starts_with("<<<") => {
                        let after = rest[2..].trim_start_matches('-').trim_start();
                        let word: String = after
                            .chars()
                            .take_while(|c| !c.is_whitespace() && !";|&<>()".contains(*c))
                            .filter(|c| !"'\"\\".contains(*c))
                            .collect();
                        if !word.is_empty() {
                            heredoc = Some((word, false));
                        }
                        step = 2;
                    }
                    _ => {}
                },
                State::Single if c == '\'' => state = State::Normal,
                State::Double => match c {
                    '\\' => step += rest[1..].chars().next().map_or(0, char::len_utf8),
                    '"' => state = State::Normal,
                    _ => {}
                },
                State::Backtick if c == '`' => state = State::Normal,
                _ => {}
            }
        }
        i += step;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contexts(text: &str) -> Vec<Unsafe> {
        unsafe_interpolations(text)
            .into_iter()
            .map(|(_, c)| c)
            .collect()
    }

    #[test]
    fn bare_interpolations_are_safe() {
        assert!(contexts("printf '%s\\n' {{ x }} \"$HOME\" {{ y }}").is_empty());
        assert!(contexts("echo $(basename {{ x }}) a#b {{ y }}").is_empty());
        assert!(contexts("echo \"it's\" {{ x }} 'a\"b' {{ y }}").is_empty());
        assert!(contexts("{% if x %}echo {{ x }}{% endif %}").is_empty());
    }

    #[test]
    fn quoted_interpolations_are_found() {
        assert_eq!(contexts("echo \"{{ x }}\""), [Unsafe::DoubleQuotes]);
        assert_eq!(contexts("echo '{{ x }}'"), [Unsafe::SingleQuotes]);
        assert_eq!(contexts("echo `{{ x }}`"), [Unsafe::Backticks]);
        assert_eq!(contexts("echo \"a \\\" {{ x }}\""), [Unsafe::DoubleQuotes]);
        assert_eq!(contexts("ls # {{ x }}\necho {{ y }}"), [Unsafe::Comment]);
        assert_eq!(
            contexts("cat <<EOF\n{{ x }}\nEOF\necho {{ y }}"),
            [Unsafe::HereDoc]
        );
        assert_eq!(unsafe_interpolations("echo \"{{ x }}\"")[0].0, 6);
    }

    #[test]
    fn safe_is_an_explicit_opt_out() {
        assert!(contexts("echo \"{{ x | safe }}\"").is_empty());
    }
}
