"""MLflow tracking: one experiment, one run per stage, the stages of one pipeline execution linked.

Default store: local sqlite `mlflow.db` (MLflow 3.x refuses the plain file store unless opted in);
`MLFLOW_TRACKING_URI` overrides, and `MLFLOW_EXPERIMENT_NAME` overrides the experiment ("reasoning-rl").
Runs of one pipeline execution share the tag `pipeline_id` and are children of one parent run, so
`mlflow ui` shows them side by side:

- `REASONING_RL_PARENT_RUN_ID` set (an orchestrator opened the parent): stages nest under it;
- else `REASONING_RL_PIPELINE_ID` names the execution, or it is derived from the launching `dvc repro`
  process (or, outside DVC, the git commit and the params file), so the stages of one execution find (or
  create) the same parent run.

(`MLFLOW_RUN_ID` is not used for this: MLflow reads it as "resume this run".)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPERIMENT = "reasoning-rl"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PARENT_ENV = "REASONING_RL_PARENT_RUN_ID"
PIPELINE_ENV = "REASONING_RL_PIPELINE_ID"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT


def start_pipeline_run(
    pid: str,
    tags: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    experiment: str | None = None,
    uri: str | None = None,
) -> str:
    """Create the parent run of one pipeline execution (an orchestrator's job) and return its id.

    The run stays RUNNING until `end_pipeline_run`; stages find it through `REASONING_RL_PARENT_RUN_ID`.
    `experiment` and `uri` default to `experiment_name()` and `tracking_uri()`.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri or tracking_uri())
    name = experiment or experiment_name()
    found = client.get_experiment_by_name(name)
    experiment_id = found.experiment_id if found else client.create_experiment(name)
    run = client.create_run(
        experiment_id,
        run_name=f"pipeline-{pid}",
        tags={"pipeline_id": pid, "role": "pipeline", **git_state(), **(tags or {})},
    )
    for key, value in flatten("", params or {}).items():
        client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def end_pipeline_run(
    run_id: str, status: str = "FINISHED", metrics: dict[str, Any] | None = None, uri: str | None = None
) -> None:
    """Log summary metrics on the parent run and close it with `status` (FINISHED, FAILED or KILLED)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri or tracking_uri())
    for key, value in (metrics or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            client.log_metric(run_id, key.replace("@", "_at_"), float(value))
    client.set_terminated(run_id, status=status)


def git_state() -> dict[str, str]:
    """Commit and dirtiness of the working tree ("unknown" outside a git checkout)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}


def _dvc_parent() -> str | None:
    """`<pid>-<start time>` of the `dvc repro` process that launched this stage, if one did (Linux /proc)."""
    ppid = os.getppid()
    try:
        cmdline = Path(f"/proc/{ppid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        start = Path(f"/proc/{ppid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{ppid}-{start}" if "dvc" in cmdline else None


def pipeline_id(params_file: Path) -> str:
    """Id shared by the stages of one pipeline execution (see module docstring).

    Order: `REASONING_RL_PIPELINE_ID`; else the launching `dvc repro` process (so editing params.yaml or
    committing while it runs does not split one execution); else git commit + params file contents.
    """
    if env := os.environ.get(PIPELINE_ENV):
        return env
    digest = hashlib.sha256()
    if dvc := _dvc_parent():
        digest.update(dvc.encode())
    else:
        digest.update(git_state()["git_commit"].encode())
        if params_file.is_file():
            digest.update(params_file.read_bytes())
    return digest.hexdigest()[:12]


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """Dataclasses/dicts → flat `section.key` params for mlflow.log_params."""
    if is_dataclass(value):
        value = asdict(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), sub))
        return out
    if isinstance(value, list | tuple):
        value = json.dumps(list(value))
    return {prefix: value}


def _parent_run_id(client, experiment_id: str, pid: str) -> str:
    if env := os.environ.get(PARENT_ENV):
        return env
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.pipeline_id = '{pid}' and tags.role = 'pipeline'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=f"pipeline-{pid}", tags={"pipeline_id": pid, "role": "pipeline"})
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@contextmanager
def stage_run(stage: str, params: dict[str, Any], params_file: Path = Path("params.yaml")) -> Iterator[Any]:
    """Open the MLflow run of one stage (child of the pipeline's parent run) and log its params and tags."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.set_experiment(experiment_name())
    pid = pipeline_id(params_file)
    parent = _parent_run_id(MlflowClient(), experiment.experiment_id, pid)
    tags = {"stage": stage, "pipeline_id": pid, "role": "stage", **git_state()}
    with mlflow.start_run(run_name=stage, parent_run_id=parent, tags=tags) as run:
        mlflow.log_params(flatten("", params))
        log.info("MLflow run %s (stage %s, pipeline %s) at %s", run.info.run_id, stage, pid, tracking_uri())
        yield run


def log_metrics(metrics: dict[str, Any], step: int | None = None) -> None:
    """Log the numeric entries of `metrics` to the active run (non-numbers are skipped)."""
    import mlflow

    numeric = {
        k.replace("@", "_at_"): float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    if numeric:
        mlflow.log_metrics(numeric, step=step)


def set_tags(tags: dict[str, str]) -> None:
    import mlflow

    mlflow.set_tags(tags)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def log_adapter(adapter_dir: Path) -> None:
    """Log a LoRA adapter folder as the run's `adapter` artifact, tagged with its weights' sha256.

    The tag lets a later run (evaluate, the registry) name exactly which training run made the weights it read.
    """
    import mlflow

    mlflow.set_tag("adapter_sha256", file_sha256(adapter_dir / "adapter_model.safetensors"))
    log_artifacts(adapter_dir, "adapter")


def log_artifacts(path: Path, artifact_path: str | None = None) -> None:
    import mlflow

    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path=artifact_path)
    elif path.is_file():
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
