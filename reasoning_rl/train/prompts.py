"""GRPO's train prompts: the train split in GRPO's own order, or only the prompts the SFT adapter solves sometimes.

Why select: GRPO's advantage is a completion's reward minus its group's mean, so a group whose rewards all tie
(every completion right, or every one wrong) contributes nothing. Before selection 73 % of the default SFT
adapter's candidate prompts tied over 4 samples (docs/results.md). Keeping the prompts with a pass rate strictly
between 0 and 1 is 1-shot RLVR's rule (arXiv 2504.20571) and SimpleRL-Zoo's advice to match difficulty to the
model (arXiv 2503.18892).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path


def grpo_order(rows: list[dict], prompt_seed: int, num_prompts: int | None) -> list[dict]:
    """The train rows in GRPO's order (its own seed; SFT draws its subset with base.seed), the first
    `num_prompts` of them (None = all)."""
    ordered = list(rows)
    random.Random(prompt_seed).shuffle(ordered)
    return ordered[:num_prompts] if num_prompts else ordered


@dataclass(frozen=True)
class Selection:
    """The candidates the SFT adapter solves sometimes, in their order (each with its `sft_pass_rate`), and how
    the rest fell."""

    kept: list[dict]
    candidates: int
    all_wrong: int
    all_right: int

    def stats(self) -> dict[str, float | int]:
        """What the stage logs: `tied_share_before` is the share of candidates whose samples all tie (the groups
        GRPO would have spent on them carry no advantage); among the kept prompts it is 0 by construction."""
        return {
            "candidates": self.candidates,
            "kept": len(self.kept),
            "all_wrong": self.all_wrong,
            "all_right": self.all_right,
            "tied_share_before": round((self.all_wrong + self.all_right) / self.candidates, 4),
        }


def keep_mixed(candidates: list[dict], pass_rates: list[float]) -> Selection:
    """Keep the candidates whose pass rate is strictly between 0 and 1, in order, each with its rate."""
    if len(candidates) != len(pass_rates):
        raise ValueError(f"{len(candidates)} candidates but {len(pass_rates)} pass rates")
    bad = [rate for rate in pass_rates if not 0 <= rate <= 1]
    if bad:
        raise ValueError(f"pass rates must lie in [0, 1], got {bad[:3]}")
    kept = [row | {"sft_pass_rate": rate} for row, rate in zip(candidates, pass_rates, strict=True) if 0 < rate < 1]
    return Selection(kept, len(candidates), sum(r == 0 for r in pass_rates), sum(r == 1 for r in pass_rates))


def sft_pass_rates(candidates: list[dict], model: str, dtype: str, seed: int, engine: str, adapter: Path,
                   samples: int, temperature: float, max_new_tokens: int, batch_size: int) -> tuple[list[float], float]:
    """Each candidate's share of right completions over `samples` seeded draws from the adapter (the correctness
    reward's rule), and the sampling's seconds. Use GRPO's temperature and completion length: the rates then
    estimate what GRPO's own groups will see at its first steps."""
    from reasoning_rl.eval.generation import ModelGenerator
    from reasoning_rl.eval.paired import sampled_shares

    gen = ModelGenerator(model, dtype, seed, engine, [r["prompt"] for r in candidates], max_new_tokens=max_new_tokens)
    try:
        gen.load(adapter)
        per_prompt, seconds = gen.sampled(samples, temperature, batch_size, "select: SFT pass rates")
    finally:
        gen.close()
    shares = sampled_shares([[g.text for g in q] for q in per_prompt], [r["answer"] for r in candidates])
    return shares["strict"], seconds
