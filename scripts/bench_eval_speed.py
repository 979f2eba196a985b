"""Decode speed of the evaluate path against a naive path, on the same GSM8K questions, in one run.

Run: python -m scripts.bench_eval_speed [--questions 32] [--max-new-tokens 128] [--rounds 2] [--profile]
Writes reports/eval_speed.json.

- naive: fp32 weights, SDPA attention (the transformers default), batch 1, plain greedy `generate`;
- evaluate: what stages/evaluate.py runs: bf16 where the CPU has native bf16 (`base.dtype: auto`), eager
  attention, all questions in length-sorted batches of `--batch-size`, left padding, each batch stopping when
  its last sequence emits EOS;
- `--static-cache` adds a third variant: the evaluate path with `cache_implementation="static"`.

Variants alternate round by round (A B A B ...) so a noisy neighbour on a shared CPU slows both alike; the
reported tok/s is generated tokens (EOS included) over the seconds spent in `generate`, summed over rounds.
`--profile` prints where one evaluate-path batch spends its time (torch.profiler, top ops by self CPU time).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from reasoning_rl import paths
from reasoning_rl.data import load_gsm8k
from reasoning_rl.evaluation import generate_batched
from reasoning_rl.modeling import EMBEDDED_MODEL, load_model, pick_dtype


def run_variant(name: str, model, tokenizer, prompts, batch_size: int, max_new_tokens: int,
                extra: dict | None = None) -> tuple[int, float]:
    """(generated tokens, seconds in generate) for one pass over the prompts."""
    if extra:  # generation-config overrides (static cache) go through the model's generation config
        for key, value in extra.items():
            setattr(model.generation_config, key, value)
    gens, seconds = generate_batched(model, tokenizer, prompts, batch_size, max_new_tokens, desc=name)
    return sum(g[0].num_tokens for g in gens), seconds


def profile_batch(model, tokenizer, prompts, batch_size: int, max_new_tokens: int) -> str:
    """torch.profiler table of one evaluate-path batch: the ops where decode time goes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        generate_batched(model, tokenizer, prompts[:batch_size], batch_size, max_new_tokens, desc="profile")
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32, help="evaluate path: prompts per generate call")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of every variant")
    parser.add_argument("--static-cache", action="store_true", help="also time the evaluate path with a static cache")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--data-dir", default="../shared/data/gsm8k")
    parser.add_argument("--out", type=Path, default=paths.REPORTS / "eval_speed.json")
    args = parser.parse_args(argv)

    questions = load_gsm8k(args.data_dir, "test")[: args.questions]
    prompts = [q.prompt() for q in questions]
    naive = load_model(EMBEDDED_MODEL, "float32")  # SDPA attention: transformers' default
    fast = load_model(EMBEDDED_MODEL, "auto", attn_implementation="eager")
    variants = {
        "naive (fp32, sdpa, batch 1)": (naive, 1, None),
        f"evaluate ({pick_dtype('auto')}, eager, batch {args.batch_size})": (fast, args.batch_size, None),
    }
    if args.static_cache:
        variants[f"evaluate + static cache (batch {args.batch_size})"] = (
            fast, args.batch_size, {"cache_implementation": "static"})
    totals = {name: [0, 0.0] for name in variants}
    for round_ in range(args.rounds):
        for name, (lm, batch, extra) in variants.items():
            tokens, seconds = run_variant(name, lm.model, lm.tokenizer, prompts, batch, args.max_new_tokens, extra)
            if extra:
                for key in extra:
                    setattr(lm.model.generation_config, key, None)
            totals[name][0] += tokens
            totals[name][1] += seconds
            print(f"round {round_ + 1} {name}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tok/s",
                  flush=True)

    rates = {name: tokens / seconds for name, (tokens, seconds) in totals.items()}
    names = list(rates)
    result = {
        "questions": args.questions,
        "max_new_tokens": args.max_new_tokens,
        "rounds": args.rounds,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "note": "CPU shared with other jobs; variants alternated within one run",
        "tokens_per_second": rates,
        "ratio_evaluate_over_naive": rates[names[1]] / rates[names[0]],
    }
    print(json.dumps(result, indent=2))
    if args.profile:
        start = time.perf_counter()
        table = profile_batch(fast.model, fast.tokenizer, prompts, args.batch_size, min(args.max_new_tokens, 32))
        print(f"profile of one evaluate batch ({time.perf_counter() - start:.0f} s):\n{table}")
        result["profile_top_ops"] = table
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
