use serde_json::{Value, json};

use super::{MAX_DEPTH, Pos, ScalarStyle, YamlError, load};

fn value(text: &str) -> Value {
    match load(text) {
        Ok(doc) => doc.value,
        Err(e) => panic!("{text:?} failed at {}: {}", e.pos, e.message),
    }
}

fn error(text: &str) -> YamlError {
    match load(text) {
        Ok(doc) => panic!("{text:?} loaded as {}", doc.value),
        Err(e) => e,
    }
}

fn pos(line: usize, col: usize) -> Pos {
    Pos { line, col }
}

/// Load `key: <scalar>` and return the value of `key`.
fn scalar(text: &str) -> Value {
    value(&format!("k: {text}\n"))["k"].take()
}

#[test]
fn positions_in_flow_inside_block() {
    let doc = load("a:\n  b: [1, {c: x}]\n").unwrap();
    let index = &doc.index;
    assert_eq!(index.value(""), Some(pos(1, 1)));
    assert_eq!(index.key("/a"), Some(pos(1, 1)));
    assert_eq!(index.value("/a"), Some(pos(2, 3)));
    assert_eq!(index.key("/a/b"), Some(pos(2, 3)));
    assert_eq!(index.value("/a/b"), Some(pos(2, 6)));
    assert_eq!(index.value("/a/b/0"), Some(pos(2, 7)));
    assert_eq!(index.key("/a/b/0"), None);
    assert_eq!(index.value("/a/b/1"), Some(pos(2, 10)));
    assert_eq!(index.key("/a/b/1/c"), Some(pos(2, 11)));
    assert_eq!(index.value("/a/b/1/c"), Some(pos(2, 14)));
    assert_eq!(index.value("/a/b/2"), None);
    assert_eq!(index.value("a"), None);
}

#[test]
fn positions_in_block_sequences() {
    let text = "launch:\n  run:\n    - echo\n    - script: hi\n      when: x\n";
    let doc = load(text).unwrap();
    let index = &doc.index;
    assert_eq!(index.value("/launch/run"), Some(pos(3, 5)));
    assert_eq!(index.value("/launch/run/0"), Some(pos(3, 7)));
    assert_eq!(index.value("/launch/run/1"), Some(pos(4, 7)));
    assert_eq!(index.key("/launch/run/1/script"), Some(pos(4, 7)));
    assert_eq!(index.value("/launch/run/1/script"), Some(pos(4, 15)));
    assert_eq!(index.key("/launch/run/1/when"), Some(pos(5, 7)));
    assert_eq!(
        doc.value,
        json!({"launch": {"run": ["echo", {"script": "hi", "when": "x"}]}})
    );
}

#[test]
fn nearest_falls_back_to_ancestors() {
    let doc = load("a:\n  b: {c: 1}\n").unwrap();
    assert_eq!(doc.index.nearest("/a/b/c"), pos(2, 10));
    assert_eq!(doc.index.nearest("/a/b/missing"), pos(2, 6));
    assert_eq!(doc.index.nearest("/a/x/y/z"), pos(2, 3));
    assert_eq!(doc.index.nearest("/nope"), pos(1, 1));
    assert_eq!(doc.index.nearest("garbage"), pos(1, 1));
}

#[test]
fn columns_count_characters_and_skip_a_bom() {
    let doc = load("\u{feff}é: ü\n\"日本\": [x]\n").unwrap();
    assert_eq!(doc.index.key("/é"), Some(pos(1, 1)));
    assert_eq!(doc.index.value("/é"), Some(pos(1, 4)));
    assert_eq!(doc.index.value("/日本/0"), Some(pos(2, 8)));
}

#[test]
fn pointer_keys_are_escaped() {
    let doc = load("a/b: 1\nc~d: {e/f: 2}\n").unwrap();
    assert_eq!(doc.value, json!({"a/b": 1, "c~d": {"e/f": 2}}));
    assert_eq!(doc.index.value("/a~1b"), Some(pos(1, 6)));
    assert_eq!(doc.index.key("/c~0d/e~1f"), Some(pos(2, 7)));
    assert_eq!(doc.index.value("/c~0d/e~1f"), Some(pos(2, 12)));
}

#[test]
fn block_scalar_content_positions() {
    let text = "script: |\n  echo a\n    echo b\nfolded: >-\n   one\n   two\nlead: |\n\n  x\n";
    let doc = load(text).unwrap();
    assert_eq!(doc.value["script"], "echo a\n  echo b\n");
    assert_eq!(
        doc.index.scalar("/script"),
        Some((pos(2, 3), ScalarStyle::Literal))
    );
    assert_eq!(doc.value["folded"], "one two");
    assert_eq!(
        doc.index.scalar("/folded"),
        Some((pos(5, 4), ScalarStyle::Folded))
    );
    // Line k of the string is at line + k, even with leading empty lines.
    assert_eq!(doc.value["lead"], "\nx\n");
    assert_eq!(
        doc.index.scalar("/lead"),
        Some((pos(8, 3), ScalarStyle::Literal))
    );
}

#[test]
fn block_scalar_with_indentation_indicator() {
    let doc = load("k: |2\n    indented\n  flush\n").unwrap();
    assert_eq!(doc.value["k"], "  indented\nflush\n");
    assert_eq!(
        doc.index.scalar("/k"),
        Some((pos(2, 3), ScalarStyle::Literal))
    );
}

#[test]
fn quoted_and_plain_scalar_content_positions() {
    let doc = load("a: 'x'\nb: \"y\"\nc: z\nd:\n").unwrap();
    let index = &doc.index;
    assert_eq!(index.value("/a"), Some(pos(1, 4)));
    assert_eq!(
        index.scalar("/a"),
        Some((pos(1, 5), ScalarStyle::SingleQuoted))
    );
    assert_eq!(
        index.scalar("/b"),
        Some((pos(2, 5), ScalarStyle::DoubleQuoted))
    );
    assert_eq!(index.scalar("/c"), Some((pos(3, 4), ScalarStyle::Plain)));
    assert_eq!(index.scalar(""), None);
    assert_eq!(doc.value["d"], Value::Null);
}

#[test]
fn strict_booleans_and_nulls() {
    for yes in ["true", "True", "TRUE"] {
        assert_eq!(scalar(yes), json!(true), "{yes}");
    }
    for no in ["false", "False", "FALSE"] {
        assert_eq!(scalar(no), json!(false), "{no}");
    }
    for text in ["yes", "no", "on", "off", "y", "n", "Yes", "NO", "tRUE"] {
        assert_eq!(scalar(text), json!(text), "{text}");
    }
    for null in ["null", "Null", "NULL", "~", ""] {
        assert_eq!(scalar(null), Value::Null, "{null:?}");
    }
    assert_eq!(scalar("nULL"), json!("nULL"));
}

#[test]
fn numbers_follow_the_core_schema() {
    let cases = [
        ("0", json!(0)),
        ("-12", json!(-12)),
        ("+12", json!(12)),
        ("010", json!(10)),
        ("0x1F", json!(31)),
        ("0o17", json!(15)),
        ("18446744073709551615", json!(u64::MAX)),
        ("-9223372036854775808", json!(i64::MIN)),
        ("1.0", json!(1.0)),
        ("1.", json!(1.0)),
        (".5", json!(0.5)),
        ("-1.5e3", json!(-1500.0)),
        ("1e3", json!(1000.0)),
        ("1.e2", json!(100.0)),
        ("1_000", json!("1_000")),
        ("-0x10", json!("-0x10")),
        ("0x", json!("0x")),
        ("0o8", json!("0o8")),
        ("0b101", json!("0b101")),
        (".inf", json!(".inf")),
        ("-.inf", json!("-.inf")),
        (".nan", json!(".nan")),
        (".", json!(".")),
        ("1e", json!("1e")),
        ("1.2.3", json!("1.2.3")),
        ("12:30", json!("12:30")),
        ("'1'", json!("1")),
        ("\"1.0\"", json!("1.0")),
        ("|\n  1\n", json!("1\n")),
        (">-\n  true\n", json!("true")),
    ];
    for (text, expected) in cases {
        assert_eq!(scalar(text), expected, "{text:?}");
    }
}

#[test]
fn numbers_out_of_range_are_errors() {
    let e = error("k: 18446744073709551616\n");
    assert_eq!(e.pos, pos(1, 4));
    assert!(e.message.contains("out of range"), "{}", e.message);
    assert!(
        error("k: -9223372036854775809")
            .message
            .contains("out of range")
    );
    assert!(error("k: 1e999").message.contains("out of range"));
    assert!(
        error("k: 0x10000000000000000")
            .message
            .contains("out of range")
    );
}

#[test]
fn core_tags_are_honoured() {
    let cases = [
        ("!!str 1", json!("1")),
        ("!!str true", json!("true")),
        ("!!str", json!("")),
        ("!!int \"12\"", json!(12)),
        ("!!int 0x10", json!(16)),
        ("!!float 1", json!(1.0)),
        ("!!float '2.5'", json!(2.5)),
        ("!!bool 'true'", json!(true)),
        ("!!null ''", Value::Null),
        ("!!null", Value::Null),
        ("! 12", json!("12")),
        ("!<tag:yaml.org,2002:int> 3", json!(3)),
        ("!!map {a: 1}", json!({"a": 1})),
        ("!!seq [1]", json!([1])),
    ];
    for (text, expected) in cases {
        assert_eq!(scalar(text), expected, "{text:?}");
    }
}

#[test]
fn wrong_or_unknown_tags_are_errors() {
    let e = error("a: 1\nb: !foo bar\n");
    assert_eq!(e.pos, pos(2, 4));
    assert!(e.message.contains("`!foo`"), "{}", e.message);
    for (text, needle) in [
        ("k: !!binary aGk=", "`!!binary`"),
        ("k: !!timestamp 2001-12-14", "`!!timestamp`"),
        ("k: !!python/object x", "`!!python/object`"),
        ("k: !custom {a: 1}", "`!custom`"),
        ("!x k: v", "`!x`"),
    ] {
        let e = error(text);
        assert!(e.message.contains(needle), "{text}: {}", e.message);
    }
    assert_eq!(
        error("k: !!int abc").message,
        "`abc` is not a valid `!!int`"
    );
    assert!(error("k: !!bool yes").message.contains("!!bool"));
    assert!(error("k: !!null 0").message.contains("!!null"));
    assert!(error("k: !!float x").message.contains("!!float"));
    assert!(error("k: !!float .inf").message.contains("JSON"));
    let e = error("k: !!seq {a: 1}");
    assert_eq!(e.message, "tag `!!seq` cannot be used on a mapping");
    assert_eq!(e.pos, pos(1, 4));
    assert!(error("k: !!map x").message.contains("scalar"));
}

#[test]
fn keys_become_strings_as_written() {
    assert_eq!(
        value("1: a\n2.5: b\ntrue: c\n~: d\n0x10: e\n"),
        json!({"1": "a", "2.5": "b", "true": "c", "~": "d", "0x10": "e"})
    );
    assert_eq!(value("{? : x}"), json!({"": "x"}));
}

#[test]
fn non_scalar_keys_are_errors() {
    let e = error("ok: 1\n? [a]\n: b\n");
    assert_eq!(e.pos, pos(2, 3));
    assert!(e.message.contains("keys must be scalars"), "{}", e.message);
    assert!(
        error("{{a: 1}: b}")
            .message
            .contains("keys must be scalars")
    );
    let e = error("x: &l [1]\n*l : y\n");
    assert_eq!(e.pos, pos(2, 1));
    assert!(e.message.contains("`*l`"), "{}", e.message);
}

#[test]
fn duplicate_keys_are_errors_at_the_second_key() {
    let e = error("name: a\nother: 1\nname: b\n");
    assert_eq!(e.message, "duplicate key `name`, first defined at line 1");
    assert_eq!(e.pos, pos(3, 1));
    let e = error("outer:\n  x: {a: 1, b: 2, a: 3}\n");
    assert_eq!(e.message, "duplicate key `a`, first defined at line 2");
    assert_eq!(e.pos, pos(2, 19));
    // Same key in different mappings is fine.
    assert_eq!(
        value("a: {x: 1}\nb: {x: 2}\n"),
        json!({"a": {"x": 1}, "b": {"x": 2}})
    );
}

#[test]
fn aliases_copy_values_and_point_at_the_alias() {
    let text = "base: &b {x: 1, l: [s]}\nname: &n hello\ncopy: *b\nalso: *n\n*n : key\n";
    let doc = load(text).unwrap();
    assert_eq!(
        doc.value,
        json!({
            "base": {"x": 1, "l": ["s"]},
            "name": "hello",
            "copy": {"x": 1, "l": ["s"]},
            "also": "hello",
            "hello": "key",
        })
    );
    let index = &doc.index;
    assert_eq!(index.value("/base/x"), Some(pos(1, 14)));
    assert_eq!(index.value("/copy"), Some(pos(3, 7)));
    assert_eq!(index.value("/copy/x"), Some(pos(3, 7)));
    assert_eq!(index.key("/copy/x"), Some(pos(3, 7)));
    assert_eq!(index.value("/copy/l/0"), Some(pos(3, 7)));
    assert_eq!(index.key("/copy/l/0"), None);
    assert_eq!(index.value("/copy/missing"), None);
    assert_eq!(index.nearest("/copy/missing"), pos(3, 7));
    assert_eq!(index.key("/copy"), Some(pos(3, 1)));
    assert_eq!(index.scalar("/also"), None);
    assert_eq!(index.key("/hello"), Some(pos(5, 1)));
}

#[test]
fn alias_errors() {
    let e = error("a: *nope\n");
    assert_eq!(e.message, "unknown anchor `nope`");
    assert_eq!(e.pos, pos(1, 4));
    let e = error("a: &a [1, *a]\n");
    assert!(e.message.contains("contains it"), "{}", e.message);
    assert_eq!(e.pos, pos(1, 11));
}

#[test]
fn billion_laughs_is_bounded() {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        let items = [prev.as_str(); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{items}]\n"));
    }
    let e = error(&text);
    assert!(e.message.contains("aliases expand"), "{}", e.message);
    // Moderate reuse is fine.
    let doc = load("d: &d {x: [1, 2]}\nl: [*d, *d, *d]\n").unwrap();
    assert_eq!(doc.value["l"][2], json!({"x": [1, 2]}));
}

#[test]
fn merge_keys_are_rejected() {
    let e = error("base: &b {x: 1}\nthing:\n  <<: *b\n  y: 2\n");
    assert!(e.message.contains("merge keys `<<`"), "{}", e.message);
    assert_eq!(e.pos, pos(3, 3));
    // A quoted `<<` is an ordinary key.
    assert_eq!(value("'<<': 1\n"), json!({"<<": 1}));
}

#[test]
fn empty_input_is_an_error() {
    for text in ["", "\n\n", "# only a comment\n", "\u{feff}", "   "] {
        let e = error(text);
        assert_eq!(e.message, "the file is empty", "{text:?}");
        assert_eq!(e.pos, pos(1, 1));
    }
    // An explicit empty document is a null document, not an empty file.
    assert_eq!(value("---\n"), Value::Null);
}

#[test]
fn exactly_one_document() {
    let e = error("a: 1\n---\nb: 2\n");
    assert_eq!(e.pos, pos(2, 1));
    assert!(e.message.contains("second"), "{}", e.message);
    let e = error("---\na: 1\n...\n---\n");
    assert_eq!(e.pos, pos(4, 1));
    assert_eq!(value("---\na: 1\n...\n"), json!({"a": 1}));
    assert_eq!(value("%YAML 1.2\n---\na: 1\n"), json!({"a": 1}));
}

#[test]
fn syntax_errors_carry_parser_positions() {
    let cases = [
        ("a: 'abc", pos(1, 4)),
        ("a:\n\tb: 1\n", pos(2, 1)),
        ("{", pos(1, 1)),
        ("a: [1, 2\n", pos(1, 4)),
        ("a: b\0c", pos(1, 5)),
        ("a: b\n c: d\n", pos(2, 3)),
        ("a: b: c", pos(1, 5)),
        ("a:\n  - b\n - c", pos(3, 2)),
        ("\"\\q\"", pos(1, 1)),
    ];
    for (text, expected) in cases {
        let e = error(text);
        assert_eq!(e.pos, expected, "{text:?}: {}", e.message);
        let first = e.message.chars().next().unwrap();
        assert!(!first.is_uppercase(), "{text:?}: {}", e.message);
        assert!(!e.message.ends_with('.'), "{text:?}: {}", e.message);
    }
    assert_eq!(error("a: 'abc").message, "unclosed quote");
    assert_eq!(error("a: b\0c").message, "unexpected character `\\0`");
    assert_eq!(
        error("%YAML 2.0\n---\na\n").message,
        "unsupported YAML major version"
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(load(&deep(MAX_DEPTH)).is_ok());
    let e = error(&deep(MAX_DEPTH + 1));
    assert!(e.message.contains("nested"), "{}", e.message);
    assert!(load(&deep(100_000)).is_err());
    let block: String = (0..MAX_DEPTH + 10)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    assert!(load(&block).is_err());
    // Aliases cannot be used to nest deeper than the limit either.
    let half = MAX_DEPTH / 2 + 10;
    let text = format!(
        "a: &a {}\nb: {}*a{}\n",
        deep(half),
        "[".repeat(half),
        "]".repeat(half)
    );
    assert!(error(&text).message.contains("nested"));
}

#[test]
fn odd_inputs_never_panic() {
    let inputs = [
        ":",
        "- - -",
        "{",
        "}",
        "[",
        "]",
        "*x",
        "&x",
        "!",
        "!!",
        "? ",
        "?",
        "-",
        "---",
        "...",
        "--- |",
        "'",
        "\"",
        "\"\\",
        "\"\\u12\"",
        "a: |",
        "a: >",
        "|\n\t",
        "\t",
        "\u{0}",
        "\u{feff}\u{feff}",
        "a: &a",
        "&a a: *a",
        "[*a]",
        "{a: b: c}",
        "a: b: c",
        "- a\nb: c",
        "%YAML 2.0\n---\n",
        "%TAG ! x\n",
        "%FOO\n",
        "a: !<> x",
        "a: !<!> x",
        "? - a\n  - b\n: c",
        "[a, b]: c",
        "a:\n  - b\n - c",
        "\r\n\r",
        "a: 'b\n\nc'",
        "- !!str\n- !!int",
        "&a [*a]",
        "{a: 1, a: 2}",
        "a: !!int",
        "<<: 1",
        "? <<\n: x",
        "a: 1 # c\n# d\n",
        "'\u{85}'",
        "\u{2028}",
        "a: \"\\x\"",
        "a:\n  |\n",
        "- |0\n x",
        "- >9\n x",
        "{? a}",
        "[? a : b]",
        "[a: b]",
    ];
    for text in inputs {
        let _ = load(text);
    }
    // A cheap deterministic fuzz over YAML's indicator characters.
    let alphabet: Vec<char> = "ab1 \n\t-:?[]{},&*!|>'\"#%@`~.\\\u{feff}é"
        .chars()
        .collect();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 16) as usize;
        let text: String = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        if let Err(e) = load(&text) {
            assert!(e.pos.line >= 1 && e.pos.col >= 1, "{text:?}");
        }
    }
}

#[test]
fn large_documents_load() {
    let text: String = (0..5_000)
        .map(|i| format!("key{i}:\n  run: [\"a{i}\", {{x: {i}}}]\n"))
        .collect();
    let doc = load(&text).unwrap();
    assert_eq!(doc.value["key4999"]["run"][1]["x"], json!(4999));
    assert_eq!(doc.index.value("/key4999/run/1/x"), Some(pos(10_000, 22)));
}

#[test]
fn design_example_manifest() {
    let text = r#"# yaml-language-server: $schema=../schemas/flavor.schema.json
version: 1
name: venv
settings:
  properties:
    python: {type: string, default: python3}
env:
  PIP_DISABLE_PIP_VERSION_CHECK: "1"
prepare:
  run:
    - ["{{ settings.python }}", "-m", "venv"]
    - script: "{{ dirs.prepare }}/venv/bin/pip install"
      when: "{{ requirements.pip | length > 0 }}"
launch:
  limits:
    pids: 4096
  kill_grace: 10s
cleanup:
  run: []
"#;
    let doc = load(text).unwrap();
    assert_eq!(doc.value["version"], json!(1));
    assert_eq!(
        doc.value["env"]["PIP_DISABLE_PIP_VERSION_CHECK"],
        json!("1")
    );
    assert_eq!(doc.value["launch"]["limits"]["pids"], json!(4096));
    assert_eq!(doc.value["cleanup"]["run"], json!([]));
    let index = &doc.index;
    assert_eq!(index.key("/version"), Some(pos(2, 1)));
    assert_eq!(
        index.value("/settings/properties/python/default"),
        Some(pos(6, 37))
    );
    assert_eq!(index.value("/prepare/run/0/2"), Some(pos(11, 39)));
    assert_eq!(
        index.scalar("/prepare/run/1/when"),
        Some((pos(13, 14), ScalarStyle::DoubleQuoted))
    );
    assert_eq!(index.key("/launch/kill_grace"), Some(pos(17, 3)));
    assert_eq!(index.value("/cleanup/run"), Some(pos(19, 8)));
}

#[test]
fn anchored_and_tagged_collections_are_at_their_content() {
    let doc = load("a: &x !!map\n  b: 1\nc: !!seq\n- 1\n").unwrap();
    assert_eq!(doc.value, json!({"a": {"b": 1}, "c": [1]}));
    assert_eq!(doc.index.value("/a"), Some(pos(2, 3)));
    assert_eq!(doc.index.value("/c"), Some(pos(4, 1)));
    let doc = load("- - x\n  -   - y\n").unwrap();
    assert_eq!(doc.index.value(""), Some(pos(1, 1)));
    assert_eq!(doc.index.value("/0"), Some(pos(1, 3)));
    assert_eq!(doc.index.value("/0/1"), Some(pos(2, 7)));
    assert_eq!(doc.index.value("/0/1/0"), Some(pos(2, 9)));
    let doc = load("k:\n- -1\n").unwrap();
    assert_eq!(doc.value, json!({"k": [-1]}));
    assert_eq!(doc.index.value("/k"), Some(pos(2, 1)));
    assert_eq!(doc.index.value("/k/0"), Some(pos(2, 3)));
}

#[test]
fn tab_errors_point_at_the_tab() {
    let e = error("a: 1\nb:\n\tc: 2\n");
    assert_eq!(e.pos, pos(3, 1), "{}", e.message);
    assert!(e.message.contains("indent with spaces"), "{}", e.message);
}

#[test]
fn unclosed_flow_points_at_the_bracket() {
    let e = error("a:\n  b: [x, y\n  c: 1\n");
    assert_eq!(e.pos, pos(2, 6), "{}", e.message);
    assert!(e.message.starts_with("unclosed `[`"), "{}", e.message);
    // A flow collection continued on deeper-indented lines is fine.
    assert_eq!(value("a: [1,\n  2]\n"), json!({"a": [1, 2]}));
}

/// One large string aliased many times is bounded by the text it expands to: an error
/// at the alias that passes the bound, not gigabytes of memory.
#[test]
fn aliases_are_bounded_by_the_bytes_they_expand_to() {
    let big = "x".repeat(1 << 20);
    let mut text = format!("a: &big \"{big}\"\nb:\n");
    for i in 0..3000 {
        text.push_str(&format!("  v{i}: *big\n"));
    }
    let err = load(&text).unwrap_err();
    assert_eq!(err.message, "aliases expand to more than 16 MiB of text");
    // The 17th alias passes 16 MiB: line 2 is `b:`, so the 17th is on line 19.
    assert_eq!(err.pos.line, 19);
    // A few aliases of a small value are fine.
    load("a: &s hello\nb: [*s, *s, *s]\n").unwrap();
}
