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

pipeline, step_name = PIPELINES[args.name]
kwargs = {"marker": args.marker} if args.marker else {}
run = pipeline.with_options(steps={step_name: {"step_operator": args.step_operator}})(**kwargs)
print(f"run {run.id}")
