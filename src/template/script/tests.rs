//! Verdicts on script shapes: `§` marks a hole.

use super::*;

fn verdicts(shape: &str) -> Vec<Verdict> {
    analyze(&shape.replace('§', &HOLE.to_string()))
}

#[track_caller]
fn allowed(shape: &str, place: Place) {
    let v = verdicts(shape);
    assert!(!v.is_empty(), "no hole in {shape:?}");
    assert!(v.iter().all(|v| *v == Ok(place)), "{shape:?}: {v:?}");
}

#[track_caller]
fn refused(shape: &str, why: Refusal) {
    let v = verdicts(shape);
    assert!(!v.is_empty(), "no hole in {shape:?}");
    assert!(v.contains(&Err(why)), "{shape:?}: {v:?}, not {why:?}");
    assert!(v.iter().any(|v| v.is_err()), "{shape:?}: {v:?}");
}

#[test]
fn words_of_commands_are_data() {
    allowed("echo §", Place::Arg);
    allowed("echo --name=§ x§y", Place::Arg);
    allowed("printf '%s\\n' § > \"$out\"", Place::Arg);
    allowed("docker run --rm § \\\n  --x §", Place::Arg);
    allowed("a=$(printf '%s' § | tr a b)", Place::Arg);
    allowed("kube() { kubectl § \"$@\"; }", Place::Arg);
    assert_eq!(
        verdicts("if [ § -gt 0 ]; then echo §; fi"),
        [Ok(Place::OneWord), Ok(Place::Arg)]
    );
    allowed("case x in a) echo § ;; esac", Place::Arg);
    allowed("for f in §; do echo §; done", Place::Arg);
    allowed("§ -c 'import x'", Place::Command);
    allowed("x=$(§/bin/python -c 'p')", Place::Command);
}

#[test]
fn one_word_places() {
    allowed("run=§", Place::OneWord);
    allowed("echo hi > §", Place::OneWord);
    allowed("case § in a) ;; esac", Place::OneWord);
    allowed("export X=§", Place::OneWord);
    allowed("cat <<< §", Place::OneWord);
}

#[test]
fn inside_double_quotes_is_quoted_text() {
    allowed("echo \"step § done\"", Place::Quoted);
    allowed("echo \"$(echo \"§\")\"", Place::Quoted);
    allowed("x=\"§\"", Place::Quoted);
    allowed("echo \"$x § $\"", Place::Quoted);
}

#[test]
fn the_issues_leaks_are_refused() {
    refused("echo \"${X:-\"§\"}\"", Refusal::Parameter);
    refused("echo $(( § ))", Refusal::Arithmetic);
    refused("n=$(( § ))", Refusal::Arithmetic);
    refused("true;# §", Refusal::Comment);
    refused("true &&# §", Refusal::Comment);
    refused("(true)# §", Refusal::Comment);
    refused("[[ § -eq 0 ]]", Refusal::DoubleBracket);
    refused("(( § ))", Refusal::Arithmetic);
    refused("let n=§", Refusal::Evaluates);
    refused("declare -i n=§", Refusal::Evaluates);
    refused("echo ${x:§}", Refusal::Parameter);
    refused("eval §", Refusal::Evaluates);
    refused("sh -c §", Refusal::ShellCommand);
    refused("bash -o pipefail -c §", Refusal::ShellCommand);
    refused("bash -ec \"echo §\"", Refusal::ShellCommand);
    refused("env X=1 sh -c §", Refusal::ShellCommand);
    refused("find . -exec sh -c § \\;", Refusal::ShellCommand);
    refused("trap \"echo §\" EXIT", Refusal::Evaluates);
    refused("source §", Refusal::Evaluates);
    refused(". §", Refusal::Evaluates);
    refused("read §", Refusal::Evaluates);
    refused("unset §", Refusal::Evaluates);
    refused("printf -v § x", Refusal::Evaluates);
    refused("[ -v § ]", Refusal::Evaluates);
    refused("eval \"$(echo §)\"", Refusal::Evaluates);
    refused("source <(echo §)", Refusal::Evaluates);
    refused("eval &>/dev/null §", Refusal::Evaluates);
    refused("2>/dev/null eval §", Refusal::Evaluates);
    refused("timeout 1m eval §", Refusal::Evaluates);
    refused("exec sh -c §", Refusal::ShellCommand);
}

#[test]
fn quotes_comments_and_heredocs() {
    refused("echo '§'", Refusal::SingleQuotes);
    refused("echo $'§'", Refusal::AnsiQuotes);
    refused("echo `echo §`", Refusal::Backquotes);
    refused("echo \"`echo §`\"", Refusal::Backquotes);
    refused("# §", Refusal::Comment);
    refused("cat <<EOF\n§\nEOF\necho ok", Refusal::HereDoc);
    refused("cat <<-'EOF'\n\t§\n\tEOF", Refusal::HereDoc);
    // After the here-document, code again.
    let v = verdicts("cat <<EOF\n§\nEOF\necho §");
    assert_eq!(v, [Err(Refusal::HereDoc), Ok(Place::Arg)]);
}

#[test]
fn escapes_and_dollars_before_a_hole() {
    refused("echo \\§", Refusal::AfterBackslash);
    refused("echo \"\\§\"", Refusal::AfterBackslash);
    refused("echo $§", Refusal::AfterDollar);
    allowed("echo \\\\§", Place::Arg);
}

#[test]
fn names_subscripts_and_patterns() {
    refused("for § in a; do :; done", Refusal::Name);
    refused("§() { :; }", Refusal::Name);
    refused("function § { :; }", Refusal::Name);
    refused("a[§]=1", Refusal::Subscript);
    refused("case x in §) ;; esac", Refusal::CasePattern);
    refused("case x in a|§) ;; esac", Refusal::CasePattern);
    refused("echo @(a|§)", Refusal::Pattern);
    allowed("function f { echo §; }", Place::Arg);
}

#[test]
fn commands_known_only_at_run_time() {
    refused("\"$cmd\" §", Refusal::DynamicCommand);
    refused("$run/x.sh §", Refusal::DynamicCommand);
    refused("§ §", Refusal::DynamicCommand);
    refused("env \"$x\" §", Refusal::DynamicCommand);
}

#[test]
fn integer_attributes_refuse_assignments() {
    refused("declare -i n\nn=§", Refusal::IntegerAttribute);
    refused("typeset -ri n; export n=§", Refusal::IntegerAttribute);
    allowed("declare n\nn=§", Place::OneWord);
}

#[test]
fn case_bodies_and_nesting_keep_their_place() {
    let v = verdicts("x=$(case a in a) echo § ;; b|c) echo b ;; esac)\necho §");
    assert_eq!(v, [Ok(Place::Arg), Ok(Place::Arg)]);
    let v = verdicts("y=$( (echo §) )\ntrue # §\necho §");
    assert_eq!(v, [Ok(Place::Arg), Err(Refusal::Comment), Ok(Place::Arg)]);
}

#[test]
fn argv_command_strings() {
    assert_eq!(argv_command_string(&["sh", "-c", "x"]), Some(2));
    assert_eq!(
        argv_command_string(&["/bin/bash", "-eu", "-o", "pipefail", "-c", "x"]),
        Some(5)
    );
    assert_eq!(
        argv_command_string(&["env", "A=1", "dash", "-ec", "x", "y"]),
        Some(4)
    );
    assert_eq!(argv_command_string(&["sh", "script.sh", "x"]), None);
    assert_eq!(argv_command_string(&["python3", "-c", "x"]), None);
}

#[test]
fn template_holes_and_tags() {
    let (text, offsets) =
        holes_of_template("echo {{ a }} {% if b %}{{ c | safe }}{% endif %}{{- d -}}");
    assert_eq!(text, format!("echo {HOLE} {HOLE}"));
    assert_eq!(offsets, [5, 48]);
    assert!(!tag_refused("{% if x %}"));
    assert!(!tag_refused("{%- set x = 1 -%}"));
    assert!(tag_refused("{% set x %}"));
    assert!(tag_refused("{% macro m() %}"));
    assert!(tag_refused("{% autoescape false %}"));
    assert!(tag_refused("{% call m() %}"));
    assert_eq!(double_quote_escape("a\"$`\\b"), "a\\\"\\$\\`\\\\b");
}

/// An unclosed tag that ends inside a multi-byte character neither panics nor hides
/// the holes before it (found by the `manifest` fuzz target).
#[test]
fn an_unclosed_tag_before_a_multi_byte_character() {
    let (text, offsets) = holes_of_template("echo {{ a }} \"ß {{ 'x\" {{ y ß\n");
    assert_eq!(offsets.len(), 2, "{text:?}");
    assert!(text.starts_with(&format!("echo {HOLE} ")), "{text:?}");
}

/// A `}}` inside a string literal does not end the interpolation (as in minijinja's
/// lexer): `docker inspect --format {{ '{{.State.Pid}} {{.Id}}' }}` is one hole, and
/// what follows it is read as the shell reads it.
#[test]
fn braces_inside_a_template_string_stay_in_their_hole() {
    let t = r#"f {{ '{{.A}} {{.B}}' }} 'x' {{ "}}\"}}" }} {# '}} #}{{ y }}"#;
    let (text, offsets) = holes_of_template(t);
    assert_eq!(text, format!("f {HOLE} 'x' {HOLE} {HOLE}"));
    assert_eq!(offsets.len(), 3);
    let verdicts = analyze(&text);
    assert!(verdicts.iter().all(Result::is_ok), "{verdicts:?}");
}

#[test]
fn printf_and_test_options_from_values() {
    refused("printf § x", Refusal::Evaluates);
    refused("printf -v § x", Refusal::Evaluates);
    allowed("printf '%s\\n' §", Place::Arg);
    allowed("printf -- '%s' §", Place::Arg);
    allowed("[ § -gt 0 ]", Place::OneWord);
    refused("[ § § ]", Refusal::Evaluates);
    refused("test -v §", Refusal::Evaluates);
    refused("[ -R § ]", Refusal::Evaluates);
}
