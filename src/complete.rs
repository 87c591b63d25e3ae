//! Shell completions that know this home: run ids for `status`, `wait`, `cancel` and
//! `logs`, registered flavor names (and files) for `launch`, `render` and
//! `flavor show`. The shell asks the binary itself (`COMPLETE=bash runner -- …`), so
//! they are always the current ones; `runner completions SHELL` prints the hook.

use std::ffi::OsStr;

use clap_complete::engine::{CompletionCandidate, PathCompleter, ValueCompleter};
use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};

use crate::home::Home;

/// The variable the shell hook sets to ask for completions.
pub const VAR: &str = "COMPLETE";

/// Run ids under the home, newest first, with their flavor and step as help.
pub fn run_ids() -> Vec<CompletionCandidate> {
    let mut dirs = crate::runs::list(&Home::from_env());
    dirs.reverse();
    dirs.iter()
        .map(|d| CompletionCandidate::new(d.id()))
        .collect()
}

/// Registered flavor names, with their descriptions as help.
pub fn flavors() -> Vec<CompletionCandidate> {
    crate::registry::list(&Home::from_env())
        .into_iter()
        .map(|f| {
            let help = (!f.description.is_empty()).then(|| f.description.clone().into());
            CompletionCandidate::new(f.name).help(help)
        })
        .collect()
}

/// A manifest: a registered flavor's name, or a file.
pub fn manifests(current: &OsStr) -> Vec<CompletionCandidate> {
    let typed = current.to_string_lossy();
    let mut out: Vec<CompletionCandidate> = flavors()
        .into_iter()
        .filter(|c| c.get_value().to_string_lossy().starts_with(typed.as_ref()))
        .collect();
    out.extend(PathCompleter::file().complete(current));
    out
}

/// The hook for `shell` that makes it ask `bin` for completions.
pub fn write_hook(
    shell: clap_complete::Shell,
    bin: &str,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let shell: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &Bash,
        clap_complete::Shell::Elvish => &Elvish,
        clap_complete::Shell::Fish => &Fish,
        clap_complete::Shell::PowerShell => &Powershell,
        clap_complete::Shell::Zsh => &Zsh,
        _ => &Bash,
    };
    shell.write_registration(VAR, "runner", bin, bin, out)
}
