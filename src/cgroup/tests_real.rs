//! Real cgroup tests (root).
