"""Compare pipeline runs in MLflow; optionally register the best GRPO adapter under an alias.

Run: python -m scripts.compare_runs [--register] [--alias champion] [--experiment reasoning-rl]
     (MLFLOW_TRACKING_URI picks the store; default: sqlite:///mlflow.db in the project root)

Prints one row per evaluated pipeline run (base / SFT / GRPO strict and flexible accuracy, format rate, key params,
wall time of the stages that ran) and marks with ★ the best GRPO run by strict accuracy on the newest run's
question set.
The same logic runs as a Prefect flow: flows/compare.py.
"""

from __future__ import annotations

from typing import Annotated

import typer

from reasoning_rl.ops.registry import DEFAULT_ALIAS, format_table, pick_best, pipeline_rows, register_adapter

app = typer.Typer(add_completion=False)


@app.command()
def main(
    register: Annotated[bool, typer.Option(help="register the best GRPO adapter and point the alias at it")] = False,
    alias: Annotated[str, typer.Option(help="registry alias to set")] = DEFAULT_ALIAS,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default: reasoning-rl)")] = None,
    question_set: Annotated[str | None, typer.Option(help="rank on this question set (default: newest run's)")] = None,
) -> None:
    rows = pipeline_rows(experiment)
    if not rows:
        raise typer.Exit(f"no evaluated pipeline runs in experiment {experiment or 'reasoning-rl'}: run the pipeline")
    best = pick_best(rows, question_set)
    print(format_table(rows, best))
    if best is None:
        print("no GRPO run to rank on that question set")
        raise typer.Exit(1 if register else 0)
    print(f"best: {best.name} (GRPO accuracy {best.accuracy['grpo']:.1%}, GRPO run {best.grpo_run_id})")
    if register:
        version = register_adapter(best, alias=alias)
        print(f"registered as reasoning-rl-grpo version {version} @{alias}")


if __name__ == "__main__":
    app()
