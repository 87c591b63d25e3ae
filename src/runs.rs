//! Runs as seen from outside: a run folder holds `plan.json` (written before the
//! step starts), `supervisor.pid` (the process supervising it, with its start
//! time so a reused pid is never mistaken for it) and, once finished,
//! `result.json`. From these alone `runner status | wait | cancel | logs | ps`
//! tell whether a run is running, finished, or lost (its supervisor died
//! without a result) — even after the caller that launched it has exited.

use std::path::PathBuf;
use std::time::{Duration, Instant};

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
    let text = std::fs::read_to_string(dir.pid()).ok()?;
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

#[derive(Debug, Serialize)]
pub struct Status {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub result: Option<Outcome>,
}

pub fn read_result(dir: &RunDir) -> Option<Outcome> {
    let bytes = std::fs::read(dir.result()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn read_plan(dir: &RunDir) -> Result<Plan, RunError> {
    let path = dir.plan();
    let bytes = std::fs::read(&path).map_err(|source| RunError::Read {
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
    Status {
        run_id: result.as_ref().map(|r| r.run_id.clone()).unwrap_or(run_id),
        run_dir: dir.path().to_path_buf(),
        state,
        pid,
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

/// Run folders under `home/runs`, oldest first (run ids start with their UTC time).
pub fn list(home: &Home) -> Vec<RunDir> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(home.runs())
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .map(RunDir::new)
        .filter(|d| d.plan().is_file())
        .collect()
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
