#!/usr/bin/env bash
# ZenML for the integration tests: a virtualenv with `zenml[local]`, pytest, the
# `steprunner` wheel (the `runner` binary, built by maturin) and integrations/zenml
# (editable) under $STEPRUNNER_ENGINES_DIR/zenml. Nothing runs in
# the background, so `stop` has nothing to stop.
#
#   eval "$(bash .ci/engines/zenml.sh start)"   # prints export STEPRUNNER_ZENML_PYTHON=… STEPRUNNER_UV=…
set -euo pipefail
ENGINE=zenml
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."
repo=$PWD
state="$ENGINES_DIR/zenml"
venv="$state/venv"
zenml_version=0.98.0
python="${STEPRUNNER_ZENML_BASE_PYTHON:-python3}"


ready() {
    [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$zenml_version" "$repo" <<'PY' 2>/dev/null
import os, sys
import pytest, zenml, steprunner_zenml
want, repo = sys.argv[1], sys.argv[2]
assert zenml.__version__ == want, zenml.__version__
# The runner wheel, as the integration depends on it.
assert os.access(os.path.join(os.path.dirname(sys.executable), "runner"), os.X_OK)
here = os.path.realpath(steprunner_zenml.__file__)
assert here.startswith(os.path.realpath(repo) + os.sep), here
PY
}

# uv when there is one (much faster than pip); else a plain venv gets its own uv from PyPI.
uv() {
    if type -P uv >/dev/null; then
        command uv "$@"
    elif "$python" -m uv --version >/dev/null 2>&1; then
        "$python" -m uv "$@"
    else
        "$venv/bin/uv" "$@"
    fi
}

start() {
    mkdir -p "$state"
    if ready; then
        say "reusing $venv"
    else
        if type -P uv >/dev/null || "$python" -m uv --version >/dev/null 2>&1; then
            [ -x "$venv/bin/python" ] || { say "creating $venv"; uv venv --quiet --python "$python" "$venv" >&2; }
        elif [ ! -x "$venv/bin/uv" ]; then
            say "creating $venv (no uv here: installing it into the virtualenv)"
            "$python" -m venv "$venv" >&2
            "$venv/bin/python" -m pip install --quiet uv >&2
        fi
        say "installing zenml[local]==$zenml_version, pytest, the runner wheel (cargo, through maturin) and integrations/zenml"
        uv pip install --quiet --python "$venv/bin/python" \
            "zenml[local]==$zenml_version" pytest "$repo" -e "$repo/integrations/zenml" >&2
        ready || { say "the virtualenv at $venv does not import zenml $zenml_version"; exit 1; }
    fi
    # A uv binary of its own, for the venv flavor's `installer: uv` tests.
    [ -x "$venv/bin/uv" ] || uv pip install --quiet --python "$venv/bin/python" uv >&2
    echo "export STEPRUNNER_ZENML_PYTHON=$venv/bin/python"
    echo "export STEPRUNNER_UV=$venv/bin/uv"
}

stop() { say "nothing to stop"; }

engine_main "$@"
