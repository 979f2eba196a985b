"""Entry point for tests/test_accelerate_multiprocess.py, run by `accelerate launch` (one copy per process).

Calls the GRPO stage's training function (`reasoning_rl.train.grpo.train_grpo`) on a tiny random Llama, then
each rank writes `rank<N>.json` (its rank, world size, steps, prompts seen, a hash of its LoRA weights) and
rank 0 alone saves the adapter, as a multi-process stage must.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import torch

from reasoning_rl.config import GrpoConfig
from reasoning_rl.task.rewards import completion_text, register
from reasoning_rl.train.grpo import train_grpo

PROMPTS_SEEN: list[str] = []


@register("tiny_length")
def tiny_length(completions, prompts=None, **kwargs) -> list[float]:
    """More words earn more: a signal a random model has variance in, so the LoRA weights move."""
    PROMPTS_SEEN.extend(completion_text(p) for p in prompts or [])
    return [len(completion_text(c).split()) / 8 for c in completions]


def lora_hash(model) -> str:
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        if "lora_" in name:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)

    # 16 distinct prompts of the tiny vocabulary; answers are unused by the tiny reward.
    rows = [{"prompt": [{"role": "user", "content": f"t{i} t{i + 1} t{i + 2}"}], "answer": "0"} for i in range(16)]
    cfg = GrpoConfig(
        max_steps=2,  # two optimizer steps: enough for the gradients to be all-reduced twice
        num_generations=2,  # smallest group with a relative advantage
        per_device_train_batch_size=4,  # per rank: 2 prompts x 2 generations
        max_completion_length=8,  # tiny model, tiny completions: the test is about processes, not quality
        learning_rate=1e-2,  # large, so the LoRA weights visibly move in 2 steps
        reward_funcs=("tiny_length",),
        warmup_steps=0,
        training_attention=None,  # as loaded (SDPA): the test checks the model keeps it
        shared_prefix=True,  # as params.yaml: under DDP the trainer must fall back to TRL's own forward
    )
    trainer, _ = train_grpo(cfg, args.model_dir, "float32", 0, rows, Path(args.adapter), out / "checkpoints",
                            generation_engine="transformers")  # vLLM colocated per rank is not what this tests

    accelerator = trainer.accelerator
    marker = {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "global_step": trainer.state.global_step,
        "wrapped": type(trainer.model_wrapped).__name__,
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "prompts_seen": sorted(set(PROMPTS_SEEN)),
        "lora_sha256": lora_hash(trainer.model),
        "attention_after": trainer.model.get_base_model().config._attn_implementation,
        "saved_adapter": False,
    }
    accelerator.wait_for_everyone()  # every rank has written its checkpoint files (RNG state) before rank 0 cleans up
    if accelerator.is_main_process:
        trainer.model.save_pretrained(out / "adapter", safe_serialization=True)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # as the stage does once training finished
        marker["saved_adapter"] = True
    (out / f"rank{accelerator.process_index}.json").write_text(json.dumps(marker, indent=2))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
