"""Evaluation: greedy batched generation and GSM8K scoring with the same parser as the rewards."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from reasoning_rl.formatting import extract_answer_lenient, parse_completion
from reasoning_rl.rewards import is_correct


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927; z = 1.96 for 95 %)."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Generation:
    text: str
    num_tokens: int
    truncated: bool


def generate_greedy(model, tokenizer, prompts: list[list[dict]], batch_size: int, max_new_tokens: int,
                    desc: str = "generate") -> tuple[list[Generation], float]:
    """Greedy completions for chat prompts, batched; returns generations (input order) and decode seconds.

    Prompts are sorted by length so a batch holds similar lengths (little padding); each batch stops as
    soon as all its sequences emitted EOS.
    """
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    results: list[Generation | None] = [None] * len(texts)
    eos = tokenizer.eos_token_id
    seconds = 0.0
    with tqdm(total=len(texts), desc=desc, unit="q") as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(model.device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=eos,
                )
            seconds += time.perf_counter() - t0
            new = out[:, enc["input_ids"].shape[1] :]
            for row, i in zip(new, idx, strict=True):
                ids = row.tolist()
                ended = eos in ids
                if ended:
                    ids = ids[: ids.index(eos)]
                ids = [t for t in ids if t != tokenizer.pad_token_id]
                results[i] = Generation(
                    text=tokenizer.decode(ids, skip_special_tokens=True),
                    num_tokens=len(ids) + int(ended),
                    truncated=not ended,
                )
            bar.update(len(idx))
    return [r for r in results if r is not None], seconds


def score(generations: list[Generation], golds: list[str]) -> list[dict]:
    """Per-question verdicts with the reward parser: format ok, answer extracted, correct."""
    rows = []
    for gen, gold in zip(generations, golds, strict=True):
        parsed = parse_completion(gen.text)
        lenient = extract_answer_lenient(gen.text)
        rows.append(
            {
                "format_ok": parsed is not None,
                "correct": parsed is not None and is_correct(parsed.answer, gold),
                # Diagnostic only: right number inside <answer> even when the format around it is broken.
                "correct_lenient": lenient is not None and is_correct(lenient, gold),
                "answer_extracted": lenient is not None,
                "num_tokens": gen.num_tokens,
                "truncated": gen.truncated,
            }
        )
    return rows


def summarize(rows: list[dict], decode_seconds: float) -> dict[str, float]:
    """Accuracy with its Wilson 95 % interval, format rate, lengths and throughput."""
    n = len(rows)
    correct = sum(r["correct"] for r in rows)
    low, high = wilson_interval(correct, n)
    tokens = sum(r["num_tokens"] for r in rows)
    return {
        "questions": n,
        "accuracy": correct / n if n else 0.0,
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "format_rate": sum(r["format_ok"] for r in rows) / n if n else 0.0,
        "accuracy_lenient": sum(r["correct_lenient"] for r in rows) / n if n else 0.0,
        "answer_extraction_rate": sum(r["answer_extracted"] for r in rows) / n if n else 0.0,
        "truncated_rate": sum(r["truncated"] for r in rows) / n if n else 0.0,
        "mean_completion_tokens": tokens / n if n else 0.0,
        "tokens_per_second": tokens / decode_seconds if decode_seconds > 0 else 0.0,
        "decode_seconds": decode_seconds,
    }
