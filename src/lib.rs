//! steprunner: run ML pipeline steps from declarative YAML flavor manifests.
//!
//! Data flows one way: `manifest` (YAML with positions) → `validate` (`schemas`,
//! `settings`, `template`) → `render` (minijinja, strict) → `plan` → `exec` (prepare,
//! launch, cleanup under `cgroup` and `limits`) → `report`. Names on disk belong to
//! `home`. The `runner` binary (`src/main.rs`) is a thin command line over these
//! modules; fuzz targets and benchmarks use them directly.

pub mod bounded;
pub mod cache;
pub mod cases;
pub mod cgroup;
pub mod cli;
pub mod complete;
pub mod contain;
pub mod diag;
pub mod doctor;
pub mod exec;
pub mod home;
pub mod ignores;
pub mod limits;
pub mod logs;
pub mod manifest;
pub mod plan;
pub mod plandiff;
pub mod policy;
pub mod profile;
pub mod registry;
pub mod render;
pub mod report;
pub mod runs;
pub mod schemas;
pub mod settings;
pub mod signals;
pub mod stamps;
pub mod step_info;
pub mod template;
pub mod units;
pub mod util;
pub mod validate;
pub mod wrap;
pub mod yaml;
