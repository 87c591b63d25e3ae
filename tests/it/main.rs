//! Integration tests: run the real `runner` binary on real manifests and check what a
//! user would check — the exit code, the located diagnostics, the rendered plan.
//!
//! One test binary (faster to link, shared helpers); one module per command.

mod common;
mod faults;
mod launch;
mod render;
mod validate;
