"""The one place that names where artifacts live; stages ask it, nothing else spells these paths."""

from __future__ import annotations

import os
from pathlib import Path

PARAMS_ENV = "REASONING_RL_PARAMS"  # another params file (e.g. profiles/smoke.yaml) instead of params.yaml


def params_file() -> Path:
    """The params file the entry points read: $REASONING_RL_PARAMS, else params.yaml (the one DVC hashes)."""
    return Path(os.environ.get(PARAMS_ENV, "params.yaml"))


DATA = Path("data/prepared")
TRAIN = DATA / "train.jsonl"
VAL = DATA / "val.jsonl"
TEST = DATA / "test.jsonl"
DATA_STATS = DATA / "stats.json"
GRPO_PROMPTS = Path("data/select/prompts.jsonl")  # the select stage's output: GRPO's train prompts, in order

MODELS = Path("models")
METRICS = Path("metrics")
REPORTS = Path("reports")


def adapter_dir(stage: str) -> Path:
    """Final LoRA adapter (safetensors) of a training stage: models/<stage>/adapter."""
    return MODELS / stage / "adapter"


def checkpoints_dir(stage: str) -> Path:
    return MODELS / stage / "checkpoints"


def train_metrics(stage: str) -> Path:
    """Summary metrics of a training stage (dvc metrics)."""
    return METRICS / f"{stage}.json"


def train_history(stage: str) -> Path:
    """Per-step log history of a training stage (dvc plots / the report)."""
    return METRICS / f"{stage}_history.json"


def eval_metrics(model: str) -> Path:
    return METRICS / f"eval_{model}.json"


def eval_samples(model: str) -> Path:
    """Per-question results of evaluate@<model>: greedy completion and verdicts, the k samples and their shares."""
    return REPORTS / f"eval_{model}.jsonl"


EVAL_TABLE = REPORTS / "eval_table.md"
REPORT = REPORTS / "report.html"  # the self-contained evaluation report (written by the report stage)
EVAL_REPORT_METRICS = METRICS / "eval_report.json"  # its numbers: paired tests, accuracy by difficulty
PAIRED_METRICS = METRICS / "paired.json"  # per pair: McNemar on greedy verdicts, sign-flip test on sampled pass@1
