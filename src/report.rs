//! The run's result: the [`Outcome`] written as JSON (`schemas/result.schema.json`),
//! the exit-code mapping of DESIGN.md, and the one-line human summary for stderr.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::Bytes;

pub use crate::limits::Enforcement;
use crate::limits::LimitKind;
/// Current `version` of the result format.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Succeeded,
    Failed,
    TimedOut,
    OomKilled,
    Cancelled,
    PrepareFailed,
    LaunchError,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::OomKilled => "oom_killed",
            Status::Cancelled => "cancelled",
            Status::PrepareFailed => "prepare_failed",
            Status::LaunchError => "launch_error",
        }
    }
}

/// How a run ended, as the supervisor saw it; [`Ending::status`],
/// [`Ending::exit_code`] and [`Ending::signal`] fill the matching [`Outcome`] fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The step exited by itself with this code (0 is success).
    Exited(i32),
    /// The step was killed by this signal, not by us.
    Signaled(i32),
    /// Over its timeout; `signal` is what finally killed it, when it had to be.
    TimedOut {
        signal: Option<i32>,
    },
    /// Killed by the out-of-memory killer of its cgroup.
    OomKilled {
        signal: Option<i32>,
    },
    /// The runner received `received` (SIGINT, SIGTERM, SIGHUP) and stopped the step.
    Cancelled {
        received: i32,
    },
    PrepareFailed,
    LaunchError(LaunchFailure),
}

/// Why a step could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchFailure {
    /// The command does not exist (`ENOENT`): exit 127, like a shell.
    NotFound,
    /// It exists but cannot be executed (`EACCES`, `ENOEXEC`): exit 126.
    NotExecutable,
    /// Anything else: a limit that cannot be enforced, a failed fork: exit 125.
    Other,
}

impl Ending {
    pub fn status(&self) -> Status {
        match self {
            Ending::Exited(0) => Status::Succeeded,
            Ending::Exited(_) | Ending::Signaled(_) => Status::Failed,
            Ending::TimedOut { .. } => Status::TimedOut,
            Ending::OomKilled { .. } => Status::OomKilled,
            Ending::Cancelled { .. } => Status::Cancelled,
            Ending::PrepareFailed => Status::PrepareFailed,
            Ending::LaunchError(_) => Status::LaunchError,
        }
    }

    /// The runner's exit code (DESIGN.md, "Exit codes and result").
    pub fn exit_code(&self) -> i32 {
        match *self {
            Ending::Exited(0) => 0,
            Ending::Exited(n @ 1..=255) => n,
            // Not a Unix exit status; still a failure, never mistaken for success.
            Ending::Exited(_) => 1,
            Ending::Signaled(s) => 128 + s,
            Ending::TimedOut { .. } => 124,
            Ending::OomKilled { .. } => 137,
            Ending::Cancelled { received } => 128 + received,
            Ending::PrepareFailed | Ending::LaunchError(LaunchFailure::Other) => 125,
            Ending::LaunchError(LaunchFailure::NotExecutable) => 126,
            Ending::LaunchError(LaunchFailure::NotFound) => 127,
        }
    }

    /// The `signal` of the result: what killed the step, or for `cancelled` the
    /// signal the runner received.
    pub fn signal(&self) -> Option<i32> {
        match *self {
            Ending::Signaled(s) | Ending::Cancelled { received: s } => Some(s),
            Ending::TimedOut { signal } | Ending::OomKilled { signal } => signal,
            _ => None,
        }
    }
}

/// What the result file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    pub version: u32,
    pub run_id: String,
    /// The run's folder: plan, logs, result. (Results written before this field
    /// existed lack it; `runs::read_result` fills it in.)
    #[serde(default)]
    pub run_dir: String,
    pub flavor: String,
    pub step: String,
    pub status: Status,
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub message: Option<String>,
    pub started_at: String,
    pub duration_secs: f64,
    pub stages: Stages,
    pub cache: Option<CacheInfo>,
    pub peak_memory_bytes: Option<u64>,
    pub cpu_user_secs: Option<f64>,
    pub cpu_system_secs: Option<f64>,
    pub oom_kills: u64,
    /// Who measured `peak_memory_bytes`, the CPU times and `oom_kills`.
    #[serde(default)]
    pub measured_by: crate::plan::MeasuredBy,
    /// The launch command's own use on this machine, when it was an engine's client
    /// (`measured_by: engine`): never presented as the step's.
    #[serde(default)]
    pub client: Option<Usage>,
    /// The step's memory and CPU use over the launch, sampled from its cgroup.
    #[serde(default)]
    pub profile: Option<crate::profile::Profile>,
    pub leftover_processes_killed: u64,
    pub limits: Vec<LimitRecord>,
    /// How the step was kept from undoing its limits; null when it never started.
    pub containment: Option<crate::contain::Report>,
    pub logs: Logs,
    pub cleanup_error: Option<String>,
    pub warnings: Vec<String>,
}

impl Outcome {
    /// Set `status`, `exit_code` and `signal` from how the run ended.
    pub fn set_ending(&mut self, ending: Ending) {
        self.status = ending.status();
        self.exit_code = ending.exit_code();
        self.signal = ending.signal();
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stages {
    pub prepare: Option<StageTiming>,
    pub launch: Option<StageTiming>,
    pub cleanup: Option<StageTiming>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageTiming {
    pub duration_secs: f64,
    pub exit_code: Option<i32>,
    pub status: StageStatus,
    pub commands: u32,
}

/// How one stage ended. Prepare and cleanup end `ok`, `cached` (prepare), `failed`,
/// `timed_out`, `cancelled` or `stopped` (cleanup cut short); the launch stage ends
/// with the run's own [`Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    Ok,
    Cached,
    Skipped,
    Stopped,
    Succeeded,
    Failed,
    TimedOut,
    OomKilled,
    Cancelled,
    PrepareFailed,
    LaunchError,
}

impl From<Status> for StageStatus {
    fn from(s: Status) -> StageStatus {
        match s {
            Status::Succeeded => StageStatus::Succeeded,
            Status::Failed => StageStatus::Failed,
            Status::TimedOut => StageStatus::TimedOut,
            Status::OomKilled => StageStatus::OomKilled,
            Status::Cancelled => StageStatus::Cancelled,
            Status::PrepareFailed => StageStatus::PrepareFailed,
            Status::LaunchError => StageStatus::LaunchError,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheInfo {
    pub hit: bool,
    pub key: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRecord {
    pub name: LimitKind,
    /// Bytes for memory and sizes, cores for cpus, seconds for times, a count
    /// otherwise; for gpus the list of visible device ids.
    pub value: serde_json::Value,
    pub enforced_by: Enforcement,
    /// The step could not undo it (raise it, leave its cgroup, reset its environment).
    pub contained: bool,
}

/// What a process tree used, as the runner measured it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    pub peak_memory_bytes: Option<u64>,
    pub cpu_user_secs: Option<f64>,
    pub cpu_system_secs: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    pub stdout: String,
    pub stderr: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub truncated: bool,
}

pub use crate::util::rfc3339;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write result file `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot serialize the result")]
    Serialize(#[source] serde_json::Error),
}

/// Write `outcome` as pretty JSON with a trailing newline, atomically: a reader (or a
/// runner killed half-way) sees either no file (or the previous one) or the whole new
/// one.
///
/// Into the space set aside when the run started (`.result.reserve` beside `path`,
/// see [`reserve`]), then renamed to `path`: its blocks are allocated, so the write
/// cannot meet a full disk (a step that filled it still gets its result) and no fsync
/// is needed to learn that it did not; no file is made or removed (on an ext4 without
/// a journal each new inode scans past those freed in the last seconds). Without a
/// usable reserve (none, replaced, too small), into a new `<path>.tmp.<pid>.<n>`,
/// fsynced so that a full disk shows here, then renamed.
///
/// No fsync for power loss: the two it took (file and directory) were 1.2 ms of a
/// 14 ms launch. They only matter if the machine loses power within seconds of the
/// step's end; the run then reads as `lost` (no valid result, no supervisor), which is
/// what it is.
pub fn write_atomic(path: &Path, outcome: &Outcome) -> Result<(), ReportError> {
    let mut json = serde_json::to_vec_pretty(outcome).map_err(ReportError::Serialize)?;
    json.push(b'\n');
    let reserve = path.with_file_name(".result.reserve");
    if write_into_reserve(&reserve, &json).is_ok() && std::fs::rename(&reserve, path).is_ok() {
        return Ok(());
    }
    let fail = |source| ReportError::Write {
        path: path.to_owned(),
        source,
    };
    // A new file of a name no one could plant first: never written through a symlink
    // or into a file the step made.
    let mut made = None;
    let mut last = io::Error::other("no temporary name");
    for n in 0..16u32 {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp.{}.{n}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => {
                made = Some((tmp, f));
                break;
            }
            Err(e) => last = e,
        }
    }
    let (tmp, mut f) = made.ok_or_else(|| fail(last))?;
    if let Err(e) = f.write_all(&json).and_then(|()| f.sync_all()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    let _ = std::fs::remove_file(&reserve);
    Ok(())
}

/// Bytes set aside for the result when a run starts: far more than a result takes.
pub const RESERVE_BYTES: u64 = 256 << 10;

/// Set aside [`RESERVE_BYTES`] at `path` (allocated, not a sparse file).
pub fn reserve(path: &Path) -> io::Result<()> {
    use nix::fcntl::{FallocateFlags, fallocate};
    let f = OpenOptions::new().write(true).create_new(true).open(path)?;
    if fallocate(&f, FallocateFlags::empty(), 0, RESERVE_BYTES as libc::off_t).is_err() {
        // A filesystem without fallocate: written zeros reserve the space too.
        f.set_len(0)?;
        std::io::Write::write_all(&mut &f, &vec![0u8; RESERVE_BYTES as usize])?;
    }
    Ok(())
}

/// The result written into the reserved file's allocated blocks (no new space needed),
/// then cut to its length. Only into the file set aside: a regular file of ours, of the
/// reserved length with its blocks allocated, linked once. What a step may have put in
/// its place is refused without being opened for writing (a symlink, a hard link to
/// another file, a FIFO that would block the open until someone reads it, a device).
fn write_into_reserve(reserve: &Path, json: &[u8]) -> io::Result<()> {
    if json.len() as u64 > RESERVE_BYTES {
        return Err(io::Error::other(
            "the result is larger than the reserved space",
        ));
    }
    use std::os::unix::fs::MetadataExt;
    let replaced = || io::Error::other("the reserved space was replaced");
    // Looked at before it is opened (a device is not opened at all), opened as a step
    // may have left it, and what was opened must be what was looked at.
    let named = std::fs::symlink_metadata(reserve)?;
    if !named.file_type().is_file() {
        return Err(replaced());
    }
    let (mut f, m) = crate::util::open_regular(OpenOptions::new().write(true), reserve)?;
    // The file set aside, not one put in its place (a link to another file).
    if (m.dev(), m.ino()) != (named.dev(), named.ino()) {
        return Err(replaced());
    }
    let ours = m.uid() == nix::unistd::geteuid().as_raw();
    let allocated = m.blocks() * 512 >= RESERVE_BYTES;
    if !m.is_file() || m.nlink() != 1 || m.len() != RESERVE_BYTES || !ours || !allocated {
        return Err(replaced());
    }
    f.write_all(json)?;
    f.set_len(json.len() as u64)
}

/// The summary for stderr, wrapped at 80 columns: how the run ended and what it used,
/// then where it is. E.g.
///
/// ```text
/// runner: succeeded in 1.23s · exit 0 · peak memory 12.3 MiB · cpu 0.45s user
///         0.02s system
///         run r-1 in /runs/r-1 (stdout.log, stderr.log, result.json)
/// ```
///
/// A step that failed by itself says `the step exited N`, so its exit code is never
/// taken for the runner's own (2: invalid input; 125: could not run it).
pub fn summary(outcome: &Outcome) -> String {
    let mut parts = vec![format!(
        "runner: {} in {}",
        outcome.status.as_str(),
        format_secs(outcome.duration_secs)
    )];
    let step_exit = outcome.status == Status::Failed && outcome.signal.is_none();
    parts.push(if step_exit {
        format!("the step exited {}", outcome.exit_code)
    } else {
        format!("exit {}", outcome.exit_code)
    });
    let signal = outcome
        .signal
        .map(|s| format!("{} ({s})", crate::signals::name(s)));
    let killed_by = outcome
        .signal
        .map(|s| format!("killed by {}", crate::signals::name(s)));
    match (outcome.status, signal) {
        (Status::Cancelled, Some(name)) => parts.push(format!("received {name}")),
        (_, Some(name)) => parts.push(format!("killed by {name}")),
        _ => {}
    }
    match outcome.status {
        Status::OomKilled => parts.push(match limit_value(outcome, LimitKind::Memory) {
            Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => {
                format!(
                    "memory limit {} reached",
                    crate::units::exact_bytes(n.as_u64().unwrap_or(0))
                )
            }
            _ => "out of memory".to_owned(),
        }),
        Status::TimedOut => {
            if let Some(serde_json::Value::Number(n)) = limit_value(outcome, LimitKind::Timeout)
                && let Some(secs) = n.as_f64()
            {
                parts.push(format!("timeout {} reached", format_timeout(secs)));
            }
        }
        _ => {}
    }
    if let Some(message) = &outcome.message
        && Some(message) != killed_by.as_ref()
    {
        parts.push(crate::util::printable(message).into_owned());
    }
    if outcome.cache.as_ref().is_some_and(|c| c.hit) {
        parts.push("prepare cached".to_owned());
    }
    // Whose numbers they are, when not the runner's own measurement of the step.
    let by = if outcome.measured_by.is_runner() {
        ""
    } else {
        " (by the engine)"
    };
    if let Some(peak) = outcome.peak_memory_bytes {
        parts.push(format!("peak memory {}{by}", Bytes(peak)));
    }
    match (outcome.cpu_user_secs, outcome.cpu_system_secs) {
        (None, None) => {}
        (user, system) => parts.push(format!(
            "cpu {} user {} system{by}",
            format_secs(user.unwrap_or(0.0)),
            format_secs(system.unwrap_or(0.0))
        )),
    }
    let unmeasured = outcome.peak_memory_bytes.is_none() && outcome.cpu_user_secs.is_none();
    if !outcome.measured_by.is_runner() && unmeasured && outcome.stages.launch.is_some() {
        parts.push("the engine reported no memory or CPU use".to_owned());
    }
    if outcome.leftover_processes_killed > 0 {
        parts.push(format!(
            "{} leftover processes killed",
            outcome.leftover_processes_killed
        ));
    }
    if outcome.cleanup_error.is_some() {
        parts.push("cleanup failed".to_owned());
    }
    // What was asked for and not enforced is said here, not only counted as a warning
    // (when the step ran: a run refused before it says why in its message).
    let ran = outcome.stages.launch.is_some();
    // The limits of each kind that must be said, by name.
    let said = |which: &dyn Fn(&LimitRecord) -> bool| -> Vec<&str> {
        let names = outcome.limits.iter().filter(|_| ran).filter(|l| which(l));
        names.map(|l| l.name.as_str()).collect()
    };
    let none = said(&|l| l.enforced_by == Enforcement::None);
    let scheduled = said(&|l| l.enforced_by == Enforcement::Scheduler);
    let undoable = said(&|l| {
        !matches!(l.enforced_by, Enforcement::None | Enforcement::Scheduler)
            && !l.contained
            && l.name != LimitKind::Gpus
    });
    for (names, what) in [
        (none, "NOT enforced"),
        (scheduled, "only scheduled, NOT enforced"),
        (undoable, "the step could undo"),
    ] {
        if !names.is_empty() {
            parts.push(format!("{what}: {}", names.join(", ")));
        }
    }
    match outcome.warnings.len() {
        0 => {}
        1 => parts.push("1 warning".to_owned()),
        n => parts.push(format!("{n} warnings")),
    }
    let mut text = crate::wrap::parts(&parts, " · ", crate::wrap::WIDTH, "        ");
    // Where the run is: its folder, and what in it exists.
    let logs = &outcome.logs;
    if !outcome.run_dir.is_empty() {
        let dir = &outcome.run_dir;
        let mut files: Vec<String> = [&logs.stdout, &logs.stderr]
            .into_iter()
            .filter(|p| !p.is_empty() && Path::new(p).exists())
            .filter_map(|p| {
                Path::new(p)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .collect();
        if logs.truncated {
            files.push("logs truncated".into());
        }
        files.push("result.json".into());
        text.push_str(&format!(
            "\n        run {} in {} ({})",
            outcome.run_id,
            dir,
            files.join(", ")
        ));
    }
    text
}

/// `runner: warning: TEXT`, wrapped at spaces to 80 columns.
pub fn warning_line(text: &str) -> String {
    crate::wrap::words(
        &format!("runner: warning: {text}"),
        crate::wrap::WIDTH,
        "        ",
    )
}

/// The value a result lists for one limit.
pub(crate) fn limit_value(outcome: &Outcome, name: LimitKind) -> Option<&serde_json::Value> {
    outcome
        .limits
        .iter()
        .find(|l| l.name == name)
        .map(|l| &l.value)
}

/// `0.45s`, `12.30s`, `2m 05s`, `1h 02m 05s`.
fn format_secs(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".to_owned();
    }
    if secs < 60.0 {
        return format!("{secs:.2}s");
    }
    let whole = secs.round() as u64;
    let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
    if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else {
        format!("{m}m {s:02}s")
    }
}

/// A configured timeout as written in manifests: `90s` → `1m 30s`, `1h`.
fn format_timeout(secs: f64) -> String {
    if secs.fract() == 0.0 && secs >= 0.0 {
        humantime::format_duration(Duration::from_secs(secs as u64)).to_string()
    } else {
        format_secs(secs)
    }
}

#[cfg(test)]
pub(crate) mod tests;
