"""GRPO on CPU: TRL's defaults vs this project's tuned settings, same prompts, seed and lengths, in one run.

Run: python -m benchmarks.bench_grpo_cpu   (about 6 min on 2 cores; --help for the knobs)

Both variants call `reasoning_rl.train.grpo.train_grpo` (the stage's own training function) from the same SFT
adapter on the same first `--prompts` train rows with the same seed, so they sample the same prompts in the
same order. Variants alternate (A B, then B A in the next round) so a noisy shared CPU hurts both alike.
Per variant: seconds per optimizer step (trainer's train_runtime / steps, model loading excluded),
generated tokens per second (completion tokens / train_runtime) and mean reward per step.
Writes benchmarks/results/bench_grpo_cpu.json and prints a markdown table. It also runs on a CUDA GPU (the variants with
transformers sampling where vLLM is not installed) and then records `torch.cuda.max_memory_allocated` per run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import RESULTS
from reasoning_rl import memory, paths
from reasoning_rl.config import GrpoConfig, load_params
from reasoning_rl.files import write_json
from reasoning_rl.model.engine import close_vllm
from reasoning_rl.model.loading import pick_dtype
from reasoning_rl.task.gsm8k import read_records
from reasoning_rl.train.grpo import train_grpo

# What a user gets from TRL when only the algorithm is set: fp32 weights and math, TRL's
# gradient_checkpointing=True, one attention kernel (SDPA), sampling with transformers' generate.
TRL_DEFAULTS = {
    "dtype": "float32",
    "engine": "transformers",
    "grpo": {
        "gradient_checkpointing": True,
        "steps_per_generation": None,
        "shared_prefix": False,
        "training_attention": None,
        "autocast_lora": False,
    },
}
SPEED_KEYS = ("gradient_checkpointing", "steps_per_generation", "shared_prefix", "training_attention", "autocast_lora")
# This project's defaults, read from params.yaml: bf16 weights and autocast (base.dtype auto on this CPU), no
# checkpointing, grouped_eager attention for training, each group's prompt forwarded once (shared prefix), no
# fp32 upcast of LoRA inputs that autocast casts back to bf16, and sampling through base.engine (vLLM).
_DEFAULTS = load_params(Path("params.yaml"))
TUNED = {
    "dtype": _DEFAULTS.base.dtype,
    "engine": "vllm",
    "grpo": {key: getattr(_DEFAULTS.grpo, key) for key in SPEED_KEYS},
}
# Candidates measured while tuning; kept only if they beat TUNED (see docs/scaling.md).
VARIANTS = {
    "trl_defaults": TRL_DEFAULTS,
    "tuned": TUNED,
    "tuned_transformers_sampling": {**TUNED, "engine": "transformers"},
    "tuned_2_steps_per_generation": {**TUNED, "grpo": {**TUNED["grpo"], "steps_per_generation": 2}},
    "tuned_sdpa_training": {**TUNED, "grpo": {**TUNED["grpo"], "training_attention": None}},
    "tuned_fp32_lora_inputs": {**TUNED, "grpo": {**TUNED["grpo"], "autocast_lora": False}},
    "tuned_unshared_prefix": {**TUNED, "grpo": {**TUNED["grpo"], "shared_prefix": False}},
}


def protocol_config(name: str, args: argparse.Namespace) -> GrpoConfig:
    """The protocol's GRPO settings for variant `name`: one micro-batch of `prompts_per_step x generations`
    completions per optimizer step (set here, not taken from GrpoConfig's defaults, which split a step in two)."""
    return GrpoConfig(
        max_steps=args.steps,
        learning_rate=3e-5,
        num_generations=args.generations,
        per_device_train_batch_size=args.prompts_per_step * args.generations,
        gradient_accumulation_steps=1,
        max_completion_length=args.max_completion_length,
        temperature=0.9,
        warmup_steps=0,
        logging_steps=1,
        **VARIANTS[name]["grpo"],
    )


def run_variant(name: str, args: argparse.Namespace, rows: list[dict]) -> dict:
    spec = VARIANTS[name]
    cfg = protocol_config(name, args)
    torch.manual_seed(args.seed)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        trainer, history = train_grpo(
            cfg, args.model, spec["dtype"], args.seed, rows, Path(args.adapter), Path(tmp), backend="plain",
            generation_engine=spec["engine"],
        )
        wall = time.perf_counter() - start
        if getattr(trainer, "vllm_generation", None) is not None:  # free its KV cache before the next variant
            close_vllm(trainer.vllm_generation.llm)
    steps = [h for h in history.history if "reward" in h]
    runtime = next(h["train_runtime"] for h in history.history if "train_runtime" in h)
    batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps  # completions per step
    tokens = sum(h["completions/mean_length"] * batch for h in steps)

    def mean(key: str) -> float:
        return sum(h[key] for h in steps) / len(steps)

    return {
        "variant": name,
        "dtype": f"{spec['dtype']} ({str(pick_dtype(spec['dtype'])).removeprefix('torch.')})",
        "engine": spec["engine"],
        "grpo": {k: getattr(cfg, k) for k in spec["grpo"]},
        "steps": trainer.state.global_step,
        "completions_per_step": batch,
        "train_runtime_s": round(runtime, 1),
        "wall_with_loading_s": round(wall, 1),
        "seconds_per_step": round(runtime / trainer.state.global_step, 2),
        "generated_tokens": round(tokens),
        "generated_tokens_per_s": round(tokens / runtime, 1),
        "mean_completion_length": round(mean("completions/mean_length"), 1),
        "reward_per_step": [round(h["reward"], 4) for h in steps],
        "mean_reward": round(mean("reward"), 4),
        "mean_format_reward": round(mean("rewards/format/mean"), 4),
        "mean_correctness_reward": round(mean("rewards/correctness/mean"), 4),
        **({"max_memory_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)}
           if torch.cuda.is_available() else {}),
    }


def summarize(results: list[dict], baseline: str) -> list[dict]:
    """One row per variant (runs of several rounds pooled: total time / total steps)."""
    rows = []
    for name in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == name]
        steps = sum(r["steps"] for r in runs)
        runtime = sum(r["train_runtime_s"] for r in runs)
        tokens = sum(r["generated_tokens"] for r in runs)
        rewards = [x for r in runs for x in r["reward_per_step"]]
        rows.append(
            {
                "variant": name,
                "runs": len(runs),
                "steps": steps,
                "seconds_per_step": round(runtime / steps, 2),
                "generated_tokens_per_s": round(tokens / runtime, 1),
                "mean_reward": round(sum(rewards) / len(rewards), 4),
                "mean_format_reward": round(sum(r["mean_format_reward"] * r["steps"] for r in runs) / steps, 4),
            }
        )
    base = next(r for r in rows if r["variant"] == baseline)
    base_rewards = [x for r in results if r["variant"] == baseline for x in r["reward_per_step"]]
    for row in rows:
        row["speedup_vs_" + baseline] = round(base["seconds_per_step"] / row["seconds_per_step"], 2)
        rewards = [x for r in results if r["variant"] == row["variant"] for x in r["reward_per_step"]]
        if row["variant"] != baseline and len(rewards) == len(base_rewards) > 1:
            row["reward_vs_" + baseline] = paired_reward_difference(rewards, base_rewards)
    return rows


def paired_reward_difference(rewards: list[float], baseline: list[float]) -> dict[str, float]:
    """Mean per-step reward difference and a paired t-test p-value (step i saw the same prompts in both)."""
    from scipy.stats import ttest_rel

    diff = sum(a - b for a, b in zip(rewards, baseline, strict=True)) / len(rewards)
    same = all(a == b for a, b in zip(rewards, baseline, strict=True))
    p_value = 1.0 if same else float(ttest_rel(rewards, baseline).pvalue)
    return {"mean_difference": round(diff, 4), "paired_t_p": round(p_value, 4)}


def table(rows: list[dict], baseline: str) -> str:
    lines = [
        f"| variant | steps | s/step | generated tok/s | mean reward/step | format reward | speed-up vs {baseline} |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['steps']} | {r['seconds_per_step']:.1f} | {r['generated_tokens_per_s']:.0f} | "
            f"{r['mean_reward']:.3f} | {r['mean_format_reward']:.3f} | {r['speedup_vs_' + baseline]:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="trl_defaults,tuned", help=f"comma list from {list(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps per run (even: fair to 2 steps/gen)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (A B, B A, ...)")
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=64, help="first N train rows (identical for all variants)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--model", default="embedded:SmolLM2-135M-Instruct")
    parser.add_argument("--adapter", default=str(paths.adapter_dir("sft")), help="SFT adapter to start from")
    parser.add_argument("--train", default=str(paths.TRAIN), help="prepared train.jsonl")
    parser.add_argument("--out", default=str(RESULTS / "bench_grpo_cpu.json"))
    parser.add_argument("--note", default="", help="stored with the result (e.g. whether the CPU was idle)")
    args = parser.parse_args()
    memory.retain_freed_memory()  # as the stages do (reasoning_rl/memory.py)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    if not (Path(args.adapter) / "adapter_model.safetensors").is_file():
        raise SystemExit(f"{args.adapter}: no SFT adapter (run `python -m stages.sft` first or pass --adapter)")
    rows = read_records(Path(args.train))[: args.prompts]

    results = []
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            print(f"round {round_ + 1}/{args.rounds}: {name} ...", flush=True)
            results.append(run_variant(name, args, rows))
            print(json.dumps(results[-1]), flush=True)

    baseline = names[0]
    summary = summarize(results, baseline)
    payload = {
        "command": "python -m benchmarks.bench_grpo_cpu "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "settings": {k: v for k, v in vars(args).items()},
        "variants": {n: {"dtype": VARIANTS[n]["dtype"], **VARIANTS[n]["grpo"]} for n in names},
        "machine": {
            "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "note": args.note,
        },
        "runs": results,
        "summary": summary,
    }
    write_json(Path(args.out), payload)
    print(table(summary, baseline))
    for row in summary:
        if "reward_vs_" + baseline in row:
            cmp = row["reward_vs_" + baseline]
            print(f"{row['variant']}: reward per step {cmp['mean_difference']:+.3f} vs {baseline} "
                  f"(same prompts step by step; paired t-test p = {cmp['paired_t_p']:.3f})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
