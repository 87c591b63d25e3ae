"""The `manifest` step operator flavor: its config and its per-step settings.

Kept free of the implementation's imports, as ZenML loads flavors eagerly.
"""

from typing import TYPE_CHECKING, Any, Dict, Optional, Type

from zenml.config.base_settings import BaseSettings
from zenml.step_operators import BaseStepOperatorConfig, BaseStepOperatorFlavor

if TYPE_CHECKING:
    from steprunner_zenml.step_operator import ManifestStepOperator

FLAVOR_NAME = "manifest"


class ManifestStepOperatorSettings(BaseSettings):
    """What a step may set for itself.

    Attributes:
        manifest: Another manifest for this step (a path or a registered flavor name,
            as the component's `manifest`).
        settings: Values of the manifest's own settings (its `settings:` schema), merged
            over the component's `settings`, nested objects key by key.
        best_effort_limits: Run even when a limit cannot be enforced (`runner launch
            --best-effort-limits`); the result records what was enforced.
    """

    manifest: Optional[str] = None
    settings: Dict[str, Any] = {}
    best_effort_limits: bool = False


class ManifestStepOperatorConfig(BaseStepOperatorConfig, ManifestStepOperatorSettings):
    """A step operator that runs each step with one steprunner flavor manifest.

    Attributes:
        manifest: Path of the flavor manifest (relative paths are relative to the
            ZenML source root, where `zenml init` ran), or the name of a flavor
            registered with the runner. Checked when the component is registered or
            updated: it must exist and validate, and `settings` must match its
            settings schema.
        runner: The `runner` binary; default: `$STEPRUNNER_RUNNER`, else `runner`
            on PATH.
        asynchronous: Submit steps with `runner launch --detach` and follow them
            with `runner status`/`wait`/`cancel` (needed by dynamic pipelines). When
            false, `runner launch` runs each step while ZenML waits.
        stop_poll_secs: How often, while a step runs, the operator looks whether ZenML
            is stopping its pipeline run (then it cancels the step).
        follow_logs: Asynchronous mode: while ZenML waits for a step, print the run's
            progress and the step's output as they come (`runner logs --follow`), as
            the synchronous mode does.
    """

    manifest: str  # type: ignore[assignment]
    runner: Optional[str] = None
    asynchronous: bool = True
    stop_poll_secs: float = 2.0
    follow_logs: bool = True

    @property
    def is_valid(self) -> bool:
        """ZenML asks this when the component is registered or updated (not when it
        is loaded): the manifest must resolve and validate, and the component's
        settings must fit its schema. A problem raises, with the runner's message."""
        from steprunner_zenml.checks import check
        from steprunner_zenml.errors import StepRunnerError

        try:
            check(self.manifest, self.settings, runner=self.runner)
        except StepRunnerError as e:
            raise ValueError(f"step operator `manifest`: {e}") from None
        return True


class ManifestStepOperatorFlavor(BaseStepOperatorFlavor):
    """Runs steps with a steprunner flavor manifest, under its limits."""

    @property
    def name(self) -> str:
        return FLAVOR_NAME

    @property
    def docs_url(self) -> Optional[str]:
        return None

    @property
    def sdk_docs_url(self) -> Optional[str]:
        return None

    @property
    def logo_url(self) -> Optional[str]:
        return None

    @property
    def config_class(self) -> Type[ManifestStepOperatorConfig]:
        return ManifestStepOperatorConfig

    @property
    def implementation_class(self) -> Type["ManifestStepOperator"]:
        from steprunner_zenml.step_operator import ManifestStepOperator

        return ManifestStepOperator
