"""TRL's colocated vLLM engine (`use_vllm`, `vllm_mode="colocate"`) on a CPU, with the policy served as a LoRA.

TRL 1.13 builds the engine in `trl.generation.vllm_generation.VLLMGeneration` with arguments of its own and no
way to add any, and after each optimizer step merges the LoRA into the weights and pushes them with
`model.load_weights`. On the CPU build three things are replaced while TRL builds and drives its engine:
- the `LLM` constructor TRL calls (`trl.generation.vllm_generation.LLM`, for the call only): eager mode (seconds
  to start, not two minutes of compilation), LoRA serving (model/served_lora.py) and the run's seed (TRL passes
  the process index; TRL PR #7040 proposed passing `args.seed`);
- the generation's `sync_weights`: the policy's current adapter is served unmerged. `load_weights` cannot be
  used on the CPU build (its linear layers are repacked and their parameters emptied), and in bf16 the merge
  rounds away most of a small update (docs/engine.md). TRL issue #5975 and PR #6007 (open) add such an
  adapter-only sync; vLLM's RFC #48297 tracks adapter updates for RL;
- `_generate_single_turn` (with vLLM on any device) runs inside `engine.engine_call`: a dead or hung engine stops
  the stage with a message naming it (no upstream issue found).
tests/test_private_api.py pins the TRL symbols this relies on.
"""

from __future__ import annotations

import contextlib
import functools

import torch

from reasoning_rl.model import engine, served_lora

# vLLM's KV cache while sampling GRPO groups on a CPU: 16 sequences of <= 416 tokens take < 0.2 GiB even for a
# 1.5B model; evaluation's 4 GiB here made Qwen2.5-0.5B's training step run out of 24 GiB (OOM at step 8).
GRPO_KV_CACHE_GIB = 1


class VllmCpuColocate:
    """Mixin for trl.GRPOTrainer: with `use_vllm` and no CUDA, TRL's colocated engine set up for the CPU build."""

    def __init__(self, *args, **kwargs):
        if not (kwargs["args"].use_vllm and not torch.cuda.is_available()):
            super().__init__(*args, **kwargs)
            return
        model = kwargs["model"]
        rank = model.peft_config[model.active_adapter].r
        with _colocated_vllm_on_cpu(kwargs["args"].seed, rank):
            super().__init__(*args, **kwargs)
        generation = self.vllm_generation
        generation.llm = served_lora.ServedLLM(generation.llm, rank)
        generation.sync_weights = functools.partial(_serve_policy_cpu, generation)

    def _generate_single_turn(self, *args, **kwargs):
        """TRL's sampling step; with vLLM, a dead or hung engine stops the stage with a message naming it."""
        if not self.use_vllm:
            return super()._generate_single_turn(*args, **kwargs)
        with engine.engine_call("sampling GRPO completions"):
            return super()._generate_single_turn(*args, **kwargs)


@contextlib.contextmanager
def _colocated_vllm_on_cpu(seed: int, lora_rank: int):
    """While TRL builds its colocated engine: the CPU build's settings, eager mode, LoRA serving for adapters of
    rank `lora_rank`, and our seed."""
    from trl.generation import vllm_generation

    engine.configure_cpu_env(kv_cache_gib=GRPO_KV_CACHE_GIB)
    original = vllm_generation.LLM

    def cpu_llm(*args, **kwargs):
        kwargs["seed"] = seed
        with engine.engine_call("starting for GRPO sampling"):
            return original(*args, **kwargs, **engine.cpu_engine_kwargs(), **served_lora.engine_kwargs(lora_rank))

    vllm_generation.LLM = cpu_llm
    try:
        yield
    finally:
        vllm_generation.LLM = original


def _serve_policy_cpu(generation) -> None:
    """TRL's colocated weight sync, for the CPU build: the engine serves the policy's current LoRA, unmerged
    (written to a scratch folder, a few MB), so it samples the policy itself."""
    policy = generation.accelerator.unwrap_model(generation.model)
    with engine.engine_call("serving the policy's new LoRA"):
        generation.llm.serve_policy(policy)
