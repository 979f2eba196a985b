"""DAPO's dynamic sampling (arXiv 2503.14476, section 3.2): a group whose rewards all tie has zero advantages and
teaches nothing, so its place in the batch goes to a group, sampled from fresh prompts, whose rewards differ.

Each GRPO step samples its batch as usual; then up to `rounds` extra rounds sample one new group per tied group
still in the batch, and the informative ones replace tied ones. The batch keeps its size (the loss normalizers
and micro-batches are unchanged); tied groups fill whatever the extra rounds could not. The extra prompts are
drawn from the training set with a generator seeded by (seed, step), so a resumed run draws what an unbroken run
would have.

These functions work on TRL's batch: the dict that `GRPOTrainer._generate_and_score_completions` returns (rows of
`num_generations` completions per prompt, prompts left-padded, completions right-padded).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

# Per-completion tensors padded on the right (completion length), with their padding value.
_COMPLETION_PADS = {"completion_ids": None, "completion_mask": 0, "old_per_token_logps": 0.0,
                    "sampling_per_token_logps": 0.0, "ref_per_token_logps": 0.0, "importance_sampling_ratio": 1.0,
                    "tool_mask": 0}
_PROMPT_PADS = {"prompt_ids": None, "prompt_mask": 0}  # left-padded; None = the tokenizer's pad id
_ROW_KEYS = ("advantages",)


@dataclass(frozen=True)
class RefillStats:
    """What one step's refilling did: groups sampled beyond the batch, and tied groups left in the batch."""

    extra_groups: int
    tied_before: int
    tied_after: int


def tied_groups(advantages: torch.Tensor, num_generations: int) -> torch.Tensor:
    """One bool per group: its advantages are all zero (its rewards tied, under any scale_rewards)."""
    groups = advantages.view(-1, num_generations)
    return torch.isclose(groups, torch.zeros_like(groups), atol=1e-6).all(dim=1)


def select_rows(batch: dict, rows: torch.Tensor) -> dict:
    """The batch restricted to `rows` (row indices); scalars and non-row entries are kept as they are."""
    size = batch["completion_ids"].size(0)
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.size(0) == size:
            out[key] = value[rows]
        else:
            out[key] = value
    return out


def concat_batches(first: dict, second: dict, pad_token_id: int) -> dict:
    """Two batches as one: prompts re-padded on the left and completions on the right to the longer of each."""
    out = {}
    for key in first:
        a, b = first[key], second.get(key)
        if key in _PROMPT_PADS or key in _COMPLETION_PADS:
            pads = _PROMPT_PADS if key in _PROMPT_PADS else _COMPLETION_PADS
            value = pad_token_id if pads[key] is None else pads[key]
            if a.dim() == 2 and b.dim() == 2 and a.size(1) != b.size(1):  # sequence-level IS ratios are (B, 1)
                width = max(a.size(1), b.size(1))
                a, b = (_pad(t, width, value, left=key in _PROMPT_PADS) for t in (a, b))
            out[key] = torch.cat([a, b])
        elif key in _ROW_KEYS:
            out[key] = torch.cat([a, b])
        elif key == "num_items_in_batch":
            continue  # recomputed below from the rows kept
        else:
            raise ValueError(f"dynamic sampling cannot merge batch entry {key!r} (multimodal or tool batches)")
    out["num_items_in_batch"] = out["completion_mask"].sum()
    return out


def _pad(t: torch.Tensor, width: int, value, left: bool) -> torch.Tensor:
    fill = torch.full((t.size(0), width - t.size(1)), value, dtype=t.dtype, device=t.device)
    return torch.cat([fill, t] if left else [t, fill], dim=1)


def extra_prompts(dataset_size: int, count: int, seed: int, step: int) -> list[int]:
    """`count` row indices of the training set for step `step`'s extra round, the same on every (re)run."""
    rng = random.Random(seed * 1_000_003 + step)
    return [rng.randrange(dataset_size) for _ in range(count)]


def refill(batch: dict, num_generations: int, rounds: int, sample_groups: Callable[[int, int], dict],
           pad_token_id: int) -> tuple[dict, RefillStats]:
    """Replace the batch's tied groups by informative groups from up to `rounds` extra sampling rounds.

    `sample_groups(n, round)` samples and scores n new groups (TRL's batch of n x num_generations rows). The
    result has the batch's size: informative groups first in the order found, then tied groups to fill.
    """
    g = num_generations
    tied = tied_groups(batch["advantages"], g)
    n_groups, tied_before = tied.numel(), int(tied.sum())
    rows = lambda groups: torch.cat([torch.arange(i * g, (i + 1) * g) for i in groups])  # noqa: E731
    keep = select_rows(batch, rows(torch.nonzero(~tied).flatten().tolist())) if tied_before < n_groups else None
    spare = select_rows(batch, rows(torch.nonzero(tied).flatten().tolist())) if tied_before else None
    found, extra = n_groups - tied_before, 0
    for round_ in range(rounds):
        missing = n_groups - found
        if missing == 0:
            break
        more = sample_groups(missing, round_)
        extra += missing
        more_tied = tied_groups(more["advantages"], g)
        good = torch.nonzero(~more_tied).flatten().tolist()
        if good:
            picked = select_rows(more, rows(good))
            keep = picked if keep is None else concat_batches(keep, picked, pad_token_id)
            found += len(good)
    if found < n_groups:  # tied groups fill the rest: zero advantages, so they add nothing to the gradient
        fill = select_rows(spare, rows(range(n_groups - found)))
        keep = fill if keep is None else concat_batches(keep, fill, pad_token_id)
    stats = RefillStats(extra_groups=extra, tied_before=tied_before, tied_after=max(0, n_groups - found))
    return keep, stats
