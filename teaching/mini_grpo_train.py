"""A few steps of teaching.mini_grpo on CPU with SmolLM2-135M-Instruct, printing the rewards.

Starts from the SFT adapter (models/sft/adapter, merged into the base) when it exists, else from the base
model; trains a fresh LoRA on top (or every weight with --full). Each step samples G completions for each of
a few GSM8K training prompts, scores them (format + correctness), and takes one clipped policy-gradient step.
A handful of steps cannot move the rewards measurably; the point is to watch the loop run end to end.
The step log is also written to benchmarks/results/mini_grpo_train.json.

Usage:
    python teaching/mini_grpo_train.py [--steps 3] [--prompts-per-step 2] [--num-generations 4]
                                      [--max-new-tokens 128] [--full] [--beta 0.04] [--loss-type dr_grpo]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reasoning_rl.paths import adapter_dir  # noqa: E402 - after the path insert, so it runs from a checkout

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "gsm8k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts-per-step", type=int, default=2)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--loss-type", default="grpo", choices=["grpo", "bnpo", "dr_grpo", "dapo"])
    parser.add_argument("--no-scale", action="store_true", help="Dr. GRPO advantages (no std division)")
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--epsilon-high", type=float, default=None)
    # LoRA needs a larger step than full fine-tuning's 1e-6 (DeepSeekMath §4.2) to move at all in a few steps
    parser.add_argument("--lr", type=float, default=None, help="default 1e-5 with LoRA, 1e-6 with --full")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    parser.add_argument("--adapter", type=Path, default=ROOT / adapter_dir("sft"))
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mini_grpo_train.json")
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from reasoning_rl.task.gsm8k import load_split
    from teaching.mini_grpo import (
        MiniGRPOConfig,
        MiniGRPOTrainer,
        count_parameters,
        load_policy,
        prepare_policy,
    )

    cfg = MiniGRPOConfig(
        num_generations=args.num_generations,
        max_completion_length=args.max_new_tokens,
        temperature=args.temperature,
        loss_type=args.loss_type,
        scale_rewards=not args.no_scale,
        beta=args.beta,
        epsilon_high=args.epsilon_high,
        learning_rate=args.lr or (1e-6 if args.full else 1e-5),
        lora=None if args.full else MiniGRPOConfig().lora,
        seed=args.seed,
    )
    console = Console(width=140)
    torch.manual_seed(cfg.seed)
    examples = load_split(args.data_dir, "train")
    random.Random(cfg.seed).shuffle(examples)

    model, tokenizer, source = load_policy(adapter=args.adapter, dtype=args.dtype)
    policy, reference = prepare_policy(model, cfg.lora, cfg.beta)
    trainable, frozen = count_parameters(policy)
    trainer = MiniGRPOTrainer(policy, tokenizer, cfg, reference=reference)
    console.print(f"model: {source}, dtype {next(policy.parameters()).dtype}")
    console.print(
        f"{'LoRA' if cfg.lora else 'full fine-tuning'}: {trainable / 1e6:.2f} M trainable, "
        f"{frozen / 1e6:.2f} M frozen; loss_type={cfg.loss_type}, scale_rewards={cfg.scale_rewards}, "
        f"beta={cfg.beta}, "
        f"lr={cfg.learning_rate:g}, G={cfg.num_generations}, {args.prompts_per_step} prompts/step"
    )

    table = Table(title="mini GRPO on GSM8K (CPU)")
    for col in (
        "step",
        "reward",
        "format",
        "correctness",
        "zero-std groups",
        "loss",
        "grad norm",
        "kl",
        "clip",
        "tokens",
        "s",
    ):
        table.add_column(col, justify="right")
    history = []
    for step in range(args.steps):
        batch = examples[step * args.prompts_per_step : (step + 1) * args.prompts_per_step]
        stats = trainer.step([e.prompt() for e in batch], [e.answer for e in batch])
        history.append(dataclasses.asdict(stats))
        table.add_row(
            str(stats.step),
            f"{stats.reward_mean:.3f}",
            f"{stats.reward_per_func.get('format', float('nan')):.3f}",
            f"{stats.reward_per_func.get('correctness', float('nan')):.3f}",
            f"{stats.zero_std_groups:.2f}",
            f"{stats.loss:+.4f}",
            f"{stats.grad_norm:.3f}",
            f"{stats.kl:.4f}",
            f"{stats.clip_ratio:.3f}",
            f"{stats.completion_tokens_mean:.0f}",
            f"{stats.seconds:.0f}",
        )
        per_func = ", ".join(f"{k} {v:.2f}" for k, v in stats.reward_per_func.items())
        console.print(
            f"step {stats.step}: reward {stats.reward_mean:.3f} ({per_func}), loss {stats.loss:+.4f}, "
            f"{stats.seconds:.0f} s"
        )
    console.print(table)
    command = "python teaching/mini_grpo_train.py " + " ".join(sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": command.strip(),
                "model": source,
                "config": dataclasses.asdict(cfg),
                "steps": history,
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
