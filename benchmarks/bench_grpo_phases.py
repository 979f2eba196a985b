"""Where a GRPO step's time goes on CPU: sampling, the loss forward and the backward, per step.

Run: python -m benchmarks.bench_grpo_phases [--no-merged-sampling] [--no-shared-prefix] [--no-inverse-cdf-sampling]
     [--no-autocast-lora]
     [--generation-threads 1] [--generation-attention eager] [--training-attention sdpa] [--steps 3]

Runs `training.train_grpo` (the stage's function) with the tuned settings from params.yaml (the defaults of
the flags below), except the knobs given here, and times TRL's `_generate_single_turn` (sampling one step's
completions), `compute_loss` (the policy's forward and the log-probs) and the backward. Prints, per step:
those seconds, TRL's step_time, what remains (rewards, advantages, bookkeeping) and the mean completion
length.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import reasoning_rl.train.grpo as training
from reasoning_rl import paths
from reasoning_rl.config import load_params
from reasoning_rl.task.gsm8k import read_records


def main(argv: list[str] | None = None) -> None:
    params = load_params(Path("params.yaml"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-completion-length", type=int, default=160)
    parser.add_argument("--generation-threads", type=int, default=None, help="default: all threads")
    parser.add_argument("--generation-attention", default=params.grpo.generation_attention)
    parser.add_argument("--merged-sampling", action=argparse.BooleanOptionalAction,
                        default=params.grpo.merged_sampling,
                        help="sample from a merged copy of the LoRA policy (grpo.merged_sampling)")
    parser.add_argument("--shared-prefix", action=argparse.BooleanOptionalAction,
                        default=params.grpo.shared_prefix,
                        help="forward each group's prompt once in training (grpo.shared_prefix)")
    parser.add_argument("--inverse-cdf-sampling", action=argparse.BooleanOptionalAction,
                        default=params.grpo.inverse_cdf_sampling,
                        help="inverse-CDF token draws (grpo.inverse_cdf_sampling)")
    parser.add_argument("--training-attention", default=params.grpo.training_attention)
    parser.add_argument("--autocast-lora", action=argparse.BooleanOptionalAction, default=params.grpo.autocast_lora,
                        help="no fp32 upcast of LoRA inputs under autocast (grpo.autocast_lora)")
    parser.add_argument("--adapter", default=str(paths.adapter_dir("sft")))
    args = parser.parse_args(argv)

    cfg = replace(params.grpo, max_steps=args.steps, max_completion_length=args.max_completion_length,
                  per_device_train_batch_size=16, num_generations=4, learning_rate=3e-5, temperature=0.9,
                  logging_steps=1, save_steps=10_000, generation_threads=args.generation_threads,
                  generation_attention=args.generation_attention, merged_sampling=args.merged_sampling,
                  shared_prefix=args.shared_prefix, inverse_cdf_sampling=args.inverse_cdf_sampling,
                  training_attention=args.training_attention, autocast_lora=args.autocast_lora)
    times: dict[str, list[float]] = {"sampling": [], "loss forward": [], "backward": []}
    make_trainer = training.grpo_trainer_class

    def timed(key: str, call):
        start = time.perf_counter()
        try:
            return call()
        finally:
            times[key].append(time.perf_counter() - start)

    def timed_trainer_class():
        class Timed(make_trainer()):
            def _generate_single_turn(self, *a, **k):
                return timed("sampling", lambda: super(Timed, self)._generate_single_turn(*a, **k))

            def compute_loss(self, *a, **k):
                return timed("loss forward", lambda: super(Timed, self).compute_loss(*a, **k))

            def training_step(self, *a, **k):
                backward = self.accelerator.backward
                self.accelerator.backward = lambda loss, **kw: timed("backward", lambda: backward(loss, **kw))
                try:
                    return super().training_step(*a, **k)
                finally:
                    self.accelerator.backward = backward
        return Timed

    training.grpo_trainer_class = timed_trainer_class
    rows = read_records(paths.TRAIN)[:64]
    with tempfile.TemporaryDirectory() as tmp:
        _, history = training.train_grpo(cfg, params.base.model, params.base.dtype, params.base.seed, rows,
                                         Path(args.adapter), Path(tmp), backend="plain")
    steps = [h for h in history.history if "step_time" in h]
    print(f"threads while sampling: {args.generation_threads or 'all'}, attention: sampling "
          f"{args.generation_attention}, training {args.training_attention or 'sdpa'}; merged sampling: "
          f"{args.merged_sampling}, inverse-CDF draws: {args.inverse_cdf_sampling}, "
          f"shared prefix: {args.shared_prefix}, autocast LoRA: {args.autocast_lora}")
    print("| step | sampling s | loss forward s | backward s | step s | rest s | mean completion tokens |\n"
          "|---|---|---|---|---|---|---|")
    for i, (gen, fwd, bwd, h) in enumerate(zip(*times.values(), steps, strict=False), 1):
        print(f"| {i} | {gen:.1f} | {fwd:.1f} | {bwd:.1f} | {h['step_time']:.1f} | "
              f"{h['step_time'] - gen - fwd - bwd:.1f} | {h['completions/mean_length']:.0f} |")


if __name__ == "__main__":
    main()
