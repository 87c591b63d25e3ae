//! An organisation's rules over flavors and their plans (`schemas/policy.schema.json`):
//! the same file checked by `runner validate --policy` (what a manifest says),
//! `runner test --policy` and `runner launch --policy` (what a step's plan would run,
//! before anything runs). A broken rule is a located error — at the manifest's line
//! where it can be told, with the rule's own message and the rule's place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::diag::Diagnostic;
use crate::limits::LimitKind;
use crate::manifest::{Flavor, Source};
use crate::plan::{CommandPlan, MeasuredBy, Plan};
use crate::step_info::StepInfo;
use crate::yaml::Pos;

pub const POLICY_SCHEMA: &str = include_str!("../schemas/policy.schema.json");

/// The variable naming a policy file when no `--policy` is given.
pub const POLICY_VAR: &str = "RUNNER_POLICY";

#[derive(Debug, Clone)]
enum Kind {
    MaxMemory(u64),
    MaxCpus(f64),
    MaxGpus(u32),
    MaxTimeout(Duration),
    RequireLimits(Vec<LimitKind>),
    AllowedFlavors(Vec<String>),
    AllowedImages(Vec<String>),
    AllowedPartitions(Vec<String>),
    ForbidUnquoted,
    ForbidCapabilities,
    RequiredSettings(BTreeMap<String, Vec<String>>),
}

#[derive(Debug, Clone)]
struct Rule {
    kind: Kind,
    message: Option<String>,
    /// Where the rule is in the policy file: `policy.yaml:12:5`.
    at: String,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub path: PathBuf,
    rules: Vec<Rule>,
}

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let schema: Value = serde_json::from_str(POLICY_SCHEMA).expect("embedded schema is JSON");
        jsonschema::draft202012::new(&schema).expect("embedded schema compiles")
    })
}

impl Policy {
    /// Read and check a policy file: every error located in it.
    pub fn load(path: &Path) -> Result<Policy, Vec<Diagnostic>> {
        let src =
            Source::read(path).map_err(|e| vec![crate::validate::load_diagnostic(path, &e)])?;
        let pos = |ptr: &str| src.doc.index.nearest(ptr);
        let diag = |ptr: &str, msg: String| Diagnostic::new(path, Some(&src.text), pos(ptr), msg);
        let mut errors = crate::validate::hidden_characters(&src);
        errors.extend(
            validator()
                .iter_errors(&src.doc.value)
                .map(|e| diag(&e.instance_path().to_string(), format!("policy: {e}"))),
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        let items = src.doc.value["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            let ptr = format!("/rules/{i}");
            let Value::Object(m) = item else { continue };
            let kinds: Vec<(&String, &Value)> = m.iter().filter(|(k, _)| *k != "message").collect();
            let [(name, v)] = kinds.as_slice() else {
                errors.push(diag(
                    &ptr,
                    "a policy rule has exactly one kind (and may have a `message`)".into(),
                ));
                continue;
            };
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let kind = match name.as_str() {
                "max_memory" => match crate::units::parse_bytes(v.as_str().unwrap_or_default()) {
                    Ok(b) => Kind::MaxMemory(b),
                    Err(e) => {
                        errors.push(diag(
                            &format!("{ptr}/max_memory"),
                            format!("`max_memory`: {e}"),
                        ));
                        continue;
                    }
                },
                "max_timeout" => match crate::units::parse_duration(v.as_str().unwrap_or_default())
                {
                    Ok(d) => Kind::MaxTimeout(d),
                    Err(e) => {
                        errors.push(diag(
                            &format!("{ptr}/max_timeout"),
                            format!("`max_timeout`: {e}"),
                        ));
                        continue;
                    }
                },
                "max_cpus" => Kind::MaxCpus(v.as_f64().unwrap_or_default()),
                "max_gpus" => Kind::MaxGpus(v.as_u64().unwrap_or_default() as u32),
                "require_limits" => {
                    Kind::RequireLimits(serde_json::from_value((*v).clone()).unwrap_or_default())
                }
                "allowed_flavors" => Kind::AllowedFlavors(strings(v)),
                "allowed_images" => Kind::AllowedImages(strings(v)),
                "allowed_partitions" => Kind::AllowedPartitions(strings(v)),
                "forbid_unquoted" => Kind::ForbidUnquoted,
                "forbid_capabilities" => Kind::ForbidCapabilities,
                "required_settings" => {
                    Kind::RequiredSettings(serde_json::from_value((*v).clone()).unwrap_or_default())
                }
                _ => continue,
            };
            let p = pos(&ptr);
            rules.push(Rule {
                kind,
                message: m.get("message").and_then(Value::as_str).map(str::to_owned),
                at: format!("{}:{}:{}", path.display(), p.line, p.col),
            });
        }
        if errors.is_empty() {
            Ok(Policy {
                path: path.to_path_buf(),
                rules,
            })
        } else {
            Err(errors)
        }
    }

    /// `--policy FILE`, else `$RUNNER_POLICY`, else none.
    pub fn from_arg(arg: Option<&Path>) -> Result<Option<Policy>, Vec<Diagnostic>> {
        let env = std::env::var_os(POLICY_VAR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        match arg.map(Path::to_path_buf).or(env) {
            Some(p) => Policy::load(&p).map(Some),
            None => Ok(None),
        }
    }

    /// What a manifest itself says against the rules (`runner validate --policy`).
    pub fn check_manifest(&self, src: &Source, flavor: &Flavor) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for r in &self.rules {
            match &r.kind {
                Kind::AllowedFlavors(names) if !names.contains(&flavor.name) => {
                    out.push(r.broken(
                        src,
                        src.doc.index.nearest("/name"),
                        format!("flavor `{}` is not allowed", flavor.name),
                    ));
                }
                Kind::ForbidUnquoted => {
                    for t in flavor.templates() {
                        if let Some(at) = safe_filter(&t.text) {
                            let pos = crate::template::template_pos(src, &t.pointer, &t.text, at);
                            out.push(r.broken(
                                src,
                                pos,
                                "`| safe` puts shell text in unquoted".into(),
                            ));
                        }
                    }
                }
                Kind::ForbidCapabilities => {
                    let stages = [
                        (
                            "/prepare/capabilities",
                            flavor.prepare.as_ref().map(|p| &p.capabilities),
                        ),
                        ("/launch/capabilities", Some(&flavor.launch.capabilities)),
                        (
                            "/cleanup/capabilities",
                            flavor.cleanup.as_ref().map(|c| &c.capabilities),
                        ),
                    ];
                    for (ptr, caps) in stages {
                        if caps.is_some_and(|c| !c.is_empty()) {
                            let pos = src.doc.index.nearest(ptr);
                            out.push(r.broken(src, pos, "the flavor keeps capabilities".into()));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// What a step's plan would run against the rules (`launch`, `test`), with the
    /// manifest's line where it can be told.
    pub fn check_plan(
        &self,
        src: &Source,
        flavor: &Flavor,
        info: &StepInfo,
        plan: &Plan,
    ) -> Vec<Diagnostic> {
        let mut out = self.check_manifest(src, flavor);
        // At the key (`partition:`) where there is one, not at its value's first line.
        let at = |ptr: &str| {
            src.doc
                .index
                .key(ptr)
                .unwrap_or_else(|| src.doc.index.nearest(ptr))
        };
        let settings = crate::settings::resolve(src, flavor, &info.settings).unwrap_or_default();
        let setting = |name: &str| {
            settings
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let limits = &plan.launch.limits;
        let engine = plan.launch.measured_by == MeasuredBy::Engine;
        let r_ = &info.resources;
        for r in &self.rules {
            match &r.kind {
                Kind::MaxMemory(max) => {
                    // The launch's limit, when it is not just what the step asked for.
                    let own = limits.memory_bytes.filter(|l| Some(*l) != r_.memory);
                    for (what, got, ptr) in [
                        ("the step asks for", r_.memory, "/launch"),
                        ("the launch is limited to", own, "/launch/limits/memory"),
                    ] {
                        if let Some(got) = got.filter(|g| g > max) {
                            let (g, m) = (crate::units::Bytes(got), crate::units::Bytes(*max));
                            out.push(r.broken(
                                src,
                                at(ptr),
                                format!("{what} {g} of memory, over {m}"),
                            ));
                        }
                    }
                }
                Kind::MaxCpus(max) => {
                    let own = limits.cpus.filter(|l| Some(*l) != r_.cpu_count);
                    for (what, got, ptr) in [
                        ("the step asks for", r_.cpu_count, "/launch"),
                        ("the launch is limited to", own, "/launch/limits/cpus"),
                    ] {
                        if let Some(got) = got.filter(|g| g > max) {
                            out.push(r.broken(
                                src,
                                at(ptr),
                                format!("{what} {got} CPUs, over {max}"),
                            ));
                        }
                    }
                }
                Kind::MaxGpus(max) => {
                    if let Some(g) = r_.gpu_count.filter(|g| g > max) {
                        out.push(r.broken(
                            src,
                            at("/launch"),
                            format!("the step asks for {g} GPUs, over {max}"),
                        ));
                    }
                }
                Kind::MaxTimeout(max) => {
                    if let Some(t) = plan.launch.deadline().filter(|t| t > max) {
                        out.push(r.broken(
                            src,
                            at("/launch/timeout"),
                            format!(
                                "the launch may run {}, over {}",
                                humantime::format_duration(t),
                                humantime::format_duration(*max)
                            ),
                        ));
                    }
                }
                Kind::RequireLimits(kinds) => {
                    for k in kinds {
                        let set = match k {
                            LimitKind::Timeout => plan.launch.deadline().is_some(),
                            k => limits.value(*k).is_some(),
                        };
                        // An engine's limits come from the step's resources.
                        let by_engine = engine
                            && match k {
                                LimitKind::Memory => r_.memory.is_some(),
                                LimitKind::Cpus => r_.cpu_count.is_some(),
                                LimitKind::Gpus => r_.gpu_count.is_some(),
                                _ => false,
                            };
                        if !set && !by_engine {
                            out.push(r.broken(
                                src,
                                at("/launch"),
                                format!("the plan sets no `{}` limit", k.as_str()),
                            ));
                        }
                    }
                }
                Kind::AllowedImages(globs) => {
                    let images = [
                        (
                            "requirements.parent_image",
                            info.requirements.parent_image.clone(),
                            "/launch",
                        ),
                        (
                            "setting `image`",
                            setting("image"),
                            "/settings/properties/image",
                        ),
                        (
                            "setting `base_image`",
                            setting("base_image"),
                            "/settings/properties/base_image",
                        ),
                    ];
                    for (what, image, ptr) in images {
                        if let Some(i) = image.filter(|i| !globs.iter().any(|g| glob(g, i))) {
                            out.push(r.broken(
                                src,
                                at(ptr),
                                format!("image `{i}` ({what}) is not allowed"),
                            ));
                        }
                    }
                }
                Kind::AllowedPartitions(names) => {
                    if let Some(p) = setting("partition")
                        && !names.contains(&p)
                    {
                        out.push(r.broken(
                            src,
                            at("/settings/properties/partition"),
                            format!("partition `{p}` is not allowed"),
                        ));
                    }
                }
                Kind::ForbidUnquoted => {
                    if let Some(c) = commands(plan).find(|c| !c.unquoted.is_empty()) {
                        out.push(r.broken(
                            src,
                            at(&c.at),
                            "`| safe` puts shell text in unquoted".into(),
                        ));
                    }
                }
                Kind::RequiredSettings(by_flavor) => {
                    for name in by_flavor.get(&plan.flavor).into_iter().flatten() {
                        if !info.settings.contains_key(name) {
                            out.push(r.broken(
                                src,
                                at(&format!("/settings/properties/{name}")),
                                format!("the step must set `{name}` (`--set {name}=…`)"),
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        // A manifest-level finding reported twice (once per command) says nothing more.
        out.dedup_by(|a, b| a.line == b.line && a.col == b.col && a.message == b.message);
        out
    }
}

impl Rule {
    fn broken(&self, src: &Source, pos: Pos, what: String) -> Diagnostic {
        let message = match &self.message {
            Some(m) => format!("policy: {what}: {m}"),
            None => format!("policy: {what}"),
        };
        Diagnostic::new(&src.path, Some(&src.text), pos, message)
            .with_hint(format!("the rule is at {}", self.at))
    }
}

fn commands(plan: &Plan) -> impl Iterator<Item = &CommandPlan> {
    plan.prepare
        .iter()
        .flat_map(|p| p.commands.iter())
        .chain(std::iter::once(&plan.launch.command))
        .chain(plan.cleanup.commands.iter())
}

/// Where a template applies the filter `safe` (in a `{{ }}` or `{% %}` block), if it
/// does.
fn safe_filter(text: &str) -> Option<usize> {
    crate::template::filters_and_tests(text)
        .into_iter()
        .find(|(_, name, filter)| *filter && name == "safe")
        .map(|(at, _, _)| at)
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if text.len() < first.len() + last.len() || !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("python:3.*", "python:3.12-slim"));
        assert!(glob("*", "anything"));
        assert!(glob("steprunner/*:*", "steprunner/train:abc"));
        assert!(!glob("python:3.*", "evil/python:3.12"));
        assert!(!glob("a*a", "a"));
        assert!(glob("exact", "exact") && !glob("exact", "exact2"));
    }

    #[test]
    fn safe_filters_are_found() {
        assert_eq!(safe_filter("echo {{ x | safe }}"), Some(12));
        assert_eq!(safe_filter("echo {{ x|safe }}"), Some(10));
        assert_eq!(safe_filter("echo {{ x | q }} | safe"), None);
    }
}
