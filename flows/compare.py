"""Prefect flow: read MLflow, print the pipeline-run table, optionally register the best GRPO adapter.

Run: python -m flows.compare [--register] [--alias champion]
(Without Prefect, the same thing: python -m scripts.compare_runs.) Its tasks talk to the tracking server
only, so they retry: a busy server is the failure a retry can help with.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger, task

from reasoning_rl.ops.registry import (
    DEFAULT_ALIAS,
    PipelineRow,
    format_table,
    pick_best,
    pipeline_rows,
    register_adapter,
)


@task(retries=3, retry_delay_seconds=[2, 5, 10])
def read_rows(experiment: str | None) -> list[PipelineRow]:
    return pipeline_rows(experiment)


@task(retries=3, retry_delay_seconds=[2, 5, 10])
def register(row: PipelineRow, alias: str) -> str:
    return register_adapter(row, alias=alias)


@flow(name="reasoning-rl-compare")
def compare(experiment: str | None = None, register_best: bool = False, alias: str = DEFAULT_ALIAS) -> dict:
    """Table of evaluated pipeline runs; the best GRPO run by accuracy (same question set) optionally registered."""
    logger = get_run_logger()
    rows = read_rows(experiment)
    best = pick_best(rows)
    logger.info("pipeline runs:\n%s", format_table(rows, best))
    version = register(best, alias) if register_best and best is not None else None
    return {
        "rows": len(rows),
        "best_run_id": best.run_id if best else None,
        "best_grpo_accuracy": best.accuracy.get("grpo") if best else None,
        "registered_version": version,
    }


def cli() -> None:
    import typer

    def main(
        register_best: Annotated[bool, typer.Option("--register", help="register the best adapter")] = False,
        alias: Annotated[str, typer.Option(help="registry alias")] = DEFAULT_ALIAS,
        experiment: Annotated[str | None, typer.Option(help="MLflow experiment")] = None,
    ) -> None:
        print(compare(experiment=experiment, register_best=register_best, alias=alias))

    typer.run(main)


if __name__ == "__main__":
    cli()
