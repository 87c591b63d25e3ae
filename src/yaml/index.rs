//! The JSON-pointer → source position index of a loaded document.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::{Pos, ScalarStyle};

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) value: Pos,
    pub(super) key: Option<Pos>,
    pub(super) scalar: Option<(Pos, ScalarStyle)>,
    /// Set when this node is an alias: the value it expanded to, so pointers into the
    /// expansion resolve to the alias without indexing every copied node.
    pub(super) alias: Option<Arc<Value>>,
}

/// Source positions of a loaded document, by JSON pointer (RFC 6901).
#[derive(Debug, Default)]
pub struct Index {
    pub(super) entries: HashMap<String, Entry>,
}

impl Index {
    /// Position of the value node at a JSON pointer ("" = root, "/launch/run/0", keys escaped
    /// per RFC 6901 `~0` `~1`). Nodes inside an alias's expansion report the alias. A block
    /// mapping or sequence is at its first key or `-`; a flow one at its `{` or `[`; a quoted
    /// scalar at its opening quote; a `|`/`>` block at its first content line (not the
    /// indicator), where the parser places it.
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
