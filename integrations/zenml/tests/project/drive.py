"""Run one pipeline of `checks.py`: python drive.py NAME [--step-operator OP] [--marker PATH]

Prints `run RUN_ID` once the run finished; a failed run raises, as it would for a user.
"""

import argparse

from checks import OPERATOR, PIPELINES

parser = argparse.ArgumentParser()
parser.add_argument("name", choices=sorted(PIPELINES))
parser.add_argument("--step-operator", default=OPERATOR)
parser.add_argument("--marker")
args = parser.parse_args()

pipeline, steps = PIPELINES[args.name]
steps = steps if isinstance(steps, tuple) else (steps,)
kwargs = {"marker": args.marker} if args.marker else {}
if steps:
    pipeline = pipeline.with_options(steps={s: {"step_operator": args.step_operator} for s in steps})
run = pipeline(**kwargs)
print(f"run {run.id}")
