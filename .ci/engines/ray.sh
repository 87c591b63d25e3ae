#!/usr/bin/env bash
# A real two-node Ray cluster for the `ray` flavor's tests, on this one machine.
#
#   eval "$(bash .ci/engines/ray.sh start)"   # prints STEPRUNNER_RAY_ADDRESS, STEPRUNNER_RAY_PYTHON
#   bash .ci/engines/ray.sh stop
#
# `start` makes (once) a virtualenv with `ray[default]` (pinned) under
# $STEPRUNNER_ENGINES_DIR/ray, then starts a head node (1 CPU) and a second node
# (1 CPU and the custom resource `node2`, so a step can be pinned to it), each
# `ray start --block` in its own session with every port set explicitly, and waits
# until the dashboard sees both. `stop` SIGTERMs each `ray start` by the PID it
# recorded (its whole group ends with it) and waits for them.
#
# Only `export` lines go to stdout; everything else goes to stderr.
set -euo pipefail
ENGINE=ray
. "$(dirname "$0")/lib.sh"

dir=$ENGINES_DIR/ray
venv=$dir/venv
ray_version=2.60.0
python="${STEPRUNNER_RAY_BASE_PYTHON:-python3}"
dashboard=8270
address=http://127.0.0.1:$dashboard

ready_venv() {
    [ -x "$venv/bin/ray" ] && "$venv/bin/python" -c 'import pip, ray, sys; sys.exit(ray.__version__ != sys.argv[1])' "$ray_version" 2>/dev/null
}

install() {
    ready_venv && return 0
    rm -rf "$venv"
    say "creating $venv with ray[default]==$ray_version (about two minutes the first time)"
    # pip inside it: Ray's pip runtime environments are made from the cluster's own.
    "$python" -m venv "$venv" >&2
    if command -v uv >/dev/null; then
        uv pip install --quiet --python "$venv/bin/python" "ray[default]==$ray_version" >&2
    else
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "ray[default]==$ray_version" >&2
    fi
    ready_venv || { say "$venv does not import ray $ray_version"; exit 1; }
}

pid_of() { cat "$dir/$1.pid" 2>/dev/null || true; }

# The number of nodes the dashboard sees alive.
nodes_alive() {
    "$venv/bin/python" - "$address" <<'PY' 2>/dev/null || echo 0
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/nodes?view=summary", timeout=5) as r:
    nodes = json.load(r)["data"]["summary"]
print(sum(1 for n in nodes if n.get("raylet", {}).get("state") == "ALIVE"))
PY
}

exports() {
    echo "export STEPRUNNER_RAY_ADDRESS=$address"
    echo "export STEPRUNNER_RAY_PYTHON=$venv/bin/python"
}

start() {
    mkdir -p "$dir"
    if alive "$(pid_of head)" && alive "$(pid_of worker)" && [ "$(nodes_alive)" = 2 ]; then
        say "already running"
        exports
        return 0
    fi
    stop
    install
    local tmp=$dir/tmp ip
    rm -rf "$tmp"
    mkdir -p "$tmp"
    export RAY_USAGE_STATS_ENABLED=0
    setsid "$venv/bin/ray" start --head --block --temp-dir="$tmp" --disable-usage-stats \
        --port=6390 --dashboard-host=127.0.0.1 --dashboard-port=$dashboard \
        --ray-client-server-port=10201 --node-manager-port=6391 --object-manager-port=6392 \
        --dashboard-agent-listen-port=52365 --dashboard-agent-grpc-port=52375 \
        --metrics-export-port=8090 --runtime-env-agent-port=52385 \
        --min-worker-port=11000 --max-worker-port=11100 --num-cpus=1 --num-gpus=0 \
        </dev/null >>"$dir/head.log" 2>&1 &
    echo $! >"$dir/head.pid"
    local i
    for i in $(seq 300); do
        [ "$(nodes_alive)" -ge 1 ] && break
        alive "$(pid_of head)" || { say "the head node exited"; tail -n 20 "$dir/head.log" >&2; exit 1; }
        sleep 0.2
    done
    ip=$("$venv/bin/python" -c 'import ray._private.services as s; print(s.get_node_ip_address())')
    setsid "$venv/bin/ray" start --block --address="$ip:6390" --temp-dir="$tmp" \
        --node-manager-port=6401 --object-manager-port=6402 \
        --dashboard-agent-listen-port=52366 --dashboard-agent-grpc-port=52376 \
        --metrics-export-port=8091 --runtime-env-agent-port=52386 \
        --min-worker-port=11200 --max-worker-port=11300 --num-cpus=1 --num-gpus=0 \
        --resources='{"node2": 1}' </dev/null >>"$dir/worker.log" 2>&1 &
    echo $! >"$dir/worker.pid"
    for i in $(seq 300); do
        [ "$(nodes_alive)" = 2 ] && break
        alive "$(pid_of worker)" || { say "the second node exited"; tail -n 20 "$dir/worker.log" >&2; stop; exit 1; }
        sleep 0.2
    done
    if [ "$(nodes_alive)" != 2 ]; then
        say "the cluster has not two nodes after 60 s"
        stop
        exit 1
    fi
    say "ready: head $(pid_of head), second node $(pid_of worker), dashboard $address"
    exports
}

stop() {
    local n pid
    for n in worker head; do
        pid=$(pid_of "$n")
        if alive "$pid"; then
            # `ray start --block` takes its session's processes down with it.
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
            reap "$pid" 20 || say "ray $n (pid $pid) is still there"
        fi
        rm -f "$dir/$n.pid"
    done
    # What a killed `ray start` left (raylet, gcs, workers of our temp folder).
    local p
    for p in $(pgrep -f -- "$dir/tmp" || true); do
        kill -KILL "$p" 2>/dev/null || true
    done
    say "stopped"
}

engine_main "$@"
