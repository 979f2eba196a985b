"""The verdict's statistics: per-question sampled shares, the sign-flip p and the bootstrap interval."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from reasoning_rl.eval.paired import paired_delta, sampled_shares

RIGHT = "<think>4 + 4 = 8</think>\n<answer>8</answer>"
WRONG = "<think>4 + 5 = 9</think>\n<answer>9</answer>"
UNFORMATTED = "4 + 4 = 8"  # right under the flexible rule only


def test_sampled_shares_strict_and_flexible():
    shares = sampled_shares([[RIGHT, WRONG, UNFORMATTED, RIGHT]], ["8"])
    assert shares == {"strict": [0.5], "flexible": [0.75]}


def test_sampled_shares_rejects_a_question_without_samples():
    with pytest.raises(ValueError, match="at least one sample"):
        sampled_shares([[]], ["8"])


def exact_sign_flip_p(d: np.ndarray) -> float:
    """Two-sided p by enumerating all 2**n sign patterns: twice the smaller one-sided tail, capped at 1."""
    observed = d.mean()
    means = np.array([(d * s).mean() for s in itertools.product((1, -1), repeat=len(d))])
    eps = 1e-12
    return min(1.0, 2 * min((means >= observed - eps).mean(), (means <= observed + eps).mean()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_delta_p_equals_exact_enumeration(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.choice([0, 0.25, 0.5, 1], 10), rng.choice([0, 0.25, 0.75, 1], 10)  # 2**10 < 10,000: exact
    assert paired_delta(a, b, k=4).p == pytest.approx(exact_sign_flip_p(b - a))


def test_paired_delta_interval_matches_t_interval_on_many_questions():
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 5, 1319) / 4, rng.integers(0, 5, 1319) / 4
    d = b - a
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    result = paired_delta(a, b, k=4)
    assert result.delta == pytest.approx(d.mean())
    assert result.ci_low == pytest.approx(low, abs=0.004) and result.ci_high == pytest.approx(high, abs=0.004)


def test_paired_delta_detects_a_real_shift():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 5, 1319) / 4
    b = np.clip(a + rng.choice([0, 0.25], 1319, p=[0.8, 0.2]), 0, 1)  # B better on ~20 % of the questions
    result = paired_delta(a, b, k=4)
    assert result.p < 0.001 and result.ci_low > 0


def test_paired_delta_is_repeatable():
    rng = np.random.default_rng(5)
    a, b = rng.random(300), rng.random(300)
    assert paired_delta(a, b, k=4) == paired_delta(a, b, k=4)


def test_paired_delta_identical_models_p_one():
    assert paired_delta([0.5, 1.0], [0.5, 1.0], k=4).as_dict() == {
        "delta": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p": 1.0, "k": 4, "n": 2}


def test_paired_delta_rejects_unpaired_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        paired_delta([0.5], [0.5, 1.0], k=4)
