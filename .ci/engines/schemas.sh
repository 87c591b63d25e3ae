#!/usr/bin/env bash
# The services' published schemas, for checking what the cloud flavors would send: a
# virtualenv under $STEPRUNNER_ENGINES_DIR/schemas with the Kubernetes OpenAPI schema
# (`kubernetes-validate`, which ships it for each Kubernetes version) and the AWS
# service models (`botocore`). Nothing runs in the background: `stop` has nothing to stop.
#
#   eval "$(bash .ci/engines/schemas.sh start)"   # prints export STEPRUNNER_SCHEMAS_PYTHON=…
set -euo pipefail
ENGINE=schemas
. "$(dirname "$0")/lib.sh"
state="$ENGINES_DIR/schemas"
venv="$state/venv"
# Pinned: a new schema release is a change to review, not a surprise in CI.
packages=(kubernetes-validate==1.37.0 botocore==1.44.8)
python="${STEPRUNNER_SCHEMAS_BASE_PYTHON:-python3}"

ready() {
    [ -x "$venv/bin/python" ] && "$venv/bin/python" - <<'PY' 2>/dev/null
from importlib.metadata import version
assert version("kubernetes-validate") == "1.37.0"
assert version("botocore") == "1.44.8"
import botocore.session
botocore.session.get_session().get_service_model("sagemaker")
PY
}

start() {
    mkdir -p "$state"
    if ready; then
        say "reusing $venv"
    else
        say "installing ${packages[*]} into $venv"
        rm -rf "$venv"
        "$python" -m venv "$venv" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
        ready || { say "the virtualenv at $venv does not load the schemas"; exit 1; }
    fi
    echo "export STEPRUNNER_SCHEMAS_PYTHON=$venv/bin/python"
}

stop() { say "nothing to stop"; }

engine_main "$@"
