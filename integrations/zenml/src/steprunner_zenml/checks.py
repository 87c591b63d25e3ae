"""What is checked before anything runs: the manifest a component or a step names
resolves and validates, and the settings given to it match the manifest's settings
schema. Each check runs the real `runner render` (which validates the manifest in full
first), so what passes here is what `runner launch` accepts; errors carry the runner's
own located message.

Where a manifest is looked for: a value with a `/` or ending in `.yaml`/`.yml` is a
path — absolute, or relative to the ZenML source root (the folder where `zenml init`
ran; the current folder when there is none); anything else is the name of a flavor
registered with `runner flavor register`.

Nothing here imports ZenML at module level (the flavor module imports it lazily).
"""

import json
import os
import tempfile
from typing import Any, Dict, Mapping, Optional, Tuple

from steprunner_zenml import runner as rn
from steprunner_zenml.errors import StepRunnerError

#: `(manifest, mtime, settings, resources)` → the rendered plan, for checks already made.
_CHECKED: Dict[Tuple[str, int, str, str], Dict[str, Any]] = {}


def source_root() -> str:
    """The ZenML source root, or the current folder outside a ZenML repository."""
    try:
        from zenml.utils import source_utils

        return source_utils.get_source_root()
    except Exception:
        return os.getcwd()


def is_path(manifest: str) -> bool:
    return "/" in manifest or manifest.endswith((".yaml", ".yml"))


def resolve(manifest: str, root: Optional[str] = None) -> str:
    """The manifest as `runner` takes it: an absolute path, or a registered name.

    Raises:
        StepRunnerError: a path that does not exist, or a name no flavor is registered
            under; the message says where it looked and why there.
    """
    if not manifest or not manifest.strip():
        raise StepRunnerError("`manifest` is empty: give a manifest file or a registered flavor name")
    if is_path(manifest):
        root = root or source_root()
        path = manifest if os.path.isabs(manifest) else os.path.join(root, manifest)
        if not os.path.isfile(path):
            where = (
                ""
                if os.path.isabs(manifest)
                else f" (relative paths are relative to the ZenML source root, where "
                f"`zenml init` ran: {root})"
            )
            raise StepRunnerError(f"manifest `{manifest}` not found: no file {path}{where}")
        return os.path.abspath(path)
    done = rn.run([rn.find_runner(), "flavor", "show", manifest], echo=False)
    if done.code != 0:
        raise StepRunnerError(
            f"manifest `{manifest}` is not a file path and no flavor is registered under "
            f"that name (`runner flavor list` lists them):\n{done.complaint()}"
        )
    return manifest


def check(
    manifest: str,
    settings: Mapping[str, Any],
    resources: Optional[Mapping[str, Any]] = None,
    runner: Optional[str] = None,
    what: str = "",
) -> Dict[str, Any]:
    """Resolve, validate and render `manifest` with `settings` (and the step's
    `resources`); returns the rendered plan (`runner render --format json`).

    Raises:
        StepRunnerError: with `what` (e.g. "step `train`") and the runner's message.
    """
    prefix = f"{what}: " if what else ""
    try:
        resolved = resolve(manifest)
    except StepRunnerError as e:
        raise StepRunnerError(prefix + str(e)) from None
    binary = rn.find_runner(runner)
    try:
        mtime = os.stat(resolved).st_mtime_ns if os.path.isabs(resolved) else 0
    except OSError:
        mtime = 0
    key = (
        resolved,
        mtime,
        json.dumps(settings, sort_keys=True, default=str),
        json.dumps(resources or {}, sort_keys=True, default=str),
    )
    if key in _CHECKED:
        return _CHECKED[key]
    # `render` checks the manifest in full before it renders: one call says both.
    info = {"settings": dict(settings), "resources": dict(resources or {})}
    fd, path = tempfile.mkstemp(prefix="steprunner-check-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(info, f, default=str)
        done = rn.run(
            [binary, "render", resolved, "--info", path, "--format", "json", "--", "true"],
            echo=False,
        )
    finally:
        os.unlink(path)
    plan = done.json()
    if done.code != 0 or plan is None:
        raise StepRunnerError(
            f"{prefix}manifest `{manifest}` does not validate, or the settings do not "
            f"fit it:\n{done.complaint()}"
        )
    _CHECKED[key] = plan
    return plan
