//! Helpers shared by every test module: run the real `runner` binary in a
//! throw-away `RUNNER_HOME`, and read the `# expect:` header of a fixture.

// Each helper is used by some modules and not others.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

/// The crate root: relative paths in tests (`manifests/venv.yaml`) are resolved from here.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `runner` invocation being built: working directory the crate root, stdin empty,
/// `RUNNER_HOME` a fresh temporary folder that lives as long as the [`Output`].
pub struct Runner {
    cmd: Command,
    home: TempDir,
}

/// What a finished `runner` did.
#[derive(Debug)]
pub struct Output {
    /// The exit code (`-1` when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The `RUNNER_HOME` it ran with (removed when this is dropped).
    pub home: TempDir,
}

impl Runner {
    pub fn new() -> Runner {
        let home = tempfile::Builder::new()
            .prefix("runner-home-")
            .tempdir()
            .expect("temporary RUNNER_HOME");
        let mut cmd = Command::cargo_bin("runner").expect("the `runner` binary is built");
        cmd.current_dir(root())
            .env("RUNNER_HOME", home.path())
            .env_remove("XDG_STATE_HOME")
            .env("NO_COLOR", "1")
            .write_stdin("");
        Runner { cmd, home }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Runner {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Runner
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Runner {
        self.cmd.env(key, value);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Runner {
        self.cmd.current_dir(dir);
        self
    }

    /// The `RUNNER_HOME` the command will run with.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn run(mut self) -> Output {
        let out = self.cmd.output().expect("runner starts");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            home: self.home,
        }
    }
}

/// Run `runner ARGS…` from the crate root in a fresh `RUNNER_HOME`.
pub fn runner<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Runner::new().args(args).run()
}

impl Output {
    /// Panic with everything the command printed unless it exited with `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Output {
        assert_eq!(
            self.code, code,
            "expected exit code {code}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e})\n--- stdout\n{}\n--- stderr\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// What a fixture's first line promises: `# expect: LINE:COL SUBSTRING`.
#[derive(Debug)]
pub struct Expect {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

pub fn expectation(path: &Path) -> Expect {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let header = text.lines().next().unwrap_or_default();
    let parse = || -> Option<Expect> {
        let rest = header.strip_prefix("# expect: ")?;
        let (pos, message) = rest.split_once(' ')?;
        let (line, col) = pos.split_once(':')?;
        Some(Expect {
            line: line.parse().ok()?,
            col: col.parse().ok()?,
            message: message.trim().to_string(),
        })
    };
    parse().unwrap_or_else(|| {
        panic!(
            "{}: first line must be `# expect: LINE:COL SUBSTRING`, found {header:?}",
            path.display()
        )
    })
}

/// The `*.yaml` files of a fixture folder (relative to the crate root), sorted.
pub fn fixtures(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| Path::new(dir).join(p.file_name().expect("file name")))
        .collect();
    files.sort();
    files
}

/// Check that a run failed with exit 2 and that its first located diagnostic is the one
/// the fixture's header promises. Returns a description of the mismatch, if any.
pub fn check_first_diagnostic(fixture: &Path, out: &Output) -> Result<(), String> {
    let want = expectation(&root().join(fixture));
    let located = format!("{}:{}:{}", fixture.display(), want.line, want.col);
    let first = out
        .stderr
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("--> "))
        .unwrap_or("<none>");
    let first_message = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or("<none>");
    let mut problems = Vec::new();
    if out.code != 2 {
        problems.push(format!("exit code {} (expected 2)", out.code));
    }
    if first != located {
        problems.push(format!(
            "first diagnostic at `{first}`, expected `{located}`"
        ));
    }
    if !first_message.contains(&want.message) {
        problems.push(format!(
            "first message `{first_message}` does not contain `{}`",
            want.message
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}\n--- stderr\n{}",
            fixture.display(),
            problems.join("; "),
            out.stderr
        ))
    }
}

/// `ignores:` for every step-info field: what a test manifest that uses none of them
/// declares, so that `runner validate` checks what the test is about.
pub const IGNORES_ALL: &str = "ignores:\n  resources.cpu_count: unused\n  \
    resources.gpu_count: unused\n  resources.memory: unused\n  requirements.pip: unused\n  \
    requirements.apt: unused\n  requirements.parent_image: unused\n  \
    requirements.environment: unused\n";

/// A runner home that another user (the tests become `nobody`) can write.
pub fn home_for_anyone() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    home
}

/// Root is needed to create cgroups. Outside CI a non-root run skips, loudly.
pub fn needs_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("this test needs root (it creates cgroups) and CI=true forbids skipping it");
    }
    eprintln!("skipped: needs root");
    false
}

/// The variable `name` that `eval "$(bash .ci/engines/ENGINE.sh start)"` sets for the
/// tests of an engine, or `None` after saying the test is skipped. Under `CI=true` a
/// missing engine fails the test instead: CI starts every engine.
pub fn engine_var(name: &str, engine: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let start = format!("eval \"$(bash .ci/engines/{engine}.sh start)\"");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "this test needs {name}, and CI=true forbids skipping it: `{start}` sets it"
            );
            eprintln!("skipped: {name} is not set (`{start}` sets it)");
            None
        }
    }
}

/// The result's `name` limit (a test fails when it is not listed).
#[track_caller]
pub fn limit<'a>(result: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    result["limits"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == name))
        .unwrap_or_else(|| panic!("no `{name}` limit in {result}"))
}

/// The last 80 lines of `text`, for a failure's message.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}

/// Processes whose command line contains `marker` (other than this test).
pub fn processes_with(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) {
                found.push(pid);
            }
        }
    }
    found
}

/// Start `runner launch --json -q ARGS…` in the background, from the crate root.
pub fn spawn_runner(home: &Path, args: &[&str]) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("runner"))
        .current_dir(root())
        .env("RUNNER_HOME", home)
        .args(["launch", "--json", "-q"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runner starts")
}

/// Wait until a step signals readiness by creating `path`.
pub fn wait_for(path: &Path, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "`{}` never appeared within {within:?}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
