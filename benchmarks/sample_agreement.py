"""Do the engines sample the same distribution? One fixed policy, sampled as GRPO samples it, by each path.

The GRPO re-check (reports/engine_grpo_recheck.json) found a lower reward per step with vLLM sampling than with
transformers sampling. This separates the sampler from the training dynamics: no training here, one SFT adapter,
the GRPO stage's first train prompts, `--samples` completions each at the recipe's temperature (untruncated:
top_k 0, top_p 1) and `max_completion_length`, scored by the recipe's reward functions. Five arms:
  - vllm_lora: the vLLM engine serving the adapter unmerged (what GRPO's vLLM sampling sees now, served_lora.py);
  - vllm_lora_stock_ops: the same with vLLM's own CPU LoRA code instead of served_lora's one-adapter path (speed);
  - vllm_merged: the vLLM engine with the adapter merged into its bf16 weights (what it saw before);
  - hf_merged: transformers' generate on the same merged bf16 weights (separates engine from merge);
  - hf_peft: transformers' generate on the unmerged PEFT model (what TRL's transformers sampling sees).
Rates get Wilson intervals; arms are compared with a two-proportion z-test (different draws, not paired).

Run: python -m benchmarks.sample_agreement --adapter runs/ablation/sft-eabee625bc/adapter \
         --model embedded:SmolLM2-135M-Instruct --prompts 128 --samples 4 --out reports/sample_agreement.json
(--arms vllm_lora,... runs some arms; the JSON keeps the arms of earlier runs, so one arm can be added later)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
from pathlib import Path

import torch

from reasoning_rl import paths
from reasoning_rl.config import load_params
from reasoning_rl.eval.generation import ModelGenerator, generate_sampled
from reasoning_rl.eval.scoring import wilson_interval
from reasoning_rl.files import write_json
from reasoning_rl.model import engine, served_lora
from reasoning_rl.task.gsm8k import read_records
from reasoning_rl.task.rewards import get_reward_funcs

ARMS = ("vllm_lora", "vllm_lora_stock_ops", "vllm_merged", "hf_merged", "hf_peft")


def sample(arm: str, model: str, dtype: str, seed: int, adapter: Path, prompts: list, k: int, temperature: float,
           max_new_tokens: int) -> tuple[list[list], float]:
    """k completions per prompt from `arm`, and the seconds spent generating."""
    if arm == "hf_peft":
        from reasoning_rl.model.loading import DECODE_ATTENTION, load_model

        lm = load_model(model, dtype, adapter=adapter, attn_implementation=DECODE_ATTENTION)
        torch.manual_seed(seed)
        return generate_sampled(lm.model.eval(), lm.tokenizer, prompts, k, temperature, 64, max_new_tokens, arm)
    name = engine.VLLM if arm.startswith("vllm") else engine.TRANSFORMERS
    generator = ModelGenerator(model, dtype, seed, name, prompts, max_new_tokens)
    generator.load(None if arm == "vllm_merged" else adapter)  # vllm_lora serves it; hf_merged merges it
    if arm == "vllm_merged":  # the base engine, its weights replaced by the merged ones
        from reasoning_rl.model.loading import merged_model

        engine.reload_weights(generator._llm, merged_model(model, dtype, adapter).state_dict().items())
    try:
        with served_lora.vllm_own_lora_path() if arm == "vllm_lora_stock_ops" else contextlib.nullcontext():
            return generator.sampled(k, temperature, 64, arm)
    finally:
        generator.close()


def z_test(a: int, n_a: int, b: int, n_b: int) -> float:
    """Two-sided p of a two-proportion z-test (pooled)."""
    p = (a + b) / (n_a + n_b)
    se = math.sqrt(p * (1 - p) * (1 / n_a + 1 / n_b)) or 1.0
    z = (a / n_a - b / n_b) / se
    return math.erfc(abs(z) / math.sqrt(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--model", default="embedded:SmolLM2-135M-Instruct")
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--out", default=str(paths.REPORTS / "sample_agreement.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    params = load_params(paths.params_file())
    cfg = params.grpo
    rows = read_records(paths.TRAIN)
    random.Random(cfg.prompt_seed).shuffle(rows)  # the GRPO stage's prompt order
    rows = rows[: args.prompts]
    rewards = dict(zip(cfg.reward_funcs, get_reward_funcs(cfg.reward_funcs), strict=True))
    command = "python -m benchmarks.sample_agreement " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out")
    result: dict = {"temperature": cfg.temperature, "max_new_tokens": cfg.max_completion_length, "arms": {}}
    out = Path(args.out)
    if out.exists():  # earlier arms of the same protocol stay (each says the command that made it)
        earlier = json.loads(out.read_text())
        if all(earlier.get(k) == v for k, v in result.items() if k != "arms"):
            result["arms"] = {arm: {"command": earlier.get("command")} | row
                              for arm, row in earlier["arms"].items()}
    for arm in args.arms.split(","):
        gens, seconds = sample(arm, args.model, params.base.dtype, params.base.seed, Path(args.adapter),
                               [r["prompt"] for r in rows], args.samples, cfg.temperature, cfg.max_completion_length)
        flat = [(g, r) for per, r in zip(gens, rows, strict=True) for g in per]
        texts, answers = [g.text for g, _ in flat], [r["answer"] for _, r in flat]
        row = {"command": command, "completions": len(flat), "seconds": round(seconds, 1),
               "mean_tokens": round(sum(g.num_tokens for g, _ in flat) / len(flat), 1),
               "truncated": sum(g.truncated for g, _ in flat)}
        for name, func in rewards.items():
            hits = sum(v > 0 for v in func(texts, answer=answers))
            low, high = wilson_interval(hits, len(flat))
            row[name] = {"hits": hits, "rate": round(hits / len(flat), 4), "ci": [round(low, 4), round(high, 4)]}
        result["arms"][arm] = row
        print(arm, row, flush=True)
        write_json(Path(args.out), result)
    names = list(result["arms"])
    result["comparisons"] = {
        f"{a}_vs_{b}": {name: round(z_test(result["arms"][a][name]["hits"], result["arms"][a]["completions"],
                                           result["arms"][b][name]["hits"], result["arms"][b]["completions"]), 4)
                        for name in rewards}
        for i, a in enumerate(names) for b in names[i + 1:]}
    write_json(Path(args.out), result)
    print(result["comparisons"])


if __name__ == "__main__":
    main()
