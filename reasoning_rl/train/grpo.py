"""GRPO with TRL's GRPOTrainer, continuing the SFT LoRA adapter, with this project's CPU speed knobs."""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Any

import torch

from reasoning_rl.config import GrpoConfig
from reasoning_rl.model import attention, sampling
from reasoning_rl.model.loading import load_trainable_policy, pick_dtype, select_backend
from reasoning_rl.task.rewards import get_reward_funcs
from reasoning_rl.train import shared_prefix
from reasoning_rl.train.callbacks import HistoryCallback
from reasoning_rl.train.checkpoints import checkpointing_args, train_resuming
from reasoning_rl.train.lora import merged_copy

log = logging.getLogger(__name__)

def train_grpo(
    cfg: GrpoConfig,
    model_name: str,
    dtype: str,
    seed: int,
    train_rows: list[dict],
    sft_adapter: Path,
    output_dir: Path,
    backend: str = "plain",
) -> tuple[Any, HistoryCallback]:
    """GRPO with TRL, continuing the SFT LoRA adapter (trainable), rewards picked by name.

    `backend` is `base.backend` (auto, plain or unsloth; see `modeling.resolve_backend`). Under
    `accelerate launch` every process runs this function; TRL shards prompts and all-reduces the gradients.
    """
    from datasets import Dataset
    from transformers import set_seed
    from trl import GRPOConfig

    set_seed(seed)  # before the model loads: LoRA init and sampling repeat for a resumed or reference run
    backend = select_backend(backend)
    on_gpu = torch.cuda.is_available()
    if cfg.use_vllm and not on_gpu:
        raise ValueError("grpo.use_vllm is true but CUDA is not available: vLLM generation needs a GPU")
    if cfg.use_vllm and backend == "unsloth" and cfg.vllm_mode != "colocate":
        raise ValueError(
            "base.backend unsloth runs vLLM inside the training process (grpo.vllm_mode: colocate); "
            "for `trl vllm-serve` (grpo.vllm_mode: server) use base.backend: plain"
        )
    loaded = load_trainable_policy(
        model_name,
        dtype,
        sft_adapter,
        backend=backend,
        max_seq_length=cfg.max_prompt_length + cfg.max_completion_length,
        gradient_checkpointing=cfg.gradient_checkpointing,
        fast_inference=cfg.use_vllm,
        gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        seed=seed,
    )
    model, tokenizer = loaded.model, loaded.tokenizer
    tokenizer.padding_side = "left"  # decoder-only generation pads on the left
    if cfg.training_attention is not None and not on_gpu and backend == "plain":
        if cfg.training_attention == attention.NAME:
            attention.register()
        model.get_base_model().set_attn_implementation(cfg.training_attention)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in train_rows])
    args = GRPOConfig(
        output_dir=str(output_dir),
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=min(5, cfg.max_steps // 10),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        steps_per_generation=cfg.steps_per_generation,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        epsilon=cfg.epsilon,
        epsilon_high=cfg.epsilon_high if cfg.epsilon_high is not None else cfg.epsilon,
        scale_rewards="group" if cfg.scale_rewards else "none",
        reward_weights=list(cfg.reward_weights) if cfg.reward_weights else None,
        bf16=pick_dtype(dtype) == torch.bfloat16,
        use_cpu=not on_gpu,
        # TRL's default is True (memory for compute); a 135M model fits easily, so keep the speed.
        gradient_checkpointing=cfg.gradient_checkpointing and backend == "plain",  # unsloth: its own, above
        use_vllm=cfg.use_vllm,
        vllm_mode=cfg.vllm_mode,
        vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        logging_steps=cfg.logging_steps,
        log_completions=False,  # we log a sample to MLflow ourselves (HistoryCallback)
        **checkpointing_args(cfg.save_steps),
        report_to=[],
        seed=seed,
        data_seed=seed,
        disable_tqdm=False,
    )
    trainer = grpo_trainer_class()(
        model=model,
        reward_funcs=get_reward_funcs(cfg.reward_funcs),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    if not on_gpu:  # CPU knobs (measured on CPU only; on a GPU, SDPA/flash kernels and threads are not the issue)
        trainer.generation_attention, trainer.generation_threads = cfg.generation_attention, cfg.generation_threads
        trainer.merged_sampling = cfg.merged_sampling
        trainer.inverse_cdf_sampling = cfg.inverse_cdf_sampling
    if backend == "plain":  # Unsloth computes its own training log-probs (and its own prefix grouping)
        trainer.shared_prefix = cfg.shared_prefix
        trainer.autocast_lora = cfg.autocast_lora and args.bf16  # only autocast makes bf16 LoRA matmuls valid
    history = HistoryCallback(trainer)
    trainer.add_callback(history)
    train_resuming(trainer, output_dir)
    return trainer, history


def grpo_trainer_class() -> type:
    """TRL's GRPOTrainer with this project's CPU speed knobs (each off unless train_grpo sets it from GrpoConfig).

    Sampling: its own attention kernel and thread count, a merged copy of the LoRA policy, inverse-CDF token
    draws, each group's prompt prefilled once. Training: the shared-prefix forward and no fp32 upcast of LoRA
    inputs under autocast. docs/scaling.md has what each one saves; benchmarks/bench_grpo_cpu.py measures them.
    """
    from trl import GRPOTrainer

    class GrpoTrainer(GRPOTrainer):
        generation_attention: str | None = None
        generation_threads: int | None = None
        merged_sampling: bool = False
        inverse_cdf_sampling: bool = False
        shared_prefix: bool = False
        autocast_lora: bool = False
        _sampler: Any = None

        def compute_loss(self, model, inputs, *args, **kwargs):
            """TRL's loss; with autocast_lora, PEFT does not upcast the LoRA inputs to fp32 (autocast runs bf16)."""
            if not self.autocast_lora:
                return super().compute_loss(model, inputs, *args, **kwargs)
            from peft.helpers import disable_input_dtype_casting

            with disable_input_dtype_casting(model):
                return super().compute_loss(model, inputs, *args, **kwargs)

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                               batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                               **multimodal):
            """TRL's per-token log-probs (and entropies), each group's prompt forwarded once (shared_prefix).

            Single process only: under DDP or DeepSpeed the wrapped model's own forward runs (TRL's path).
            """
            wrapped = self.accelerator.unwrap_model(model) is not model  # DDP/DeepSpeed: keep their forward
            if (not self.shared_prefix or wrapped or compute_aux_loss
                    or any(v is not None for v in multimodal.values())):
                return super()._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                    compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **multimodal)
            from trl.trainer.utils import entropy_from_logits, selective_log_softmax

            batch_size = batch_size or input_ids.size(0)  # TRL's memory chunking, kept
            all_logps, all_entropies = [], []
            for start in range(0, input_ids.size(0), batch_size):
                ids, mask = input_ids[start:start + batch_size], attention_mask[start:start + batch_size]
                with self.accelerator.autocast():  # what accelerate wraps the model's forward in (bf16=True)
                    logits = shared_prefix.completion_logits(model, ids, mask, logits_to_keep, self.temperature)
                if logits is None:  # no prompt repeats in this chunk: the full-row forward, as TRL does it
                    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=logits_to_keep + 1,
                                   use_cache=False).logits[:, :-1, :] / self.temperature
                # from here on, TRL's own steps
                all_logps.append(selective_log_softmax(logits, ids[:, -logits_to_keep:]))
                if compute_entropy:
                    if self._entropy_bonus_enabled:
                        all_entropies.append(entropy_from_logits(logits))
                    else:
                        with torch.no_grad():
                            all_entropies.append(entropy_from_logits(logits))
            entropies = torch.cat(all_entropies, dim=0) if compute_entropy else None
            return torch.cat(all_logps, dim=0), entropies, None

        def _generate_single_turn(self, *args, **kwargs):
            policy = self.accelerator.unwrap_model(self.model)
            net = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
            training_attention, training_threads = net.config._attn_implementation, torch.get_num_threads()
            swap = self.merged_sampling and hasattr(policy, "get_base_model")
            if swap:  # sample from a plain copy with the current LoRA merged in (no adapter ops per decode step)
                wrapped, self._sampler = self.model_wrapped, merged_copy(policy, self._sampler)
                net = self.model_wrapped = self._sampler
                if self.shared_prefix:  # prefill each group's prompt once (TRL calls `generate` on the sampler)
                    net.generate = functools.partial(shared_prefix.prefilled_generate, net)
            if self.generation_attention is not None:
                if self.generation_attention == attention.NAME:
                    attention.register()
                net.set_attn_implementation(self.generation_attention)
            if self.generation_threads is not None:
                torch.set_num_threads(self.generation_threads)
            draws = sampling.inverse_cdf_multinomial() if self.inverse_cdf_sampling else contextlib.nullcontext()
            try:
                with draws:
                    return super()._generate_single_turn(*args, **kwargs)
            finally:
                if swap:
                    self.model_wrapped = wrapped
                if self.generation_attention is not None:
                    net.set_attn_implementation(training_attention)
                if self.generation_threads is not None:
                    torch.set_num_threads(training_threads)

    return GrpoTrainer
