//! YAML text → `serde_json::Value`, plus a JSON-pointer → `line:col` index.
//!
//! This module owns turning one YAML document into the JSON data model the validators work on,
//! and remembering where every key and value came from so any later error can point at
//! `file:line:col`. It walks `granit_parser` events directly instead of deserializing through
//! serde: one pass builds the value and the index together, every node keeps the exact span the
//! parser saw, and scalar resolution (YAML 1.2 core schema with strict booleans), tags, duplicate
//! keys, aliases and resource limits are all decided here, in one place.
//!
//! The walk keeps an explicit stack of open collections instead of recursing, so hostile input
//! cannot overflow the stack; depth and alias expansion are bounded by [`MAX_DEPTH`] and
//! [`MAX_ALIAS_NODES`].

mod index;
mod scalar;
#[cfg(test)]
mod tests;

use index::Entry;
pub use index::Index;
use scalar::{check_collection_tag, resolve};

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use serde_json::{Map, Value};
use serde_saphyr::granit_parser::{
    ErrorKind, Event, Marker, Options, Parser, ScalarStyle as ParserStyle, ScanError, Span,
    StructureStyle,
};

/// Deepest nesting of collections accepted, counting collections brought in by aliases.
pub const MAX_DEPTH: usize = 256;
/// Most nodes that aliases may add to a document, overall (bounds "billion laughs").
pub const MAX_ALIAS_NODES: usize = 100_000;
/// Most bytes of text (scalars and keys) that aliases may add to a document, overall:
/// one large string aliased many times is bounded by what it expands to, not only by
/// the number of aliases.
pub const MAX_ALIAS_BYTES: usize = 16 << 20;

/// 1-based line and column (column counted in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn at(marker: &Marker) -> Pos {
        Pos {
            line: marker.line().max(1),
            col: marker.col() + 1,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// How a scalar was written in the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalarStyle {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    /// `|` block.
    Literal,
    /// `>` block.
    Folded,
}

impl ScalarStyle {
    fn from_parser(style: ParserStyle) -> ScalarStyle {
        match style {
            ParserStyle::SingleQuoted => ScalarStyle::SingleQuoted,
            ParserStyle::DoubleQuoted => ScalarStyle::DoubleQuoted,
            ParserStyle::Literal => ScalarStyle::Literal,
            ParserStyle::Folded => ScalarStyle::Folded,
            _ => ScalarStyle::Plain,
        }
    }
}

/// One loaded YAML document.
#[derive(Debug)]
pub struct Doc {
    pub value: Value,
    pub index: Index,
}

/// A document that could not be loaded, with where.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub message: String,
    pub pos: Pos,
}

impl YamlError {
    fn new(message: impl Into<String>, pos: Pos) -> YamlError {
        YamlError {
            message: message.into(),
            pos,
        }
    }
}

/// Parse exactly one YAML document (empty input → error "the file is empty"; more than one
/// document → error at the second document's start).
pub fn load(text: &str) -> Result<Doc, YamlError> {
    Loader::new(text).run()
}

/// A node anchored with `&name`, kept for later aliases.
struct Anchored {
    value: Arc<Value>,
    /// Nodes in the value (every scalar and collection), charged on each alias.
    nodes: usize,
    /// Bytes of text in the value, charged on each alias.
    bytes: usize,
    /// Collection levels in the value (0 for a scalar).
    height: usize,
    /// The source text when the node is a scalar, so an alias can be a mapping key.
    key: Option<String>,
}

enum Container {
    Seq(Vec<Value>),
    /// `key` is the pending key (text and position) whose value is being read.
    Map {
        map: Map<String, Value>,
        key: Option<(String, Pos)>,
    },
}

struct Frame {
    container: Container,
    /// Length of the pointer before this collection's own segment was pushed.
    path_len: usize,
    anchor: usize,
    nodes: usize,
    bytes: usize,
    height: usize,
    /// For a flow collection, its opening bracket and where it is (for "unclosed `[`").
    flow: Option<(char, Pos)>,
}

struct Loader<'a> {
    text: &'a str,
    entries: HashMap<String, Entry>,
    /// Pointer of the node being read, grown and truncated as the walk goes in and out.
    path: String,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    alias_nodes: usize,
    alias_bytes: usize,
    root: Option<Value>,
}

impl<'a> Loader<'a> {
    fn new(text: &'a str) -> Loader<'a> {
        Loader {
            text,
            entries: HashMap::new(),
            path: String::new(),
            stack: Vec::new(),
            anchors: HashMap::new(),
            alias_nodes: 0,
            alias_bytes: 0,
            root: None,
        }
    }

    fn run(mut self) -> Result<Doc, YamlError> {
        // Our own depth check (which also counts aliases) should be the one users see.
        let mut options = Options::default();
        options.flow_nesting_limit = MAX_DEPTH + 8;
        options.block_nesting_limit = MAX_DEPTH + 8;
        let parser = Parser::new_from_str_with_options(self.text, options);
        for next in parser {
            let (event, span) = next.map_err(|e| self.scan_error(&e))?;
            match event {
                Event::DocumentStart(..) if self.root.is_some() => {
                    return Err(YamlError::new(
                        "expected one YAML document, found a second one",
                        Pos::at(&span.start),
                    ));
                }
                Event::StreamEnd => break,
                Event::Scalar(..)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
                | Event::Alias(_) => self.node(event, &span)?,
                Event::SequenceEnd | Event::MappingEnd => self.end()?,
                // Stream and document markers carry nothing; comments and anchor metadata
                // are presentation only.
                _ => {}
            }
        }
        let value = self
            .root
            .take()
            .ok_or_else(|| YamlError::new("the file is empty", Pos { line: 1, col: 1 }))?;
        Ok(Doc {
            value,
            index: Index {
                entries: self.entries,
            },
        })
    }

    fn scan_error(&self, error: &ScanError) -> YamlError {
        let marker = error.marker();
        let mut pos = Pos::at(marker);
        if let Some(unclosed) = self.unclosed_flow(pos, &error.kind().to_string()) {
            return unclosed;
        }
        if matches!(
            error.kind(),
            ErrorKind::TabInBlockIndentation
                | ErrorKind::TabInIndentation
                | ErrorKind::TabNotAllowed
                | ErrorKind::TabAtBlockScalarStart
                | ErrorKind::TabInPlainScalar
        ) {
            // The parser reports the token after the tab; point at the tab itself.
            let line = crate::diag::source_lines(self.text)
                .nth(pos.line - 1)
                .unwrap_or("");
            let upto: Vec<char> = line.chars().take(pos.col).collect();
            if let Some(i) = upto.iter().rposition(|&c| c == '\t') {
                pos.col = i + 1;
            }
            return YamlError::new(
                format!(
                    "{}: indent with spaces",
                    readable(&error.kind().to_string())
                ),
                pos,
            );
        }
        if matches!(error.kind(), ErrorKind::UnknownAnchor)
            && let Some(name) = marker
                .byte_offset()
                .and_then(|at| self.text.get(at..))
                .map(alias_name)
                .filter(|name| !name.is_empty())
        {
            return YamlError::new(format!("unknown anchor `{name}`"), pos);
        }
        if let ErrorKind::UnexpectedCharacter { character } = error.kind() {
            let shown: String = character.escape_debug().collect();
            return YamlError::new(format!("unexpected character `{shown}`"), pos);
        }
        YamlError::new(readable(&error.kind().to_string()), pos)
    }

    /// An error inside a flow collection (`[` or `{`) opened on an earlier line, on a line
    /// indented no deeper than the line of the opening bracket, means the bracket was never
    /// closed: a flow collection's continuation lines must be indented more. Point at the
    /// bracket, not at wherever the parser gave up.
    fn unclosed_flow(&self, at: Pos, message: &str) -> Option<YamlError> {
        let (bracket, open) = self.stack.iter().find_map(|f| f.flow)?;
        let indent = |line: usize| -> usize {
            let text = crate::diag::source_lines(self.text)
                .nth(line.saturating_sub(1))
                .unwrap_or("");
            text.chars().take_while(|&c| c == ' ').count()
        };
        if at.line <= open.line || indent(at.line) > indent(open.line) {
            return None;
        }
        let close = if bracket == '[' { ']' } else { '}' };
        Some(YamlError::new(
            format!(
                "unclosed `{bracket}`: expected `{close}` before line {} ({})",
                at.line,
                readable(message)
            ),
            open,
        ))
    }

    /// Is the next node a mapping key?
    fn expecting_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame {
                container: Container::Map { key: None, .. },
                ..
            })
        )
    }

    fn node(&mut self, event: Event<'_>, span: &Span) -> Result<(), YamlError> {
        if self.expecting_key() {
            return self.key(event, span);
        }
        let pos = Pos::at(&span.start);
        let parent_len = self.path.len();
        self.push_segment();
        let key_pos = match self.stack.last() {
            Some(Frame {
                container:
                    Container::Map {
                        key: Some((_, key_pos)),
                        ..
                    },
                ..
            }) => Some(*key_pos),
            _ => None,
        };
        let is_map = matches!(event, Event::MappingStart(..));
        let block_seq = matches!(event, Event::SequenceStart(StructureStyle::Block, ..));
        let flow = matches!(
            event,
            Event::SequenceStart(StructureStyle::Flow, ..)
                | Event::MappingStart(StructureStyle::Flow, ..)
        )
        .then_some((if is_map { '{' } else { '[' }, pos));
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let empty = is_empty_plain(style, span);
                let text = if empty { "" } else { text.as_ref() };
                let value = resolve(text, style, tag.as_deref(), span)?;
                let content = self.content_pos(text, style, span);
                self.record(
                    pos,
                    key_pos,
                    Some((content, ScalarStyle::from_parser(style))),
                );
                self.path.truncate(parent_len);
                if anchor != 0 {
                    self.anchor_scalar(anchor, &value, text);
                }
                self.attach(value, 1, text.len(), 0);
            }
            Event::SequenceStart(_, anchor, tag) | Event::MappingStart(_, anchor, tag) => {
                check_collection_tag(tag.as_deref(), is_map, span)?;
                if self.stack.len() >= MAX_DEPTH {
                    return Err(too_deep(pos));
                }
                let pos = if block_seq {
                    self.dash_before(span)
                } else {
                    pos
                };
                self.record(pos, key_pos, None);
                let container = if is_map {
                    Container::Map {
                        map: Map::new(),
                        key: None,
                    }
                } else {
                    Container::Seq(Vec::new())
                };
                self.stack.push(Frame {
                    container,
                    path_len: parent_len,
                    anchor,
                    nodes: 1,
                    bytes: 0,
                    height: 1,
                    flow,
                });
            }
            Event::Alias(id) => {
                let (value, nodes, bytes, height) = self.expand(id, span)?;
                self.entries.insert(
                    self.path.clone(),
                    Entry {
                        value: pos,
                        key: key_pos,
                        scalar: None,
                        alias: Some(Arc::clone(&value)),
                    },
                );
                self.path.truncate(parent_len);
                self.attach(Value::clone(&value), nodes, bytes, height);
            }
            _ => self.path.truncate(parent_len),
        }
        Ok(())
    }

    /// Read a mapping key: a scalar (or an alias of one) that becomes a string.
    fn key(&mut self, event: Event<'_>, span: &Span) -> Result<(), YamlError> {
        let pos = Pos::at(&span.start);
        let (key, plain) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let text = if is_empty_plain(style, span) {
                    ""
                } else {
                    text.as_ref()
                };
                // Resolve only to reject bad tags; the key is the text as written.
                let value = resolve(text, style, tag.as_deref(), span)?;
                if anchor != 0 {
                    self.anchor_scalar(anchor, &value, text);
                }
                (text.to_owned(), style == ParserStyle::Plain)
            }
            Event::Alias(id) => {
                let key = self.anchors.get(&id).and_then(|a| a.key.clone());
                match key {
                    Some(key) => (key, false),
                    None => {
                        return Err(YamlError::new(
                            format!(
                                "mapping keys must be scalars, `{}` is a collection",
                                self.slice(span).unwrap_or("*")
                            ),
                            pos,
                        ));
                    }
                }
            }
            Event::SequenceStart(..) => {
                return Err(YamlError::new(
                    "mapping keys must be scalars, found a sequence",
                    pos,
                ));
            }
            _ => {
                return Err(YamlError::new(
                    "mapping keys must be scalars, found a mapping",
                    pos,
                ));
            }
        };
        if plain && key == "<<" {
            return Err(YamlError::new(
                "merge keys `<<` are not supported; write the keys out or use an alias as the whole value",
                pos,
            ));
        }
        let Some(Frame {
            container: Container::Map { map, key: pending },
            ..
        }) = self.stack.last_mut()
        else {
            return Ok(());
        };
        if map.contains_key(&key) {
            let mut pointer = self.path.clone();
            pointer.push('/');
            escape_into(&mut pointer, &key);
            let first = self.entries.get(&pointer).and_then(|e| e.key);
            let message = match first {
                Some(first) => {
                    format!(
                        "duplicate key `{key}`, first defined at line {}",
                        first.line
                    )
                }
                None => format!("duplicate key `{key}`"),
            };
            return Err(YamlError::new(message, pos));
        }
        *pending = Some((key, pos));
        Ok(())
    }

    /// Close the innermost collection and hand its value to its parent.
    fn end(&mut self) -> Result<(), YamlError> {
        let Some(frame) = self.stack.pop() else {
            return Ok(());
        };
        self.path.truncate(frame.path_len);
        let value = match frame.container {
            Container::Seq(items) => Value::Array(items),
            Container::Map { map, .. } => Value::Object(map),
        };
        if frame.anchor != 0 {
            self.anchors.insert(
                frame.anchor,
                Anchored {
                    value: Arc::new(value.clone()),
                    nodes: frame.nodes,
                    bytes: frame.bytes,
                    height: frame.height,
                    key: None,
                },
            );
        }
        self.attach(value, frame.nodes, frame.bytes, frame.height);
        Ok(())
    }

    /// The value an alias stands for, after charging it against the limits.
    fn expand(
        &mut self,
        id: usize,
        span: &Span,
    ) -> Result<(Arc<Value>, usize, usize, usize), YamlError> {
        let pos = Pos::at(&span.start);
        let Some(anchored) = self.anchors.get(&id) else {
            // The parser resolved the name, so the anchor is on a collection still open:
            // the alias would contain itself.
            return Err(YamlError::new(
                format!(
                    "alias `{}` refers to a collection that contains it",
                    self.slice(span).unwrap_or("*")
                ),
                pos,
            ));
        };
        self.alias_nodes = self.alias_nodes.saturating_add(anchored.nodes);
        if self.alias_nodes > MAX_ALIAS_NODES {
            return Err(YamlError::new(
                format!("aliases expand to more than {MAX_ALIAS_NODES} nodes"),
                pos,
            ));
        }
        self.alias_bytes = self.alias_bytes.saturating_add(anchored.bytes);
        if self.alias_bytes > MAX_ALIAS_BYTES {
            return Err(YamlError::new(
                format!(
                    "aliases expand to more than {} MiB of text",
                    MAX_ALIAS_BYTES >> 20
                ),
                pos,
            ));
        }
        if self.stack.len() + anchored.height > MAX_DEPTH {
            return Err(too_deep(pos));
        }
        Ok((
            Arc::clone(&anchored.value),
            anchored.nodes,
            anchored.bytes,
            anchored.height,
        ))
    }

    fn anchor_scalar(&mut self, anchor: usize, value: &Value, text: &str) {
        self.anchors.insert(
            anchor,
            Anchored {
                value: Arc::new(value.clone()),
                nodes: 1,
                bytes: text.len(),
                height: 0,
                key: Some(text.to_owned()),
            },
        );
    }

    fn attach(&mut self, value: Value, nodes: usize, bytes: usize, height: usize) {
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(value);
            return;
        };
        frame.nodes = frame.nodes.saturating_add(nodes);
        frame.bytes = frame.bytes.saturating_add(bytes);
        if let Container::Map {
            key: Some((k, _)), ..
        } = &frame.container
        {
            frame.bytes = frame.bytes.saturating_add(k.len());
        }
        frame.height = frame.height.max(height + 1);
        match &mut frame.container {
            Container::Seq(items) => items.push(value),
            Container::Map { map, key } => {
                if let Some((key, _)) = key.take() {
                    map.insert(key, value);
                }
            }
        }
    }

    /// Append the segment of the next child of the innermost collection to the pointer.
    fn push_segment(&mut self) {
        match self.stack.last().map(|frame| &frame.container) {
            Some(Container::Seq(items)) => {
                let _ = write!(self.path, "/{}", items.len());
            }
            Some(Container::Map {
                key: Some((key, _)),
                ..
            }) => {
                self.path.push('/');
                escape_into(&mut self.path, key);
            }
            _ => {}
        }
    }

    fn record(&mut self, value: Pos, key: Option<Pos>, scalar: Option<(Pos, ScalarStyle)>) {
        self.entries.insert(
            self.path.clone(),
            Entry {
                value,
                key,
                scalar,
                alias: None,
            },
        );
    }

    /// Where the content of a scalar starts (see [`Index::scalar`]).
    fn content_pos(&self, text: &str, style: ParserStyle, span: &Span) -> Pos {
        let start = Pos::at(&span.start);
        match style {
            ParserStyle::SingleQuoted | ParserStyle::DoubleQuoted => Pos {
                col: start.col + 1,
                ..start
            },
            ParserStyle::Literal | ParserStyle::Folded if !text.is_empty() => {
                // The parser's span starts at the first line with content; leading empty
                // lines of the block come before it.
                let blank = text.bytes().take_while(|&b| b == b'\n').count();
                Pos {
                    line: start.line.saturating_sub(blank).max(1),
                    ..start
                }
            }
            _ => start,
        }
    }

    /// A block sequence written flush with its parent key (`key:\n- item`) starts, for the
    /// parser, at its first item; point at the `-` before it as for indented sequences.
    fn dash_before(&self, span: &Span) -> Pos {
        let pos = Pos::at(&span.start);
        let Some(at) = span.start.byte_offset() else {
            return pos;
        };
        let (Some(before), Some(after)) = (self.text.get(..at), self.text.get(at..)) else {
            return pos;
        };
        // Already at a `-` indicator (a dash followed by a blank or the end).
        let mut rest = after.chars();
        if rest.next() == Some('-') && rest.next().is_none_or(char::is_whitespace) {
            return pos;
        }
        let trimmed = before.trim_end_matches(' ');
        if !trimmed.ends_with('-') {
            return pos;
        }
        // Only spaces and the dash lie between, one column each.
        let back = before.len() - trimmed.len() + 1;
        match pos.col.checked_sub(back) {
            Some(col) if col >= 1 => Pos { col, ..pos },
            _ => pos,
        }
    }

    fn slice(&self, span: &Span) -> Option<&'a str> {
        span.slice(self.text)
    }
}

fn too_deep(pos: Pos) -> YamlError {
    YamlError::new(
        format!("collections are nested more than {MAX_DEPTH} levels deep"),
        pos,
    )
}

/// The parser reports an empty plain scalar as `~`; only its empty span tells them apart.
fn is_empty_plain(style: ParserStyle, span: &Span) -> bool {
    style == ParserStyle::Plain && span.start.index() == span.end.index()
}

/// Append a key to a JSON pointer, escaped per RFC 6901.
fn escape_into(pointer: &mut String, key: &str) {
    for c in key.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

/// The name in `*name` at the start of `text`.
fn alias_name(text: &str) -> &str {
    let name = text.strip_prefix('*').unwrap_or(text);
    let end = name
        .find(|c: char| c.is_whitespace() || ",[]{}".contains(c))
        .unwrap_or(name.len());
    &name[..end]
}

/// Parser messages in our style: lowercase start, no trailing period.
fn readable(message: &str) -> String {
    let message = message.trim().trim_end_matches('.');
    let mut chars = message.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && !second.is_uppercase() => first
            .to_lowercase()
            .chain(message.chars().skip(1))
            .collect(),
        (None, _) => "invalid YAML".to_owned(),
        _ => message.to_owned(),
    }
}
