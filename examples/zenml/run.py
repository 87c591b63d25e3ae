"""Run the example pipeline and print the model it trained, loaded back through ZenML.

    python run.py [--rows N] [--step-operator NAME]
"""

import argparse
import json

from zenml.client import Client

from pipeline import STEP_OPERATOR, training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--step-operator", default=STEP_OPERATOR)
    args = parser.parse_args()

    run = training.with_options(
        steps={"train": {"step_operator": args.step_operator}}
    )(rows=args.rows)
    run = Client().get_pipeline_run(run.id)
    model = run.steps["train"].output.load()
    metadata = run.steps["train"].run_metadata
    print(f"run {run.name}: {run.status}")
    print(f"model: {json.dumps(model, sort_keys=True)}")
    print(f"runner run folder: {metadata.get('steprunner_run_dir')}")


if __name__ == "__main__":
    main()
