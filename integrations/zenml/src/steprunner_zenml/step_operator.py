"""The step operator: each ZenML step becomes one `runner launch` of the manifest.

Synchronous (`launch`): `runner launch` runs while ZenML waits. Asynchronous
(`submit`/`get_status`/`wait`/`cancel`): `runner launch --detach` starts a supervisor
that outlives the call, and the run folder it returns is kept in the step run's
metadata, so any process can follow or cancel the step.
"""

import os
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Type, cast

from zenml.enums import ExecutionStatus
from zenml.logger import get_logger
from zenml.step_operators import BaseStepOperator

from steprunner_zenml import checks
from steprunner_zenml import runner as rn
from steprunner_zenml.errors import StepRunnerError
from steprunner_zenml.flavor import ManifestStepOperatorConfig, ManifestStepOperatorSettings
from steprunner_zenml.step_info import (
    deep_merge,
    ignored_docker_settings,
    resources_of,
    step_environment,
    step_info,
)

if TYPE_CHECKING:
    from zenml.config.base_settings import BaseSettings
    from zenml.stack import Stack, StackValidator
    from zenml.config.step_run_info import StepRunInfo
    from zenml.models import StepRunResponse

logger = get_logger(__name__)

#: Step run metadata keys.
RUN_ID_KEY = "steprunner_run_id"
RUN_DIR_KEY = "steprunner_run_dir"
STATUS_KEY = "steprunner_status"


class StopWatch:
    """Follows a pipeline run's status while one of its steps runs: when ZenML says the
    run is stopping (`zenml pipeline runs stop`, graceful or forceful: both set it
    `stopping` first), `on_stop` is called, once."""

    def __init__(self, run_id: Any, on_stop: Callable[[], None], every: float) -> None:
        self._run_id = run_id
        self._on_stop = on_stop
        self._every = every
        self._done = threading.Event()
        self.fired = False
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "StopWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join(timeout=self._every + 30)

    def _watch(self) -> None:
        from zenml.client import Client

        while not self._done.wait(self._every):
            try:
                status = Client().get_pipeline_run(self._run_id, hydrate=False).status
            except Exception as e:  # a store hiccup: look again later
                logger.debug("Cannot read the status of run `%s`: %s", self._run_id, e)
                continue
            if status in (ExecutionStatus.STOPPING, ExecutionStatus.STOPPED):
                self.fired = True
                try:
                    self._on_stop()
                except Exception:
                    logger.exception("Cannot stop the runner run of run `%s`", self._run_id)
                return


class ManifestStepOperator(BaseStepOperator):
    """Runs each step with `runner launch MANIFEST`, under the manifest's limits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Step run id → run folder, for runs this process submitted.
        self._runs: Dict[str, str] = {}
        self._reported: set = set()

    @property
    def config(self) -> ManifestStepOperatorConfig:
        return cast(ManifestStepOperatorConfig, self._config)

    @property
    def settings_class(self) -> Optional[Type["BaseSettings"]]:
        return ManifestStepOperatorSettings

    @property
    def validator(self) -> Optional["StackValidator"]:
        """ZenML validates the stack before every run: the manifest must resolve and
        validate with the component's settings, and a manifest whose steps run on other
        machines (`launch.remote`) needs a stack they can reach — no local artifact
        store, no local ZenML store."""
        from zenml.stack import StackValidator

        def check(stack: "Stack") -> "tuple[bool, str]":
            try:
                plan = checks.check(
                    self.config.manifest, self.config.settings, runner=self.config.runner
                )
            except StepRunnerError as e:
                return False, f"step operator `{self.name}`: {e}"
            if not (plan.get("launch") or {}).get("remote"):
                return True, ""
            from zenml.client import Client

            problems = []
            if stack.artifact_store.config.is_local:
                problems.append(f"the artifact store `{stack.artifact_store.name}` is local")
            if Client().zen_store.is_local_store():
                problems.append("the ZenML store is local (log in to a ZenML server: `zenml login`)")
            if problems:
                return False, (
                    f"step operator `{self.name}` runs steps on other machines (manifest "
                    f"`{self.config.manifest}` says `launch.remote`), but "
                    + " and ".join(problems)
                    + ": the step could not read its inputs nor write its outputs there"
                )
            return True, ""

        return StackValidator(custom_validation_function=check)

    @property
    def entrypoint_config_class(self) -> Type[Any]:
        """ZenML's entrypoint, kept in the source root (not `/app`)."""
        from steprunner_zenml.entrypoint import RunnerEntrypointConfiguration

        return RunnerEntrypointConfiguration

    # --- building a `runner launch` ------------------------------------------

    def _settings_for(
        self, step_settings: ManifestStepOperatorSettings, manifest: str, resources: Dict[str, Any]
    ) -> Dict[str, Any]:
        """The manifest's settings for one step: the component's, the step's over them,
        and for the venv flavor ZenML's own interpreter with its packages unless set
        (the step imports ZenML)."""
        settings = deep_merge(self.config.settings, step_settings.settings)
        plan = checks.check(manifest, settings, resources, runner=self.config.runner)
        if plan.get("flavor") == "venv" and "python" not in settings:
            settings = {"python": sys.executable, "inherit_packages": True, **settings}
        return settings

    def _invocation(
        self,
        info: "StepRunInfo",
        entrypoint_command: List[str],
        environment: Dict[str, str],
        detach: bool,
    ) -> Dict[str, Any]:
        from zenml.utils import source_utils

        source_root = source_utils.get_source_root()
        step_settings = cast(ManifestStepOperatorSettings, self.get_settings(info))
        name = info.pipeline_step_name
        manifest = step_settings.manifest or self.config.manifest
        try:
            settings = self._settings_for(step_settings, manifest, resources_of(info.config))
        except StepRunnerError as e:
            raise StepRunnerError(f"step `{name}`: {e}", exit_code=2) from None
        step_env, names = step_environment(info, environment, source_root)
        ignored = ignored_docker_settings(info.config.docker_settings)
        if ignored:
            logger.warning(
                "Step `%s`: DockerSettings the manifest step operator does not use (no "
                "image is built), ignored: %s.",
                name,
                ", ".join(ignored),
            )
        argv = [
            rn.find_runner(self.config.runner),
            "launch",
            checks.resolve(manifest, source_root),
            "--json",
        ]
        if detach:
            argv.append("--detach")
        if step_settings.best_effort_limits or self.config.best_effort_limits:
            argv.append("--best-effort-limits")
        argv += rn.env_flags(names)
        return {
            "argv": argv,
            "env": rn.runner_environment(os.environ, step_env),
            "cwd": source_root,
            "info": step_info(info, entrypoint_command, settings, source_root),
        }

    def _run(self, inv: Dict[str, Any], run_id: Any = None) -> rn.Completed:
        """`runner launch`; with `run_id`, a stop of that pipeline run stops it (SIGTERM:
        the runner cancels the step like Ctrl-C, and reports `cancelled`)."""
        procs: List[Any] = []

        def stop() -> None:
            for proc in procs:
                if proc.poll() is None:
                    logger.info("ZenML is stopping the run: cancelling the step.")
                    proc.send_signal(signal.SIGTERM)

        with rn.InfoFile(inv["info"]) as path:
            argv = inv["argv"][:3] + ["--info", path] + inv["argv"][3:]
            if run_id is None:
                return rn.run(argv, env=inv["env"], cwd=inv["cwd"])
            with StopWatch(run_id, stop, self.config.stop_poll_secs):
                return rn.run(argv, env=inv["env"], cwd=inv["cwd"], started=procs.append)

    # --- before the run ---------------------------------------------------------

    def get_docker_builds(self, snapshot: Any) -> List[Any]:
        """Called by ZenML before a run with every step's configuration: each step this
        operator runs is checked — its manifest resolves and validates, its settings
        fit the manifest's schema, its resources parse — so a mistake fails the run
        before any step starts, naming the step. No image is built."""
        problems = []
        for name, step in (snapshot.step_configurations or {}).items():
            config = step.config
            if config.step_operator not in (self.name, True):
                continue
            try:
                step_settings = cast(ManifestStepOperatorSettings, self.get_settings(step))
                self._settings_for(
                    step_settings,
                    step_settings.manifest or self.config.manifest,
                    resources_of(config),
                )
            except StepRunnerError as e:
                problems.append(f"step `{name}`: {e}")
            except ValueError as e:
                problems.append(f"step `{name}`: its step operator settings: {e}")
        if problems:
            raise StepRunnerError(
                "the pipeline cannot run with step operator "
                f"`{self.name}`:\n" + "\n".join(problems),
                exit_code=2,
            )
        return []

    # --- synchronous ----------------------------------------------------------

    def launch(
        self,
        info: "StepRunInfo",
        entrypoint_command: List[str],
        environment: Dict[str, str],
    ) -> None:
        """Run the step with `runner launch` and wait for it.

        Raises:
            StepRunnerError: the runner refused the step, or the step did not succeed
                (OOM-killed, timed out, …); a step that raised fails with its own
                exception instead, with the runner's report as a note.
        """
        inv = self._invocation(info, entrypoint_command, environment, detach=False)
        logger.info(
            "Running step `%s` with `%s`.", info.pipeline_step_name, self.config.manifest
        )
        try:
            done = self._run(inv, run_id=info.run_id)
        except KeyboardInterrupt as e:
            # Ctrl-C: the runner cancelled the step. Its account is recorded, and the
            # step `stopped`, as the runner has it `cancelled`.
            completed = getattr(e, "steprunner_completed", None)
            result = completed.json() if completed is not None else None
            if result and "status" in result:
                self._publish(info.step_run_id, result)
            self._record_stopped(info.step_run_id, info.pipeline_step_name)
            raise
        result = done.json()
        if result is None or "status" not in result:
            err = StepRunnerError(
                f"runner did not run step `{info.pipeline_step_name}` "
                f"(exit code {done.code}):\n{done.complaint()}",
                exit_code=done.code,
            )
            self._record_failure(info.step_run_id, info.pipeline_step_name, err)
            raise err from None
        self._publish(info.step_run_id, result)
        if result["status"] == "succeeded":
            if info.config.command is not None:
                # A command step runs no ZenML code that could say it finished, and
                # ZenML's synchronous path does not either (its asynchronous one does).
                from zenml.orchestrators.publish_utils import publish_successful_step_run

                publish_successful_step_run(step_run_id=info.step_run_id, output_artifact_ids={})
            return
        # `from None`: ZenML calls `launch` while handling `submit`'s NotImplementedError,
        # which is no part of this step's story.
        raise self._failure(
            info.step_run_id,
            info.pipeline_step_name,
            result,
            info.config.resource_settings.memory,
            record=True,
        ) from None

    # --- asynchronous ---------------------------------------------------------

    def submit(
        self,
        info: "StepRunInfo",
        entrypoint_command: List[str],
        environment: Dict[str, str],
    ) -> None:
        """Start the step with `runner launch --detach` and return at once."""
        if not self.config.asynchronous:
            # ZenML falls back to `launch` for static pipelines.
            raise NotImplementedError(
                f"step operator `{self.name}` has `asynchronous` off: steps run "
                "synchronously with `launch`"
            )
        inv = self._invocation(info, entrypoint_command, environment, detach=True)
        done = self._run(inv)
        started = done.json()
        if done.code != 0 or not started or "run_dir" not in started:
            err = StepRunnerError(
                f"runner did not start step `{info.pipeline_step_name}` "
                f"(exit code {done.code}):\n{done.complaint()}",
                exit_code=done.code,
            )
            self._record_failure(info.step_run_id, info.pipeline_step_name, err)
            raise err
        run_dir = str(started["run_dir"])
        self._runs[str(info.step_run_id)] = run_dir
        metadata = {RUN_ID_KEY: str(started.get("run_id")), RUN_DIR_KEY: run_dir}
        logger.info(
            "Submitted step `%s` as runner run `%s` (`runner logs %s --follow`).",
            info.pipeline_step_name,
            metadata[RUN_ID_KEY],
            run_dir,
        )
        try:
            from zenml.orchestrators.publish_utils import publish_step_run_metadata

            publish_step_run_metadata(info.step_run_id, {self.id: metadata})
            info.step_run.run_metadata.update(metadata)
        except Exception:
            logger.exception(
                "Cannot record runner run `%s` in step `%s`: only this process can "
                "follow it (`runner status %s`)",
                metadata[RUN_ID_KEY],
                info.pipeline_step_name,
                run_dir,
            )

    def _run_dir(self, step_run: "StepRunResponse") -> Optional[str]:
        known = self._runs.get(str(step_run.id))
        if known:
            return known
        found = step_run.run_metadata.get(RUN_DIR_KEY)
        if not found:
            from zenml.client import Client

            found = Client().get_run_step(step_run.id).run_metadata.get(RUN_DIR_KEY)
        return str(found) if found else None

    def _runner(self, *args: str, echo: bool = False) -> rn.Completed:
        return rn.run([rn.find_runner(self.config.runner), *args], echo=echo)

    def get_status(self, step_run: "StepRunResponse") -> ExecutionStatus:
        """The step's state from `runner status`; a step that ended badly without
        saying why itself gets the runner's account recorded as its exception."""
        run_dir = self._run_dir(step_run)
        if run_dir is None:
            logger.error("Step run `%s` has no runner run recorded.", step_run.id)
            return ExecutionStatus.FAILED
        done = self._runner("status", run_dir, "--json")
        state = done.json()
        if state is None:
            logger.error("`runner status %s` failed:\n%s", run_dir, done.complaint())
            return ExecutionStatus.FAILED
        if state.get("state") == "running":
            return ExecutionStatus.RUNNING
        result = state.get("result")
        if state.get("state") == "lost" or not isinstance(result, dict):
            result = {
                "status": "launch_error",
                "exit_code": 125,
                "message": "its supervisor died without writing a result",
                "logs": {
                    "stdout": os.path.join(run_dir, "stdout.log"),
                    "stderr": os.path.join(run_dir, "stderr.log"),
                },
            }
        if str(step_run.id) not in self._reported:
            self._reported.add(str(step_run.id))
            self._publish(step_run.id, result)
            if result.get("status") != "succeeded":
                self._failure(
                    step_run.id,
                    step_run.name,
                    result,
                    step_run.config.resource_settings.memory,
                    record=True,
                )
        status = result.get("status")
        if status == "succeeded":
            return ExecutionStatus.COMPLETED
        if status == "cancelled":
            return ExecutionStatus.STOPPED
        return ExecutionStatus.FAILED

    def wait(self, step_run: "StepRunResponse") -> ExecutionStatus:
        """Block in `runner wait` instead of polling, then read the final status."""
        run_dir = self._run_dir(step_run)
        if run_dir is not None:

            def stop() -> None:
                logger.info("ZenML is stopping the run: cancelling runner run `%s`.", run_dir)
                self._runner("cancel", run_dir, "--no-wait")

            # The run's progress as it goes (prepare commands, then the step's output),
            # as the synchronous mode shows it: `runner logs --follow` into our output.
            follower = None
            if self.config.follow_logs:
                try:
                    follower = subprocess.Popen(
                        [rn.find_runner(self.config.runner), "logs", run_dir, "--follow"],
                        stdin=subprocess.DEVNULL,
                    )
                except OSError as e:
                    logger.warning("Cannot follow the output of `%s`: %s", run_dir, e)
            try:
                with StopWatch(step_run.pipeline_run_id, stop, self.config.stop_poll_secs):
                    self._runner("wait", run_dir, "--json")
            finally:
                if follower is not None:
                    try:
                        follower.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        follower.terminate()
                        follower.wait()
        return super().wait(step_run)

    def cancel(self, step_run: "StepRunResponse") -> None:
        """Stop the step like Ctrl-C (TERM to its processes, grace, KILL) and wait
        until its cleanup ran."""
        run_dir = self._run_dir(step_run)
        if run_dir is None:
            logger.warning("Step run `%s` has no runner run to cancel.", step_run.id)
            return
        done = self._runner("cancel", run_dir, echo=True)
        if done.code != 0:
            logger.warning("`runner cancel %s`:\n%s", run_dir, done.complaint())

    def cleanup_step_submission(self, step_run: "StepRunResponse") -> None:
        """After ZenML is done with a step: a runner run still going (the caller was
        interrupted, ZenML gave up on it) is cancelled, so ZenML and the runner agree
        that it stopped."""
        run_dir = self._runs.pop(str(step_run.id), None) or self._run_dir(step_run)
        self._reported.discard(str(step_run.id))
        if run_dir is None:
            return
        state = self._runner("status", run_dir, "--json").json() or {}
        if state.get("state") == "running":
            logger.warning(
                "Step `%s` is still running after ZenML stopped following it: cancelling "
                "runner run `%s`.",
                step_run.name,
                run_dir,
            )
            done = self._runner("cancel", run_dir, echo=True)
            if done.code != 0:
                logger.warning("`runner cancel %s`:\n%s", run_dir, done.complaint())
            # ZenML then sees the step `stopped`, as the runner has it `cancelled`, and
            # gets the runner's account of it.
            state = self._runner("status", run_dir, "--json").json() or {}
            if isinstance(state.get("result"), dict):
                self._publish(step_run.id, state["result"])
            self._record_stopped(step_run.id, step_run.name)

    def _record_stopped(self, step_run_id: Any, step_name: str) -> None:
        """The step run `stopped` in ZenML, unless it already ended there."""
        try:
            from zenml.client import Client
            from zenml.orchestrators import publish_utils

            if not Client().get_run_step(step_run_id).status.is_finished:
                publish_utils.publish_stopped_step_run(step_run_id)
        except Exception as e:
            logger.warning("Cannot record step `%s` as stopped: %s", step_name, e)

    # --- reporting ------------------------------------------------------------

    def _publish(self, step_run_id: Any, result: Dict[str, Any]) -> None:
        """The runner's account of the step as step run metadata."""
        metadata: Dict[str, Any] = {STATUS_KEY: str(result.get("status"))}
        if result.get("run_id"):
            metadata[RUN_ID_KEY] = str(result["run_id"])
        run_dir = rn.run_dir_of(result)
        if run_dir:
            metadata[RUN_DIR_KEY] = run_dir
        if isinstance(result.get("peak_memory_bytes"), int):
            metadata["steprunner_peak_memory_bytes"] = result["peak_memory_bytes"]
        for key in ("exit_code", "duration_secs", "measured_by"):
            if result.get(key) is not None:
                metadata[f"steprunner_{key}"] = result[key]
        cpu = [result.get("cpu_user_secs"), result.get("cpu_system_secs")]
        if all(isinstance(c, (int, float)) for c in cpu):
            metadata["steprunner_cpu_secs"] = round(sum(cpu), 3)
        cache = result.get("cache")
        if isinstance(cache, dict):
            metadata["steprunner_cache_hit"] = bool(cache.get("hit"))
        if run_dir and isinstance(result.get("peak_memory_bytes"), int):
            # The sizing advice of `runner show`: the peak against the limit, and the
            # memory to give the step, as ResourceSettings takes it.
            shown = self._runner("show", run_dir, "--json").json() or {}
            if shown.get("suggestion"):
                metadata["steprunner_suggestion"] = shown["suggestion"]
            if isinstance(shown.get("suggested_memory_bytes"), int):
                mib = shown["suggested_memory_bytes"] // 2**20
                metadata["steprunner_suggested_memory"] = f"{mib}MiB"
        limits = {
            str(lim.get("name")): f"{lim.get('value')} ({lim.get('enforced_by')})"
            for lim in result.get("limits") or []
        }
        if limits:
            metadata["steprunner_limits"] = limits
        try:
            from zenml.orchestrators.publish_utils import publish_step_run_metadata

            publish_step_run_metadata(step_run_id, {self.id: metadata})
        except Exception as e:
            logger.warning("Cannot record the runner's result as metadata: %s", e)
        try:
            from steprunner_zenml import logs

            added = logs.forward(step_run_id, result)
            if added:
                logger.info(
                    "Added %d line(s) of the step's output to its ZenML log that the step "
                    "could not send itself.",
                    added,
                )
        except Exception as e:
            logger.warning("Cannot add the step's output to its ZenML log: %s", e)

    def _failure(
        self,
        step_run_id: Any,
        step_name: str,
        result: Dict[str, Any],
        memory: Optional[str],
        record: bool,
    ) -> BaseException:
        """The exception a step that did not succeed fails with.

        A step that raised has its own exception stored by ZenML: that is the error,
        with the runner's account attached as a note. Any other ending (OOM kill,
        timeout, cancel, a crash before ZenML could store anything) becomes a
        `StepRunnerError`, recorded as the step run's exception when `record`.
        """
        from zenml.client import Client
        from zenml.utils import exception_utils

        try:
            stored = Client().get_run_step(step_run_id)
        except Exception as e:
            logger.warning("Cannot read step run `%s`: %s", step_run_id, e)
            stored = None
        own = stored.exception_info if stored is not None else None
        if result.get("status") == "failed" and own is not None:
            exc = exception_utils.reconstruct_exception(
                exception_info=own,
                fallback_message=rn.failure_message(step_name, result, memory),
            )
            if hasattr(exc, "add_note"):
                exc.add_note(rn.failure_message(step_name, result, memory, stderr_tail=False))
            return exc
        err = rn.error_for(step_name, result, memory)
        if record and stored is not None and not stored.status.is_finished:
            final = (
                ExecutionStatus.STOPPED
                if result.get("status") == "cancelled"
                else ExecutionStatus.FAILED
            )
            self._record_failure(step_run_id, step_name, err, final)
        return err

    def _record_failure(
        self,
        step_run_id: Any,
        step_name: str,
        err: BaseException,
        status: ExecutionStatus = ExecutionStatus.FAILED,
    ) -> None:
        """Store `err` (the runner's whole message) as the step run's exception, with
        its final status, unless the step run already ended."""
        from zenml.client import Client
        from zenml.orchestrators import publish_utils
        from zenml.utils import exception_utils

        try:
            if Client().get_run_step(step_run_id).status.is_finished:
                return
            publish_utils.publish_step_run_status_update(
                step_run_id=step_run_id,
                status=status,
                exception_info=exception_utils.collect_exception_information(err),
            )
        except Exception as e:
            logger.warning("Cannot record the failure of step `%s`: %s", step_name, e)
