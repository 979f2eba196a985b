"""SFT warm-up with TRL's SFTTrainer and a fresh LoRA adapter: teaches the <think>/<answer> format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from reasoning_rl.config import SftConfig
from reasoning_rl.model.loading import load_model, pick_dtype
from reasoning_rl.train.callbacks import HistoryCallback
from reasoning_rl.train.checkpoints import checkpointing_args, train_resuming
from reasoning_rl.train.lora import lora_config


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
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_length=cfg.max_length,
        completion_only_loss=True,  # the prompt is given, not learnt
        bf16=pick_dtype(dtype) == torch.bfloat16,
        use_cpu=not torch.cuda.is_available(),
        logging_steps=cfg.logging_steps,
        **checkpointing_args(cfg.save_steps),
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
    train_resuming(trainer, output_dir)
    return trainer, history
