//! What changes in what runs (`runner diff`): two plans of the same case compared
//! field by field, each change classed, the risky ones first — a limit removed or
//! raised, shell text `| safe` put in, a capability kept, a secret newly passed, an
//! image changed, the cache key changed (every environment is rebuilt).

use std::collections::BTreeMap;

use serde_json::Value;

/// Why a change deserves a reviewer's eye.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    LimitRemoved,
    LimitRaised,
    UnquotedShell,
    Capability,
    SecretPassed,
    MeasuredElsewhere,
    ImageChanged,
    Rebuild,
}

impl Risk {
    pub fn describe(self) -> &'static str {
        match self {
            Risk::LimitRemoved => "a limit is removed",
            Risk::LimitRaised => "a limit is raised",
            Risk::UnquotedShell => "shell text is put in unquoted (`| safe`)",
            Risk::Capability => "the step keeps a new capability",
            Risk::SecretPassed => "a secret is newly passed",
            Risk::MeasuredElsewhere => "who measures the step changes",
            Risk::ImageChanged => "the image changes",
            Risk::Rebuild => "the cache key changes: every environment is prepared again",
        }
    }
}

/// One field that differs: `old` absent means added, `new` absent means removed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
}

/// Every leaf of a JSON value by its dotted path (list items by index; an empty list or
/// object is a leaf of its own).
pub fn flatten(v: &Value) -> BTreeMap<String, Value> {
    fn walk(v: &Value, at: &str, out: &mut BTreeMap<String, Value>) {
        let join = |k: &str| {
            if at.is_empty() {
                k.to_string()
            } else {
                format!("{at}.{k}")
            }
        };
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    walk(v, &join(k), out);
                }
            }
            Value::Array(a) if !a.is_empty() && !a.iter().all(|i| !i.is_object()) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &join(&i.to_string()), out);
                }
            }
            Value::Null => {}
            // Lists of plain values (an argv, key parts) compare as one field.
            v => {
                out.insert(at.to_string(), v.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(v, "", &mut out);
    out
}

fn number(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

fn risk(path: &str, old: Option<&Value>, new: Option<&Value>) -> Option<Risk> {
    let last = path.rsplit('.').next().unwrap_or(path);
    let limit = path.starts_with("launch.limits.") || path == "launch.timeout_secs";
    if limit {
        return match (old, new) {
            (Some(_), None) => Some(Risk::LimitRemoved),
            _ if number(new) > number(old) && number(old).is_some() => Some(Risk::LimitRaised),
            _ => None,
        };
    }
    if last == "unquoted" || path.contains(".unquoted.") {
        return new.is_some().then_some(Risk::UnquotedShell);
    }
    if last == "capabilities" || path.contains(".capabilities.") {
        return new.is_some().then_some(Risk::Capability);
    }
    if path == "secret_env" {
        return new.is_some().then_some(Risk::SecretPassed);
    }
    if path == "launch.measured_by" || path == "launch.remote" {
        return Some(Risk::MeasuredElsewhere);
    }
    if last.to_ascii_lowercase().contains("image") {
        return Some(Risk::ImageChanged);
    }
    if path == "prepare.key" {
        return Some(Risk::Rebuild);
    }
    None
}

/// What differs from `old` to `new`, risky changes first (then by path).
pub fn diff(old: &Value, new: &Value) -> Vec<Change> {
    let (a, b) = (flatten(old), flatten(new));
    let mut paths: Vec<&String> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut out: Vec<Change> = paths
        .into_iter()
        .filter(|p| a.get(*p) != b.get(*p))
        .map(|p| Change {
            path: p.clone(),
            old: a.get(p).cloned(),
            new: b.get(p).cloned(),
            risk: risk(p, a.get(p), b.get(p)),
        })
        .collect();
    out.sort_by(|x, y| match (x.risk, y.risk) {
        (Some(rx), Some(ry)) => rx.cmp(&ry).then(x.path.cmp(&y.path)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => x.path.cmp(&y.path),
    });
    out
}

/// A change for people: `path: old → new`, a multi-line string (a script) as a line
/// diff, indented by `indent`.
pub fn show(c: &Change, indent: &str) -> String {
    let short = |v: &Option<Value>| match v {
        None => "(none)".to_string(),
        Some(Value::String(s)) => crate::util::printable(s).into_owned(),
        Some(v) => v.to_string(),
    };
    let mark = c
        .risk
        .map(|r| format!("  ! {}", r.describe()))
        .unwrap_or_default();
    let multi = |v: &Option<Value>| matches!(v, Some(Value::String(s)) if s.contains('\n'));
    if multi(&c.old) || multi(&c.new) {
        let text = |v: &Option<Value>| match v {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let (o, n) = (text(&c.old), text(&c.new));
        let d = similar::TextDiff::from_lines(&o, &n);
        let mut out = format!("{indent}{}:{mark}\n", c.path);
        for hunk in d.unified_diff().context_radius(1).iter_hunks() {
            for change in hunk.iter_changes() {
                let sign = match change.tag() {
                    similar::ChangeTag::Delete => '-',
                    similar::ChangeTag::Insert => '+',
                    similar::ChangeTag::Equal => ' ',
                };
                let line = crate::util::printable(change.value().trim_end_matches('\n'));
                out.push_str(&format!("{indent}  {sign} {line}\n"));
            }
        }
        return out;
    }
    format!(
        "{indent}{}: {} → {}{mark}\n",
        c.path,
        short(&c.old),
        short(&c.new)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn risky_changes_come_first_and_are_named() {
        let old = json!({"launch": {"limits": {"memory_bytes": 512, "pids": 100}, "timeout_secs": 60,
                         "command": {"argv": ["a"]}},
                         "prepare": {"key": "k1"}});
        let new = json!({"launch": {"limits": {"memory_bytes": 1024}, "timeout_secs": 30,
                         "command": {"argv": ["b"]}, "capabilities": ["SYS_ADMIN"]},
                         "secret_env": ["TOKEN"], "prepare": {"key": "k2"}});
        let d = diff(&old, &new);
        let got: Vec<(&str, Option<Risk>)> = d.iter().map(|c| (c.path.as_str(), c.risk)).collect();
        assert_eq!(
            got,
            [
                ("launch.limits.pids", Some(Risk::LimitRemoved)),
                ("launch.limits.memory_bytes", Some(Risk::LimitRaised)),
                ("launch.capabilities", Some(Risk::Capability)),
                ("secret_env", Some(Risk::SecretPassed)),
                ("prepare.key", Some(Risk::Rebuild)),
                ("launch.command.argv", None),
                // Lowered: a change, not a risk.
                ("launch.timeout_secs", None),
            ]
        );
        assert_eq!(diff(&old, &old).len(), 0);
    }

    #[test]
    fn scripts_show_as_line_diffs() {
        let c = Change {
            path: "launch.command.script".into(),
            old: Some(json!("a\nb\nc\n")),
            new: Some(json!("a\nB\nc\n")),
            risk: None,
        };
        assert_eq!(
            show(&c, ""),
            "launch.command.script:\n    a\n  - b\n  + B\n    c\n"
        );
    }
}
