"""Where a GRPO step's time goes on CPU: sampling (with the weight sync), the loss forward and the backward.

Run: python -m benchmarks.bench_grpo_phases [--engine transformers] [--no-shared-prefix] [--no-autocast-lora]
     [--training-attention sdpa] [--steps 3]

Runs `train_grpo` (the stage's function) with the tuned settings from params.yaml (the defaults of the flags
below), except the knobs given here, with a GrpoTrainer subclass that times TRL's `_generate_single_turn`
(sampling one step's completions, and pushing the new weights into vLLM first), `compute_loss` (the policy's
forward and the log-probs) and the backward. Prints, per step: those seconds, TRL's step_time, what remains
(rewards, advantages, bookkeeping) and the mean completion length.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from reasoning_rl import paths
from reasoning_rl.config import load_params
from reasoning_rl.task.gsm8k import read_records
from reasoning_rl.train.grpo import GrpoTrainer, train_grpo


def main(argv: list[str] | None = None) -> None:
    params = load_params(Path("params.yaml"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-completion-length", type=int, default=160)
    parser.add_argument("--engine", default=params.base.engine, help="generation engine (base.engine)")
    parser.add_argument("--shared-prefix", action=argparse.BooleanOptionalAction,
                        default=params.grpo.shared_prefix,
                        help="forward each group's prompt once in training (grpo.shared_prefix)")
    parser.add_argument("--training-attention", default=params.grpo.training_attention)
    parser.add_argument("--autocast-lora", action=argparse.BooleanOptionalAction, default=params.grpo.autocast_lora,
                        help="no fp32 upcast of LoRA inputs under autocast (grpo.autocast_lora)")
    parser.add_argument("--adapter", default=str(paths.adapter_dir("sft")))
    args = parser.parse_args(argv)

    cfg = replace(params.grpo, max_steps=args.steps, max_completion_length=args.max_completion_length,
                  per_device_train_batch_size=16, num_generations=4, learning_rate=3e-5, temperature=0.9,
                  warmup_steps=0, logging_steps=1, save_steps=10_000, shared_prefix=args.shared_prefix,
                  training_attention=args.training_attention, autocast_lora=args.autocast_lora)
    times: dict[str, list[float]] = {"sampling": [], "loss forward": [], "backward": []}

    def timed(key: str, call):
        start = time.perf_counter()
        try:
            return call()
        finally:
            times[key].append(time.perf_counter() - start)

    class Timed(GrpoTrainer):
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

    rows = read_records(paths.TRAIN)[:64]
    with tempfile.TemporaryDirectory() as tmp:
        _, history = train_grpo(cfg, params.base.model, params.base.dtype, params.base.seed, rows,
                                Path(args.adapter), Path(tmp), backend="plain", generation_engine=args.engine,
                                trainer_class=Timed)
    steps = [h for h in history.history if "step_time" in h]
    print(f"engine: {args.engine}; training attention {args.training_attention or 'sdpa'}; "
          f"shared prefix: {args.shared_prefix}, autocast LoRA: {args.autocast_lora}")
    print("| step | sampling s | loss forward s | backward s | step s | rest s | mean completion tokens |\n"
          "|---|---|---|---|---|---|---|")
    for i, (gen, fwd, bwd, h) in enumerate(zip(*times.values(), steps, strict=False), 1):
        print(f"| {i} | {gen:.1f} | {fwd:.1f} | {bwd:.1f} | {h['step_time']:.1f} | "
              f"{h['step_time'] - gen - fwd - bwd:.1f} | {h['completions/mean_length']:.0f} |")


if __name__ == "__main__":
    main()
