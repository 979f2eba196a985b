"""GRPO's prompts: GRPO's own order, and the selection of prompts the SFT adapter solves sometimes."""

import pytest

from reasoning_rl.train.prompts import grpo_order, keep_mixed

ROWS = [{"id": i} for i in range(10)]


def test_grpo_order_is_a_seeded_shuffle_cut_to_num_prompts():
    first = grpo_order(ROWS, prompt_seed=43, num_prompts=4)
    assert first == grpo_order(ROWS, prompt_seed=43, num_prompts=None)[:4] and first != ROWS[:4]


def test_keep_mixed_keeps_strictly_mixed_pass_rates_in_order():
    selection = keep_mixed(ROWS[:5], [0.0, 0.5, 1.0, 0.25, 0.0])
    assert selection.kept == [{"id": 1, "sft_pass_rate": 0.5}, {"id": 3, "sft_pass_rate": 0.25}]


def test_keep_mixed_counts_the_tied_share_before_selection():
    stats = keep_mixed(ROWS[:5], [0.0, 0.5, 1.0, 0.25, 0.0]).stats()
    assert stats == {"candidates": 5, "kept": 2, "all_wrong": 2, "all_right": 1, "tied_share_before": 0.6}


def test_keep_mixed_refuses_a_rate_per_row_mismatch():
    with pytest.raises(ValueError, match="3 candidates but 2 pass rates"):
        keep_mixed(ROWS[:3], [0.5, 0.5])
