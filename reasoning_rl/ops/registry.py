"""Compare pipeline runs in MLflow, pick the best GRPO adapter, register it under an alias, load it back.

A *pipeline row* is one parent run (role=pipeline, opened by the Prefect flow or by the first stage of a
`dvc repro`) that has a report child (stages/report.py, which logs every evaluated model's metrics). Its GRPO
run is found by the adapter that was evaluated (tag `adapter_sha256.grpo` on the report run = tag
`adapter_sha256` on the GRPO run), so a flow run whose GRPO stage was cached by DVC still points at the run that
trained the adapter it evaluated.

Accuracies are only comparable on the same questions: the report run tags its question set
(`eval_question_set`, a hash of the ordered question ids) and `pick_best` ranks only rows sharing one.

Registry: MLflow 3.x will not register a plain artifact folder, so the adapter is logged as a pyfunc
"model from code" (reasoning_rl/ops/adapter_model.py) with the adapter folder as its artifact. Chosen over
`mlflow.transformers` because the base model here is not a hub id (the embedded GGUF), and models-from-code
needs no pickle: `download_adapter` gets the safetensors back without executing anything.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REGISTERED_MODEL = "reasoning-rl-grpo"
DEFAULT_ALIAS = "champion"
MODELS = ("base", "sft", "grpo")
KEY_PARAMS = ("grpo.loss_type", "grpo.beta", "grpo.num_generations", "grpo.max_steps", "sft.max_steps")


class AliasNotFoundError(LookupError):
    """Nothing is registered under the requested alias (or it holds no adapter)."""


@dataclass(frozen=True)
class PipelineRow:
    """One evaluated pipeline execution, as read back from MLflow."""

    run_id: str  # the parent (pipeline) run
    name: str
    start_time: int  # ms since epoch
    report_run_id: str  # the report stage run holding every evaluated model's metrics
    question_set: str | None
    questions: int | None
    accuracy: dict[str, float] = field(default_factory=dict)  # model -> strict accuracy (the reward parser)
    flexible_accuracy: dict[str, float] = field(default_factory=dict)  # model -> last-number accuracy
    format_rate: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)  # KEY_PARAMS read from the GRPO/SFT runs
    wall_seconds: float = 0.0  # the stages that ran in this execution (cached ones cost nothing)
    grpo_run_id: str | None = None  # the run that trained the evaluated GRPO adapter


def _client(tracking_uri: str | None = None):
    from mlflow.tracking import MlflowClient

    from reasoning_rl.ops.tracking import tracking_uri as default_uri

    return MlflowClient(tracking_uri or default_uri())


def _all_runs(client, experiment_id: str, filter_string: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def pipeline_rows(experiment: str | None = None, tracking_uri: str | None = None) -> list[PipelineRow]:
    """Every evaluated pipeline run of `experiment`, newest first."""
    from reasoning_rl.ops.tracking import experiment_name

    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment or experiment_name())
    if exp is None:
        return []
    parents = _all_runs(client, exp.experiment_id, "tags.role = 'pipeline'")
    stages = _all_runs(client, exp.experiment_id, "tags.role = 'stage'")
    children: dict[str, list[Any]] = {}
    for run in stages:
        children.setdefault(run.data.tags.get("mlflow.parentRunId", ""), []).append(run)
    trained_by = {  # adapter hash -> the training run that produced it (newest wins)
        (r.data.tags.get("stage"), r.data.tags["adapter_sha256"]): r
        for r in sorted(stages, key=lambda r: r.info.start_time)
        if "adapter_sha256" in r.data.tags
    }
    rows = []
    for parent in parents:
        kids = children.get(parent.info.run_id, [])
        evals = [r for r in kids if r.data.tags.get("stage") == "report" and r.info.status == "FINISHED"]
        if not evals:
            continue
        ev = max(evals, key=lambda r: r.info.start_time)
        metrics, tags = ev.data.metrics, ev.data.tags
        grpo = trained_by.get(("grpo", tags.get("adapter_sha256.grpo", "")))
        sft = trained_by.get(("sft", tags.get("adapter_sha256.sft", "")))
        params = {k: v for r in (sft, grpo) if r is not None for k, v in r.data.params.items() if k in KEY_PARAMS}
        wall = sum((r.info.end_time - r.info.start_time) / 1000 for r in kids if r.info.end_time)
        questions = metrics.get("questions")
        rows.append(
            PipelineRow(
                run_id=parent.info.run_id,
                name=parent.info.run_name,
                start_time=parent.info.start_time,
                report_run_id=ev.info.run_id,
                question_set=tags.get("eval_question_set"),
                questions=int(questions) if questions else None,
                accuracy={m: metrics[f"{m}/accuracy"] for m in MODELS if f"{m}/accuracy" in metrics},
                flexible_accuracy={m: metrics[f"{m}/flexible_accuracy"] for m in MODELS
                                   if f"{m}/flexible_accuracy" in metrics},
                format_rate={m: metrics[f"{m}/format_rate"] for m in MODELS if f"{m}/format_rate" in metrics},
                params=params,
                wall_seconds=round(wall, 1),
                grpo_run_id=grpo.info.run_id if grpo is not None else None,
            )
        )
    return sorted(rows, key=lambda r: r.start_time, reverse=True)


def pick_best(rows: list[PipelineRow], question_set: str | None = None) -> PipelineRow | None:
    """Best GRPO row by accuracy on one question set (default: the newest row's), ties: format rate, newest.

    Rows without a traceable GRPO run cannot be registered and are skipped.
    """
    eligible = [r for r in rows if "grpo" in r.accuracy and r.grpo_run_id]
    if not eligible:
        return None
    target = question_set or eligible[0].question_set
    same = [r for r in eligible if r.question_set == target]
    return max(same, key=lambda r: (r.accuracy["grpo"], r.format_rate.get("grpo", 0.0), r.start_time), default=None)


def format_table(rows: list[PipelineRow], best: PipelineRow | None = None) -> str:
    """Markdown table of pipeline rows; the best row is marked with ★."""

    def pct(d: dict[str, float], m: str) -> str:
        return f"{d[m]:.1%}" if m in d else "—"

    head = (
        "| | pipeline run | questions | set | base acc | SFT acc | GRPO acc | base flex | SFT flex | GRPO flex "
        "| base fmt | SFT fmt | GRPO fmt "
        "| loss_type | beta | G | SFT steps | GRPO steps | wall |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        p = r.params
        lines.append(
            f"| {'★' if best is not None and r.run_id == best.run_id else ''} | {r.name} | {r.questions or '?'} "
            f"| {(r.question_set or '?')[:8]} | {pct(r.accuracy, 'base')} | {pct(r.accuracy, 'sft')} "
            f"| {pct(r.accuracy, 'grpo')} | {pct(r.flexible_accuracy, 'base')} | {pct(r.flexible_accuracy, 'sft')} "
            f"| {pct(r.flexible_accuracy, 'grpo')} | {pct(r.format_rate, 'base')} | {pct(r.format_rate, 'sft')} "
            f"| {pct(r.format_rate, 'grpo')} | {p.get('grpo.loss_type', '?')} | {p.get('grpo.beta', '?')} "
            f"| {p.get('grpo.num_generations', '?')} | {p.get('sft.max_steps', '?')} | {p.get('grpo.max_steps', '?')} "
            f"| {r.wall_seconds / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


def register_adapter(
    row: PipelineRow, alias: str = DEFAULT_ALIAS, name: str = REGISTERED_MODEL, tracking_uri: str | None = None
) -> str:
    """Register the GRPO adapter of `row` (as a pyfunc model) and point `alias` at it; return the version.

    Idempotent: a GRPO run registered before reuses its version instead of logging the model again.
    """
    import mlflow

    if row.grpo_run_id is None:
        raise ValueError(f"pipeline run {row.name} has no traceable GRPO run: nothing to register")
    client = _client(tracking_uri)
    existing = [v for v in _versions(client, name) if v.run_id == row.grpo_run_id]
    if existing:
        version = existing[0].version
    else:
        grpo = client.get_run(row.grpo_run_id)
        mlflow.set_tracking_uri(client.tracking_uri)
        with tempfile.TemporaryDirectory() as tmp:
            adapter = Path(client.download_artifacts(row.grpo_run_id, "adapter", tmp))
            config = {
                "base_model": grpo.data.params.get("base.model", ""),
                "dtype": grpo.data.params.get("base.dtype", "auto"),
                "max_new_tokens": 256,
            }
            with mlflow.start_run(run_id=row.grpo_run_id):
                info = mlflow.pyfunc.log_model(
                    name="adapter_model",
                    python_model=str(Path(__file__).with_name("adapter_model.py")),
                    artifacts={"adapter": str(adapter)},
                    model_config=config,
                    pip_requirements=["reasoning-rl", "torch", "transformers", "peft", "mlflow"],
                )
        version = mlflow.register_model(info.model_uri, name, tags={"pipeline_run": row.run_id}).version
    client.set_registered_model_alias(name, alias, version)
    for key, value in {
        "grpo_accuracy": row.accuracy.get("grpo"),
        "question_set": row.question_set,
        "pipeline_run": row.run_id,
    }.items():
        if value is not None:
            client.set_model_version_tag(name, version, key, str(value))
    log.info("registered %s version %s (GRPO run %s) as @%s", name, version, row.grpo_run_id, alias)
    return str(version)


def _versions(client, name: str) -> list[Any]:
    from mlflow.exceptions import MlflowException

    try:
        return list(client.search_model_versions(f"name = '{name}'"))
    except MlflowException:
        return []


def download_adapter(
    dest: str | Path, alias: str = DEFAULT_ALIAS, name: str = REGISTERED_MODEL, tracking_uri: str | None = None
) -> Path:
    """Fetch the adapter registered as `name@alias` into `dest`; return the folder holding its safetensors.

    Raises AliasNotFoundError naming the alias when nothing is registered under it.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        raise AliasNotFoundError(
            f"no model registered as {name}@{alias} at {client.tracking_uri}: "
            "run `python -m scripts.compare_runs --register` first"
        ) from err
    mlflow.set_tracking_uri(client.tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version.version}", dst_path=str(dest)))
    found = sorted(local.rglob("adapter_model.safetensors"))
    if not found:
        raise AliasNotFoundError(f"{name}@{alias} (version {version.version}) holds no adapter_model.safetensors")
    return found[0].parent
