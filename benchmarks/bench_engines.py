"""The generation engines side by side, in one run: vLLM's CPU build against transformers' generate, for the
evaluate stage's workload and for GRPO's sampling.

Run: python -m benchmarks.bench_engines                       # all of it (about 75 min on 2 idle cores)
     python -m benchmarks.bench_engines --grpo-steps 0        # evaluation only
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
import logging
import os
import platform
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
