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
# The cgroup v2 case runs inside the test guest (`.ci/engines/guest.sh`: a Debian 12
# with systemd, booted under QEMU; its image is made once, minutes on a fresh machine)
# unless `BENCH_GUEST=0`. The cold-prepare section uses uv: the one on PATH, else one
# installed from PyPI once (into the target folder).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "bench: needs root (the runner creates cgroups for its limits)" >&2
    exit 1
fi
extra=()
work=
cleanup() {
    if [ -n "${BENCH_DOCKER:-}" ]; then
        bash .ci/engines/docker.sh stop || echo "bench: stopping docker failed" >&2
    fi
    if [ -n "$work" ]; then
        bash .ci/engines/guest.sh stop >/dev/null 2>&1 || true
        rm -rf "$work"
    fi
}
trap cleanup EXIT
if [ -n "${BENCH_DOCKER:-}" ]; then
    eval "$(bash .ci/engines/docker.sh start)"
    extra+=(--docker-image steprunner/base:bookworm)
fi
cargo build --release --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
args=(--runner "$target_dir/release/runner")
# The minimal C launcher the v1 launch is compared with.
mkdir -p "$target_dir/bench"
gcc -O2 -o "$target_dir/bench/cglaunch" bench/cglaunch.c
args+=(--cglaunch "$target_dir/bench/cglaunch")
# uv for the cold-prepare section (the venv flavor's `installer: auto` picks it when it
# is on PATH): the one on PATH, else one installed from PyPI into a folder of the bench's.
uv_bin=$(command -v uv || true)
if [ -z "$uv_bin" ]; then
    tools="$target_dir/bench/tools"
    if [ ! -x "$tools/bin/uv" ]; then
        echo "bench: installing uv from PyPI into $tools…" >&2
        python3 -m venv "$tools"
        "$tools/bin/python" -m pip install --quiet --disable-pip-version-check uv
    fi
    uv_bin="$tools/bin/uv"
fi
args+=(--uv "$uv_bin")
if [ "${BENCH_GUEST:-1}" != 0 ]; then
    eval "$(bash .ci/engines/guest.sh start)"
    work=$(mktemp -d "${TMPDIR:-/tmp}/steprunner-bench-guest.XXXXXX")
    mkdir -p "$work/payload/manifests"
    strip --strip-debug -o "$work/payload/runner" "$target_dir/release/runner"
    cp manifests/local.yaml manifests/venv.yaml "$work/payload/manifests/"
    cp tests/guest/run tests/guest/bench_guest.py tests/guest/guest_user.py "$work/payload/"
    if [ -n "${QUICK:-}" ]; then echo 5 >"$work/payload/rounds"; fi
    echo bench >"$work/payload/mode"
    echo "bench: the cgroup v2 case, in the guest (a few minutes under emulation)…" >&2
    bash .ci/engines/guest.sh boot "$work/payload" "$work"
    args+=(--guest-bench "$work/out/bench.json")
fi
if [ -n "${QUICK:-}" ]; then
    args+=(--quick --out bench/results.quick.md)
else
    args+=(--out bench/results.md)
fi
python3 bench/harness.py "${args[@]}" "${extra[@]}" "$@"
