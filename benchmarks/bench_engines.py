"""The generation engines side by side, in one run: vLLM's CPU build against transformers' generate, for the
evaluate stage's workload and for GRPO's sampling.

Run: python -m benchmarks.bench_engines                       # all of it (about 75 min on 2 idle cores)
     python -m benchmarks.bench_engines --grpo-steps 0        # evaluation only
     python -m benchmarks.bench_engines --eval-models '' --grpo-steps 0 --served-gap models/sft/adapter=128 \
         --out benchmarks/results/served_gap.json             # served adapter against base weights
Writes benchmarks/results/engine_speed.json and prints two markdown tables.

Evaluation: each model's base weights answer the first N GSM8K test questions greedily with the evaluate stage's
settings from params.yaml (batch size, max_new_tokens), once per engine, through the stage's own
`ModelGenerator`. tok/s = generated tokens (EOS included) / seconds generating. The same run gives the share of
questions where both engines wrote the identical completion (bf16 on both sides; see tests/test_engine.py).

GRPO: `benchmarks.bench_grpo_cpu.run_variant` (the stage's own `train_grpo`) from the same SFT adapter, prompts
and seed, `--grpo-steps` steps each: TRL's defaults (fp32, checkpointing, SDPA, transformers sampling), the tuned
training knobs with transformers sampling, and the tuned knobs with vLLM sampling (params.yaml's defaults).
Reward per step is compared step by step with a paired t-test (the variants see the same prompts each step).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import torch

from benchmarks import RESULTS
from reasoning_rl import memory, paths
from reasoning_rl.config import load_params
from reasoning_rl.eval.generation import ModelGenerator
from reasoning_rl.files import write_json
from reasoning_rl.model import engine
from reasoning_rl.task.gsm8k import load_gsm8k

GRPO_VARIANTS = ("trl_defaults", "tuned_transformers_sampling", "tuned")
# TRL's defaults (fp32, checkpointing, SDPA) measured with the same protocol in an earlier run, quoted when
# --grpo-variants leaves them out (it takes ~20 min): benchmarks/results/bench_grpo_cpu_tuned_v5.json, idle CPU.
EARLIER_TRL_DEFAULTS_S_PER_STEP = 61.4


def eval_speed(model: str, questions: int, batch_size: int, max_new_tokens: int, dtype: str, seed: int,
               data_dir: str) -> dict:
    """Both engines on the same questions: tok/s each, and how often their greedy completions are identical."""
    prompts = [e.prompt() for e in load_gsm8k(data_dir, "test")[:questions]]
    out: dict = {"questions": len(prompts), "batch_size": batch_size, "max_new_tokens": max_new_tokens}
    texts = {}
    for name in (engine.VLLM, engine.TRANSFORMERS):
        generator = ModelGenerator(model, dtype, seed, name, prompts, max_new_tokens)
        generator.load(None)
        gens, seconds = generator.greedy(batch_size, f"{model} {name}")
        generator.close()
        tokens = sum(g.num_tokens for g in gens)
        key = "vllm" if name == engine.VLLM else "hf"
        out |= {f"{key}_tok_s": round(tokens / seconds, 1), f"{key}_tokens": tokens,
                f"{key}_seconds": round(seconds, 1)}
        texts[key] = [g.text for g in gens]
        print(f"{model} {name}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.0f} tok/s", flush=True)
    same = sum(a == b for a, b in zip(texts["vllm"], texts["hf"], strict=True))
    out |= {"speedup": round(out["vllm_tok_s"] / out["hf_tok_s"], 2), "identical_completions": same,
            "identical_rate": round(same / len(prompts), 3)}
    return out


def served_gap(model: str, adapter: Path, questions: int, max_new_tokens: int, k: int, temperature: float,
               dtype: str, seed: int, data_dir: str) -> dict:
    """Where a served adapter's decoding loses time against the base weights', on the same questions.

    Every arm decodes exactly `max_new_tokens` per question (EOS ignored), so the arms do the same work:
    the base weights on evaluate@base's engine (no LoRA support), the LoRA engine serving no adapter (the cost of
    LoRA support alone), and the LoRA engine serving `adapter` (what evaluate@sft/grpo run), with the seconds
    spent inside the LoRA products (served_lora's `add_lora_linear`/`add_lora_logits`) and the per-step
    metadata update timed. A last arm samples k per question as evaluate does (EOS kept), with vLLM's prefix
    cache counters: whether the k samples of a question share its prompt's prefill.
    """
    from vllm import SamplingParams
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    from reasoning_rl.model import served_lora
    from reasoning_rl.model.loading import load_tokenizer, pick_dtype, resolve_model_path

    tokenizer = load_tokenizer(model)
    prompts = [e.prompt() for e in load_gsm8k(data_dir, "test")[:questions]]
    ids = [{"prompt_token_ids": tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True,
                                                              return_dict=False)} for p in prompts]
    longest = max(len(i["prompt_token_ids"]) for i in ids)
    fixed = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, ignore_eos=True)
    timers = {"add_lora_linear": 0.0, "add_lora_logits": 0.0, "update_metadata": 0.0}

    def timed(name):
        inner = getattr(PunicaWrapperCPU, name)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                timers[name] += time.perf_counter() - t0
        return wrapper

    def run_arm(llm, params, desc, lora_request=None) -> dict:
        for name in timers:
            timers[name] = 0.0
        t0 = time.perf_counter()
        outs = llm.generate(ids, params, lora_request=lora_request, use_tqdm=True)
        seconds = time.perf_counter() - t0
        tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
        row = {"tokens": tokens, "seconds": round(seconds, 1), "tok_s": round(tokens / seconds, 1)}
        print(f"{desc}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.0f} tok/s", flush=True)
        return row

    start = dict(model_path=resolve_model_path(model), dtype=pick_dtype(dtype), seed=seed,
                 max_model_len=longest + max_new_tokens)
    out: dict = {"model": model, "adapter": str(adapter), "questions": len(ids), "max_new_tokens": max_new_tokens}
    llm = engine.start_vllm(**start)
    out["base_weights"] = run_arm(llm, fixed, "base weights, no LoRA support")
    engine.close_vllm(llm)
    del llm

    rank = served_lora.adapter_rank(adapter)
    # stats on for the prefix-cache counters (vLLM's LLM turns them off by default)
    llm = engine.start_vllm(**start, **served_lora.engine_kwargs(rank), disable_log_stats=False)
    installed = {name: getattr(PunicaWrapperCPU, name) for name in timers}  # engine_kwargs' one-adapter ops
    for name in timers:
        setattr(PunicaWrapperCPU, name, timed(name))
    served = served_lora.ServedLLM(llm, rank)
    out["lora_support_no_adapter"] = run_arm(llm, fixed, "LoRA engine, no adapter")
    served.serve(adapter)
    out["adapter_served"] = run_arm(llm, fixed, "LoRA engine, adapter served", served.request)
    out["adapter_served"] |= {f"{name}_seconds": round(v, 1) for name, v in timers.items()}

    def prefix_counters() -> dict:
        wanted = {"vllm:prefix_cache_queries": "queries", "vllm:prefix_cache_hits": "hits"}
        return {wanted[m.name]: getattr(m, "value", 0) for m in llm.get_metrics() if m.name in wanted}

    before = prefix_counters()
    sampled = SamplingParams(n=k, temperature=temperature, max_tokens=max_new_tokens,
                             stop_token_ids=[tokenizer.eos_token_id])
    out["adapter_sampled"] = run_arm(llm, sampled, f"adapter served, {k} samples at T {temperature}", served.request)
    after = prefix_counters()
    out["adapter_sampled"] |= {"k": k, "temperature": temperature,
                               "prefix_cache_query_tokens": after.get("queries", 0) - before.get("queries", 0),
                               "prefix_cache_hit_tokens": after.get("hits", 0) - before.get("hits", 0),
                               "prompt_tokens": k * sum(len(i["prompt_token_ids"]) for i in ids)}
    served.close()
    engine.close_vllm(llm)
    for name, op in installed.items():
        setattr(PunicaWrapperCPU, name, op)
    base, none, adapted = out["base_weights"], out["lora_support_no_adapter"], out["adapter_served"]
    lora_ops = adapted["add_lora_linear_seconds"] + adapted["add_lora_logits_seconds"]
    out["gap"] = {
        "served_vs_base_speed": round(adapted["tok_s"] / base["tok_s"], 3),
        "total_seconds": round(adapted["seconds"] - base["seconds"], 1),
        "lora_support_seconds": round(none["seconds"] - base["seconds"], 1),
        "adapter_seconds": round(adapted["seconds"] - none["seconds"], 1),
        "lora_products_seconds": round(lora_ops, 1),
        "metadata_seconds": adapted["update_metadata_seconds"],
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-models", default="embedded:SmolLM2-135M-Instruct=1319",
                        help="comma list of model=questions (e.g. embedded:Qwen2.5-Coder-0.5B-Instruct=128)")
    parser.add_argument("--grpo-steps", type=int, default=20, help="GRPO steps per variant (0 = skip GRPO)")
    parser.add_argument("--grpo-max-completion-length", type=int, default=160)
    parser.add_argument("--grpo-variants", default=",".join(GRPO_VARIANTS),
                        help=f"comma list from benchmarks.bench_grpo_cpu.VARIANTS (default: {','.join(GRPO_VARIANTS)})")
    parser.add_argument("--sft-adapter", default=str(paths.adapter_dir("sft")),
                        help="SmolLM2-135M SFT adapter the GRPO variants start from (default: the sft stage's, "
                             "which is SmolLM2's only under the smoke profile)")
    parser.add_argument("--served-gap", metavar="ADAPTER=N",
                        help="served adapter against base weights on the first N test questions (params.yaml's model)")
    parser.add_argument("--note", default="", help="stored with the result (e.g. whether the CPU was idle)")
    parser.add_argument("--out", default=str(RESULTS / "engine_speed.json"))
    args = parser.parse_args()
    memory.retain_freed_memory()  # as the stages do (reasoning_rl/memory.py)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    params = load_params(Path("params.yaml"))
    ev = params.evaluate

    result: dict = {"command": "python -m benchmarks.bench_engines " + " ".join(
        f"--{k.replace('_', '-')} {v!r}" for k, v in vars(args).items() if k != "out"), "eval": {}}
    for item in filter(None, args.eval_models.split(",")):
        model, _, n = item.partition("=")
        result["eval"][model] = eval_speed(model, int(n or 128), ev.batch_size, ev.max_new_tokens, params.base.dtype,
                                           params.base.seed, params.prepare.data_dir)
        write_json(Path(args.out), result)  # keep what is done if a later part fails

    if args.served_gap:
        adapter, _, n = args.served_gap.partition("=")
        result["served_gap"] = served_gap(params.base.model, Path(adapter), int(n or 128), ev.max_new_tokens,
                                          ev.samples_k, ev.temperature, params.base.dtype, params.base.seed,
                                          params.prepare.data_dir)
        write_json(Path(args.out), result)
        print(json.dumps(result["served_gap"]["gap"]))

    if args.grpo_steps:
        from benchmarks import bench_grpo_cpu

        grpo_args = argparse.Namespace(steps=args.grpo_steps, generations=4, prompts_per_step=4,
                                       max_completion_length=args.grpo_max_completion_length, seed=42,
                                       model="embedded:SmolLM2-135M-Instruct", adapter=args.sft_adapter)
        rows = bench_grpo_cpu.read_records(paths.TRAIN)[:64]
        runs = []
        names = args.grpo_variants.split(",")
        for name in names:
            print(f"GRPO {name} ...", flush=True)
            runs.append(bench_grpo_cpu.run_variant(name, grpo_args, rows))
        summary = bench_grpo_cpu.summarize(runs, names[0])
        tuned_tf = next(r for r in runs if r["variant"] == "tuned_transformers_sampling")
        tuned_vllm = next(r for r in runs if r["variant"] == "tuned")
        result["grpo"] = {
            "model": grpo_args.model,
            "settings": {k: v for k, v in vars(grpo_args).items()},
            "s_per_step": {r["variant"]: r["seconds_per_step"] for r in runs},
            **({} if "trl_defaults" in names else {"trl_defaults_earlier_run": {
                "s_per_step": EARLIER_TRL_DEFAULTS_S_PER_STEP, "source": str(RESULTS / "bench_grpo_cpu_tuned_v5.json"),
                "speedup_of_tuned_vllm": round(EARLIER_TRL_DEFAULTS_S_PER_STEP / tuned_vllm["seconds_per_step"], 2)}}),
            "vllm_vs_transformers_sampling": {
                "speedup": round(tuned_tf["seconds_per_step"] / tuned_vllm["seconds_per_step"], 2),
                "reward": bench_grpo_cpu.paired_reward_difference(tuned_vllm["reward_per_step"],
                                                                   tuned_tf["reward_per_step"]),
            },
            "summary": summary,
            "runs": runs,
        }
        print(bench_grpo_cpu.table(summary, names[0]))
    result["machine"] = {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                         "python": platform.python_version(), "note": args.note}
    write_json(Path(args.out), result)
    print("| model | questions | vLLM tok/s | transformers tok/s | speed-up | identical completions |")
    print("|---|---|---|---|---|---|")
    for model, r in result["eval"].items():
        print(f"| {model} | {r['questions']} | {r['vllm_tok_s']:.0f} | {r['hf_tok_s']:.0f} | {r['speedup']:.2f}x "
              f"| {r['identical_rate']:.1%} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
