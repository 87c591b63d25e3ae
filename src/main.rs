//! `runner`: run ML pipeline steps from declarative YAML flavor manifests.

mod cgroup;
mod limits;
mod logs;
mod manifest;
mod report;
mod yaml;

fn main() {}
