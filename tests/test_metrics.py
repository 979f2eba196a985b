"""Metric maths: pass@k against the Codex paper's formula, Wilson against published values, McNemar against
scipy, maj@k voting, difficulty and trace diagnostics."""

from __future__ import annotations

import math
from itertools import combinations

import pytest
from scipy import stats

from reasoning_rl.eval.metrics import (
    difficulty_bucket,
    extraction_failure,
    majority_correct,
    mcnemar,
    pass_at_k,
    reasoning_steps,
    sampling_ks,
    summarize_sampled,
    think_words,
    trace_diagnostics,
)
from reasoning_rl.eval.scoring import wilson_interval


def ok(answer: str, think: str = "some steps") -> str:
    return f"<think>\n{think}\n</think>\n<answer>{answer}</answer>"


# ---- pass@k ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "c", "k"), [(1, 0, 1), (1, 1, 1), (5, 2, 1), (5, 2, 3), (10, 3, 5), (20, 1, 10),
                                           (16, 0, 4), (16, 16, 4), (200, 13, 100)])
def test_pass_at_k_matches_the_combinatorial_formula(n, c, k):
    # Chen et al. 2021 eq. 1 written directly with binomials (exact in integers)
    expected = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_the_fraction_of_k_subsets_holding_a_correct_sample():
    outcomes = [True, False, False, True, False, False]  # n=6, c=2: enumerate every 3-subset
    subsets = list(combinations(outcomes, 3))
    assert pass_at_k(6, 2, 3) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_1_is_the_mean_accuracy():
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, 2, 0), (4, 2, 5), (4, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k"):
        pass_at_k(n, c, k)


@pytest.mark.parametrize(("n", "ks"), [(1, [1]), (4, [1, 2, 4]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8])])
def test_sampling_ks_are_powers_of_two_and_n(n, ks):
    assert sampling_ks(n) == ks


# ---- maj@k -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completions", "gold", "expected"),
    [
        ([ok("18"), ok("18.0"), ok("7")], "18", True),  # 18 and 18.0 are one vote by value
        ([ok("7"), ok("$18"), ok("7")], "18", False),  # the majority is wrong
        ([ok("18"), ok("7")], "18", True),  # tie: the first voted answer wins
        ([ok("7"), ok("18")], "18", False),
        (["<answer>18</answer>", "18", ok("7")], "18", False),  # malformed completions do not vote
        (["no format at all", ""], "18", False),  # no vote at all is wrong
        ([ok("\\frac{3}{4}"), ok("0.75"), ok("\\frac{3}{4}")], "0.75", True),  # LaTeX votes by its core string
    ],
)
def test_majority_correct(completions, gold, expected):
    assert majority_correct(completions, gold) is expected


def test_summarize_sampled_reports_pass_and_maj():
    per_question = [[ok("1"), ok("2"), ok("2"), ok("2")], [ok("5"), ok("6"), ok("6"), ok("5")]]
    out = summarize_sampled(per_question, ["1", "5"])
    # q1: c=1 of 4; q2: c=2 of 4 → pass@1 = (1/4 + 2/4) / 2; pass@4 = 1 for both
    assert out["pass@1"] == pytest.approx(0.375)
    assert out["pass@2"] == pytest.approx((pass_at_k(4, 1, 2) + pass_at_k(4, 2, 2)) / 2)
    assert out["pass@4"] == 1.0
    assert out["maj@4"] == pytest.approx(0.5)  # q1 majority says 2 (wrong); q2 tie 5/6, 5 voted first (right)
    assert out["samples_per_question"] == 4


def test_summarize_sampled_rejects_ragged_samples():
    with pytest.raises(ValueError, match="same number"):
        summarize_sampled([[ok("1")], [ok("1"), ok("2")]], ["1", "1"])


# ---- Wilson ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    # Newcombe 1998, Statistics in Medicine 17:857, Table I, method 3 (Wilson score, no continuity correction)
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_interval_matches_published_values(successes, n, low, high):
    got = wilson_interval(successes, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_is_exact_at_no_and_all_successes():
    """0 of n gives a lower bound of exactly 0, n of n an upper bound of exactly 1 (the report's error bars,
    accuracy minus the bound, went negative at 0 of 150 with a bound of 1.7e-18)."""
    assert all(wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0 for n in range(1, 2000))


# ---- McNemar -----------------------------------------------------------------------------------------------


def paired(both: int, only_a: int, only_b: int, neither: int) -> tuple[list[bool], list[bool]]:
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return a, b


@pytest.mark.parametrize(("only_a", "only_b"), [(0, 1), (1, 0), (3, 7), (7, 3), (5, 5), (0, 12), (25, 40),
                                                (121, 59), (300, 260)])
def test_mcnemar_exact_p_matches_scipy_binomtest(only_a, only_b):
    a, b = paired(10, only_a, only_b, 20)
    result = mcnemar(a, b)
    expected = stats.binomtest(only_a, only_a + only_b, 0.5, alternative="two-sided").pvalue
    assert (result.only_a, result.only_b) == (only_a, only_b)
    assert result.p_exact == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("only_a", "only_b"), [(3, 7), (12, 30), (121, 59), (1, 0)])
def test_mcnemar_chi2_matches_scipy_distribution(only_a, only_b):
    result = mcnemar(*paired(4, only_a, only_b, 4))
    chi2 = (abs(only_a - only_b) - 1) ** 2 / (only_a + only_b)
    assert result.chi2 == pytest.approx(chi2)
    assert result.p_chi2 == pytest.approx(stats.chi2.sf(chi2, df=1), rel=1e-9)


def test_mcnemar_textbook_example():
    # Wikipedia "McNemar's test" example: b = 121, c = 59; with continuity correction chi2 = 61^2 / 180 = 20.67
    result = mcnemar(*paired(101, 121, 59, 33))
    assert result.chi2 == pytest.approx(20.672, abs=1e-3) and result.p_chi2 < 1e-5


def test_mcnemar_without_discordant_pairs_has_p_one():
    result = mcnemar(*paired(5, 0, 0, 5))
    assert (result.p_exact, result.p_chi2) == (1.0, 1.0)


def test_mcnemar_rejects_unpaired_lengths():
    with pytest.raises(ValueError, match="paired"):
        mcnemar([True, False], [True])


# ---- difficulty and traces ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("solution", "steps"),
    [
        ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72", 2),
        ("One line only.", 1),
        ("a\n\n b \n c\n", 3),  # blank lines are not steps
    ],
)
def test_reasoning_steps_counts_solution_lines(solution, steps):
    assert reasoning_steps(solution) == steps


@pytest.mark.parametrize(("steps", "bucket"), [(2, "2"), (5, "5"), (6, "6+"), (8, "6+")])
def test_difficulty_bucket_pools_long_problems(steps, bucket):
    assert difficulty_bucket(steps) == bucket


@pytest.mark.parametrize(
    ("completion", "failure"),
    [
        (ok("18"), None),
        ("<answer>18</answer> but malformed", None),  # lenient: a clean number is readable
        (ok("\\frac{3}{4}"), None),
        ("no tags", "no_answer_block"),
        ("<answer>18", "no_answer_block"),
        (ok("18 or 19"), "unreadable_answer"),
        (ok("eighteen"), "unreadable_answer"),
    ],
)
def test_extraction_failure(completion, failure):
    assert extraction_failure(completion) == failure


def test_think_words_counts_only_well_formed_completions():
    assert think_words(ok("1", think="three little words")) == 3
    assert think_words("<think>x</think>") is None


def test_trace_diagnostics():
    out = trace_diagnostics([ok("1", "a b"), ok("2", "a b c d"), "none", ok("x")])
    assert out["mean_think_words"] == pytest.approx((2 + 4 + 2) / 3)
    assert out["no_answer_block_rate"] == 0.25 and out["unreadable_answer_rate"] == 0.25
