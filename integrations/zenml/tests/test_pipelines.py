"""Pipelines through the `manifest` step operator, against a real ZenML: the example
(synchronous and asynchronous), a step OOM-killed under its limit, a step that raises,
a step that times out under its own settings, and a secret that reaches the step and
nowhere else."""

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import RUNNER, Project, Ran

SYNC, ASYNC = "runner-venv", "runner-venv-async"


def client() -> Any:
    from zenml.client import Client

    return Client()


def last_run(pipeline: str) -> Any:
    runs = client().list_pipeline_runs(pipeline_name=pipeline, sort_by="desc:created", size=1)
    assert runs.items, f"no run of `{pipeline}`"
    return client().get_pipeline_run(runs.items[0].id)


def result_of(step_run: Any) -> Dict[str, Any]:
    """The runner's result JSON of a step run, found through its metadata."""
    run_dir = step_run.run_metadata.get("steprunner_run_dir")
    assert run_dir, f"step `{step_run.name}` has no runner run: {step_run.run_metadata}"
    return json.loads((Path(run_dir) / "result.json").read_text())


def zenml_log(step_run: Any) -> List[str]:
    """The messages of a step run's log, as ZenML keeps them (oldest first)."""
    from zenml.utils.logging_utils import search_logs_by_source

    from steprunner_zenml.logs import SOURCE, _entries

    step_run = client().get_run_step(step_run.id)
    model = search_logs_by_source(step_run.log_collection or [], SOURCE)
    assert model is not None, f"step `{step_run.name}` has no `{SOURCE}` log"
    return list(_entries(client().active_stack.log_store, model))


def limit(result: Dict[str, Any], name: str) -> Dict[str, Any]:
    found = [lim for lim in result["limits"] if lim["name"] == name]
    assert found, f"no `{name}` limit in {result['limits']}"
    return found[0]


def failed_with(ran: Ran, *needles: str) -> str:
    """The run failed, and what the user sees (ZenML logs on stdout, the traceback on
    stderr) names the step's error."""
    assert ran.code != 0, str(ran)
    seen = ran.stdout + ran.stderr
    for needle in needles:
        assert needle in seen, f"`{needle}` not in what the user sees:\n{ran}"
    return seen


@pytest.mark.parametrize("operator", [SYNC, ASYNC])
def test_example_pipeline_runs_under_the_runner(project: Project, operator: str) -> None:
    ran = project.run("run.py", "--step-operator", operator).ok()
    assert re.search(r"^run \S+: completed$", ran.stdout, re.M), str(ran)
    # The step's output is shown to the caller as it runs, in both modes.
    assert re.search(r"parameter\s+value", ran.stdout + ran.stderr), str(ran)

    # The step ran under the runner, with its ResourceSettings enforced as cgroup limits.
    run = last_run("training")
    train = run.steps["train"]
    result = result_of(train)
    assert result["status"] == "succeeded", result
    assert result["step"] == "train"
    memory, cpus = limit(result, "memory"), limit(result, "cpus")
    assert memory["value"] == 512 * 10**6, memory
    assert cpus["value"] == 1.0, cpus
    assert memory["enforced_by"] in ("cgroup-v1", "cgroup-v2"), memory
    assert cpus["enforced_by"] == memory["enforced_by"], cpus
    assert 0 < result["peak_memory_bytes"] <= 512 * 10**6, result["peak_memory_bytes"]
    assert train.run_metadata.get("steprunner_status") == "succeeded"
    # The runner's account as metadata: how it ended, what it used, what to give it.
    md = train.run_metadata
    assert md.get("steprunner_exit_code") == 0, md
    assert md.get("steprunner_duration_secs") == result["duration_secs"], md
    cpu = result["cpu_user_secs"] + result["cpu_system_secs"]
    assert abs(md.get("steprunner_cpu_secs") - cpu) < 0.01, md
    assert md.get("steprunner_cache_hit") == result["cache"]["hit"], md
    assert md.get("steprunner_measured_by") == "runner", md
    assert "of a 488.3 MiB limit" in md.get("steprunner_suggestion", ""), md
    assert re.fullmatch(r"\d+MiB", md.get("steprunner_suggested_memory", "")), md

    # The step used `tabulate`, which the caller's environment does not have.
    stdout = Path(result["logs"]["stdout"]).read_text()
    assert re.search(r"parameter\s+value", stdout), stdout
    assert "ModuleNotFoundError" in project.run("-c", "import tabulate").stderr

    # What it printed is in its ZenML log once: ZenML's own capture and the operator's
    # additions do not repeat a line.
    log = zenml_log(train)
    for line in stdout.splitlines():
        if line.strip():
            assert [m.rstrip() for m in log].count(line.rstrip()) == stdout.splitlines().count(line), (line, log)

    # Its output artifact loads back through the client.
    model = train.output.load()
    assert abs(model["slope"] - 3.0) < 0.2 and model["rows"] == 200, model
    assert f"model: {json.dumps(model, sort_keys=True)}" in ran.stdout


@pytest.mark.parametrize("operator", [SYNC, ASYNC])
def test_step_beyond_its_memory_is_oom_killed(project: Project, operator: str) -> None:
    ran = project.run("drive.py", "oom", "--step-operator", operator)
    failed_with(ran, "StepRunnerError", "step `hog` was OOM-killed under its memory limit of 400MB")

    hog = last_run("oom_pipeline").steps["hog"]
    assert hog.status.value == "failed"
    assert "OOM-killed under its memory limit of 400MB" in hog.exception_info.message
    result = result_of(hog)
    assert result["status"] == "oom_killed" and result["exit_code"] == 137, result
    assert result["oom_kills"] >= 1
    assert result["logs"]["stderr"] in hog.exception_info.message
    # Its last line reached the runner's log; the operator put it in ZenML's too.
    assert "hog: touching 2 GiB now 9c1e" in Path(result["logs"]["stdout"]).read_text()
    assert "hog: touching 2 GiB now 9c1e" in zenml_log(hog)


@pytest.mark.parametrize("operator", [SYNC, ASYNC])
def test_step_that_raises_fails_with_its_own_exception(project: Project, operator: str) -> None:
    ran = project.run("drive.py", "raise", "--step-operator", operator)
    failed_with(ran, "ValueError: boom: the step's own error 7f3a")

    boom = last_run("raise_pipeline").steps["boom"]
    assert boom.status.value == "failed"
    assert boom.exception_info.message == "boom: the step's own error 7f3a"
    assert result_of(boom)["status"] == "failed"


def test_step_settings_override_the_manifest_settings(project: Project) -> None:
    ran = project.run("drive.py", "timeout", "--step-operator", SYNC)
    failed_with(ran, "step `slow` timed out after its limit of 1s", "runner status `timed_out`")
    result = result_of(last_run("timeout_pipeline").steps["slow"])
    assert result["status"] == "timed_out" and result["exit_code"] == 124, result


@pytest.mark.parametrize("operator", [SYNC, ASYNC])
def test_secret_reaches_the_step_and_nothing_else(
    project: Project, operator: str, tmp_path: Path
) -> None:
    secret = "s3cret-" + os.urandom(8).hex()
    # A runner that records its command line and step info file, then runs as usual.
    record = tmp_path / "record"
    wrapper = tmp_path / "runner"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" >> "{record}"\n'
        'prev=""\n'
        f'for a in "$@"; do [ "$prev" = --info ] && cat "$a" >> "{record}"; prev="$a"; done\n'
        f'exec "{RUNNER}" "$@"\n'
    )
    wrapper.chmod(0o755)
    ran = project.run(
        "drive.py", "secret", "--step-operator", operator,
        env={"TEST_SECRET_VALUE": secret, "STEPRUNNER_RUNNER": str(wrapper)},
    ).ok()

    step = last_run("secret_pipeline").steps["secret"]
    assert step.output.load() == hashlib.sha256(secret.encode()).hexdigest()
    recorded = record.read_text()
    assert "--env\nSTEPRUNNER_TEST_SECRET\n" in recorded, recorded
    assert '"entrypoint"' in recorded, "the step info file was not recorded"
    assert secret not in recorded, "the secret is on the runner's command line or in its step info"
    assert secret not in ran.stdout + ran.stderr
    run_dir = Path(step.run_metadata["steprunner_run_dir"])
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f"the secret is in `{f}`"


@pytest.mark.parametrize("operator", [SYNC, ASYNC])
def test_a_command_step_ends_completed_with_its_output(project: Project, operator: str) -> None:
    project.run("drive.py", "command", "--step-operator", operator).ok()
    run = last_run("command_pipeline")
    hello = run.steps["hello"]
    assert hello.status.value == "completed", hello.status
    assert run.status.value == "completed", run.status
    result = result_of(hello)
    assert result["status"] == "succeeded", result
    assert Path(result["logs"]["stdout"]).read_text() == "command step ran 5e1d\n"
    assert zenml_log(hello).count("command step ran 5e1d") == 1, zenml_log(hello)


@pytest.mark.parametrize("operator", [SYNC, ASYNC])
def test_the_step_runs_in_the_source_root(project: Project, operator: str) -> None:
    project.run("drive.py", "where", "--step-operator", operator).ok()
    where = last_run("where_pipeline").steps["where"]
    assert os.path.realpath(where.output.load()) == os.path.realpath(project.root)


@pytest.mark.parametrize("operator", [SYNC, ASYNC])
def test_a_cold_prepare_shows_its_progress_in_both_modes(
    project: Project, operator: str, tmp_path: Path
) -> None:
    # A runner home of its own: nothing cached, so the step's environment is prepared.
    ran = project.run(
        "drive.py", "where", "--step-operator", operator, env={"RUNNER_HOME": str(tmp_path / "home")}
    ).ok()
    seen = ran.stdout + ran.stderr
    # The prepare commands are announced as they start (on stderr), and the installer's
    # output is shown (pip's `Collecting`, uv's `+`).
    assert re.search(r"^runner: prepare 1\b", seen, re.M), str(ran)
    assert re.search(r"^runner: prepare 4\b", seen, re.M), str(ran)
    assert re.search(r"(Collecting|\+) tabulate", seen), str(ran)
    result = result_of(last_run("where_pipeline").steps["where"])
    assert result["cache"]["hit"] is False, result["cache"]


def test_parallel_steps_of_a_dynamic_pipeline_share_a_warm_environment_at_once(project: Project) -> None:
    # Warm the environment the two steps share (the example's requirement).
    project.run("drive.py", "where", "--step-operator", ASYNC).ok()
    project.run("drive.py", "parallel").ok()
    run = last_run("parallel_pipeline")
    spans = {name: run.steps[name].output.load() for name in ("left", "right")}
    (a0, a1), (b0, b1) = spans["left"], spans["right"]
    assert max(a0, b0) < min(a1, b1), f"the two steps ran one after the other: {spans}"
    for name in ("left", "right"):
        result = result_of(run.steps[name])
        assert result["cache"]["hit"] is True, result["cache"]
    keys = {result_of(run.steps[n])["cache"]["key"] for n in ("left", "right")}
    assert len(keys) == 1, keys


@pytest.mark.parametrize("operator", [SYNC, ASYNC])
def test_a_runner_that_fails_before_the_step_is_the_steps_stored_exception(
    project: Project, operator: str, tmp_path: Path
) -> None:
    # A runner whose `launch` fails before any step starts (all else works as usual).
    wrapper = tmp_path / "runner"
    wrapper.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = launch ]; then echo "error: the launcher broke 4d2f" >&2; exit 125; fi\n'
        f'exec "{RUNNER}" "$@"\n'
    )
    wrapper.chmod(0o755)
    ran = project.run("drive.py", "where", "--step-operator", operator, env={"STEPRUNNER_RUNNER": str(wrapper)})
    failed_with(ran, "the launcher broke 4d2f")
    where = last_run("where_pipeline").steps["where"]
    assert where.status.value == "failed", where.status
    assert where.exception_info is not None, "no exception stored"
    assert "the launcher broke 4d2f" in where.exception_info.message, where.exception_info.message
    assert "exit code 125" in where.exception_info.message, where.exception_info.message


@pytest.mark.parametrize("operator", [SYNC, ASYNC])
def test_docker_settings_runtime_environment_is_passed_and_unused_fields_said(
    project: Project, operator: str
) -> None:
    ran = project.run("drive.py", "runtime", "--step-operator", operator).ok()
    assert last_run("runtime_pipeline").steps["runtime"].output.load() == "rt-7c41"
    seen = ran.stdout + ran.stderr
    assert "does not use (no image is built), ignored: image_tag" in seen, str(ran)
