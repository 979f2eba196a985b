"""Select GRPO's train prompts: the train split in GRPO's order, or only the prompts the SFT adapter solves sometimes.

Run: python -m stages.select   (reads params.yaml: base, select, and grpo's prompt_seed, num_prompts, temperature
and max_completion_length)
With select.samples > 0 the SFT adapter samples each of the first select.candidates prompts that many times at
GRPO's temperature and length; a prompt whose samples all agree (all right or all wrong) would give GRPO a group
with zero advantage, so only prompts with a pass rate strictly between 0 and 1 are kept (reasoning_rl/train/
prompts.py). Writes data/select/prompts.jsonl (GRPO's prompts in order, each with its SFT pass rate) and
metrics/select.json (how many were kept, and the tied share before selection).
"""

from __future__ import annotations

import logging

from reasoning_rl import paths
from reasoning_rl.config import load_params
from reasoning_rl.files import write_json
from reasoning_rl.model.engine import resolve_engine
from reasoning_rl.ops.tracking import log_metrics, stage_run
from reasoning_rl.task.gsm8k import DataError, read_records, write_jsonl
from reasoning_rl.train.prompts import grpo_order, keep_mixed, sft_pass_rates
from stages.common import run, setup_logging, timed

log = logging.getLogger("stages.select")


def main() -> None:
    setup_logging()
    params = load_params(paths.params_file())
    base, cfg, grpo = params.base, params.select, params.grpo
    logged = {"base": base, "select": cfg, "grpo_prompts": {
        "prompt_seed": grpo.prompt_seed, "num_prompts": grpo.num_prompts,
        "temperature": grpo.temperature, "max_completion_length": grpo.max_completion_length}}
    metrics: dict = {}
    with stage_run("select", logged, paths.params_file(), inputs=[paths.TRAIN, paths.adapter_dir("sft")]):
        ordered = grpo_order(read_records(paths.TRAIN), grpo.prompt_seed, grpo.num_prompts)
        with timed(metrics):
            if cfg.samples:
                candidates = ordered[: cfg.candidates]
                rates, seconds = sft_pass_rates(
                    candidates, base.model, base.dtype, base.seed, resolve_engine(base.engine),
                    paths.adapter_dir("sft"), cfg.samples, grpo.temperature, grpo.max_completion_length,
                    cfg.batch_size)
                selection = keep_mixed(candidates, rates)
                prompts = selection.kept
                metrics |= selection.stats() | {"sampling_seconds": round(seconds, 1)}
            else:
                prompts = [row | {"sft_pass_rate": None} for row in ordered]
                metrics |= {"candidates": len(ordered), "kept": len(ordered)}
        if not prompts:
            raise DataError(
                f"select kept none of {metrics['candidates']} candidate prompts: the SFT adapter solved every one "
                f"({metrics.get('all_right')}) or none ({metrics.get('all_wrong')}) of its {cfg.samples} samples; "
                "raise select.candidates, or set select.samples: 0 to train on every prompt", problem="empty")
        write_jsonl(paths.GRPO_PROMPTS, prompts)
        write_json(paths.train_metrics("select"), metrics)
        log_metrics(metrics)
    log.info("select done: %s", metrics)


if __name__ == "__main__":
    run(main)
