"""Run comparison against a real (sqlite) MLflow store holding runs shaped like the stages log them."""

from __future__ import annotations

import time

import pytest

from reasoning_rl.ops import registry


@pytest.fixture()
def store(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    return client, client.create_experiment("reasoning-rl")


def add_pipeline(store, *, acc: float, fmt: float = 0.5, qset: str = "q1", adapter: str | None = None,
                 train: bool = True, steps: int = 40) -> str:
    """A parent run with (optionally) a GRPO child that trained `adapter`, and a report child (the evaluation)."""
    client, exp = store
    adapter = adapter or f"sha-{time.monotonic_ns()}"
    parent = client.create_run(exp, run_name=f"pipeline-{adapter[:10]}", tags={"role": "pipeline"}).info.run_id
    if train:
        grpo = client.create_run(exp, tags={"role": "stage", "stage": "grpo", "mlflow.parentRunId": parent,
                                            "adapter_sha256": adapter}).info.run_id
        for key, value in {"grpo.loss_type": "dr_grpo", "grpo.beta": 0.0, "grpo.max_steps": steps}.items():
            client.log_param(grpo, key, value)
        client.set_terminated(grpo)
    ev = client.create_run(exp, tags={"role": "stage", "stage": "report", "mlflow.parentRunId": parent,
                                      "eval_question_set": qset, "adapter_sha256.grpo": adapter}).info.run_id
    for key, value in {"grpo/accuracy": acc, "grpo/format_rate": fmt, "questions": 400}.items():
        client.log_metric(ev, key, value)
    client.set_terminated(ev)
    client.set_terminated(parent)
    return parent


def test_pick_best_highest_grpo_accuracy(store):
    add_pipeline(store, acc=0.02)
    better = add_pipeline(store, acc=0.05)
    add_pipeline(store, acc=0.03)
    assert registry.pick_best(registry.pipeline_rows()).run_id == better


def test_pick_best_ignores_other_question_sets(store):
    same = add_pipeline(store, acc=0.02, qset="q1")
    add_pipeline(store, acc=0.90, qset="q-other")  # higher, but on other questions
    newest = add_pipeline(store, acc=0.01, qset="q1")
    rows = registry.pipeline_rows()
    assert rows[0].run_id == newest  # newest first: its question set is the default
    assert registry.pick_best(rows).run_id == same


def test_pick_best_breaks_accuracy_tie_by_format_rate(store):
    add_pipeline(store, acc=0.02, fmt=0.9)
    tidy = add_pipeline(store, acc=0.02, fmt=0.95)
    add_pipeline(store, acc=0.02, fmt=0.6)
    assert registry.pick_best(registry.pipeline_rows()).run_id == tidy


def test_rows_link_cached_grpo_to_the_run_that_trained_it(store):
    client, _ = store
    first = add_pipeline(store, acc=0.02, adapter="sha-shared", steps=40)
    again = add_pipeline(store, acc=0.02, adapter="sha-shared", train=False)  # GRPO cached by DVC
    rows = {r.run_id: r for r in registry.pipeline_rows()}
    assert rows[again].grpo_run_id == rows[first].grpo_run_id
    assert rows[again].params["grpo.max_steps"] == "40"


def test_pick_best_skips_rows_without_traceable_grpo(store):
    add_pipeline(store, acc=0.5, train=False)  # evaluated an adapter no logged run produced
    assert registry.pick_best(registry.pipeline_rows()) is None


def test_format_table_marks_best_row(store):
    add_pipeline(store, acc=0.02)
    add_pipeline(store, acc=0.05)
    rows = registry.pipeline_rows()
    best = registry.pick_best(rows)
    marked = [line for line in registry.format_table(rows, best).splitlines() if line.startswith("| ★")]
    assert len(marked) == 1 and "5.0%" in marked[0]


def test_download_adapter_without_alias_names_it(store, tmp_path):
    with pytest.raises(LookupError, match="reasoning-rl-grpo@champion"):
        registry.download_adapter(tmp_path / "dl", alias="champion")
