"""Batched generation with transformers' `generate` (greedy or sampled), in input order."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


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
    per_prompt, seconds = generate_batched(model, tokenizer, prompts, batch_size, max_new_tokens, desc)
    return [g[0] for g in per_prompt], seconds


def generate_sampled(
    model, tokenizer, prompts: list[list[dict]], num_samples: int, temperature: float, batch_size: int,
    max_new_tokens: int, desc: str = "sample",
) -> tuple[list[list[Generation]], float]:
    """`num_samples` completions per prompt from softmax(logits / temperature), for pass@k and maj@k.

    top_k=0 and top_p=1: the untruncated distribution, as GRPO samples it (teaching/mini_grpo.py), so
    pass@k measures what the policy itself would produce. `batch_size` counts sequences, not prompts.
    """
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    return generate_batched(model, tokenizer, prompts, max(1, batch_size // num_samples), max_new_tokens, desc,
                            num_return_sequences=num_samples, sampling=sampling)


def generate_batched(model, tokenizer, prompts: list[list[dict]], batch_size: int, max_new_tokens: int,
                     desc: str = "generate", num_return_sequences: int = 1,
                     sampling: dict | None = None) -> tuple[list[list[Generation]], float]:
    """`num_return_sequences` completions per chat prompt (greedy unless `sampling` gives generate kwargs).

    Left padding, prompts sorted by length, `batch_size` prompts per generate call; returns one list of
    generations per prompt (input order) and the seconds spent in `generate`.
    """
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    results: list[list[Generation] | None] = [None] * len(texts)
    eos = tokenizer.eos_token_id
    decoding = sampling or {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
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
                    **decoding,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=num_return_sequences,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=eos,
                )  # [len(idx) * num_return_sequences, prompt + new], the samples of one prompt adjacent
            seconds += time.perf_counter() - t0
            new = out[:, enc["input_ids"].shape[1] :]
            gens = [_decode(row.tolist(), tokenizer, eos) for row in new]
            for j, i in enumerate(idx):
                results[i] = gens[j * num_return_sequences : (j + 1) * num_return_sequences]
            bar.update(len(idx))
    return [r for r in results if r is not None], seconds


def _decode(ids: list[int], tokenizer, eos: int) -> Generation:
    """Text up to the first EOS; the EOS counts as a generated token, padding after it does not."""
    ended = eos in ids
    if ended:
        ids = ids[: ids.index(eos)]
    ids = [t for t in ids if t != tokenizer.pad_token_id]
    return Generation(text=tokenizer.decode(ids, skip_special_tokens=True), num_tokens=len(ids) + int(ended),
                      truncated=not ended)
