"""GRPO with TRL's GRPOTrainer, continuing the SFT LoRA adapter; sampling through the generation engine.

With the vLLM engine (base.engine), TRL's own vLLM integration samples (`use_vllm`, `vllm_mode="colocate"`): the
engine lives in the training process and gets the policy after every optimizer step. `GrpoTrainer` is TRL's
trainer with this project's CPU knobs, one mixin per private TRL method it replaces, each in a module named for
what it works around: train/vllm_cpu_colocate.py (the colocated engine on a CPU, the policy served as a LoRA),
train/is_ratio_from_loss.py (the importance ratio without TRL's extra forward), train/shared_prefix.py (each
group's prompt forwarded once). tests/test_private_api.py pins the private TRL and vLLM symbols they rely on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer

from reasoning_rl.config import GRPO_RECIPE_FIELDS, GrpoConfig
from reasoning_rl.model import attention, engine
from reasoning_rl.model.loading import load_trainable_policy, pick_dtype, select_backend
from reasoning_rl.task.rewards import get_reward_funcs
from reasoning_rl.train.callbacks import HistoryCallback, TrimFreedMemoryCallback
from reasoning_rl.train.checkpoints import checkpointing_args, train_resuming
from reasoning_rl.train.is_ratio_from_loss import IsRatioFromLossForward
from reasoning_rl.train.shared_prefix import SharedPrefixForward
from reasoning_rl.train.vllm_cpu_colocate import VllmCpuColocate

log = logging.getLogger(__name__)


def trl_args(cfg: GrpoConfig, output_dir: Path, *, seed: int, bf16: bool, use_vllm: bool,
             gradient_checkpointing: bool) -> GRPOConfig:
    """trl.GRPOConfig from the recipe fields (TRL's names, unchanged), `grpo.trl`, and what the project sets."""
    recipe = {name: getattr(cfg, name) for name in GRPO_RECIPE_FIELDS}
    recipe["reward_weights"] = list(cfg.reward_weights) if cfg.reward_weights else None
    recipe["gradient_checkpointing"] = gradient_checkpointing
    return GRPOConfig(
        output_dir=str(output_dir),
        **recipe,
        **cfg.trl,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        use_vllm=use_vllm,
        vllm_mode=cfg.vllm_mode,
        vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        # With vLLM sampling the loss is weighted by the trainer/engine probability ratio, formed as the recipe's
        # vllm_importance_sampling_mode says (default token_truncate: per-token ratios capped at 3; docs/engine.md).
        vllm_importance_sampling_correction=True,
        log_completions=False,  # we log a sample to MLflow ourselves (HistoryCallback)
        **checkpointing_args(cfg.save_steps),
        report_to=[],
        seed=seed,
        data_seed=seed,
        disable_tqdm=False,
    )


def train_grpo(cfg: GrpoConfig, model_name: str, dtype: str, seed: int, train_rows: list[dict], sft_adapter: Path,
               output_dir: Path, backend: str = "plain", generation_engine: str = "auto",
               trainer_class: type[GrpoTrainer] | None = None) -> tuple[Any, HistoryCallback]:
    """GRPO with TRL, continuing the SFT LoRA adapter (trainable), rewards picked by name.

    `backend` is `base.backend` (auto, plain or unsloth; see `loading.resolve_backend`) and `generation_engine`
    `base.engine` (auto, vllm or transformers; see `engine.resolve_engine`). Under `accelerate launch` every
    process runs this function; TRL shards prompts and all-reduces the gradients. `trainer_class` is a subclass
    of GrpoTrainer to use instead (benchmarks/bench_grpo_phases.py times the phases of a step with one).
    """
    from datasets import Dataset
    from transformers import set_seed

    set_seed(seed)  # before the model loads: LoRA init and sampling repeat for a resumed or reference run
    backend = select_backend(backend)
    use_vllm = engine.resolve_engine(generation_engine) == engine.VLLM
    on_gpu = torch.cuda.is_available()
    if use_vllm and backend == "unsloth" and cfg.vllm_mode != "colocate":
        raise ValueError(
            "base.backend unsloth runs vLLM inside the training process (grpo.vllm_mode: colocate); "
            "for `trl vllm-serve` (grpo.vllm_mode: server) use base.backend: plain"
        )
    if use_vllm and not on_gpu and cfg.vllm_mode != "colocate":
        raise ValueError("grpo.vllm_mode 'server' needs CUDA (TRL syncs weights over NCCL); use colocate on a CPU")
    bf16 = pick_dtype(dtype) == torch.bfloat16
    # Built before the model loads: TRL's own checks of the recipe and `grpo.trl` fail fast.
    args = trl_args(cfg, output_dir, seed=seed, bf16=bf16, use_vllm=use_vllm,
                    gradient_checkpointing=cfg.gradient_checkpointing and backend == "plain")  # unsloth: its own
    loaded = load_trainable_policy(  # all but the first four arguments are Unsloth's
        model_name, dtype, sft_adapter, backend=backend, gradient_checkpointing=cfg.gradient_checkpointing,
        max_seq_length=cfg.max_prompt_length + cfg.max_completion_length, fast_inference=use_vllm,
        gpu_memory_utilization=cfg.vllm_gpu_memory_utilization, seed=seed)
    model, tokenizer = loaded.model, loaded.tokenizer
    tokenizer.padding_side = "left"  # decoder-only generation pads on the left
    if cfg.training_attention is not None and not on_gpu and backend == "plain":
        if cfg.training_attention == attention.NAME:
            attention.register()
        model.get_base_model().set_attn_implementation(cfg.training_attention)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in train_rows])
    plain = backend == "plain"  # Unsloth computes its own training log-probs (and its own prefix grouping)
    trainer = (trainer_class or GrpoTrainer)(
        model=model,
        reward_funcs=get_reward_funcs(cfg.reward_funcs),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        shared_prefix=plain and cfg.shared_prefix,
        autocast_lora=plain and cfg.autocast_lora and bf16,  # only autocast makes bf16 LoRA matmuls valid
        is_ratio_from_loss_forward=plain and cfg.is_ratio_from_loss_forward,  # Unsloth has its own loss
    )
    history = HistoryCallback(trainer)
    trainer.add_callback(history)
    trainer.add_callback(TrimFreedMemoryCallback())  # kept memory fragments over 100 steps (memory.py)
    train_resuming(trainer, output_dir)
    return trainer, history


class GrpoTrainer(IsRatioFromLossForward, SharedPrefixForward, VllmCpuColocate, GRPOTrainer):
    """TRL's GRPOTrainer with this project's training-side CPU knobs, and vLLM colocated on a CPU.

    shared_prefix: the training forward runs each group's prompt once (same logits and gradients).
    autocast_lora: no fp32 upcast of LoRA inputs that autocast casts straight back to bf16.
    is_ratio_from_loss_forward: with vLLM sampling on-policy, TRL's importance ratio from the loss forward's
    log-probs, not from an extra no-grad forward over the batch.
    docs/scaling.md has what each one saves; benchmarks/bench_grpo_cpu.py measures them.
    """

    def __init__(self, *args, shared_prefix: bool = False, autocast_lora: bool = False,
                 is_ratio_from_loss_forward: bool = False, **kwargs):
        self.shared_prefix = shared_prefix
        self.autocast_lora = autocast_lora
        self.is_ratio_from_loss_forward = is_ratio_from_loss_forward
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, *args, **kwargs):
        """TRL's loss; with autocast_lora, PEFT does not upcast the LoRA inputs to fp32 (autocast runs bf16)."""
        if not self.autocast_lora:
            return super().compute_loss(model, inputs, *args, **kwargs)
        from peft.helpers import disable_input_dtype_casting

        with disable_input_dtype_casting(model):
            return super().compute_loss(model, inputs, *args, **kwargs)
