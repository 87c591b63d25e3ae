//! What every fuzz target checks: an input ends in a value (a plan, step info, a
//! document) or in errors that are *located* — a line and column inside the text
//! (or just past its end), whose human, GitHub and JSON forms all print. Panics and
//! hangs are what libFuzzer reports; these checks turn "an error nobody can find"
//! into a crash too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use steprunner::diag::Diagnostic;
use steprunner::home::Home;
use steprunner::manifest::{LoadError, Source};
use steprunner::render::{self, Where};
use steprunner::step_info::{InfoError, Overrides, StepInfo};
use steprunner::yaml::Pos;

/// Name the inputs are parsed under (only used in diagnostics).
pub const FILE: &str = "fuzz.yaml";

/// Lines in `text` as YAML counts them (`\n`, `\r\n` or a lone `\r`), counting the
/// empty line after a final line break (where "unexpected end" errors point).
fn line_count(text: &str) -> usize {
    steprunner::diag::source_lines(text).count()
}

/// A position is inside the text: line 1..=lines, column ≥ 1.
#[track_caller]
pub fn assert_located(text: &str, pos: Pos, what: &str) {
    assert!(
        pos.line >= 1 && pos.line <= line_count(text) && pos.col >= 1,
        "{what}: position {pos} outside the input ({} lines)",
        line_count(text)
    );
}

#[track_caller]
pub fn assert_diagnostics(text: &str, diags: &[Diagnostic]) {
    assert!(!diags.is_empty(), "an error without any diagnostic");
    for d in diags {
        assert_eq!(d.file, Path::new(FILE));
        assert!(
            !d.message.is_empty(),
            "an empty message at {}:{}",
            d.line,
            d.col
        );
        assert_located(
            text,
            Pos {
                line: d.line,
                col: d.col,
            },
            &d.message,
        );
        assert!(
            d.source_line.is_some(),
            "{}:{}: {} is shown without its source line",
            d.line,
            d.col,
            d.message
        );
        // Every way a diagnostic is printed must work.
        let _ = d.human();
        let _ = d.github();
        serde_json::to_string(d).expect("a diagnostic serializes");
    }
}

/// The YAML loader alone: a document with an index, or a located error.
pub fn yaml(text: &str) {
    match steprunner::yaml::load(text) {
        Ok(doc) => {
            // Every pointer the index knows resolves to a position inside the text.
            let _ = doc.index.nearest("");
            serde_json::to_string(&doc.value).expect("a loaded document serializes");
        }
        Err(e) => {
            assert!(!e.message.is_empty());
            assert_located(text, e.pos, &e.message);
        }
    }
}

/// A fixed step, as `runner render` would get from flags.
pub fn step() -> StepInfo {
    StepInfo::resolve(
        None,
        &Overrides {
            step: Some("train".into()),
            pipeline: Some("fuzz".into()),
            requirements: vec!["requests==2.32".into(), "x'; rm -rf ~; '".into()],
            cpus: Some(1.5),
            memory: Some(512 << 20),
            gpus: Some(0),
            entrypoint: vec!["python3".into(), "-m".into(), "train".into()],
            ..Default::default()
        },
    )
    .expect("the fixed step info is valid")
}

/// Load + validate + render, as `runner render` does: a plan or located errors.
pub fn manifest(text: &str, info: &StepInfo) {
    let src = match Source::parse(Path::new(FILE), text.to_string()) {
        Ok(src) => src,
        Err(LoadError::Yaml { source, .. }) => {
            assert_located(text, source.pos, &source.message);
            return;
        }
        Err(other) => panic!("parsing text cannot fail with {other}"),
    };
    let flavor = match steprunner::validate::check_flavor(&src) {
        Ok(f) => f,
        Err(diags) => {
            assert_diagnostics(text, &diags);
            return;
        }
    };
    let home = Home::new("/nonexistent/runner-home");
    let at = Where {
        home: &home,
        run_dir: None,
        run_id: "20260101T000000-train-00000000".into(),
        cwd: PathBuf::from("/nonexistent/work"),
        env: BTreeMap::from([
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ]),
    };
    match render::render(&src, &flavor, info, &at) {
        Ok(plan) => {
            serde_json::to_string(&plan).expect("a plan serializes");
        }
        // Settings errors too are located, at the settings' declarations.
        Err(e) => assert_diagnostics(text, &e.0),
    }
}

/// Step info from a file's text: parsed, or located errors.
pub fn step_info(text: &str) {
    match StepInfo::parse(Path::new(FILE), text.to_string()) {
        Ok(info) => {
            serde_json::to_string(&info).expect("step info serializes");
        }
        Err(InfoError::Invalid(diags)) => assert_diagnostics(text, &diags),
        Err(InfoError::Load(LoadError::Yaml { source, .. })) => {
            assert_located(text, source.pos, &source.message)
        }
        Err(other) => panic!("parsing step info text cannot fail with {other}"),
    }
}

/// The flags of the step info (`--memory`, `--cpus`, `--set`), one per line of the
/// input, parsed as the command line parses them: values, or an error that names the
/// flag or value.
pub fn step_flags(text: &str) {
    let mut lines = text.lines();
    let mut next = || lines.next().map(str::to_string);
    let memory = next().map(|m| steprunner::units::parse_bytes(&m));
    let cpus = next().map(|c| steprunner::units::parse_cpus(&c));
    for e in [
        memory.clone().and_then(Result::err),
        cpus.clone().and_then(Result::err),
    ]
    .into_iter()
    .flatten()
    {
        assert!(!e.to_string().is_empty());
    }
    let flags = Overrides {
        memory: memory.and_then(Result::ok),
        cpus: cpus.and_then(Result::ok),
        set: next().into_iter().collect(),
        step: next(),
        ..Default::default()
    };
    if let Err(e) = StepInfo::resolve(None, &flags) {
        assert!(!e.to_string().is_empty());
    }
}

/// Hostile values a fuzzed script shape is filled with; each touches `$MARK` if it runs.
pub const SCRIPT_VALUES: &[&str] = &[
    "$(touch \"$MARK\")",
    "`touch \"$MARK\"`",
    "a\ntouch \"$MARK\" #",
    "'; touch \"$MARK\"; '",
    "\"; touch \"$MARK\"; \"",
    "a[$(touch \"$MARK\")]",
    "x\nEOF\ntouch \"$MARK\"",
    "-v",
];

/// A script shape (`@` marks an interpolation) through the allowlist: where every hole
/// is allowed, the script filled with each hostile value runs under `sh` in a scratch
/// folder, and no value may touch the marker. The shape runs with a 2 s limit.
pub fn script(shape: &str) {
    use steprunner::template::{FillError, fill_script, script::HOLE};
    if shape.contains([HOLE, '\u{E001}', '\0']) || shape.len() > 2000 {
        return;
    }
    let holes = shape.matches('@').count();
    if holes == 0 || holes > 8 {
        return;
    }
    let marked: String = shape.replace('@', &HOLE.to_string());
    let verdicts = steprunner::template::script::analyze(&marked);
    assert_eq!(verdicts.len(), holes, "one verdict per hole");
    if verdicts.iter().any(Result::is_err) {
        return;
    }
    let dir = tempfile::tempdir().expect("scratch folder");
    let mark = dir.path().join("M4RK");
    for value in SCRIPT_VALUES {
        // The rendered form: markers in order, then filled in by place.
        let mut rendered = String::new();
        let mut n = 0;
        for c in shape.chars() {
            if c == '@' {
                rendered.push_str(&format!("{HOLE}{n}\u{E001}"));
                n += 1;
            } else {
                rendered.push(c);
            }
        }
        let values = vec![minijinja::Value::from(*value); holes];
        let filled = match fill_script(&rendered, &values) {
            Ok(s) => s,
            Err(FillError::ListInOneWord) => continue,
            Err(e) => panic!("allowed at analysis, refused at fill: {e}"),
        };
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&filled)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("MARK", &mark)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sh starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while child.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(
            !mark.exists(),
            "the value {value:?} ran as code in an allowed shape:\n{shape}\nfilled:\n{filled}"
        );
    }
}
