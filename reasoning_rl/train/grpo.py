"""GRPO with TRL's GRPOTrainer, continuing the SFT LoRA adapter; sampling through the generation engine.

With the vLLM engine (base.engine), TRL's own vLLM integration samples (`use_vllm`, `vllm_mode="colocate"`): the
engine lives in the training process and gets the policy after every optimizer step. On a CPU two of its steps
are replaced: the engine starts in eager mode with LoRA serving on (`_colocated_vllm_on_cpu`), and the sync
serves the policy's current adapter unmerged (`_serve_policy_cpu`) instead of merging it into the bf16 weights,
which rounds most of a GRPO update away (served_lora.py). docs/engine.md has the why of each.

With vLLM sampling TRL weights the loss by the trainer/engine probability ratio, and TRL 1.13 scores every
sampled completion in an extra no-grad forward to form it. When each step trains on completions sampled from
its own weights (on-policy), that forward repeats the loss forward's log-probs; `is_ratio_from_loss_forward`
takes the ratio from the loss forward instead (TRL issue #5412, PR #5413 open upstream).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from pathlib import Path
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import nanmax, nanmin

from reasoning_rl.config import GRPO_RECIPE_FIELDS, GrpoConfig
from reasoning_rl.model import attention, engine, served_lora
from reasoning_rl.model.loading import load_trainable_policy, pick_dtype, select_backend
from reasoning_rl.task.rewards import get_reward_funcs
from reasoning_rl.train import dynamic_sampling, shared_prefix
from reasoning_rl.train.callbacks import HistoryCallback
from reasoning_rl.train.checkpoints import checkpointing_args, train_resuming
from reasoning_rl.train.trim import TrimFreedMemoryCallback

log = logging.getLogger(__name__)

# vLLM's KV cache while sampling GRPO groups on a CPU: 16 sequences of <= 416 tokens take < 0.2 GiB even for a
# 1.5B model; evaluation's 4 GiB here made Qwen2.5-0.5B's training step run out of 24 GiB (OOM at step 8).
GRPO_KV_CACHE_GIB = 1


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


def train_grpo(
    cfg: GrpoConfig,
    model_name: str,
    dtype: str,
    seed: int,
    train_rows: list[dict],
    sft_adapter: Path,
    output_dir: Path,
    backend: str = "plain",
    generation_engine: str = "auto",
    trainer_class: type[GrpoTrainer] | None = None,
) -> tuple[Any, HistoryCallback]:
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
    loaded = load_trainable_policy(
        model_name,
        dtype,
        sft_adapter,
        backend=backend,
        max_seq_length=cfg.max_prompt_length + cfg.max_completion_length,
        gradient_checkpointing=cfg.gradient_checkpointing,
        fast_inference=use_vllm,
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
    plain = backend == "plain"  # Unsloth computes its own training log-probs (and its own prefix grouping)
    trainer = (trainer_class or GrpoTrainer)(
        model=model,
        reward_funcs=get_reward_funcs(cfg.reward_funcs),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        shared_prefix=plain and cfg.shared_prefix,
        autocast_lora=plain and cfg.autocast_lora and bf16,  # only autocast makes bf16 LoRA matmuls valid
        dynamic_sampling_rounds=cfg.dynamic_sampling_rounds,
        is_ratio_from_loss_forward=plain and cfg.is_ratio_from_loss_forward,  # Unsloth has its own loss
    )
    history = HistoryCallback(trainer)
    trainer.add_callback(history)
    trainer.add_callback(TrimFreedMemoryCallback())  # kept memory fragments over 100 steps (train/trim.py)
    train_resuming(trainer, output_dir)
    return trainer, history


class GrpoTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with this project's training-side CPU knobs, and vLLM colocated on a CPU.

    shared_prefix: the training forward runs each group's prompt once (same logits and gradients).
    autocast_lora: no fp32 upcast of LoRA inputs that autocast casts straight back to bf16.
    is_ratio_from_loss_forward: with vLLM sampling on-policy, TRL's importance ratio from the loss forward's
    log-probs, not from an extra no-grad forward over the batch (`_ratio_from_loss_forward`).
    docs/scaling.md has what each one saves; benchmarks/bench_grpo_cpu.py measures them.
    """

    def __init__(self, *args, shared_prefix: bool = False, autocast_lora: bool = False,
                 dynamic_sampling_rounds: int = 0, is_ratio_from_loss_forward: bool = False, **kwargs):
        self.shared_prefix = shared_prefix
        self.autocast_lora = autocast_lora
        self.dynamic_sampling_rounds = dynamic_sampling_rounds
        self.is_ratio_from_loss_forward = is_ratio_from_loss_forward
        cpu_vllm = kwargs["args"].use_vllm and not torch.cuda.is_available()
        model = kwargs["model"]
        rank = model.peft_config[model.active_adapter].r if cpu_vllm else 0
        with _colocated_vllm_on_cpu(kwargs["args"].seed, rank) if cpu_vllm else contextlib.nullcontext():
            super().__init__(*args, **kwargs)
        if cpu_vllm:
            generation = self.vllm_generation
            generation.llm = served_lora.ServedLLM(generation.llm, rank)
            generation.sync_weights = functools.partial(_serve_policy_cpu, generation)

    def _generate_single_turn(self, *args, **kwargs):
        """TRL's sampling step; with vLLM, a dead or hung engine stops the stage with a message naming it."""
        if not self.use_vllm:
            return super()._generate_single_turn(*args, **kwargs)
        with engine.engine_call("sampling GRPO completions"):
            return super()._generate_single_turn(*args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        """TRL's sampling and scoring; with dynamic_sampling_rounds, tied groups are replaced (dynamic_sampling.py).

        TRL's sampling metrics (reward, frac_reward_zero_std, ...) stay those of the step's own batch, comparable
        with a run without refilling; `dynamic_sampling/*` says what the extra rounds did.
        """
        batch = self._trl_generate_and_score(inputs)
        if not self.dynamic_sampling_rounds or not self.model.training:
            return batch
        if self.accelerator.num_processes > 1:
            raise ValueError("grpo.dynamic_sampling_rounds > 0 runs in a single process only")
        metrics = self._metrics["train"]
        step = self.state.global_step
        g = self.num_generations

        def sample_groups(count: int, round_: int) -> dict:
            picks = dynamic_sampling.extra_prompts(len(self.train_dataset), count, self.args.seed,
                                                   step * self.dynamic_sampling_rounds + round_)
            rows = [dict(self.train_dataset[i]) for i in picks for _ in range(g)]
            lengths = {key: len(values) for key, values in metrics.items()}
            more = self._trl_generate_and_score(rows)
            for key, values in metrics.items():  # the extra rounds' sampling metrics are not the step's
                del values[lengths.get(key, 0):]
            return more

        batch, stats = dynamic_sampling.refill(batch, g, self.dynamic_sampling_rounds, sample_groups,
                                               self.processing_class.pad_token_id)
        n_groups = batch["advantages"].numel() // g
        metrics["dynamic_sampling/extra_groups"].append(stats.extra_groups)
        metrics["dynamic_sampling/frac_tied_trained"].append(stats.tied_after / n_groups)
        return batch

    def _ratio_from_loss_forward(self) -> bool:
        """Whether the vLLM importance ratio is formed in the loss forward: asked for, vLLM sampling with the
        correction on, and on-policy (TRL's own test: every sampled batch is trained on before the next optimizer
        step, so the loss forward runs with the weights that sampled it). Liger's fused loss needs it earlier."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        return (self.is_ratio_from_loss_forward and self.use_vllm and self.vllm_importance_sampling_correction
                and self.args.gradient_accumulation_steps % generate_every == 0 and not self.use_liger_kernel)

    def _trl_generate_and_score(self, inputs):
        """TRL's sampling and scoring; when the ratio comes from the loss forward, without TRL's scoring forward.

        With the correction off for the call, TRL skips that forward and leaves `old_per_token_logps` out (it is
        on-policy: the loss uses its own log-probs, detached), and keeps the engine's `sampling_per_token_logps`.
        """
        if not self._ratio_from_loss_forward():
            return super()._generate_and_score_completions(inputs)
        self.vllm_importance_sampling_correction = False
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self.vllm_importance_sampling_correction = True

    def _compute_loss(self, model, inputs):
        """TRL's loss; when the ratio comes from the loss forward, formed right after that forward, as TRL forms it
        from its scoring forward (same weights, so the same log-probs up to kernel rounding)."""
        if "importance_sampling_ratio" in inputs or not self._ratio_from_loss_forward():
            return super()._compute_loss(model, inputs)
        inputs = dict(inputs)  # TRL's buffered batch stays as it was
        forward = self._get_per_token_logps_and_entropies

        def forward_and_ratio(*args, **kwargs):
            logps, entropies, aux_loss = forward(*args, **kwargs)
            inputs["importance_sampling_ratio"] = self._vllm_is_ratio(logps.detach(), inputs)
            return logps, entropies, aux_loss

        self._get_per_token_logps_and_entropies = forward_and_ratio  # TRL's first call in _compute_loss
        try:
            return super()._compute_loss(model, inputs)
        finally:
            del self._get_per_token_logps_and_entropies

    def _vllm_is_ratio(self, trainer_logps: torch.Tensor, inputs: dict) -> torch.Tensor:
        """TRL 1.13's vLLM importance ratio and its `sampling/*` metrics (grpo_trainer.py, "Compute the importance
        sampling ratio"), from the trainer's log-probs of the sampled tokens. The metrics are logged per
        micro-batch, TRL's once per sampled batch."""
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
        sampling = inputs.get("sampling_per_token_logps")
        if sampling is None:  # the engine gave no log-probs: no correction
            return torch.ones_like(trainer_logps)
        diff = torch.nan_to_num((trainer_logps - sampling) * mask, nan=0.0)  # NaN: vLLM could not score the token
        sequence_level = self.vllm_importance_sampling_mode in ("sequence_mask", "sequence_truncate")
        ratio = torch.exp(diff.sum(dim=-1, keepdim=True) if sequence_level else diff)
        low, high = self.vllm_importance_sampling_clip_min, self.vllm_importance_sampling_clip_max
        if self.vllm_importance_sampling_mode in ("sequence_truncate", "token_truncate"):
            ratio = torch.clamp(ratio, min=low, max=high)
        elif self.vllm_importance_sampling_mode in ("sequence_mask", "token_mask"):
            low, high = -math.inf if low is None else low, math.inf if high is None else high
            ratio = ratio.masked_fill((ratio < low) | (ratio > high), 0.0)
        else:
            raise ValueError(f"unknown vllm_importance_sampling_mode {self.vllm_importance_sampling_mode!r}")

        metrics = self._metrics["train" if self.model.training else "eval"]
        gather = self.accelerator.gather
        delta = (trainer_logps - sampling).abs()
        delta = delta[mask.bool() & ~torch.isnan(delta)]
        zero = torch.tensor(0.0, device=trainer_logps.device)
        metrics["sampling/sampling_logp_difference/mean"].append(
            gather(delta.mean() if delta.numel() else zero).mean().item())
        metrics["sampling/sampling_logp_difference/max"].append(
            gather(delta.max() if delta.numel() else zero).max().item())
        flat = ratio.flatten() if sequence_level else ratio[mask.bool()]
        for name, local, across in (("min", torch.min, nanmin), ("mean", torch.mean, torch.nanmean),
                                    ("max", torch.max, nanmax)):
            value = gather(local(flat) if flat.numel() else zero)
            metrics[f"sampling/importance_sampling_ratio/{name}"].append(across(value).item())
        return ratio

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


@contextlib.contextmanager
def _colocated_vllm_on_cpu(seed: int, lora_rank: int):
    """While TRL builds its colocated engine: the CPU build's settings, eager mode (seconds to start, not two
    minutes of compilation), LoRA serving for adapters of rank `lora_rank`, and our seed (TRL passes the process
    index)."""
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
    """TRL's colocated weight sync, for the CPU build: the engine serves the policy's current LoRA, unmerged.

    TRL merges the LoRA into the base weights in place, pushes them with `model.load_weights` (which the CPU
    build cannot take: its linear layers are repacked and their parameters emptied) and unmerges. In bf16 the
    merge rounds away most of a small update, so the engine would sample from a policy missing part of what it
    learned. Served as a LoRA (the adapter written to a scratch folder, a few MB), it samples the policy itself.
    """
    policy = generation.accelerator.unwrap_model(generation.model)
    with engine.engine_call("serving the policy's new LoRA"):
        generation.llm.serve_policy(policy)
