"""A two-step ZenML pipeline whose training step runs through steprunner's `venv` flavor.

`load_data` runs in the caller, as ZenML steps do. `train` runs through the step
operator `runner-venv`: the runner builds (once, cached) a virtual environment with
`tabulate`, which the caller's environment does not have, and runs the step there
with its `ResourceSettings` enforced as cgroup limits: one CPU and 512 MB of memory.
"""

import random
from typing import Dict, List, Tuple

from zenml import pipeline, step
from zenml.config import DockerSettings, ResourceSettings

#: The step operator `train` runs on (see README.md for registering it).
STEP_OPERATOR = "runner-venv"


@step
def load_data(rows: int = 200) -> List[Tuple[float, float]]:
    """Noisy points around y = 3x + 2."""
    rng = random.Random(42)
    points = []
    for _ in range(rows):
        x = rng.uniform(0, 10)
        points.append((x, 3.0 * x + 2.0 + rng.gauss(0, 1)))
    return points


@step(
    step_operator=STEP_OPERATOR,
    settings={
        "docker": DockerSettings(requirements=["tabulate==0.9.0"]),
        "resources": ResourceSettings(cpu_count=1, memory="512MB"),
    },
)
def train(points: List[Tuple[float, float]]) -> Dict[str, float]:
    """Least-squares line through the points; prints a table with `tabulate`."""
    # Imported here: only the step's environment has it, not the caller's.
    from tabulate import tabulate

    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    model = {"slope": slope, "intercept": my - slope * mx, "rows": float(n)}
    print(tabulate(sorted(model.items()), headers=["parameter", "value"]))
    return model


@pipeline(enable_cache=False)
def training(rows: int = 200) -> None:
    """Load points, then fit a line to them through the runner."""
    train(load_data(rows=rows))
