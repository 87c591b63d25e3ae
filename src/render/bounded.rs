//! Rendering in a child process under a memory and time bound.

use std::path::PathBuf;

use crate::diag::Diagnostic;
use crate::manifest::{Flavor, Source};
use crate::plan::Plan;
use crate::step_info::StepInfo;

use super::{RenderError, Where, render};

/// Whether a render error is about the template's own cost (instructions, memory,
/// time), whatever the step: what `runner validate`'s trial render reports.
pub fn over_budget(d: &Diagnostic) -> bool {
    d.message.starts_with("this template ran more than")
        || d.message
            .starts_with("rendering this template took more than")
}

/// The message of a render that could not be bounded (the system refused the child):
/// not the manifest's fault, and never rendered without the bound instead.
const UNBOUNDED: &str = "cannot render under a memory and time bound";

/// Whether a render error is that the render could not be bounded (see [`UNBOUNDED`]).
pub fn unbounded(d: &Diagnostic) -> bool {
    d.message.starts_with(UNBOUNDED)
}

fn refused(src: &Source, e: &std::io::Error) -> RenderError {
    RenderError(vec![
        Diagnostic::file(&src.path, format!("{UNBOUNDED}: fork: {e}")).with_hint(
            "templates render in a child process, so that one cannot take all memory; \
         free processes or raise their limit (`ulimit -u`, `pids.max`)",
        ),
    ])
}

/// A diagnostic as it crosses from the bounded child (with its source line).
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    file: PathBuf,
    line: usize,
    col: usize,
    message: String,
    hint: Option<String>,
    source_line: Option<String>,
}

/// [`render`] in a child process under [`crate::bounded::RENDER`]: templates that
/// would take all memory or time end in a located error instead. For single-threaded
/// callers (the command line), see [`crate::bounded`].
pub fn render_bounded(
    src: &Source,
    flavor: &Flavor,
    info: &StepInfo,
    at: &Where<'_>,
) -> Result<Plan, RenderError> {
    render_bounded_while(src, flavor, info, at, || ()).map(|(plan, ())| plan)
}

/// [`render_bounded`], with `meanwhile` run in this process while the child renders
/// ([`crate::bounded::run_while`]): its value beside the plan, dropped with an error.
pub fn render_bounded_while<R>(
    src: &Source,
    flavor: &Flavor,
    info: &StepInfo,
    at: &Where<'_>,
    meanwhile: impl FnOnce() -> R,
) -> Result<(Plan, R), RenderError> {
    match crate::bounded::run_while(
        crate::bounded::RENDER,
        || render(src, flavor, info, at).map_err(wire),
        meanwhile,
    ) {
        Ok((outcome, value)) => settle(src, outcome).map(|plan| (plan, value)),
        Err(e) => Err(refused(src, &e)),
    }
}

/// One render to check: the manifest, the step and where it would run.
pub type Job<'a> = (&'a Source, &'a Flavor, &'a StepInfo, &'a Where<'a>);

/// [`render_bounded`] of each job, in as few children as they allow
/// ([`crate::bounded::run_each`]), keeping only whether each rendered: the plans stay
/// in the child. For checking many manifests (`runner validate`).
pub fn check_bounded(jobs: &[Job<'_>]) -> Vec<Result<(), RenderError>> {
    let outcomes =
        crate::bounded::run_each(crate::bounded::RENDER, jobs, |(src, flavor, info, at)| {
            render(src, flavor, info, at).map(drop).map_err(wire)
        });
    match outcomes {
        Ok(outcomes) => jobs
            .iter()
            .zip(outcomes)
            .map(|((src, ..), outcome)| settle(src, outcome))
            .collect(),
        Err(e) => jobs.iter().map(|(src, ..)| Err(refused(src, &e))).collect(),
    }
}

fn wire(e: RenderError) -> Vec<Wire> {
    e.0.into_iter()
        .map(|d| Wire {
            file: d.file,
            line: d.line,
            col: d.col,
            message: d.message,
            hint: d.hint,
            source_line: d.source_line,
        })
        .collect()
}

/// What a bounded render's outcome means for the manifest.
fn settle<T>(
    src: &Source,
    outcome: Result<Result<T, Vec<Wire>>, crate::bounded::Exceeded>,
) -> Result<T, RenderError> {
    use crate::bounded::{self, Exceeded};
    let located = |at: &str, message: String| {
        RenderError(vec![
            Diagnostic::new(&src.path, Some(&src.text), src.doc.index.nearest(at), message)
                .with_hint("a template builds its value from the step's data; one that grows without bound (doubling in a loop, recursion) is refused"),
        ])
    };
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(wire)) => Err(RenderError(
            wire.into_iter()
                .map(|w| Diagnostic {
                    file: w.file,
                    line: w.line,
                    col: w.col,
                    message: w.message,
                    hint: w.hint,
                    source_line: w.source_line,
                })
                .collect(),
        )),
        Err(Exceeded::Memory { at }) => Err(located(
            &at,
            format!(
                "rendering this template took more than {} of memory",
                crate::units::Bytes(bounded::RENDER.memory_bytes)
            ),
        )),
        Err(Exceeded::Time { at }) => Err(located(
            &at,
            format!(
                "rendering this template took more than {} s",
                bounded::RENDER.seconds
            ),
        )),
        Err(Exceeded::Panicked { message }) => Err(RenderError(vec![Diagnostic::file(
            &src.path,
            format!("internal error while rendering (a bug; please report it): {message}"),
        )])),
    }
}
