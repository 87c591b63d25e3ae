"""Running the `runner` binary: its command lines, its environment, its answers.

Nothing here imports ZenML. Environment values reach `runner` only through its
process environment; its command line carries their names (`--env NAME`), and
`runner` never prints the values.
"""

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterable, List, Mapping, Optional

from steprunner_zenml.errors import StepRunnerError

#: Environment variable naming the `runner` binary when the component does not.
RUNNER_ENV = "STEPRUNNER_RUNNER"

#: Lines of `runner`'s stderr kept for error messages.
TAIL_LINES = 40


def find_runner(configured: Optional[str] = None) -> str:
    """The `runner` binary: the configured one, else `$STEPRUNNER_RUNNER`, else the one
    the `steprunner` wheel installed beside this interpreter, else `runner` on PATH."""
    name = configured or os.environ.get(RUNNER_ENV)
    if not name:
        beside = os.path.join(os.path.dirname(sys.executable), "runner")
        if os.access(beside, os.X_OK):
            return beside
        name = "runner"
    found = shutil.which(name)
    if found is None:
        raise StepRunnerError(
            f"cannot find the runner binary `{name}`: install the `steprunner` wheel "
            f"(`pip install .` in its repository), set the step operator's `runner` "
            f"option or ${RUNNER_ENV} to its path, or put `runner` on PATH"
        )
    return found


@dataclass
class Completed:
    """What one `runner` command did."""

    argv: List[str]
    code: int
    stdout: str
    stderr_tail: List[str] = field(default_factory=list)

    def json(self) -> Optional[Dict[str, Any]]:
        """stdout as a JSON object, or None when it is not one."""
        try:
            value = json.loads(self.stdout)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def complaint(self) -> str:
        """`runner`'s own error lines (`error: …`, `hint: …`), else the end of its stderr."""
        lines = [line.rstrip() for line in self.stderr_tail if line.strip()]
        errors = [
            line
            for line in lines
            if line.lstrip().startswith(("error", "warning", "= hint", "-->"))
        ]
        text = "\n".join(errors or lines[-10:])
        return text or f"`{' '.join(self.argv[:2])}` exited with code {self.code}"


def _pump(stream: Any, tail: Deque[str], echo: bool) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace")
        tail.append(line)
        if echo:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
    stream.close()


def run(
    argv: List[str],
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    echo: bool = True,
    started: Optional[Callable[["subprocess.Popen[bytes]"], None]] = None,
) -> Completed:
    """Run `runner` to the end: stdout collected, stderr copied to ours (when `echo`).

    If this thread is interrupted (Ctrl-C, or ZenML stopping the run), `runner` gets
    SIGTERM, stops the step like it stops a timed-out one, and is waited for; the
    interruption then carries what `runner` answered as its `steprunner_completed`
    attribute (the result of the cancelled run, with `--json`).
    """
    try:
        proc = subprocess.Popen(
            argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as e:
        raise StepRunnerError(f"cannot start `{argv[0]}`: {e}") from e
    if started is not None:
        started(proc)
    tail: Deque[str] = collections.deque(maxlen=TAIL_LINES)
    pump = threading.Thread(target=_pump, args=(proc.stderr, tail, echo), daemon=True)
    pump.start()
    try:
        stdout = proc.stdout.read() if proc.stdout else b""
        code = proc.wait()
    except BaseException as e:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait()
        # Nothing was printed on stdout before the step's end: it is all still there.
        try:
            rest = proc.stdout.read() if proc.stdout else b""
        except BaseException:
            rest = b""
        pump.join(timeout=5)
        try:
            e.steprunner_completed = Completed(  # type: ignore[attr-defined]
                argv=argv,
                code=code,
                stdout=rest.decode("utf-8", errors="replace"),
                stderr_tail=list(tail),
            )
        except (AttributeError, TypeError):
            pass
        raise
    finally:
        pump.join(timeout=5)
    return Completed(
        argv=argv,
        code=code,
        stdout=stdout.decode("utf-8", errors="replace"),
        stderr_tail=list(tail),
    )


def runner_environment(
    base: Mapping[str, str], step_env: Mapping[str, str]
) -> Dict[str, str]:
    """`runner`'s process environment: ours, with the step's variables over it."""
    env = dict(base)
    env.update({k: str(v) for k, v in step_env.items()})
    return env


def env_flags(names: Iterable[str]) -> List[str]:
    """`--env NAME` for each variable name (sorted, each once)."""
    flags: List[str] = []
    for name in sorted(set(names)):
        if not name or "=" in name or "\0" in name:
            raise StepRunnerError(f"invalid environment variable name {name!r}")
        flags += ["--env", name]
    return flags


class InfoFile:
    """The step info as a private temporary JSON file, removed on exit."""

    def __init__(self, info: Dict[str, Any]) -> None:
        self._info = info
        self._dir: Optional[str] = None

    def __enter__(self) -> str:
        self._dir = tempfile.mkdtemp(prefix="steprunner-zenml-")
        path = os.path.join(self._dir, "step-info.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self._info, f, indent=2, default=str)
        return path

    def __exit__(self, *exc: Any) -> None:
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)


# --- results -----------------------------------------------------------------


def run_dir_of(result: Mapping[str, Any]) -> Optional[str]:
    """The run folder a result belongs to (the folder of its logs)."""
    stdout = (result.get("logs") or {}).get("stdout")
    return os.path.dirname(stdout) if stdout else None


def _limit(result: Mapping[str, Any], name: str) -> Any:
    for limit in result.get("limits") or []:
        if limit.get("name") == name:
            return limit.get("value")
    return None


def _mib(n: Any) -> str:
    return f"{n / 2**20:.1f} MiB" if isinstance(n, (int, float)) else "?"


def _log_tail(path: Optional[str], lines: int = 8) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join("  | " + line for line in kept)


def _last_prepare_log(run_dir: Optional[str]) -> Optional[str]:
    if not run_dir or not os.path.isdir(run_dir):
        return None
    logs = [n for n in os.listdir(run_dir) if n.startswith("prepare.") and n.endswith(".log")]
    if not logs:
        return None

    def index(name: str) -> int:
        middle = name[len("prepare.") : -len(".log")]
        return int(middle) if middle.isdigit() else -1

    return os.path.join(run_dir, max(logs, key=index))


def failure_message(
    step: str, result: Mapping[str, Any], memory: Optional[str] = None, stderr_tail: bool = True
) -> str:
    """One message saying how a step ended, what limit it hit, and where its logs are.

    `memory` is the limit as the user wrote it (ZenML's `ResourceSettings.memory`).
    """
    status = result.get("status")
    code = result.get("exit_code")
    detail = result.get("message")
    run_dir = run_dir_of(result)
    logs = result.get("logs") or {}
    # The runner's own message, where it adds to what the head says.
    says = detail
    if status == "oom_killed":
        limit = _limit(result, "memory")
        written = f"{memory} ({limit} bytes" if memory and limit else f"{memory or limit} ("
        head = (
            f"step `{step}` was OOM-killed under its memory limit of {written}; "
            f"peak {_mib(result.get('peak_memory_bytes'))})"
        )
        says = None
    elif status == "timed_out":
        secs = _limit(result, "timeout")
        shown = f"{secs:g}s" if isinstance(secs, (int, float)) else "?"
        head = f"step `{step}` timed out after its limit of {shown}"
        says = None
    elif status == "cancelled":
        head = f"step `{step}` was cancelled"
    elif status == "prepare_failed":
        head = f"preparing the environment of step `{step}` failed"
    elif status == "launch_error":
        head = f"step `{step}` could not be started"
    elif result.get("signal"):
        head = f"step `{step}` was killed by signal {result['signal']}"
    else:
        head = f"step `{step}` failed with exit code {code}"
    if says:
        head += f": {says}"
    parts = [head, f"runner status `{status}`, exit code {code}"]
    if logs.get("stdout") or logs.get("stderr"):
        parts.append(f"logs: {logs.get('stdout')}, {logs.get('stderr')}")
    elif run_dir:
        parts.append(f"run folder: {run_dir}")
    text = "; ".join(parts)
    tail = ""
    if status == "prepare_failed":
        log = _last_prepare_log(run_dir)
        tail = _log_tail(log)
        if tail:
            tail = f"\nend of `{log}`:\n{tail}"
    elif stderr_tail and status in ("failed", "launch_error"):
        tail = _log_tail(logs.get("stderr"))
        if tail:
            tail = f"\nend of the step's stderr:\n{tail}"
    return text + tail


def error_for(
    step: str, result: Mapping[str, Any], memory: Optional[str] = None, stderr_tail: bool = True
) -> StepRunnerError:
    """The error a step that did not succeed fails with."""
    return StepRunnerError(
        failure_message(step, result, memory, stderr_tail),
        status=result.get("status"),
        exit_code=result.get("exit_code"),
        run_dir=run_dir_of(result),
        result=dict(result),
    )
