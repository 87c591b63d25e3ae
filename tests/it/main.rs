//! Integration tests: run the real `runner` binary on real manifests and check what a
//! user would check — the exit code, the located diagnostics, the rendered plan.
//!
//! One test binary (faster to link, shared helpers); one module per command.

mod cloud;
mod common;
mod docker;
mod docs;
mod faults;
mod guest;
mod injection;
mod launch;
mod lifecycle;
mod profile;
mod ray;
mod registry;
mod render;
mod review;
mod slurm;
mod validate;
mod zenml;
