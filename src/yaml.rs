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

#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{
    ErrorKind, Event, Marker, Options, Parser, ScalarStyle as ParserStyle, ScanError, Span, Tag,
};

/// Deepest nesting of collections accepted, counting collections brought in by aliases.
pub const MAX_DEPTH: usize = 256;
/// Most nodes that aliases may add to a document, overall (bounds "billion laughs").
pub const MAX_ALIAS_NODES: usize = 100_000;

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

#[derive(Debug)]
struct Entry {
    value: Pos,
    key: Option<Pos>,
    scalar: Option<(Pos, ScalarStyle)>,
    /// Set when this node is an alias: the value it expanded to, so pointers into the
    /// expansion resolve to the alias without indexing every copied node.
    alias: Option<Arc<Value>>,
}

/// Source positions of a loaded document, by JSON pointer (RFC 6901).
#[derive(Debug, Default)]
pub struct Index {
    entries: HashMap<String, Entry>,
}

impl Index {
    /// Position of the value node at a JSON pointer ("" = root, "/launch/run/0", keys escaped
    /// per RFC 6901 `~0` `~1`). Nodes inside an alias's expansion report the alias.
    pub fn value(&self, pointer: &str) -> Option<Pos> {
        match self.entries.get(pointer) {
            Some(entry) => Some(entry.value),
            None => self.in_alias(pointer).map(|(entry, _)| entry.value),
        }
    }

    /// Position of the key of the mapping member at `pointer` (for "unknown key" errors).
    pub fn key(&self, pointer: &str) -> Option<Pos> {
        match self.entries.get(pointer) {
            Some(entry) => entry.key,
            None => {
                let (entry, rest) = self.in_alias(pointer)?;
                let (target, parent) = (entry.alias.as_ref()?, rest.rsplit_once('/')?.0);
                target
                    .pointer(parent)
                    .is_some_and(Value::is_object)
                    .then_some(entry.value)
            }
        }
    }

    /// Best position for a pointer: the value if known, else the nearest ancestor's.
    pub fn nearest(&self, pointer: &str) -> Pos {
        if let Some(pos) = self.value(pointer) {
            return pos;
        }
        let mut prefix = pointer;
        while let Some(slash) = prefix.rfind('/') {
            prefix = &prefix[..slash];
            if let Some(entry) = self.entries.get(prefix) {
                return entry.value;
            }
        }
        self.entries
            .get("")
            .map_or(Pos { line: 1, col: 1 }, |entry| entry.value)
    }

    /// For scalars written in the source (not reached through an alias): the position of the
    /// first character of the content and the style. For `|` and `>` blocks the position is the
    /// first content line at the block's indentation, so line `k` of the string is at
    /// `line + k`; for quoted scalars it is just after the opening quote.
    pub fn scalar(&self, pointer: &str) -> Option<(Pos, ScalarStyle)> {
        self.entries.get(pointer)?.scalar
    }

    /// The entry of the alias whose expansion contains `pointer`, and the rest of the pointer
    /// below that alias (starting with `/`), if the pointer exists in the expansion.
    fn in_alias<'p>(&self, pointer: &'p str) -> Option<(&Entry, &'p str)> {
        let mut prefix = pointer;
        while let Some(slash) = prefix.rfind('/') {
            prefix = &prefix[..slash];
            if let Some(entry) = self.entries.get(prefix) {
                // Aliases add no entries below themselves, so the first indexed ancestor is
                // the alias if there is one.
                let rest = &pointer[prefix.len()..];
                entry.alias.as_ref()?.pointer(rest)?;
                return Some((entry, rest));
            }
        }
        None
    }
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
    height: usize,
}

struct Loader<'a> {
    text: &'a str,
    entries: HashMap<String, Entry>,
    /// Pointer of the node being read, grown and truncated as the walk goes in and out.
    path: String,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    alias_nodes: usize,
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
        let pos = Pos::at(marker);
        if matches!(error.kind(), ErrorKind::UnknownAnchor) {
            if let Some(name) = marker
                .byte_offset()
                .and_then(|at| self.text.get(at..))
                .map(alias_name)
                .filter(|name| !name.is_empty())
            {
                return YamlError::new(format!("unknown anchor `{name}`"), pos);
            }
        }
        YamlError::new(readable(&error.kind().to_string()), pos)
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
                self.attach(value, 1, 0);
            }
            Event::SequenceStart(_, anchor, tag) | Event::MappingStart(_, anchor, tag) => {
                check_collection_tag(tag.as_deref(), is_map, span)?;
                if self.stack.len() >= MAX_DEPTH {
                    return Err(too_deep(pos));
                }
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
                    height: 1,
                });
            }
            Event::Alias(id) => {
                let (value, nodes, height) = self.expand(id, span)?;
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
                self.attach(Value::clone(&value), nodes, height);
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
                    height: frame.height,
                    key: None,
                },
            );
        }
        self.attach(value, frame.nodes, frame.height);
        Ok(())
    }

    /// The value an alias stands for, after charging it against the limits.
    fn expand(&mut self, id: usize, span: &Span) -> Result<(Arc<Value>, usize, usize), YamlError> {
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
        if self.stack.len() + anchored.height > MAX_DEPTH {
            return Err(too_deep(pos));
        }
        Ok((Arc::clone(&anchored.value), anchored.nodes, anchored.height))
    }

    fn anchor_scalar(&mut self, anchor: usize, value: &Value, text: &str) {
        self.anchors.insert(
            anchor,
            Anchored {
                value: Arc::new(value.clone()),
                nodes: 1,
                height: 0,
                key: Some(text.to_owned()),
            },
        );
    }

    fn attach(&mut self, value: Value, nodes: usize, height: usize) {
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(value);
            return;
        };
        frame.nodes = frame.nodes.saturating_add(nodes);
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

    fn slice(&self, span: &Span) -> Option<&'a str> {
        span.slice(self.text)
    }
}

/// Resolve a scalar to a JSON value: YAML 1.2 core schema with strict booleans, honouring
/// the core tags.
fn resolve(
    text: &str,
    style: ParserStyle,
    tag: Option<&Tag>,
    span: &Span,
) -> Result<Value, YamlError> {
    let pos = Pos::at(&span.start);
    let Some(tag) = tag else {
        return if style == ParserStyle::Plain {
            resolve_plain(text, pos)
        } else {
            Ok(Value::String(text.to_owned()))
        };
    };
    let invalid = |kind: &str| YamlError::new(format!("`{text}` is not a valid `!!{kind}`"), pos);
    match core_tag(tag, span)? {
        "str" => Ok(Value::String(text.to_owned())),
        "int" => match parse_int(text) {
            Some(number) => number
                .map(Value::Number)
                .ok_or_else(|| out_of_range(text, pos)),
            None => Err(invalid("int")),
        },
        "float" => {
            if matches!(
                text.trim_start_matches(['+', '-']),
                ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN"
            ) {
                return Err(YamlError::new(
                    format!("`{text}` cannot be represented in JSON"),
                    pos,
                ));
            }
            let float = parse_float(text);
            match float {
                Some(f) => Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| out_of_range(text, pos)),
                None => Err(invalid("float")),
            }
        }
        "bool" => match text {
            "true" | "True" | "TRUE" => Ok(Value::Bool(true)),
            "false" | "False" | "FALSE" => Ok(Value::Bool(false)),
            _ => Err(invalid("bool")),
        },
        "null" => match text {
            "" | "~" | "null" | "Null" | "NULL" => Ok(Value::Null),
            _ => Err(invalid("null")),
        },
        // The non-specific tag `!`: the scalar is a string.
        "!" => Ok(Value::String(text.to_owned())),
        other => Err(YamlError::new(
            format!("tag `!!{other}` cannot be used on a scalar"),
            tag_pos(span),
        )),
    }
}

fn resolve_plain(text: &str, pos: Pos) -> Result<Value, YamlError> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        _ => {}
    }
    if let Some(number) = parse_int(text) {
        return number
            .map(Value::Number)
            .ok_or_else(|| out_of_range(text, pos));
    }
    if is_float(text) {
        return match parse_float(text) {
            Some(f) => Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| out_of_range(text, pos)),
            None => Ok(Value::String(text.to_owned())),
        };
    }
    // `.inf` and `.nan` stay strings: JSON has no such numbers.
    Ok(Value::String(text.to_owned()))
}

/// Core-schema integer: `[-+]?[0-9]+`, `0o[0-7]+`, `0x[0-9a-fA-F]+`. `None` when the text is
/// not an integer, `Some(None)` when it is one that does not fit in 64 bits.
fn parse_int(text: &str) -> Option<Option<Number>> {
    let radix = |digits: &str, radix: u32| {
        (!digits.is_empty() && digits.chars().all(|c| c.is_digit(radix)))
            .then(|| u64::from_str_radix(digits, radix).ok().map(Number::from))
    };
    if let Some(hex) = text.strip_prefix("0x") {
        return radix(hex, 16);
    }
    if let Some(octal) = text.strip_prefix("0o") {
        return radix(octal, 8);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(if text.starts_with('-') {
        text.parse::<i64>().ok().map(Number::from)
    } else {
        digits.parse::<u64>().ok().map(Number::from)
    })
}

/// Core-schema float syntax: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` (which
/// also matches integers; [`parse_int`] is asked first where that matters).
fn is_float(text: &str) -> bool {
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(at) => (&s[..at], Some(&s[at + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty()),
        None => !mantissa.is_empty() && digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

fn parse_float(text: &str) -> Option<f64> {
    if !is_float(text) {
        return None;
    }
    // Rust's parser wants a digit after a leading dot's sign and before an exponent.
    let text = text.strip_prefix('+').unwrap_or(text);
    let fixed = text.replacen(".e", ".0e", 1).replacen(".E", ".0E", 1);
    fixed.parse::<f64>().ok()
}

/// The core-schema suffix of a tag (`"int"`, ...), `"!"` for the non-specific tag, or an
/// error naming any other tag.
fn core_tag<'t>(tag: &'t Tag, span: &Span) -> Result<&'t str, YamlError> {
    if tag.handle().is_empty() && tag.suffix() == "!" {
        return Ok("!");
    }
    tag.core_suffix().ok_or_else(|| {
        YamlError::new(
            format!(
                "unsupported tag `{}`; only !!str, !!int, !!float, !!bool, !!null, !!map and !!seq are allowed",
                tag.original()
            ),
            tag_pos(span),
        )
    })
}

fn check_collection_tag(tag: Option<&Tag>, is_map: bool, span: &Span) -> Result<(), YamlError> {
    let Some(tag) = tag else { return Ok(()) };
    let (wanted, kind) = if is_map {
        ("map", "mapping")
    } else {
        ("seq", "sequence")
    };
    match core_tag(tag, span)? {
        "!" => Ok(()),
        found if found == wanted => Ok(()),
        found => Err(YamlError::new(
            format!("tag `!!{found}` cannot be used on a {kind}"),
            tag_pos(span),
        )),
    }
}

fn tag_pos(span: &Span) -> Pos {
    Pos::at(span.tag_start.as_ref().unwrap_or(&span.start))
}

fn out_of_range(text: &str, pos: Pos) -> YamlError {
    YamlError::new(
        format!("number `{text}` is out of range; quote it to make it a string"),
        pos,
    )
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
