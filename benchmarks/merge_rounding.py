"""How much of a LoRA update survives merging into bf16 weights (what the engine is sent: train/lora.py).

For two adapters of the same run (e.g. GRPO checkpoints 40 and 50), the true change of the merged weights is
scale·(B2·A2 − B1·A1); the engine sees round_bf16(W + Δ2) − round_bf16(W + Δ1). Printed over all LoRA-wrapped
weights: the share of elements whose merged bf16 value did not move, the cosine between the two changes and
their norm ratio. A delta smaller than half a bf16 step of its base weight rounds away entirely.

Run: python -m benchmarks.merge_rounding runs/curve/checkpoint-40 runs/curve/checkpoint-50 [--out F.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from reasoning_rl.files import write_json
from reasoning_rl.model.loading import resolve_model_path


def lora_deltas(adapter: Path) -> dict[str, torch.Tensor]:
    """scale·B·A per wrapped weight, under the base checkpoint's names."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    tensors = load_file(adapter / "adapter_model.safetensors")
    out = {}
    for key, a in tensors.items():
        if ".lora_A." in key:
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            out[name] = scale * (b.float() @ a.float())
    return out


def compare(base: dict[str, torch.Tensor], first: Path, second: Path) -> dict:
    d1, d2 = lora_deltas(first), lora_deltas(second)
    unchanged = total = 0
    dot = got_sq = true_sq = 0.0
    for name, delta1 in d1.items():
        w = base[name].to(torch.bfloat16).float()
        true = d2[name] - delta1
        got = (w + d2[name]).to(torch.bfloat16).float() - (w + delta1).to(torch.bfloat16).float()
        moved = true != 0
        unchanged += int(((got == 0) & moved).sum())
        total += int(moved.sum())
        dot += float((got * true).sum())
        got_sq += float((got ** 2).sum())
        true_sq += float((true ** 2).sum())
    return {"first": str(first), "second": str(second), "elements_unchanged_in_bf16": round(unchanged / total, 3),
            "cosine": round(dot / (got_sq * true_sq) ** 0.5, 3), "norm_ratio": round((got_sq / true_sq) ** 0.5, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--model", default="embedded:Qwen2.5-Coder-0.5B-Instruct")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    base = load_file(Path(resolve_model_path(args.model)) / "model.safetensors")
    result = {"model": args.model} | compare(base, args.first, args.second)
    print(result)
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
