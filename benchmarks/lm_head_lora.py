"""The LM head's LoRA on vLLM's CPU build: the one-adapter path (served_lora.py) against vLLM's own op.

Run: python -m benchmarks.lm_head_lora [--adapter runs/ablation/sft-eabee625bc/adapter] [--eval-questions 256]

GRPO-sized sampling: 4 train prompts x 4 completions, exactly 160 tokens (ignore_eos), T 0.9, the adapter served;
`--rounds` rounds, the two arms alternating within one engine; prints ms per decode step (seconds / 160) per run
and the medians. With `--eval-questions N`, also greedy evaluation of the first N test questions (the evaluate
stage's `ModelGenerator`, params.yaml's max_new_tokens) once per arm: tok/s and identical completions.
Only `PunicaWrapperCPU.add_lora_logits` differs between the arms; the LoRA layers take the one-adapter path in both.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from reasoning_rl import memory, paths
from reasoning_rl.config import load_params
from reasoning_rl.eval.generation import ModelGenerator
from reasoning_rl.model import engine, served_lora
from reasoning_rl.model.loading import load_tokenizer, resolve_model_path
from reasoning_rl.task.gsm8k import load_gsm8k

TOKENS = 160


def use(arm: str, ours) -> None:
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    PunicaWrapperCPU.add_lora_logits = ours if arm == "one_adapter" else served_lora.VLLM_OPS["add_lora_logits"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:SmolLM2-135M-Instruct")
    parser.add_argument("--adapter", default="runs/ablation/sft-eabee625bc/adapter")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--eval-questions", type=int, default=0)
    args = parser.parse_args()
    memory.retain_freed_memory()
    params = load_params(paths.params_file())
    from vllm import SamplingParams
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    tokenizer = load_tokenizer(args.model)
    prompts = [e.prompt() for e in load_gsm8k(params.prepare.data_dir, "train")[:4]]
    ids = [tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True, return_dict=False)
           for p in prompts for _ in range(4)]
    options = served_lora.engine_kwargs(served_lora.adapter_rank(Path(args.adapter)))
    engine.configure_cpu_env(kv_cache_gib=1)
    llm = served_lora.ServedLLM(engine.start_vllm(resolve_model_path(args.model), torch.bfloat16, params.base.seed,
                                                  max_model_len=max(map(len, ids)) + TOKENS, **options),
                                options["max_lora_rank"])
    llm.serve(Path(args.adapter))
    ours = PunicaWrapperCPU.add_lora_logits
    sampling = SamplingParams(temperature=0.9, top_p=1.0, top_k=0, max_tokens=TOKENS, logprobs=0, ignore_eos=True)
    requests = [{"prompt_token_ids": p} for p in ids]
    llm.generate(requests, sampling_params=sampling, use_tqdm=False)  # warm-up
    ms: dict[str, list[float]] = {"one_adapter": [], "vllm_own": []}
    for r in range(args.rounds):
        for arm in list(ms) if r % 2 == 0 else list(ms)[::-1]:
            use(arm, ours)
            start = time.perf_counter()
            llm.generate(requests, sampling_params=sampling, use_tqdm=False)
            ms[arm].append((time.perf_counter() - start) / TOKENS * 1000)
    for arm, runs in ms.items():
        print(f"sampling, {arm}: ms per decode step {[round(x, 1) for x in runs]}, "
              f"median {statistics.median(runs):.1f}")
    engine.close_vllm(llm.llm)
    use("one_adapter", ours)

    if args.eval_questions:
        questions = [e.prompt() for e in load_gsm8k(params.prepare.data_dir, "test")[: args.eval_questions]]
        generator = ModelGenerator(args.model, params.base.dtype, params.base.seed, engine.VLLM, questions,
                                   params.evaluate.max_new_tokens)
        generator.load(Path(args.adapter))
        texts = {}
        for arm in ms:
            use(arm, ours)
            gens, seconds = generator.greedy(params.evaluate.batch_size, arm)
            texts[arm] = [g.text for g in gens]
            print(f"evaluation, {arm}: {sum(g.num_tokens for g in gens) / seconds:.0f} tok/s")
        same = sum(a == b for a, b in zip(*texts.values(), strict=True))
        print(f"identical completions: {same} of {len(questions)}")
        generator.close()
        use("one_adapter", ours)


if __name__ == "__main__":
    main()
