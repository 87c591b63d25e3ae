//! Lines for a reader: text broken at spaces to a width (80 columns, the width every
//! line the runner prints for a person keeps to), later lines indented under the first.
//! The one wrapper of the launch summary, warnings, `runner doctor` and the errors.

/// The width of what the runner prints for a person.
pub const WIDTH: usize = 80;

/// `parts` joined by `sep` in lines of at most `width` columns, continued after
/// `indent`: a part goes whole to the next line when it does not fit, and one longer
/// than a line is broken at its spaces (a word longer than a line, such as a path,
/// stays whole).
pub fn parts(parts: &[String], sep: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut col = 0;
    let indent_len = indent.chars().count();
    let newline = |out: &mut String, col: &mut usize| {
        out.push('\n');
        out.push_str(indent);
        *col = indent_len;
    };
    for (i, part) in parts.iter().enumerate() {
        let len = part.chars().count();
        let sep_len = if i > 0 { sep.chars().count() } else { 0 };
        if col + sep_len + len <= width || (i == 0 && len <= width) {
            if i > 0 {
                out.push_str(sep);
            }
            out.push_str(part);
            col += sep_len + len;
            continue;
        }
        if i > 0 && indent_len + len <= width {
            newline(&mut out, &mut col);
            out.push_str(part);
            col += len;
            continue;
        }
        // Longer than a line: word by word.
        if i > 0 {
            out.push_str(sep.trim_end());
            col += sep.trim_end().chars().count();
        }
        for (j, word) in part.split(' ').enumerate() {
            let wlen = word.chars().count();
            let space = usize::from(j > 0 || i > 0);
            if col + space + wlen > width && col > indent_len {
                newline(&mut out, &mut col);
            } else if space == 1 {
                out.push(' ');
                col += 1;
            }
            out.push_str(word);
            col += wlen;
        }
    }
    out
}

/// `text` broken at its spaces into lines of at most `width` columns (a word longer
/// than that stays whole), later lines starting with `indent`.
pub fn words(text: &str, width: usize, indent: &str) -> String {
    let words: Vec<String> = text.split(' ').map(str::to_owned).collect();
    parts(&words, " ", width, indent)
}

/// Each labelled line of an error text (`error: …`, `  = hint: …`, `  tip: …`) that is
/// longer than `width`, broken at its spaces with its later lines under the text after
/// the label; every other line (a source line under its caret, a path) as it is.
pub fn labelled(text: &str, width: usize) -> String {
    text.split_inclusive('\n')
        .map(|line| {
            let (body, end) = match line.strip_suffix('\n') {
                Some(body) => (body, "\n"),
                None => (line, ""),
            };
            match label_end(body) {
                Some(at) if body.chars().count() > width => {
                    let indent = " ".repeat(body[..at].chars().count());
                    format!(
                        "{}{}{end}",
                        &body[..at],
                        words_after(&body[at..], width, &indent)
                    )
                }
                _ => line.to_owned(),
            }
        })
        .collect()
}

/// The text after a label, its first line starting at the label's end.
fn words_after(text: &str, width: usize, indent: &str) -> String {
    let wrapped = words(&format!("{indent}{text}"), width, indent);
    wrapped[indent.len()..].to_owned()
}

/// Where the text of a labelled line starts: after `error: `, or after `= hint: ` or
/// `tip: ` in the margin.
fn label_end(line: &str) -> Option<usize> {
    if line.starts_with("error: ") {
        return Some("error: ".len());
    }
    ["= hint: ", "tip: "]
        .iter()
        .find_map(|label| Some(label_at(line, label)? + label.len()))
}

/// Where `label` is in `line` when only the margin of a source excerpt (spaces,
/// digits, `|`) comes before it: a label of the error text, not words in it.
pub fn label_at(line: &str, label: &str) -> Option<usize> {
    let at = line.find(label)?;
    line[..at]
        .chars()
        .all(|c| c == ' ' || c == '|' || c.is_ascii_digit())
        .then_some(at)
}

/// The width to print errors to when stderr is a terminal: its columns, at most
/// [`WIDTH`]; `None` when stderr is not a terminal (a log, a pipe).
pub fn stderr_width() -> Option<usize> {
    use std::io::IsTerminal;
    use std::os::fd::AsRawFd;
    let stderr = std::io::stderr();
    if !stderr.is_terminal() {
        return None;
    }
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we own.
    let ok = unsafe { libc::ioctl(stderr.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } == 0;
    let columns = (ok && size.ws_col > 0).then_some(usize::from(size.ws_col));
    Some(columns.map_or(WIDTH, |c| c.min(WIDTH)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widest(text: &str) -> usize {
        text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
    }

    #[test]
    fn words_keep_to_the_width_under_their_indent() {
        let text = format!("{:<12}{}", "label", "word ".repeat(40));
        let wrapped = words(text.trim_end(), 80, &" ".repeat(12));
        assert!(widest(&wrapped) <= 80, "{wrapped}");
        assert!(wrapped.lines().count() > 2, "{wrapped}");
        assert!(
            wrapped
                .lines()
                .skip(1)
                .all(|l| l.starts_with("            w")),
            "{wrapped}"
        );
        // Nothing lost, nothing added but the breaks.
        assert_eq!(
            wrapped.split_whitespace().collect::<Vec<_>>(),
            text.split_whitespace().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_word_longer_than_a_line_stays_whole_on_its_own_line() {
        let path = format!("/{}", "d/".repeat(50));
        let wrapped = words(&format!("cannot read {path}: gone"), 40, "  ");
        assert_eq!(wrapped, format!("cannot read\n  {path}:\n  gone"));
    }

    #[test]
    fn labelled_lines_hang_under_their_text_and_source_lines_stay() {
        let long = "word ".repeat(30);
        let long = long.trim_end();
        let src = format!("17 | key: {}", "x".repeat(90));
        let text = format!(
            "error: {long}\n  --> m.yaml:17:5\n   |\n{src}\n   | ^\n   = hint: {long}\nshort\n"
        );
        let shown = labelled(&text, 80);
        let lines: Vec<&str> = shown.lines().collect();
        assert!(lines[0].starts_with("error: word"), "{shown}");
        assert!(lines[1].starts_with("       word"), "{shown}");
        assert!(shown.contains(&format!("\n{src}\n")), "{shown}");
        let hint = lines
            .iter()
            .position(|l| l.starts_with("   = hint: "))
            .unwrap();
        assert!(lines[hint + 1].starts_with("           word"), "{shown}");
        assert!(shown.ends_with("\nshort\n"), "{shown}");
        assert!(
            shown
                .lines()
                .filter(|l| !l.starts_with("17 |"))
                .all(|l| l.chars().count() <= 80),
            "{shown}"
        );
        assert_eq!(
            shown.split_whitespace().collect::<Vec<_>>(),
            text.split_whitespace().collect::<Vec<_>>()
        );
        // Lines that fit are not touched.
        assert_eq!(labelled("error: short\n", 80), "error: short\n");
    }

    /// A part longer than a line is broken at its spaces; a word longer than a line (a
    /// path) stays whole on a line of its own.
    #[test]
    fn long_parts_wrap_at_spaces() {
        let long = format!(
            "cannot enforce limits: failed to create cgroup `/sys/fs/cgroup/{}`: Permission \
             denied (os error 13); run as root",
            "x".repeat(70)
        );
        let pieces = vec!["launch_error in 0.00s".to_string(), long.clone()];
        let text = parts(&pieces, " · ", 80, "        ");
        for line in text.lines() {
            assert!(
                line.chars().count() <= 80 || !line.trim().contains(' '),
                "{line:?}"
            );
        }
        let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            words(&text),
            words(&format!("launch_error in 0.00s · {long}"))
        );
    }
}
