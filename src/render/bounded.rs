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
    use crate::bounded::{self, Exceeded};
    let outcome = bounded::run(bounded::RENDER, || {
        render(src, flavor, info, at).map_err(|e| {
            e.0.into_iter()
                .map(|d| Wire {
                    file: d.file,
                    line: d.line,
                    col: d.col,
                    message: d.message,
                    hint: d.hint,
                    source_line: d.source_line,
                })
                .collect::<Vec<_>>()
        })
    });
    let located = |at: &str, message: String| {
        RenderError(vec![
            Diagnostic::new(&src.path, Some(&src.text), src.doc.index.nearest(at), message)
                .with_hint("a template builds its value from the step's data; one that grows without bound (doubling in a loop, recursion) is refused"),
        ])
    };
    match outcome {
        Ok(Ok(Ok(plan))) => Ok(plan),
        Ok(Ok(Err(wire))) => Err(RenderError(
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
        Ok(Err(Exceeded::Memory { at })) => Err(located(
            &at,
            format!(
                "rendering this template took more than {} of memory",
                crate::units::Bytes(bounded::RENDER.memory_bytes)
            ),
        )),
        Ok(Err(Exceeded::Time { at })) => Err(located(
            &at,
            format!(
                "rendering this template took more than {} s",
                bounded::RENDER.seconds
            ),
        )),
        Ok(Err(Exceeded::Panicked { message })) => Err(RenderError(vec![Diagnostic::file(
            &src.path,
            format!("internal error while rendering (a bug; please report it): {message}"),
        )])),
        // The child could not be made: render here (no bound, but no worse than before).
        Err(_) => render(src, flavor, info, at),
    }
}
