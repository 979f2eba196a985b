"""Evaluation statistics: pass@k, maj@k, McNemar's paired test, difficulty buckets, trace diagnostics.

Pure functions on per-question verdicts, so the evaluate stage, the report and the tests share one
definition. No scipy at run time: the exact McNemar p-value is a binomial tail in integer arithmetic and the
chi-squared one (1 degree of freedom) is `erfc`; tests/test_metrics.py checks both against scipy.stats.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from reasoning_rl.task.answer_check import answer_value, is_correct, latex_core, needs_math_verify
from reasoning_rl.task.formatting import extract_answer_lenient, parse_completion

# ----------------------------------------------------------------------------------------------------------
# Sampling metrics
# ----------------------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from `n` samples of which `c` are correct: 1 - C(n-c, k) / C(n, k).

    Chen et al. 2021, "Evaluating Large Language Models Trained on Code" (arXiv 2107.03374), eq. 1, in the
    numerically stable product form of their Figure 3: 1 - prod_{i=n-c+1}^{n} (1 - k / i).
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c ({c}) <= n ({n}) and 1 <= k ({k}) <= n")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def vote_key(completion: str) -> str | None:
    """What a completion votes for in maj@k: its answer's value (`18.0` and `$18` vote together), or None.

    Only well-formed completions vote (the strict parser accuracy uses); a LaTeX or fraction answer votes with
    its normalised core string (`\\frac{3}{4}`), since comparing those needs math-verify.
    """
    parsed = parse_completion(completion)
    if parsed is None:
        return None
    if needs_math_verify(parsed.answer):
        core = latex_core(parsed.answer)
        return None if core is None else f"latex:{core}"
    value = answer_value(parsed.answer)
    return None if value is None else str(value.normalize())


def majority_correct(completions: Sequence[str], gold: str) -> bool:
    """maj@k for one question: is the most voted answer among `completions` right? (self-consistency,
    Wang et al. 2022, arXiv 2203.11171). Ties go to the answer voted first; no vote at all is wrong."""
    votes: Counter[str] = Counter()
    first: dict[str, str] = {}
    for text in completions:
        key = vote_key(text)
        if key is not None:
            votes[key] += 1
            first.setdefault(key, text)
    if not votes:
        return False
    best = max(votes, key=lambda key: (votes[key], -list(first).index(key)))
    parsed = parse_completion(first[best])
    return parsed is not None and is_correct(parsed.answer, gold)


def sampling_ks(n: int) -> list[int]:
    """The k reported for `n` samples per question: 1, 2, 4, ... up to n, and n itself."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else [*ks, n]


def summarize_sampled(per_question: Sequence[Sequence[str]], golds: Sequence[str]) -> dict[str, float]:
    """pass@k (unbiased) and maj@k averaged over questions, each with `n` sampled completions.

    Keys: `pass@<k>` for k in `sampling_ks(n)`, `maj@<n>`, `samples_per_question`.
    """
    if not per_question:
        return {}
    n = len(per_question[0])
    if n < 1 or any(len(samples) != n for samples in per_question):
        raise ValueError("every question needs the same number (>= 1) of samples")
    correct = [
        sum(_strictly_correct(text, gold) for text in samples)
        for samples, gold in zip(per_question, golds, strict=True)
    ]
    out: dict[str, float] = {"samples_per_question": float(n)}
    for k in sampling_ks(n):
        out[f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in correct) / len(correct)
    out[f"maj@{n}"] = sum(
        majority_correct(samples, gold) for samples, gold in zip(per_question, golds, strict=True)
    ) / len(per_question)
    return out


def _strictly_correct(text: str, gold: str) -> bool:
    parsed = parse_completion(text)
    return parsed is not None and is_correct(parsed.answer, gold)


# ----------------------------------------------------------------------------------------------------------
# Paired comparison
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class McNemar:
    """McNemar's test on paired right/wrong outcomes of two models on the same questions.

    only_a: questions model A got right and B wrong; only_b: the reverse. The questions both got right or
    both got wrong carry no information about which model is better and do not enter the test.
    p_exact: two-sided exact binomial test of only_a ~ Bin(only_a + only_b, 1/2) (use this for small counts);
    chi2, p_chi2: McNemar's statistic with Edwards' continuity correction, (|b - c| - 1)^2 / (b + c), 1 df.
    """

    n: int
    only_a: int
    only_b: int
    p_exact: float
    chi2: float
    p_chi2: float


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemar:
    """Paired test of two models' verdicts on the same questions, in the same order (McNemar 1947)."""
    if len(correct_a) != len(correct_b):
        raise ValueError(f"paired verdicts differ in length ({len(correct_a)} vs {len(correct_b)})")
    only_a = sum(bool(a) and not bool(b) for a, b in zip(correct_a, correct_b, strict=True))
    only_b = sum(bool(b) and not bool(a) for a, b in zip(correct_a, correct_b, strict=True))
    discordant = only_a + only_b
    if discordant == 0:
        return McNemar(len(correct_a), 0, 0, 1.0, 0.0, 1.0)
    # Two-sided exact p: twice the smaller tail of Bin(discordant, 1/2), capped at 1 (the distribution is
    # symmetric, so this equals scipy.stats.binomtest's "sum of outcomes no more likely" rule).
    tail = sum(math.comb(discordant, i) for i in range(min(only_a, only_b) + 1))
    p_exact = min(1.0, float(Decimal(2 * tail) / Decimal(2**discordant)))
    chi2 = max(abs(only_a - only_b) - 1, 0) ** 2 / discordant
    p_chi2 = math.erfc(math.sqrt(chi2 / 2))  # survival function of chi-squared with 1 df
    return McNemar(len(correct_a), only_a, only_b, p_exact, chi2, p_chi2)


# ----------------------------------------------------------------------------------------------------------
# Difficulty and trace diagnostics
# ----------------------------------------------------------------------------------------------------------


def reasoning_steps(reference_solution: str) -> int:
    """Difficulty of a GSM8K problem: the number of non-empty lines of its reference solution.

    GSM8K writes one calculation step per line (arXiv 2110.14168 §2: "between 2 and 8 steps"), and
    complexity-based prompting (Fu et al. 2022, arXiv 2210.00720 §3) measures reasoning complexity the same
    way, by the number of lines of the rationale. Lines, not `<<...>>` annotations: some steps have no
    calculator call, and the prepared data has the annotations removed (reasoning_rl/task/gsm8k.py).
    """
    text = reference_solution.split("####")[0]
    return sum(1 for line in text.splitlines() if line.strip())


def difficulty_bucket(steps: int, top: int = 6) -> str:
    """`"2"`, `"3"`, ... one bucket per step count, with `"6+"` pooling the rare long problems."""
    return f"{top}+" if steps >= top else str(steps)


def think_words(completion: str) -> int | None:
    """Length of the think block in whitespace-separated words (well-formed completions only), else None."""
    parsed = parse_completion(completion)
    return None if parsed is None else len(parsed.think.split())


def extraction_failure(completion: str) -> str | None:
    """Why no number could be read from a completion: "no_answer_block", "unreadable_answer", or None.

    The lenient reader (last `<answer>` block) is used, so a malformed completion with a clean answer is not
    counted here: this measures whether the model commits to one number, not whether it keeps the format.
    """
    answer = extract_answer_lenient(completion)
    if answer is None:
        return "no_answer_block"
    readable = latex_core(answer) is not None if needs_math_verify(answer) else answer_value(answer) is not None
    return None if readable else "unreadable_answer"


def trace_diagnostics(completions: Sequence[str]) -> dict[str, float]:
    """Mean think length (words, over well-formed completions) and the answer-extraction failure rates."""
    n = len(completions)
    if n == 0:
        return {}
    lengths = [w for w in (think_words(c) for c in completions) if w is not None]
    failures = Counter(extraction_failure(c) for c in completions)
    return {
        "mean_think_words": sum(lengths) / len(lengths) if lengths else 0.0,
        "no_answer_block_rate": failures["no_answer_block"] / n,
        "unreadable_answer_rate": failures["unreadable_answer"] / n,
    }
