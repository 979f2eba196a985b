"""Prefect flows end to end on a tiny profile: DVC stages as tasks, MLflow parent runs, comparison, registry,
schedules, failures, and the same flow against real `prefect server` and `mlflow server` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scratch_project import scratch_project
from servers import mlflow_server, prefect_server

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# The smoke profile made smaller still: the flow mechanics are under test here, not learning.
TINY = [
    "sft.max_steps=2",  # 2 steps: an adapter exists and the loss is logged
    "grpo.max_steps=1",  # 1 step: a GRPO adapter and one logged reward
    "grpo.num_prompts=8",
    "grpo.max_completion_length=32",
    "evaluate.num_questions=2",  # 2 questions x 16 tokens: the three models load and answer, quickly
    "evaluate.max_new_tokens=16",
]
MODELS = "evaluate.models=[base,sft,grpo,{}]"  # base/sft/grpo are DVC stages; champion is evaluated beside them
STAGES = ("prepare", "sft", "select", "grpo", "evaluate@base", "evaluate@sft", "evaluate@grpo", "report")


def sha(path: Path) -> str:
    from reasoning_rl.ops.tracking import file_sha256

    return file_sha256(path)


def adapter_hashes(work: Path) -> dict[str, str]:
    return {s: sha(work / f"models/{s}/adapter/adapter_model.safetensors") for s in ("sft", "grpo")}


def flow_error_logs(flow_run_id) -> str:
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs are shipped in batches by a background worker
    with get_client(sync_client=True) as client:
        errors = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]), level=LogFilterLevel(ge_=40))
        logs = client.read_logs(errors, limit=200, offset=0)
    return "\n".join(entry.message for entry in logs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, gsm8k_dir):
    """Under one Prefect test server: flow run A, run B (different GRPO lr), C (fails evaluating the champion), then
    registration of the best and run D evaluating the registered champion."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import pipeline
    from reasoning_rl.ops import registry

    work = scratch_project(tmp_path_factory.mktemp("flow"), gsm8k_dir)
    out: dict = {"work": work, "params_before": (work / "params.yaml").read_bytes()}
    old_uri = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    try:
        with prefect_test_harness():
            kw = {"profile": "profiles/smoke.yaml", "project_dir": str(work)}
            out["a"] = pipeline(overrides=TINY, **kw)
            out["adapters_after_a"] = adapter_hashes(work)
            out["params_after_a"] = (work / "params.yaml").read_bytes()
            out["b"] = pipeline(overrides=[*TINY, "grpo.learning_rate=1e-3"], **kw)
            out["adapters_before_c"] = adapter_hashes(work)
            state = pipeline(overrides=[*TINY, "grpo.learning_rate=1e-3", MODELS.format("champion")],
                             return_state=True, **kw)
            out["c_state"] = state
            out["c_logs"] = flow_error_logs(state.state_details.flow_run_id)
            out["c_params_after"] = (work / "params.yaml").read_bytes()
            out["rows"] = registry.pipeline_rows()
            out["best"] = registry.pick_best(out["rows"])
            out["version"] = registry.register_adapter(out["best"])
            d_overrides = [*TINY, "grpo.learning_rate=1e-3", MODELS.format("champion")]
            out["d"] = pipeline(overrides=d_overrides, stages=["evaluate"], **kw)
            out["champion_eval"] = json.loads((work / "metrics/eval_champion.json").read_text())
            yield out
    finally:
        if old_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri


def stage_runs(work: Path, parent_run_id: str) -> dict[str, object]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    found = client.search_runs(
        [client.get_experiment_by_name("reasoning-rl").experiment_id],
        f"tags.mlflow.parentRunId = '{parent_run_id}'",
    )
    return {r.data.tags["stage"]: r for r in found}


def b_stages(runs) -> list[str]:
    """What run B (only grpo.learning_rate changed) must re-run: grpo and the report (its curves changed), and
    evaluate@grpo only if the adapter's bytes changed (one tiny step may tie every group: a zero update).
    prepare, sft and the base and SFT decodes stay cached."""
    changed = runs["adapters_after_a"]["grpo"] != runs["adapters_before_c"]["grpo"]
    return ["grpo", *(["evaluate@grpo"] if changed else []), "report"]


def test_flow_runs_every_stage_through_dvc(runs):
    assert [(s["stage"], s["ran"]) for s in runs["a"]["stages"]] == [(stage, True) for stage in STAGES]
    lock = yaml.safe_load((runs["work"] / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)


def test_flow_leaves_params_yaml_unchanged(runs):
    assert runs["params_after_a"] == runs["params_before"]
    assert runs["c_params_after"] == runs["params_before"]  # also when the flow fails


def test_flow_lock_records_the_params_the_run_used(runs):
    lock = yaml.safe_load((runs["work"] / "dvc.lock").read_text())
    assert lock["stages"]["grpo"]["params"]["params.yaml"]["grpo"]["learning_rate"] == 1e-3  # run B's override


def test_flow_second_run_reuses_dvc_cache(runs):
    ran = {s["stage"]: s["ran"] for s in runs["b"]["stages"]}
    assert [stage for stage in STAGES if ran[stage]] == b_stages(runs)


def test_flow_stage_runs_are_children_of_the_flow_parent_run(runs):
    assert set(stage_runs(runs["work"], runs["a"]["mlflow_parent_run_id"])) == set(STAGES)
    assert set(stage_runs(runs["work"], runs["b"]["mlflow_parent_run_id"])) == set(b_stages(runs))


def test_flow_parent_run_records_prefect_run_and_summary(runs):
    from mlflow.tracking import MlflowClient

    parent = MlflowClient(f"sqlite:///{runs['work'] / 'mlflow.db'}").get_run(runs["a"]["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["orchestrator"] == "prefect" and parent.data.tags["prefect_flow_run_id"]
    assert "grpo/accuracy" in parent.data.metrics
    assert parent.data.params["grpo.max_steps"] == "1"


def test_flow_failing_stage_fails_the_flow(runs):
    assert runs["c_state"].is_failed()


def test_flow_failing_stage_error_is_in_prefect_logs(runs):
    assert "no model registered as reasoning-rl-grpo@champion" in runs["c_logs"]
    assert "stage evaluate@champion failed" in runs["c_logs"]


def test_flow_failing_stage_keeps_earlier_outputs(runs):
    work = runs["work"]
    assert adapter_hashes(work) == runs["adapters_before_c"]
    assert (work / "data/prepared/train.jsonl").stat().st_size > 0


def test_flow_failing_stage_marks_parent_run_failed(runs):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{runs['work'] / 'mlflow.db'}")
    failed = client.search_runs(
        [client.get_experiment_by_name("reasoning-rl").experiment_id],
        f"tags.prefect_flow_run_id = '{runs['c_state'].state_details.flow_run_id}'",
    )
    assert [r.info.status for r in failed] == ["FAILED"]


def test_compare_lists_both_evaluated_runs(runs):
    ids = {r.run_id for r in runs["rows"]}
    assert {runs["a"]["mlflow_parent_run_id"], runs["b"]["mlflow_parent_run_id"]} <= ids


def test_compare_picks_a_run_with_the_top_grpo_accuracy(runs):
    top = max(r.accuracy["grpo"] for r in runs["rows"])
    assert runs["best"].accuracy["grpo"] == top
    assert runs["best"].grpo_run_id is not None


def test_registry_round_trip_returns_the_trained_adapter(runs, tmp_path):
    from mlflow.tracking import MlflowClient

    from reasoning_rl.ops.registry import download_adapter

    client = MlflowClient(f"sqlite:///{runs['work'] / 'mlflow.db'}")
    os.environ["MLFLOW_TRACKING_URI"] = client.tracking_uri
    try:
        folder = download_adapter(tmp_path, alias="champion")
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI")
    trained = client.get_run(runs["best"].grpo_run_id).data.tags["adapter_sha256"]
    assert sha(folder / "adapter_model.safetensors") == trained


def test_registry_alias_points_at_registered_version(runs):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{runs['work'] / 'mlflow.db'}")
    version = client.get_model_version_by_alias("reasoning-rl-grpo", "champion")
    assert str(version.version) == runs["version"] and version.run_id == runs["best"].grpo_run_id


def test_evaluate_stage_loads_champion_by_alias(runs):
    assert [s["stage"] for s in runs["d"]["stages"]] == ["evaluate@base", "evaluate@sft", "evaluate@grpo",
                                                         "evaluate@champion"]
    assert runs["champion_eval"]["questions"] == 2


def test_schedule_deployment_reads_back_and_runs_once(runs):
    """Apply the cron deployment, read its schedule back, and let a Runner execute one run of it."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.runner import Runner
    from prefect.testing.utilities import prefect_test_harness
    from prefect.utilities.asyncutils import run_coro_as_sync

    from flows.pipeline import deployment

    with prefect_test_harness():
        dep = deployment("test-nightly", "0 3 * * *", "profiles/smoke.yaml", TINY, "reasoning-rl",
                         project_dir=str(runs["work"]), stages=["prepare"])  # prepare is cached: a quick run
        runner = Runner(name="test-runner", pause_on_shutdown=False)
        deployment_id = runner.add_deployment(dep)
        with get_client(sync_client=True) as client:
            schedules = client.read_deployment(deployment_id).schedules
        assert [s.schedule.cron for s in schedules] == ["0 3 * * *"]
        flow_run = run_deployment(deployment_id, timeout=0, as_subflow=False)  # scheduled for now
        run_coro_as_sync(runner.start(run_once=True))
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run.id).state
    assert state.is_completed(), state


def test_flow_against_real_prefect_and_mlflow_servers(runs, tmp_path):
    """No harness, no sqlite: `prefect server start` and `mlflow server` as real processes on 127.0.0.1."""
    import httpx
    from mlflow.tracking import MlflowClient

    (tmp_path / "mlflow").mkdir()
    with prefect_server(tmp_path / "prefect") as prefect, mlflow_server(tmp_path / "mlflow") as mlflow:
        api, tracking = prefect.uri, mlflow.uri
        env = {**os.environ, "PREFECT_API_URL": api, "MLFLOW_TRACKING_URI": tracking}
        overrides = [a for o in [*TINY, "evaluate.num_questions=1"] for a in ("--set", o)]
        cmd = [sys.executable, "-m", "flows.pipeline", "run", "--profile", "profiles/smoke.yaml", *overrides,
               "--stage", "evaluate", "--project-dir", str(runs["work"])]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        result = json.loads(proc.stdout[proc.stdout.index("{"):])
        flow_runs = httpx.post(f"{api}/flow_runs/filter", json={}).json()
        assert [r["state"]["type"] for r in flow_runs] == ["COMPLETED"]
        children = MlflowClient(tracking).search_runs(
            [MlflowClient(tracking).get_experiment_by_name("reasoning-rl").experiment_id],
            f"tags.mlflow.parentRunId = '{result['mlflow_parent_run_id']}'",
        )
        assert sorted(r.data.tags["stage"] for r in children) == ["evaluate@base", "evaluate@grpo", "evaluate@sft"]


def test_registered_pyfunc_answers_by_alias(runs, monkeypatch):
    """The registered model loads by alias as a pyfunc (code, not pickle) and answers a question."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{runs['work'] / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/reasoning-rl-grpo@champion", model_config={"max_new_tokens": 8})
    answers = model.predict(["What is 2 + 3?"])
    assert len(answers) == 1 and isinstance(answers[0], str) and answers[0]
