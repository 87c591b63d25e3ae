"""The pieces that need no pipeline: messages, requirement files, flags, the info file."""

import json
import os
from pathlib import Path

import pytest

from steprunner_zenml import runner as rn
from steprunner_zenml.errors import StepRunnerError
from steprunner_zenml.step_info import deep_merge, read_requirements


def result(**over):
    base = {
        "status": "succeeded",
        "exit_code": 0,
        "signal": None,
        "message": None,
        "peak_memory_bytes": 400_000_000,
        "limits": [
            {"name": "memory", "value": 400 * 10**6, "enforced_by": "cgroup-v1"},
            {"name": "timeout", "value": 30.0, "enforced_by": "supervisor"},
        ],
        "logs": {"stdout": "/runs/r1/stdout.log", "stderr": "/runs/r1/stderr.log"},
    }
    base.update(over)
    return base


def test_oom_message_names_the_limit_as_written_and_the_logs():
    msg = rn.failure_message(
        "train",
        result(status="oom_killed", exit_code=137, message="OOM-killed", peak_memory_bytes=381.5 * 2**20),
        "400MB",
    )
    assert msg.startswith(
        "step `train` was OOM-killed under its memory limit of 400MB (400000000 bytes; "
        "peak 381.5 MiB); runner status `oom_killed`, exit code 137; "
        "logs: /runs/r1/stdout.log, /runs/r1/stderr.log"
    ), msg


def test_timeout_and_failure_messages():
    assert "timed out after its limit of 30s" in rn.failure_message(
        "s", result(status="timed_out", exit_code=124)
    )
    assert "failed with exit code 3" in rn.failure_message("s", result(status="failed", exit_code=3))
    assert "killed by signal 9" in rn.failure_message(
        "s", result(status="failed", exit_code=137, signal=9)
    )
    assert "could not be started: not found" in rn.failure_message(
        "s", result(status="launch_error", exit_code=127, message="not found")
    )


def test_prepare_failure_shows_the_end_of_the_last_prepare_log(tmp_path: Path):
    (tmp_path / "prepare.0.log").write_text("created\n")
    (tmp_path / "prepare.2.log").write_text("Collecting nope\nERROR: No matching distribution found for nope\n")
    logs = {"stdout": str(tmp_path / "stdout.log"), "stderr": str(tmp_path / "stderr.log")}
    msg = rn.failure_message("s", result(status="prepare_failed", exit_code=125, logs=logs))
    assert "preparing the environment of step `s` failed" in msg
    assert f"end of `{tmp_path / 'prepare.2.log'}`" in msg
    assert "No matching distribution found for nope" in msg


def test_error_is_rebuilt_from_its_message_alone():
    err = rn.error_for("s", result(status="oom_killed", exit_code=137), "400MB")
    assert err.status == "oom_killed" and err.exit_code == 137 and err.run_dir == "/runs/r1"
    assert err.logs == {"stdout": "/runs/r1/stdout.log", "stderr": "/runs/r1/stderr.log"}
    # ZenML rebuilds a stored exception as `cls(message)`.
    again = StepRunnerError(str(err))
    assert str(again) == str(err) and again.status is None


def test_env_flags_carry_names_only():
    assert rn.env_flags(["B", "A", "B"]) == ["--env", "A", "--env", "B"]
    with pytest.raises(StepRunnerError):
        rn.env_flags(["A=1"])


def test_info_file_is_private_and_removed():
    with rn.InfoFile({"entrypoint": ["python"]}) as path:
        assert json.loads(Path(path).read_text()) == {"entrypoint": ["python"]}
        assert os.stat(os.path.dirname(path)).st_mode & 0o077 == 0
    assert not os.path.exists(path)


def test_requirements_files_follow_includes_and_refuse_options(tmp_path: Path):
    (tmp_path / "base.txt").write_text("tabulate==0.9.0  # tables\n\n# comment\n")
    (tmp_path / "req.txt").write_text("-r base.txt\nrequests>=2\n")
    assert read_requirements(str(tmp_path / "req.txt")) == ["tabulate==0.9.0", "requests>=2"]
    (tmp_path / "bad.txt").write_text("--index-url https://example.invalid/simple\n")
    with pytest.raises(ValueError, match="bad.txt:1: pip option"):
        read_requirements(str(tmp_path / "bad.txt"))


def test_step_settings_merge_over_the_component_settings():
    base = {"python": "python3", "extra_args": ["-q"], "nested": {"a": 1, "b": 2}}
    over = {"timeout": "1s", "nested": {"b": 3}}
    assert deep_merge(base, over) == {
        "python": "python3",
        "extra_args": ["-q"],
        "nested": {"a": 1, "b": 3},
        "timeout": "1s",
    }


def test_runner_complaint_keeps_its_error_lines():
    done = rn.Completed(
        argv=["runner", "launch"],
        code=2,
        stdout="",
        stderr_tail=["noise\n", "error: no manifest file or registered flavor named `x`\n",
                     "  = hint: pass a path\n"],
    )
    assert done.json() is None
    assert done.complaint() == (
        "error: no manifest file or registered flavor named `x`\n  = hint: pass a path"
    )


def test_only_the_lines_zenml_lacks_are_added_each_counted():
    from steprunner_zenml.logs import missing_lines

    printed = ["epoch 1", "epoch 2", "same", "same", "", "last words"]
    # ZenML kept the first lines (one `same` of two) and lost the end.
    have = ["epoch 1", "epoch 2  ", "same"]
    assert missing_lines(have, printed) == ["same", "last words"]
    assert missing_lines(printed, printed) == []
    assert missing_lines([], ["a", " ", "b"]) == ["a", "b"]
