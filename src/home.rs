//! Names on disk, owned here and nowhere else: the runner's home (`$RUNNER_HOME`) with
//! its `runs/`, `cache/`, `flavors/` and `validated/` folders ([`Home`]), and the files
//! of one run folder ([`RunDir`]).

use std::path::{Path, PathBuf};

/// `$RUNNER_HOME`: where runs, the prepare cache, registered flavors and remembered
/// manifest checks live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home(PathBuf);

impl Home {
    pub fn new(path: impl Into<PathBuf>) -> Home {
        Home(path.into())
    }

    /// `$RUNNER_HOME`, else `$XDG_STATE_HOME/steprunner`, else `~/.local/state/steprunner`.
    pub fn from_env() -> Home {
        if let Some(h) = std::env::var_os("RUNNER_HOME").filter(|h| !h.is_empty()) {
            return Home(PathBuf::from(h));
        }
        if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|h| !h.is_empty()) {
            return Home(PathBuf::from(x).join("steprunner"));
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        Home(home.join(".local/state/steprunner"))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The folder of run folders.
    pub fn runs(&self) -> PathBuf {
        self.0.join("runs")
    }

    /// The default folder of a run.
    pub fn run(&self, run_id: &str) -> RunDir {
        RunDir(self.runs().join(run_id))
    }

    /// The prepare cache.
    pub fn cache(&self) -> PathBuf {
        self.0.join("cache")
    }

    /// One prepare cache entry: `cache/<flavor>-<key>`.
    pub fn cache_entry(&self, flavor: &str, key: &str) -> PathBuf {
        self.cache().join(format!("{flavor}-{key}"))
    }

    /// Registered flavors: `flavors/<name>.yaml`.
    pub fn flavors(&self) -> PathBuf {
        self.0.join("flavors")
    }

    /// The manifest of a registered flavor (which may not exist).
    pub fn flavor(&self, name: &str) -> PathBuf {
        self.flavors().join(format!("{name}.yaml"))
    }

    /// Remembered manifest checks (`stamps`).
    pub fn validated(&self) -> PathBuf {
        self.0.join("validated")
    }
}

/// One run's folder and the files in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir(PathBuf);

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> RunDir {
        RunDir(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The run id: the folder's name.
    pub fn id(&self) -> String {
        self.0
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The rendered plan, written before anything runs.
    pub fn plan(&self) -> PathBuf {
        self.0.join("plan.json")
    }

    /// The supervising process: `PID START_TIME`.
    pub fn pid(&self) -> PathBuf {
        self.0.join("supervisor.pid")
    }

    /// The detached supervisor's own output.
    pub fn supervisor_log(&self) -> PathBuf {
        self.0.join("supervisor.log")
    }

    /// The result, written atomically when the run ends.
    pub fn result(&self) -> PathBuf {
        self.0.join("result.json")
    }

    /// Space set aside when the run starts, so the result can be written on a disk the
    /// step filled (see `report::write_atomic`).
    pub fn result_reserve(&self) -> PathBuf {
        self.0.join(".result.reserve")
    }

    pub fn stdout(&self) -> PathBuf {
        self.0.join("stdout.log")
    }

    pub fn stderr(&self) -> PathBuf {
        self.0.join("stderr.log")
    }

    /// Where a launch command reports what only its engine knows.
    pub fn engine_outcome(&self) -> PathBuf {
        self.0.join("engine-outcome.json")
    }

    /// Scratch space for the step (`dirs.work`).
    pub fn work(&self) -> PathBuf {
        self.0.join("work")
    }

    /// The merged output of command `number` (1-based, its place in the manifest) of a
    /// prepare or cleanup stage.
    pub fn stage_log(&self, stage: &str, number: usize) -> PathBuf {
        self.0.join(format!("{stage}.{number}.log"))
    }

    /// The stage's command logs written so far, by number.
    pub fn stage_logs(&self, stage: &str) -> Vec<(usize, PathBuf)> {
        let mut logs: Vec<(usize, PathBuf)> = std::fs::read_dir(&self.0)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let name = e.file_name();
                        let n = name
                            .to_str()?
                            .strip_prefix(stage)?
                            .strip_prefix('.')?
                            .strip_suffix(".log")?
                            .parse()
                            .ok()?;
                        Some((n, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        logs.sort();
        logs
    }
}

impl AsRef<Path> for RunDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}
