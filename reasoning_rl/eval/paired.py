"""Sampled pass@1 and the paired test of two models on it: the verdict protocol of docs/evaluation.md.

Each question scores the share of its k samples that are right (DeepSeek-R1's pass@1, arXiv 2501.12948); two
models are compared on the per-question differences of those shares, with a sign-flip permutation test for p
and a bootstrap over questions for the interval ("Adding error bars to evals", arXiv 2411.00640). Both come
from scipy.stats, seeded, so a rerun gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from reasoning_rl.task.answer_check import is_flexible_correct
from reasoning_rl.task.formatting import parse_completion
from reasoning_rl.task.rewards import is_correct

RESAMPLES = 10_000  # pre-registered (docs/evaluation.md): sign patterns for p, bootstrap resamples for the CI


def sampled_shares(per_question: Sequence[Sequence[str]], golds: Sequence[str]) -> dict[str, list[float]]:
    """Each question's share of right samples: `strict` (the reward's parser) and `flexible` (last number)."""
    strict, flexible = [], []
    for samples, gold in zip(per_question, golds, strict=True):
        if not samples:
            raise ValueError("every question needs at least one sample")
        parsed = [parse_completion(text) for text in samples]
        strict.append(sum(p is not None and is_correct(p.answer, gold) for p in parsed) / len(samples))
        flexible.append(sum(is_flexible_correct(text, gold) for text in samples) / len(samples))
    return {"strict": strict, "flexible": flexible}


@dataclass(frozen=True)
class PairedDelta:
    """B − A on per-question scores: the mean difference, its 95 % bootstrap interval, the two-sided
    sign-flip p, the samples per question (k) and the number of questions (n)."""

    delta: float
    ci_low: float
    ci_high: float
    p: float
    k: int
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def paired_delta(a: Sequence[float], b: Sequence[float], *, k: int, resamples: int = RESAMPLES,
                 seed: int = 0) -> PairedDelta:
    """Compare model B with model A on the same questions, in the same order.

    p: two-sided sign-flip permutation test of mean(b − a) (`scipy.stats.permutation_test` with
    `permutation_type="samples"` on the one sample of differences: each difference keeps or flips its sign;
    exact when 2**n <= resamples). Interval: percentile bootstrap of the mean difference over questions.
    """
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired scores differ in length ({len(a)} vs {len(b)})")
    if not len(a):
        raise ValueError("no questions to compare")
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)  # [n]
    delta = float(d.mean())
    if not d.any():  # identical on every question: nothing to test, and the bootstrap would be degenerate
        return PairedDelta(delta, 0.0, 0.0, 1.0, k, len(d))
    rng = np.random.default_rng(seed)

    def mean(x, axis=-1):
        return np.mean(x, axis=axis)

    test = stats.permutation_test((d,), mean, permutation_type="samples", vectorized=True,
                                  n_resamples=resamples, alternative="two-sided", rng=rng)
    boot = stats.bootstrap((d,), mean, n_resamples=resamples, vectorized=True, confidence_level=0.95,
                           method="percentile", rng=rng)
    ci = boot.confidence_interval
    return PairedDelta(delta, float(ci.low), float(ci.high), float(test.pvalue), k, len(d))
