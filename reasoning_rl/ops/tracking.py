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

Robustness (docs/robustness.md):

- fail fast: the tracking store is checked (a 5 s health request for a server) before any model is loaded;
- mid-run failures: every logging call goes through `_guarded`; the first error is remembered, later calls
  are skipped, training goes on, and `stage_run` raises `TrackingError` naming it after the stage wrote its
  files (so the stage exits non-zero);
- resume: with `resume_dir`, the run id is kept in `<resume_dir>/mlflow_run.json` with a fingerprint of
  the params and input data; a rerun with the same fingerprint reopens that run (a killed stage leaves it
  RUNNING; the resumed one ends FINISHED). A different fingerprint wipes the stale checkpoints;
- traceability: every run is tagged with the git commit and dirtiness, the DVC md5 of each input (computed
  with dvc_data, as `dvc.lock` records it), an md5 of the stage's params and the installed package versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPERIMENT = "reasoning-rl"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PARENT_ENV = "REASONING_RL_PARENT_RUN_ID"
PIPELINE_ENV = "REASONING_RL_PIPELINE_ID"
RUN_STATE = "mlflow_run.json"
# Keep a dead server from stalling training: MLflow's defaults retry 7 times with exponential backoff and a
# 120 s timeout per request (minutes per call). Users can still override both.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "mlflow", "dvc", "reasoning-rl")

_failures: list[str] = []


class TrackingError(RuntimeError):
    """The MLflow tracking store could not be reached, or stopped answering during the run."""


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


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise TrackingError at once if the tracking store cannot be used (before hours of training)."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
                if resp.status != 200:
                    raise TrackingError(f"MLflow tracking server {uri} answered /health with HTTP {resp.status}")
        except (OSError, urllib.error.URLError) as err:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({err}); start it, or unset MLFLOW_TRACKING_URI to "
                f"use the local {DEFAULT_TRACKING_URI}"
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise TrackingError(f"MLflow tracking URI {uri}: folder {folder} does not exist")


def _guarded(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an MLflow function; on failure remember why, skip later calls, and let training go on."""
    if _failures:
        return None
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - any tracking failure must not kill an hour of training
        _failures.append(f"{what} failed: {type(err).__name__}: {err}")
        log.error("MLflow tracking failed (%s); training goes on, the stage will exit non-zero at the end", err)
        return None


def tracking_failure() -> str | None:
    """Why tracking failed during this stage, or None."""
    return _failures[0] if _failures else None


def dvc_md5(path: Path) -> str:
    """The md5 DVC records for `path` in dvc.lock (`<md5>.dir` for a folder), computed with dvc_data."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as odb_dir:
        _, _, obj = build(HashFileDB(fs, odb_dir), str(Path(path).resolve()), fs, "md5", dry_run=True)
    return obj.hash_info.value


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def params_md5(params: dict[str, Any]) -> str:
    """md5 of the stage's params sections (canonical JSON), so two runs with equal params share it."""
    return hashlib.md5(json.dumps(flatten("", params), sort_keys=True, default=str).encode()).hexdigest()


def _input_tag(path: Path) -> str:
    """Tag key for an input's DVC md5, e.g. `dvc_md5.data/prepared/train.jsonl` (MLflow-safe characters)."""
    return "dvc_md5." + re.sub(r"[^\w./ -]", "_", str(path))[-230:]


def provenance(params: dict[str, Any], inputs: list[Path]) -> dict[str, str]:
    """Tags that trace a run back to its code, data, params and environment."""
    tags = {**git_state(), "params_md5": params_md5(params)}
    for path in inputs:
        tags[_input_tag(path)] = dvc_md5(path) if Path(path).exists() else "missing"
    tags |= {f"version.{name}": v for name, v in package_versions().items()}
    return tags


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


def _reopen_run_id(resume_dir: Path | None, fingerprint: str) -> str | None:
    """The run id of an interrupted run with the same fingerprint; wipe `resume_dir` if it holds another's."""
    if resume_dir is None or not resume_dir.exists():
        return None
    try:
        state = json.loads((resume_dir / RUN_STATE).read_text())
    except (OSError, ValueError):
        state = {}
    if state.get("fingerprint") == fingerprint:
        return state.get("run_id")
    log.warning("removing %s: its checkpoints belong to other params or input data", resume_dir)
    shutil.rmtree(resume_dir)
    return None


@contextmanager
def stage_run(
    stage: str,
    params: dict[str, Any],
    params_file: Path = Path("params.yaml"),
    inputs: list[Path] | None = None,
    resume_dir: Path | None = None,
) -> Iterator[Any]:
    """Open the MLflow run of one stage (child of the pipeline's parent run), log params and provenance.

    Fails fast (TrackingError) if the store is unreachable. With `resume_dir` (the stage's checkpoints folder),
    a rerun after a crash with the same params and inputs reopens the interrupted run instead of a new one.
    Raises TrackingError on exit if logging failed during the block (the block itself ran to the end).
    """
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri()
    check_reachable(uri)
    import mlflow
    from mlflow.tracking import MlflowClient

    _failures.clear()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment(experiment_name())
    inputs = list(inputs or [])
    tags = {"stage": stage, "role": "stage", **provenance(params, inputs)}
    fingerprint = params_md5(params) + "".join(tags[_input_tag(p)] for p in inputs)
    run_id = _reopen_run_id(resume_dir, fingerprint)
    run = None
    if run_id is not None:
        try:
            run = mlflow.start_run(run_id=run_id)
            tags["resumed"] = "true"
            log.info("resuming MLflow run %s of stage %s", run_id, stage)
        except Exception as err:  # noqa: BLE001 - a deleted run or another store: start a new one
            log.warning("cannot reopen MLflow run %s (%s): starting a new run", run_id, err)
    if run is None:
        pid = pipeline_id(params_file)
        parent = _parent_run_id(MlflowClient(), experiment.experiment_id, pid)
        run = mlflow.start_run(run_name=stage, parent_run_id=parent, tags={"pipeline_id": pid})
        mlflow.log_params(flatten("", params))
    mlflow.set_tags(tags)
    if resume_dir is not None:
        resume_dir.mkdir(parents=True, exist_ok=True)
        (resume_dir / RUN_STATE).write_text(json.dumps({"run_id": run.info.run_id, "fingerprint": fingerprint}))
    log.info("MLflow run %s (stage %s) at %s", run.info.run_id, stage, uri)
    try:
        yield run
    except BaseException:
        _end_run(mlflow, "FAILED")
        raise
    _end_run(mlflow, "FINISHED")
    if _failures:
        raise TrackingError(
            f"MLflow logging stopped during stage {stage} ({_failures[0]}); the stage's files were written, "
            f"but run {run.info.run_id} at {uri} is incomplete"
        )


def _end_run(mlflow: Any, status: str) -> None:
    """End the active run even after a logging failure (end_run pops it locally before calling the store)."""
    try:
        mlflow.end_run(status)
    except Exception as err:  # noqa: BLE001 - the store is gone; the failure is reported by stage_run
        if not _failures:
            _failures.append(f"end_run failed: {type(err).__name__}: {err}")


def logged_steps(run_id: str) -> set[int]:
    """Steps already logged to a run (HistoryCallback logs a `step` metric with every entry)."""
    from mlflow.tracking import MlflowClient

    history = _guarded("get_metric_history", MlflowClient().get_metric_history, run_id, "step") or []
    return {int(m.step) for m in history}


def log_metrics(metrics: dict[str, Any], step: int | None = None) -> None:
    """Log the numeric entries of `metrics` to the active run (non-numbers are skipped)."""
    import mlflow

    numeric = {
        k.replace("@", "_at_"): float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    if numeric:
        _guarded("log_metrics", mlflow.log_metrics, numeric, step=step)


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

    _guarded("set_tag", mlflow.set_tag, "adapter_sha256", file_sha256(adapter_dir / "adapter_model.safetensors"))
    log_artifacts(adapter_dir, "adapter")


def log_artifacts(path: Path, artifact_path: str | None = None) -> None:
    import mlflow

    if path.is_dir():
        _guarded("log_artifacts", mlflow.log_artifacts, str(path), artifact_path=artifact_path)
    elif path.is_file():
        _guarded("log_artifact", mlflow.log_artifact, str(path), artifact_path=artifact_path)


def log_table(rows: dict[str, list], artifact_file: str) -> None:
    import mlflow

    _guarded("log_table", mlflow.log_table, rows, artifact_file=artifact_file)


def set_tags(tags: dict[str, str]) -> None:
    import mlflow

    _guarded("set_tags", mlflow.set_tags, tags)
