//! Scalar resolution: YAML 1.2 core schema with strict booleans, and the core tags.

use serde_json::{Number, Value};
use serde_saphyr::granit_parser::{ScalarStyle as ParserStyle, Span, Tag};

use super::{Pos, YamlError};

/// Resolve a scalar to a JSON value: YAML 1.2 core schema with strict booleans, honouring
/// the core tags.
pub(super) fn resolve(
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

pub(super) fn check_collection_tag(
    tag: Option<&Tag>,
    is_map: bool,
    span: &Span,
) -> Result<(), YamlError> {
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
