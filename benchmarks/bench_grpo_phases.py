"""Where a GRPO step's time goes on CPU: sampling (with the weight sync), the loss forward and the backward.

Run: python -m benchmarks.bench_grpo_phases [--engine transformers] [--no-shared-prefix] [--no-autocast-lora]
     [--training-attention sdpa] [--no-is-ratio-from-loss-forward] [--steps 3]
     [--model embedded:SmolLM2-135M-Instruct --adapter runs/ablation/sft-eabee625bc/adapter --micro-batch 16]

Runs `train_grpo` (the stage's function) with the tuned settings from params.yaml (the defaults of the flags
below), except the knobs given here, with a GrpoTrainer subclass that times TRL's `_generate_single_turn`
(sampling one step's completions, and pushing the new weights into vLLM first, that push also timed alone),
`compute_loss` (the policy's forward and the log-probs), the backward, and the no-grad forward that scores the
sampled completions under the trainer's weights (TRL's `old_per_token_logps`: with vLLM, for the
importance-sampling correction; none with grpo.is_ratio_from_loss_forward, where the ratio comes from the loss
forward), each summed over the step's gradient-accumulation micro-batches. Prints, per optimizer step: those
seconds, TRL's step_time, what remains (rewards, advantages, bookkeeping) and the mean completion length.
`--profile-step N` adds torch.profiler's op table for step N.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from reasoning_rl import memory, paths
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
    parser.add_argument("--model", default=params.base.model, help="base model (base.model)")
    parser.add_argument("--adapter", default=str(paths.adapter_dir("sft")), help="SFT adapter of --model")
    parser.add_argument("--micro-batch", type=int, default=params.grpo.per_device_train_batch_size,
                        help="completions per micro-batch (grpo.per_device_train_batch_size); gradient "
                             "accumulation keeps the step's completions as in params.yaml")
    parser.add_argument("--profile-step", type=int, default=0,
                        help="also profile this optimizer step (1-based) with torch.profiler and print its ops by "
                             "self CPU time (sampling, forward and backward together; 0 = off)")
    parser.add_argument("--retain-freed-memory", action=argparse.BooleanOptionalAction, default=True,
                        help="glibc keeps freed memory for reuse, as the stages do (reasoning_rl/memory.py)")
    args = parser.parse_args(argv)
    if args.retain_freed_memory:
        memory.retain_freed_memory()

    per_step = params.grpo.per_device_train_batch_size * params.grpo.gradient_accumulation_steps
    if per_step % args.micro_batch:
        parser.error(f"--micro-batch {args.micro_batch} must divide the {per_step} completions per step")
    cfg = replace(params.grpo, max_steps=args.steps, per_device_train_batch_size=args.micro_batch,
                  gradient_accumulation_steps=per_step // args.micro_batch,
                  max_completion_length=args.max_completion_length,
                  warmup_steps=0, logging_steps=1, save_steps=10_000, shared_prefix=args.shared_prefix,
                  training_attention=args.training_attention, autocast_lora=args.autocast_lora,
                  is_ratio_from_loss_forward=args.is_ratio_from_loss_forward)
    # seconds per phase and optimizer step: a step runs gradient_accumulation_steps forwards and backwards
    times: dict[str, dict[int, float]] = {"sampling": {}, "old log-probs": {}, "loss forward": {}, "backward": {},
                                          "weight sync": {}, "page faults": {}}

    def timed(key: str, step: int, call):
        start = time.perf_counter()
        try:
            return call()
        finally:
            times[key][step] = times[key].get(step, 0.0) + time.perf_counter() - start

    profiled: list[int] = []

    class Timed(GrpoTrainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            generation = getattr(self, "vllm_generation", None)
            if generation is not None:  # the weight push, part of sampling: timed on its own as well
                sync = generation.sync_weights
                generation.sync_weights = lambda: timed("weight sync", self.state.global_step, sync)

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
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            profiling = step + 1 == args.profile_step
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                      record_shapes=True) if profiling \
                else contextlib.nullcontext()
            try:
                with profiler:
                    return super().training_step(*a, **k)
            finally:
                times["page faults"][step] = (times["page faults"].get(step, 0)
                                              + resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
                self.accelerator.backward = backward
                if profiling:
                    print(f"# torch.profiler, step {step + 1}, micro-batch {len(profiled) + 1} (profiling slows it)")
                    print(profiler.key_averages(group_by_input_shape=True).table(
                        sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=40,
                        max_shapes_column_width=90))
                    profiled.append(step)

    rows = read_records(paths.TRAIN)[:64]
    with tempfile.TemporaryDirectory() as tmp:
        _, history = train_grpo(cfg, args.model, params.base.dtype, params.base.seed, rows,
                                Path(args.adapter), Path(tmp), backend="plain", generation_engine=args.engine,
                                trainer_class=Timed)
    steps = [h for h in history.history if "step_time" in h]
    print(f"model: {args.model}, {args.micro_batch} completions per micro-batch; engine: {args.engine}; "
          f"training attention {args.training_attention or 'sdpa'}; "
          f"shared prefix: {args.shared_prefix}, autocast LoRA: {args.autocast_lora}, "
          f"importance ratio from the loss forward: {args.is_ratio_from_loss_forward}")
    print(f"glibc keeps freed memory: {args.retain_freed_memory}; peak resident memory "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")
    print("| step | sampling s | of which weight sync s | old log-probs s | loss forward s | backward s | step s | "
          "rest s | page faults | mean completion tokens |\n|---|---|---|---|---|---|---|---|---|---|")
    for i, h in enumerate(steps, 1):
        gen, old, fwd, bwd, sync, faults = (times[key].get(i - 1, 0.0) for key in times)
        print(f"| {i} | {gen:.1f} | {sync:.2f} | {old:.1f} | {fwd:.1f} | {bwd:.1f} | {h['step_time']:.1f} | "
              f"{h['step_time'] - gen - old - fwd - bwd:.1f} | {faults:,.0f} | {h['completions/mean_length']:.0f} |")


if __name__ == "__main__":
    main()
