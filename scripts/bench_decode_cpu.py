"""Micro-benchmark behind the CPU generation knobs: a decode-step-sized matmul with 2 vs 1 threads; decode ms
per step (eager vs SDPA attention, batch 16 and 32, LoRA unmerged vs merged); one training forward+backward
(batch 16 x 300 tokens) per attention kernel.

Run: python -m scripts.bench_decode_cpu [--adapter models/sft/adapter] [--only-threads]   (about 3 min)
     OMP_WAIT_POLICY=PASSIVE python -m scripts.bench_decode_cpu --only-threads   (idle OpenMP workers sleep)

One process, bf16, SmolLM2-135M-Instruct with the SFT LoRA; a single timing per cell, so on a shared CPU read
the figures as rough (docs/scaling.md quotes them as such).
"""

from __future__ import annotations

import argparse
import time

import torch

from reasoning_rl import paths
from reasoning_rl.modeling import load_model

PROMPT = (
    "<|im_start|>user\nNatalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?<|im_end|>\n<|im_start|>assistant\n"
)
NEW_TOKENS = 48


def decode_ms_per_step(model, tokenizer, batch: int, warm_up: bool = True) -> float:
    enc = tokenizer([PROMPT] * batch, return_tensors="pt", padding=True)
    with torch.no_grad():
        if warm_up:
            model.generate(**enc, max_new_tokens=4, min_new_tokens=4, do_sample=True)
        start = time.perf_counter()
        model.generate(**enc, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=True)
    return 1000 * (time.perf_counter() - start) / NEW_TOKENS


def matmul_threads() -> None:
    """One decode step's MLP matmul (16 tokens x 576 by 576 x 1536, bf16) and a prefill-sized one, 2 vs 1 threads."""
    small = torch.randn(16, 576, dtype=torch.bfloat16)
    big = torch.randn(3200, 576, dtype=torch.bfloat16)
    weight = torch.randn(576, 1536, dtype=torch.bfloat16)
    for threads in (2, 1, 2, 1):  # alternated: the machine is shared
        torch.set_num_threads(threads)
        start = time.perf_counter()
        for _ in range(2000):
            small @ weight
        small_us = (time.perf_counter() - start) / 2000 * 1e6
        start = time.perf_counter()
        for _ in range(20):
            big @ weight
        big_ms = (time.perf_counter() - start) / 20 * 1e3
        print(f"{threads} thread(s): decode-sized matmul {small_us:.1f} us, prefill-sized {big_ms:.1f} ms")


def main() -> None:
    from peft import PeftModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default=str(paths.adapter_dir("sft")))
    parser.add_argument("--model", default="embedded:SmolLM2-135M-Instruct")
    parser.add_argument("--only-threads", action="store_true", help="only the matmul thread comparison")
    args = parser.parse_args()
    matmul_threads()
    if args.only_threads:
        return
    torch.manual_seed(0)
    for attn in ["eager", "sdpa"]:
        loaded = load_model(args.model, "bfloat16", attn_implementation=attn)
        model = PeftModel.from_pretrained(loaded.model, args.adapter, is_trainable=True)
        tokenizer = loaded.tokenizer
        tokenizer.padding_side = "left"
        for batch in (16, 32):
            print(f"{attn} batch {batch} LoRA unmerged: {decode_ms_per_step(model, tokenizer, batch):.1f} ms/step")
        ids = torch.randint(100, 20000, (16, 300))  # [batch, seq_len]: a GRPO step's prompt + completion
        model.train()
        start = time.perf_counter()
        for _ in range(2):
            model(input_ids=ids).logits.float().mean().backward()
        print(f"{attn} train forward+backward 16 x 300: {(time.perf_counter() - start) / 2:.2f} s")
        model.eval()
        if attn == "eager":
            model.merge_adapter()
            for batch in (16, 32):
                ms = decode_ms_per_step(model, tokenizer, batch, warm_up=False)
                print(f"{attn} batch {batch} LoRA merged: {ms:.1f} ms/step")
            model.unmerge_adapter()


if __name__ == "__main__":
    main()
