"""Training helpers: TRL SFT and GRPO trainers with PEFT LoRA, and a callback that records their logs.

Both trainers checkpoint every `save_steps` into the stage's checkpoints folder and resume from the newest
complete checkpoint found there (the stage's tracking run removes checkpoints made with other params).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from reasoning_rl import attention, sampling, shared_prefix
from reasoning_rl.config import GrpoConfig, SftConfig
from reasoning_rl.modeling import (
    load_model,
    load_trainable_policy,
    pick_dtype,
    select_backend,
)
from reasoning_rl.rewards import completion_text, get_reward_funcs

log = logging.getLogger(__name__)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _numeric(logs: dict[str, Any], step: int) -> dict[str, float]:
    entry = {
        k: float(v)
        for k, v in logs.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    entry["step"] = step
    return entry


class HistoryCallback(TrainerCallback):
    """Keeps every numeric log entry (for the metrics files) and forwards it to MLflow when a run is active.

    Entries reach MLflow when a checkpoint is saved (and at the end), not at once: after a crash the rerun
    resumes from the last checkpoint, so the steps logged after it would otherwise be logged twice, once by
    the lost trajectory and once by the resumed one. On resume, the history restarts from the checkpoint's
    `log_history`, and entries MLflow lacks (a crash between checkpoint and flush) are logged then.

    For GRPO it also logs a sample of completions with their rewards per logging step, read from the
    trainer's own buffers (`trainer._logs`), as an MLflow table (overwritten by a resumed run: same name).
    """

    def __init__(self, trainer: Any = None, completions_per_log: int = 4) -> None:
        self.history: list[dict[str, float]] = []
        self._pending: list[dict[str, float]] = []
        self.trainer = trainer
        self.completions_per_log = completions_per_log

    def on_train_begin(self, args, state, control, **kwargs):
        import mlflow

        from reasoning_rl.tracking import logged_steps

        if state.global_step == 0:
            return
        self.history = [_numeric(e, int(e["step"])) for e in state.log_history if "step" in e]
        run = mlflow.active_run()
        done = logged_steps(run.info.run_id) if run is not None else set()
        self._pending = [e for e in self.history if int(e["step"]) not in done]
        self._flush()

    def on_log(self, args, state, control, logs=None, **kwargs):
        import mlflow

        entry = _numeric(logs or {}, state.global_step)
        self.history.append(entry)
        self._pending.append(entry)
        if mlflow.active_run() is not None:
            self._log_completions(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        self._flush()

    def on_train_end(self, args, state, control, **kwargs):
        self._flush()

    def _flush(self) -> None:
        import mlflow

        from reasoning_rl.tracking import log_metrics

        if mlflow.active_run() is None:
            return
        for entry in self._pending:
            log_metrics(entry, step=int(entry["step"]))
        self._pending = []

    def _log_completions(self, step: int) -> None:
        from reasoning_rl.tracking import log_table

        buffers = getattr(self.trainer, "_logs", None)
        if not buffers or not buffers.get("completion"):
            return
        n = min(self.completions_per_log, len(buffers["completion"]))
        rows = {
            "step": [step] * n,
            "completion": [completion_text(c)[:2000] for c in list(buffers["completion"])[-n:]],
            "advantage": list(buffers["advantages"])[-n:],
        }
        for name, values in buffers["rewards"].items():
            rows[f"reward_{name}"] = list(values)[-n:]
        log_table(rows, artifact_file=f"completions/step_{step:05d}.json")


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` in `output_dir` (its trainer_state.json, written last, parses)."""
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        try:
            json.loads((path / "trainer_state.json").read_text())
            found.append((int(path.name.split("-")[1]), path))
        except (OSError, ValueError, IndexError):
            continue  # killed while writing it: an older checkpoint is still whole
    return max(found)[1] if found else None


def _checkpointing(save_steps: int) -> dict[str, Any]:
    """TrainingArguments for periodic checkpoints (adapter, optimizer, scheduler, RNG and trainer state)."""
    # Two kept: the newest may be half-written when the process is killed; last_checkpoint skips it.
    return {"save_strategy": "steps", "save_steps": save_steps, "save_total_limit": 2, "save_only_model": False}


def _train(trainer: Any, output_dir: Path) -> None:
    from reasoning_rl.tracking import set_tags

    checkpoint = last_checkpoint(output_dir)
    if checkpoint is not None:
        step = checkpoint.name.split("-")[1]
        log.info("resuming from %s (step %s)", checkpoint, step)
        set_tags({"resumed_from_step": step})
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)


def lora_config(r: int, alpha: int, dropout: float):
    from peft import LoraConfig

    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS, task_type="CAUSAL_LM", bias="none"
    )


def _use_bf16(dtype_name: str) -> bool:
    return pick_dtype(dtype_name) == torch.bfloat16


def train_sft(
    cfg: SftConfig, model_name: str, dtype: str, seed: int, train_rows: list[dict], output_dir: Path
) -> tuple[Any, HistoryCallback]:
    """SFT with LoRA on the prompt-completion rows; loss on the completion tokens only."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    # SFTTrainer wraps the model in LoRA before Trainer seeds the RNG: seed first, or lora_A's init (and
    # every run) differs between processes, and a resumed run could not match an uninterrupted one.
    set_seed(seed)
    loaded = load_model(model_name, dtype)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in train_rows])
    args = SFTConfig(
        output_dir=str(output_dir),
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, cfg.max_steps // 20),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_length=cfg.max_length,
        completion_only_loss=True,  # the prompt is given, not learnt
        bf16=_use_bf16(dtype),
        use_cpu=not torch.cuda.is_available(),
        logging_steps=cfg.logging_steps,
        **_checkpointing(cfg.save_steps),
        report_to=[],
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    trainer = SFTTrainer(
        model=loaded.model,
        args=args,
        train_dataset=dataset,
        processing_class=loaded.tokenizer,
        peft_config=lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout),
    )
    history = HistoryCallback(trainer)
    trainer.add_callback(history)
    _train(trainer, output_dir)
    return trainer, history


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
        bf16=_use_bf16(dtype),
        use_cpu=not on_gpu,
        # TRL's default is True (memory for compute); a 135M model fits easily, so keep the speed.
        gradient_checkpointing=cfg.gradient_checkpointing and backend == "plain",  # unsloth: its own, above
        use_vllm=cfg.use_vllm,
        vllm_mode=cfg.vllm_mode,
        vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        logging_steps=cfg.logging_steps,
        log_completions=False,  # we log a sample to MLflow ourselves (HistoryCallback)
        **_checkpointing(cfg.save_steps),
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
    _train(trainer, output_dir)
    return trainer, history


def grpo_trainer_class() -> type:
    """TRL's GRPOTrainer with this project's CPU speed knobs (each off unless train_grpo sets it from GrpoConfig).

    Sampling: its own attention kernel and thread count, a merged copy of the LoRA policy, inverse-CDF token
    draws, each group's prompt prefilled once. Training: the shared-prefix forward and no fp32 upcast of LoRA
    inputs under autocast. docs/scaling.md has what each one saves; scripts/bench_grpo_cpu.py measures them.
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


def merged_copy(policy: Any, copy: Any = None) -> Any:
    """A plain (PEFT-free) model whose weights are `policy`'s base weights plus its current LoRA deltas.

    Built once (`copy=None`), then refreshed in place each call: only the LoRA-wrapped linears change, and each
    is recomputed from the untouched base weight (W + scale * B @ A in fp32, then cast), so nothing drifts.
    """
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    base = policy.get_base_model()
    if copy is None:
        copy = AutoModelForCausalLM.from_config(base.config, dtype=base.dtype)
        state = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if "lora_" not in k}
        loaded = copy.load_state_dict(state, strict=False)  # strict=False: a tied LM head may be absent
        tied = {"lm_head.weight"} if getattr(base.config, "tie_word_embeddings", False) else set()
        if loaded.unexpected_keys or set(loaded.missing_keys) - tied:
            raise RuntimeError(f"merged_copy: base weights do not map onto a plain {type(copy).__name__}: "
                               f"missing {loaded.missing_keys}, unexpected {loaded.unexpected_keys}")
        copy.eval().requires_grad_(False)
        copy.generation_config = base.generation_config
    modules = dict(copy.named_modules())
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer) and module.active_adapters:
                weight = module.get_base_layer().weight
                delta = sum(module.get_delta_weight(a).float() for a in module.active_adapters if a in module.lora_A)
                modules[name].weight.copy_((weight.float() + delta).to(weight.dtype))
    return copy


def summarize_history(history: list[dict[str, float]], keys: list[str], window: int = 5) -> dict[str, float]:
    """First/last-window means of selected keys (e.g. loss, rewards) for the stage's metrics file."""
    out: dict[str, float] = {}
    for key in keys:
        values = [h[key] for h in history if key in h]
        if not values:
            continue
        safe = key.replace("/", "_")
        out[f"{safe}_first"] = sum(values[:window]) / len(values[:window])
        out[f"{safe}_last"] = sum(values[-window:]) / len(values[-window:])
    return out


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
