//! Where an interpolation may go in a `script:`: an allowlist, read off the script's
//! shell structure.
//!
//! The script is scanned as `sh`/`bash` read it, with every interpolation a hole (one
//! [`HOLE`] character). A hole is allowed only where the shell takes what is put there
//! as data, and it is told how to quote it:
//!
//! - a word, or part of one, that is an argument of a command named by the script, or
//!   the command's name itself ([`Place::Arg`], [`Place::Command`]): single-quoted, a
//!   list as several words;
//! - exactly one word: an assignment's value, a redirection's target, `case WORD in`
//!   ([`Place::OneWord`]): single-quoted, never a list;
//! - plain text inside double quotes ([`Place::Quoted`]): `\ " $` and backquote escaped.
//!
//! Everything else is refused, with where and what to do instead: inside single quotes,
//! `$'…'`, backquotes, `${…}`, `$((…))`, `((…))`, `[[…]]`, a comment, a here-document, a
//! `case` pattern or array subscript; after `\` or `$`; in the arguments of a builtin
//! that evaluates or names variables (`eval`, `trap`, `let`, `declare`, `read`, `unset`,
//! `source`, `printf -v`, …), of a command whose name is decided when the script runs
//! (`"$cmd" …`), or in the command string of `sh -c` (through `env`, `exec`, `nohup` and
//! the like too); in an assignment's value when the script gives variables the integer
//! attribute (`declare -i`: bash evaluates what is assigned to them).
//!
//! What is not recognised is refused, never guessed: the scanner need not know all of
//! bash, only enough to be sure a hole is data. The differential test
//! (`tests/it/injection.rs`) runs every shape it allows with hostile values under
//! `sh`, `bash` and `dash`.

/// Marks an interpolation in the text given to [`analyze`].
pub const HOLE: char = '\u{E000}';

/// What a hole is, where it is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// An argument (or part of one): a list is several arguments.
    Arg,
    /// The command's name (or part of it): a list is the command and its arguments.
    Command,
    /// Exactly one word: an assignment's value, a redirection's target, `case WORD`.
    OneWord,
    /// Plain text inside double quotes.
    Quoted,
}

/// Why a hole is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    SingleQuotes,
    AnsiQuotes,
    Backquotes,
    Parameter,
    Arithmetic,
    DoubleBracket,
    Comment,
    HereDoc,
    CasePattern,
    Subscript,
    AfterBackslash,
    AfterDollar,
    Evaluates,
    DynamicCommand,
    ShellCommand,
    IntegerAttribute,
    Name,
    Pattern,
}

impl Refusal {
    /// Where the interpolation is, as the error says it.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::SingleQuotes => "inside single quotes",
            Refusal::AnsiQuotes => "inside `$'…'`",
            Refusal::Backquotes => "inside backquotes",
            Refusal::Parameter => "inside a parameter expansion `${…}`",
            Refusal::Arithmetic => "in arithmetic (`$((…))`, `((…))`, `$[…]`), which evaluates it",
            Refusal::DoubleBracket => "inside `[[ … ]]`, which can evaluate it as arithmetic",
            Refusal::Comment => "in a shell comment, which a newline in the value ends",
            Refusal::HereDoc => "in a here-document",
            Refusal::CasePattern => "in a `case` pattern",
            Refusal::Subscript => "in an array subscript, which bash evaluates as arithmetic",
            Refusal::AfterBackslash => "right after a backslash, which would escape its quoting",
            Refusal::AfterDollar => "right after `$`",
            Refusal::Evaluates => {
                "in the arguments of a builtin that evaluates them or takes variable names"
            }
            Refusal::DynamicCommand => {
                "in the arguments of a command whose name is only known when the script runs"
            }
            Refusal::ShellCommand => "in the command string of a shell's `-c`",
            Refusal::IntegerAttribute => {
                "in an assignment, in a script that gives variables the integer attribute \
                 (bash evaluates what is assigned to them)"
            }
            Refusal::Name => "as a name the shell defines (a function, a `for` variable)",
            Refusal::Pattern => "inside a pattern group `@(…)`",
        }
    }

    /// What to write instead.
    pub fn hint(self) -> &'static str {
        match self {
            Refusal::DynamicCommand => {
                "name the program in the script, or use `argv:`; or pass the value in an \
                 environment variable (`env:`) the script reads as \"$NAME\""
            }
            Refusal::ShellCommand => {
                "pass the value as an argument after the command string, which reads it as \
                 \"$1\": `sh -c 'echo \"$1\"' sh {{ x }}`"
            }
            Refusal::AfterBackslash | Refusal::AfterDollar => {
                "put the interpolation in a word of its own, or inside double quotes"
            }
            _ => {
                "write it as a word of its own or inside double quotes in a command's \
                 arguments; or pass the value in an environment variable (`env:`) the \
                 script reads as \"$NAME\""
            }
        }
    }
}

/// How each hole may be filled, in order.
pub type Verdict = Result<Place, Refusal>;

/// Builtins (and keywords) whose arguments may be interpolated: they neither evaluate
/// their arguments nor take variable names (`printf -v` and `test -v` are checked on
/// their own). Any other builtin is refused.
const DATA_BUILTINS: &[&str] = &[
    "echo", "printf", "cd", "pwd", "exit", "return", "kill", "test", "[", "true", "false", ":",
    "shift", "umask", "ulimit", "set", "break", "continue", "sleep", "times", "type", "jobs",
];

/// Every builtin and reserved word of bash and POSIX sh.
const BUILTINS: &[&str] = &[
    ".",
    ":",
    "[",
    "alias",
    "bg",
    "bind",
    "break",
    "builtin",
    "caller",
    "cd",
    "command",
    "compgen",
    "complete",
    "compopt",
    "continue",
    "coproc",
    "declare",
    "dirs",
    "disown",
    "echo",
    "enable",
    "eval",
    "exec",
    "exit",
    "export",
    "false",
    "fc",
    "fg",
    "getopts",
    "hash",
    "help",
    "history",
    "jobs",
    "kill",
    "let",
    "local",
    "logout",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "readonly",
    "return",
    "select",
    "set",
    "shift",
    "shopt",
    "source",
    "suspend",
    "test",
    "times",
    "trap",
    "true",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unalias",
    "unset",
    "wait",
];

/// Commands that run the command named in their arguments.
const WRAPPERS: &[&str] = &[
    "exec", "command", "builtin", "env", "nohup", "nice", "time", "timeout", "setsid", "stdbuf",
    "sudo", "doas", "xargs", "chrt", "taskset", "ionice", "flock", "chroot", "unshare", "nsenter",
    "runuser", "su", "watch", "parallel", "busybox",
];

/// Shells whose `-c` takes a command string.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "ash", "ksh", "mksh", "zsh", "yash", "posh",
];

/// Builtins that take assignments as arguments: a hole may be an assignment's value.
const ASSIGNING: &[&str] = &["export", "local", "readonly"];

/// Whether a script gives variables the integer attribute, or uses `let`: then a value
/// assigned to a variable may be evaluated as arithmetic.
fn integer_attributes(text: &str) -> bool {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || ";&|()".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    words.iter().enumerate().any(|(i, w)| {
        *w == "let"
            || (matches!(*w, "declare" | "typeset" | "local" | "export" | "readonly")
                && words[i + 1..]
                    .iter()
                    .take_while(|a| a.starts_with('-') || a.starts_with('+'))
                    .any(|a| a.contains('i')))
    })
}

use crate::util::is_variable_name as is_name;

/// One word being read: its text with quotes removed (for keywords and names), whether
/// anything in it is decided at run time, and its holes.
#[derive(Default)]
struct Word {
    /// The word as written, quotes removed; `None` once it holds an expansion.
    literal: Option<String>,
    /// The raw characters, for assignment and option shapes.
    raw: String,
    started: bool,
    /// Holes directly in this word, and whether each is inside double quotes.
    holes: Vec<(usize, bool)>,
    /// The first hole index anywhere in it (nested substitutions too).
    first_hole: Option<usize>,
}

impl Word {
    fn new() -> Word {
        Word {
            literal: Some(String::new()),
            ..Word::default()
        }
    }
    fn push_literal(&mut self, c: char) {
        self.started = true;
        self.raw.push(c);
        if let Some(l) = &mut self.literal {
            l.push(c);
        }
    }
    fn push_raw(&mut self, c: char) {
        self.started = true;
        self.raw.push(c);
    }
    fn dynamic(&mut self) {
        self.started = true;
        self.literal = None;
    }
    /// Holes `from..to` were met in something nested in this word (`$(…)`, `<(…)`).
    fn nested_from(&mut self, from: usize, to: usize) {
        if from < to {
            self.first_hole.get_or_insert(from);
        }
        self.dynamic();
    }
}

/// Where the next word of a command goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pos {
    /// The command's name, an assignment or a reserved word.
    Start,
    /// An argument.
    Arg,
    /// The word after `case`.
    CaseWord,
    /// `in` after `case WORD`.
    CaseIn,
    /// A `case` pattern (until `)`).
    CasePattern,
    /// The variable of `for`/`select`.
    Name,
    /// The name after `function`.
    FuncName,
    /// `in` or `do` after `for NAME`.
    ForIn,
}

/// What the arguments of the current command are allowed to hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Args {
    Data,
    Refused(Refusal),
    /// Like `export`: `NAME=value` arguments, the value one word.
    Assignments,
    /// A wrapper (`env`, `exec`): the next operand names the command it runs.
    Wrapper,
    /// A shell: an option with `c` makes the next operand its command string; `-o`
    /// and `-O` take a value.
    Shell {
        c: bool,
        optarg: bool,
    },
    /// `printf`: its first argument may be `-v NAME`, which bash evaluates; so no hole
    /// there, nor after `-v`.
    Printf {
        format_seen: bool,
    },
    /// `test`/`[`: a value may be `-v`, which makes the next word a name bash evaluates;
    /// so one word per hole, and no hole after `-v`, `-R` or another hole.
    Test,
}

struct Command {
    pos: Pos,
    args: Args,
    prev_word: Option<String>,
    /// The previous word held a hole or an expansion.
    prev_dynamic: bool,
    /// The next word is a redirection's target.
    redirect: bool,
}

impl Command {
    fn new() -> Command {
        Command {
            pos: Pos::Start,
            args: Args::Data,
            prev_word: None,
            prev_dynamic: false,
            redirect: false,
        }
    }
}

/// What ends a piece of code being scanned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    End,
    /// `)` of `$(`, `(`, `<(`.
    Paren,
    /// The word `]]`.
    DoubleBracket,
}

struct Scanner {
    chars: Vec<char>,
    i: usize,
    verdicts: Vec<Option<Verdict>>,
    /// Refusals of the enclosing constructs: a hole inside gets the outermost.
    forced: Vec<Refusal>,
    integer: bool,
    /// Here-documents whose bodies start at the next line: (delimiter, strip tabs).
    pending: Vec<(String, bool)>,
}

/// How each hole of `text` (a script with its interpolations as [`HOLE`]s) may be
/// filled, in order.
pub fn analyze(text: &str) -> Vec<Verdict> {
    let mut s = Scanner {
        chars: text.chars().collect(),
        i: 0,
        verdicts: Vec::new(),
        forced: Vec::new(),
        integer: integer_attributes(text),
        pending: Vec::new(),
    };
    s.code(Until::End);
    // Holes past a point the scanner stopped at (an unbalanced `)`) are refused.
    while s.i < s.chars.len() {
        if s.chars[s.i] == HOLE {
            s.hole_refused(Refusal::Parameter);
        }
        s.i += 1;
    }
    s.verdicts
        .into_iter()
        .map(|v| v.unwrap_or(Err(Refusal::Parameter)))
        .collect()
}

impl Scanner {
    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    fn starts(&self, s: &str) -> bool {
        s.chars().enumerate().all(|(k, c)| self.peek(k) == Some(c))
    }

    /// A new hole: its index, with the refusal of an enclosing construct if any.
    fn new_hole(&mut self) -> usize {
        let idx = self.verdicts.len();
        self.verdicts.push(self.forced.first().map(|r| Err(*r)));
        idx
    }

    fn hole_refused(&mut self, r: Refusal) -> usize {
        let idx = self.new_hole();
        if self.verdicts[idx].is_none() {
            self.verdicts[idx] = Some(Err(r));
        }
        idx
    }

    fn set(&mut self, idx: usize, v: Verdict) {
        if self.verdicts[idx].is_none() {
            self.verdicts[idx] = Some(v);
        }
    }

    /// Refuse every hole from `from` on (those nested in a word whose role refuses them).
    fn refuse_from(&mut self, from: usize, r: Refusal) {
        for v in &mut self.verdicts[from..] {
            if !matches!(v, Some(Err(_))) {
                *v = Some(Err(r));
            }
        }
    }

    /// The character before the current one, if not escaped itself.
    fn after(&self, c: char) -> bool {
        if self.i == 0 || self.chars[self.i - 1] != c {
            return false;
        }
        if c != '\\' {
            return true;
        }
        // An odd run of backslashes: the last one escapes what follows.
        let run = self.chars[..self.i]
            .iter()
            .rev()
            .take_while(|&&b| b == '\\')
            .count();
        run % 2 == 1
    }

    /// A hole met while reading a word (bare or inside double quotes).
    fn word_hole(&mut self, w: &mut Word, quoted: bool) {
        let refusal = if self.after('\\') {
            Some(Refusal::AfterBackslash)
        } else if self.after('$') {
            Some(Refusal::AfterDollar)
        } else {
            None
        };
        let idx = match refusal {
            Some(r) => self.hole_refused(r),
            None => self.new_hole(),
        };
        w.first_hole.get_or_insert(idx);
        w.holes.push((idx, quoted));
        w.dynamic();
        w.raw.push(HOLE);
        self.i += 1;
    }

    /// Code until `until`; returns at its terminator (consumed) or the end.
    fn code(&mut self, until: Until) {
        let mut cmd = Command::new();
        let mut cases: Vec<()> = Vec::new();
        let mut w = Word::new();
        loop {
            let Some(c) = self.peek(0) else {
                self.end_word(&mut w, &mut cmd, &mut cases);
                return;
            };
            match c {
                ' ' | '\t' => {
                    if self.end_word(&mut w, &mut cmd, &mut cases) && until == Until::DoubleBracket
                    {
                        return;
                    }
                    self.i += 1;
                }
                '\n' => {
                    if self.end_word(&mut w, &mut cmd, &mut cases) && until == Until::DoubleBracket
                    {
                        return;
                    }
                    self.i += 1;
                    self.heredoc_bodies();
                    if until != Until::DoubleBracket
                        && !matches!(cmd.pos, Pos::CasePattern | Pos::CaseIn | Pos::ForIn)
                    {
                        cmd = Command::new();
                    }
                }
                '#' if !w.started => {
                    self.forced.push(Refusal::Comment);
                    while let Some(c) = self.peek(0) {
                        if c == '\n' {
                            break;
                        }
                        if c == HOLE {
                            self.new_hole();
                        }
                        self.i += 1;
                    }
                    self.forced.pop();
                }
                '\\' => {
                    if self.peek(1) == Some('\n') {
                        self.i += 2;
                    } else {
                        w.push_raw('\\');
                        self.i += 1;
                        if let Some(n) = self.peek(0) {
                            if n == HOLE {
                                // Escaped: handled as a hole right after a backslash.
                                self.word_hole(&mut w, false);
                            } else {
                                w.push_literal(n);
                                self.i += 1;
                            }
                        }
                    }
                }
                '\'' => {
                    w.push_raw('\'');
                    self.i += 1;
                    self.single_quoted(&mut w, Refusal::SingleQuotes, false);
                }
                '"' => {
                    w.push_raw('"');
                    self.i += 1;
                    self.double_quoted(&mut w);
                }
                '`' => {
                    self.i += 1;
                    let before = self.verdicts.len();
                    self.backquoted();
                    w.nested_from(before, self.verdicts.len());
                }
                '$' => self.dollar(&mut w, false),
                HOLE => self.word_hole(&mut w, false),
                '&' if self.peek(1) == Some('>') => {
                    // `&>file`: a redirection, not a separator.
                    if self.end_word(&mut w, &mut cmd, &mut cases) && until == Until::DoubleBracket
                    {
                        return;
                    }
                    self.i += 2;
                    if self.peek(0) == Some('>') {
                        self.i += 1;
                    }
                    cmd.redirect = true;
                }
                ';' | '&' | '|' => {
                    let ended = self.end_word(&mut w, &mut cmd, &mut cases);
                    if ended && until == Until::DoubleBracket {
                        return;
                    }
                    let two = self.peek(1);
                    let case_end = c == ';' && (two == Some(';') || two == Some('&'));
                    let alternative = c == '|' && two != Some('|') && two != Some('&');
                    self.i += 1;
                    while matches!(self.peek(0), Some(';' | '&' | '|')) {
                        self.i += 1;
                    }
                    if until == Until::DoubleBracket {
                        continue;
                    }
                    if alternative && cmd.pos == Pos::CasePattern {
                        // `a|b)`: another pattern.
                        continue;
                    }
                    let in_case = !cases.is_empty();
                    cmd = Command::new();
                    if case_end && in_case {
                        cmd.pos = Pos::CasePattern;
                    }
                }
                '(' => {
                    if w.started {
                        // `name()`: a function; else an extended glob `@(…)`.
                        let mut k = 1;
                        while matches!(self.peek(k), Some(' ' | '\t')) {
                            k += 1;
                        }
                        if self.peek(k) == Some(')') && cmd.pos == Pos::Start {
                            if let Some(first) = w.first_hole {
                                self.refuse_from(first, Refusal::Name);
                            }
                            w = Word::new();
                            self.i += k + 1;
                            cmd = Command::new();
                            continue;
                        }
                        self.i += 1;
                        self.forced.push(Refusal::Pattern);
                        let before = self.verdicts.len();
                        self.code(Until::Paren);
                        w.nested_from(before, self.verdicts.len());
                        self.forced.pop();
                        continue;
                    }
                    if cmd.pos == Pos::CasePattern {
                        // The optional `(` before a pattern.
                        self.i += 1;
                        continue;
                    }
                    if cmd.pos == Pos::Start && self.peek(1) == Some('(') {
                        self.i += 2;
                        self.arithmetic("))");
                        cmd.pos = Pos::Arg;
                        continue;
                    }
                    if cmd.pos == Pos::ForIn && self.peek(1) == Some('(') {
                        self.i += 2;
                        self.arithmetic("))");
                        continue;
                    }
                    self.i += 1;
                    self.code(Until::Paren);
                    cmd.pos = Pos::Arg;
                }
                ')' => {
                    let ended = self.end_word(&mut w, &mut cmd, &mut cases);
                    if ended && until == Until::DoubleBracket {
                        return;
                    }
                    self.i += 1;
                    if cmd.pos == Pos::CasePattern {
                        cmd = Command::new();
                        continue;
                    }
                    if until == Until::Paren {
                        return;
                    }
                    if until == Until::End {
                        // An unbalanced `)`: stop; the rest is refused.
                        self.i -= 1;
                        return;
                    }
                }
                '<' | '>' => {
                    if self.peek(1) == Some('(') {
                        // Process substitution: a word, its command nested.
                        self.i += 2;
                        let before = self.verdicts.len();
                        self.code(Until::Paren);
                        w.nested_from(before, self.verdicts.len());
                        continue;
                    }
                    if !w.raw.is_empty() && w.raw.chars().all(|c| c.is_ascii_digit()) {
                        // `2>`: the descriptor belongs to the redirection.
                        w = Word::new();
                    } else {
                        let ended = self.end_word(&mut w, &mut cmd, &mut cases);
                        if ended && until == Until::DoubleBracket {
                            return;
                        }
                    }
                    let heredoc = self.starts("<<") && !self.starts("<<<");
                    let strip = self.starts("<<-");
                    self.i += 1;
                    while matches!(self.peek(0), Some('<' | '>' | '&' | '|')) {
                        self.i += 1;
                    }
                    if heredoc && self.peek(0) == Some('-') {
                        self.i += 1;
                    }
                    cmd.redirect = true;
                    if heredoc {
                        // The delimiter: read here, its body after the next newline.
                        while matches!(self.peek(0), Some(' ' | '\t')) {
                            self.i += 1;
                        }
                        let mut delim = String::new();
                        while let Some(d) = self.peek(0) {
                            if " \t\n;&|<>()".contains(d) {
                                break;
                            }
                            if d == HOLE {
                                self.hole_refused(Refusal::HereDoc);
                            } else if !"'\"\\".contains(d) {
                                delim.push(d);
                            }
                            self.i += 1;
                        }
                        self.pending.push((delim, strip));
                        cmd.redirect = false;
                    }
                }
                _ => {
                    w.push_literal(c);
                    self.i += 1;
                }
            }
        }
    }

    /// Here-document bodies pending at a newline: skipped, their holes refused.
    fn heredoc_bodies(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for (delim, strip) in pending {
            loop {
                let start = self.i;
                while let Some(c) = self.peek(0) {
                    if c == '\n' {
                        break;
                    }
                    self.i += 1;
                }
                let line: String = self.chars[start..self.i].iter().collect();
                for c in line.chars() {
                    if c == HOLE {
                        self.hole_refused(Refusal::HereDoc);
                    }
                }
                let done = if strip {
                    line.trim_start_matches('\t') == delim
                } else {
                    line == delim
                };
                if self.peek(0).is_none() {
                    return;
                }
                self.i += 1;
                if done {
                    break;
                }
            }
        }
    }

    /// The end of a word (at whitespace or an operator): decide its holes by its role.
    /// True when the word was `]]`.
    fn end_word(&mut self, w: &mut Word, cmd: &mut Command, cases: &mut Vec<()>) -> bool {
        if !w.started {
            return false;
        }
        let word = std::mem::replace(w, Word::new());
        let literal = word.literal.clone();
        let lit = literal.as_deref();
        let first = word.first_hole;
        // Each direct hole: its place, unless the role refuses it.
        let place = |quoted: bool, p: Place| if quoted { Place::Quoted } else { p };
        let decide = |s: &mut Self, role: Result<Place, Refusal>| match role {
            Ok(p) => {
                for &(idx, quoted) in &word.holes {
                    s.set(idx, Ok(place(quoted, p)));
                }
            }
            Err(r) => {
                if let Some(f) = first {
                    s.refuse_from(f, r);
                }
            }
        };
        if lit == Some("]]") && !cmd.redirect {
            decide(self, Ok(Place::Arg));
            return true;
        }
        if cmd.redirect {
            cmd.redirect = false;
            decide(self, Ok(Place::OneWord));
            cmd.prev_word = lit.map(str::to_string);
            return false;
        }
        match cmd.pos {
            Pos::Start => {
                let reserved = matches!(
                    lit,
                    Some(
                        "if" | "then"
                            | "elif"
                            | "else"
                            | "fi"
                            | "while"
                            | "until"
                            | "do"
                            | "done"
                            | "!"
                            | "{"
                            | "}"
                            | "time"
                            | "esac"
                    )
                );
                if reserved {
                    if lit == Some("esac") {
                        cases.pop();
                    }
                    return false;
                }
                match lit {
                    Some("case") => {
                        cmd.pos = Pos::CaseWord;
                        return false;
                    }
                    Some("for" | "select") => {
                        cmd.pos = Pos::Name;
                        return false;
                    }
                    Some("function") => {
                        cmd.pos = Pos::FuncName;
                        return false;
                    }
                    Some("[[") => {
                        self.forced.push(Refusal::DoubleBracket);
                        self.code(Until::DoubleBracket);
                        self.forced.pop();
                        cmd.pos = Pos::Arg;
                        return false;
                    }
                    _ => {}
                }
                // An assignment `NAME=value` or `NAME[sub]=value`: more may follow.
                if let Some(eq) = word.raw.find('=') {
                    let name = &word.raw[..eq].trim_end_matches('+');
                    let array = name
                        .find('[')
                        .is_some_and(|b| is_name(&name[..b]) && name.ends_with(']'));
                    if is_name(name) || array {
                        let eq_char = word.raw[..eq].chars().count();
                        // The raw text holds one HOLE per direct hole, in order.
                        let at: Vec<usize> = word
                            .raw
                            .chars()
                            .enumerate()
                            .filter(|(_, c)| *c == HOLE)
                            .map(|(k, _)| k)
                            .collect();
                        for (&(idx, quoted), &at) in word.holes.iter().zip(&at) {
                            let v = if at < eq_char {
                                Err(Refusal::Subscript)
                            } else if self.integer {
                                Err(Refusal::IntegerAttribute)
                            } else {
                                Ok(place(quoted, Place::OneWord))
                            };
                            self.set(idx, v);
                        }
                        if self.integer
                            && let Some(f) = first
                        {
                            self.refuse_from(f, Refusal::IntegerAttribute);
                        }
                        return false;
                    }
                }
                if word
                    .raw
                    .starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && word.raw.contains('[')
                    && let Some(f) = first
                {
                    // `a[…]` that may be an assignment bash reads further on.
                    let name_end = word.raw.find('[').unwrap_or(0);
                    if is_name(&word.raw[..name_end]) {
                        self.refuse_from(f, Refusal::Subscript);
                        cmd.pos = Pos::Arg;
                        return false;
                    }
                }
                decide(self, Ok(Place::Command));
                cmd.pos = Pos::Arg;
                cmd.args = match lit {
                    None => Args::Refused(Refusal::DynamicCommand),
                    Some(name) => classify(name),
                };
            }
            Pos::Arg => {
                let role = match cmd.args {
                    Args::Data => {
                        // `find … -exec sh -c …`, `docker run … sh -c …`: a shell
                        // named among the arguments may get a command string next.
                        if let Some(l) = lit
                            && SHELLS.contains(&l.rsplit('/').next().unwrap_or(l))
                        {
                            cmd.args = Args::Shell {
                                c: false,
                                optarg: false,
                            };
                        }
                        Ok(Place::Arg)
                    }
                    Args::Refused(r) => Err(r),
                    Args::Assignments => match word.raw.find('=') {
                        Some(eq) if is_name(&word.raw[..eq]) => {
                            if self.integer {
                                Err(Refusal::IntegerAttribute)
                            } else {
                                // Holes must all be after the `=`.
                                let before = word.raw[..eq].contains(HOLE);
                                if before {
                                    Err(Refusal::Evaluates)
                                } else {
                                    Ok(Place::OneWord)
                                }
                            }
                        }
                        _ if lit.is_some_and(|l| l.starts_with('-')) => Ok(Place::Arg),
                        _ => Err(Refusal::Evaluates),
                    },
                    Args::Wrapper => match lit {
                        // Its options, their values and `NAME=value`: which word is the
                        // command is not always known, so every later word is looked at.
                        Some(l) => match classify(l) {
                            Args::Data => Ok(Place::Arg),
                            other => {
                                cmd.args = other;
                                Ok(Place::Command)
                            }
                        },
                        None => {
                            let raw = word.raw.as_str();
                            let assignment = raw.find('=').is_some_and(|eq| is_name(&raw[..eq]));
                            if raw.starts_with('-') || assignment {
                                Ok(Place::Arg)
                            } else {
                                // Maybe the command: what follows cannot be judged.
                                cmd.args = Args::Refused(Refusal::DynamicCommand);
                                Ok(Place::Command)
                            }
                        }
                    },
                    Args::Shell { c, optarg: true } => {
                        cmd.args = Args::Shell { c, optarg: false };
                        Ok(Place::Arg)
                    }
                    Args::Shell { c, .. } => match lit {
                        Some(l) if (l.starts_with('-') || l.starts_with('+')) && l != "--" => {
                            let short = !l.starts_with("--");
                            let c = c || (short && l.starts_with('-') && l[1..].contains('c'));
                            let optarg = matches!(l, "-o" | "+o" | "-O" | "+O")
                                || matches!(l, "--rcfile" | "--init-file");
                            cmd.args = Args::Shell { c, optarg };
                            Ok(Place::Arg)
                        }
                        None if word.raw.starts_with('-') => {
                            // An option decided at run time may be `-c`.
                            cmd.args = Args::Shell {
                                c: true,
                                optarg: false,
                            };
                            Err(Refusal::ShellCommand)
                        }
                        _ if c => {
                            // The command string: what follows are its parameters.
                            cmd.args = Args::Data;
                            Err(Refusal::ShellCommand)
                        }
                        _ => {
                            cmd.args = Args::Data;
                            Ok(Place::Arg)
                        }
                    },
                    Args::Printf { format_seen } => {
                        let here = word.raw.as_str();
                        let option = lit.is_some_and(|l| l.starts_with('-') && l != "--");
                        if lit != Some("--") && !option {
                            cmd.args = Args::Printf { format_seen: true };
                        }
                        if !format_seen && first.is_some()
                            || cmd.prev_word.as_deref() == Some("-v")
                            || here.starts_with("-v")
                        {
                            Err(Refusal::Evaluates)
                        } else {
                            Ok(Place::Arg)
                        }
                    }
                    Args::Test => {
                        let after_name_op = matches!(cmd.prev_word.as_deref(), Some("-v" | "-R"));
                        if after_name_op || cmd.prev_dynamic {
                            Err(Refusal::Evaluates)
                        } else {
                            Ok(Place::OneWord)
                        }
                    }
                };
                decide(self, role);
            }
            Pos::CaseWord => {
                decide(self, Ok(Place::OneWord));
                cmd.pos = Pos::CaseIn;
            }
            Pos::CaseIn => {
                if lit == Some("in") {
                    cases.push(());
                    cmd.pos = Pos::CasePattern;
                } else {
                    decide(self, Err(Refusal::CasePattern));
                }
            }
            Pos::CasePattern => {
                if lit == Some("esac") {
                    cases.pop();
                    cmd.pos = Pos::Start;
                } else {
                    decide(self, Err(Refusal::CasePattern));
                }
            }
            Pos::Name => {
                decide(self, Err(Refusal::Name));
                cmd.pos = Pos::ForIn;
            }
            Pos::FuncName => {
                decide(self, Err(Refusal::Name));
                cmd.pos = Pos::Start;
            }
            Pos::ForIn => match lit {
                Some("in") => cmd.pos = Pos::Arg,
                Some("do") => cmd.pos = Pos::Start,
                _ => {
                    decide(self, Err(Refusal::Name));
                }
            },
        }
        cmd.prev_word = lit.map(str::to_string);
        cmd.prev_dynamic = lit.is_none();
        false
    }

    /// After `'` (or `$'`): to the closing quote; holes inside are refused.
    fn single_quoted(&mut self, w: &mut Word, r: Refusal, escapes: bool) {
        while let Some(c) = self.peek(0) {
            self.i += 1;
            match c {
                '\'' => {
                    w.push_raw('\'');
                    return;
                }
                '\\' if escapes => {
                    w.dynamic();
                    self.i += 1;
                }
                HOLE => {
                    let idx = self.hole_refused(r);
                    w.first_hole.get_or_insert(idx);
                    w.dynamic();
                }
                c => w.push_literal(c),
            }
        }
    }

    /// After `"`: to the closing quote.
    fn double_quoted(&mut self, w: &mut Word) {
        w.started = true;
        while let Some(c) = self.peek(0) {
            match c {
                '"' => {
                    w.push_raw('"');
                    self.i += 1;
                    return;
                }
                '\\' => {
                    self.i += 1;
                    match self.peek(0) {
                        Some(HOLE) => self.word_hole(w, true),
                        Some(n) => {
                            w.push_literal(n);
                            self.i += 1;
                        }
                        None => {}
                    }
                }
                '`' => {
                    self.i += 1;
                    let before = self.verdicts.len();
                    self.backquoted();
                    w.nested_from(before, self.verdicts.len());
                }
                '$' => self.dollar(w, true),
                HOLE => self.word_hole(w, true),
                c => {
                    w.push_literal(c);
                    self.i += 1;
                }
            }
        }
    }

    /// At `$`: an expansion, or a plain `$`. Inside double quotes `$'` and `$"` are
    /// not quotes.
    fn dollar(&mut self, w: &mut Word, in_dq: bool) {
        let before = self.verdicts.len();
        match self.peek(1) {
            Some('(') if self.peek(2) == Some('(') => {
                self.i += 3;
                self.arithmetic("))");
            }
            Some('(') => {
                self.i += 2;
                self.code(Until::Paren);
            }
            Some('[') => {
                self.i += 2;
                self.arithmetic("]");
            }
            Some('{') => {
                self.i += 2;
                self.parameter();
            }
            Some('\'') if !in_dq => {
                self.i += 2;
                self.single_quoted(w, Refusal::AnsiQuotes, true);
            }
            Some('"') if !in_dq => {
                self.i += 2;
                self.double_quoted(w);
            }
            Some(c) if c.is_ascii_alphanumeric() || "_@*#?$!-".contains(c) => {
                self.i += 2;
                if c.is_ascii_alphabetic() || c == '_' {
                    while self
                        .peek(0)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        self.i += 1;
                    }
                }
            }
            _ => {
                // A lone `$`: literal. A hole right after it is refused there.
                w.push_literal('$');
                self.i += 1;
                return;
            }
        }
        w.nested_from(before, self.verdicts.len());
        w.raw.push('$');
    }

    /// After `$((`, `((` or `$[`: to `close`; every hole inside is refused.
    fn arithmetic(&mut self, close: &str) {
        self.forced.push(Refusal::Arithmetic);
        let mut depth = 0usize;
        while let Some(c) = self.peek(0) {
            if depth == 0 && self.starts(close) {
                self.i += close.len();
                break;
            }
            match c {
                '(' => {
                    depth += 1;
                    self.i += 1;
                }
                ')' => {
                    depth = depth.saturating_sub(1);
                    self.i += 1;
                }
                _ => self.nested_char(),
            }
        }
        self.forced.pop();
    }

    /// After `${`: to its `}`; every hole inside is refused.
    fn parameter(&mut self) {
        self.forced.push(Refusal::Parameter);
        while let Some(c) = self.peek(0) {
            if c == '}' {
                self.i += 1;
                break;
            }
            self.nested_char();
        }
        self.forced.pop();
    }

    /// One element inside `${…}` or arithmetic: quotes and expansions nest.
    fn nested_char(&mut self) {
        let mut scratch = Word::new();
        match self.peek(0) {
            Some('\'') => {
                self.i += 1;
                self.single_quoted(&mut scratch, Refusal::SingleQuotes, false);
            }
            Some('"') => {
                self.i += 1;
                self.double_quoted(&mut scratch);
            }
            Some('`') => {
                self.i += 1;
                self.backquoted();
            }
            Some('$') => self.dollar(&mut scratch, false),
            Some('\\') => self.i += 2,
            Some(HOLE) => {
                self.new_hole();
                self.i += 1;
            }
            Some(_) => self.i += 1,
            None => {}
        }
    }

    /// After a backquote: to the next unescaped one; every hole inside is refused.
    fn backquoted(&mut self) {
        self.forced.push(Refusal::Backquotes);
        while let Some(c) = self.peek(0) {
            self.i += 1;
            match c {
                '`' => break,
                '\\' => self.i += 1,
                HOLE => {
                    self.new_hole();
                }
                _ => {}
            }
        }
        self.forced.pop();
    }
}

/// What a command named `name` allows in its arguments.
fn classify(name: &str) -> Args {
    let base = name.rsplit('/').next().unwrap_or(name);
    let path = name.contains('/');
    if !path && base == "printf" {
        return Args::Printf { format_seen: false };
    }
    if !path && matches!(base, "test" | "[") {
        return Args::Test;
    }
    if !path && ASSIGNING.contains(&base) {
        return Args::Assignments;
    }
    if WRAPPERS.contains(&base) {
        return Args::Wrapper;
    }
    if SHELLS.contains(&base) {
        return Args::Shell {
            c: false,
            optarg: false,
        };
    }
    if !path && BUILTINS.contains(&base) && !DATA_BUILTINS.contains(&base) {
        return Args::Refused(Refusal::Evaluates);
    }
    Args::Data
}

/// The interpolations of a script template, for [`analyze`]: the template's text with
/// each `{{ … }}` a [`HOLE`] (an expression ending in `| safe` is the author's own shell
/// text and is left out, as are `{% … %}` tags and `{# … #}` comments), and the byte
/// offset in the template of each hole.
pub fn holes_of_template(text: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(text.len());
    let mut offsets = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let close = if rest.starts_with("{{") {
            Some("}}")
        } else if rest.starts_with("{%") {
            Some("%}")
        } else if rest.starts_with("{#") {
            Some("#}")
        } else {
            None
        };
        match close {
            Some(close) => {
                let closed = super::tag_close(rest, close);
                let end = closed.map_or(rest.len(), |c| c + close.len());
                if close == "}}" {
                    // Up to its `}}`, or all the rest when it never closes (a template
                    // that does not compile: reported where it is compiled).
                    let expr = rest[2..closed.unwrap_or(rest.len())]
                        .trim_matches(['-', '+', ' ', '\n', '\t']);
                    let explicit = expr.ends_with("| safe") || expr.ends_with("|safe");
                    if !explicit {
                        offsets.push(i);
                        out.push(HOLE);
                    }
                }
                i += end;
            }
            None => {
                let c = rest.chars().next().unwrap_or(' ');
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    (out, offsets)
}

/// Template tags a script may use: control flow and `set` of an expression. Others
/// (`macro`, `call`, `filter`, `autoescape`, `raw`, a block `set`, `include`) produce
/// text the quoting never sees, or turn it off.
pub fn tag_refused(tag: &str) -> bool {
    let inner = tag
        .trim_start_matches("{%")
        .trim_end_matches("%}")
        .trim_matches(['-', '+', ' ', '\n', '\t']);
    let word = inner.split_whitespace().next().unwrap_or("");
    match word {
        "if" | "elif" | "else" | "endif" | "for" | "endfor" | "break" | "continue" | "with"
        | "endwith" => false,
        // `{% set x = … %}` only: a block `{% set x %}…{% endset %}` captures raw text.
        "set" => !inner.contains('='),
        _ => true,
    }
}

/// Double-quote-context text: `\`, `"`, `$` and backquote escaped.
pub fn double_quote_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether a `script:` of this shell can hold interpolations (the quoting is POSIX
/// `sh`'s; the analysis knows bash's additions).
pub fn quotable_shell(shell: &str) -> bool {
    let base = shell.rsplit('/').next().unwrap_or(shell);
    matches!(base, "sh" | "bash" | "dash" | "ash")
}

/// In an argv, the index of the element a shell runs as code (`[sh, -c, CODE, …]`,
/// also after wrappers such as `env` or `nohup`), if any.
pub fn argv_command_string(argv: &[&str]) -> Option<usize> {
    let shell = argv.iter().position(|a| {
        let base = a.rsplit('/').next().unwrap_or(a);
        SHELLS.contains(&base)
    })?;
    let mut c = false;
    let mut optarg = false;
    for (k, a) in argv.iter().enumerate().skip(shell + 1) {
        if optarg {
            optarg = false;
            continue;
        }
        if a.starts_with('-') && *a != "--" && !a.starts_with("--") {
            c |= a[1..].contains('c');
            optarg = matches!(*a, "-o" | "-O");
            continue;
        }
        if a.starts_with('+') || a.starts_with("--") {
            optarg = matches!(*a, "+o" | "+O" | "--rcfile" | "--init-file");
            continue;
        }
        return c.then_some(k);
    }
    None
}

#[cfg(test)]
mod tests;
