"""The LoRA adapter: its shape (which projections it wraps, rank, alpha, dropout) and how a stage saves it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_config(r: int, alpha: int, dropout: float):
    from peft import LoraConfig

    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS, task_type="CAUSAL_LM", bias="none"
    )


def save_adapter(model: Any, out: Path, base_model: str) -> None:
    """`model`'s LoRA adapter (safetensors) in `out`, its bytes a function of the weights and `base_model` alone.

    PEFT writes `target_modules` in set order (it changes with PYTHONHASHSEED) and the base model's local folder
    (for an embedded model, the user's cache) into adapter_config.json and its README: here the modules are sorted
    and the base model is `base_model`, as the user named it (`base.model`). Loading does not read it: the
    stages load the base from `base.model` and put the adapter on top.
    """
    model.save_pretrained(out, safe_serialization=True)
    config_file, readme = Path(out) / "adapter_config.json", Path(out) / "README.md"
    config = json.loads(config_file.read_text())
    local = config.get("base_model_name_or_path")
    if isinstance(config.get("target_modules"), list):  # a str is a regex: kept as it is
        config["target_modules"] = sorted(config["target_modules"])
    config["base_model_name_or_path"] = base_model
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    if local and readme.is_file():
        readme.write_text(readme.read_text().replace(local, base_model))
