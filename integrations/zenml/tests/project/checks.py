"""Pipelines the tests run besides the example: a step that uses more memory than its
`ResourceSettings` allow, one that raises, one that sleeps until it is cancelled, one
that overrides the manifest's settings for itself, and one that reads a secret."""

import hashlib
import os
import time

from zenml import CommandStep, pipeline, step
from zenml.config import DockerSettings, ResourceSettings

from steprunner_zenml import ManifestStepOperatorSettings

# The example's requirement, so that every step here reuses its prepared environment.
DOCKER = DockerSettings(requirements=["tabulate==0.9.0"])
OPERATOR = "runner-venv"


@step(
    step_operator=OPERATOR,
    settings={"docker": DOCKER, "resources": ResourceSettings(cpu_count=1, memory="400MB")},
)
def hog() -> int:
    """Say so (the last line it prints), then touch 2 GiB, 64 MiB at a time: far
    beyond the 400MB limit."""
    print("hog: touching 2 GiB now 9c1e", flush=True)
    chunks = [bytearray(64 * 2**20) for _ in range(32)]
    return len(chunks)


@step(step_operator=OPERATOR, settings={"docker": DOCKER})
def boom() -> int:
    raise ValueError("boom: the step's own error 7f3a")


@step(step_operator=OPERATOR, settings={"docker": DOCKER})
def sleeper(marker: str) -> int:
    """Say it started (its pid in `marker`), then sleep until cancelled."""
    with open(marker + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(marker + ".tmp", marker)
    time.sleep(3600)
    return 0


@step(
    step_operator=OPERATOR,
    settings={
        "docker": DOCKER,
        # Per-step settings: this step's manifest `timeout` is one second.
        f"step_operator:{OPERATOR}": ManifestStepOperatorSettings(settings={"timeout": "1s"}),
    },
)
def slow() -> int:
    time.sleep(3600)
    return 0


@step(
    step_operator=OPERATOR,
    settings={"docker": DOCKER},
    environment={"STEPRUNNER_TEST_SECRET": os.environ.get("TEST_SECRET_VALUE", "")},
)
def secret() -> str:
    """The hash of the secret the step sees (never the secret itself)."""
    return hashlib.sha256(os.environ.get("STEPRUNNER_TEST_SECRET", "").encode()).hexdigest()


# Two mistakes a run must be refused for before any step starts: a misspelt manifest
# setting, and a manifest that does not exist.
def for_both(s: ManifestStepOperatorSettings) -> dict:
    """The settings for the tests' two step operators (synchronous and not)."""
    return {f"step_operator:{op}": s for op in (OPERATOR, OPERATOR + "-async")}


@step(step_operator=OPERATOR, settings=for_both(ManifestStepOperatorSettings(settings={"timout": "1s"})))
def typo() -> int:
    return 0


@step(step_operator=OPERATOR, settings=for_both(ManifestStepOperatorSettings(manifest="no/such.yaml")))
def lost() -> int:
    return 0


@pipeline(enable_cache=False)
def mistakes_pipeline() -> None:
    typo()
    lost()


# A command step: no ZenML code runs in it, so nothing inside says it finished.
hello = CommandStep(
    command=["python", "-c", "print('command step ran 5e1d')"],
    name="hello",
    step_operator=OPERATOR,
)


@step(step_operator=OPERATOR, settings={"docker": DOCKER})
def where() -> str:
    """The step's working directory."""
    return os.getcwd()


@pipeline(enable_cache=False)
def where_pipeline() -> None:
    where()


# `runtime_environment` reaches the step; `image_tag` (for building an image, which the
# runner does not do) is said to be ignored.
@step(
    step_operator=OPERATOR,
    settings={
        "docker": DockerSettings(
            requirements=["tabulate==0.9.0"],
            runtime_environment={"STEPRUNNER_TEST_RUNTIME": "rt-7c41"},
            image_tag="unused-7c41",
        )
    },
)
def runtime() -> str:
    return os.environ.get("STEPRUNNER_TEST_RUNTIME", "")


@pipeline(enable_cache=False)
def runtime_pipeline() -> None:
    runtime()


@step(step_operator=OPERATOR + "-async", settings={"docker": DOCKER})
def span() -> list:
    """When it ran: two of them at once must overlap, sharing one warm environment."""
    start = time.time()
    time.sleep(4)
    return [start, time.time()]


@pipeline(dynamic=True, enable_cache=False)
def parallel_pipeline() -> None:
    left = span.submit(id="left")
    right = span.submit(id="right")
    left.result()
    right.result()


@pipeline(enable_cache=False)
def command_pipeline() -> None:
    hello()


@pipeline(enable_cache=False)
def oom_pipeline() -> None:
    hog()


@pipeline(enable_cache=False)
def raise_pipeline() -> None:
    boom()


@pipeline(enable_cache=False)
def sleep_pipeline(marker: str) -> None:
    sleeper(marker=marker)


@pipeline(enable_cache=False)
def timeout_pipeline() -> None:
    slow()


@pipeline(enable_cache=False)
def secret_pipeline() -> None:
    secret()


#: Name → (pipeline, its step or steps).
PIPELINES = {
    "mistakes": (mistakes_pipeline, ("typo", "lost")),
    "command": (command_pipeline, "hello"),
    "where": (where_pipeline, "where"),
    "runtime": (runtime_pipeline, "runtime"),
    # Dynamic: its steps pick their (asynchronous) operator themselves.
    "parallel": (parallel_pipeline, ()),
    "oom": (oom_pipeline, "hog"),
    "raise": (raise_pipeline, "boom"),
    "sleep": (sleep_pipeline, "sleeper"),
    "timeout": (timeout_pipeline, "slow"),
    "secret": (secret_pipeline, "secret"),
}
