"""The step's entrypoint: ZenML's, in the folder the runner gives the step.

ZenML's entrypoint changes into `/app` (creating it) before it runs a step, where a
container image keeps the code. A step the runner runs has its code in the source
root instead, which the runner passes as `RUNNER_SOURCE_DIR` and makes the step's
working directory: the entrypoint stays there (and creates nothing), unless ZenML must
download the code first (a snapshot whose code lives in the artifact store or a code
repository), which it does its own way.
"""

import os
import sys

from zenml.step_operators.step_operator_entrypoint_configuration import (
    StepOperatorEntrypointConfiguration,
)


class RunnerEntrypointConfiguration(StepOperatorEntrypointConfiguration):
    """ZenML's step operator entrypoint, run in the source root."""

    def prepare_code_environment(self) -> None:
        source = os.environ.get("RUNNER_SOURCE_DIR")
        if not source or not os.path.isdir(source) or self.should_download_code:
            super().prepare_code_environment()
            return
        os.chdir(source)
        if source not in sys.path:
            sys.path.insert(0, source)
