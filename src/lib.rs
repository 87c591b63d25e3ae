//! steprunner: run ML pipeline steps from declarative YAML flavor manifests.
//!
//! Data flows one way: `manifest` (YAML with positions) → `validate` (schema,
//! then meaning) → `render` (minijinja, strict) → `plan` → `exec` (prepare,
//! launch, cleanup under `cgroup` and `limits`) → `report`. The `runner` binary
//! (`src/main.rs`) is a thin command line over these modules; fuzz targets and
//! benchmarks use them directly.

pub mod cache;
pub mod cgroup;
pub mod cli;
pub mod diag;
pub mod exec;
pub mod limits;
pub mod logs;
pub mod manifest;
pub mod plan;
pub mod registry;
pub mod render;
pub mod report;
pub mod runs;
pub mod signals;
pub mod step_info;
pub mod units;
pub mod util;
pub mod validate;
pub mod yaml;
