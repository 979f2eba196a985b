"""The LoRA adapter's shape, and the policy's current weights with its LoRA merged in (for the engine)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_config(r: int, alpha: int, dropout: float):
    from peft import LoraConfig

    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS, task_type="CAUSAL_LM", bias="none"
    )


def merged_weights(policy: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """`policy`'s weights under their checkpoint names, its current LoRA merged in, the policy left untouched.

    Each LoRA-wrapped weight is W + scale * B @ A, computed in fp32 from the base weight and cast back.
    PEFT's `merge_adapter()`/`unmerge_adapter()` would add the delta into W in place and subtract it again,
    which in bf16 leaves a rounding error in W every time; here W is never written. A tied LM head comes out
    under both names (`state_dict` keeps them), as an engine's loader expects.
    """
    from peft.tuners.lora import LoraLayer

    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    lora = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer) and m.active_adapters}
    with torch.no_grad():
        for name, tensor in base.state_dict().items():
            if "lora_" in name:
                continue
            name = name.replace(".base_layer.", ".")
            module, _, leaf = name.rpartition(".")
            if leaf == "weight" and module in lora:
                layer = lora[module]
                delta = sum(layer.get_delta_weight(a).float() for a in layer.active_adapters if a in layer.lora_A)
                tensor = (tensor.float() + delta).to(tensor.dtype)
            yield name, tensor
