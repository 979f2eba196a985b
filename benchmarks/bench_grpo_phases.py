"""Where a GRPO step's time goes on CPU: sampling (with the weight sync), the loss forward and the backward.

Run: python -m benchmarks.bench_grpo_phases [--engine transformers] [--no-shared-prefix] [--no-autocast-lora]
     [--training-attention sdpa] [--no-is-ratio-from-loss-forward] [--steps 3]

Runs `train_grpo` (the stage's function) with the tuned settings from params.yaml (the defaults of the flags
below), except the knobs given here, with a GrpoTrainer subclass that times TRL's `_generate_single_turn`
(sampling one step's completions, and pushing the new weights into vLLM first), `compute_loss` (the policy's
forward and the log-probs), the backward, and the no-grad forward that scores the sampled completions under
the trainer's weights (TRL's `old_per_token_logps`: with vLLM, for the importance-sampling correction; none
with grpo.is_ratio_from_loss_forward, where the ratio comes from the loss forward), each
summed over the step's gradient-accumulation micro-batches. Prints, per optimizer step: those seconds, TRL's
step_time, what remains (rewards, advantages, bookkeeping) and the mean completion length.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

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
    parser.add_argument("--is-ratio-from-loss-forward", action=argparse.BooleanOptionalAction,
                        default=params.grpo.is_ratio_from_loss_forward,
                        help="vLLM: TRL's importance ratio from the loss forward (grpo.is_ratio_from_loss_forward)")
    parser.add_argument("--adapter", default=str(paths.adapter_dir("sft")))
    args = parser.parse_args(argv)

    cfg = replace(params.grpo, max_steps=args.steps, max_completion_length=args.max_completion_length,
                  warmup_steps=0, logging_steps=1, save_steps=10_000, shared_prefix=args.shared_prefix,
                  training_attention=args.training_attention, autocast_lora=args.autocast_lora,
                  is_ratio_from_loss_forward=args.is_ratio_from_loss_forward)
    # seconds per phase and optimizer step: a step runs gradient_accumulation_steps forwards and backwards
    times: dict[str, dict[int, float]] = {"sampling": {}, "old log-probs": {}, "loss forward": {}, "backward": {}}

    def timed(key: str, step: int, call):
        start = time.perf_counter()
        try:
            return call()
        finally:
            times[key][step] = times[key].get(step, 0.0) + time.perf_counter() - start

    class Timed(GrpoTrainer):
        def _generate_single_turn(self, *a, **k):
            return timed("sampling", self.state.global_step,
                         lambda: super(Timed, self)._generate_single_turn(*a, **k))

        def _get_per_token_logps_and_entropies(self, *a, **k):
            call = lambda: super(Timed, self)._get_per_token_logps_and_entropies(*a, **k)  # noqa: E731
            return call() if torch.is_grad_enabled() else timed("old log-probs", self.state.global_step, call)

        def compute_loss(self, *a, **k):
            return timed("loss forward", self.state.global_step, lambda: super(Timed, self).compute_loss(*a, **k))

        def training_step(self, *a, **k):
            backward, step = self.accelerator.backward, self.state.global_step
            self.accelerator.backward = lambda loss, **kw: timed("backward", step, lambda: backward(loss, **kw))
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
          f"shared prefix: {args.shared_prefix}, autocast LoRA: {args.autocast_lora}, "
          f"importance ratio from the loss forward: {args.is_ratio_from_loss_forward}")
    print("| step | sampling s | old log-probs s | loss forward s | backward s | step s | rest s | "
          "mean completion tokens |\n|---|---|---|---|---|---|---|---|")
    for i, h in enumerate(steps, 1):
        gen, old, fwd, bwd = (times[key].get(i - 1, 0.0) for key in times)
        print(f"| {i} | {gen:.1f} | {old:.1f} | {fwd:.1f} | {bwd:.1f} | {h['step_time']:.1f} | "
              f"{h['step_time'] - gen - old - fwd - bwd:.1f} | {h['completions/mean_length']:.0f} |")


if __name__ == "__main__":
    main()
