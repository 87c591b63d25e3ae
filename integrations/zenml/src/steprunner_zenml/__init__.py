"""A ZenML step operator flavor that runs steps with steprunner flavor manifests.

Register it once, then add operators by pointing them at manifests:

    zenml step-operator flavor register steprunner_zenml.ManifestStepOperatorFlavor
    zenml step-operator register venv --flavor=manifest --manifest=manifests/venv.yaml
"""

from steprunner_zenml.errors import StepRunnerError
from steprunner_zenml.flavor import (
    FLAVOR_NAME,
    ManifestStepOperatorConfig,
    ManifestStepOperatorFlavor,
    ManifestStepOperatorSettings,
)

__all__ = [
    "FLAVOR_NAME",
    "ManifestStepOperatorConfig",
    "ManifestStepOperatorFlavor",
    "ManifestStepOperatorSettings",
    "StepRunnerError",
]
