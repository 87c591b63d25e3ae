//! The run-lifecycle commands of the binary: `status`, `wait`, `cancel`, `logs`,
//! `ps`, and `supervise` (what `launch --detach` leaves running).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use steprunner::cli::{CacheCmd, FlavorCmd};
use steprunner::runs::{self, State};
use steprunner::{cache, diag, exec, registry, report, units, util, validate};

use crate::{EXIT_INVALID, EXIT_RUNNER, error_chain};

/// Exit code of `wait --timeout` when the run is still going.
const EXIT_WAIT_TIMEOUT: u8 = 124;

fn resolve(run: &str) -> Result<PathBuf, ExitCode> {
    runs::resolve(&util::runner_home(), run).map_err(|e| {
        eprintln!("error: {e}\n  = hint: `runner ps --all` lists runs");
        ExitCode::from(EXIT_INVALID)
    })
}

fn lost_message(s: &runs::Status) -> String {
    format!(
        "run `{}` is lost: its supervisor died without writing a result (see `{}`)",
        s.run_id,
        s.run_dir.join("supervisor.log").display()
    )
}

pub fn status(run: &str, json: bool) -> ExitCode {
    let dir = match resolve(run) {
        Ok(d) => d,
        Err(c) => return c,
    };
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
    ExitCode::SUCCESS
}

/// Print the result like `launch` does and exit with the step's exit code.
fn finish(s: &runs::Status, json: bool) -> ExitCode {
    match (&s.state, &s.result) {
        (State::Finished, Some(r)) => {
            eprintln!("{}", report::summary(r));
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(r).expect("result serializes")
                );
            }
            ExitCode::from(r.exit_code.clamp(0, 255) as u8)
        }
        _ => {
            eprintln!("error: {}", lost_message(s));
            ExitCode::from(EXIT_RUNNER)
        }
    }
}

pub fn wait(run: &str, json: bool, timeout: Option<&str>) -> ExitCode {
    let timeout = match timeout.map(units::parse_duration).transpose() {
        Ok(t) => t.map(Duration::from_secs_f64),
        Err(e) => {
            eprintln!("error: --timeout: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let dir = match resolve(run) {
        Ok(d) => d,
        Err(c) => return c,
    };
    match runs::wait(&dir, timeout) {
        Some(s) => finish(&s, json),
        None => {
            eprintln!("runner: `{run}` is still running (gave up waiting; the run goes on)");
            ExitCode::from(EXIT_WAIT_TIMEOUT)
        }
    }
}

pub fn cancel(run: &str, no_wait: bool) -> ExitCode {
    let dir = match resolve(run) {
        Ok(d) => d,
        Err(c) => return c,
    };
    let s = runs::status(&dir);
    match (s.state, s.pid) {
        (State::Running, Some(pid)) => {
            // SAFETY: kill(2) on the supervisor recorded with its start time.
            if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
                eprintln!(
                    "error: cannot signal the supervisor (pid {pid}): {}",
                    std::io::Error::last_os_error()
                );
                return ExitCode::from(EXIT_RUNNER);
            }
            if no_wait {
                eprintln!("runner: cancelling `{}`", s.run_id);
                return ExitCode::SUCCESS;
            }
            let s = runs::wait(&dir, None).expect("waits without timeout");
            match &s.result {
                Some(r) => eprintln!("{}", report::summary(r)),
                None => eprintln!("error: {}", lost_message(&s)),
            }
            ExitCode::SUCCESS
        }
        (State::Finished, _) => {
            eprintln!("runner: `{}` already finished", s.run_id);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("error: {}", lost_message(&s));
            ExitCode::from(EXIT_RUNNER)
        }
    }
}

pub fn logs(run: &str, follow: bool, stderr: bool) -> ExitCode {
    let dir = match resolve(run) {
        Ok(d) => d,
        Err(c) => return c,
    };
    let path = dir.join(if stderr { "stderr.log" } else { "stdout.log" });
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
                                return ExitCode::SUCCESS; // reader went away
                            }
                            offset += n as u64;
                        }
                    }
                }
            }
        } else if !running {
            eprintln!("error: `{}` has no output yet", path.display());
            return ExitCode::from(EXIT_RUNNER);
        }
        let _ = out.flush();
        if !running {
            return ExitCode::SUCCESS;
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

fn row(dir: &Path) -> Row {
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
        run_dir: dir.to_path_buf(),
    }
}

pub fn ps(json: bool, all: bool) -> ExitCode {
    let dirs = runs::list(&util::runner_home());
    let total = dirs.len();
    let mut rows: Vec<Row> = dirs.iter().map(|d| row(d)).collect();
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
        return ExitCode::SUCCESS;
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
    ExitCode::SUCCESS
}

/// The detached supervisor: run the plan in `run_dir` and write its result.
pub fn supervise(run_dir: &Path, opts: exec::Options) -> ExitCode {
    let plan = match runs::read_plan(run_dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            return ExitCode::from(EXIT_RUNNER);
        }
    };
    // The step's own variables reach this process through its environment only.
    let secrets = plan
        .secret_env
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
        .collect();
    crate::run_and_report(&plan, &secrets, &opts)
}

fn age(t: Option<std::time::SystemTime>) -> String {
    let Some(t) = t else { return "-".into() };
    let secs = t.elapsed().unwrap_or_default().as_secs();
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

pub fn cache_cmd(cmd: CacheCmd) -> ExitCode {
    let dir = util::runner_home().join("cache");
    match cmd {
        CacheCmd::List { json } => {
            let entries = cache::list(&dir);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&entries).expect("entries serialize")
                );
                return ExitCode::SUCCESS;
            }
            println!(
                "{:<16} {:<14} {:>10} {:>10}  STATE",
                "KEY", "FLAVOR", "SIZE", "LAST USED"
            );
            for e in &entries {
                let state = match (e.in_use, e.complete) {
                    (true, _) => "in use",
                    (false, true) => "ready",
                    (false, false) => "unfinished",
                };
                println!(
                    "{:<16} {:<14} {:>10} {:>10}  {state}",
                    e.key,
                    e.flavor,
                    units::Bytes(e.size_bytes).to_string(),
                    age(e.last_used)
                );
            }
            let total: u64 = entries.iter().map(|e| e.size_bytes).sum();
            eprintln!(
                "{} entr{} · {} in `{}`",
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" },
                units::Bytes(total),
                dir.display()
            );
            ExitCode::SUCCESS
        }
        CacheCmd::Prune {
            older_than,
            max_size,
            dry_run,
        } => {
            let older = match older_than.as_deref().map(units::parse_duration).transpose() {
                Ok(d) => d.map(Duration::from_secs_f64),
                Err(e) => {
                    eprintln!("error: --older-than: {e}");
                    return ExitCode::from(EXIT_INVALID);
                }
            };
            let max = match max_size.as_deref().map(units::parse_bytes).transpose() {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("error: --max-size: {e}");
                    return ExitCode::from(EXIT_INVALID);
                }
            };
            let removed = cache::prune(&dir, older, max, dry_run);
            let verb = if dry_run { "would remove" } else { "removed" };
            for e in &removed {
                println!(
                    "{verb} {} ({}, {})",
                    e.name,
                    units::Bytes(e.size_bytes),
                    age(e.last_used)
                );
            }
            let freed: u64 = removed.iter().map(|e| e.size_bytes).sum();
            eprintln!(
                "{verb} {} entr{}, {}",
                removed.len(),
                if removed.len() == 1 { "y" } else { "ies" },
                units::Bytes(freed)
            );
            if let Some(older) = older {
                let stamps = validate::stamps_dir(&util::runner_home());
                let n = validate::prune_stamps(&stamps, older, dry_run);
                eprintln!(
                    "{verb} {n} remembered manifest check{} (`{}`)",
                    if n == 1 { "" } else { "s" },
                    stamps.display()
                );
            }
            ExitCode::SUCCESS
        }
    }
}

pub fn flavor_cmd(cmd: FlavorCmd) -> ExitCode {
    let home = util::runner_home();
    match cmd {
        FlavorCmd::Register { path, force } => match registry::register(&home, &path, force) {
            Ok((name, dest, how)) => {
                let what = match how {
                    registry::Registered::New => "registered",
                    registry::Registered::Unchanged => "already registered, unchanged:",
                    registry::Registered::Replaced => "replaced",
                };
                eprintln!("{what} flavor `{name}` (`{}`)", dest.display());
                ExitCode::SUCCESS
            }
            Err(registry::RegistryError::Invalid(_, diags)) => {
                diag::emit(&diags, diag::Format::Human);
                ExitCode::from(EXIT_INVALID)
            }
            Err(e @ registry::RegistryError::Exists { .. }) => {
                eprintln!("error: {e}\n  = hint: `--force` replaces it");
                ExitCode::from(EXIT_INVALID)
            }
            Err(e) => {
                eprintln!("error: {}", error_chain(&e));
                ExitCode::from(EXIT_RUNNER)
            }
        },
        FlavorCmd::List => {
            let all = registry::list(&home);
            for (name, description, _) in &all {
                println!("{name:<16} {description}");
            }
            if all.is_empty() {
                eprintln!("no registered flavors; `runner flavor register PATH` adds one");
            }
            ExitCode::SUCCESS
        }
        FlavorCmd::Show { name } => match registry::find(&home, &name).map(std::fs::read_to_string)
        {
            Some(Ok(text)) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            _ => {
                eprintln!("error: {}", registry::RegistryError::NotFound(name));
                ExitCode::from(EXIT_INVALID)
            }
        },
    }
}
