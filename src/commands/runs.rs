//! The run-lifecycle commands: `status`, `wait`, `cancel`, `logs`, `ps`. They read a
//! run's state from its folder alone, so they work after the launching caller exited.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use steprunner::home::{Home, RunDir};
use steprunner::limits::LimitKind;
use steprunner::profile;
use steprunner::report;
use steprunner::runs::{self, State};
use steprunner::units;

use super::{CliError, Exit};

fn resolve(run: &str) -> Result<RunDir, CliError> {
    runs::resolve(&Home::from_env(), run)
        .map_err(|e| CliError::invalid(e.to_string()).hint("`runner ps --all` lists runs"))
}

fn lost_message(s: &runs::Status) -> String {
    if let Some(why) = &s.result_error {
        return format!("run `{}` has a result this runner {why}", s.run_id);
    }
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
            (State::Running, _) => {
                let phase = s.phase.map(|p| format!(" · {p}")).unwrap_or_default();
                let elapsed = s
                    .elapsed_secs
                    .map(|e| format!(" · {e:.1}s"))
                    .unwrap_or_default();
                println!(
                    "{}: running{phase}{elapsed} (supervisor pid {})",
                    s.run_id,
                    s.pid.unwrap_or(0)
                )
            }
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

/// The chart's width: the terminal's (`COLUMNS`), at most 100, 80 when unknown.
fn chart_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|&c| c >= 40)
        .unwrap_or(80)
        .min(100)
}

pub fn show(run: &str, svg: Option<&Path>, json: bool) -> Result<Exit, CliError> {
    let dir = resolve(run)?;
    let s = runs::status(&dir);
    let r = match (&s.state, &s.result) {
        (State::Finished, Some(r)) => r,
        (State::Running, _) => {
            return Err(CliError::invalid(format!(
                "run `{}` is still running: its profile is in its result, once it ends",
                s.run_id
            ))
            .hint(format!("`runner wait {}` waits for it", s.run_id)));
        }
        _ => return Err(CliError::runner(lost_message(&s))),
    };
    let limit = |kind: LimitKind| {
        r.limits
            .iter()
            .find(|l| l.name == kind)
            .and_then(|l| l.value.as_f64())
    };
    let memory_limit = limit(LimitKind::Memory).map(|b| b as u64);
    let cpus_limit = limit(LimitKind::Cpus);
    let peak = r.peak_memory_bytes;
    let suggestion = peak.map(|p| profile::suggestion(p, memory_limit));
    if let (Some(path), Some(p)) = (svg, &r.profile) {
        let title = format!("{} · {} · {}", r.step, r.run_id, r.status.as_str());
        steprunner::util::write_file_atomic(
            path,
            profile::svg(p, memory_limit, cpus_limit, &title).as_bytes(),
        )
        .map_err(|e| CliError::runner(format!("cannot write `{}`: {e}", path.display())))?;
    }
    if json {
        let out = serde_json::json!({
            "run_id": r.run_id,
            "status": r.status,
            "duration_secs": r.duration_secs,
            "peak_memory_bytes": peak,
            "memory_limit_bytes": memory_limit,
            "cpus_limit": cpus_limit,
            "cpu_secs": r.cpu_user_secs.zip(r.cpu_system_secs).map(|(u, s)| u + s),
            "suggested_memory_bytes": peak.map(profile::suggest_memory),
            "suggestion": suggestion,
            "measured_by": r.measured_by,
            "profile": r.profile,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("JSON"));
        return Ok(Exit::Success);
    }
    let summary = report::summary(r);
    let first = summary
        .trim_start_matches("runner: ")
        .lines()
        .next()
        .unwrap_or_default();
    println!(
        "run {} · step `{}`\n{first}",
        r.run_id,
        steprunner::util::shorten(&steprunner::util::printable(&r.step), 40)
    );
    match &suggestion {
        Some(s) => println!("memory: {s}"),
        None => println!("memory: not measured"),
    }
    match &r.profile {
        Some(p) => {
            for line in profile::chart(p, memory_limit, cpus_limit, chart_width()) {
                println!("{line}");
            }
        }
        None => println!(
            "no profile: the runner samples a step it runs in a cgroup, for longer than {}s{}",
            profile::FIRST_INTERVAL.as_secs_f64(),
            if r.measured_by == steprunner::plan::MeasuredBy::Engine {
                " (this step ran on an engine)"
            } else {
                ""
            }
        ),
    }
    if let Some(path) = svg {
        if r.profile.is_some() {
            println!("wrote {}", path.display());
        } else {
            eprintln!("runner: no SVG written: the run has no profile");
        }
    }
    Ok(Exit::Success)
}

/// Copy what `path` holds past `offset` to `out`. `Err` when the reader went away.
fn copy_new(path: &Path, offset: &mut u64, out: &mut impl Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    // As the step may have left it: a FIFO or a link to `/dev/zero` is not followed.
    let Ok((mut f, _)) = steprunner::util::open_run_file(path) else {
        return Ok(());
    };
    f.seek(SeekFrom::Start(*offset))?;
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => {
                out.write_all(&buf[..n])?;
                *offset += n as u64;
            }
        }
    }
}

/// The step's output; before the step started (preparing, or failed in prepare), the
/// prepare commands' logs, each announced on stderr, then the step's once it starts.
pub fn logs(run: &str, follow: bool, stderr: bool) -> Result<Exit, CliError> {
    let dir = resolve(run)?;
    let step_log = if stderr { dir.stderr() } else { dir.stdout() };
    let mut out = std::io::stdout().lock();
    let mut step_started = step_log.exists();
    let mut prepare: BTreeMap<usize, u64> = BTreeMap::new();
    let mut offset = 0u64;
    loop {
        // Look at the state before reading, so bytes written before the end are never missed.
        let running = follow && runs::status(&dir).state == State::Running;
        let copied = (|| -> std::io::Result<()> {
            if !step_started {
                // Before reading: once the step's log exists, prepare is over.
                let starting = step_log.exists();
                for (n, path) in dir.stage_logs("prepare") {
                    let at = prepare.entry(n).or_insert_with(|| {
                        eprintln!("runner: prepare {n} (`{}`)", path.display());
                        0
                    });
                    copy_new(&path, at, &mut out)?;
                }
                if starting {
                    step_started = true;
                    if !prepare.is_empty() {
                        eprintln!("runner: the step (`{}`)", step_log.display());
                    }
                }
            }
            if step_started {
                copy_new(&step_log, &mut offset, &mut out)?;
            }
            out.flush()
        })();
        if copied.is_err() {
            return Ok(Exit::Success); // the reader went away
        }
        if !running {
            if !step_started && prepare.is_empty() {
                return Err(CliError::runner(format!(
                    "run `{}` has no output: its step did not start and no prepare command \
                     ran (`runner status {}` says how it ended)",
                    dir.id(),
                    dir.id()
                )));
            }
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
    /// A running run's stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    phase: Option<runs::Phase>,
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
        phase: s.phase,
        flavor: plan.as_ref().map(|p| p.flavor.clone()).unwrap_or_default(),
        step: plan.as_ref().map(|p| p.step.clone()).unwrap_or_default(),
        started_at: r.map(|r| r.started_at.clone()),
        // A running run's: how long it has run so far.
        duration_secs: r.map(|r| r.duration_secs).or(s.elapsed_secs),
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
    // 80 columns for run ids of common length: the step's name is in its run id.
    let id_width = rows
        .iter()
        .map(|r| r.run_id.len())
        .max()
        .unwrap_or(0)
        .max(6);
    println!(
        "{:<id_width$}  {:<19}  {:<12}  {:>8}",
        "RUN ID", "STATUS", "FLAVOR", "DURATION"
    );
    for r in &rows {
        let status = match r.state {
            State::Running => match r.phase {
                Some(p) => format!("running · {p}"),
                None => "running".into(),
            },
            State::Finished => r.status.clone().unwrap_or_else(|| "finished".into()),
            State::Lost => "lost".into(),
        };
        let duration = r
            .duration_secs
            .map(|d| units::Elapsed(d).to_string())
            .unwrap_or_else(|| "-".into());
        let flavor: String = r.flavor.chars().take(12).collect();
        println!(
            "{:<id_width$}  {status:<19}  {flavor:<12}  {duration:>8}",
            r.run_id
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

pub fn prune(older_than: Duration, dry_run: bool, json: bool) -> Result<Exit, CliError> {
    let home = Home::from_env();
    let pruned = runs::prune(&home, older_than, dry_run);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&pruned).expect("pruned runs serialize")
        );
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    if !json {
        for p in &pruned {
            println!("{verb} {} ({})", p.run_id, units::Bytes(p.size_bytes));
        }
    }
    let freed: u64 = pruned.iter().map(|p| p.size_bytes).sum();
    eprintln!(
        "{verb} {} run{}, {} (`{}`)",
        pruned.len(),
        super::plural(pruned.len()),
        units::Bytes(freed),
        home.runs().display()
    );
    Ok(Exit::Success)
}
