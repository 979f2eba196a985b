"""GSM8K scoring with the same parser as the rewards, and the summary with Wilson intervals."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from reasoning_rl.task.answer_check import is_flexible_correct
from reasoning_rl.task.formatting import extract_answer_lenient, parse_completion
from reasoning_rl.task.rewards import is_correct

if TYPE_CHECKING:  # generation imports torch; scoring does not need it
    from reasoning_rl.eval.generation import Generation


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927; z = 1.96 for 95 %)."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exact at the ends: centre - half at 0 successes is a rounding error away from 0 (1.7e-18 at n = 150)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    return low, 1.0 if successes == n else min(1.0, centre + half)


def score(generations: list[Generation], golds: list[str]) -> list[dict]:
    """Per-question verdicts with the reward parser: format ok, answer extracted, correct."""
    rows = []
    for gen, gold in zip(generations, golds, strict=True):
        parsed = parse_completion(gen.text)
        lenient = extract_answer_lenient(gen.text)
        rows.append(
            {
                "format_ok": parsed is not None,
                "correct": parsed is not None and is_correct(parsed.answer, gold),
                # The maths apart from the format: the last number anywhere (lm-eval-harness flexible-extract).
                "correct_flexible": is_flexible_correct(gen.text, gold),
                # Diagnostic only: right number inside <answer> even when the format around it is broken.
                "correct_lenient": lenient is not None and is_correct(lenient, gold),
                "answer_extracted": lenient is not None,
                "num_tokens": gen.num_tokens,
                "truncated": gen.truncated,
            }
        )
    return rows


def summarize(rows: list[dict], decode_seconds: float) -> dict[str, float]:
    """Strict and flexible accuracy with Wilson 95 % intervals, format rate, lengths and throughput.

    accuracy (strict): a well-formed completion whose <answer> equals the gold (the reward parser);
    flexible_accuracy: the last number anywhere in the completion equals the gold (lm-eval-harness's GSM8K
    "flexible-extract"), whatever the format.
    """
    n = len(rows)
    correct = sum(r["correct"] for r in rows)
    low, high = wilson_interval(correct, n)
    flexible = sum(r["correct_flexible"] for r in rows)
    flex_low, flex_high = wilson_interval(flexible, n)
    tokens = sum(r["num_tokens"] for r in rows)
    return {
        "questions": n,
        "accuracy": correct / n if n else 0.0,
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "flexible_accuracy": flexible / n if n else 0.0,
        "flexible_accuracy_ci_low": flex_low,
        "flexible_accuracy_ci_high": flex_high,
        "format_rate": sum(r["format_ok"] for r in rows) / n if n else 0.0,
        "accuracy_lenient": sum(r["correct_lenient"] for r in rows) / n if n else 0.0,
        "answer_extraction_rate": sum(r["answer_extracted"] for r in rows) / n if n else 0.0,
        "truncated_rate": sum(r["truncated"] for r in rows) / n if n else 0.0,
        "mean_completion_tokens": tokens / n if n else 0.0,
        "tokens_per_second": tokens / decode_seconds if decode_seconds > 0 else 0.0,
        "decode_seconds": decode_seconds,
    }
