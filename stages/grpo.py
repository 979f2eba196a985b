"""GRPO: continue the SFT LoRA adapter with TRL's GRPOTrainer and the registered reward functions.

Run: python -m stages.grpo   (reads params.yaml: base, grpo; its prompts are the select stage's)
"""

from __future__ import annotations

import logging
import shutil

from reasoning_rl import paths
from reasoning_rl.config import load_params
from reasoning_rl.files import write_json
from reasoning_rl.ops.tracking import log_adapter, log_metrics, stage_run
from reasoning_rl.task.gsm8k import read_records
from reasoning_rl.train.callbacks import seconds_per_step, summarize_history
from reasoning_rl.train.grpo import train_grpo
from reasoning_rl.train.lora import save_adapter
from stages.common import run, setup_logging, timed

log = logging.getLogger("stages.grpo")

SUMMARY_KEYS = [
    "reward",
    "reward_std",
    "rewards/format/mean",
    "rewards/correctness/mean",
    "frac_reward_zero_std",  # TRL: share of groups whose rewards all tie (zero advantages: no learning signal)
    "completions/mean_length",
    "kl",
    "loss",
]


def main() -> None:
    setup_logging()
    params = load_params(paths.params_file())
    base, cfg = params.base, params.grpo
    metrics: dict = {}
    # A rerun after a crash with the same params and data resumes from the last checkpoint and MLflow run.
    inputs = [paths.GRPO_PROMPTS, paths.adapter_dir("sft")]
    with stage_run(
        "grpo", {"base": base, "grpo": cfg}, paths.params_file(), inputs=inputs,
        resume_dir=paths.checkpoints_dir("grpo"),
    ):
        ####  data: the select stage's prompts, in order, with their gold answers (the correctness reward reads them)
        rows = read_records(paths.GRPO_PROMPTS)

        ####  train from the SFT adapter
        out = paths.adapter_dir("grpo")
        with timed(metrics):
            trainer, history = train_grpo(
                cfg,
                base.model,
                base.dtype,
                base.seed,
                rows,
                paths.adapter_dir("sft"),
                paths.checkpoints_dir("grpo"),
                backend=base.backend,
                generation_engine=base.engine,
            )

        ####  save the adapter (safetensors) and metrics: under `accelerate launch`, rank 0 alone writes
        trainer.accelerator.wait_for_everyone()  # all ranks are done with the checkpoints rank 0 removes below
        if not trainer.accelerator.is_main_process:
            return
        shutil.rmtree(out, ignore_errors=True)
        save_adapter(trainer.model, out, base.model)  # bytes a function of the inputs (lora.py)
        steps = trainer.state.global_step
        # TRL's own step times: a resumed run's wall time covers only the steps after its checkpoint
        metrics |= {"steps": steps, "seconds_per_step": seconds_per_step(history.history)}
        metrics |= summarize_history(history.history, SUMMARY_KEYS)
        write_json(paths.train_metrics("grpo"), metrics)
        write_json(paths.train_history("grpo"), history.history)
        log_metrics(metrics)
        log_adapter(out)
    shutil.rmtree(paths.checkpoints_dir("grpo"), ignore_errors=True)
    log.info("GRPO done: %s", metrics)


if __name__ == "__main__":
    run(main)
