"""What is refused before anything runs: a registration whose manifest is missing or
whose settings the manifest does not have, and a pipeline whose steps name a missing
manifest or a misspelt setting — each refused at once, naming what is wrong, with no
runner run started."""

import os
from pathlib import Path

import pytest

from conftest import Project
from test_pipelines import ASYNC, SYNC, failed_with

MANIFEST = Path(__file__).resolve().parents[3] / "manifests" / "venv.yaml"


def runner_runs() -> int:
    runs = Path(os.environ["RUNNER_HOME"]) / "runs"
    return len(list(runs.iterdir())) if runs.is_dir() else 0


def operators(project: Project) -> str:
    return project.exec([project.zenml_bin, "step-operator", "list"]).stdout


def test_registration_with_a_missing_manifest_is_refused_at_once(project: Project) -> None:
    ran = project.exec(
        [project.zenml_bin, "step-operator", "register", "runner-missing", "--flavor=manifest",
         "--manifest=no/such.yaml"]
    )
    assert ran.code != 0, str(ran)
    seen = ran.stdout + ran.stderr
    assert "manifest `no/such.yaml` not found" in seen, str(ran)
    assert "relative to the ZenML source root" in seen and str(project.root) in seen, str(ran)
    assert "runner-missing" not in operators(project)


def test_registration_with_a_setting_the_manifest_lacks_is_refused(project: Project) -> None:
    ran = project.exec(
        [project.zenml_bin, "step-operator", "register", "runner-typo", "--flavor=manifest",
         f"--manifest={MANIFEST}", '--settings={"timout": "3s"}']
    )
    assert ran.code != 0, str(ran)
    seen = ran.stdout + ran.stderr
    assert "unknown setting `timout`" in seen and "did you mean `timeout`" in seen, str(ran)
    assert "runner-typo" not in operators(project)


@pytest.mark.parametrize("operator", [SYNC, ASYNC])
def test_step_mistakes_fail_the_run_before_any_step_starts(project: Project, operator: str) -> None:
    before = runner_runs()
    ran = project.run("drive.py", "mistakes", "--step-operator", operator)
    failed_with(
        ran,
        "step `typo`", "unknown setting `timout`", "did you mean `timeout`",
        "step `lost`", "manifest `no/such.yaml` not found",
    )
    assert runner_runs() == before, "a runner run started for a pipeline refused before it ran"


def test_a_stack_that_remote_steps_cannot_reach_is_refused(project: Project) -> None:
    """A manifest whose steps run elsewhere (`launch.remote`, here kubernetes) on a
    stack with a local artifact store and a local ZenML store: ZenML's validation,
    which runs before every pipeline, refuses it, naming both."""
    from zenml.client import Client
    from zenml.exceptions import StackValidationError
    from zenml.stack import Stack

    kubernetes = MANIFEST.parent / "kubernetes.yaml"
    project.zenml(
        "step-operator", "register", "runner-k8s", "--flavor=manifest",
        f"--manifest={kubernetes}", '--settings={"image": "python:3.12"}',
    )
    project.zenml("stack", "register", "remote-steps", "-o", "default", "-a", "default", "-s", "runner-k8s")
    stack = Stack.from_model(Client().get_stack("remote-steps"))
    with pytest.raises(StackValidationError) as refused:
        stack.validate()
    message = str(refused.value)
    assert "runs steps on other machines" in message, message
    assert "the artifact store `default` is local" in message, message
    assert "the ZenML store is local" in message, message
    # The local stack of the other tests passes the same validation.
    Stack.from_model(Client().get_stack("runner")).validate()
