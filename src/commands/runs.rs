//! The run-lifecycle commands: `status`, `wait`, `cancel`, `logs`, `ps`. They read a
//! run's state from its folder alone, so they work after the launching caller exited.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use steprunner::home::{Home, RunDir};
use steprunner::report;
use steprunner::runs::{self, State};

use super::{CliError, Exit};

fn resolve(run: &str) -> Result<RunDir, CliError> {
    runs::resolve(&Home::from_env(), run)
        .map_err(|e| CliError::invalid(e.to_string()).hint("`runner ps --all` lists runs"))
}

fn lost_message(s: &runs::Status) -> String {
    format!(
        "run `{}` is lost: its supervisor died without writing a result (see `{}`)",
        s.run_id,
        RunDir::new(&s.run_dir).supervisor_log().display()
    )
}

pub fn status(run: &str, json: bool) -> Result<Exit, CliError> {
    let dir = resolve(run)?;
    let s = runs::status(&dir);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).expect("status serializes")
        );
    } else {
        match (&s.state, &s.result) {
            (State::Finished, Some(r)) => {
                let summary = report::summary(r);
                println!(
                    "{}: finished · {}",
                    s.run_id,
                    summary.trim_start_matches("runner: ")
                )
            }
            (State::Running, _) => println!(
                "{}: running (supervisor pid {})",
                s.run_id,
                s.pid.unwrap_or(0)
            ),
            _ => println!("{}", lost_message(&s)),
        }
    }
    Ok(Exit::Success)
}

/// Print the result like `launch` does and exit with the step's exit code.
fn finish(s: &runs::Status, json: bool) -> Result<Exit, CliError> {
    match (&s.state, &s.result) {
        (State::Finished, Some(r)) => {
            eprintln!("{}", report::summary(r));
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(r).expect("result serializes")
                );
            }
            Ok(Exit::step(r.exit_code))
        }
        _ => Err(CliError::runner(lost_message(s))),
    }
}

pub fn wait(run: &str, json: bool, timeout: Option<Duration>) -> Result<Exit, CliError> {
    let dir = resolve(run)?;
    match runs::wait(&dir, timeout) {
        Some(s) => finish(&s, json),
        None => {
            eprintln!("runner: `{run}` is still running (gave up waiting; the run goes on)");
            Ok(Exit::StillRunning)
        }
    }
}

pub fn cancel(run: &str, no_wait: bool) -> Result<Exit, CliError> {
    let dir = resolve(run)?;
    let s = runs::status(&dir);
    match (s.state, s.pid) {
        (State::Running, Some(pid)) => {
            // The supervisor recorded with its start time: not a reused pid.
            let pid = nix::unistd::Pid::from_raw(pid);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).map_err(|e| {
                CliError::runner(format!("cannot signal the supervisor (pid {pid}): {e}"))
            })?;
            if no_wait {
                eprintln!("runner: cancelling `{}`", s.run_id);
                return Ok(Exit::Success);
            }
            let s = runs::wait(&dir, None).expect("waits without timeout");
            match &s.result {
                Some(r) => eprintln!("{}", report::summary(r)),
                None => eprintln!("error: {}", lost_message(&s)),
            }
            Ok(Exit::Success)
        }
        (State::Finished, _) => {
            eprintln!("runner: `{}` already finished", s.run_id);
            Ok(Exit::Success)
        }
        _ => Err(CliError::runner(lost_message(&s))),
    }
}

pub fn logs(run: &str, follow: bool, stderr: bool) -> Result<Exit, CliError> {
    let dir = resolve(run)?;
    let path = if stderr { dir.stderr() } else { dir.stdout() };
    let mut out = std::io::stdout().lock();
    let mut offset = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // Look at the state before reading, so bytes written before the end are never missed.
        let running = follow && runs::status(&dir).state == State::Running;
        if let Ok(mut f) = std::fs::File::open(&path) {
            if f.seek(SeekFrom::Start(offset)).is_ok() {
                loop {
                    match f.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if out.write_all(&buf[..n]).is_err() {
                                return Ok(Exit::Success); // reader went away
                            }
                            offset += n as u64;
                        }
                    }
                }
            }
        } else if !running {
            return Err(CliError::runner(format!(
                "`{}` has no output yet",
                path.display()
            )));
        }
        let _ = out.flush();
        if !running {
            return Ok(Exit::Success);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[derive(serde::Serialize)]
struct Row {
    run_id: String,
    state: State,
    status: Option<String>,
    flavor: String,
    step: String,
    started_at: Option<String>,
    duration_secs: Option<f64>,
    run_dir: PathBuf,
}

fn row(dir: &RunDir) -> Row {
    let s = runs::status(dir);
    let plan = runs::read_plan(dir).ok();
    let r = s.result.as_ref();
    Row {
        run_id: s.run_id.clone(),
        state: s.state,
        status: r.map(|r| r.status.as_str().to_string()),
        flavor: plan.as_ref().map(|p| p.flavor.clone()).unwrap_or_default(),
        step: plan.as_ref().map(|p| p.step.clone()).unwrap_or_default(),
        started_at: r.map(|r| r.started_at.clone()),
        duration_secs: r.map(|r| r.duration_secs),
        run_dir: dir.path().to_path_buf(),
    }
}

pub fn ps(json: bool, all: bool) -> Result<Exit, CliError> {
    let dirs = runs::list(&Home::from_env());
    let total = dirs.len();
    let mut rows: Vec<Row> = dirs.iter().map(row).collect();
    if !all {
        let keep_from = total.saturating_sub(10);
        rows = rows
            .into_iter()
            .enumerate()
            .filter(|(i, r)| r.state != State::Finished || *i >= keep_from)
            .map(|(_, r)| r)
            .collect();
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialize")
        );
        return Ok(Exit::Success);
    }
    println!(
        "{:<40} {:<9} {:<14} {:<12} {:<16} {:>9}",
        "RUN ID", "STATE", "STATUS", "FLAVOR", "STEP", "DURATION"
    );
    for r in &rows {
        let state = match r.state {
            State::Running => "running",
            State::Finished => "finished",
            State::Lost => "lost",
        };
        let duration = r
            .duration_secs
            .map(|d| format!("{d:.2}s"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<40} {:<9} {:<14} {:<12} {:<16} {:>9}",
            r.run_id,
            state,
            r.status.as_deref().unwrap_or("-"),
            r.flavor,
            r.step.chars().take(16).collect::<String>(),
            duration
        );
    }
    if !all && rows.len() < total {
        eprintln!(
            "({} older finished runs not shown; `runner ps --all` lists them)",
            total - rows.len()
        );
    }
    Ok(Exit::Success)
}
