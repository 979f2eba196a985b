"""The select stage end to end in-process, the SFT sampling replaced by fixed pass rates (no model is loaded)."""

import json

import pytest
import yaml

from reasoning_rl.task.gsm8k import read_records, write_jsonl
from reasoning_rl.train.prompts import grpo_order

ROWS = [{"id": f"q{i}", "prompt": [{"role": "user", "content": f"q{i}"}], "answer": str(i)} for i in range(12)]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scratch folder with train rows and params (4 candidates, 2 samples), the pass rates fixed."""
    from mlflow.tracking._tracking_service import utils

    import stages.select

    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)  # the stage sets MLflow's global URI: restored

    write_jsonl(tmp_path / "data/prepared/train.jsonl", ROWS)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"select": {"samples": 2, "candidates": 4}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("REASONING_RL_PARAMS", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    rates = {"rates": [0.5, 1.0, 0.0, 0.5]}
    monkeypatch.setattr(stages.select, "sft_pass_rates", lambda candidates, *args: (rates["rates"], 1.0))
    return tmp_path, rates


def test_select_stage_writes_the_mixed_prompts_in_grpo_order(project):
    from stages.select import main

    work, _ = project
    main()
    first4 = grpo_order(ROWS, prompt_seed=43, num_prompts=None)[:4]
    assert [r["id"] for r in read_records(work / "data/select/prompts.jsonl")] == [first4[0]["id"], first4[3]["id"]]
    assert json.loads((work / "metrics/select.json").read_text())["tied_share_before"] == 0.5


def test_select_stage_that_keeps_nothing_names_the_way_out(project):
    from reasoning_rl.task.gsm8k import DataError
    from stages.select import main

    _, rates = project
    rates["rates"] = [0.0, 0.0, 1.0, 0.0]
    with pytest.raises(DataError, match=r"kept none of 4 candidate prompts.*select.samples: 0"):
        main()
