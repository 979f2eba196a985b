"""Prefect flow: the DVC pipeline, one task per stage, one MLflow parent run per flow run.

Run once:      python -m flows.pipeline run [--profile profiles/smoke.yaml] [--set grpo.beta=0.04 ...]
On a schedule: python -m flows.pipeline serve --cron "0 3 * * *"   (keeps running; Ctrl-C stops it)

DVC stays in charge of caching and dvc.lock: each task is `dvc repro --single-item <stage>`, so a flow run and
a plain `dvc repro` share one cache and one lock, and an unchanged stage is skipped by DVC, not by Prefect.
The registered champion (evaluate.models with `champion`) is evaluated outside DVC, before the report, by
`python -m stages.evaluate champion`: its adapter comes from the MLflow registry, not from a DVC output.
Params are applied the DVC way (a profile file and/or `--set` overrides in DVC's own `-S` grammar, written to
params.yaml, which is what DVC hashes) and params.yaml is restored byte for byte when the flow ends, even on
failure (`dvc exp run -S` leaves it changed). dvc.lock then records what produced the outputs, so a later
plain `dvc repro` with the restored params re-runs what differs, as it should.

Retries only where a retry can help: opening and closing the MLflow parent run (a busy tracking server).
Never around training: a failed stage fails the flow with that stage's output in the Prefect logs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from reasoning_rl import paths
from reasoning_rl.config import SECTIONS, load_params, overlay
from reasoning_rl.ops.tracking import (
    DEFAULT_TRACKING_URI,
    EXPERIMENT,
    PARENT_ENV,
    PIPELINE_ENV,
    end_pipeline_run,
    start_pipeline_run,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EVALUATE = ("evaluate@base", "evaluate@sft", "evaluate@grpo")  # dvc.yaml's foreach stage, one per model
CHAMPION = "evaluate@champion"  # not a DVC stage: the registry's adapter
STAGES = ("prepare", "sft", "select", "grpo", *EVALUATE, CHAMPION, "report")
PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm redraws: one log record per redraw would flood the API


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message carries the end of its output."""


@contextmanager
def applied_params(root: Path, profile: str | None, overrides: list[str]) -> Iterator[dict[str, Any]]:
    """params.yaml = params.yaml + profile overlay (if any) + overrides for the block; the original bytes after.

    Overrides use DVC's `--set-param` grammar (`grpo.beta=0.04`, lists as `evaluate.models=[grpo]`), applied by
    DVC itself. Keys are checked against the typed configs and the result is validated like a stage would, so a
    bad key or value fails here, named, before any stage runs.
    """
    params_file = root / "params.yaml"
    original = params_file.read_bytes()
    try:
        if profile:  # a profile is an overlay on params.yaml; DVC reads one whole file
            merged = overlay(yaml.safe_load(original) or {}, yaml.safe_load((root / profile).read_text()) or {})
            params_file.write_text(yaml.safe_dump(merged, sort_keys=False))
        if overrides:
            from dvc.utils.hydra import apply_overrides

            current = yaml.safe_load(params_file.read_text()) or {}
            apply_overrides(params_file, [dvc_override(o, current) for o in overrides])
        try:
            load_params(params_file)
        except SystemExit as err:  # the stages' own validation, naming the key
            raise ValueError(str(err)) from None
        yield yaml.safe_load(params_file.read_text()) or {}
    finally:
        params_file.write_bytes(original)


def dvc_override(override: str, current: dict[str, Any]) -> str:
    """Check an override's key against the typed configs and phrase it for DVC.

    A known key the file leaves out (a profile lists only what it changes) gets DVC's `+` (add) prefix, so
    `grpo.beta=0.04` works on any profile; an unknown key is refused here, named, with the known ones.
    """
    if override.startswith(("+", "~")) or "=" not in override:
        return override
    key = override.split("=", 1)[0]
    section, _, name = key.partition(".")
    if section not in SECTIONS:
        raise ValueError(f"override {override!r}: unknown section {section!r}; sections: {', '.join(SECTIONS)}")
    known = [f.name for f in fields(SECTIONS[section])]
    if name not in known:
        raise ValueError(f"override {override!r}: {section} has no key {name!r}; keys: {', '.join(known)}")
    return override if name in (current.get(section) or {}) else f"+{override}"


def stage_env(root: Path, parent_run_id: str, pipeline_id: str, experiment: str) -> dict[str, str]:
    """Environment of the `dvc repro` subprocesses: nest under our parent run, same store and experiment."""
    env = {**os.environ, PARENT_ENV: parent_run_id, PIPELINE_ENV: pipeline_id, "MLFLOW_EXPERIMENT_NAME": experiment}
    env["MLFLOW_TRACKING_URI"] = resolved_tracking_uri(root)
    # dvc.yaml says `python -m stages.<name>`: make that this interpreter (the project's venv)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop(paths.PARAMS_ENV, None)  # the stages must read params.yaml, the file DVC hashes
    env.pop("MLFLOW_RUN_ID", None)  # MLflow would resume that run in every stage
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return env


def resolved_tracking_uri(root: Path) -> str:
    """MLFLOW_TRACKING_URI, or the project's own sqlite file as an absolute URI (stages run with cwd=root)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    return f"sqlite:///{root / 'mlflow.db'}" if uri == DEFAULT_TRACKING_URI else uri


def _dvc() -> str:
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


@task(retries=3, retry_delay_seconds=[2, 5, 10])
def open_parent_run(root: Path, pipeline_id: str, experiment: str, tags: dict[str, str], params: dict) -> str:
    uri = resolved_tracking_uri(root)
    run_id = start_pipeline_run(pipeline_id, tags=tags, params=params, experiment=experiment, uri=uri)
    get_run_logger().info("MLflow parent run %s (experiment %s) at %s", run_id, experiment, uri)
    return run_id


@task(retries=3, retry_delay_seconds=[2, 5, 10])
def close_parent_run(root: Path, run_id: str, status: str, metrics: dict[str, float]) -> None:
    end_pipeline_run(run_id, status=status, metrics=metrics, uri=resolved_tracking_uri(root))


@task(task_run_name="{stage}")
def run_stage(stage: str, root: Path, env: dict[str, str], force: bool = False) -> dict[str, Any]:
    """`dvc repro --single-item <stage>`, its output streamed into the Prefect logs. No retries: training."""
    logger = get_run_logger()
    cmd = [_dvc(), "repro", "--single-item", stage, *(["--force"] if force else [])]
    if stage == CHAMPION:
        cmd = [sys.executable, "-m", "stages.evaluate", "champion"]
    logger.info("$ %s", " ".join(cmd[1:]))
    start = time.perf_counter()
    tail: deque[str] = deque(maxlen=60)
    skipped = False
    with subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if not line or PROGRESS_BAR.search(line):
                continue
            tail.append(line)
            skipped |= "didn't change, skipping" in line
            logger.info("%s | %s", stage, line)
    seconds = round(time.perf_counter() - start, 1)
    if proc.returncode != 0:
        raise StageFailed(f"stage {stage} failed (exit {proc.returncode}) after {seconds} s:\n" + "\n".join(tail))
    return {"stage": stage, "ran": not skipped, "seconds": seconds}


def summary_metrics(root: Path) -> dict[str, float]:
    """The evaluate metrics now in the workspace (this run's outputs, trained or restored from DVC's cache)."""
    out: dict[str, float] = {}
    for model in ("base", "sft", "grpo"):
        file = root / paths.eval_metrics(model)
        if file.is_file():
            metrics = json.loads(file.read_text())
            out |= {f"{model}/{k}": metrics[k] for k in ("accuracy", "format_rate", "pass1_strict") if k in metrics}
    return out


@flow(name="reasoning-rl-pipeline")
def pipeline(
    profile: str | None = None,
    overrides: list[str] | None = None,
    experiment: str = EXPERIMENT,
    stages: list[str] | None = None,
    force: bool = False,
    project_dir: str | None = None,
) -> dict[str, Any]:
    """Run the DVC stages in order as Prefect tasks, all logging under one MLflow parent run.

    Args:
        profile: params file (relative to the project) used instead of params.yaml, e.g. profiles/smoke.yaml.
        overrides: DVC `-S` style assignments applied on top, e.g. ["grpo.beta=0.04"].
        experiment: MLflow experiment name.
        stages: subset of prepare, sft, select, grpo, evaluate@base, evaluate@sft, evaluate@grpo, evaluate@champion,
            report (in pipeline order; `evaluate` = the evaluate stages); default all. evaluate@champion runs
            only when evaluate.models names champion.
        force: re-run stages even when DVC finds them unchanged.
        project_dir: the DVC project (default: this checkout).
    """
    root = Path(project_dir or PROJECT_ROOT).resolve()
    wanted = {name for s in (stages or STAGES) for name in ((*EVALUATE, CHAMPION) if s == "evaluate" else (s,))}
    if unknown := sorted(wanted - set(STAGES)):
        raise ValueError(f"stages: unknown {unknown}; choose from {['evaluate', *STAGES]}")
    pipeline_id = (str(flow_run.get_id() or "") or uuid.uuid4().hex).replace("-", "")[:12]
    tags = {
        "orchestrator": "prefect",
        "prefect_flow_run_id": str(flow_run.get_id()),
        "profile": profile or "params.yaml",
        "overrides": json.dumps(list(overrides or [])),
    }
    with applied_params(root, profile, list(overrides or [])) as params:
        champion = "champion" in (params.get("evaluate") or {}).get("models", [])
        chosen = [s for s in STAGES if s in wanted and (s != CHAMPION or champion)]
        parent = open_parent_run(root, pipeline_id, experiment, tags, params)
        env = stage_env(root, parent, pipeline_id, experiment)
        results, status = [], "FAILED"
        try:
            for stage in chosen:
                results.append(run_stage(stage, root, env, force))
            status = "FINISHED"
        finally:
            close_parent_run(root, parent, status, summary_metrics(root) if status == "FINISHED" else {})
    return {"mlflow_parent_run_id": parent, "pipeline_id": pipeline_id, "stages": results}


def deployment(name: str, cron: str, profile: str | None, overrides: list[str], experiment: str, **parameters: Any):
    """The scheduled deployment `serve` runs (and the tests apply): the pipeline flow on a cron schedule.

    `parameters`: any other flow parameter (stages, force, project_dir) the scheduled runs should get.
    """
    return pipeline.to_deployment(
        name=name,
        cron=cron,
        parameters={"profile": profile, "overrides": overrides, "experiment": experiment, **parameters},
        description="reasoning-rl pipeline (DVC stages) on a schedule; see flows/pipeline.py",
        tags=["reasoning-rl"],
    )


# CLI option types (module level: typer resolves the string annotations against module globals)
Profile = Annotated[str | None, typer.Option(help="params file used instead of params.yaml (profiles/smoke.yaml)")]
Sets = Annotated[list[str] | None, typer.Option("--set", "-S", help="override in DVC -S grammar: grpo.beta=0.04")]
Experiment = Annotated[str, typer.Option(help="MLflow experiment")]


def cli() -> None:
    app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])

    @app.command()
    def run(
        profile: Profile = None,
        set_: Sets = None,
        experiment: Experiment = EXPERIMENT,
        stage: Annotated[list[str] | None, typer.Option(help="run only these stages (repeatable)")] = None,
        force: Annotated[bool, typer.Option(help="re-run stages DVC finds unchanged")] = False,
        project_dir: Annotated[str | None, typer.Option(help="the DVC project (default: this checkout)")] = None,
    ) -> None:
        """Run the pipeline once as a Prefect flow."""
        result = pipeline(
            profile=profile, overrides=set_, experiment=experiment, stages=stage or None, force=force,
            project_dir=project_dir,
        )
        print(json.dumps(result, indent=2))

    @app.command()
    def serve(
        cron: Annotated[str, typer.Option(help="cron schedule (UTC)")] = "0 3 * * *",
        name: Annotated[str, typer.Option(help="deployment name")] = "nightly",
        profile: Profile = None,
        set_: Sets = None,
        experiment: Experiment = EXPERIMENT,
    ) -> None:
        """Serve the pipeline on a cron schedule (a long-running process; runs appear in the Prefect UI)."""
        from prefect import serve as prefect_serve

        prefect_serve(deployment(name, cron, profile, set_ or [], experiment))

    app()


if __name__ == "__main__":
    cli()
