"""Shared-prefix forward for GRPO: each group's prompt goes through the model once, not once per completion.

The `num_generations` completions of a GRPO group share their prompt. A causal model's prompt positions never
see the completion, so the prompt's keys and values are the same in every row of the group: run the distinct
prompts once (with gradients), index the resulting KV cache out to every row, and run only the completions on
top of it. The logits equal the full-row forward's; the prompt's gradient is the sum of the rows' (autograd
adds the contributions of the indexed copies). The same idea as Unsloth's PrefixGrouper and NeMo-RL's
shared-prefix training; here it is built on transformers' own KV cache, so any causal LM with a DynamicCache
works and no attention kernel changes.

Positions follow the full-row forward TRL runs (0..P+C-1 over the padded row), so logits match it exactly.
`SharedPrefixForward` puts it in place of TRL's private `_get_per_token_logps_and_entropies` (pinned in
tests/test_private_api.py); no upstream TRL issue or PR found for shared-prefix training.
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


# Architectures whose causal-LM head is exactly `lm_head(final hidden state)` (no logit scaling or softcapping),
# so the head can run once on the joined hidden states; others get the head through their own forward.
PLAIN_HEAD_MODELS = ("llama", "mistral", "qwen2", "qwen3")


def completion_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                      temperature: float = 1.0) -> torch.Tensor | None:
    """fp32 logits / temperature predicting the last `logits_to_keep` tokens of each row: (rows, kept, vocab).

    Equal to `model(input_ids, attention_mask, logits_to_keep=logits_to_keep + 1).logits[:, :-1].float() /
    temperature`, computed with each distinct prompt forwarded once. None when no two rows share their prompt
    (nothing to gain). Run it under the autocast the model trains with: the decoder is called directly.
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
    net = _net(model)
    head = net.get_output_embeddings()
    plain_head = net.config.model_type in PLAIN_HEAD_MODELS and isinstance(head, torch.nn.Linear)
    run = net.get_decoder() if plain_head else model  # the decoder returns hidden states, the model logits
    # Otherwise the model's own head, told which positions to keep by index tensors: the head then gets a
    # contiguous input (a sliced 3-D input with autograd falls back to a batched matmul that copies the head's
    # weight once per row: ~50x slower on CPU).
    keep_last = {} if plain_head else {"logits_to_keep": torch.tensor([split - 1], device=input_ids.device)}
    keep_all_but_last = {} if plain_head else {  # the last token predicts nothing
        "logits_to_keep": torch.arange(logits_to_keep - 1, device=input_ids.device)}
    cache = DynamicCache(config=net.config)
    prefix = run(input_ids=prompt_ids[first], attention_mask=prompt_mask[first], past_key_values=cache,
                 use_cache=True, **keep_last)
    cache = prefix.past_key_values
    if cache is None or cache.get_seq_length() != split:  # e.g. gradient checkpointing turns the cache off
        raise RuntimeError(
            f"shared prefix: the model did not cache the {split}-token prompt (gradient checkpointing on?); "
            "turn grpo.shared_prefix off or grpo.gradient_checkpointing off"
        )
    cache.batch_select_indices(inverse)  # one prompt KV per row, differentiable indexing
    suffix = run(input_ids=input_ids[:, split:], attention_mask=attention_mask, past_key_values=cache,
                 use_cache=True, **keep_all_but_last)
    if plain_head:  # one head matmul on the joined (contiguous) hidden states
        hidden = torch.cat([prefix.last_hidden_state[:, -1:][inverse], suffix.last_hidden_state[:, :-1]], dim=1)
        logits = head(hidden)
    else:
        logits = torch.cat([prefix.logits[inverse], suffix.logits], dim=1)
    return logits.float().div_(temperature)  # as accelerate returns them (fp32); a fresh tensor: in place is safe


def _net(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class SharedPrefixForward:
    """Mixin for trl.GRPOTrainer: with `shared_prefix` on, its per-token log-probs from `completion_logits`."""

    shared_prefix = False

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                           **multimodal):
        """TRL's per-token log-probs (and entropies), each group's prompt forwarded once.

        Single process only: under DDP or DeepSpeed the wrapped model's own forward runs (TRL's path).
        """
        wrapped = self.accelerator.unwrap_model(model) is not model  # DDP/DeepSpeed: keep their forward
        if (not self.shared_prefix or wrapped or compute_aux_loss
                or any(v is not None for v in multimodal.values())):
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **multimodal)
        from trl.trainer.utils import entropy_from_logits, selective_log_softmax

        batch_size = batch_size or input_ids.size(0)  # TRL's memory chunking, kept
        all_logps, all_entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids, mask = input_ids[start:start + batch_size], attention_mask[start:start + batch_size]
            with self.accelerator.autocast():  # what accelerate wraps the model's forward in (bf16=True)
                logits = completion_logits(model, ids, mask, logits_to_keep, self.temperature)
            if logits is None:  # no prompt repeats in this chunk: the full-row forward, as TRL does it
                logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=logits_to_keep + 1,
                               use_cache=False).logits[:, :-1, :] / self.temperature
            # from here on, TRL's own steps
            all_logps.append(selective_log_softmax(logits, ids[:, -logits_to_keep:]))  # [rows, kept]
            if compute_entropy:
                if self._entropy_bonus_enabled:
                    all_entropies.append(entropy_from_logits(logits))
                else:
                    with torch.no_grad():
                        all_entropies.append(entropy_from_logits(logits))
        entropies = torch.cat(all_entropies, dim=0) if compute_entropy else None
        return torch.cat(all_logps, dim=0), entropies, None
