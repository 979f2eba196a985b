"""SFT then GRPO on one CUDA GPU with the plain backend: seconds per step and peak GPU memory.

The smoke profile's SFT and GRPO (profiles/smoke.yaml: SmolLM2-135M), through the stages' own `train_sft` and
`train_grpo`, without the stages' MLflow and DVC bookkeeping. Sampling uses transformers' `generate`
(base.engine: transformers): vLLM's CUDA wheel is far larger than what can be carried to a lent machine. Two GRPO
settings run: the smoke profile's (48 new tokens) and params.yaml's recipe on the same model (160 new tokens,
4 prompts x 4 completions per step), each for `--grpo-steps` steps; the first step (CUDA warm-up) is left out of
seconds per step.

    python -m benchmarks.gpu_grpo_check --train data/prepared/train.jsonl --out benchmarks/results/gpu_grpo_check.json

It needs torch with CUDA, transformers, peft, accelerate, trl 1.13, datasets, gguf and math-verify; without a GPU it
stops at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import tempfile
import time
from pathlib import Path

from benchmarks import RESULTS
from reasoning_rl import paths
from reasoning_rl.config import Params, load_params


def peak_gib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30


def step_seconds(history: list[dict]) -> list[float]:
    """TRL's per-step wall time (`step_time`), one value per logged optimizer step."""
    return [round(row["step_time"], 3) for row in history if "step_time" in row]


def run_grpo(name: str, params: Params, rows: list[dict], sft_adapter: Path, work: Path, steps: int) -> dict:
    import torch

    from reasoning_rl.train.grpo import train_grpo

    cfg = dataclasses.replace(params.grpo, max_steps=steps, save_steps=steps, logging_steps=1)
    prompts = rows[: cfg.num_prompts] if cfg.num_prompts else rows
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer, history = train_grpo(cfg, params.base.model, params.base.dtype, params.base.seed, prompts, sft_adapter,
                                  work / f"grpo-{name}", backend="plain", generation_engine="transformers")
    wall = time.perf_counter() - start
    times = step_seconds(history.history)
    warm = times[1:] or times
    rewards = [row["reward"] for row in history.history if "reward" in row]
    del trainer
    return {
        "setting": name, "steps": len(times), "wall_seconds": round(wall, 1),
        "step_seconds": times, "s_per_step_after_first": round(sum(warm) / max(1, len(warm)), 3),
        "completions_per_step": cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps,
        "num_generations": cfg.num_generations, "max_completion_length": cfg.max_completion_length,
        "reward_per_step": rewards, "max_memory_allocated_gib": round(peak_gib(), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", default="profiles/smoke.yaml", help="the profile whose SFT and GRPO run")
    ap.add_argument("--recipe", default=str(paths.params_file()), help="params file whose GRPO recipe runs second")
    ap.add_argument("--train", default=str(paths.TRAIN), help="prepared train rows (the prepare stage's output)")
    ap.add_argument("--grpo-steps", type=int, default=8)
    ap.add_argument("--out", default=str(RESULTS / "gpu_grpo_check.json"))
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_grpo_check: no CUDA device (torch.cuda.is_available() is False)")
    from reasoning_rl.task.gsm8k import read_records
    from reasoning_rl.train.sft import train_sft

    smoke = load_params(Path(args.smoke))
    smoke = dataclasses.replace(smoke, base=dataclasses.replace(smoke.base, backend="plain", engine="transformers"))
    recipe = load_params(Path(args.recipe))
    recipe = dataclasses.replace(recipe, base=smoke.base)  # params.yaml's GRPO recipe on the smoke model
    rows = read_records(Path(args.train))
    random.Random(smoke.base.seed).shuffle(rows)
    result: dict = {
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "python": platform.python_version(),
        "model": smoke.base.model, "backend": "plain", "engine": "transformers", "dtype": smoke.base.dtype,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        trainer, history = train_sft(smoke.sft, smoke.base.model, smoke.base.dtype, smoke.base.seed,
                                     rows[: smoke.sft.num_examples], work / "sft")
        sft_wall = time.perf_counter() - start
        adapter = work / "sft-adapter"
        trainer.model.save_pretrained(adapter, safe_serialization=True)
        del trainer
        result["sft"] = {"steps": smoke.sft.max_steps, "wall_seconds": round(sft_wall, 1),
                         "s_per_step": round(sft_wall / smoke.sft.max_steps, 3),
                         "max_memory_allocated_gib": round(peak_gib(), 3)}
        print(json.dumps(result["sft"]), flush=True)
        result["grpo"] = []
        for name, params in (("smoke", smoke), ("params_recipe", recipe)):
            torch.cuda.empty_cache()
            result["grpo"].append(run_grpo(name, params, rows, adapter, work, args.grpo_steps))
            print(json.dumps(result["grpo"][-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
