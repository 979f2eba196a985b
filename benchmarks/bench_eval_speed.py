"""Decode speed of the evaluate path against a naive path, on the same GSM8K questions, in one run.

Run: python -m benchmarks.bench_eval_speed [--questions 32] [--max-new-tokens 128] [--rounds 2] [--profile]
Writes reports/eval_speed.json.

- naive: fp32 weights, SDPA attention (the transformers default), batch 1, plain greedy `generate`;
- evaluate: what stages/evaluate.py runs: bf16 where the CPU has native bf16 (`base.dtype: auto`),
  `grouped_eager` attention (reasoning_rl/model/attention.py: eager without the per-step KV-cache copies), all
  questions in length-sorted batches of `--batch-size`, left padding, each batch stopping when its last
  sequence emits EOS;
- evaluate with transformers' eager attention: the same path before grouped_eager, to show what it adds;
- `--static-cache` adds the evaluate path with `cache_implementation="static"`.

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
from reasoning_rl.eval.generation import generate_batched
from reasoning_rl.model.loading import DECODE_ATTENTION, EMBEDDED_MODEL, load_model, pick_dtype
from reasoning_rl.task.gsm8k import load_gsm8k


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


def decode_step(model, tokenizer, prompts, batch_size: int, steps: int = 20) -> tuple[float, str]:
    """ms per greedy decode step of one batch after its prompt pass (KV cache grown by `steps` tokens), and a
    torch.profiler table of 5 further steps: the model's forward alone, without generate's bookkeeping."""
    from torch.profiler import ProfilerActivity, profile

    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts[:batch_size]]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    ones = torch.ones(len(texts), 1, dtype=enc["attention_mask"].dtype)
    with torch.inference_mode():
        out = model(**enc, use_cache=True, logits_to_keep=1)
        cache, ids = out.past_key_values, out.logits[:, -1:].argmax(-1)
        mask = torch.cat([enc["attention_mask"], ones], 1)

        def step():
            nonlocal ids, mask
            logits = model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True).logits
            ids, mask = logits[:, -1:].argmax(-1), torch.cat([mask, ones], 1)

        start = time.perf_counter()
        for _ in range(steps):
            step()
        ms = 1000 * (time.perf_counter() - start) / steps
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                step()
    return ms, prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)


def prefill_seconds(model, tokenizer, prompts, batch_size: int) -> float:
    """Seconds of the first batch's prompt pass alone (generate with one new token)."""
    return generate_batched(model, tokenizer, prompts[:batch_size], batch_size, 1, desc="prefill")[1]


def matmul_ceiling(config, rows: tuple[int, ...] = (1, 16, 32, 64, 128), repeats: int = 20) -> dict[int, float]:
    """bf16 GFLOP/s of the model's own linear shapes (q, k/v, o, MLP, LM head) at `rows` tokens per step.

    The decode step of a batch of B sequences is these matmuls at M = B rows; their speed bounds tok/s.
    """
    hidden, inter = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (hidden // config.num_attention_heads)
    shapes = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden), (hidden, inter), (hidden, inter),
              (inter, hidden), (hidden, config.vocab_size)]
    out = {}
    for m in rows:
        flops, seconds = 0, 0.0
        for k, n in shapes:
            x, w = torch.randn(m, k, dtype=torch.bfloat16), torch.randn(n, k, dtype=torch.bfloat16)
            for _ in range(3):
                torch.nn.functional.linear(x, w)
            start = time.perf_counter()
            for _ in range(repeats):
                torch.nn.functional.linear(x, w)
            seconds += (time.perf_counter() - start) / repeats
            flops += 2 * m * k * n
        out[m] = round(flops / seconds / 1e9, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32, help="evaluate path: prompts per generate call")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of every variant")
    parser.add_argument("--static-cache", action="store_true", help="also time the evaluate path with a static cache")
    parser.add_argument("--profile", action="store_true",
                        help="also: one batch profiled, its prompt pass alone, matmul speed, a decode step per kernel")
    parser.add_argument("--no-naive", action="store_true", help="skip the (slow) naive path and the ratio")
    parser.add_argument("--note", default="variants alternated within one run", help="stored with the result")
    parser.add_argument("--data-dir", default="../shared/data/gsm8k")
    parser.add_argument("--out", type=Path, default=paths.REPORTS / "eval_speed.json")
    args = parser.parse_args(argv)

    questions = load_gsm8k(args.data_dir, "test")[: args.questions]
    prompts = [q.prompt() for q in questions]
    naive = None if args.no_naive else load_model(EMBEDDED_MODEL, "float32")  # SDPA: transformers' default
    fast = load_model(EMBEDDED_MODEL, "auto", attn_implementation=DECODE_ATTENTION)
    eager = load_model(EMBEDDED_MODEL, "auto", attn_implementation="eager")
    dtype = str(pick_dtype("auto")).removeprefix("torch.")
    variants = {} if naive is None else {"naive (fp32, sdpa, batch 1)": (naive, 1, None)}
    variants |= {
        f"evaluate ({dtype}, {DECODE_ATTENTION}, batch {args.batch_size})": (fast, args.batch_size, None),
        f"evaluate with eager attention ({dtype}, batch {args.batch_size})": (eager, args.batch_size, None),
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
        "note": args.note,
        "tokens_per_second": rates,
    }
    if naive is not None:
        result["ratio_evaluate_over_naive"] = rates[names[1]] / rates[names[0]]
    print(json.dumps(result, indent=2))
    if args.profile:
        start = time.perf_counter()
        table = profile_batch(fast.model, fast.tokenizer, prompts, args.batch_size, min(args.max_new_tokens, 32))
        print(f"profile of one evaluate batch ({time.perf_counter() - start:.0f} s):\n{table}")
        result["profile_top_ops"] = table
        result["prefill_seconds_first_batch"] = prefill_seconds(fast.model, fast.tokenizer, prompts, args.batch_size)
        result["matmul_gflops_bf16_by_rows"] = matmul_ceiling(fast.model.config)
        print(f"prefill of the first batch alone: {result['prefill_seconds_first_batch']:.1f} s")
        print(f"bf16 GFLOP/s of the model's linear shapes by rows (= sequences per decode step): "
              f"{result['matmul_gflops_bf16_by_rows']}")
        result["decode_step"] = {}
        for name, lm in ((DECODE_ATTENTION, fast), ("eager", eager)):
            ms, table = decode_step(lm.model, lm.tokenizer, prompts, args.batch_size)
            result["decode_step"][name] = {"ms_per_step": round(ms, 1), "profile_top_ops": table}
            print(f"decode step, batch {args.batch_size}, {name} attention: {ms:.1f} ms (forward only)\n{table}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
