"""SFT warm-up: teach the <think>/<answer> format with LoRA (GRPO gets no reward signal before this).

Run: python -m stages.sft   (reads params.yaml: base, sft)
"""

from __future__ import annotations

import logging
import random
import shutil

from reasoning_rl import paths
from reasoning_rl.config import load_params
from reasoning_rl.files import write_json
from reasoning_rl.ops.tracking import log_adapter, log_metrics, stage_run
from reasoning_rl.task.gsm8k import read_records
from reasoning_rl.train.callbacks import summarize_history
from reasoning_rl.train.lora import save_adapter
from reasoning_rl.train.sft import train_sft
from stages.common import run, setup_logging, timed

log = logging.getLogger("stages.sft")


def main() -> None:
    setup_logging()
    params = load_params(paths.params_file())
    base, cfg = params.base, params.sft
    metrics: dict = {}
    # A rerun after a crash with the same params and data resumes from the last checkpoint and MLflow run.
    with stage_run(
        "sft", {"base": base, "sft": cfg}, paths.params_file(), inputs=[paths.TRAIN],
        resume_dir=paths.checkpoints_dir("sft"),
    ):
        ####  data: a seeded subset of the train split (SFT only has to teach the format)
        rows = read_records(paths.TRAIN)
        random.Random(base.seed).shuffle(rows)
        rows = rows[: cfg.num_examples]

        ####  train
        out = paths.adapter_dir("sft")
        with timed(metrics):
            trainer, history = train_sft(cfg, base.model, base.dtype, base.seed, rows, paths.checkpoints_dir("sft"))

        ####  save the adapter (safetensors) and metrics
        shutil.rmtree(out, ignore_errors=True)
        save_adapter(trainer.model, out, base.model)  # bytes a function of the inputs (lora.py)
        metrics |= {"examples": len(rows), "steps": trainer.state.global_step}
        metrics |= summarize_history(history.history, ["loss", "mean_token_accuracy"])
        write_json(paths.train_metrics("sft"), metrics)
        write_json(paths.train_history("sft"), history.history)
        log_metrics(metrics)
        log_adapter(out)
    shutil.rmtree(paths.checkpoints_dir("sft"), ignore_errors=True)
    log.info("SFT done: %s", metrics)


if __name__ == "__main__":
    run(main)
