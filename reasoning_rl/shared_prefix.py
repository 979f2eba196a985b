"""Shared-prefix forward for GRPO: each group's prompt goes through the model once, not once per completion.

The `num_generations` completions of a GRPO group share their prompt. A causal model's prompt positions never
see the completion, so the prompt's keys and values are the same in every row of the group: run the distinct
prompts once (with gradients), index the resulting KV cache out to every row, and run only the completions on
top of it. The logits equal the full-row forward's; the prompt's gradient is the sum of the rows' (autograd
adds the contributions of the indexed copies). The same idea as Unsloth's PrefixGrouper and NeMo-RL's
shared-prefix training; here it is built on transformers' own KV cache, so any causal LM with a DynamicCache
works and no attention kernel changes.

Positions follow the full-row forward TRL runs (0..P+C-1 over the padded row), so logits match it exactly.
"""

from __future__ import annotations

from typing import Any

import torch


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(one row index per distinct prompt, the distinct prompt of every row), or None if no prompt repeats.

    Rows are compared on ids and mask, in any order: TRL shuffles a generation batch's rows before training.
    """
    key = torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], dim=1)
    unique, inverse = torch.unique(key, dim=0, return_inverse=True)
    if unique.size(0) == key.size(0):
        return None
    rows = torch.arange(key.size(0), device=key.device)
    first = torch.full((unique.size(0),), key.size(0), device=key.device).scatter_reduce(0, inverse, rows, "amin")
    return first, inverse


def completion_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int
                      ) -> torch.Tensor | None:
    """Logits predicting the last `logits_to_keep` tokens of each row, shape (rows, logits_to_keep, vocab).

    Equal to `model(input_ids, attention_mask, logits_to_keep=logits_to_keep + 1).logits[:, :-1]`, computed
    with each distinct prompt forwarded once. None when no two rows share their prompt (nothing to gain).
    """
    from transformers import DynamicCache

    split = input_ids.size(1) - logits_to_keep
    if split < 1:
        return None
    prompt_ids, prompt_mask = input_ids[:, :split], attention_mask[:, :split]
    groups = prompt_groups(prompt_ids, prompt_mask)
    if groups is None:
        return None
    first, inverse = groups
    cache = DynamicCache(config=_config(model))
    # Index tensors for logits_to_keep: the LM head then gets a contiguous input (a sliced 3-D input with
    # autograd falls back to a batched matmul that copies the head's weight per row: ~50x slower on CPU).
    last = torch.tensor([split - 1], device=input_ids.device)
    prefix = model(input_ids=prompt_ids[first], attention_mask=prompt_mask[first], past_key_values=cache,
                   use_cache=True, logits_to_keep=last)
    cache = prefix.past_key_values
    if cache is None or cache.get_seq_length() != split:  # e.g. gradient checkpointing turns the cache off
        raise RuntimeError(
            f"shared prefix: the model did not cache the {split}-token prompt (gradient checkpointing on?); "
            "turn grpo.shared_prefix off or grpo.gradient_checkpointing off"
        )
    cache.batch_select_indices(inverse)  # one prompt KV per row, differentiable indexing
    all_but_last = torch.arange(logits_to_keep - 1, device=input_ids.device)  # the last token predicts nothing
    suffix = model(input_ids=input_ids[:, split:], attention_mask=attention_mask, past_key_values=cache,
                   use_cache=True, logits_to_keep=all_but_last)
    return torch.cat([prefix.logits[inverse], suffix.logits], dim=1)


def _config(model: Any) -> Any:
    net = model.get_base_model() if hasattr(model, "get_base_model") else model
    return net.config
