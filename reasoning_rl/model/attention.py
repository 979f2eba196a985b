"""`grouped_eager`: eager attention for grouped-query models that never copies the KV cache.

transformers' eager attention calls `repeat_kv`, which copies every layer's keys and values
`num_attention_heads / num_key_value_heads` times (SmolLM2-135M: 9 query heads share 3 KV heads, so 3x) on
every decode step. torch.profiler on a batch-32 decode step on this CPU put 30 % of the step in those copies
(`aten::copy_` under `reshape`; docs/evaluation.md). Here the query heads of one KV head are folded into the
query-length axis instead, so one batched matmul per KV head reads the cache in place: same maths, same
mask, no copy. It is registered with transformers' `AttentionInterface` (and the eager additive mask with
`AttentionMaskInterface`), so a model picks it with `attn_implementation="grouped_eager"` or
`model.set_attn_implementation("grouped_eager")`, like any built-in kernel.
"""

from __future__ import annotations

import torch
from torch import nn

NAME = "grouped_eager"


def grouped_eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """query [B, H, Q, D], key/value [B, KV, S, D] -> ([B, Q, H, D], weights [B, H, Q, S]).

    Query head h reads KV head h // (H / KV), as in `repeat_kv`.
    """
    batch, heads, q_len, dim = query.shape
    kv_heads, s_len = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    q = query.reshape(batch, kv_heads, groups * q_len, dim)  # [B, KV, G*Q, D]: a copy of the (small) query only
    scores = torch.matmul(q, key.transpose(2, 3)) * scaling  # [B, KV, G*Q, S]
    if attention_mask is not None:  # additive [B, 1, Q, S], broadcast over the G query heads of each KV head
        scores = scores.view(batch, kv_heads, groups, q_len, s_len) + attention_mask[:, :, None]
        scores = scores.view(batch, kv_heads, groups * q_len, s_len)
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value)  # [B, KV, G*Q, D]
    out = out.view(batch, heads, q_len, dim).transpose(1, 2).contiguous()  # [B, Q, H, D], as eager returns
    return out, weights.view(batch, heads, q_len, s_len)


def register() -> str:
    """Make `attn_implementation="grouped_eager"` available (idempotent); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, grouped_eager_attention)
    AttentionMaskInterface.register(NAME, eager_mask)
    return NAME
