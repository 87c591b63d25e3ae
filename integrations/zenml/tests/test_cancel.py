"""`cancel` stops a submitted step: the step's processes are gone, its cgroup is
removed, the runner's result says `cancelled`, and the ZenML run fails saying so."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List

import pytest

from conftest import RUNNER, Project

#: Generous bound for a step to start (a cold environment is prepared first); a
#: deadline against hanging, not a timing assertion.
START_DEADLINE_SECS = 600


def processes_with(marker: str) -> List[int]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def cgroups_of(run_id: str) -> List[str]:
    found = []
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        if root.count(os.sep) > 9:
            dirs[:] = []
            continue
        found += [os.path.join(root, d) for d in dirs if run_id in d]
    return found


def step_operator(name: str) -> Any:
    """The registered operator as any other process would build it: a fresh instance."""
    from zenml.client import Client
    from zenml.enums import StackComponentType
    from zenml.stack import StackComponent

    model = Client().get_stack_component(StackComponentType.STEP_OPERATOR, name)
    return StackComponent.from_model(model)


def test_cancel_stops_a_submitted_step_and_leaves_nothing(project: Project, tmp_path: Path) -> None:
    from zenml.client import Client

    marker = tmp_path / "started"
    pipeline = subprocess.Popen(
        [sys.executable, "drive.py", "sleep", "--step-operator", "runner-venv-async",
         "--marker", str(marker)],
        cwd=project.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + START_DEADLINE_SECS
        while not marker.exists():
            assert pipeline.poll() is None, "the pipeline ended before its step started:\n" + "".join(
                pipeline.communicate()
            )
            assert time.monotonic() < deadline, "the step did not start"
            time.sleep(0.5)
        step_pid = int(marker.read_text())
        assert os.path.exists(f"/proc/{step_pid}")

        runs = Client().list_pipeline_runs(
            pipeline_name="sleep_pipeline", sort_by="desc:created", size=1
        )
        step_run = Client().get_pipeline_run(runs.items[0].id).steps["sleeper"]
        run_dir = step_run.run_metadata["steprunner_run_dir"]
        run_id = step_run.run_metadata["steprunner_run_id"]
        assert cgroups_of(run_id), "the running step has no cgroup"

        step_operator("runner-venv-async").cancel(step_run)

        # `cancel` returns once the run is over: nothing of it is left.
        state = json.loads(
            subprocess.run(
                [RUNNER, "status", run_dir, "--json"], capture_output=True, text=True, check=True
            ).stdout
        )
        assert state["state"] == "finished", state
        assert state["result"]["status"] == "cancelled", state["result"]
        assert not os.path.exists(f"/proc/{step_pid}"), "the step's process is still alive"
        assert processes_with(str(step_run.id)) == [], "processes of the step are left"
        assert cgroups_of(run_id) == [], "the step's cgroup is left"

        out, err = pipeline.communicate(timeout=300)
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
            pipeline.wait()
    assert pipeline.returncode != 0, out + err
    assert "step `sleeper` was cancelled" in out + err, out + err
    assert Client().get_run_step(step_run.id).status.value == "stopped"


def start_sleeper(project: Project, operator: str, marker: Path) -> "subprocess.Popen[str]":
    """The sleep pipeline on `operator`, once its step is running (its pid in `marker`)."""
    pipeline = subprocess.Popen(
        [sys.executable, "drive.py", "sleep", "--step-operator", operator, "--marker", str(marker)],
        cwd=project.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + START_DEADLINE_SECS
    while not marker.exists():
        if pipeline.poll() is not None:
            raise AssertionError("the pipeline ended before its step started:\n" + "".join(pipeline.communicate()))
        assert time.monotonic() < deadline, "the step did not start"
        time.sleep(0.5)
    return pipeline


def stopped_and_gone(step_pid: int, pipeline: "subprocess.Popen[str]") -> str:
    """The caller ended, the step's process is gone, its runner run says `cancelled`,
    nothing of it is left, and ZenML has the step `stopped`. Returns what it printed."""
    from zenml.client import Client

    try:
        out, err = pipeline.communicate(timeout=300)
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
            pipeline.wait()
    assert not os.path.exists(f"/proc/{step_pid}"), "the step's process is still alive"
    runs = Client().list_pipeline_runs(pipeline_name="sleep_pipeline", sort_by="desc:created", size=1)
    step_run = Client().get_pipeline_run(runs.items[0].id).steps["sleeper"]
    run_dir = step_run.run_metadata["steprunner_run_dir"]
    state = json.loads(
        subprocess.run([RUNNER, "status", run_dir, "--json"], capture_output=True, text=True, check=True).stdout
    )
    assert state["state"] == "finished", state
    assert state["result"]["status"] == "cancelled", state["result"]
    assert cgroups_of(state["run_id"]) == [], "the step's cgroup is left"
    assert processes_with(str(step_run.id)) == [], "processes of the step are left"
    assert step_run.status.value == "stopped", step_run.status
    return out + err


@pytest.mark.parametrize(
    "operator,graceful",
    [
        ("runner-venv", True),
        ("runner-venv", False),
        ("runner-venv-async", True),
        ("runner-venv-async", False),
    ],
)
def test_zenml_stopping_the_run_stops_the_step(
    project: Project, tmp_path: Path, operator: str, graceful: bool
) -> None:
    from zenml.client import Client
    from zenml.utils.run_utils import stop_run

    marker = tmp_path / "started"
    pipeline = start_sleeper(project, operator, marker)
    step_pid = int(marker.read_text())
    runs = Client().list_pipeline_runs(pipeline_name="sleep_pipeline", sort_by="desc:created", size=1)
    try:
        stop_run(Client().get_pipeline_run(runs.items[0].id), graceful=graceful)
    except NotImplementedError:
        # The local orchestrator cannot stop forcefully itself; the run is `stopping`
        # all the same, which is what the operator follows.
        assert not graceful
    seen = stopped_and_gone(step_pid, pipeline)
    assert "step `sleeper` was cancelled" in seen, seen


@pytest.mark.parametrize("operator", ["runner-venv", "runner-venv-async"])
def test_an_interrupted_caller_cancels_its_step(project: Project, tmp_path: Path, operator: str) -> None:
    """Ctrl-C: ZenML and the runner agree the step stopped, and its account is kept."""
    from zenml.client import Client

    marker = tmp_path / "started"
    pipeline = start_sleeper(project, operator, marker)
    step_pid = int(marker.read_text())
    pipeline.send_signal(signal.SIGINT)
    stopped_and_gone(step_pid, pipeline)
    assert pipeline.returncode != 0
    runs = Client().list_pipeline_runs(pipeline_name="sleep_pipeline", sort_by="desc:created", size=1)
    metadata = Client().get_pipeline_run(runs.items[0].id).steps["sleeper"].run_metadata
    assert metadata.get("steprunner_status") == "cancelled", metadata
    assert isinstance(metadata.get("steprunner_duration_secs"), float), metadata
