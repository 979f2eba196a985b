"""The LoRA adapter's shape, and the policy's current weights with its LoRA merged in (for a generation engine)."""

from __future__ import annotations

from typing import Any

import torch

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_config(r: int, alpha: int, dropout: float):
    from peft import LoraConfig

    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS, task_type="CAUSAL_LM", bias="none"
    )


def merged_copy(policy: Any, copy: Any = None) -> Any:
    """A plain (PEFT-free) model whose weights are `policy`'s base weights plus its current LoRA deltas.

    Built once (`copy=None`), then refreshed in place each call: only the LoRA-wrapped linears change, and each
    is recomputed from the untouched base weight (W + scale * B @ A in fp32, then cast), so nothing drifts.
    """
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    base = policy.get_base_model()
    if copy is None:
        copy = AutoModelForCausalLM.from_config(base.config, dtype=base.dtype)
        state = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if "lora_" not in k}
        loaded = copy.load_state_dict(state, strict=False)  # strict=False: a tied LM head may be absent
        tied = {"lm_head.weight"} if getattr(base.config, "tie_word_embeddings", False) else set()
        if loaded.unexpected_keys or set(loaded.missing_keys) - tied:
            raise RuntimeError(f"merged_copy: base weights do not map onto a plain {type(copy).__name__}: "
                               f"missing {loaded.missing_keys}, unexpected {loaded.unexpected_keys}")
        copy.eval().requires_grad_(False)
        copy.generation_config = base.generation_config
    modules = dict(copy.named_modules())
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer) and module.active_adapters:
                weight = module.get_base_layer().weight
                delta = sum(module.get_delta_weight(a).float() for a in module.active_adapters if a in module.lora_A)
                modules[name].weight.copy_((weight.float() + delta).to(weight.dtype))
    return copy
