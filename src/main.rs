//! `runner`: run ML pipeline steps from declarative YAML flavor manifests.
//!
//! This file parses the command line, runs the command (`commands`), prints its
//! error and exits with its code (see README.md, "Exit codes").

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use steprunner::cli::{Cli, Cmd};

mod commands;

fn main() -> ExitCode {
    // The shell asking for completions (`COMPLETE=bash runner -- runner logs 2026…`).
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(steprunner::complete::VAR)
        .complete();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = Cli::try_parse_from(&args)
        .unwrap_or_else(|e| steprunner::cli::exit_with(steprunner::cli::with_tips(e, &args)));
    if !matches!(cli.command, Cmd::Launch { .. } | Cmd::Supervise { .. }) {
        // Printing commands end quietly when their reader goes away (`runner ps | head`).
        // `launch` keeps SIGPIPE ignored: a closed stdout must not kill a supervisor.
        // SAFETY: setting a signal disposition before any thread exists.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
    match commands::run(cli.command) {
        Ok(exit) => exit.into(),
        Err(e) => {
            e.print();
            e.exit().into()
        }
    }
}
