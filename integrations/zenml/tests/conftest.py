"""Tests against a real ZenML, isolated from the user's: before anything imports ZenML,
`HOME`, the ZenML config and local stores and `RUNNER_HOME` are pointed at one
temporary folder for the whole session (and every process it starts). What the user's
real home and ZenML config looked like is recorded first; `test_untouched.py`, run last,
checks they did not change.

Pipelines run the way a user runs them: a temporary copy of `examples/zenml` (plus the
test pipelines of `project/`), set up with the `zenml` commands of the README, each
run a `python` process whose exit code and output the tests read.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
EXAMPLE = REPO / "examples" / "zenml"
MANIFEST = REPO / "manifests" / "venv.yaml"

# --- isolation, before ZenML is imported -------------------------------------


def _real_zenml_config() -> Path:
    """Where ZenML keeps the user's config (and local stores): as ZenML finds it."""
    if os.environ.get("ZENML_CONFIG_PATH"):
        return Path(os.environ["ZENML_CONFIG_PATH"])
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config_home) / "zenml"


def _real_runner_home() -> Path:
    """Where the runner keeps the user's runs and cache: as `runner` finds it."""
    if os.environ.get("RUNNER_HOME"):
        return Path(os.environ["RUNNER_HOME"])
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state_home) / "steprunner"


REAL_HOME = Path(os.path.expanduser("~"))
REAL_ZENML_CONFIG = _real_zenml_config()
REAL_RUNNER_HOME = _real_runner_home()
SESSION = Path(tempfile.mkdtemp(prefix="steprunner-zenml-tests-"))


def snapshot(path: Path, depth: int) -> Dict[str, tuple]:
    """Every entry under `path` (to `depth` levels) with its type, size and mtime."""
    out: Dict[str, tuple] = {}
    if not path.exists():
        return out

    def walk(p: Path, d: int) -> None:
        try:
            entries = list(os.scandir(p))
        except OSError:
            return
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            is_dir = e.is_dir(follow_symlinks=False)
            out[os.path.relpath(e.path, path)] = (
                "dir" if is_dir else "file",
                None if is_dir else st.st_size,
                None if is_dir else st.st_mtime_ns,
            )
            if is_dir and d > 1:
                walk(Path(e.path), d - 1)

    walk(path, depth)
    return out


#: The user's state before the tests: the ZenML config, the runner's runs and cache,
#: and a ZenML repository in `$HOME`.
BEFORE = {
    "zenml_config": snapshot(REAL_ZENML_CONFIG, 6),
    "runner_home": snapshot(REAL_RUNNER_HOME, 3),
    "zen_repo": snapshot(REAL_HOME / ".zen", 2),
}

ISOLATED = {
    "HOME": str(SESSION / "home"),
    "ZENML_CONFIG_PATH": str(SESSION / "zenml-config"),
    "ZENML_LOCAL_STORES_PATH": str(SESSION / "zenml-stores"),
    "ZENML_ANALYTICS_OPT_IN": "false",
    "ZENML_ENABLE_RICH_TRACEBACK": "false",
    "ZENML_LOGGING_COLORS_DISABLED": "true",
    "RUNNER_HOME": str(SESSION / "runner-home"),
    "PYTHONDONTWRITEBYTECODE": "1",
    "NO_COLOR": "1",
}
for _name in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
    os.environ.pop(_name, None)
os.environ.update(ISOLATED)
Path(ISOLATED["HOME"]).mkdir(parents=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SESSION, ignore_errors=True)


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    """`test_untouched.py` last: it checks what everything before it did. Without root
    (and outside CI) every test that runs a pipeline is skipped, saying so."""
    items.sort(key=lambda item: item.fspath.basename == "test_untouched.py")
    if NOT_ROOT:
        skip = pytest.mark.skip(reason="needs root (the runner creates cgroups)")
        for item in items:
            if "project" in getattr(item, "fixturenames", ()):
                item.add_marker(skip)


# --- what every test needs ------------------------------------------------------


def _runner() -> str:
    configured = os.environ.get("STEPRUNNER_RUNNER")
    found = shutil.which(configured or "runner")
    if not found:
        pytest.exit(
            "no `runner` binary: set STEPRUNNER_RUNNER to its path (cargo builds it) "
            "or put it on PATH",
            returncode=2,
        )
    return found


RUNNER = _runner()
os.environ["STEPRUNNER_RUNNER"] = RUNNER

NOT_ROOT = os.geteuid() != 0
if NOT_ROOT and os.environ.get("CI") == "true":
    pytest.exit("these tests need root (cgroups) and CI=true forbids skipping them", 2)


class Ran:
    """A finished process: its exit code and output."""

    def __init__(self, argv: List[str], proc: subprocess.CompletedProcess) -> None:
        self.argv = argv
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def __str__(self) -> str:
        return (
            f"$ {' '.join(self.argv)}\nexit code {self.code}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )

    def ok(self) -> "Ran":
        assert self.code == 0, str(self)
        return self


class Project:
    """The temporary ZenML project the tests run pipelines in."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(
        self, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 900
    ) -> Ran:
        """`python ARGS…` in the project, with the session's environment (plus `env`)."""
        return self.exec([sys.executable, *args], env=env, timeout=timeout)

    def exec(
        self, argv: List[str], env: Optional[Dict[str, str]] = None, timeout: float = 900
    ) -> Ran:
        proc = subprocess.run(
            argv,
            cwd=self.root,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Ran(argv, proc)

    @property
    def zenml_bin(self) -> str:
        return str(Path(sys.executable).parent / "zenml")

    def zenml(self, *args: str) -> Ran:
        """A `zenml` CLI command, as the README has the user type it."""
        return self.exec([self.zenml_bin, *args]).ok()


def zenml_settings() -> str:
    """The venv flavor's settings for a step that must import ZenML (see README)."""
    return '{"python": "%s", "inherit_packages": true}' % sys.executable


@pytest.fixture(scope="session")
def project() -> Project:
    """A copy of the example, with the flavor, two operators and a stack registered."""
    root = SESSION / "project"
    shutil.copytree(EXAMPLE, root)
    for f in (HERE / "project").iterdir():
        if f.suffix == ".py":
            shutil.copy(f, root / f.name)
    p = Project(root)
    p.zenml("init")
    p.zenml("step-operator", "flavor", "register", "steprunner_zenml.ManifestStepOperatorFlavor")
    p.zenml(
        "step-operator", "register", "runner-venv", "--flavor=manifest",
        f"--manifest={MANIFEST}", "--asynchronous=false", f"--settings={zenml_settings()}",
    )
    # The plain registration of the README: the venv flavor's step then runs with
    # ZenML's own interpreter and its packages, by default.
    p.zenml(
        "step-operator", "register", "runner-venv-async", "--flavor=manifest",
        f"--manifest={MANIFEST}",
    )
    p.zenml(
        "stack", "register", "runner", "-o", "default", "-a", "default",
        "-s", "runner-venv", "-s", "runner-venv-async", "--set",
    )
    return p
