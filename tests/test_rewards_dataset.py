"""The gold side agrees with the format side on every GSM8K row: SFT targets score full, a wrong gold zero."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from reasoning_rl.task.gsm8k import load_split
from reasoning_rl.task.rewards import correctness_reward, format_reward

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
EXPECTED_ROWS = {"train": 7473, "test": 1319}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (DATA_DIR / "train.jsonl").is_file() or not (DATA_DIR / "test.jsonl").is_file(),
        reason=f"GSM8K not found at {DATA_DIR} (train.jsonl and test.jsonl)",
    ),
]


@pytest.fixture(scope="module", params=sorted(EXPECTED_ROWS))
def split(request) -> tuple[str, list]:
    return request.param, load_split(DATA_DIR, request.param)


def test_gsm8k_split_row_count(split) -> None:
    name, examples = split
    assert len(examples) == EXPECTED_ROWS[name]


def test_gsm8k_sft_targets_score_format(split) -> None:
    _, examples = split
    scores = format_reward([ex.target() for ex in examples])
    assert [ex.id for ex, s in zip(examples, scores, strict=True) if s != 1.0] == []


def test_gsm8k_sft_targets_score_correct(split) -> None:
    _, examples = split
    scores = correctness_reward([ex.target() for ex in examples], answer=[ex.answer for ex in examples])
    assert [ex.id for ex, s in zip(examples, scores, strict=True) if s != 1.0] == []


def test_gsm8k_sft_targets_wrong_against_gold_plus_one(split) -> None:
    _, examples = split
    perturbed = [str(Decimal(ex.answer) + 1) for ex in examples]
    scores = correctness_reward([ex.target() for ex in examples], answer=perturbed)
    assert [ex.id for ex, s in zip(examples, scores, strict=True) if s != 0.0] == []
