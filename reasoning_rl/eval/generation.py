"""Generation for evaluation, in input order, through the engine (docs/engine.md): vLLM (`generate_vllm`) or
transformers' `generate` (`generate_batched`, the fallback); `ModelGenerator` serves each evaluated model in turn."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

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
    max_new_tokens: int, desc: str = "sample", top_p: float = 1.0,
) -> tuple[list[list[Generation]], float]:
    """`num_samples` completions per prompt from softmax(logits / temperature) (nucleus `top_p`, no top-k), for
    pass@1, pass@k and maj@k. `batch_size` counts sequences, not prompts.
    """
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": top_p}
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


def generate_vllm(llm, tokenizer, prompts: list[list[dict]], max_new_tokens: int, desc: str = "generate",
                  num_samples: int = 1, temperature: float | None = None, top_p: float = 1.0,
                  seed: int | None = None) -> tuple[list[list[Generation]], float]:
    """`num_samples` completions per chat prompt from a vLLM engine: greedy, or sampled at `temperature`.

    Same contract as `generate_batched`: one list of generations per prompt (input order) and the seconds spent
    generating; the EOS counts as a generated token. vLLM batches and schedules the requests itself
    (continuous batching), so there is no batch size to choose. Sampling keeps nucleus `top_p`, no top-k.
    """
    from vllm import SamplingParams

    from reasoning_rl.model.engine import engine_call

    ids = [tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True, return_dict=False)
           for p in prompts]
    greedy = temperature is None
    if not torch.cuda.is_available():
        # vLLM 0.32's CPU build fails on per-request seeds once a request is prefilled in chunks ("CPU Generator
        # does not use offset"); the engine's own seed (start_vllm) makes the draws repeatable there.
        seed = None
    params = SamplingParams(n=num_samples, temperature=0.0 if greedy else temperature,
                            top_p=1.0 if greedy else top_p, top_k=0,
                            max_tokens=max_new_tokens, seed=seed, stop_token_ids=[tokenizer.eos_token_id],
                            skip_special_tokens=True)
    t0 = time.perf_counter()
    with engine_call(f"generating {desc} ({len(ids)} prompts x {num_samples})"):
        outputs = llm.generate([{"prompt_token_ids": p} for p in ids], params, use_tqdm=True)
    seconds = time.perf_counter() - t0
    return [[Generation(text=c.text, num_tokens=len(c.token_ids), truncated=c.finish_reason == "length")
             for c in out.outputs] for out in outputs], seconds


class ModelGenerator:
    """Generates for the evaluated models in turn (base, then each adapter) through one engine.

    vLLM: one engine for all of them, on the base weights; each adapter is served unmerged as a vLLM LoRA
    (served_lora.py: merging into bf16 weights would round part of it away). The engine restarts only when an
    adapter's rank is above what it serves (the base model alone starts it without LoRA).
    transformers: each model is loaded with its adapter merged (an unmerged LoRA decodes ~2x slower).
    """

    def __init__(self, model: str, dtype: str, seed: int, engine: str, prompts: list[list[dict]],
                 max_new_tokens: int) -> None:
        from reasoning_rl.model.loading import load_tokenizer

        self.model_name, self.dtype, self.seed, self.engine = model, dtype, seed, engine
        self.prompts, self.max_new_tokens = prompts, max_new_tokens
        self.tokenizer = load_tokenizer(model)
        self._llm = None
        self._hf = None

    def load(self, adapter: Path | None) -> None:
        """Make the base model, plus `adapter` when given, the one that generates."""
        from reasoning_rl.model import engine, served_lora
        from reasoning_rl.model.loading import DECODE_ATTENTION, load_model, pick_dtype, resolve_model_path

        if self.engine != engine.VLLM:
            self._hf = None
            lm = load_model(self.model_name, self.dtype, adapter=adapter, attn_implementation=DECODE_ATTENTION)
            self._hf = lm.model.merge_and_unload() if adapter is not None else lm.model
            return
        rank = served_lora.adapter_rank(adapter) if adapter is not None else 0
        if self._llm is None or rank > self._llm.rank:
            self.close()
            longest = max(len(self.tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True,
                                                                 return_dict=False)) for p in self.prompts)
            options = served_lora.engine_kwargs(rank) if rank else {}
            llm = engine.start_vllm(resolve_model_path(self.model_name), pick_dtype(self.dtype), self.seed,
                                    max_model_len=longest + self.max_new_tokens, **options)
            self._llm = served_lora.ServedLLM(llm, options.get("max_lora_rank", 0))
        self._llm.serve(adapter)

    def greedy(self, batch_size: int, desc: str) -> tuple[list[Generation], float]:
        if self._llm is not None:
            per_prompt, seconds = generate_vllm(self._llm, self.tokenizer, self.prompts, self.max_new_tokens, desc)
            return [g[0] for g in per_prompt], seconds
        return generate_greedy(self._hf, self.tokenizer, self.prompts, batch_size, self.max_new_tokens, desc)

    def sampled(self, k: int, temperature: float, batch_size: int, desc: str,
                top_p: float = 1.0) -> tuple[list[list[Generation]], float]:
        if self._llm is not None:
            return generate_vllm(self._llm, self.tokenizer, self.prompts, self.max_new_tokens, desc, num_samples=k,
                                 temperature=temperature, top_p=top_p, seed=self.seed)
        torch.manual_seed(self.seed)
        return generate_sampled(self._hf, self.tokenizer, self.prompts, k, temperature, batch_size,
                                self.max_new_tokens, desc, top_p=top_p)

    def close(self) -> None:
        if self._llm is not None:
            from reasoning_rl.model.engine import close_vllm

            self._llm.close()
            close_vllm(self._llm.llm)
            self._llm = None
        self._hf = None
