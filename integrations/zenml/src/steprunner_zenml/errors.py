"""The error a step run through `runner` fails with."""

from typing import Any, Dict, Optional


class StepRunnerError(RuntimeError):
    """A step run through `runner` did not succeed.

    `status` is the runner's result status (`failed`, `oom_killed`, `timed_out`,
    `cancelled`, `prepare_failed`, `launch_error`), `result` the whole result JSON
    when there is one. ZenML rebuilds stored exceptions from their message alone, so
    everything but the message is optional.
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[str] = None,
        exit_code: Optional[int] = None,
        run_dir: Optional[str] = None,
        result: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.exit_code = exit_code
        self.run_dir = run_dir
        self.result = result

    @property
    def logs(self) -> Dict[str, str]:
        """Paths of the step's `stdout` and `stderr` logs, when known."""
        logs = (self.result or {}).get("logs") or {}
        return {k: logs[k] for k in ("stdout", "stderr") if k in logs}
