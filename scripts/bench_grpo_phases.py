"""Where a GRPO step's time goes on CPU: TRL's generation call vs the rest of the step, per step.

Run: python -m scripts.bench_grpo_phases [--generation-threads 1] [--generation-attention eager] [--steps 3]

Runs `training.train_grpo` (the stage's function) with the tuned settings from params.yaml except the two
sampling knobs given here, and times TRL's `_generate_single_turn` (the sampling of one step's completions).
Prints, per step: sampling seconds, TRL's step_time, and mean completion length.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import reasoning_rl.training as training
from reasoning_rl import paths
from reasoning_rl.data import read_records
from stages.common import load_params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-completion-length", type=int, default=160)
    parser.add_argument("--generation-threads", type=int, default=None, help="default: all threads")
    parser.add_argument("--generation-attention", default="grouped_eager")
    parser.add_argument("--merged-sampling", action=argparse.BooleanOptionalAction, default=False,
                        help="sample from a merged copy of the LoRA policy (grpo.merged_sampling)")
    parser.add_argument("--adapter", default=str(paths.adapter_dir("sft")))
    args = parser.parse_args(argv)

    params = load_params(Path("params.yaml"))
    cfg = replace(params.grpo, max_steps=args.steps, max_completion_length=args.max_completion_length,
                  per_device_train_batch_size=16, num_generations=4, learning_rate=3e-5, temperature=0.9,
                  logging_steps=1, save_steps=10_000, generation_threads=args.generation_threads,
                  generation_attention=args.generation_attention, merged_sampling=args.merged_sampling)
    sampling: list[float] = []
    make_trainer = training.grpo_trainer_class

    def timed_trainer_class():
        class Timed(make_trainer()):
            def _generate_single_turn(self, *a, **k):
                start = time.perf_counter()
                try:
                    return super()._generate_single_turn(*a, **k)
                finally:
                    sampling.append(time.perf_counter() - start)
        return Timed

    training.grpo_trainer_class = timed_trainer_class
    rows = read_records(paths.TRAIN)[:64]
    with tempfile.TemporaryDirectory() as tmp:
        _, history = training.train_grpo(cfg, params.base.model, params.base.dtype, params.base.seed, rows,
                                         Path(args.adapter), Path(tmp), backend="plain")
    steps = [h for h in history.history if "step_time" in h]
    print(f"threads while sampling: {args.generation_threads or 'all'}, attention: {args.generation_attention}, "
          f"merged sampling: {args.merged_sampling}")
    print("| step | sampling s | step s | rest s | mean completion tokens |\n|---|---|---|---|---|")
    for i, (gen, h) in enumerate(zip(sampling, steps, strict=False), 1):
        print(f"| {i} | {gen:.1f} | {h['step_time']:.1f} | {h['step_time'] - gen:.1f} | "
              f"{h['completions/mean_length']:.0f} |")


if __name__ == "__main__":
    main()
