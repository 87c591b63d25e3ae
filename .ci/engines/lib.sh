# What the engine scripts share; sourced by each of them, never run (`.ci/run` skips
# it). A script sets ENGINE (its name, for messages) before sourcing:
#
#   ENGINE=slurm
#   . "$(dirname "$0")/lib.sh"
#   …
#   engine_main "$@"
#
# Only `export` lines go to stdout; everything here writes to stderr.

ENGINES_DIR=${STEPRUNNER_ENGINES_DIR:-/tmp/steprunner-engines}

say() { echo "$ENGINE: $*" >&2; }

# Whether PID names a live process (an empty PID is not one).
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# apt-get install PKG… with Debian's lists updated first; waits for a busy dpkg lock
# (another apt) and tries once more when apt fails (a mirror's hiccup).
apt_install() {
    local opts=(-y -q -o DPkg::Lock::Timeout=120) attempt
    for attempt in 1 2; do
        if apt-get "${opts[@]}" update >&2 &&
            DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" install \
                --no-install-recommends "$@" >&2; then
            return 0
        fi
        say "apt-get failed (attempt $attempt)"
        sleep 5
    done
    return 1
}

# Wait up to SECONDS (default 10) for PID to exit, then SIGKILL it and wait a little
# more. Returns 0 once it is gone.
reap() {
    local pid=$1 tenths=$((${2:-10} * 10)) i
    for ((i = 0; i < tenths; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    say "PID $pid did not exit within ${2:-10} s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    return 1
}

# SIGTERM to PID and reap it (see `reap`).
stop_pid() {
    local pid=$1
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    reap "$pid" "${2:-10}"
}

# Run the command named by $1: `start`, `stop`, or one of ENGINE_COMMANDS.
engine_main() {
    local cmd=${1:-}
    case " start stop ${ENGINE_COMMANDS:-} " in
    *" $cmd "*)
        if [ -n "$cmd" ]; then
            shift
            "$cmd" "$@"
            return
        fi
        ;;
    esac
    echo "usage: $0 start|stop${ENGINE_COMMANDS:+|$ENGINE_COMMANDS}" >&2
    exit 2
}
