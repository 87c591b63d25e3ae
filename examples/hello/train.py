"""A tiny training step: fit a line to noisy points with plain Python."""
import os
import random
import sys

rows = int(os.environ.get("ROWS", "1000"))
random.seed(42)
xs = [random.uniform(0, 10) for _ in range(rows)]
ys = [3.0 * x + 2.0 + random.gauss(0, 1) for x in xs]
n = len(xs)
mx, my = sum(xs) / n, sum(ys) / n
slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
intercept = my - slope * mx
print(f"step {os.environ.get('RUNNER_STEP', '?')}: fitted y = {slope:.3f}x + {intercept:.3f} on {n} rows")
print(f"python {sys.version.split()[0]} in {sys.prefix}", file=sys.stderr)
