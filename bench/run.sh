#!/usr/bin/env bash
# `just bench`: steprunner against baselines, in the same run; writes bench/results.md.
#
# Builds the release binary once, then bench/harness.py times every subject and its
# baselines alternately, many repetitions each, and reports medians and ratios.
# Needs root (the runner creates cgroups for its limits). Takes about 7 minutes;
# `QUICK=1` for a smoke run (few repetitions, results to bench/results.quick.md).
# `FOOTPRINT_SECS` sets how long the footprint step runs (default 60).
# `BENCH_DOCKER=1` also times `docker run --rm` of the same `true`: it starts the test
# suite's private Docker engine (`.ci/engines/docker.sh`, which installs Docker on a
# fresh machine: minutes) and stops it by its PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "bench: needs root (the runner creates cgroups for its limits)" >&2
    exit 1
fi
extra=()
if [ -n "${BENCH_DOCKER:-}" ]; then
    trap 'bash .ci/engines/docker.sh stop || echo "bench: stopping docker failed" >&2' EXIT
    eval "$(bash .ci/engines/docker.sh start)"
    extra+=(--docker-image steprunner/base:bookworm)
fi
cargo build --release --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
args=(--runner "$target_dir/release/runner")
if [ -n "${QUICK:-}" ]; then
    args+=(--quick --out bench/results.quick.md)
else
    args+=(--out bench/results.md)
fi
python3 bench/harness.py "${args[@]}" "${extra[@]}" "$@"
