//! Runs as seen from outside: a run folder holds `plan.json` (written before the
//! step starts), `supervisor.pid` (the process supervising it, with its start
//! time so a reused pid is never mistaken for it) and, once finished,
//! `result.json`. From these alone `runner status | wait | cancel | logs | ps`
//! tell whether a run is running, finished, or lost (its supervisor died
//! without a result) — even after the caller that launched it has exited.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::home::{Home, RunDir};
use crate::plan::Plan;
use crate::report::Outcome;
use crate::util::start_time;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no run `{0}` (not a run folder, nor a run id under `{1}`)")]
    NotFound(String, PathBuf),
    #[error("`{0}` matches several runs: {1}")]
    Ambiguous(String, String),
    #[error("cannot read `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Record `pid` as the supervisor of the run in `dir` (atomically).
pub fn write_pid(dir: &RunDir, pid: i32) -> std::io::Result<()> {
    let start = start_time(pid).unwrap_or(0);
    let mut tmp = dir.pid().into_os_string();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{pid} {start}\n"))?;
    std::fs::rename(tmp, dir.pid())
}

/// The supervisor's pid, if it is still the same process.
pub fn live_supervisor(dir: &RunDir) -> Option<i32> {
    let bytes = crate::util::read_run_file(&dir.pid(), 4096).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut it = text.split_whitespace();
    let pid: i32 = it.next()?.parse().ok()?;
    let start: u64 = it.next()?.parse().ok()?;
    (start_time(pid) == Some(start)).then_some(pid)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Finished,
    /// The supervisor died without writing a result.
    Lost,
}

/// Where a running run is, as its folder shows it: the logs a stage writes appear
/// as it starts.
/// In JSON: `{"stage": "prepare", "command": 2}`, `{"stage": "launch"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "stage", content = "command")]
pub enum Phase {
    /// Before any command: reading the plan, waiting for the cache lock, placing limits.
    Starting,
    /// Running prepare command N (1-based, the manifest's numbering).
    Prepare(usize),
    /// Running the step.
    Launch,
    /// Running cleanup command N.
    Cleanup(usize),
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::Starting => write!(f, "starting"),
            Phase::Prepare(n) => write!(f, "prepare {n}"),
            Phase::Launch => write!(f, "launch"),
            Phase::Cleanup(n) => write!(f, "cleanup {n}"),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// A running run's stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// How long a running run has been running (since its supervisor started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_secs: Option<f64>,
    pub result: Option<Outcome>,
    /// Why a `result.json` that exists could not be read (the run is then `lost` to
    /// this runner, although its supervisor did finish).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_error: Option<String>,
}

/// The stage a run is in, from the logs in its folder.
pub fn phase(dir: &RunDir) -> Phase {
    if let Some((n, _)) = dir.stage_logs("cleanup").last() {
        return Phase::Cleanup(*n);
    }
    if dir.stdout().exists() || dir.stderr().exists() {
        return Phase::Launch;
    }
    match dir.stage_logs("prepare").last() {
        Some((n, _)) => Phase::Prepare(*n),
        None => Phase::Starting,
    }
}

/// Time since the supervisor recorded itself.
fn elapsed(dir: &RunDir) -> Option<Duration> {
    let started = std::fs::metadata(dir.pid()).ok()?.modified().ok()?;
    started.elapsed().ok()
}

/// The most of `result.json` or `plan.json` read (either is a few KiB).
const RUN_FILE_LIMIT: u64 = 16 << 20;

pub fn read_result(dir: &RunDir) -> Option<Outcome> {
    try_read_result(dir).ok().flatten()
}

/// The result: `None` before there is one, `Err` when `result.json` exists but cannot
/// be read (damaged, or written by another version).
pub fn try_read_result(dir: &RunDir) -> Result<Option<Outcome>, String> {
    let path = dir.result();
    let bytes = match crate::util::read_run_file(&path, RUN_FILE_LIMIT) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read `{}`: {e}", path.display())),
    };
    let mut r: Outcome = serde_json::from_slice(&bytes)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if r.run_dir.is_empty() {
        r.run_dir = dir.path().display().to_string();
    }
    Ok(Some(r))
}

pub fn read_plan(dir: &RunDir) -> Result<Plan, RunError> {
    let path = dir.plan();
    let bytes =
        crate::util::read_run_file(&path, RUN_FILE_LIMIT).map_err(|source| RunError::Read {
            path: path.clone(),
            source,
        })?;
    serde_json::from_slice(&bytes).map_err(|e| RunError::Read {
        path,
        source: std::io::Error::other(e),
    })
}

pub fn status(dir: &RunDir) -> Status {
    let run_id = dir.id();
    // Read the result before the pid: a supervisor that finishes in between is then
    // seen as finished on the next look, never as lost.
    let result = read_result(dir);
    let pid = if result.is_none() {
        live_supervisor(dir)
    } else {
        None
    };
    let state = match (&result, pid) {
        (Some(_), _) => State::Finished,
        (None, Some(_)) => State::Running,
        (None, None) => match read_result(dir) {
            Some(_) => State::Finished,
            None => State::Lost,
        },
    };
    let result = if state == State::Finished && result.is_none() {
        read_result(dir)
    } else {
        result
    };
    let running = state == State::Running;
    Status {
        run_id: result.as_ref().map(|r| r.run_id.clone()).unwrap_or(run_id),
        run_dir: dir.path().to_path_buf(),
        state,
        pid,
        phase: running.then(|| phase(dir)),
        elapsed_secs: if running {
            elapsed(dir).map(|d| d.as_secs_f64())
        } else {
            None
        },
        result_error: match (state, try_read_result(dir)) {
            (State::Lost, Err(e)) => Some(e),
            _ => None,
        },
        result,
    }
}

/// A run folder path, a run id under `home/runs`, or a unique prefix of one.
pub fn resolve(home: &Home, arg: &str) -> Result<RunDir, RunError> {
    let direct = RunDir::new(arg);
    if direct.plan().is_file() {
        return Ok(direct);
    }
    if !arg.is_empty() && !arg.contains('/') {
        let exact = home.run(arg);
        if exact.plan().is_file() {
            return Ok(exact);
        }
        let matches: Vec<RunDir> = list(home)
            .into_iter()
            .filter(|d| d.id().starts_with(arg))
            .collect();
        match matches.len() {
            1 => return Ok(matches.into_iter().next().expect("one")),
            0 => {}
            _ => {
                let names: Vec<String> = matches.iter().take(5).map(RunDir::id).collect();
                return Err(RunError::Ambiguous(arg.to_string(), names.join(", ")));
            }
        }
    }
    Err(RunError::NotFound(arg.to_string(), home.runs()))
}

/// Where a run folder goes while `prune` removes it: a name `list` never shows.
const PRUNING: &str = ".pruning-";

/// Run folders under `home/runs`, oldest first (run ids start with their UTC time).
pub fn list(home: &Home) -> Vec<RunDir> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(home.runs())
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .map(RunDir::new)
        .filter(|d| d.plan().is_file())
        .collect()
}

/// A run `prune` removed (or would remove).
#[derive(Debug, Serialize)]
pub struct Pruned {
    pub run_id: String,
    pub state: State,
    /// When it ended: its result's time, else (lost) the last write to its folder.
    #[serde(serialize_with = "crate::util::rfc3339_opt")]
    pub ended_at: Option<SystemTime>,
    pub size_bytes: u64,
}

/// When a run that is not running ended: its result was written, or (lost) the last
/// file in its folder changed.
fn ended_at(dir: &RunDir) -> Option<SystemTime> {
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    mtime(&dir.result()).or_else(|| {
        std::fs::read_dir(dir.path())
            .ok()?
            .flatten()
            .filter_map(|e| mtime(&e.path()))
            .max()
    })
}

/// Remove the folders of runs under `home/runs` that ended at least `older_than` ago.
/// A running run is never removed (its supervisor is asked first, and again just
/// before). A folder is renamed out of sight before it is deleted, so no reader sees
/// half a run; what an interrupted prune left is deleted by the next.
pub fn prune(home: &Home, older_than: Duration, dry_run: bool) -> Vec<Pruned> {
    let now = SystemTime::now();
    if !dry_run {
        for e in std::fs::read_dir(home.runs())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(PRUNING) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let mut out = Vec::new();
    for dir in list(home) {
        let s = status(&dir);
        if s.state == State::Running {
            continue;
        }
        let ended = ended_at(&dir);
        let old = ended.is_some_and(|t| now.duration_since(t).unwrap_or_default() >= older_than);
        if !old {
            continue;
        }
        let size_bytes = crate::cache::dir_size(dir.path());
        if !dry_run {
            // A detached run looks lost for the moment between its plan and its
            // supervisor's pid; it is then new, hence not old enough, but ask again.
            if live_supervisor(&dir).is_some() {
                continue;
            }
            let hidden = home.runs().join(format!("{PRUNING}{}", dir.id()));
            if std::fs::rename(dir.path(), &hidden).is_err() {
                continue;
            }
            let _ = std::fs::remove_dir_all(&hidden);
        }
        out.push(Pruned {
            run_id: s.run_id,
            state: s.state,
            ended_at: ended,
            size_bytes,
        });
    }
    out
}

/// Wait until the run is no longer running. `None` when `timeout` passed first.
pub fn wait(dir: &RunDir, timeout: Option<Duration>) -> Option<Status> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut pause = Duration::from_millis(10);
    loop {
        let s = status(dir);
        if s.state != State::Running {
            return Some(s);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_or_reused_pid_is_not_a_live_supervisor() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::new(tmp.path());
        std::fs::write(dir.plan(), "{}").unwrap();
        write_pid(&dir, std::process::id() as i32).unwrap();
        assert_eq!(live_supervisor(&dir), Some(std::process::id() as i32));
        assert_eq!(status(&dir).state, State::Running);
        // Same pid, another start time: a reused pid.
        std::fs::write(dir.pid(), format!("{} 1\n", std::process::id())).unwrap();
        assert_eq!(live_supervisor(&dir), None);
        assert_eq!(status(&dir).state, State::Lost);
    }

    /// A result from before `run_dir` existed is read, its folder filled in; one that
    /// cannot be read says why instead of calling the supervisor dead.
    #[test]
    fn old_and_damaged_results() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::new(tmp.path());
        std::fs::write(dir.plan(), "{}").unwrap();
        std::fs::write(dir.result(), "{\"version\": 1,").unwrap();
        let s = status(&dir);
        assert_eq!(s.state, State::Lost);
        let why = s.result_error.expect("a reason");
        assert!(why.starts_with("cannot read `"), "{why}");

        let out = crate::report::tests::success();
        let mut old = serde_json::to_value(&out).unwrap();
        old.as_object_mut().unwrap().remove("run_dir");
        std::fs::write(dir.result(), old.to_string()).unwrap();
        let s = status(&dir);
        assert_eq!(s.state, State::Finished);
        assert_eq!(s.result.unwrap().run_dir, tmp.path().display().to_string());
    }

    #[test]
    fn runs_resolve_by_path_id_and_unique_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path());
        for id in [
            "20261128T050000-a-11111111",
            "20261128T060000-b-22222222",
            "20261128T060000-b-33333333",
        ] {
            let d = home.run(id);
            std::fs::create_dir_all(d.path()).unwrap();
            std::fs::write(d.plan(), "{}").unwrap();
        }
        let r = |a: &str| resolve(&home, a).map(|d| d.id());
        assert_eq!(
            r("20261128T050000-a-11111111").unwrap(),
            "20261128T050000-a-11111111"
        );
        assert_eq!(r("20261128T05").unwrap(), "20261128T050000-a-11111111");
        assert!(matches!(r("20261128T06"), Err(RunError::Ambiguous(..))));
        assert!(matches!(r("nope"), Err(RunError::NotFound(..))));
        let path = home.run("20261128T060000-b-22222222");
        assert_eq!(resolve(&home, path.path().to_str().unwrap()).unwrap(), path);
    }
}
